"""The in-process event bus: session lifecycle events fan out to waiters and SSE subscribers.

Production deployments with several managers put Redis pub/sub behind the same interface.
"""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from dataclasses import dataclass, field
from typing import Any


@dataclass(frozen=True)
class Event:
    """One lifecycle event (``session_started``, ``session_terminated``...) with its JSON data."""

    name: str
    session_id: str
    data: dict[str, Any] = field(default_factory=dict)


class EventBus:
    """Broadcasts every event to all current subscribers; slow subscribers drop old events."""

    def __init__(self, queue_size: int = 1024) -> None:
        self._subscribers: set[asyncio.Queue[Event]] = set()
        self._queue_size = queue_size

    def publish(self, event: Event) -> None:
        for q in list(self._subscribers):
            if q.full():
                q.get_nowait()
            q.put_nowait(event)

    @asynccontextmanager
    async def subscribe(self) -> AsyncIterator[asyncio.Queue[Event]]:
        q: asyncio.Queue[Event] = asyncio.Queue(self._queue_size)
        self._subscribers.add(q)
        try:
            yield q
        finally:
            self._subscribers.discard(q)
