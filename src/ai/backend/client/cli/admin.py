"""``backend.ai admin``: administrative commands (``admin session list|info``, ``admin sessions``)."""

from __future__ import annotations

import click

from .core import LazyGroup
from .session import info, list_sessions


@click.group(cls=LazyGroup)
def admin() -> None:
    """Administrative commands."""


@admin.group(name="session", cls=LazyGroup)
def admin_session() -> None:
    """Session administration commands."""


admin_session.add_command(list_sessions)
admin_session.add_command(info)
admin.add_command(list_sessions, name="sessions")
