"""The session events this manager publishes on its event bus, with the payload clients read."""

from __future__ import annotations

from typing import Any

from ..events import Event, EventBus
from ..models import SessionRow


def publish_session_event(
    bus: EventBus, name: str, session: SessionRow, reason: str | None = None, **extra: Any
) -> None:
    """Publish ``name`` (``session_started``, ``session_terminated``, ...) for ``session``."""
    data = {
        "sessionId": str(session.id),
        "sessionName": session.name,
        "ownerAccessKey": session.access_key,
        "reason": reason or "",
        **extra,
    }
    bus.publish(Event(name, str(session.id), data))
