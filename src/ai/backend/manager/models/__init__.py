"""Database tables of the manager (SQLAlchemy 2, one metadata for SQLite and PostgreSQL)."""

from .accounts import Domain, Group, KeyPair, KeyPairResourcePolicy, ResourcePreset, User, group_members
from .base import Base, metadata
from .resources import (
    Agent,
    Image,
    ImageAlias,
    ScalingGroup,
    sgroups_for_domains,
    sgroups_for_groups,
    sgroups_for_keypairs,
)
from .sessions import Kernel, SessionRow
from .templates import SessionTemplate
from .userconfig import Dotfile
from .vfolders import VFolder, VFolderInvitation, VFolderPermission

__all__ = [
    "Agent",
    "Base",
    "Domain",
    "Dotfile",
    "Group",
    "Image",
    "ImageAlias",
    "Kernel",
    "KeyPair",
    "KeyPairResourcePolicy",
    "ResourcePreset",
    "ScalingGroup",
    "SessionRow",
    "SessionTemplate",
    "User",
    "VFolder",
    "VFolderInvitation",
    "VFolderPermission",
    "group_members",
    "sgroups_for_domains",
    "sgroups_for_groups",
    "sgroups_for_keypairs",
    "metadata",
]
