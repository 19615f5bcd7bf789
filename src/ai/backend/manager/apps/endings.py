"""Closing the apps of sessions that end: their app streams in this process (:mod:`.circuits`) and, with an
app proxy configured, the proxy's circuits (``DELETE /v2/sessions/{id}``, best effort).

The manager learns of every end from its event bus: ``session_terminating`` (a destroy has begun: the
containers are going), ``session_terminated`` (also ends the kernels reported by themselves, lost agents and
idle timeouts) and ``session_failure``. With Redis the bus carries the events of every manager, so streams a
session has on other managers are closed too (and each manager tells the proxy; forgetting is idempotent).
"""

from __future__ import annotations

import logging
import uuid

from ..background import Spawn
from ..events import EventBus
from .appproxy import AppProxyClient
from .circuits import CircuitRegistry

__all__ = ["ENDING_EVENTS", "close_apps_of_ended_sessions"]

log = logging.getLogger(__name__)

ENDING_EVENTS = frozenset({"session_terminating", "session_terminated", "session_failure"})
# The proxy is told once the end is recorded (a terminating session's kernels are still being removed).
PROXY_EVENTS = frozenset({"session_terminated", "session_failure"})
#: Events a slow watcher may fall behind by before the oldest are dropped (ends arrive in bursts).
QUEUE_SIZE = 65536


async def close_apps_of_ended_sessions(
    bus: EventBus, circuits: CircuitRegistry, proxy: AppProxyClient | None, spawn: Spawn
) -> None:
    """Run until cancelled: on each session end, close its app streams and tell the proxy."""
    async with bus.subscribe(QUEUE_SIZE) as queue:
        while True:
            event = await queue.get()
            if event.name not in ENDING_EVENTS:
                continue
            try:
                session_id = uuid.UUID(event.session_id)
            except ValueError:
                continue
            try:
                closed = circuits.close_session(session_id, event.name.removeprefix("session_"))
                if closed:
                    log.info("closed %d app stream(s) of session %s (%s)", closed, session_id, event.name)
                if proxy is not None and event.name in PROXY_EVENTS:
                    spawn(proxy.forget_session(session_id))
            except Exception:  # noqa: BLE001 - one bad event must not stop the watcher
                log.exception("closing the apps of session %s failed", session_id)
