"""The SQLite write gate of :mod:`ai.backend.manager.db`: one writer of a process at a time, readers never wait.

Every test runs against a real SQLite file through ``create_engine()``, the way the manager does.
"""

from __future__ import annotations

import asyncio
import gc
import time
from collections.abc import AsyncIterator, Awaitable, Callable
from pathlib import Path
from typing import Any

import pytest
from sqlalchemy import Column, Integer, MetaData, Table, event, select, text, update
from sqlalchemy.exc import IntegrityError, OperationalError
from sqlalchemy.ext.asyncio import AsyncEngine, create_async_engine
from sqlalchemy.orm import DeclarativeBase, Mapped

from ai.backend.manager import db
from ai.backend.manager.db import create_engine, is_lock_error, retry_locked, session_factory

metadata = MetaData()
counter = Table("counter", metadata, Column("id", Integer, primary_key=True), Column("n", Integer, nullable=False))


class _Base(DeclarativeBase):
    pass


class _Counter(_Base):
    __table__ = counter
    id: Mapped[int]
    n: Mapped[int]


async def _setup(engine: AsyncEngine) -> None:
    async with engine.begin() as conn:
        await conn.run_sync(metadata.create_all)
        await conn.execute(counter.insert().values(id=1, n=0))


async def _value(engine: AsyncEngine) -> int:
    async with session_factory(engine)() as s:
        return int((await s.execute(select(counter.c.n).where(counter.c.id == 1))).scalar_one())


@pytest.fixture
async def engine(tmp_path: Path) -> AsyncIterator[AsyncEngine]:
    e = create_engine(f"sqlite+aiosqlite:///{tmp_path / 'gate.db'}")
    await _setup(e)
    yield e
    await e.dispose()


async def _increment_for_update(engine: AsyncEngine, pause: float) -> None:
    """Read-modify-write: read under FOR UPDATE, pause (other tasks run), write back the value read + 1."""
    async with session_factory(engine)() as s, s.begin():
        n = (await s.execute(select(counter.c.n).where(counter.c.id == 1).with_for_update())).scalar_one()
        await asyncio.sleep(pause)
        await s.execute(update(counter).where(counter.c.id == 1).values(n=n + 1))


async def _hold_turn(engine: AsyncEngine, took: asyncio.Event, until: asyncio.Event, value: int = 100) -> None:
    """Write (taking the turn), then keep the transaction open until ``until`` is set."""
    async with session_factory(engine)() as s, s.begin():
        await s.execute(update(counter).where(counter.c.id == 1).values(n=value))
        took.set()
        await until.wait()


async def _write(engine: AsyncEngine, value: int) -> None:
    async with session_factory(engine)() as s, s.begin():
        await s.execute(update(counter).where(counter.c.id == 1).values(n=value))


async def test_concurrent_read_modify_write_loses_no_update(engine: AsyncEngine) -> None:
    n = 40
    started = time.monotonic()
    await asyncio.wait_for(asyncio.gather(*(_increment_for_update(engine, 0.005) for _ in range(n))), 10)
    assert await _value(engine) == n
    assert time.monotonic() - started < 4


async def test_orm_get_with_for_update_takes_the_turn(engine: AsyncEngine) -> None:
    """``session.get(..., with_for_update=True)`` counts as a write: increments through the ORM don't collide."""

    async def bump() -> None:
        async with session_factory(engine)() as s, s.begin():
            row = await s.get(_Counter, 1, with_for_update=True)
            assert row is not None
            await asyncio.sleep(0.005)
            row.n = row.n + 1

    await asyncio.gather(*(bump() for _ in range(20)))
    assert await _value(engine) == 20


async def test_without_the_gate_the_same_code_loses_updates(tmp_path: Path) -> None:
    """The contrast: the same read-modify-write on an engine without the gate (same pragmas) goes wrong,
    so the test above can fail."""
    path = tmp_path / "nogate.db"
    plain = create_async_engine(
        f"sqlite+aiosqlite:///{path}", connect_args={"timeout": 30}, pool_size=16, max_overflow=32
    )

    @event.listens_for(plain.sync_engine, "connect")
    def _pragmas(dbapi_conn: Any, _record: Any) -> None:
        cur = dbapi_conn.cursor()
        cur.execute("PRAGMA journal_mode=WAL")
        cur.execute("PRAGMA synchronous=NORMAL")
        cur.close()

    try:
        await _setup(plain)
        n = 20
        results = await asyncio.gather(*(_increment_for_update(plain, 0.05) for _ in range(n)), return_exceptions=True)
        errors = [r for r in results if isinstance(r, BaseException)]
        assert errors or await _value(plain) < n
    finally:
        await plain.dispose()


async def test_plain_select_does_not_wait_for_the_turn(engine: AsyncEngine) -> None:
    took, release = asyncio.Event(), asyncio.Event()
    holder = asyncio.create_task(_hold_turn(engine, took, release, value=100))
    await asyncio.wait_for(took.wait(), 2)

    # A writer does wait (the turn really is held) ...
    writer = asyncio.create_task(_write(engine, 7))
    await asyncio.sleep(0.2)
    assert not writer.done()

    # ... but a reader does not, and it sees the last committed value (WAL), not the holder's.
    t0 = time.monotonic()
    assert await asyncio.wait_for(_value(engine), 1) == 0
    async with session_factory(engine)() as s, s.begin():  # a read inside an explicit transaction
        assert (await s.execute(text("SELECT n FROM counter WHERE id = 1"))).scalar_one() == 0
    assert time.monotonic() - t0 < 1

    release.set()
    await asyncio.wait_for(holder, 2)
    await asyncio.wait_for(writer, 2)
    assert await _value(engine) == 7  # the writer went after the holder


async def test_cancelling_the_holder_gives_the_turn_back(engine: AsyncEngine) -> None:
    took = asyncio.Event()
    holder = asyncio.create_task(_hold_turn(engine, took, asyncio.Event(), value=100))
    await asyncio.wait_for(took.wait(), 2)
    holder.cancel()
    with pytest.raises(asyncio.CancelledError):
        await holder
    t0 = time.monotonic()
    await asyncio.wait_for(_write(engine, 5), 2)
    assert time.monotonic() - t0 < 1
    assert await _value(engine) == 5


async def test_cancelling_a_waiter_leaves_no_turn_taken(engine: AsyncEngine) -> None:
    took, release = asyncio.Event(), asyncio.Event()
    holder = asyncio.create_task(_hold_turn(engine, took, release))
    await asyncio.wait_for(took.wait(), 2)
    waiter = asyncio.create_task(_write(engine, 9))
    await asyncio.sleep(0.1)
    waiter.cancel()
    with pytest.raises(asyncio.CancelledError):
        await waiter
    release.set()
    await asyncio.wait_for(holder, 2)
    await asyncio.wait_for(_write(engine, 3), 2)
    assert await _value(engine) == 3


async def test_a_waiter_times_out_with_a_lock_error_and_the_holder_commits(
    engine: AsyncEngine, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setattr(db, "WRITE_TURN_TIMEOUT", 0.2)
    took, release = asyncio.Event(), asyncio.Event()
    holder = asyncio.create_task(_hold_turn(engine, took, release, value=100))
    await asyncio.wait_for(took.wait(), 2)

    t0 = time.monotonic()
    with pytest.raises(OperationalError) as caught:
        await asyncio.wait_for(_write(engine, 9), 3)
    waited = time.monotonic() - t0
    assert is_lock_error(caught.value) and "database is locked" in str(caught.value)
    assert 0.15 < waited < 1.5

    release.set()
    await asyncio.wait_for(holder, 2)
    assert await _value(engine) == 100  # the holder committed; the timed-out write never ran


async def test_retry_locked_gets_through_once_the_holder_finishes(
    engine: AsyncEngine, monkeypatch: pytest.MonkeyPatch
) -> None:
    """The gate's timeout is a lock error in the sense of :func:`retry_locked`: the step is tried again."""
    monkeypatch.setattr(db, "WRITE_TURN_TIMEOUT", 0.1)
    took, release = asyncio.Event(), asyncio.Event()
    holder = asyncio.create_task(_hold_turn(engine, took, release, value=100))
    await asyncio.wait_for(took.wait(), 2)
    attempts = 0

    async def step() -> None:
        nonlocal attempts
        attempts += 1
        if attempts == 2:
            release.set()  # the holder finishes while the second attempt waits
        await _write(engine, 11)

    await asyncio.wait_for(retry_locked(step), 3)
    await holder
    assert attempts >= 2 and await _value(engine) == 11


async def test_rollback_gives_the_turn_back_and_hides_the_write(engine: AsyncEngine) -> None:
    async with session_factory(engine)() as s:
        await s.execute(update(counter).where(counter.c.id == 1).values(n=42))
        await s.rollback()
        # The session is still open but holds no connection: a write elsewhere must not wait.
        await asyncio.wait_for(_increment_for_update(engine, 0), 1)
    assert await _value(engine) == 1

    class Boom(Exception):
        pass

    with pytest.raises(Boom):  # an exception in ``begin()`` rolls back and gives the turn back too
        async with session_factory(engine)() as s, s.begin():
            await s.execute(update(counter).where(counter.c.id == 1).values(n=42))
            raise Boom
    await asyncio.wait_for(_increment_for_update(engine, 0), 1)
    assert await _value(engine) == 2


async def test_failed_statement_then_rollback_gives_the_turn_back(engine: AsyncEngine) -> None:
    async with session_factory(engine)() as s:
        await s.execute(update(counter).where(counter.c.id == 1).values(n=50))
        with pytest.raises(IntegrityError):
            await s.execute(counter.insert().values(id=1, n=0))  # duplicate primary key
        await s.rollback()
    await asyncio.wait_for(_write(engine, 8), 1)
    assert await _value(engine) == 8


@pytest.mark.filterwarnings("ignore:The garbage collector is trying to clean up")
async def test_a_session_dropped_without_closing_gives_the_turn_back(engine: AsyncEngine) -> None:
    """A connection reclaimed by the garbage collector (never checked in) releases its turn too."""

    async def leak() -> None:
        s = session_factory(engine)()
        await s.execute(update(counter).where(counter.c.id == 1).values(n=77))

    await leak()
    gc.collect()
    await asyncio.sleep(0.05)
    assert await _value(engine) == 0  # the write was never committed
    await asyncio.wait_for(_write(engine, 6), 2)
    assert await _value(engine) == 6


async def test_ddl_and_insert_take_the_turn(engine: AsyncEngine) -> None:
    """Each kind of write statement waits for a held turn (here on a raw connection, as ``engine.begin()``)."""
    statements: list[Callable[[Any], Awaitable[Any]]] = [
        lambda c: c.execute(text("CREATE TABLE other (x INTEGER)")),
        lambda c: c.execute(counter.insert().values(id=2, n=0)),
        lambda c: c.execute(text("DELETE FROM counter WHERE id = 2")),
        lambda c: c.execute(text("  replace INTO counter (id, n) VALUES (3, 0)")),
    ]
    for stmt in statements:
        took, release = asyncio.Event(), asyncio.Event()
        holder = asyncio.create_task(_hold_turn(engine, took, release))
        await asyncio.wait_for(took.wait(), 2)

        async def run(stmt: Callable[[Any], Awaitable[Any]] = stmt) -> None:
            async with engine.begin() as conn:
                await stmt(conn)

        task = asyncio.create_task(run())
        await asyncio.sleep(0.1)
        assert not task.done()
        release.set()
        await asyncio.wait_for(holder, 2)
        await asyncio.wait_for(task, 2)
    async with engine.connect() as conn:
        assert (await conn.execute(text("SELECT count(*) FROM other"))).scalar_one() == 0
        assert (await conn.execute(text("SELECT count(*) FROM counter"))).scalar_one() == 2


async def test_postgresql_engine_gets_no_gate(tmp_path: Path) -> None:
    """Only SQLite URLs are gated (no connection is made here)."""
    pytest.importorskip("asyncpg")
    pg = create_engine("postgresql+asyncpg://u:p@127.0.0.1:1/none")
    sqlite = create_engine(f"sqlite+aiosqlite:///{tmp_path / 'x.db'}")
    try:
        assert not pg.sync_engine.dispatch.before_cursor_execute
        assert not pg.sync_engine.pool.dispatch.checkin
        assert sqlite.sync_engine.dispatch.before_cursor_execute
        assert sqlite.sync_engine.pool.dispatch.checkin
    finally:
        await pg.dispose()
        await sqlite.dispose()
