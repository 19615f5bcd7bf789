"""The app streams (``tcpproxy``/``httpproxy`` WebSockets) open in this manager process, by session, so that
all of a session's are closed when it ends (:mod:`.endings`).

A stream registers its relay task; closing cancels it, and the stream's handler then closes its WebSocket
with 1001 (going away). Sessions that ended are remembered for a while, so a stream that finishes its
set-up (the agent may take seconds to start an app) after its session ended is closed at once.
"""

from __future__ import annotations

import asyncio
import uuid
from collections import OrderedDict
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass, field
from typing import Any

__all__ = ["Circuit", "CircuitRegistry"]

#: How many ended sessions are remembered (a stream set up within seconds of its session's end is caught).
ENDED_MEMORY = 4096


@dataclass(eq=False)
class Circuit:
    """One open app stream: its session, app and relay task; ``closed_by`` says why it was closed from here."""

    session_id: uuid.UUID
    app: str
    task: asyncio.Task[Any]
    closed_by: str | None = field(default=None)

    def close(self, reason: str) -> None:
        if self.closed_by is None:
            self.closed_by = reason
        self.task.cancel()


class CircuitRegistry:
    """The open app streams of this process, per session."""

    def __init__(self) -> None:
        self._open: dict[uuid.UUID, set[Circuit]] = {}
        self._ended: OrderedDict[uuid.UUID, None] = OrderedDict()

    def count(self, session_id: uuid.UUID | None = None) -> int:
        """Open streams of one session (all sessions with ``None``)."""
        if session_id is None:
            return sum(len(c) for c in self._open.values())
        return len(self._open.get(session_id, ()))

    @contextmanager
    def track(self, session_id: uuid.UUID, app: str, task: asyncio.Task[Any]) -> Iterator[Circuit]:
        """Register ``task`` as a stream of the session while the context is open (closed at once when the
        session already ended)."""
        circuit = Circuit(session_id, app, task)
        self._open.setdefault(session_id, set()).add(circuit)
        if session_id in self._ended:
            circuit.close("session-ended")
        try:
            yield circuit
        finally:
            streams = self._open.get(session_id)
            if streams is not None:
                streams.discard(circuit)
                if not streams:
                    del self._open[session_id]

    def close_session(self, session_id: uuid.UUID, reason: str = "session-ended") -> int:
        """Close every open stream of the session and remember that it ended; how many were open."""
        self._ended[session_id] = None
        self._ended.move_to_end(session_id)
        while len(self._ended) > ENDED_MEMORY:
            self._ended.popitem(last=False)
        streams = list(self._open.get(session_id, ()))
        for circuit in streams:
            circuit.close(reason)
        return len(streams)
