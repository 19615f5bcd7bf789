"""Per-user configuration for new sessions: dotfiles and the user's bootstrap script.

Dotfiles are files the agent writes into ``/home/work`` of every new session of their owner, with the
given mode. Limits: at most :data:`MAX_DOTFILES` files and :data:`MAX_TOTAL_BYTES` (paths and contents
together, UTF-8) per user; paths are relative to ``/home/work`` (``/home/work/...`` is accepted and
shortened), never leave it (no ``..``) and avoid the few paths the runtime itself manages.
"""

from __future__ import annotations

import posixpath
import re
import uuid
from typing import Any

from sqlalchemy import select
from sqlalchemy.ext.asyncio import AsyncSession

from ai.backend.common.problems import InvalidAPIParameters

from .models import DotfileRow, UserRow

__all__ = (
    "MAX_BOOTSTRAP_BYTES",
    "MAX_DOTFILES",
    "MAX_TOTAL_BYTES",
    "RESERVED_PATHS",
    "check_bootstrap_script",
    "check_dotfile_path",
    "check_permission",
    "dotfile_bytes",
    "kernel_user_config",
)

MAX_DOTFILES = 100
MAX_TOTAL_BYTES = 64 * 1024
MAX_BOOTSTRAP_BYTES = 64 * 1024
MAX_PATH_LEN = 256
WORKDIR = "/home/work"
# Managed by the image or the runtime; a user file there would break logins, SSH or Jupyter.
RESERVED_PATHS = frozenset({".ssh", ".ssh/authorized_keys", ".terminfo", ".jupyter", ".local", ".config"})
_PERMISSION = re.compile(r"^0?([0-7]{3})$")


def check_dotfile_path(path: Any) -> str:
    """The normalized path (relative to /home/work) of a dotfile, or a 400 problem saying what is wrong."""
    if not isinstance(path, str) or not path.strip():
        raise InvalidAPIParameters("'path' must be a non-empty string (relative to /home/work).")
    if "\x00" in path or "\\" in path or any(ord(c) < 32 for c in path):
        raise InvalidAPIParameters(f"The dotfile path {path!r} contains forbidden characters.")
    raw = path
    if path.startswith("/"):
        if not (path + "/").startswith(WORKDIR + "/") or path.rstrip("/") == WORKDIR:
            raise InvalidAPIParameters(
                f"The dotfile path {raw!r} is outside {WORKDIR}: give a path relative to {WORKDIR}."
            )
        path = path[len(WORKDIR) + 1 :]
    if ".." in path.split("/"):
        raise InvalidAPIParameters(f"The dotfile path {raw!r} must not contain '..'.")
    norm = posixpath.normpath(path)
    if norm in (".", "") or norm.startswith("/"):
        raise InvalidAPIParameters(f"The dotfile path {raw!r} does not name a file inside {WORKDIR}.")
    if path.endswith("/"):
        raise InvalidAPIParameters(f"The dotfile path {raw!r} names a directory, not a file.")
    if len(norm) > MAX_PATH_LEN:
        raise InvalidAPIParameters(f"The dotfile path is longer than {MAX_PATH_LEN} characters.")
    if norm in RESERVED_PATHS:
        raise InvalidAPIParameters(f"The dotfile path {norm!r} is reserved for the system.")
    return norm


def check_permission(value: Any) -> str:
    """A mode as three octal digits (``"755"``; ``"0755"`` is accepted too)."""
    m = _PERMISSION.match(value) if isinstance(value, str) else None
    if m is None:
        raise InvalidAPIParameters(f'\'permission\' must be an octal mode such as "644" or "755", got {value!r}.')
    return m.group(1)


def check_bootstrap_script(value: Any) -> str | None:
    """A user bootstrap script (``None`` or empty clears it)."""
    if value is None or value == "":
        return None
    if not isinstance(value, str):
        raise InvalidAPIParameters("'script' must be a string.")
    if len(value.encode()) > MAX_BOOTSTRAP_BYTES:
        raise InvalidAPIParameters(f"The bootstrap script is larger than {MAX_BOOTSTRAP_BYTES // 1024} KiB.")
    return value


def dotfile_bytes(path: str, data: str) -> int:
    """What one dotfile counts against the per-user storage limit."""
    return len(path.encode()) + len(data.encode())


async def kernel_user_config(db: AsyncSession, user_uuid: uuid.UUID, session_bootstrap: str | None) -> dict[str, Any]:
    """What the agent needs to set a new kernel up for ``user_uuid``.

    ``{"dotfiles": [{"path", "perm", "data"}, ...], "bootstrap_script": ...}``: the paths are relative to
    /home/work, ``perm`` is three octal digits, and the bootstrap script is the session's own if it has one,
    else the user's (``None`` when neither exists).
    """
    rows = (
        (await db.execute(select(DotfileRow).where(DotfileRow.user_uuid == user_uuid).order_by(DotfileRow.path)))
        .scalars()
        .all()
    )
    script = session_bootstrap
    if not script:
        script = (
            await db.execute(select(UserRow.bootstrap_script).where(UserRow.uuid == user_uuid))
        ).scalar_one_or_none()
    return {
        "dotfiles": [{"path": r.path, "perm": r.permission, "data": r.data} for r in rows],
        "bootstrap_script": script or None,
    }
