"""Throw-away PostgreSQL databases and Redis databases for tests and benchmarks.

Where the servers are comes from ``scripts/test-services.env`` (``BACKENDAI_TEST_PG``, a libpq URL such
as ``postgresql://postgres@127.0.0.1:5433/postgres``, and ``BACKENDAI_TEST_REDIS``, such as
``redis://127.0.0.1:6380/0``); environment variables of the same names override the file.
``scripts/setup.sh --test`` starts private servers there.

* PostgreSQL: :func:`create_pg_database` makes a fresh, uniquely named database and returns its
  SQLAlchemy URL (``postgresql+asyncpg://...``); :func:`drop_pg_database` removes it.
* Redis: :func:`claim_redis_db` claims a numbered database of its own (a ``SET NX`` claim in db 0, so
  parallel test runs never share rate-limit counters), empties it and returns its URL;
  :func:`release_redis_db` empties it and gives it back.

Every function has a synchronous spelling for fixtures and scripts (they must not be called from a
running event loop) and an ``async`` one with the ``_async`` suffix.
"""

from __future__ import annotations

import asyncio
import contextlib
import os
import secrets
import tempfile
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import asyncpg
import redis.asyncio as aioredis
from sqlalchemy.engine import make_url

REPO = Path(__file__).resolve().parents[4]
ENV_FILE = REPO / "scripts" / "test-services.env"
SETUP_HINT = "run `scripts/setup.sh --test` (or `make test`) to start the test PostgreSQL and Redis"
DB_PREFIX = "bai_test_"
CLAIM_PREFIX = "backendai-test:claim:"
CLAIM_TTL = 6 * 3600  # seconds; a claim of a crashed run expires by itself


class ServiceUnavailable(RuntimeError):
    """The test PostgreSQL or Redis does not answer."""


def _settings() -> dict[str, str]:
    values: dict[str, str] = {}
    if ENV_FILE.exists():
        for line in ENV_FILE.read_text().splitlines():
            line = line.strip()
            if line and not line.startswith("#") and "=" in line:
                key, _, value = line.partition("=")
                values[key.strip()] = value.strip()
    for key in ("BACKENDAI_TEST_PG", "BACKENDAI_TEST_REDIS"):
        if os.environ.get(key):
            values[key] = os.environ[key]
    return values


def pg_admin_url() -> str:
    """The libpq URL of the maintenance database of the test PostgreSQL server."""
    url = _settings().get("BACKENDAI_TEST_PG")
    if not url:
        raise ServiceUnavailable(f"BACKENDAI_TEST_PG is not set and {ENV_FILE} has no value for it")
    return url


def redis_base_url() -> str:
    """The URL of the test Redis server (database 0 holds the claims of the others)."""
    url = _settings().get("BACKENDAI_TEST_REDIS")
    if not url:
        raise ServiceUnavailable(f"BACKENDAI_TEST_REDIS is not set and {ENV_FILE} has no value for it")
    return url


# ---- PostgreSQL -------------------------------------------------------------------------------------


async def _pg_connect(database: str | None = None) -> asyncpg.Connection:
    url = make_url(pg_admin_url())
    if database is not None:
        url = url.set(database=database)
    try:
        return await asyncpg.connect(url.render_as_string(hide_password=False), timeout=5)
    except (OSError, asyncpg.PostgresError) as e:
        raise ServiceUnavailable(f"PostgreSQL at {pg_admin_url()} does not answer ({e}); {SETUP_HINT}") from None


def _sqlalchemy_url(database: str) -> str:
    url = make_url(pg_admin_url()).set(drivername="postgresql+asyncpg", database=database)
    return url.render_as_string(hide_password=False)


def _pid_alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        return True
    return True


async def check_pg_async() -> None:
    """Raise :class:`ServiceUnavailable` (naming the setup command) unless PostgreSQL answers."""
    conn = await _pg_connect()
    await conn.close()


async def create_pg_database_async() -> str:
    """Create an empty database with a unique name and return its ``postgresql+asyncpg://`` URL.

    Databases that earlier runs on this machine left behind (their process is gone) are dropped first,
    unless something is still connected to them.
    """
    conn = await _pg_connect()
    try:
        if make_url(pg_admin_url()).host in ("127.0.0.1", "localhost", "::1"):
            for (name,) in await conn.fetch("SELECT datname FROM pg_database WHERE datname LIKE $1", DB_PREFIX + "%"):
                pid = name[len(DB_PREFIX) :].split("_", 1)[0]
                if pid.isdigit() and not _pid_alive(int(pid)):
                    with contextlib.suppress(asyncpg.PostgresError):
                        await conn.execute(f'DROP DATABASE IF EXISTS "{name}"')
        name = f"{DB_PREFIX}{os.getpid()}_{secrets.token_hex(4)}"
        await conn.execute(f"CREATE DATABASE \"{name}\" TEMPLATE template0 ENCODING 'UTF8'")
    finally:
        await conn.close()
    return _sqlalchemy_url(name)


async def drop_pg_database_async(url: str) -> None:
    """Drop the database of ``url`` (made by :func:`create_pg_database`), closing its connections."""
    name = make_url(url).database
    if not name or not name.startswith(DB_PREFIX):
        raise ValueError(f"refusing to drop {name!r}: not a database made by create_pg_database")
    conn = await _pg_connect()
    try:
        await conn.execute(f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)')
    finally:
        await conn.close()


def check_pg() -> None:
    asyncio.run(check_pg_async())


def pg_available() -> bool:
    try:
        check_pg()
    except ServiceUnavailable:
        return False
    return True


def create_pg_database() -> str:
    return asyncio.run(create_pg_database_async())


def drop_pg_database(url: str) -> None:
    asyncio.run(drop_pg_database_async(url))


# ---- Redis --------------------------------------------------------------------------------------------


def _redis(db: int = 0) -> Any:
    return aioredis.Redis.from_url(_redis_url(db), socket_connect_timeout=5, socket_timeout=10)


def _redis_url(db: int) -> str:
    base = redis_base_url().split("?", 1)[0]
    scheme, _, rest = base.partition("://")
    hostpart = rest.split("/", 1)[0]
    return f"{scheme}://{hostpart}/{db}"


async def check_redis_async() -> None:
    """Raise :class:`ServiceUnavailable` (naming the setup command) unless Redis answers PING."""
    r = _redis(0)
    try:
        await r.ping()
    except (OSError, aioredis.RedisError) as e:
        raise ServiceUnavailable(f"Redis at {redis_base_url()} does not answer ({e}); {SETUP_HINT}") from None
    finally:
        await r.aclose()


async def claim_redis_db_async() -> str:
    """Claim an unused numbered Redis database, empty it and return its URL."""
    await check_redis_async()
    r = _redis(0)
    try:
        count = int((await r.config_get("databases")).get("databases", 16))
        owner = f"{os.uname().nodename}:{os.getpid()}"
        numbers = list(range(1, count))
        secrets.SystemRandom().shuffle(numbers)
        for n in numbers:
            if await r.set(f"{CLAIM_PREFIX}{n}", owner, nx=True, ex=CLAIM_TTL):
                break
        else:
            raise ServiceUnavailable(f"all {count - 1} Redis databases at {redis_base_url()} are claimed")
    finally:
        await r.aclose()
    url = _redis_url(n)
    await flush_redis_db_async(url)
    return url


async def flush_redis_db_async(url: str) -> None:
    """Empty the Redis database of ``url`` (refuses database 0, which holds the claims)."""
    n = _db_number(url)
    r = _redis(n)
    try:
        await r.flushdb()
    finally:
        await r.aclose()


async def release_redis_db_async(url: str) -> None:
    """Empty a database claimed with :func:`claim_redis_db` and drop the claim."""
    await flush_redis_db_async(url)
    r = _redis(0)
    try:
        await r.delete(f"{CLAIM_PREFIX}{_db_number(url)}")
    finally:
        await r.aclose()


def _db_number(url: str) -> int:
    tail = url.split("?", 1)[0].rsplit("/", 1)[-1]
    n = int(tail) if tail.isdigit() else 0
    if n == 0:
        raise ValueError("Redis database 0 holds the claims of the test databases; claim one instead")
    return n


def check_redis() -> None:
    asyncio.run(check_redis_async())


def redis_available() -> bool:
    try:
        check_redis()
    except ServiceUnavailable:
        return False
    return True


def claim_redis_db() -> str:
    return asyncio.run(claim_redis_db_async())


def flush_redis_db(url: str) -> None:
    asyncio.run(flush_redis_db_async(url))


def release_redis_db(url: str) -> None:
    asyncio.run(release_redis_db_async(url))


# ---- both kinds ---------------------------------------------------------------------------------------

DB_KINDS = ("sqlite", "postgresql")


@contextlib.contextmanager
def fresh_database(kind: str, directory: Path | None = None) -> Iterator[str]:
    """An empty database of ``kind`` (``"sqlite"`` or ``"postgresql"``) as an SQLAlchemy URL.

    SQLite lives in ``directory`` (a temporary one when not given); PostgreSQL is created on the test
    server and dropped on exit.
    """
    if kind == "sqlite":
        with contextlib.ExitStack() as stack:
            where = directory or Path(stack.enter_context(tempfile.TemporaryDirectory(prefix="bai-db-")))
            yield f"sqlite+aiosqlite:///{where / f'test-{secrets.token_hex(4)}.db'}"
        return
    if kind != "postgresql":
        raise ValueError(f"unknown database kind {kind!r}; expected one of {DB_KINDS}")
    url = create_pg_database()
    try:
        yield url
    finally:
        drop_pg_database(url)


@contextlib.contextmanager
def fresh_redis() -> Iterator[str]:
    """A claimed, empty Redis database URL, released on exit."""
    url = claim_redis_db()
    try:
        yield url
    finally:
        release_redis_db(url)
