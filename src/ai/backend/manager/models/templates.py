"""Session templates: stored, validated creation parameters a user can start sessions from."""

from __future__ import annotations

import uuid
from datetime import datetime
from typing import Any

from sqlalchemy import Boolean, ForeignKey, String
from sqlalchemy.orm import Mapped, mapped_column

from .base import GUID, Base, UTCDateTime, utcnow


class SessionTemplateRow(Base):
    __tablename__ = "session_templates"
    id: Mapped[uuid.UUID] = mapped_column(GUID, primary_key=True, default=uuid.uuid4)
    name: Mapped[str] = mapped_column(String(128), index=True)
    # Only "task" templates exist so far; upstream also has "cluster" templates.
    type: Mapped[str] = mapped_column(String(16), default="task")
    # The template document as the owner wrote it (validated), so that reading it back gives the same text.
    template: Mapped[dict[str, Any]] = mapped_column(default=dict)
    is_active: Mapped[bool] = mapped_column(Boolean, default=True, index=True)
    domain_name: Mapped[str] = mapped_column(ForeignKey("domains.name", onupdate="CASCADE"))
    group_id: Mapped[uuid.UUID | None] = mapped_column(ForeignKey("groups.id", ondelete="SET NULL"))
    user_uuid: Mapped[uuid.UUID] = mapped_column(ForeignKey("users.uuid", ondelete="CASCADE"), index=True)
    created_at: Mapped[datetime] = mapped_column(UTCDateTime, default=utcnow)
    modified_at: Mapped[datetime] = mapped_column(UTCDateTime, default=utcnow, onupdate=utcnow)
