"""Cluster resource tables: scaling groups, agents, images and image aliases."""

from __future__ import annotations

from datetime import datetime
from typing import Any

from sqlalchemy import Boolean, Column, ForeignKey, String, Table, Text, false, true
from sqlalchemy.orm import Mapped, mapped_column

from .base import GUID, Base, UTCDateTime, metadata, utcnow


class ScalingGroupRow(Base):
    __tablename__ = "scaling_groups"
    name: Mapped[str] = mapped_column(String(64), primary_key=True)
    description: Mapped[str | None] = mapped_column(Text)
    is_active: Mapped[bool] = mapped_column(Boolean, default=True)
    created_at: Mapped[datetime] = mapped_column(UTCDateTime, default=utcnow)
    driver: Mapped[str] = mapped_column(String(64), default="static")
    driver_opts: Mapped[dict[str, Any]] = mapped_column(default=dict)
    scheduler: Mapped[str] = mapped_column(String(64), default="fifo")
    scheduler_opts: Mapped[dict[str, Any]] = mapped_column(default=dict)
    is_public: Mapped[bool] = mapped_column(Boolean, default=True, server_default=true())
    use_host_network: Mapped[bool] = mapped_column(Boolean, default=False, server_default=false())
    wsproxy_addr: Mapped[str | None] = mapped_column(String(1024))
    wsproxy_api_token: Mapped[str | None] = mapped_column(String(256))


# Which scaling groups a domain, a group (project) or a keypair may use.
sgroups_for_domains = Table(
    "sgroups_for_domains",
    metadata,
    Column(
        "scaling_group", ForeignKey("scaling_groups.name", ondelete="CASCADE", onupdate="CASCADE"), primary_key=True
    ),
    Column("domain", ForeignKey("domains.name", ondelete="CASCADE", onupdate="CASCADE"), primary_key=True),
)
sgroups_for_groups = Table(
    "sgroups_for_groups",
    metadata,
    Column(
        "scaling_group", ForeignKey("scaling_groups.name", ondelete="CASCADE", onupdate="CASCADE"), primary_key=True
    ),
    Column("group", GUID, ForeignKey("groups.id", ondelete="CASCADE"), primary_key=True),
)
sgroups_for_keypairs = Table(
    "sgroups_for_keypairs",
    metadata,
    Column(
        "scaling_group", ForeignKey("scaling_groups.name", ondelete="CASCADE", onupdate="CASCADE"), primary_key=True
    ),
    Column("access_key", ForeignKey("keypairs.access_key", ondelete="CASCADE", onupdate="CASCADE"), primary_key=True),
)


class AgentRow(Base):
    __tablename__ = "agents"
    id: Mapped[str] = mapped_column(String(64), primary_key=True)
    status: Mapped[str] = mapped_column(String(32), default="ALIVE", index=True)
    status_changed: Mapped[datetime | None] = mapped_column(UTCDateTime)
    region: Mapped[str | None] = mapped_column(String(64))
    scaling_group: Mapped[str] = mapped_column(ForeignKey("scaling_groups.name"), index=True)
    schedulable: Mapped[bool] = mapped_column(Boolean, default=True)
    available_slots: Mapped[dict[str, Any]] = mapped_column(default=dict)
    occupied_slots: Mapped[dict[str, Any]] = mapped_column(default=dict)
    addr: Mapped[str] = mapped_column(String(128))
    first_contact: Mapped[datetime] = mapped_column(UTCDateTime, default=utcnow)
    lost_at: Mapped[datetime | None] = mapped_column(UTCDateTime)
    last_heartbeat: Mapped[datetime | None] = mapped_column(UTCDateTime)
    version: Mapped[str | None] = mapped_column(String(64))
    architecture: Mapped[str] = mapped_column(String(32), default="x86_64")
    compute_plugins: Mapped[dict[str, Any]] = mapped_column(default=dict)


class ImageRow(Base):
    __tablename__ = "images"
    name: Mapped[str] = mapped_column(String(256), primary_key=True)  # canonical "repo:tag"
    registry_name: Mapped[str] = mapped_column("registry", String(128), default="local")
    tag: Mapped[str] = mapped_column(String(128))
    architecture: Mapped[str] = mapped_column(String(32), default="x86_64")
    config_digest: Mapped[str] = mapped_column(String(128))
    size_bytes: Mapped[int] = mapped_column(default=0)
    labels: Mapped[dict[str, Any]] = mapped_column(default=dict)
    resources: Mapped[dict[str, Any]] = mapped_column(default=dict)  # slot -> {"min": str}
    created_at: Mapped[datetime] = mapped_column(UTCDateTime, default=utcnow)


class ImageAliasRow(Base):
    __tablename__ = "image_aliases"
    alias: Mapped[str] = mapped_column(String(256), primary_key=True)
    image: Mapped[str] = mapped_column(ForeignKey("images.name", ondelete="CASCADE", onupdate="CASCADE"))
