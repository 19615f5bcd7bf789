"""The execute hot path's caches (keypair rows, session lookups) never answer from a stale row.

Two managers share PostgreSQL and Redis: a keypair change made through one of them, or through the
``backend.ai mgr`` CLI, applies to the very next request on the other, although both had the keypair's
row cached. On the real cluster: a destroyed session stops taking executes at once, and a new session of
the same name is the one that runs the next execute.
"""

from __future__ import annotations

import subprocess
import sys
from collections.abc import Iterator
from contextlib import ExitStack
from pathlib import Path
from typing import Any

import pytest

from ai.backend.testutils.cluster import Cluster, launch_manager
from ai.backend.testutils.databases import ServiceUnavailable, check_pg, check_redis, fresh_database, fresh_redis

MODIFY = "mutation($a: String!, $p: ModifyKeyPairInput!) { modify_keypair(access_key: $a, props: $p) { ok } }"


@pytest.fixture(scope="module")
def twins(tmp_path_factory: pytest.TempPathFactory) -> Iterator[tuple[Cluster, Cluster]]:
    try:
        check_pg()
        check_redis()
    except ServiceUnavailable as e:
        pytest.fail(str(e), pytrace=False)
    with ExitStack() as stack:
        base = tmp_path_factory.mktemp("cache-twins")
        db_url = stack.enter_context(fresh_database("postgresql", base))
        redis_url = stack.enter_context(fresh_redis())
        first = launch_manager(Path(base / "a"), db_url=db_url, redis_url=redis_url)
        stack.callback(first.shutdown)
        second = launch_manager(Path(base / "b"), db_url=db_url, redis_url=redis_url)
        stack.callback(second.shutdown)
        yield first, second


def _new_keypair(m: Cluster, email: str) -> dict[str, str]:
    m.gql(f'mutation {{ create_user(email: "{email}", props: {{password: "long-enough"}}) {{ ok }} }}', legacy=True)
    kp: dict[str, str] = m.gql(f'{{ keypairs(email: "{email}") {{ access_key secret_key }} }}', legacy=True)[
        "keypairs"
    ][0]
    return kp


def test_keypair_changes_apply_at_once_on_every_manager(twins: tuple[Cluster, Cluster]) -> None:
    a, b = twins
    kp = _new_keypair(a, "cached@example.org")
    for m in (a, b, a, b):  # both managers have the row cached now
        assert m.request("GET", "/auth/test", who=kp).status_code == 200
    a.gql(MODIFY, {"a": kp["access_key"], "p": {"is_active": False}}, legacy=True)
    assert b.request("GET", "/auth/test", who=kp).status_code == 401
    assert a.request("GET", "/auth/test", who=kp).status_code == 401
    b.gql(MODIFY, {"a": kp["access_key"], "p": {"is_active": True}}, legacy=True)
    assert a.request("GET", "/auth/test", who=kp).status_code == 200
    a.gql(MODIFY, {"a": kp["access_key"], "p": {"rate_limit": 1234}}, legacy=True)
    assert b.request("GET", "/auth/test", who=kp).headers["X-RateLimit-Limit"] == "1234"
    # Deleting the user deactivates its keypairs in one bulk UPDATE: seen at once too.
    b.gql('mutation { delete_user(email: "cached@example.org") { ok } }', legacy=True)
    assert a.request("GET", "/auth/test", who=kp).status_code == 401


def test_mgr_cli_changes_reach_running_managers(twins: tuple[Cluster, Cluster]) -> None:
    a, b = twins
    kp = _new_keypair(a, "cli-cached@example.org")
    for m in (a, b):
        assert m.request("GET", "/auth/test", who=kp).status_code == 200
    out = subprocess.run(
        [
            sys.executable,
            "-m",
            "ai.backend.manager.cli",
            "-f",
            str(b.state / "manager.toml"),
            "keypair",
            "set-active",
            kp["access_key"],
            "false",
        ],
        capture_output=True,
        text=True,
        timeout=120,
    )
    assert out.returncode == 0, out.stderr
    assert a.request("GET", "/auth/test", who=kp).status_code == 401
    assert b.request("GET", "/auth/test", who=kp).status_code == 401


@pytest.mark.docker
def test_destroyed_session_stops_taking_executes_at_once(cluster: Cluster) -> None:
    def execute(code: str) -> Any:
        return cluster.request("POST", "/session/cache-sess", {"mode": "query", "code": code})

    def create() -> None:
        r = cluster.request("POST", "/session", {"image": "python", "name": "cache-sess"})
        assert r.status_code == 201 and r.json()["status"] == "RUNNING", r.text

    create()
    for _ in range(3):  # the lookup is cached from here on
        assert execute("x = 41; print(x + 1)").json()["result"]["console"] == [["stdout", "42\n"]]
    assert cluster.request("DELETE", "/session/cache-sess").status_code == 200
    r = execute("print(x)")
    assert r.status_code == 409 and r.headers["content-type"].startswith("application/problem+json"), r.text
    create()  # the same name again: the new session answers, with fresh globals
    try:
        assert execute("print('x' in globals())").json()["result"]["console"] == [["stdout", "False\n"]]
    finally:
        cluster.request("DELETE", "/session/cache-sess")
