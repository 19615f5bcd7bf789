"""Bursts of simultaneous creations, on SQLite and on PostgreSQL, against a manager with two dummy agents.

Creations that arrive together are inserted in shared transactions and the starts of sessions placed
together share their status writes; these tests check that the sharing never lets a limit slip or a
state go missing: the policy's session count holds however many creations race, one name gives one
session, and every session of a burst goes PENDING → SCHEDULED → PREPARING → RUNNING with its kernel
recorded on the agent that holds its slots.
"""

from __future__ import annotations

import asyncio
import json
import uuid
from collections.abc import Iterator
from datetime import datetime
from pathlib import Path
from typing import Any

import httpx
import pytest

from ai.backend.common.auth import sign_request_headers
from ai.backend.manager.fixtures import USER
from ai.backend.testutils.cluster import Cluster
from ai.backend.testutils.fleet import start_fleet
from ai.backend.testutils.processes import stop_process, wait_until

AGENT_CPU = 64


@pytest.fixture(scope="module")
def fleet(manager: Cluster, tmp_path_factory: pytest.TempPathFactory) -> Iterator[Cluster]:
    """The module's manager with two dummy agents of ``AGENT_CPU`` cores in ``default``."""
    state: Path = tmp_path_factory.mktemp("burst-fleet")
    proc = start_fleet(
        manager,
        state,
        2,
        heartbeat=1.0,
        id_prefix=f"i-burst-{uuid.uuid4().hex[:6]}-",
        tables=f'[resource]\ncpu = {AGENT_CPU}\nmem = "64g"\n\n[dummy]\ncreate-delay = [0.0, 0.05]\n',
    )
    try:
        wait_until(
            "two dummy agents",
            lambda: manager.gql('{ agents(status: "ALIVE") { id } }', legacy=True)["agents"],
            lambda a: len(a) == 2,
        )
        yield manager
    finally:
        stop_process(proc, 20)


async def _burst(m: Cluster, bodies: list[dict[str, Any]]) -> list[httpx.Response]:
    """POST /session with every body at the same moment, each over its own connection."""
    host = m.endpoint.split("//", 1)[1]
    limits = httpx.Limits(max_connections=len(bodies), max_keepalive_connections=0)
    async with httpx.AsyncClient(base_url=m.endpoint, limits=limits, timeout=120) as client:
        start = asyncio.Event()

        async def one(body: dict[str, Any]) -> httpx.Response:
            headers = sign_request_headers(
                method="POST",
                path_with_query="/session",
                host=host,
                content_type="application/json",
                version="v6.20220615",
                access_key=USER["access_key"],
                secret_key=USER["secret_key"],
            )
            await start.wait()
            return await client.post("/session", headers=headers, content=json.dumps(body))

        tasks = [asyncio.ensure_future(one(b)) for b in bodies]
        await asyncio.sleep(0)
        start.set()
        return list(await asyncio.gather(*tasks))


def _sessions(m: Cluster, prefix: str) -> list[dict[str, Any]]:
    """The active sessions whose name starts with ``prefix`` (at most 100 are active at any time here)."""
    rows = m.gql(
        '{ compute_session_list(limit: 100, status: "PENDING,SCHEDULED,PREPARING,PULLING,RUNNING") '
        "{ items { session_id name status status_info "
        "occupied_slots containers { agent occupied_slots status } } } }",
        legacy=True,
    )
    return [s for s in rows["compute_session_list"]["items"] if s["name"].startswith(prefix)]


def _destroy_all(m: Cluster, prefix: str) -> None:
    for s in _sessions(m, prefix):
        m.request("DELETE", f"/session/{s['session_id']}")


def _set_policy(m: Cluster, **props: Any) -> None:
    fields = ", ".join(f"{k}: {json.dumps(v)}" for k, v in props.items())
    m.gql(
        f'mutation {{ modify_keypair_resource_policy(name: "default", props: {{{fields}}}) {{ ok msg }} }}', legacy=True
    )


def test_racing_creations_never_pass_the_session_limit(fleet: Cluster) -> None:
    _set_policy(fleet, max_concurrent_sessions=3)
    prefix = f"race{uuid.uuid4().hex[:6]}-"
    try:
        responses = asyncio.run(
            _burst(
                fleet,
                [
                    {
                        "image": "python",
                        "name": f"{prefix}{i}",
                        "enqueueOnly": True,
                        "resources": {"cpu": 1, "mem": "256m"},
                    }
                    for i in range(24)
                ],
            )
        )
        codes = sorted(r.status_code for r in responses)
        assert codes.count(201) == 3 and codes.count(429) == 21, [(r.status_code, r.text[:200]) for r in responses]
        refused = next(r for r in responses if r.status_code == 429)
        assert refused.headers["content-type"].startswith("application/problem+json")
        assert "active sessions" in refused.json()["detail"]
        assert len(_sessions(fleet, prefix)) == 3
    finally:
        _destroy_all(fleet, prefix)
        _set_policy(fleet, max_concurrent_sessions=1000)


def test_racing_creations_of_one_name_make_one_session(fleet: Cluster) -> None:
    name = f"same{uuid.uuid4().hex[:6]}"
    try:
        responses = asyncio.run(
            _burst(
                fleet,
                [{"image": "python", "name": name, "enqueueOnly": True, "resources": {"cpu": 1, "mem": "256m"}}] * 12,
            )
        )
        assert all(r.status_code in (200, 201) for r in responses), [r.text[:200] for r in responses]
        assert [r.status_code for r in responses].count(201) == 1
        assert len({r.json()["sessionId"] for r in responses}) == 1
        assert sum(r.json()["created"] for r in responses) == 1
        assert len(_sessions(fleet, name)) == 1
    finally:
        _destroy_all(fleet, name)


def test_a_burst_runs_every_session_through_every_state(fleet: Cluster) -> None:
    _set_policy(fleet, max_concurrent_sessions=1000)
    prefix = f"burst{uuid.uuid4().hex[:6]}-"
    n = 60
    try:
        responses = asyncio.run(
            _burst(
                fleet,
                [
                    {
                        "image": "python",
                        "name": f"{prefix}{i}",
                        "enqueueOnly": True,
                        "resources": {"cpu": 1, "mem": "256m"},
                    }
                    for i in range(n)
                ],
            )
        )
        assert all(r.status_code == 201 for r in responses), [r.text[:200] for r in responses if r.status_code != 201]
        rows = wait_until(
            "the burst RUNNING",
            lambda: _sessions(fleet, prefix),
            lambda rows: len(rows) == n and all(s["status"] == "RUNNING" for s in rows),
            timeout=60,
        )
        per_agent: dict[str, float] = {}
        for s in rows:
            info = fleet.request("GET", f"/session/{s['name']}")
            assert info.status_code == 200, info.text
            history = info.json()["statusHistory"]
            stamps = [datetime.fromisoformat(history[k]) for k in ("PENDING", "SCHEDULED", "PREPARING", "RUNNING")]
            assert stamps == sorted(stamps), history
            [kernel] = s["containers"]
            assert kernel["status"] == "RUNNING" and kernel["agent"], s
            per_agent[kernel["agent"]] = per_agent.get(kernel["agent"], 0) + 1
        assert sum(per_agent.values()) == n
        agents = fleet.gql('{ agents(status: "ALIVE") { id occupied_slots } }', legacy=True)["agents"]
        for a in agents:
            occupied = json.loads(a["occupied_slots"]) if isinstance(a["occupied_slots"], str) else a["occupied_slots"]
            # Every RUNNING session of this burst holds one core on its agent (earlier tests cleaned up).
            assert float(occupied.get("cpu", 0)) == per_agent.get(a["id"], 0), (a, per_agent)
    finally:
        _destroy_all(fleet, prefix)
