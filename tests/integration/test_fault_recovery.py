"""Crash recovery with real processes: after a ``kill -9`` of the manager or of the agent the cluster
converges by itself, within ``CONVERGE`` seconds, on a consistent state: every session is RUNNING with
its container, or ended with a reason and no container, and the agent's occupied slots are those of the
containers that exist. Destroying a session still being created removes its container.

The cluster is this module's own (the tests kill its processes); its kernels take no warm spare, so
every kernel gets a container labelled with its session from the start (the hook for the kills), and
it reconciles every 2 s with a grace of 5 s (instead of 10 s and 30 s).
"""

from __future__ import annotations

import json
import sqlite3
import subprocess
import time
from collections.abc import Iterator
from decimal import Decimal

import pytest

from ai.backend.testutils.cluster import Cluster, docker_available, launch_cluster
from ai.backend.testutils.processes import wait_until

CONVERGE = 60.0
ENDED = ("TERMINATED", "CANCELLED", "ERROR")
SMALL = {"cpu": "1", "mem": "128m"}


@pytest.fixture(scope="module")
def crashy(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Cluster]:
    if not docker_available():
        pytest.fail("Docker engine or the python kernel image is missing: run scripts/setup.sh first")
    c = launch_cluster(
        tmp_path_factory.mktemp("faults"),
        cpu=16,
        mem="8g",
        storage=False,
        manager_settings={"reconcile-interval": 2.0, "reconcile-grace": 5.0},
        container_settings={"warm-pool-size": 0},
    )
    try:
        yield c
    finally:
        c.shutdown()


@pytest.fixture
def up(crashy: Cluster) -> Cluster:
    """The module's cluster with both servers running (a previous test may have left one killed)."""
    for name in ("manager", "agent"):
        if name not in crashy.procs:
            crashy.start(name)
    crashy.wait_ready()
    return crashy


def _enqueue(c: Cluster, name: str, bootstrap: str) -> str:
    """Enqueue a small session running ``bootstrap`` first; its id."""
    body = c.create_session(
        name,
        config={"resources": SMALL},
        expect=(200, 201),
        running=False,
        enqueueOnly=True,
        bootstrap_script=bootstrap,
    )
    return str(body["sessionId"])


def _db(c: Cluster) -> sqlite3.Connection:
    return sqlite3.connect(f"file:{c.state / 'manager.db'}?mode=ro", uri=True, timeout=10)


def _sessions(c: Cluster, ids: list[str]) -> dict[str, tuple[str, str]]:
    """Session id -> (status, status_info), read from the database (works while the manager is down)."""
    with _db(c) as db:
        rows = db.execute(
            f"SELECT id, status, status_info FROM sessions WHERE id IN ({','.join('?' * len(ids))})", ids
        ).fetchall()
    return {str(sid): (st, info or "") for sid, st, info in rows}


def _occupied_cpu(c: Cluster) -> Decimal:
    with _db(c) as db:
        (occ,) = db.execute("SELECT occupied_slots FROM agents WHERE id = ?", (c.agent_id,)).fetchone()
    return Decimal(str((json.loads(occ) if isinstance(occ, str) else occ or {}).get("cpu", "0")))


def _containers(c: Cluster) -> dict[str, list[str]]:
    """Session id -> the states of the agent's kernel containers of that session."""
    out = subprocess.run(
        [
            "docker",
            "ps",
            "-a",
            "--filter",
            f"label=ai.backend.agent-id={c.agent_id}",
            "--format",
            '{{.Label "ai.backend.session-id"}} {{.State}}',
        ],
        capture_output=True,
        text=True,
        check=True,
    ).stdout
    found: dict[str, list[str]] = {}
    for line in out.splitlines():
        sid, _, state = line.partition(" ")
        if sid:
            found.setdefault(sid, []).append(state)
    return found


def _inconsistencies(c: Cluster, ids: list[str]) -> list[str]:
    """What keeps the cluster from the converged state (empty when converged)."""
    sessions, containers = _sessions(c, ids), _containers(c)
    bad = []
    for sid in ids:
        status, info = sessions[sid]
        there = containers.get(sid, [])
        if status == "RUNNING":
            if there != ["running"]:
                bad.append(f"{sid} RUNNING with containers {there}")
        elif status in ENDED:
            if there:
                bad.append(f"{sid} {status} ({info}) with containers {there}")
            if not info:
                bad.append(f"{sid} {status} without a reason")
        else:
            bad.append(f"{sid} still {status}")
    n = sum(len(v) for v in containers.values())
    occupied = _occupied_cpu(c)
    if occupied != n * Decimal(SMALL["cpu"]):
        bad.append(f"agent occupies cpu={occupied} for {n} kernel containers")
    return bad


def _converged(c: Cluster, ids: list[str]) -> None:
    wait_until(
        "the cluster to converge", lambda: _inconsistencies(c, ids), lambda bad: not bad, timeout=CONVERGE, interval=0.5
    )


def _destroy_all(c: Cluster, ids: list[str]) -> None:
    for sid in ids:
        c.request("DELETE", f"/session/{sid}")


def test_manager_crash_during_a_burst_converges(up: Cluster) -> None:
    c = up
    # The bootstrap script keeps each session PREPARING for a while after its container exists.
    ids = [_enqueue(c, f"burst-{i}", "sleep 4") for i in range(14)]
    wait_until(
        "a few kernel containers", lambda: _containers(c), lambda found: len(found) >= 2, timeout=60, interval=0.1
    )
    c.kill("manager")
    caught = [st for st, _ in _sessions(c, ids).values()]
    assert {"SCHEDULED", "PREPARING", "PULLING"} & set(caught), caught  # the crash interrupted starts
    c.start("manager")
    c.wait_ready()
    _converged(c, ids)
    _destroy_all(c, ids)
    _converged(c, ids)


def test_agent_crash_after_container_creation(up: Cluster) -> None:
    c = up
    sid = _enqueue(c, "agent-crash", "sleep 5")
    wait_until("the session's container", lambda: _containers(c), lambda found: sid in found, timeout=60, interval=0.05)
    c.kill("agent")
    # The manager's creation call failed with the agent: the session is ERROR, its container still runs.
    wait_until("the session to fail", lambda: _sessions(c, [sid])[sid][0], lambda st: st in ENDED, timeout=30)
    c.start("agent")
    c.wait_ready()
    _converged(c, [sid])
    r = c.request("DELETE", f"/session/{sid}")
    assert r.status_code == 200, r.text
    _converged(c, [sid])
    assert _sessions(c, [sid])[sid][0] in ENDED


def test_destroying_a_preparing_session_removes_its_container(up: Cluster) -> None:
    c = up
    sid = _enqueue(c, "destroy-preparing", "sleep 60")
    wait_until("the session's container", lambda: _containers(c), lambda found: sid in found, timeout=60)
    assert _sessions(c, [sid])[sid][0] in ("PREPARING", "PULLING")
    r = c.request("DELETE", f"/session/{sid}")
    assert r.status_code == 200, r.text
    wait_until("the container to go", lambda: _containers(c).get(sid), lambda there: not there, timeout=15)
    _converged(c, [sid])
    # The interrupted creation must not turn the destroyed session into an ERROR afterwards.
    deadline = time.monotonic() + 3
    while time.monotonic() < deadline:
        assert _sessions(c, [sid])[sid][0] == "TERMINATED"
        time.sleep(0.2)


def test_container_removed_while_the_agent_was_down_ends_its_session(up: Cluster) -> None:
    c = up
    sid = _enqueue(c, "vanishing", "")
    wait_until("the session to run", lambda: _sessions(c, [sid])[sid][0], lambda st: st == "RUNNING", timeout=60)
    c.kill("agent")
    out = subprocess.run(
        ["docker", "ps", "-aq", "--filter", f"label=ai.backend.session-id={sid}"],
        capture_output=True,
        text=True,
        check=True,
    ).stdout.split()
    assert out
    subprocess.run(["docker", "rm", "-f", *out], capture_output=True, check=True)
    c.start("agent")
    c.wait_ready()
    _converged(c, [sid])
    assert _sessions(c, [sid])[sid] == ("TERMINATED", "container-lost")
