"""Integration-test fixtures (see ``ai.backend.testutils.cluster`` and ``ai.backend.testutils.databases``).

* ``cluster``: one real cluster (manager + Docker agent, SQLite) per test session.
* ``manager``: a manager without agents per test module, once on SQLite and once on PostgreSQL (test ids
  ``[sqlite]`` / ``[postgresql]``), each on a fresh database.
* ``db_url``: an empty database per test, on SQLite and on PostgreSQL, as an SQLAlchemy URL.

The PostgreSQL cases fail (they do not skip) when the test PostgreSQL does not answer: ``make test`` and
``scripts/setup.sh --test`` start it.
"""

from __future__ import annotations

from collections.abc import Iterator
from contextlib import ExitStack
from pathlib import Path

import pytest

from ai.backend.manager.fixtures import ADMIN, USER
from ai.backend.testutils.cluster import REPO, Cluster, docker_available, launch_cluster, launch_manager
from ai.backend.testutils.databases import (
    DB_KINDS,
    ServiceUnavailable,
    check_pg,
    check_redis,
    fresh_database,
    fresh_redis,
)


@pytest.fixture(scope="session")
def cluster(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Cluster]:
    if not docker_available():
        pytest.fail("Docker engine or the python kernel image is missing: run scripts/setup.sh first")
    c = launch_cluster(tmp_path_factory.mktemp("cluster"), appproxy=True)
    try:
        yield c
    finally:
        c.shutdown()


def _require(kind: str, *, redis: bool = False) -> None:
    """Fail (not skip) the PostgreSQL case when the test server (or the test Redis) is not running."""
    problem = None
    try:
        if kind == "postgresql":
            check_pg()
        if redis:
            check_redis()
    except ServiceUnavailable as e:
        problem = str(e)
    if problem:
        pytest.fail(problem, pytrace=False)


@pytest.fixture(scope="module", params=DB_KINDS)
def manager(request: pytest.FixtureRequest, tmp_path_factory: pytest.TempPathFactory) -> Iterator[Cluster]:
    """A manager-only server (the default fixture users, no agents) on a fresh database.

    The pairings are those of real deployments: on SQLite (the all-in-one default) rate-limit counters
    stay in the manager's memory; on PostgreSQL they are in Redis (a Redis database of its own), so both
    limiter stores are exercised.
    """
    kind: str = request.param
    _require(kind, redis=kind == "postgresql")
    with ExitStack() as stack:
        state = tmp_path_factory.mktemp(f"manager-{kind}")
        db_url = stack.enter_context(fresh_database(kind, state))
        redis_url = stack.enter_context(fresh_redis()) if kind == "postgresql" else None
        m = launch_manager(state, db_url=db_url, redis_url=redis_url)
        stack.callback(m.shutdown)
        yield m


@pytest.fixture(params=DB_KINDS)
def db_url(request: pytest.FixtureRequest, tmp_path: Path) -> Iterator[str]:
    """An empty database (no schema) as an SQLAlchemy URL; dropped afterwards."""
    kind: str = request.param
    _require(kind)
    with fresh_database(kind, tmp_path) as url:
        yield url


__all__ = ["ADMIN", "REPO", "USER", "Cluster"]
