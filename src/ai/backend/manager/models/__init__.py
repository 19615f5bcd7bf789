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

__all__ = [
    "Agent",
    "Base",
    "Domain",
    "Group",
    "Image",
    "ImageAlias",
    "Kernel",
    "KeyPair",
    "KeyPairResourcePolicy",
    "ResourcePreset",
    "ScalingGroup",
    "SessionRow",
    "User",
    "group_members",
    "sgroups_for_domains",
    "sgroups_for_groups",
    "sgroups_for_keypairs",
    "metadata",
]
