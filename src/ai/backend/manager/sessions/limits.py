"""Ending sessions that outlive their keypair resource policy: idle timeout and maximum session lifetime.

Activity (executes, completions, file transfers, streams, terminal pings) is recorded in memory by the
registry; after a manager restart every running session counts as active from the restart on, so a restart
never terminates sessions by itself.
"""

from __future__ import annotations

import logging
import time
import uuid
from typing import Any

from sqlalchemy import or_, select

from ..models import KeyPairResourcePolicyRow, KeyPairRow, SessionRow
from ..models.base import utcnow
from .status import SessionStatus as S

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


async def expired_sessions(db: Any, tracker: ActivityTracker) -> list[tuple[SessionRow, str]]:
    """Running sessions past their policy's idle timeout (interactive ones) or maximum lifetime.

    Only a few columns of the sessions whose policy sets a limit are read (a busy cluster has thousands
    running): when a RUNNING session became RUNNING is its ``status_changed``; whole rows are loaded only
    for the sessions found expired."""
    rows = (
        await db.execute(
            select(
                SessionRow.id,
                SessionRow.session_type,
                SessionRow.status_changed,
                SessionRow.created_at,
                KeyPairResourcePolicyRow.idle_timeout,
                KeyPairResourcePolicyRow.max_session_lifetime,
            )
            .join(KeyPairRow, KeyPairRow.access_key == SessionRow.access_key)
            .join(KeyPairResourcePolicyRow, KeyPairResourcePolicyRow.name == KeyPairRow.resource_policy)
            .where(
                SessionRow.status == S.RUNNING,
                or_(KeyPairResourcePolicyRow.idle_timeout > 0, KeyPairResourcePolicyRow.max_session_lifetime > 0),
            )
        )
    ).all()
    now = utcnow()
    reasons: dict[uuid.UUID, str] = {}
    for sid, session_type, since, created_at, idle_timeout, lifetime in rows:
        running_for = max((now - (since or created_at)).total_seconds(), 0.0)
        if lifetime and lifetime > 0 and running_for > lifetime:
            reasons[sid] = LIFETIME_REASON
        elif (
            idle_timeout
            and idle_timeout > 0
            and session_type != "batch"
            and tracker.idle_seconds(sid, running_for) > idle_timeout
        ):
            reasons[sid] = IDLE_REASON
    tracker.forget({r[0] for r in rows})
    if not reasons:
        return []
    found = (await db.execute(select(SessionRow).where(SessionRow.id.in_(reasons)))).scalars().all()
    return [(session, reasons[session.id]) for session in found]


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
