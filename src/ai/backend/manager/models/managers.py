"""The manager registry: one row per manager process (ADR 0014).

Written by :mod:`ai.backend.manager.presence`. A row says who the manager is and where it answers; whether it is
alive is not a column: on PostgreSQL a manager is alive exactly while it holds its advisory lock
``(NS, lock_key)`` (see ``pg_locks``), on SQLite the only manager is the live one. ``last_seen`` (written every
second on PostgreSQL) and ``leader`` (as the manager last wrote it) are shown to operators.
"""

from __future__ import annotations

from datetime import datetime

from sqlalchemy import Boolean, Integer, String, false
from sqlalchemy.orm import Mapped, mapped_column

from .base import Base, UTCDateTime, utcnow


class ManagerRow(Base):
    __tablename__ = "managers"
    id: Mapped[str] = mapped_column(String(64), primary_key=True)
    address: Mapped[str] = mapped_column(String(256))
    version: Mapped[str] = mapped_column(String(64))
    started_at: Mapped[datetime] = mapped_column(UTCDateTime, default=utcnow)
    last_seen: Mapped[datetime] = mapped_column(UTCDateTime, default=utcnow)
    # The second key of the manager's liveness lock (the first is presence.NS); 0 on SQLite.
    lock_key: Mapped[int] = mapped_column(Integer, default=0)
    leader: Mapped[bool] = mapped_column(Boolean, default=False, server_default=false())
