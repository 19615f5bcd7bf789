"""Two managers on one PostgreSQL database and one Redis share each keypair's rate-limit budget."""

from __future__ import annotations

from collections.abc import Iterator
from contextlib import ExitStack
from pathlib import Path

import pytest

from ai.backend.manager.fixtures import ADMIN
from ai.backend.testutils.cluster import Cluster, launch_manager
from ai.backend.testutils.databases import ServiceUnavailable, check_pg, check_redis, fresh_database, fresh_redis


@pytest.fixture(scope="module")
def twin_managers(tmp_path_factory: pytest.TempPathFactory) -> Iterator[tuple[Cluster, Cluster]]:
    try:
        check_pg()
        check_redis()
    except ServiceUnavailable as e:
        pytest.fail(str(e), pytrace=False)
    with ExitStack() as stack:
        base = tmp_path_factory.mktemp("twins")
        db_url = stack.enter_context(fresh_database("postgresql", base))
        redis_url = stack.enter_context(fresh_redis())
        first = launch_manager(Path(base / "a"), db_url=db_url, redis_url=redis_url)
        stack.callback(first.shutdown)
        second = launch_manager(Path(base / "b"), db_url=db_url, redis_url=redis_url)
        stack.callback(second.shutdown)
        yield first, second


def test_budget_is_shared_between_managers(twin_managers: tuple[Cluster, Cluster]) -> None:
    a, b = twin_managers
    q = """mutation { create_user(email: "twin@example.org", props: {password: "long-enough"}) { ok } }"""
    assert a.request("POST", "/admin/graphql", {"query": q}, who=ADMIN).status_code == 200
    kp = a.request(
        "POST",
        "/admin/graphql",
        {"query": '{ keypairs(email: "twin@example.org") { access_key secret_key } }'},
        who=ADMIN,
    ).json()["keypairs"][0]
    set_limit = f'mutation {{ modify_keypair(access_key: "{kp["access_key"]}", props: {{rate_limit: 4}}) {{ ok }} }}'
    assert b.request("POST", "/admin/graphql", {"query": set_limit}, who=ADMIN).status_code == 200
    seen = [
        a.request("GET", "/auth/test", who=kp),
        b.request("GET", "/auth/test", who=kp),
        a.request("GET", "/auth/test", who=kp),
        b.request("GET", "/auth/test", who=kp),
    ]
    assert [r.status_code for r in seen] == [200] * 4
    assert [int(r.headers["X-RateLimit-Remaining"]) for r in seen] == [3, 2, 1, 0]
    over = a.request("GET", "/auth/test", who=kp)
    assert over.status_code == 429 and over.headers["content-type"].startswith("application/problem+json")
    assert b.request("GET", "/auth/test", who=kp).status_code == 429
