"""Dummy agents (``backend = "dummy"``): a real manager with three simulated agents in one fleet process.

They register with their configured capacity and images, sessions are placed and RUNNING without Docker
(the creation phases show the configured create-delay), destroyed sessions free capacity, and the
scheduler never overcommits: sessions beyond the capacity wait PENDING with a reason and start once
others end.
"""

from __future__ import annotations

import json
import subprocess
import time
import uuid
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from ai.backend.testutils.cluster import Cluster, launch_manager
from ai.backend.testutils.fleet import start_fleet
from ai.backend.testutils.processes import stop_process
from ai.backend.testutils.processes import wait_until as _wait

CREATE_DELAY = 0.4
SMALL = {"image": "python", "resources": {"cpu": 1, "mem": "256m"}}


def _agents(c: Cluster) -> dict[str, dict[str, Any]]:
    rows = c.gql('{ agents(status: "ALIVE") { id scaling_group addr available_slots occupied_slots } }', legacy=True)[
        "agents"
    ]
    return {a["id"]: a for a in rows}


def _info(c: Cluster, name: str) -> dict[str, Any]:
    r = c.request("GET", f"/session/{name}")
    assert r.status_code == 200, r.text
    body: dict[str, Any] = r.json()
    return body


@pytest.fixture(scope="module")
def fleet(tmp_path_factory: pytest.TempPathFactory) -> Iterator[tuple[Cluster, str]]:
    """A manager on SQLite and three dummy agents: two (2 cores each) in ``default``, one in ``dummy-b``."""
    state: Path = tmp_path_factory.mktemp("dummy-fleet")
    m = launch_manager(state)
    prefix = f"i-dummy-{uuid.uuid4().hex[:6]}-"
    proc: subprocess.Popen[bytes] | None = None
    try:
        m.gql(
            'mutation { create_scaling_group(name: "dummy-b", props: {driver: "static", scheduler: "fifo", '
            "is_active: true}) { ok msg } }",
            legacy=True,
        )
        m.gql(
            'mutation { associate_scaling_group_with_domain(scaling_group: "dummy-b", domain: "default") { ok msg } }',
            legacy=True,
        )
        proc = start_fleet(
            m,
            state,
            3,
            heartbeat=1.0,
            id_prefix=prefix,
            scaling_groups="default,dummy-b,default",
            tables=f'[resource]\ncpu = 2\nmem = "2g"\n\n[dummy]\ncreate-delay = {CREATE_DELAY}\n'
            'destroy-delay = [0.0, 0.05]\nexecute = "echo"\n',
        )
        _wait("three dummy agents", lambda: _agents(m), lambda a: len(a) == 3)
        yield m, prefix
    finally:
        if proc is not None:
            stop_process(proc, 10)
        m.shutdown()


def test_agents_register_capacity_groups_and_images(fleet: tuple[Cluster, str]) -> None:
    m, prefix = fleet
    agents = _agents(m)
    assert {a: agents[a]["scaling_group"] for a in agents} == {
        f"{prefix}1": "default",
        f"{prefix}2": "dummy-b",
        f"{prefix}3": "default",
    }
    for a in agents.values():
        slots = json.loads(a["available_slots"])
        assert float(slots["cpu"]) == 2 and int(slots["mem"]) == 2 * 1024**3
        assert a["addr"].endswith(f"/a/{a['id']}")
    images = m.gql("{ images { name tag } }", legacy=True)["images"]
    assert any(i["name"].endswith("python") and i["tag"] == "3.11-debian12" for i in images), images


def test_session_runs_without_docker_and_honours_create_delay(fleet: tuple[Cluster, str]) -> None:
    m, prefix = fleet
    name = f"dummy-{uuid.uuid4().hex[:6]}"
    r = m.request("POST", "/session", {**SMALL, "name": name, "config": {"scalingGroup": "dummy-b"}})
    assert r.status_code == 201 and r.json()["status"] == "RUNNING", r.text
    info = _info(m, name)
    assert info["agent"] == f"{prefix}2"
    assert info["creationPhases"]["container_start"] >= CREATE_DELAY * 0.9, info["creationPhases"]
    assert info["creationPhases"]["total"] >= CREATE_DELAY * 0.9
    r = m.request("POST", f"/session/{name}", {"mode": "query", "code": "print(42)", "run_id": "r1"})
    assert r.status_code == 200, r.text
    result = r.json()["result"]
    assert result["status"] == "finished" and result["console"] == [["stdout", "print(42)"]], result
    assert json.loads(_agents(m)[f"{prefix}2"]["occupied_slots"])["cpu"] in ("1", "1.0", 1)
    r = m.request("DELETE", f"/session/{name}")
    assert r.status_code in (200, 204), r.text
    _wait(
        "capacity freed",
        lambda: json.loads(_agents(m)[f"{prefix}2"]["occupied_slots"]),
        lambda occ: float(occ.get("cpu", 0)) == 0,
    )


def test_scheduler_never_overcommits(fleet: tuple[Cluster, str]) -> None:
    m, prefix = fleet
    tag = uuid.uuid4().hex[:6]
    names = [f"oc-{tag}-{i}" for i in range(6)]  # the default group holds 2 agents x 2 cores = 4 sessions
    for n in names:
        r = m.request("POST", "/session", {**SMALL, "name": n, "enqueueOnly": True})
        assert r.status_code == 201, r.text
    statuses = _wait(
        "four running",
        lambda: {n: _info(m, n)["status"] for n in names},
        lambda s: list(s.values()).count("RUNNING") == 4,
        timeout=30,
    )
    time.sleep(1.5)  # a few more passes: nothing else may start
    infos = {n: _info(m, n) for n in names}
    waiting = [n for n, i in infos.items() if i["status"] == "PENDING"]
    assert len(waiting) == 2, statuses
    for n in waiting:
        assert infos[n]["statusInfo"], infos[n]  # the scheduler says why
        assert "agent_capacity" in infos[n]["statusData"]["scheduler"]["predicates"], infos[n]["statusData"]
    per_agent: dict[str, int] = {}
    for i in infos.values():
        if i["status"] == "RUNNING":
            per_agent[i["agent"]] = per_agent.get(i["agent"], 0) + 1
    assert per_agent == {f"{prefix}1": 2, f"{prefix}3": 2}
    for occ in (json.loads(_agents(m)[a]["occupied_slots"]) for a in per_agent):
        assert float(occ["cpu"]) <= 2
    running = [n for n in names if n not in waiting]
    assert m.request("DELETE", f"/session/{running[0]}").status_code in (200, 204)
    assert m.request("DELETE", f"/session/{running[1]}").status_code in (200, 204)
    _wait(
        "the waiting ones start",
        lambda: [_info(m, n)["status"] for n in waiting],
        lambda s: s == ["RUNNING", "RUNNING"],
        timeout=30,
    )
    for n in [n for n in names if n not in running[:2]]:
        m.request("DELETE", f"/session/{n}")


def _containers(m: Cluster, session_id: str) -> list[dict[str, Any]]:
    q = (
        "query($id: UUID!) { compute_session(id: $id) { containers { cluster_hostname cluster_role local_rank "
        "agent status occupied_slots } } }"
    )
    rows: list[dict[str, Any]] = m.gql(q, {"id": session_id}, legacy=True)["compute_session"]["containers"]
    return rows


def test_cluster_sessions_single_and_multi_node(fleet: tuple[Cluster, str]) -> None:
    """Multi-node kernels spread over the group's agents (whole or not at all); single-node ones share one."""
    m, prefix = fleet
    m.gql(
        'mutation { modify_keypair_resource_policy(name: "default", props: {max_containers_per_session: 4}) '
        "{ ok msg } }",
        legacy=True,
    )
    tag = uuid.uuid4().hex[:6]
    both = {f"{prefix}1", f"{prefix}3"}  # the default group: two agents of 2 cores
    r = m.request(
        "POST",
        "/session",
        {
            **SMALL,
            "name": f"mn-{tag}",
            "clusterSize": 2,
            "clusterMode": "multi-node",
            "config": {"resources": {"cpu": 2, "mem": "256m"}},
        },
    )
    assert r.status_code == 201 and r.json()["status"] == "RUNNING", r.text
    multi = r.json()["sessionId"]
    kernels = _containers(m, multi)
    assert [(k["cluster_hostname"], k["cluster_role"], k["local_rank"]) for k in kernels] == [
        ("main1", "main", 0),
        ("sub1", "sub", 1),
    ]
    assert {k["agent"] for k in kernels} == both and all(k["status"] == "RUNNING" for k in kernels)
    assert all(json.loads(k["occupied_slots"])["cpu"] == "2" for k in kernels), kernels
    # The group is full now: a single-node pair waits with the reason, and starts once the cluster ends.
    r = m.request(
        "POST",
        "/session",
        {
            **SMALL,
            "name": f"sn-{tag}",
            "clusterSize": 2,
            "enqueueOnly": True,
            "config": {"resources": {"cpu": 1, "mem": "256m"}},
        },
    )
    assert r.status_code == 201, r.text
    single = r.json()["sessionId"]
    info = _wait("the waiting reason", lambda: _info(m, f"sn-{tag}"), lambda i: bool(i["statusInfo"]))
    assert info["status"] == "PENDING" and "no agent has enough free resources" in info["statusInfo"], info
    assert m.request("DELETE", f"/session/mn-{tag}").status_code in (200, 204)
    _wait("the pair to start", lambda: _info(m, f"sn-{tag}"), lambda i: i["status"] == "RUNNING")
    kernels = _containers(m, single)
    assert len({k["agent"] for k in kernels}) == 1 and {k["agent"] for k in kernels} <= both, kernels
    occupied = json.loads(_agents(m)[kernels[0]["agent"]]["occupied_slots"])
    assert float(occupied["cpu"]) == 2, occupied
    assert m.request("DELETE", f"/session/sn-{tag}").status_code in (200, 204)
    _wait(
        "capacity freed",
        lambda: [float(json.loads(_agents(m)[a]["occupied_slots"]).get("cpu", 0)) for a in both],
        lambda cpus: cpus == [0, 0],
    )
