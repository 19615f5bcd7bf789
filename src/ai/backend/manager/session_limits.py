"""Ending sessions that outlive their keypair resource policy: idle timeout and maximum session lifetime.

Activity (executes, completions, file transfers, streams, terminal pings) is recorded in memory by the
registry; after a manager restart every running session counts as active from the restart on, so a restart
never terminates sessions by itself.
"""

from __future__ import annotations

import logging
import time
import uuid
from datetime import datetime
from typing import Any

from sqlalchemy import select

from .models import KeyPair, KeyPairResourcePolicy, SessionRow
from .models.base import utcnow

log = logging.getLogger(__name__)

IDLE_REASON = "idle-timeout"
LIFETIME_REASON = "session-lifetime-exceeded"


class ActivityTracker:
    """When each session was last used (monotonic seconds), and when this manager started watching."""

    def __init__(self) -> None:
        self.started = time.monotonic()
        self._last: dict[uuid.UUID, float] = {}

    def touch(self, session_id: uuid.UUID) -> None:
        self._last[session_id] = time.monotonic()

    def idle_seconds(self, session_id: uuid.UUID, running_for: float) -> float:
        """Seconds since the last activity (the session's start or this manager's start at the latest)."""
        now = time.monotonic()
        last = max(self._last.get(session_id, 0.0), self.started, now - running_for)
        return now - last

    def forget(self, keep: set[uuid.UUID]) -> None:
        for sid in list(self._last):
            if sid not in keep:
                del self._last[sid]


def _running_since(session: SessionRow) -> datetime:
    started = (session.status_history or {}).get("RUNNING")
    return datetime.fromisoformat(started) if isinstance(started, str) else session.created_at


async def expired_sessions(db: Any, tracker: ActivityTracker) -> list[tuple[SessionRow, str]]:
    """Running sessions past their policy's idle timeout (interactive ones) or maximum lifetime."""
    rows = (
        await db.execute(
            select(SessionRow, KeyPairResourcePolicy.idle_timeout, KeyPairResourcePolicy.max_session_lifetime)
            .join(KeyPair, KeyPair.access_key == SessionRow.access_key)
            .join(KeyPairResourcePolicy, KeyPairResourcePolicy.name == KeyPair.resource_policy)
            .where(SessionRow.status == "RUNNING")
        )
    ).all()
    now = utcnow()
    out: list[tuple[SessionRow, str]] = []
    for session, idle_timeout, lifetime in rows:
        running_for = max((now - _running_since(session)).total_seconds(), 0.0)
        if lifetime and lifetime > 0 and running_for > lifetime:
            out.append((session, LIFETIME_REASON))
        elif (
            idle_timeout and idle_timeout > 0 and session.session_type != "batch"
            and tracker.idle_seconds(session.id, running_for) > idle_timeout
        ):
            out.append((session, IDLE_REASON))
    tracker.forget({s.id for s, _, _ in rows})
    return out


async def enforce_session_limits(registry: Any) -> None:
    """Destroy the sessions :func:`expired_sessions` finds (one periodic pass)."""
    async with registry.db() as db:
        expired = await expired_sessions(db, registry.activity)
    for session, reason in expired:
        log.info("terminating session %s (%s): %s", session.name, session.id, reason)
        try:
            await registry.destroy(session, reason=reason)
        except Exception:  # noqa: BLE001 - one failure must not stop the others
            log.exception("could not terminate session %s", session.id)
