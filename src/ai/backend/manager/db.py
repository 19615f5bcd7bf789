"""Async engine and session factory for SQLite (embedded) and PostgreSQL (production)."""

from __future__ import annotations

import asyncio
import random
from collections.abc import Awaitable, Callable
from typing import Any, TypeVar

from sqlalchemy import event
from sqlalchemy.exc import OperationalError
from sqlalchemy.ext.asyncio import AsyncEngine, async_sessionmaker, create_async_engine


def create_engine(url: str) -> AsyncEngine:
    """Create the engine; SQLite gets WAL mode and foreign keys so it behaves like a server DB."""
    kwargs: dict[str, Any] = {}
    if url.startswith("sqlite"):
        # A bigger pool than the default 5: concurrent requests would otherwise open and close a
        # connection (and its thread) per request.
        kwargs.update(connect_args={"timeout": 30}, pool_size=16, max_overflow=32)
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

    return engine


def session_factory(engine: AsyncEngine) -> async_sessionmaker[Any]:
    return async_sessionmaker(engine, expire_on_commit=False)


T = TypeVar("T")


def is_lock_error(e: BaseException) -> bool:
    """Whether ``e`` is SQLite's "database is locked" (another connection held the write lock too long)."""
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
