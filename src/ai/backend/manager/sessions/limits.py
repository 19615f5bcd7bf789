"""Ending sessions that outlive their keypair resource policy: idle timeout and maximum session lifetime.

Activity (executes, completions, file transfers, streams, terminal pings) is recorded in memory by the
registry; after a manager restart every running session counts as active from the restart on, so a restart
never terminates sessions by itself. With several managers (ADR 0014) each one also sends what it saw to Redis
every few seconds (:class:`RedisActivityStore`), and the leader, which runs the checks, asks Redis about a
session before ending it as idle: the execute path itself does no I/O.
"""

from __future__ import annotations

import logging
import time
import uuid
from typing import Any, Protocol

from sqlalchemy import or_, select

from ..models import KeyPairResourcePolicyRow, KeyPairRow, SessionRow
from ..models.base import utcnow
from .status import SessionStatus as S

log = logging.getLogger(__name__)

IDLE_REASON = "idle-timeout"
LIFETIME_REASON = "session-lifetime-exceeded"


class ActivityStore(Protocol):
    """Where the managers of one database share when sessions were last used (wall-clock seconds)."""

    async def push(self, seen: dict[str, float]) -> None: ...

    async def last(self, session_ids: list[str]) -> dict[str, float]: ...

    async def close(self) -> None: ...


class RedisActivityStore:
    """The sorted set ``backendai:activity`` (member: session id, score: last use); a score only grows."""

    KEY = "backendai:activity"
    RETENTION = 30 * 86400  # seconds an entry outlives the session's last use

    def __init__(self, url: str) -> None:
        import redis.asyncio as aioredis

        self._redis: Any = aioredis.Redis.from_url(url, socket_connect_timeout=5, socket_timeout=10)
        self._pushes = 0

    async def push(self, seen: dict[str, float]) -> None:
        pipe = self._redis.pipeline(transaction=False)
        pipe.zadd(self.KEY, seen, gt=True)  # GT: an older report of a slower manager never moves it back
        self._pushes += 1
        if self._pushes % 100 == 1:
            pipe.zremrangebyscore(self.KEY, "-inf", time.time() - self.RETENTION)
        await pipe.execute()

    async def last(self, session_ids: list[str]) -> dict[str, float]:
        if not session_ids:
            return {}
        scores = await self._redis.zmscore(self.KEY, session_ids)
        return {sid: float(s) for sid, s in zip(session_ids, scores, strict=True) if s is not None}

    async def close(self) -> None:
        await self._redis.aclose()


class ActivityTracker:
    """When each session was last used (monotonic seconds), and when this manager started watching; with a
    ``store``, what this manager saw is shared with the others (:meth:`flush`, :meth:`refresh`)."""

    def __init__(self, store: ActivityStore | None = None) -> None:
        self.started = time.monotonic()
        self._last: dict[uuid.UUID, float] = {}
        self.store = store
        self._unsent: dict[uuid.UUID, float] = {}

    def touch(self, session_id: uuid.UUID) -> None:
        now = time.monotonic()
        self._last[session_id] = now
        if self.store is not None:
            self._unsent[session_id] = now

    async def flush(self) -> None:
        """Send the uses seen since the last flush to the store (put back for the next one on failure)."""
        if self.store is None or not self._unsent:
            return
        unsent, self._unsent = self._unsent, {}
        offset = time.time() - time.monotonic()
        try:
            await self.store.push({str(sid): at + offset for sid, at in unsent.items()})
        except Exception:
            for sid, at in unsent.items():
                self._unsent[sid] = max(at, self._unsent.get(sid, 0.0))
            raise

    async def refresh(self, session_ids: list[uuid.UUID]) -> None:
        """Take the other managers' last uses of ``session_ids`` from the store."""
        if self.store is None or not session_ids:
            return
        offset = time.time() - time.monotonic()
        for sid, wall in (await self.store.last([str(s) for s in session_ids])).items():
            key = uuid.UUID(sid)
            self._last[key] = max(self._last.get(key, 0.0), wall - offset)

    async def close(self) -> None:
        if self.store is not None:
            await self.store.close()

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
    idle: dict[uuid.UUID, tuple[float, float]] = {}  # idle by this manager's memory: (running for, timeout)
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
            idle[sid] = (running_for, idle_timeout)
    if idle:
        # Other managers may have seen them used: ask the shared store about these few only.
        await tracker.refresh(list(idle))
        for sid, (running_for, idle_timeout) in idle.items():
            if tracker.idle_seconds(sid, running_for) > idle_timeout:
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
