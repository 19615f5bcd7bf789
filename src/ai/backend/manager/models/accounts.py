"""Tenancy tables: domains, groups (projects), users, keypairs and keypair resource policies."""

from __future__ import annotations

import uuid
from datetime import datetime
from typing import Any

from sqlalchemy import BigInteger, Boolean, Column, ForeignKey, Integer, String, Table, Text, UniqueConstraint, text
from sqlalchemy.orm import Mapped, mapped_column

from .base import GUID, Base, UTCDateTime, metadata, utcnow


class DomainRow(Base):
    __tablename__ = "domains"
    name: Mapped[str] = mapped_column(String(64), primary_key=True)
    description: Mapped[str | None] = mapped_column(Text)
    is_active: Mapped[bool] = mapped_column(Boolean, default=True)
    created_at: Mapped[datetime] = mapped_column(UTCDateTime, default=utcnow)
    total_resource_slots: Mapped[dict[str, Any]] = mapped_column(default=dict)
    allowed_vfolder_hosts: Mapped[list[Any]] = mapped_column(default=list)
    allowed_docker_registries: Mapped[list[Any]] = mapped_column(default=list)
    integration_id: Mapped[str | None] = mapped_column(String(512))
    modified_at: Mapped[datetime] = mapped_column(
        UTCDateTime, default=utcnow, onupdate=utcnow, server_default=text("CURRENT_TIMESTAMP")
    )


class ProjectRow(Base):
    __tablename__ = "groups"
    # Project names are unique inside a domain only.
    __table_args__ = (UniqueConstraint("domain_name", "name", name="uq_groups_domain_name_name"),)
    id: Mapped[uuid.UUID] = mapped_column(GUID, primary_key=True, default=uuid.uuid4)
    name: Mapped[str] = mapped_column(String(64))
    description: Mapped[str | None] = mapped_column(Text)
    is_active: Mapped[bool] = mapped_column(Boolean, default=True)
    created_at: Mapped[datetime] = mapped_column(UTCDateTime, default=utcnow)
    domain_name: Mapped[str] = mapped_column(ForeignKey("domains.name", onupdate="CASCADE"), index=True)
    total_resource_slots: Mapped[dict[str, Any]] = mapped_column(default=dict)
    allowed_vfolder_hosts: Mapped[list[Any]] = mapped_column(default=list)
    integration_id: Mapped[str | None] = mapped_column(String(512))
    modified_at: Mapped[datetime] = mapped_column(
        UTCDateTime, default=utcnow, onupdate=utcnow, server_default=text("CURRENT_TIMESTAMP")
    )


class UserRow(Base):
    __tablename__ = "users"
    uuid: Mapped[uuid.UUID] = mapped_column(GUID, primary_key=True, default=uuid.uuid4)
    username: Mapped[str] = mapped_column(String(64), unique=True)
    email: Mapped[str] = mapped_column(String(64), unique=True, index=True)
    password: Mapped[str | None] = mapped_column(String(128))
    need_password_change: Mapped[bool] = mapped_column(Boolean, default=False)
    full_name: Mapped[str | None] = mapped_column(String(64))
    description: Mapped[str | None] = mapped_column(Text)
    status: Mapped[str] = mapped_column(String(32), default="active")
    status_info: Mapped[str | None] = mapped_column(String(64))
    role: Mapped[str] = mapped_column(String(32), default="user")
    domain_name: Mapped[str] = mapped_column(ForeignKey("domains.name", onupdate="CASCADE"), index=True)
    created_at: Mapped[datetime] = mapped_column(UTCDateTime, default=utcnow)
    modified_at: Mapped[datetime] = mapped_column(
        UTCDateTime, default=utcnow, onupdate=utcnow, server_default=text("CURRENT_TIMESTAMP")
    )
    # Run in each new session of the user that brings no bootstrap script of its own.
    bootstrap_script: Mapped[str | None] = mapped_column(Text)


group_members = Table(
    "association_groups_users",
    metadata,
    Column("group_id", GUID, ForeignKey("groups.id", ondelete="CASCADE"), primary_key=True),
    Column("user_id", GUID, ForeignKey("users.uuid", ondelete="CASCADE"), primary_key=True),
)


class KeyPairResourcePolicyRow(Base):
    __tablename__ = "keypair_resource_policies"
    name: Mapped[str] = mapped_column(String(256), primary_key=True)
    created_at: Mapped[datetime] = mapped_column(UTCDateTime, default=utcnow)
    default_for_unspecified: Mapped[str] = mapped_column(String(32), default="UNLIMITED")
    total_resource_slots: Mapped[dict[str, Any]] = mapped_column(default=dict)
    max_session_lifetime: Mapped[int] = mapped_column(Integer, default=0)
    max_concurrent_sessions: Mapped[int] = mapped_column(Integer, default=30)
    max_containers_per_session: Mapped[int] = mapped_column(Integer, default=1)
    idle_timeout: Mapped[int] = mapped_column(BigInteger, default=1800)
    max_vfolder_count: Mapped[int] = mapped_column(Integer, default=10)
    max_vfolder_size: Mapped[int] = mapped_column(BigInteger, default=0)
    allowed_vfolder_hosts: Mapped[list[Any]] = mapped_column(default=list)


class KeyPairRow(Base):
    __tablename__ = "keypairs"
    access_key: Mapped[str] = mapped_column(String(20), primary_key=True)
    secret_key: Mapped[str] = mapped_column(String(40))
    user_id: Mapped[str] = mapped_column(String(256), index=True)
    user: Mapped[uuid.UUID] = mapped_column(ForeignKey("users.uuid", ondelete="CASCADE"), index=True)
    is_active: Mapped[bool] = mapped_column(Boolean, default=True, index=True)
    is_admin: Mapped[bool] = mapped_column(Boolean, default=False)
    is_main: Mapped[bool] = mapped_column(Boolean, default=False)
    created_at: Mapped[datetime] = mapped_column(UTCDateTime, default=utcnow)
    modified_at: Mapped[datetime] = mapped_column(UTCDateTime, default=utcnow, onupdate=utcnow)
    last_used: Mapped[datetime | None] = mapped_column(UTCDateTime)
    rate_limit: Mapped[int] = mapped_column(Integer, default=10000)
    num_queries: Mapped[int] = mapped_column(BigInteger, default=0)
    resource_policy: Mapped[str] = mapped_column(ForeignKey("keypair_resource_policies.name"))
    ssh_public_key: Mapped[str | None] = mapped_column(Text)
    ssh_private_key: Mapped[str | None] = mapped_column(Text)


class ResourcePresetRow(Base):
    __tablename__ = "resource_presets"
    name: Mapped[str] = mapped_column(String(256), primary_key=True)
    resource_slots: Mapped[dict[str, Any]] = mapped_column(default=dict)
    shared_memory: Mapped[int | None] = mapped_column(BigInteger)
