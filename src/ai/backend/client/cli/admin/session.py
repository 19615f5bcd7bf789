"""``backend.ai admin session list|info``."""

from __future__ import annotations

import click

from ..core import LazyGroup
from ..session import info, list_sessions

__all__ = ("admin_session",)


@click.group(name="session", cls=LazyGroup)
def admin_session() -> None:
    """Session administration commands."""


admin_session.add_command(list_sessions)
admin_session.add_command(info)
