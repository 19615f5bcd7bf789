"""Async engine and session factory for SQLite (embedded) and PostgreSQL (production).

SQLite has one writer at a time. Left to itself, a connection that finds the write lock taken sleeps in
SQLite's busy handler (1, 2, 5 … 100 ms, in its worker thread) and retries, so under a burst of
concurrent transactions most of the time went to sleeping waiters while the lock was free. Here the
writers of one manager process take turns on an asyncio lock instead (:class:`WriteGate`): a connection
takes it just before its first write (or ``SELECT … FOR UPDATE``, which SQLite would otherwise not lock
at all) and gives it back when it returns to the pool, after its COMMIT or ROLLBACK. Readers never wait
(WAL). Other processes on the same file still meet the busy handler.
"""

from __future__ import annotations

import asyncio
import random
import sqlite3
import weakref
from collections.abc import Awaitable, Callable
from typing import Any, TypeVar

from sqlalchemy import event
from sqlalchemy.exc import OperationalError
from sqlalchemy.ext.asyncio import AsyncEngine, async_sessionmaker, create_async_engine
from sqlalchemy.orm import Session
from sqlalchemy.util.concurrency import await_, in_greenlet

from . import generations

# How long a transaction waits for its turn to write before failing like SQLite's own busy timeout.
WRITE_TURN_TIMEOUT = 30.0
_WRITE_VERBS = ("INSERT", "UPDATE", "DELETE", "REPLACE", "CREATE", "DROP", "ALTER")
_HELD = "bai_write_gate"


class WriteGate:
    """Turn-taking of one SQLite database's writers within this process (one lock per event loop)."""

    def __init__(self) -> None:
        self._locks: weakref.WeakKeyDictionary[asyncio.AbstractEventLoop, asyncio.Lock] = weakref.WeakKeyDictionary()

    def _lock(self) -> asyncio.Lock:
        loop = asyncio.get_running_loop()
        lock = self._locks.get(loop)
        if lock is None:
            lock = self._locks[loop] = asyncio.Lock()
        return lock

    async def _acquire(self) -> tuple[asyncio.AbstractEventLoop, asyncio.Lock]:
        lock = self._lock()
        try:
            await asyncio.wait_for(lock.acquire(), WRITE_TURN_TIMEOUT)
        except TimeoutError:
            raise OperationalError(
                "(waiting for the write turn)", None, sqlite3.OperationalError("database is locked")
            ) from None
        return asyncio.get_running_loop(), lock

    def install(self, engine: AsyncEngine) -> None:
        """Hook the gate into ``engine``'s statement execution and connection pool."""

        @event.listens_for(engine.sync_engine, "before_cursor_execute")
        def _take_turn(conn: Any, _cursor: Any, statement: str, _params: Any, context: Any, _many: bool) -> None:
            info = conn.info
            if _HELD in info or not in_greenlet() or not _writes(statement, context):
                return
            info[_HELD] = await_(self._acquire())

        def _give_back(_dbapi_conn: Any, record: Any, *_: Any) -> None:
            held = record.info.pop(_HELD, None) if record is not None else None
            if held is None:
                return
            loop, lock = held
            try:
                here = asyncio.get_running_loop()
            except RuntimeError:
                here = None
            if here is loop:
                _release(lock)
            elif not loop.is_closed():  # e.g. a connection collected as garbage in a worker thread
                loop.call_soon_threadsafe(_release, lock)

        for name in ("checkin", "invalidate", "detach"):
            event.listen(engine.sync_engine.pool, name, _give_back)


def _release(lock: asyncio.Lock) -> None:
    if lock.locked():
        lock.release()


def _writes(statement: str, context: Any) -> bool:
    """Whether a statement needs the write turn: DML/DDL, or a SELECT … FOR UPDATE (a read that the
    transaction will write after: nobody else may write in between)."""
    if statement.lstrip()[:7].upper().startswith(_WRITE_VERBS):
        return True
    compiled = getattr(context, "compiled", None)
    return compiled is not None and getattr(compiled.statement, "_for_update_arg", None) is not None


def create_engine(url: str) -> AsyncEngine:
    """Create the engine; SQLite gets WAL mode and foreign keys so it behaves like a server DB."""
    kwargs: dict[str, Any] = {}
    if url.startswith("sqlite"):
        # A pool big enough for a burst (concurrent requests, starts, heartbeats) without overflow: an
        # overflow connection is opened (a thread, the pragmas) and closed again for every use.
        kwargs.update(connect_args={"timeout": 30}, pool_size=48, max_overflow=16)
    else:
        # No pre-ping: it costs a round trip per checkout; recycle connections instead.
        kwargs.update(pool_size=16, max_overflow=32, pool_recycle=1800)
    engine = create_async_engine(url, **kwargs)
    if url.startswith("sqlite"):

        @event.listens_for(engine.sync_engine, "connect")
        def _sqlite_pragmas(dbapi_conn: Any, _record: Any) -> None:
            cur = dbapi_conn.cursor()
            cur.execute("PRAGMA journal_mode=WAL")
            cur.execute("PRAGMA synchronous=NORMAL")
            cur.execute("PRAGMA foreign_keys=ON")
            cur.close()

        WriteGate().install(engine)
    return engine


class TrackedSession(Session):
    """A session whose committed changes move the generations of the tables they touch (generations.py),
    so that the caches of every manager drop what the change made stale."""


generations.track_changes(TrackedSession)


def session_factory(engine: AsyncEngine) -> async_sessionmaker[Any]:
    """Sessions on ``engine`` (tracked: see :class:`TrackedSession`); rows stay readable after a commit."""
    return async_sessionmaker(engine, expire_on_commit=False, sync_session_class=TrackedSession)


T = TypeVar("T")


def is_lock_error(e: BaseException) -> bool:
    """Whether ``e`` is SQLite's "database is locked" (another connection held the write lock too long, or
    this process's :class:`WriteGate` did not give a turn in time)."""
    return isinstance(e, OperationalError) and "database is locked" in str(e)


async def retry_locked(step: Callable[[], Awaitable[T]], attempts: int = 6) -> T:
    """Run ``step`` (a whole transaction: it opens and commits its own session) again when SQLite answers
    "database is locked", with a growing, jittered pause; other errors and the last failure propagate."""
    for attempt in range(attempts):
        try:
            return await step()
        except OperationalError as e:
            if not is_lock_error(e) or attempt == attempts - 1:
                raise
            await asyncio.sleep(0.05 * 2**attempt * (0.5 + random.random()))
    raise AssertionError("unreachable")
