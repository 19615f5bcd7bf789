"""Validation of user-chosen session names (kept free of heavy imports for the CLI)."""

from __future__ import annotations

import re

__all__ = ("validate_session_name",)

_NAME_RE = re.compile(r"^\w[\w.-]*\w$")


def validate_session_name(name: str) -> str:
    """Check a session name: 4 to 64 word characters, dots or hyphens (not at either end)."""
    if not 4 <= len(name) <= 64:
        raise ValueError(f"Session name {name!r} must be 4 to 64 characters long.")
    if not _NAME_RE.match(name):
        raise ValueError(
            f"Session name {name!r} may contain only letters, digits, '_', '-' and '.', "
            "and must start and end with a letter, digit or '_'."
        )
    return name
