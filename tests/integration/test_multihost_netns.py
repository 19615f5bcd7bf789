"""Multi-host: two Docker agents, each in its own network namespace, registered with one manager.

The manager runs in the host namespace and listens on the host end of the first namespace's veth pair;
each agent runs inside its namespace (``ip netns exec``), listens on the same port there, advertises its
namespace address and joins its own scaling group (``default`` and a second one made over GraphQL and
associated with the domain).  Sessions asked for in a scaling group land on that group's agent and run
code, with the execution output crossing that agent's veth pair; ``/resource/check-presets`` follows the
agents' real free capacity as sessions start and end, and only for the scaling groups the caller may use;
a killed agent becomes LOST while the other keeps working.

Needs root (or CAP_NET_ADMIN) for the namespaces and ``iproute2``; skips when namespaces cannot be made.
"""

from __future__ import annotations

import json
import secrets
import socket
import subprocess
import urllib.error
import urllib.request
from collections.abc import Iterator
from dataclasses import dataclass
from decimal import Decimal
from pathlib import Path
from typing import Any

import pytest

from ai.backend.common.auth import CLUSTER_SECRET_HEADER
from ai.backend.manager.fixtures import USER
from ai.backend.testutils.cluster import Cluster, docker_available, launch_manager
from ai.backend.testutils.netns import NetNS, launch_netns_agent, netns_unavailable, network_namespaces
from ai.backend.testutils.processes import remove_agent_containers, stop_process
from ai.backend.testutils.processes import wait_until as _wait

pytestmark = pytest.mark.docker

GIB = 2**30
HEARTBEAT_TIMEOUT = 2.0


@dataclass
class MultiHost:
    manager: Cluster
    spaces: list[NetNS]
    agents: list[str]  # agent IDs, one per namespace
    sgroups: list[str]  # the scaling group of each agent
    procs: list[subprocess.Popen[bytes]]
    port: int  # the agents' RPC port (the same in every namespace)


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def _agents(m: Cluster) -> dict[str, dict[str, Any]]:
    rows = m.gql("{ agents(status: null) { id status scaling_group addr available_slots occupied_slots } }")
    return {a["id"]: a for a in rows["agents"]}


def _check(m: Cluster, body: dict[str, Any]) -> dict[str, Any]:
    r = m.request("POST", "/resource/check-presets", body, who=USER)
    assert r.status_code == 200, r.text
    out: dict[str, Any] = r.json()
    return out


def _slots(d: dict[str, str]) -> dict[str, Decimal]:
    return {k: Decimal(v) for k, v in d.items()}


def _kernel_agent(m: Cluster, session_id: str) -> str:
    q = "query($s: UUID!) { compute_session(id: $s) { scaling_group containers { agent } } }"
    sess = m.gql(q, {"s": session_id})["compute_session"]
    (container,) = sess["containers"]
    return str(container["agent"])


def _answers(url: str, secret: str) -> bool:
    req = urllib.request.Request(url, headers={CLUSTER_SECRET_HEADER: secret})
    try:
        with urllib.request.urlopen(req, timeout=2):
            return True
    except (urllib.error.URLError, OSError):
        return False


@pytest.fixture(scope="module")
def multihost(tmp_path_factory: pytest.TempPathFactory) -> Iterator[MultiHost]:
    reason = netns_unavailable()
    if reason:
        pytest.skip(reason)
    if not docker_available():
        pytest.fail("Docker engine or the python kernel image is missing: run scripts/setup.sh first")
    state: Path = tmp_path_factory.mktemp("multihost")
    tag = secrets.token_hex(3)
    agents = [f"i-mh-{tag}-a", f"i-mh-{tag}-b"]
    sgroups = ["default", f"mh-{tag}"]
    with network_namespaces(2) as spaces:
        m = launch_manager(state, host=spaces[0].host_ip, settings={"heartbeat-timeout": HEARTBEAT_TIMEOUT})
        procs: list[subprocess.Popen[bytes]] = []
        try:
            m.gql(
                'mutation($n: String!) { create_scaling_group(name: $n, props: {driver: "static", '
                'scheduler: "fifo", is_active: true}) { ok msg } }',
                {"n": sgroups[1]},
            )
            m.gql(
                "mutation($n: String!) { associate_scaling_group_with_domain(scaling_group: $n, "
                'domain: "default") { ok msg } }',
                {"n": sgroups[1]},
            )
            port = _free_port()  # free in the host namespace: the agents must not be reachable there
            for i, (ns, agent_id, sg) in enumerate(zip(spaces, agents, sgroups, strict=True)):
                procs.append(
                    launch_netns_agent(
                        ns,
                        state,
                        agent_id=agent_id,
                        manager_url=m.endpoint,
                        secret=m.secret,
                        scaling_group=sg,
                        port=port,
                        cpu=2 + i,
                        mem=f"{2 + i}g",
                    )
                )
            _wait(
                "both agents alive",
                lambda: _agents(m),
                lambda a: all(a.get(i, {}).get("status") == "ALIVE" for i in agents),
                timeout=40,
            )
            yield MultiHost(m, spaces, agents, sgroups, procs, port)
        finally:
            for p in procs:
                stop_process(p, 10)
            m.shutdown()
            for agent_id in agents:
                remove_agent_containers(agent_id)


def test_agents_register_from_their_namespaces(multihost: MultiHost) -> None:
    mh = multihost
    agents = _agents(mh.manager)
    for ns, agent_id, sg, size in zip(mh.spaces, mh.agents, mh.sgroups, (2, 3), strict=True):
        a = agents[agent_id]
        assert a["status"] == "ALIVE" and a["scaling_group"] == sg
        assert a["addr"] == f"http://{ns.ns_ip}:{mh.port}"
        assert json.loads(a["available_slots"]) == {"cpu": str(size), "mem": str(size * GIB)}
        # Reachable at its namespace address only: nothing listens on that port in the host namespace.
        assert _answers(f"{a['addr']}/v1/health", mh.manager.secret)
    assert not _answers(f"http://127.0.0.1:{mh.port}/v1/health", mh.manager.secret)
    sgs = mh.manager.gql("{ scaling_groups { name } }")["scaling_groups"]
    assert set(mh.sgroups) <= {s["name"] for s in sgs}


def test_sessions_land_on_their_scaling_group_and_capacity_follows(multihost: MultiHost) -> None:
    mh, m = multihost, multihost.manager
    tag = secrets.token_hex(3)
    fit_b = f"mh-fit-b-{tag}"  # fits only the idle agent b (3 cores)
    small = f"mh-small-{tag}"
    create = (
        "mutation($n: String!, $p: CreateResourcePresetInput!) { create_resource_preset(name: $n, "
        "props: $p) { ok msg } }"
    )
    m.gql(create, {"n": fit_b, "p": {"resource_slots": json.dumps({"cpu": "3", "mem": "1g"})}})
    m.gql(create, {"n": small, "p": {"resource_slots": json.dumps({"cpu": "1", "mem": "256m"})}})

    def flags(out: dict[str, Any]) -> dict[str, bool]:
        return {p["name"]: p["allocatable"] for p in out["presets"] if p["name"] in (fit_b, small)}

    idle = {mh.sgroups[0]: {"cpu": "2", "mem": str(2 * GIB)}, mh.sgroups[1]: {"cpu": "3", "mem": str(3 * GIB)}}
    out = _check(m, {})
    assert {k: v["remaining"] for k, v in out["scaling_groups"].items()} == idle
    assert out["scaling_group_remaining"] == {"cpu": "5", "mem": str(5 * GIB)}
    assert flags(out) == {fit_b: True, small: True}
    only_a = _check(m, {"scaling_group": mh.sgroups[0]})
    assert list(only_a["scaling_groups"]) == [mh.sgroups[0]] and flags(only_a) == {fit_b: False, small: True}

    names = [f"mh-a-{tag}", f"mh-b-{tag}"]
    try:
        for name, sg, agent_id, ns in zip(names, mh.sgroups, mh.agents, mh.spaces, strict=True):
            before = [s.host_bytes() for s in mh.spaces]
            sid = m.create_session(name, config={"scalingGroup": sg, "resources": {"cpu": 1, "mem": "512m"}})[
                "sessionId"
            ]
            assert _kernel_agent(m, sid) == agent_id
            result = m.exec(name, "import socket\nprint(socket.gethostname() != '', 'x' * 300_000)")
            assert result["status"] == "finished"
            assert "".join(t for k, t in result["console"] if k == "stdout").endswith("x" * 300_000 + "\n")
            grown = [s.host_bytes() - b for s, b in zip(mh.spaces, before, strict=True)]
            mine = mh.spaces.index(ns)
            # The output came from this agent across its veth pair; the other one saw only heartbeats.
            assert grown[mine] > 300_000 and grown[1 - mine] < 150_000, grown

        # Both sessions hold 1 core and 512 MiB on their agents: check-presets says so, and agrees with them.
        used = {"cpu": Decimal(1), "mem": Decimal(512 * 2**20)}
        busy = _check(m, {})
        for sg, agent_id in zip(mh.sgroups, mh.agents, strict=True):
            remaining = _slots(busy["scaling_groups"][sg]["remaining"])
            assert remaining == {k: Decimal(v) - used[k] for k, v in idle[sg].items()}, busy
            a = _agents(m)[agent_id]
            free = {
                k: Decimal(v) - Decimal(json.loads(a["occupied_slots"]).get(k, 0))
                for k, v in json.loads(a["available_slots"]).items()
            }
            assert remaining == free
        assert flags(busy) == {fit_b: False, small: True}

        # Only the scaling groups the caller may use count.
        dissociate = (
            "mutation($n: String!) { disassociate_scaling_group_with_domain(scaling_group: $n, "
            'domain: "default") { ok msg } }'
        )
        m.gql(dissociate, {"n": mh.sgroups[1]})
        try:
            narrowed = _check(m, {})
            assert list(narrowed["scaling_groups"]) == [mh.sgroups[0]]
            assert narrowed["scaling_group_remaining"] == busy["scaling_groups"][mh.sgroups[0]]["remaining"]
            assert (
                m.request("POST", "/resource/check-presets", {"scaling_group": mh.sgroups[1]}, who=USER).status_code
                == 403
            )
        finally:
            m.gql(
                "mutation($n: String!) { associate_scaling_group_with_domain(scaling_group: $n, "
                'domain: "default") { ok msg } }',
                {"n": mh.sgroups[1]},
            )

        assert m.request("DELETE", f"/session/{names[1]}").status_code == 200
        after = _wait(
            "b's capacity back",
            lambda: _check(m, {}),
            lambda o: o["scaling_groups"][mh.sgroups[1]]["remaining"] == idle[mh.sgroups[1]],
            timeout=10,
        )
        assert flags(after) == {fit_b: True, small: True}
        assert _slots(after["scaling_groups"][mh.sgroups[0]]["remaining"]) == _slots(
            busy["scaling_groups"][mh.sgroups[0]]["remaining"]
        )
    finally:
        for name in names:
            m.request("DELETE", f"/session/{name}")
        for p in (fit_b, small):
            m.gql("mutation($n: String!) { delete_resource_preset(name: $n) { ok msg } }", {"n": p})


def test_multi_node_cluster_spans_two_hosts(multihost: MultiHost, tmp_path: Path) -> None:
    """A multi-node cluster session over agents in two namespaces: the agent of main1 creates the session's
    network, the other agent's kernel joins it, and main1 reaches sub1 by its hostname."""
    mh, m = multihost, multihost.manager
    other = f"{mh.agents[0]}-c"  # a second agent of the default group, in the other namespace
    proc = launch_netns_agent(
        mh.spaces[1],
        tmp_path,
        agent_id=other,
        manager_url=m.endpoint,
        secret=m.secret,
        port=_free_port(),
        cpu=2,
        mem="2g",
    )
    name = f"mh-mn-{secrets.token_hex(3)}"
    try:
        _wait("agent c alive", lambda: _agents(m), lambda a: a.get(other, {}).get("status") == "ALIVE", timeout=40)
        m.gql(
            'mutation { modify_keypair_resource_policy(name: "default", '
            "props: {max_containers_per_session: 2}) { ok msg } }"
        )
        r = m.request(
            "POST",
            "/session",
            {
                "image": "python",
                "name": name,
                "clusterSize": 2,
                "clusterMode": "multi-node",
                "config": {"resources": {"cpu": 2, "mem": "256m"}},
            },
        )
        assert r.status_code == 201 and r.json()["status"] == "RUNNING", r.text
        sid = r.json()["sessionId"]
        q = "query($s: UUID!) { compute_session(id: $s) { containers { cluster_hostname agent container_id } } }"
        kernels = m.gql(q, {"s": sid})["compute_session"]["containers"]
        assert {k["cluster_hostname"]: k["agent"] for k in kernels} in (
            {"main1": mh.agents[0], "sub1": other},
            {"main1": other, "sub1": mh.agents[0]},
        ), kernels
        sub1 = next(k["container_id"] for k in kernels if k["cluster_hostname"] == "sub1")
        subprocess.run(
            ["docker", "exec", "-d", sub1, "python3", "-m", "http.server", "8080", "--directory", "/home/config/ssh"],
            check=True,
        )
        code = (
            "import urllib.request, time\n"
            "for _ in range(50):\n"
            "    try:\n"
            "        url = 'http://sub1:8080/id_cluster.pub'\n"
            "        print(urllib.request.urlopen(url, timeout=2).read().decode()[:12])\n"
            "        break\n"
            "    except OSError:\n"
            "        time.sleep(0.1)\n"
        )
        result = m.exec(name, code)
        console = list(result["console"])
        while result["status"] == "continued":  # the run outlived one flush interval
            r = m.request("POST", f"/session/{name}", {"mode": "continue", "runId": result["runId"], "code": ""})
            assert r.status_code == 200, r.text
            result = r.json()["result"]
            console += result["console"]
        assert console == [["stdout", "ssh-ed25519 \n"]], result
    finally:
        m.request("DELETE", f"/session/{name}")
        stop_process(proc, 10)
        remove_agent_containers(other)


def test_a_killed_agent_is_lost_and_the_other_keeps_working(multihost: MultiHost) -> None:
    mh, m = multihost, multihost.manager
    mh.procs[1].kill()
    mh.procs[1].wait(10)
    lost = _wait(
        "agent b LOST",
        lambda: _agents(m)[mh.agents[1]]["status"],
        lambda s: s == "LOST",
        timeout=HEARTBEAT_TIMEOUT + 12,
    )
    assert lost == "LOST" and _agents(m)[mh.agents[0]]["status"] == "ALIVE"
    out = _check(m, {})
    assert _slots(out["scaling_groups"][mh.sgroups[1]]["remaining"]) == {"cpu": 0, "mem": 0}
    # A session for b's scaling group waits: its only agent is gone.
    waiting = f"mh-wait-{secrets.token_hex(3)}"
    r = m.request(
        "POST",
        "/session",
        {"image": "python", "name": waiting, "enqueueOnly": True, "config": {"scalingGroup": mh.sgroups[1]}},
    )
    assert r.status_code == 201, r.text
    name = f"mh-still-{secrets.token_hex(3)}"
    try:
        sid = m.create_session(name, config={"scalingGroup": mh.sgroups[0], "resources": {"cpu": 1, "mem": "512m"}})[
            "sessionId"
        ]
        assert _kernel_agent(m, sid) == mh.agents[0]
        assert m.exec(name, "print(6 * 7)")["console"] == [["stdout", "42\n"]]
        pending = m.request("GET", f"/session/{waiting}")
        assert pending.status_code == 200 and pending.json()["status"] == "PENDING", pending.text
    finally:
        m.request("DELETE", f"/session/{name}")
        m.request("DELETE", f"/session/{waiting}")
