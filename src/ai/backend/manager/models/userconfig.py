"""Per-user configuration placed into every new session: dotfiles (the bootstrap script is on ``users``)."""

from __future__ import annotations

import uuid
from datetime import datetime

from sqlalchemy import ForeignKey, String, Text, UniqueConstraint
from sqlalchemy.orm import Mapped, mapped_column

from .base import GUID, Base, UTCDateTime, utcnow


class DotfileRow(Base):
    __tablename__ = "dotfiles"
    __table_args__ = (UniqueConstraint("user_uuid", "path", name="uq_dotfiles_user_uuid_path"),)
    id: Mapped[uuid.UUID] = mapped_column(GUID, primary_key=True, default=uuid.uuid4)
    # No index of its own: the unique (user_uuid, path) constraint serves lookups by user.
    user_uuid: Mapped[uuid.UUID] = mapped_column(ForeignKey("users.uuid", ondelete="CASCADE"))
    path: Mapped[str] = mapped_column(String(256))  # relative to /home/work
    permission: Mapped[str] = mapped_column(String(4), default="644")  # octal digits, e.g. "755"
    data: Mapped[str] = mapped_column(Text, default="")
    created_at: Mapped[datetime] = mapped_column(UTCDateTime, default=utcnow)
    modified_at: Mapped[datetime] = mapped_column(UTCDateTime, default=utcnow, onupdate=utcnow)
