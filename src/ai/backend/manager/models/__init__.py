"""Database tables of the manager (SQLAlchemy 2, one metadata for SQLite and PostgreSQL)."""

from .accounts import Domain, Group, KeyPair, KeyPairResourcePolicy, User, group_members
from .base import Base, metadata
from .resources import Agent, Image, ImageAlias, ScalingGroup
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
    "ScalingGroup",
    "SessionRow",
    "User",
    "group_members",
    "metadata",
]
