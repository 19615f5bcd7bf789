"""Why a session waits, as the scheduler says it (``statusInfo``, ``backend.ai ps``), and lost agents.

* A reserved session shows its start time; a session that became too big for its keypair's policy after
  it was accepted (an administrator lowered the policy) waits with the policy reason and starts once
  another session of the keypair ends.
* A session whose agent stops sending heartbeats is flagged ``agent-lost`` and, after another heartbeat
  timeout, terminated with that reason (a cluster of its own with a 2-second heartbeat timeout).
"""

from __future__ import annotations

import json
import signal
import subprocess
import sys
import uuid
from collections.abc import Callable
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

from ai.backend.manager.fixtures import ADMIN, DEFAULT_GROUP_ID, USER
from ai.backend.testutils.cluster import Cluster, launch_cluster
from ai.backend.testutils.processes import wait_until


def _wait_for(
    what: str, probe: Callable[[], dict[str, Any]], ok: Callable[[dict[str, Any]], bool], timeout: float = 40
) -> dict[str, Any]:
    return wait_until(what, probe, ok, timeout, interval=0.3)


def _account_with_policy(c: Cluster, cpu: str) -> tuple[str, dict[str, str]]:
    uid = uuid.uuid4().hex[:8]
    policy, email = f"sched-{uid}", f"sched-{uid}@example.com"
    c.gql(
        "mutation($n: String!, $p: CreateKeyPairResourcePolicyInput!) { "
        "create_keypair_resource_policy(name: $n, props: $p) { ok msg } }",
        {
            "n": policy,
            "p": {
                "default_for_unspecified": "UNLIMITED",
                "total_resource_slots": json.dumps({"cpu": cpu}),
                "max_concurrent_sessions": 5,
                "max_containers_per_session": 1,
                "idle_timeout": 600,
                "max_vfolder_count": 1,
                "max_vfolder_size": 0,
            },
        },
        legacy=True,
    )
    c.gql(
        "mutation($e: String!, $p: UserInput!) { create_user(email: $e, props: $p) { ok msg } }",
        {
            "e": email,
            "p": {
                "username": f"sched-{uid}",
                "password": f"pw-{uid}",
                "need_password_change": False,
                "domain_name": "default",
                "role": "user",
                "group_ids": [str(DEFAULT_GROUP_ID)],
            },
        },
        legacy=True,
    )
    kp = c.gql(
        "mutation($u: String!, $p: KeyPairInput!) { create_keypair(user_id: $u, props: $p) "
        "{ ok msg keypair { access_key secret_key } } }",
        {"u": email, "p": {"is_active": True, "is_admin": False, "resource_policy": policy, "rate_limit": 10000}},
        legacy=True,
    )["create_keypair"]["keypair"]
    return policy, {"access_key": kp["access_key"], "secret_key": kp["secret_key"]}


def _info(c: Cluster, name: str, who: dict[str, str]) -> dict[str, Any]:
    r = c.request("GET", f"/session/{name}", who=who)
    assert r.status_code == 200, r.text
    body: dict[str, Any] = r.json()
    return body


def test_policy_reason_waits_until_another_session_ends(cluster: Cluster) -> None:
    policy, who = _account_with_policy(cluster, cpu="2")
    small = {"image": "python", "resources": {"cpu": 1, "mem": "256m"}}
    r = cluster.request("POST", "/session", {**small, "name": "sched-first"}, who=who)
    assert r.status_code == 201 and r.json()["status"] == "RUNNING", r.text
    starts = datetime.now(UTC) + timedelta(seconds=6)
    r = cluster.request(
        "POST",
        "/session",
        {**small, "name": "sched-second", "enqueueOnly": True, "starts_at": starts.isoformat()},
        who=who,
    )
    assert r.status_code == 201, r.text
    try:
        info = _wait_for(
            "the reservation reason",
            lambda: _info(cluster, "sched-second", who),
            lambda i: bool(i["statusInfo"]),
            timeout=10,
        )
        assert info["status"] == "PENDING" and info["statusInfo"].startswith("reserved to start at "), info
        # The world changes after the session was accepted: its keypair may now hold only one CPU.
        cluster.gql(
            "mutation($n: String!, $p: ModifyKeyPairResourcePolicyInput!) { "
            "modify_keypair_resource_policy(name: $n, props: $p) { ok msg } }",
            {"n": policy, "p": {"total_resource_slots": json.dumps({"cpu": "1"})}},
            legacy=True,
        )
        info = _wait_for(
            "the policy reason",
            lambda: _info(cluster, "sched-second", who),
            lambda i: (i["statusInfo"] or "").startswith("keypair resource policy"),
        )
        assert info["status"] == "PENDING"
        assert info["statusInfo"] == "keypair resource policy limit: cpu 1 of 1 in use, 1 asked", info
        # `backend.ai ps` shows the reason in its default columns.
        out = subprocess.run(
            [sys.executable, "-m", "ai.backend.client.cli", "ps"],
            env=cluster.env(who),
            capture_output=True,
            text=True,
            timeout=60,
        )
        assert out.returncode == 0, out.stderr
        line = next(ln for ln in out.stdout.splitlines() if "sched-second" in ln)
        assert "PENDING" in line and "keypair resource policy limit" in line, out.stdout
        assert cluster.request("DELETE", "/session/sched-first", who=who).status_code == 200
        info = _wait_for(
            "the second session to start",
            lambda: _info(cluster, "sched-second", who),
            lambda i: i["status"] == "RUNNING",
            timeout=60,
        )
        assert not info["statusInfo"], info
    finally:
        for name in ("sched-first", "sched-second"):
            cluster.request("DELETE", f"/session/{name}", who=who)


def test_lost_agent_sessions_are_flagged_then_terminated(tmp_path: Path) -> None:
    c = launch_cluster(tmp_path, cpu=2, mem="2g", storage=False)
    try:
        c.stop("manager")
        toml = c.state / "manager.toml"
        toml.write_text(toml.read_text().replace("heartbeat-timeout = 30.0", "heartbeat-timeout = 2.0"))
        c.start("manager")
        c.wait_ready()
        r = c.request("POST", "/session", {"image": "python", "name": "doomed", "resources": {"cpu": 1, "mem": "256m"}})
        assert r.status_code == 201 and r.json()["status"] == "RUNNING", r.text
        agent = c.procs.pop("agent")
        agent.send_signal(signal.SIGKILL)  # no goodbye: the manager only notices the missing heartbeats
        agent.wait(10)
        flagged = _wait_for(
            "the agent-lost flag",
            lambda: _info(c, "doomed", USER),
            lambda i: i["statusInfo"] == "agent-lost" or i["status"] != "RUNNING",
        )
        assert flagged["status"] == "RUNNING", flagged  # flagged first: the agent may still come back
        ended = _wait_for("the termination", lambda: _info(c, "doomed", USER), lambda i: i["status"] != "RUNNING")
        assert ended["status"] == "TERMINATED" and ended["statusInfo"] == "agent-lost", ended
        agents = c.gql("{ agents { id status occupied_slots } }", {}, legacy=True)["agents"]
        assert [(a["status"], json.loads(a["occupied_slots"])) for a in agents] in (
            [("LOST", {})],
            [("LOST", {"cpu": "0", "mem": "0"})],
        ), agents
    finally:
        c.shutdown()


def test_agent_selection_strategy_is_validated(cluster: Cluster) -> None:
    name = f"sg-{uuid.uuid4().hex[:8]}"
    create = (
        "mutation($n: String!, $p: ScalingGroupInput!) { create_scaling_group(name: $n, props: $p) "
        "{ ok msg scaling_group { scheduler_opts } } }"
    )
    bad = {"driver": "static", "scheduler": "fifo", "scheduler_opts": {"agent_selection_strategy": "roundrobin"}}
    r = cluster.request("POST", "/admin/graphql", {"query": create, "variables": {"n": name, "p": bad}}, who=ADMIN)
    assert r.status_code == 400 and "agent_selection_strategy" in r.json()["detail"], r.text
    good = {**bad, "scheduler_opts": {"agent_selection_strategy": "concentrated"}}
    out = cluster.gql(create, {"n": name, "p": good}, legacy=True)["create_scaling_group"]
    assert json.loads(out["scaling_group"]["scheduler_opts"]) == {"agent_selection_strategy": "concentrated"}
    modify = (
        "mutation($n: String!, $p: ModifyScalingGroupInput!) { modify_scaling_group(name: $n, props: $p) { ok msg } }"
    )
    r = cluster.request(
        "POST",
        "/admin/graphql",
        {"query": modify, "variables": {"n": name, "p": {"scheduler_opts": {"agent_selection_strategy": "nope"}}}},
        who=ADMIN,
    )
    assert r.status_code == 400, r.text
    cluster.gql("mutation($n: String!) { delete_scaling_group(name: $n) { ok msg } }", {"n": name}, legacy=True)
