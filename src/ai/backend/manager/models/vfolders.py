"""Virtual folders: the folders, the users they are shared with and the invitations to share them.

The files live on a storage proxy; a row only records where (``host`` = ``"<proxy>:<volume>"``), who owns
it (a user XOR a group) and who else may use it. Names are unique per owner across all hosts; the two
unique constraints enforce that (NULL owners do not collide).
"""

from __future__ import annotations

import uuid
from datetime import datetime

from sqlalchemy import BigInteger, Boolean, ForeignKey, String, UniqueConstraint
from sqlalchemy.orm import Mapped, mapped_column

from .base import GUID, Base, UTCDateTime, utcnow

USAGE_MODES = ("general", "model", "data")
PERMISSIONS = ("ro", "rw", "wd")  # read-only, read-write, read-write-delete (the owner's)
OWNERSHIP_TYPES = ("user", "group")
# ready: usable; performing: being created on its proxy; cloning: being filled by a clone; deleting: its files
# are being removed.
STATUSES = ("ready", "performing", "cloning", "deleting")
INVITATION_STATES = ("pending", "accepted", "rejected", "canceled")


class VFolderRow(Base):
    __tablename__ = "vfolders"
    __table_args__ = (
        UniqueConstraint("user", "name", name="uq_vfolders_user_name"),
        UniqueConstraint("group", "name", name="uq_vfolders_group_name"),
    )
    id: Mapped[uuid.UUID] = mapped_column(GUID, primary_key=True, default=uuid.uuid4)
    host: Mapped[str] = mapped_column(String(128))
    name: Mapped[str] = mapped_column(String(64), index=True)
    usage_mode: Mapped[str] = mapped_column(String(16), default="general")
    permission: Mapped[str] = mapped_column(String(2), default="rw")  # the default share permission
    ownership_type: Mapped[str] = mapped_column(String(16), default="user")
    user: Mapped[uuid.UUID | None] = mapped_column(ForeignKey("users.uuid", ondelete="CASCADE"), index=True)
    group: Mapped[uuid.UUID | None] = mapped_column(ForeignKey("groups.id", ondelete="CASCADE"), index=True)
    creator: Mapped[str | None] = mapped_column(String(128))  # the creator's e-mail
    unmanaged_path: Mapped[str | None] = mapped_column(String(512))
    cloneable: Mapped[bool] = mapped_column(Boolean, default=False)
    status: Mapped[str] = mapped_column(String(16), default="ready")
    quota: Mapped[int | None] = mapped_column(BigInteger)  # bytes; None: unlimited
    created_at: Mapped[datetime] = mapped_column(UTCDateTime, default=utcnow)
    last_used: Mapped[datetime | None] = mapped_column(UTCDateTime)


class VFolderPermissionRow(Base):
    """A user other than the owner who may use a folder (an accepted invitation, or a project share)."""

    __tablename__ = "vfolder_permissions"
    vfolder: Mapped[uuid.UUID] = mapped_column(ForeignKey("vfolders.id", ondelete="CASCADE"), primary_key=True)
    user: Mapped[uuid.UUID] = mapped_column(ForeignKey("users.uuid", ondelete="CASCADE"), primary_key=True, index=True)
    permission: Mapped[str] = mapped_column(String(2), default="rw")


class VFolderInvitationRow(Base):
    __tablename__ = "vfolder_invitations"
    id: Mapped[uuid.UUID] = mapped_column(GUID, primary_key=True, default=uuid.uuid4)
    vfolder: Mapped[uuid.UUID] = mapped_column(ForeignKey("vfolders.id", ondelete="CASCADE"), index=True)
    inviter: Mapped[str] = mapped_column(String(64), index=True)  # e-mails
    invitee: Mapped[str] = mapped_column(String(64), index=True)
    permission: Mapped[str] = mapped_column(String(2), default="rw")
    state: Mapped[str] = mapped_column(String(16), default="pending")
    created_at: Mapped[datetime] = mapped_column(UTCDateTime, default=utcnow)
    modified_at: Mapped[datetime] = mapped_column(UTCDateTime, default=utcnow, onupdate=utcnow)
