"""Which managers run, which one leads, and what only the leader does (ADR 0014).

Every manager process has an id and a row in ``managers``. Two shapes:

* :class:`SoloPresence`: the only manager of its database. On SQLite it holds an exclusive ``flock`` on
  ``<database file>.manager-lock``; on PostgreSQL without Redis the exclusive advisory lock ``(NS, CLUSTER_KEY)``.
  A second manager is refused at start (:class:`ManagerRefused`). It leads from its start.
* :class:`PgPresence`: one of several managers on PostgreSQL with Redis. A dedicated asyncpg connection (outside
  the pool) holds ``(NS, CLUSTER_KEY)`` shared, the manager's own liveness lock ``(NS, lock_key)`` and, for the
  leader, ``(NS, LEADER_KEY)``; PostgreSQL drops them when the connection dies, ``kill -9`` included. A manager
  is alive exactly while its liveness lock is held (``pg_locks``). Followers try the leader lock every
  :data:`TICK` seconds and forward their scheduler wakes to the leader with ``NOTIFY``.

:class:`Roles` runs the leader's loops (the scheduler and the other singletons) while this manager leads, and the
follower's (the wake forwarding) otherwise.
"""

from __future__ import annotations

import abc
import asyncio
import fcntl
import logging
import os
import secrets
import socket
from collections.abc import Awaitable, Callable, Coroutine
from contextlib import suppress
from pathlib import Path
from typing import Any

from sqlalchemy import delete, text
from sqlalchemy.engine import make_url
from sqlalchemy.ext.asyncio import AsyncSession, async_sessionmaker

from .models import ManagerRow
from .models.base import utcnow

log = logging.getLogger(__name__)

#: The first key of every advisory lock of ours ("BAI!"), so they never meet another application's.
NS = 0x42414921
LEADER_KEY = 0
CLUSTER_KEY = 1
#: Seconds between the liveness writes, the leader-lock tries and the checks for vanished managers.
TICK = 1.0
#: How long a start retries the locks: PostgreSQL may not have noticed yet that a predecessor was just killed (the
#: kernel closes a dead process's connections at once, so this is short).
LOCK_WAIT = 3.0
#: The NOTIFY channel a follower wakes the leader's scheduler with.
WAKE_CHANNEL = "bai_scheduler_wake"
#: Rows of managers dead for this long are deleted by the leader (seconds).
PURGE_AFTER = 600.0

Loops = Callable[[], list[Coroutine[Any, Any, Any]]]


class ManagerRefused(RuntimeError):
    """This manager may not run beside the one(s) already using the database."""


def new_manager_id() -> str:
    """``<host>-<pid>-<random>``: unique per process, readable in ``admin cluster status``."""
    return f"{socket.gethostname()[:40]}-{os.getpid()}-{secrets.token_hex(3)}"


class Roles:
    """The loops of the leader or of a follower, whichever this manager is now."""

    def __init__(self, leader: Loops, follower: Loops) -> None:
        self._factories = {True: leader, False: follower}
        self._tasks: list[asyncio.Task[Any]] = []
        self.leading: bool | None = None

    async def become(self, leading: bool) -> None:
        """Stop the current loops and start those of the new role (nothing when the role is unchanged)."""
        if leading == self.leading:
            return
        await self.stop()
        self.leading = leading
        self._tasks = [asyncio.create_task(c) for c in self._factories[leading]()]
        log.info("this manager is now %s", "the leader" if leading else "a follower")

    async def stop(self) -> None:
        tasks, self._tasks = self._tasks, []
        for t in tasks:
            t.cancel()
        for t in tasks:
            with suppress(asyncio.CancelledError, Exception):
                await t
        self.leading = None


class Presence(abc.ABC):
    """The common interface (see the module docstring)."""

    #: Whether other managers may share the database (then the leader is elected).
    shared = False

    def __init__(self, db: async_sessionmaker[AsyncSession], manager_id: str, address: str, version: str) -> None:
        self.db = db
        self.manager_id = manager_id
        self.address = address
        self.version = version
        self.is_leader = False

    @abc.abstractmethod
    async def start(self) -> None:
        """Register, taking the locks; raises :class:`ManagerRefused` if this manager may not run."""

    async def alive(self) -> set[str]:
        """The ids of the managers alive now (this one included)."""
        return {self.manager_id}

    async def leader_id(self) -> str | None:
        """The id of the manager that leads now, if any."""
        return self.manager_id if self.is_leader else None

    @abc.abstractmethod
    async def run(self, roles: Roles) -> None:
        """Keep the registration and the role up to date until cancelled."""

    async def forward_wakes(self, wake: asyncio.Event) -> None:
        """A follower's loop: pass the scheduler wakes set here on to the leader."""
        await asyncio.Event().wait()

    @abc.abstractmethod
    async def close(self) -> None:
        """Leave (the row goes, the locks are released)."""

    async def _insert_row(self, db: AsyncSession, lock_key: int) -> None:
        now = utcnow()
        db.add(
            ManagerRow(
                id=self.manager_id,
                address=self.address,
                version=self.version,
                started_at=now,
                last_seen=now,
                lock_key=lock_key,
                leader=self.is_leader,
            )
        )

    async def _delete_row(self) -> None:
        with suppress(Exception):  # shutting down: a database that is gone must not hide the real error
            async with self.db() as db:
                await db.execute(delete(ManagerRow).where(ManagerRow.id == self.manager_id))
                await db.commit()


def sqlite_lock_path(db_url: str) -> Path | None:
    """Where the single-manager lock of an SQLite database lives (``None`` for an in-memory database)."""
    database = make_url(db_url).database
    if not database or database == ":memory:":
        return None
    return Path(database).resolve().with_name(Path(database).name + ".manager-lock")


class SoloPresence(Presence):
    """The only manager of its database: always the leader."""

    def __init__(
        self, db: async_sessionmaker[AsyncSession], db_url: str, manager_id: str, address: str, version: str
    ) -> None:
        super().__init__(db, manager_id, address, version)
        self.db_url = db_url
        self._fd: int | None = None
        self._conn: Any = None  # PostgreSQL: the connection holding the exclusive cluster lock

    async def start(self) -> None:
        if self.db_url.startswith("sqlite"):
            self._lock_file()
        else:
            self._conn = await _pg_connect(self.db_url)
            got = await _retry_lock(self._conn, "pg_try_advisory_lock", CLUSTER_KEY)
            if not got:
                await self._conn.close()
                self._conn = None
                raise ManagerRefused(
                    "Another manager already uses this PostgreSQL database. Several managers need a shared Redis: "
                    "set [redis] url in manager.toml of every manager (docs/adr/0014-several-managers.md)."
                )
        self.is_leader = True
        async with self.db() as db:
            # Every other row is a manager that died before it could remove its row.
            await db.execute(delete(ManagerRow))
            await self._insert_row(db, 0)
            await db.commit()

    def _lock_file(self) -> None:
        path = sqlite_lock_path(self.db_url)
        if path is None:
            return
        fd = os.open(path, os.O_RDWR | os.O_CREAT, 0o600)
        try:
            fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError:
            os.close(fd)
            holder = ""
            with suppress(OSError):
                holder = path.read_text().strip()
            raise ManagerRefused(
                f"Another manager{f' ({holder})' if holder else ''} already uses the SQLite database "
                f"{make_url(self.db_url).database} (lock {path}). SQLite allows one manager; for several, use "
                "PostgreSQL and Redis (docs/adr/0014-several-managers.md)."
            ) from None
        os.ftruncate(fd, 0)
        os.write(fd, f"{self.manager_id} pid {os.getpid()}\n".encode())
        self._fd = fd

    async def run(self, roles: Roles) -> None:
        await roles.become(True)
        await asyncio.Event().wait()

    async def close(self) -> None:
        await self._delete_row()
        if self._conn is not None:
            with suppress(Exception):
                await self._conn.close()
            self._conn = None
        if self._fd is not None:
            os.close(self._fd)  # releases the flock
            self._fd = None


class PgPresence(Presence):
    """One of several managers on PostgreSQL (with Redis): elected leader or follower."""

    shared = True

    def __init__(
        self,
        db: async_sessionmaker[AsyncSession],
        db_url: str,
        manager_id: str,
        address: str,
        version: str,
        *,
        on_wake: Callable[[], None],
    ) -> None:
        super().__init__(db, manager_id, address, version)
        self.db_url = db_url
        self.lock_key = 0
        self._conn: Any = None
        self._on_wake = on_wake

    async def start(self) -> None:
        await self._connect(initial=True)

    async def _connect(self, *, initial: bool) -> None:
        conn = await _pg_connect(self.db_url)
        try:
            if not await _retry_lock(conn, "pg_try_advisory_lock_shared", CLUSTER_KEY):
                raise ManagerRefused(
                    "A manager without Redis uses this PostgreSQL database alone; stop it, or give every manager "
                    "the same [redis] url (docs/adr/0014-several-managers.md)."
                )
            if self.lock_key and await conn.fetchval("SELECT pg_try_advisory_lock($1, $2)", NS, self.lock_key):
                pass  # the same liveness lock again after a reconnection
            else:
                while True:
                    key = secrets.randbelow(2**31 - 16) + 16
                    if await conn.fetchval("SELECT pg_try_advisory_lock($1, $2)", NS, key):
                        self.lock_key = key
                        break
            await conn.add_listener(WAKE_CHANNEL, self._notified)
        except BaseException:
            with suppress(Exception):
                await conn.close()
            raise
        self._conn = conn
        self.is_leader = False
        await self._beat(insert=initial)

    def _notified(self, *_: Any) -> None:
        if self.is_leader:
            self._on_wake()

    async def _beat(self, *, insert: bool = False) -> None:
        """Write ``last_seen`` (and the row itself when new or purged) on the dedicated connection."""
        now = utcnow()
        await asyncio.wait_for(
            self._conn.execute(
                "INSERT INTO managers (id, address, version, started_at, last_seen, lock_key, leader) "
                "VALUES ($1, $2, $3, $4, $4, $5, $6) ON CONFLICT (id) DO UPDATE SET last_seen = $4, "
                "lock_key = $5, leader = $6",
                self.manager_id,
                self.address,
                self.version,
                now,
                self.lock_key,
                self.is_leader,
            ),
            5.0,
        )

    async def run(self, roles: Roles) -> None:
        await roles.become(False)
        while True:
            try:
                if self._conn is None:
                    await self._connect(initial=False)
                    log.warning("reconnected to PostgreSQL as manager %s", self.manager_id)
                if not self.is_leader and await self._conn.fetchval(
                    "SELECT pg_try_advisory_lock($1, $2)", NS, LEADER_KEY
                ):
                    self.is_leader = True
                    log.warning("manager %s is now the leader (scheduler and singleton loops)", self.manager_id)
                await self._beat()
                await roles.become(self.is_leader)
            except asyncio.CancelledError:
                raise
            except ManagerRefused as e:
                log.error("%s", e)
                await self._lost(roles)
            except Exception as e:  # noqa: BLE001 - any failure of the connection: its locks are gone
                log.warning("lost the PostgreSQL connection holding this manager's locks (%s); reconnecting", e)
                await self._lost(roles)
            await asyncio.sleep(TICK)

    async def _lost(self, roles: Roles) -> None:
        """The locks are gone with the connection: stop leading at once, reconnect at the next tick."""
        self.is_leader = False
        await roles.become(False)
        conn, self._conn = self._conn, None
        if conn is not None:
            with suppress(Exception):
                conn.terminate()

    async def alive(self) -> set[str]:
        async with self.db() as db:
            rows = await db.execute(text(_ALIVE_SQL), {"ns": NS})
            return {r[0] for r in rows}

    async def leader_id(self) -> str | None:
        async with self.db() as db:
            return (await db.execute(text(_LEADER_SQL), {"ns": NS, "leader": LEADER_KEY})).scalar()

    async def forward_wakes(self, wake: asyncio.Event) -> None:
        while True:
            await wake.wait()
            wake.clear()
            try:
                async with self.db() as db:
                    await db.execute(text("SELECT pg_notify(:ch, '')"), {"ch": WAKE_CHANNEL})
                    await db.commit()  # a notification is sent when its transaction commits
            except Exception as e:  # noqa: BLE001 - the leader's safety pass still runs
                log.warning("could not wake the leader's scheduler: %s", e)
            await asyncio.sleep(0.02)  # wakes of a burst travel together

    async def close(self) -> None:
        conn, self._conn = self._conn, None
        self.is_leader = False
        await self._delete_row()
        if conn is not None:
            with suppress(Exception):
                await asyncio.wait_for(conn.close(), 5.0)


# A manager is alive while its liveness lock is held in this database.
_ALIVE_SQL = """
SELECT m.id FROM managers m JOIN pg_locks l
  ON l.locktype = 'advisory' AND l.granted AND l.objsubid = 2 AND l.classid = CAST(:ns AS oid)
 AND l.objid = CAST(m.lock_key AS oid) AND l.database = (SELECT oid FROM pg_database WHERE datname = current_database())
"""
# The leader: the manager whose backend holds both its liveness lock and the leader lock.
_LEADER_SQL = """
SELECT m.id FROM pg_locks a
  JOIN pg_locks b ON b.pid = a.pid AND b.locktype = 'advisory' AND b.granted AND b.objsubid = 2
   AND b.classid = CAST(:ns AS oid) AND b.database = a.database
  JOIN managers m ON CAST(m.lock_key AS oid) = b.objid
 WHERE a.locktype = 'advisory' AND a.granted AND a.objsubid = 2 AND a.classid = CAST(:ns AS oid)
   AND a.objid = CAST(:leader AS oid) AND a.database = (SELECT oid FROM pg_database WHERE datname = current_database())
 LIMIT 1
"""


async def _pg_connect(db_url: str) -> Any:
    import asyncpg

    dsn = make_url(db_url).set(drivername="postgresql").render_as_string(hide_password=False)
    return await asyncpg.connect(dsn, timeout=10)


async def _retry_lock(conn: Any, fn: str, key: int) -> bool:
    """Try ``fn(NS, key)`` for up to :data:`LOCK_WAIT` seconds."""
    loop = asyncio.get_running_loop()
    deadline = loop.time() + LOCK_WAIT
    while True:
        if await conn.fetchval(f"SELECT {fn}($1, $2)", NS, key):
            return True
        if loop.time() >= deadline:
            return False
        await asyncio.sleep(0.5)


def make_presence(
    db: async_sessionmaker[AsyncSession],
    db_url: str,
    redis_url: str | None,
    *,
    manager_id: str,
    address: str,
    version: str,
    on_wake: Callable[[], None],
) -> Presence:
    """Several managers on PostgreSQL with Redis, else the only one (``on_wake``: wakes the local scheduler)."""
    if db_url.startswith("postgresql") and redis_url:
        return PgPresence(db, db_url, manager_id, address, version, on_wake=on_wake)
    return SoloPresence(db, db_url, manager_id, address, version)


async def watch_orphans(presence: Presence, recover: Callable[[set[str]], Awaitable[Any]], every: float = 30.0) -> None:
    """The leader's loop: recover the sessions of vanished managers at once, when a manager vanishes and every
    ``every`` seconds; and delete rows of managers long dead."""
    known: set[str] = set()
    loop = asyncio.get_running_loop()
    next_full = 0.0
    while True:
        try:
            alive = await presence.alive()
            if known - alive or loop.time() >= next_full:
                await recover(alive)
                next_full = loop.time() + every
                await _purge(presence, alive)
            known = alive
        except asyncio.CancelledError:
            raise
        except Exception:  # noqa: BLE001 - the next tick tries again
            log.exception("recovering the sessions of vanished managers failed")
        await asyncio.sleep(TICK)


async def _purge(presence: Presence, alive: set[str]) -> None:
    from datetime import timedelta

    cutoff = utcnow() - timedelta(seconds=PURGE_AFTER)
    async with presence.db() as db:
        await db.execute(delete(ManagerRow).where(ManagerRow.id.notin_(alive), ManagerRow.last_seen < cutoff))
        await db.commit()
