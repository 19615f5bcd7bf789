"""Compute sessions and their kernels (containers)."""

from __future__ import annotations

import uuid
from datetime import datetime
from typing import Any

from sqlalchemy import JSON, BigInteger, Float, ForeignKey, Integer, Select, String, Text, and_, select
from sqlalchemy.orm import Mapped, mapped_column

from .base import GUID, Base, UTCDateTime, utcnow


class SessionRow(Base):
    __tablename__ = "sessions"
    id: Mapped[uuid.UUID] = mapped_column(GUID, primary_key=True, default=uuid.uuid4)
    name: Mapped[str] = mapped_column(String(64), index=True)
    session_type: Mapped[str] = mapped_column(String(32), default="interactive")
    access_key: Mapped[str] = mapped_column(ForeignKey("keypairs.access_key"), index=True)
    user_uuid: Mapped[uuid.UUID] = mapped_column(GUID, index=True)
    domain_name: Mapped[str] = mapped_column(String(64))
    group_id: Mapped[uuid.UUID] = mapped_column(GUID)
    scaling_group: Mapped[str] = mapped_column(String(64))
    image: Mapped[str] = mapped_column(String(256))
    status: Mapped[str] = mapped_column(String(32), default="PENDING", index=True)
    status_info: Mapped[str | None] = mapped_column(String(256))
    status_data: Mapped[dict[str, Any]] = mapped_column(default=dict)
    status_changed: Mapped[datetime] = mapped_column(UTCDateTime, default=utcnow)
    status_history: Mapped[dict[str, Any]] = mapped_column(default=dict)
    created_at: Mapped[datetime] = mapped_column(UTCDateTime, default=utcnow)
    terminated_at: Mapped[datetime | None] = mapped_column(UTCDateTime)
    starts_at: Mapped[datetime | None] = mapped_column(UTCDateTime)
    startup_command: Mapped[str | None] = mapped_column(Text)
    bootstrap_script: Mapped[str | None] = mapped_column(Text)
    batch_timeout: Mapped[float | None] = mapped_column(Float)
    result: Mapped[str] = mapped_column(String(16), default="UNDEFINED")
    tag: Mapped[str | None] = mapped_column(String(64))
    cluster_mode: Mapped[str] = mapped_column(String(16), default="single-node")
    cluster_size: Mapped[int] = mapped_column(Integer, default=1)
    requested_slots: Mapped[dict[str, Any]] = mapped_column(default=dict)
    occupying_slots: Mapped[dict[str, Any]] = mapped_column(default=dict)
    environ: Mapped[dict[str, Any]] = mapped_column(default=dict)
    resource_opts: Mapped[dict[str, Any]] = mapped_column(default=dict)
    num_queries: Mapped[int] = mapped_column(BigInteger, default=0)
    vfolder_mounts: Mapped[list[Any] | None] = mapped_column(JSON)  # [{vfid, name, host, mount_path, permission}]
    preopen_ports: Mapped[list[int] | None] = mapped_column(JSON)  # container ports served by the user's processes
    # The manager process that moved the session into SCHEDULED, PREPARING, TERMINATING or RESTARTING and so will
    # move it on; crash recovery takes over only the sessions of managers that are gone (ADR 0014).
    manager_id: Mapped[str | None] = mapped_column(String(64))


class KernelRow(Base):
    __tablename__ = "kernels"
    id: Mapped[uuid.UUID] = mapped_column(GUID, primary_key=True, default=uuid.uuid4)
    session_id: Mapped[uuid.UUID] = mapped_column(ForeignKey("sessions.id", ondelete="CASCADE"), index=True)
    cluster_role: Mapped[str] = mapped_column(String(16), default="main")
    cluster_idx: Mapped[int] = mapped_column(Integer, default=1)
    cluster_hostname: Mapped[str] = mapped_column(String(64), default="main1")
    image: Mapped[str] = mapped_column(String(256))
    agent: Mapped[str | None] = mapped_column(String(64), index=True)
    agent_addr: Mapped[str | None] = mapped_column(String(128))
    container_id: Mapped[str | None] = mapped_column(String(64))
    status: Mapped[str] = mapped_column(String(32), default="PENDING", index=True)
    status_info: Mapped[str | None] = mapped_column(String(256))
    status_changed: Mapped[datetime] = mapped_column(UTCDateTime, default=utcnow)
    created_at: Mapped[datetime] = mapped_column(UTCDateTime, default=utcnow)
    terminated_at: Mapped[datetime | None] = mapped_column(UTCDateTime)
    occupied_slots: Mapped[dict[str, Any]] = mapped_column(default=dict)
    service_ports: Mapped[list[Any]] = mapped_column(default=list)
    # Where the agent published the service ports (its advertised host); empty: the host of agent_addr.
    kernel_host: Mapped[str | None] = mapped_column(String(256))
    last_stat: Mapped[dict[str, Any]] = mapped_column(default=dict)
    exit_code: Mapped[int | None] = mapped_column(Integer)
    task_log: Mapped[str | None] = mapped_column(Text)  # console output kept for batch sessions


# The order of a session's kernels wherever they are listed: main1, then sub1, sub2, ...
KERNEL_ORDER = (KernelRow.cluster_role != "main", KernelRow.cluster_idx)

# A session joined with its main kernel (``main1``); the kernel is None for a session without kernels.
MAIN_KERNEL_JOIN = and_(KernelRow.session_id == SessionRow.id, KernelRow.cluster_role == "main")


def select_with_main_kernel() -> Select[SessionRow, KernelRow]:
    """``SELECT session, main kernel`` (outer join): add the ``where`` clauses."""
    return select(SessionRow, KernelRow).join(KernelRow, MAIN_KERNEL_JOIN, isouter=True)
