"""Tenancy meets real sessions: deactivated keypairs, policy totals and scaling-group access
(real manager, agent and containers)."""

from __future__ import annotations

import secrets
from typing import Any

import pytest

from .conftest import Cluster

pytestmark = pytest.mark.docker


def _new_user(cluster: Cluster, policy: str = "default") -> dict[str, str]:
    email = f"t-{secrets.token_hex(3)}@example.org"
    cluster.gql(
        """mutation($e: String!) { create_user(email: $e, props: {password: "long-enough",
                     group_ids: ["2de2b969-1d04-48a6-af16-0bc8adb3c831"]}) { ok } }""",
        {"e": email},
        legacy=True,
    )
    q = "query($e: String) { keypairs(email: $e) { access_key secret_key } }"
    kp = cluster.gql(q, {"e": email}, legacy=True)["keypairs"][0]
    if policy != "default":
        cluster.gql(
            "mutation($a: String!, $p: String!) { modify_keypair(access_key: $a, "
            "props: {resource_policy: $p}) { ok } }",
            {"a": kp["access_key"], "p": policy},
            legacy=True,
        )
    return {"email": email, **kp}


def _policy(cluster: Cluster, **overrides: Any) -> str:
    name = f"pol-{secrets.token_hex(3)}"
    props = {
        "default_for_unspecified": "UNLIMITED",
        "total_resource_slots": "{}",
        "max_concurrent_sessions": 5,
        "max_containers_per_session": 1,
        "idle_timeout": 0,
        "max_vfolder_count": 0,
        "max_vfolder_size": 0,
        **overrides,
    }
    cluster.gql(
        """mutation($n: String!, $p: CreateKeyPairResourcePolicyInput!) {
                     create_keypair_resource_policy(name: $n, props: $p) { ok } }""",
        {"n": name, "p": props},
        legacy=True,
    )
    return name


def test_deactivated_keypair_keeps_its_running_session(cluster: Cluster) -> None:
    u = _new_user(cluster)
    r = cluster.request("POST", "/session", {"image": "python", "name": "keep-me"}, who=u)
    assert r.status_code == 201, r.text
    sid = r.json()["sessionId"]
    modify = "mutation($a: String!, $on: Boolean) { modify_keypair(access_key: $a, props: {is_active: $on}) { ok } }"
    cluster.gql(modify, {"a": u["access_key"], "on": False}, legacy=True)
    assert cluster.request("POST", "/session/keep-me", {"mode": "query", "code": "print(1)"}, who=u).status_code == 401
    status = cluster.gql("query($id: UUID!) { compute_session(id: $id) { status } }", {"id": sid}, legacy=True)
    assert status["compute_session"]["status"] == "RUNNING"
    cluster.gql(modify, {"a": u["access_key"], "on": True}, legacy=True)
    r = cluster.request("POST", "/session/keep-me", {"mode": "query", "code": "print(6 * 7)"}, who=u)
    assert r.status_code == 200 and r.json()["result"]["console"] == [["stdout", "42\n"]]
    assert cluster.request("DELETE", "/session/keep-me", who=u).status_code == 200


def test_policy_totals_and_concurrency_are_enforced(cluster: Cluster) -> None:
    limited = _policy(
        cluster,
        default_for_unspecified="LIMITED",
        total_resource_slots='{"cpu": "1", "mem": "1g"}',
        max_concurrent_sessions=1,
    )
    u = _new_user(cluster, limited)
    too_big = cluster.request(
        "POST",
        "/session",
        {"image": "python", "name": "too-big", "config": {"resources": {"cpu": 2, "mem": "512m"}}},
        who=u,
    )
    assert too_big.status_code == 406 and "cpu" in too_big.json()["detail"], too_big.text
    first = cluster.request(
        "POST",
        "/session",
        {"image": "python", "name": "first", "config": {"resources": {"cpu": 1, "mem": "512m"}}},
        who=u,
    )
    assert first.status_code == 201, first.text
    second = cluster.request(
        "POST",
        "/session",
        {"image": "python", "name": "second", "config": {"resources": {"cpu": 1, "mem": "256m"}}},
        who=u,
    )
    assert second.status_code in (406, 429), second.text
    assert cluster.request("DELETE", "/session/first", who=u).status_code == 200


def test_scaling_group_must_be_associated(cluster: Cluster) -> None:
    name = f"sg-{secrets.token_hex(3)}"
    cluster.gql(
        """mutation($n: String!) { create_scaling_group(name: $n, props: {driver: "static",
                     scheduler: "fifo"}) { ok } }""",
        {"n": name},
        legacy=True,
    )
    u = _new_user(cluster)
    r = cluster.request(
        "POST", "/session", {"image": "python", "name": "elsewhere", "config": {"scalingGroup": name}}, who=u
    )
    assert r.status_code == 403 and name in r.json()["detail"], r.text
    # No session row was left behind by the refusal.
    rows = cluster.gql(
        "query($a: String) { compute_session_list(limit: 10, offset: 0, access_key: $a) { total_count } }",
        {"a": u["access_key"]},
        legacy=True,
    )
    assert rows["compute_session_list"]["total_count"] == 0


def test_idle_timeout_ends_idle_sessions_and_activity_keeps_them(cluster: Cluster) -> None:
    import time

    u = _new_user(cluster, _policy(cluster, idle_timeout=4))
    for name in ("idle-one", "busy-one"):
        r = cluster.request("POST", "/session", {"image": "python", "name": name}, who=u)
        assert r.status_code == 201, r.text
    deadline = time.monotonic() + 9
    while time.monotonic() < deadline:
        r = cluster.request("POST", "/session/busy-one", {"mode": "query", "code": "1"}, who=u)
        assert r.status_code == 200, r.text
        time.sleep(1)
    info = cluster.wait_for_status("idle-one", "TERMINATED", who=u, timeout=30)
    assert info["statusInfo"] == "idle-timeout"
    assert cluster.request("GET", "/session/busy-one", who=u).json()["status"] == "RUNNING"
    assert cluster.wait_for_status("busy-one", "TERMINATED", who=u, timeout=30)["statusInfo"] == "idle-timeout"


def test_max_session_lifetime_ends_even_busy_sessions(cluster: Cluster) -> None:
    u = _new_user(cluster, _policy(cluster, max_session_lifetime=3))
    r = cluster.request("POST", "/session", {"image": "python", "name": "short-lived"}, who=u)
    assert r.status_code == 201, r.text
    info = cluster.wait_for_status("short-lived", "TERMINATED", who=u, timeout=30)
    assert info["statusInfo"] == "session-lifetime-exceeded"
