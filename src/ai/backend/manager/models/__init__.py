"""Database tables of the manager (SQLAlchemy 2, one metadata for SQLite and PostgreSQL)."""

from .accounts import (
    DomainRow,
    KeyPairResourcePolicyRow,
    KeyPairRow,
    ProjectRow,
    ResourcePresetRow,
    UserRow,
    group_members,
)
from .base import Base, metadata
from .managers import ManagerRow
from .resources import (
    AgentRow,
    ImageAliasRow,
    ImageRow,
    ScalingGroupRow,
    sgroups_for_domains,
    sgroups_for_groups,
    sgroups_for_keypairs,
)
from .sessions import KernelRow, SessionRow
from .templates import SessionTemplateRow
from .userconfig import DotfileRow
from .vfolders import VFolderInvitationRow, VFolderPermissionRow, VFolderRow

__all__ = [
    "AgentRow",
    "Base",
    "DomainRow",
    "DotfileRow",
    "ProjectRow",
    "ImageRow",
    "ImageAliasRow",
    "KernelRow",
    "KeyPairRow",
    "KeyPairResourcePolicyRow",
    "ManagerRow",
    "ResourcePresetRow",
    "ScalingGroupRow",
    "SessionRow",
    "SessionTemplateRow",
    "UserRow",
    "VFolderRow",
    "VFolderInvitationRow",
    "VFolderPermissionRow",
    "group_members",
    "sgroups_for_domains",
    "sgroups_for_groups",
    "sgroups_for_keypairs",
    "metadata",
]
