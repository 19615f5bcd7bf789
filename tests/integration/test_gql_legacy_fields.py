"""GraphQL fields the official clients ask for: the v4 session fields of the 19.09 CLI (``sess_id`` & co.),
``ComputeContainer.status_data``, ``ComputeSession.created_user_id``, ``KeyPair.concurrency_limit`` and the
agent's ``hardware_metadata`` and upstream-shaped ``live_stat`` — with the documents the clients send, and the
official CLIs themselves when they are installed."""

from __future__ import annotations

import json
import secrets
import subprocess
import time
from pathlib import Path
from typing import Any

import pytest

from .conftest import ADMIN, USER, Cluster

COMPAT = Path.home() / ".cache/backend.ai-compat"
CLI = {v: COMPAT / v / "bin/backend.ai" for v in ("19.09", "22.03")}

LIST_1909 = """query($limit:Int!, $offset:Int!, $ak:String, $status:String) {
  compute_session_list(
      limit:$limit, offset:$offset, access_key:$ak, status:$status) {
    items { sess_id access_key image sess_type status status_info status_changed result id tag created_at \
occupied_slots mem_cur_bytes mem_max_bytes cpu_using }
    total_count
  }
}"""
ONE_1909 = (
    "query($sess_id: String!) {  compute_session(sess_id: $sess_id) { sess_id role image tag created_at "
    "terminated_at agent status status_info occupied_slots cpu_used mem_cur_bytes mem_max_bytes num_queries "
    "net_rx_bytes net_tx_bytes io_read_bytes io_write_bytes io_max_scratch_size io_cur_scratch_size "
    "cpu_using }}"
)
INFO_2203 = (
    "query($id: UUID!) { compute_session(id: $id) { id name created_user_id containers { id cluster_role "
    "cluster_idx cluster_hostname session_id image registry status status_info status_data status_changed "
    "agent container_id resource_opts occupied_slots live_stat last_stat } dependencies { name id } } }"
)
KEYPAIR_1909 = (
    "query {  keypair {    user_id access_key secret_key is_active is_admin created_at last_used "
    "resource_policy rate_limit concurrency_limit concurrency_used  }}"
)
AGENT_2203 = (
    "query($agent_id: String!) {\n    agent(agent_id: $agent_id) {id status region architecture "
    "first_contact cpu_cur_pct available_slots occupied_slots hardware_metadata live_stat}\n}\n"
)


def _start(cluster: Cluster, name: str) -> str:
    r = cluster.request(
        "POST", "/session", {"image": "python", "name": name, "config": {"resources": {"cpu": "1", "mem": "256m"}}}
    )
    assert r.status_code == 201, r.text
    sid: str = r.json()["sessionId"]
    for _ in range(200):
        if cluster.request("GET", f"/session/{name}").json().get("status") == "RUNNING":
            return sid
        time.sleep(0.3)
    raise AssertionError(f"session {name} did not start")


@pytest.fixture(scope="module")
def running(cluster: Cluster) -> Any:
    name = f"gqlleg-{secrets.token_hex(3)}"
    sid = _start(cluster, name)
    r = cluster.request("POST", f"/session/{name}", {"mode": "query", "code": "x = bytearray(8 << 20); print(1)"})
    assert r.status_code == 200, r.text
    time.sleep(4)  # a heartbeat with the kernel's stats
    yield name, sid
    cluster.request("DELETE", f"/session/{name}")


def test_v4_session_list_and_detail(cluster: Cluster, running: tuple[str, str]) -> None:
    name, sid = running
    status = "PENDING,PREPARING,PULLING,RUNNING,RESTARTING,TERMINATING,RESIZING,SUSPENDED,ERROR"
    page = cluster.gql(LIST_1909, {"limit": 20, "offset": 0, "status": status, "ak": None}, who=USER)[
        "compute_session_list"
    ]
    (item,) = [i for i in page["items"] if i["id"] == sid]
    assert item["sess_id"] == name and item["sess_type"] == "interactive" and item["status"] == "RUNNING"
    assert item["access_key"] == USER["access_key"]
    assert item["mem_cur_bytes"] > 0 and item["mem_max_bytes"] >= item["mem_cur_bytes"]
    assert isinstance(item["cpu_using"], float) and item["cpu_using"] >= 0

    one = cluster.gql(ONE_1909, {"sess_id": name}, who=USER)["compute_session"]
    assert one["sess_id"] == name and one["role"] == "main" and one["status"] == "RUNNING"
    assert one["agent"] is None  # users do not see agents
    assert one["cpu_used"] >= 0 and one["mem_cur_bytes"] > 0 and one["net_rx_bytes"] >= 0
    # The scratch limit of the session (the agent's scratch-size), as the REST session info reports it.
    rest_stats = cluster.request("GET", f"/session/{name}").json()["stats"]
    assert one["io_max_scratch_size"] == rest_stats["io_max_scratch_size"] > 0 and one["num_queries"] >= 1
    as_admin = cluster.gql(ONE_1909, {"sess_id": name}, who=ADMIN)["compute_session"]
    assert as_admin["sess_id"] == name and as_admin["agent"] == cluster.agent_id
    assert cluster.gql(ONE_1909, {"sess_id": sid}, who=USER)["compute_session"]["sess_id"] == name
    assert cluster.gql(ONE_1909, {"sess_id": "no-such-session"}, who=USER)["compute_session"] is None
    r = cluster.request("POST", "/admin/graphql", {"query": "{ compute_session { id } }"})
    assert r.status_code == 400 or r.json().get("errors"), r.text


def test_2203_session_info_fields(cluster: Cluster, running: tuple[str, str]) -> None:
    name, sid = running
    s = cluster.gql(INFO_2203, {"id": sid}, who=USER)["compute_session"]
    assert s["name"] == name and s["created_user_id"]
    (c,) = s["containers"]
    assert c["cluster_role"] == "main" and c["status_data"] is None and s["dependencies"] == []
    # The 22.03 shape is unchanged: compute_session(id:) with the same answer.
    same = cluster.gql(
        "query($id: UUID!) { compute_session(id: $id) { id name created_user_uuid } }", {"id": sid}, who=USER
    )["compute_session"]
    assert same["id"] == sid and same["created_user_uuid"] == s["created_user_id"]


def test_keypair_concurrency_fields(cluster: Cluster) -> None:
    kp = cluster.gql(KEYPAIR_1909, who=USER)["keypair"]
    assert kp["access_key"] == USER["access_key"]
    policy = cluster.gql("{ keypair_resource_policy { name max_concurrent_sessions } }", who=USER)[
        "keypair_resource_policy"
    ]
    assert policy["name"] == kp["resource_policy"]
    assert kp["concurrency_limit"] == policy["max_concurrent_sessions"]
    assert isinstance(kp["concurrency_used"], int)


def test_agent_hardware_metadata_and_live_stat(cluster: Cluster, running: tuple[str, str]) -> None:
    agent = cluster.gql(AGENT_2203, {"agent_id": cluster.agent_id}, who=ADMIN)["agent"]
    hw = json.loads(agent["hardware_metadata"])
    assert hw["cpu"]["status"] == "healthy" and int(hw["cpu"]["metadata"]["num_cores"]) > 0
    live = json.loads(agent["live_stat"])
    # Upstream's shape, as the 22.03 AgentStatFormatter reads it ...
    assert set(live["node"]) >= {"cpu_util", "mem"} and "pct" in live["node"]["cpu_util"]
    mem = live["node"]["mem"]
    assert mem["unit_hint"] == "bytes" and 0 < int(mem["current"]) <= int(mem["capacity"])
    assert live["devices"]["mem"]["root"] == mem
    for core in live["devices"]["cpu_util"].values():
        assert core["unit_hint"] == "percent" and {"current", "capacity", "pct"} <= set(core)
    assert len(live["devices"]["cpu_util"]) > 0  # after two heartbeats there are per-core figures
    # ... and this server's flat keys, for older readers.
    assert live["mem_used_bytes"] == int(mem["current"]) and live["mem_total_bytes"] == int(mem["capacity"])


def _cli(version: str, cluster: Cluster, *args: str, who: dict[str, Any] = USER) -> str:
    if not CLI[version].exists():
        pytest.skip(f"the official {version} client is not installed")
    p = subprocess.run([str(CLI[version]), *args], env=cluster.env(who), capture_output=True, text=True, timeout=120)
    assert p.returncode == 0 and "Traceback" not in p.stderr, p.stdout + p.stderr
    return p.stdout


def test_official_clients(cluster: Cluster, running: tuple[str, str]) -> None:
    name, sid = running
    out = _cli("19.09", cluster, "admin", "session", name)
    assert f"Session ID: {name}" in out and "Role: main" in out and "Used Memory (MiB):" in out
    assert name in _cli("19.09", cluster, "ps", "--detail")
    out = _cli("19.09", cluster, "admin", "keypair")
    assert "Concur.Limit" in out
    out = _cli("22.03", cluster, "admin", "agent", "info", cluster.agent_id, who=ADMIN)
    assert "cpu_util:" in out and "mem:" in out
    out = _cli("22.03", cluster, "session", "info", sid)
    assert name in out
    out = _cli("22.03", cluster, "ps", "-f", "name,created_user_id")
    assert name in out


def test_v4_sess_id_finds_a_session_whose_name_looks_like_a_uuid(cluster: Cluster) -> None:
    # The 19.09 client names its sessions uuid4().hex unless told otherwise.
    name = secrets.token_hex(16)
    r = cluster.request("POST", "/session", {"image": "python", "name": name, "enqueueOnly": True, "starts_at": "1h"})
    assert r.status_code == 201, r.text
    try:
        one = cluster.gql(ONE_1909, {"sess_id": name}, who=USER)["compute_session"]
        assert one is not None and one["sess_id"] == name
        by_id = cluster.gql(ONE_1909, {"sess_id": r.json()["sessionId"]}, who=USER)["compute_session"]
        assert by_id is not None and by_id["sess_id"] == name
    finally:
        cluster.request("DELETE", f"/session/{name}")
