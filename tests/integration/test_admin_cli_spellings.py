"""Both documented spellings of ``backend.ai admin`` agent and scaling-group commands, as subprocesses.

22.03 spells them ``admin agent info|list`` and ``admin scaling-group info|list|add|...`` (the issue also
says ``admin scaling ...``); 19.09 spells them ``admin agent -i ID``, ``admin agents``,
``admin scaling-group -n NAME``, ``admin scaling-groups [add|update|delete|associate-scaling-group|...]``
and ``admin list-scaling-groups GROUP``.  Each pair runs against the same real manager (the ``manager``
fixture, on SQLite and PostgreSQL) and must give the same answer.  The agent is registered over the
real ``/internal/heartbeat`` endpoint (no agent process is needed to list and show it).
"""

from __future__ import annotations

import json
import secrets
import subprocess
import sys
from typing import Any

import httpx

from ai.backend.common.auth import CLUSTER_SECRET_HEADER

from .conftest import ADMIN, Cluster

CLI = [sys.executable, "-m", "ai.backend.client.cli"]


def _cli(manager: Cluster, *args: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run([*CLI, *args], env=manager.env(ADMIN), capture_output=True, text=True, timeout=120)


def ok(manager: Cluster, *args: str) -> str:
    p = _cli(manager, *args)
    assert p.returncode == 0 and "Traceback" not in p.stderr, f"{args}: {p.stdout}\n{p.stderr}"
    return p.stdout


def js(manager: Cluster, *args: str) -> Any:
    return json.loads(ok(manager, "--output", "json", *args))


def fails(manager: Cluster, *args: str, code: int = 1, needle: str = "") -> None:
    p = _cli(manager, *args)
    lines = p.stderr.strip().splitlines()
    assert p.returncode == code, f"{args}: rc={p.returncode}\n{p.stdout}\n{p.stderr}"
    assert len(lines) == 1 and lines[0].startswith("✘ ") and needle in lines[0], p.stderr


def _heartbeat(manager: Cluster, agent_id: str, sgroup: str) -> None:
    body = {
        "id": agent_id,
        "addr": "http://10.213.99.2:6001",
        "scaling_group": sgroup,
        "region": "r1",
        "available_slots": {"cpu": "3", "mem": str(3 * 2**30)},
        "version": "test",
        "compute_plugins": {"intrinsic": {"slot_types": {"cpu": "count", "mem": "bytes"}}},
    }
    r = httpx.post(
        manager.endpoint + "/internal/heartbeat", json=body, headers={CLUSTER_SECRET_HEADER: manager.secret}, timeout=30
    )
    assert r.status_code == 200, r.text


def test_scaling_group_spellings(manager: Cluster) -> None:
    sg = f"sp-{secrets.token_hex(3)}"
    ok(manager, "admin", "scaling-groups", "add", sg, "-d", "19.09 spelling", "--driver_opts", "{}")
    info = js(manager, "admin", "scaling-group", "info", sg)
    assert info["name"] == sg and info["description"] == "19.09 spelling" and info["is_active"] is True
    assert js(manager, "admin", "scaling-group", "-n", sg) == info
    assert js(manager, "admin", "scaling", "info", sg) == info
    assert "Description:" in ok(manager, "admin", "scaling-group", "--name", sg)

    # "scaling-groups" alone is the list; with "list" it is the same list.
    listed = js(manager, "admin", "scaling-groups")
    assert sg in {i["name"] for i in listed["items"]} and listed == js(manager, "admin", "scaling-group", "list")
    assert sg in ok(manager, "admin", "scaling-groups")

    ok(manager, "admin", "scaling-groups", "update", sg, "-i")
    assert js(manager, "admin", "scaling", "-n", sg)["is_active"] is False
    ok(manager, "admin", "scaling", "update", sg, "--active")
    assert js(manager, "admin", "scaling-group", "info", sg)["is_active"] is True

    # The domain associations and the usable groups of a project, in every spelling.
    ok(manager, "admin", "scaling-groups", "associate-scaling-group", sg, "default")
    available = ok(manager, "admin", "list-scaling-groups", "default").splitlines()
    assert (
        sg in available and available == ok(manager, "admin", "scaling-group", "get-available", "default").splitlines()
    )
    assert js(manager, "admin", "list-scaling-groups", "default")["count"] == len(available)
    ok(manager, "admin", "scaling-groups", "dissociate-scaling-group", sg, "default")
    assert sg not in ok(manager, "admin", "list-scaling-groups", "default").splitlines()

    fails(manager, "admin", "scaling-group", "-n", f"no-{sg}", needle="No such scaling group")
    fails(manager, "admin", "scaling-group", "-n", sg, "list", code=2, needle="takes no subcommand")
    ok(manager, "admin", "scaling-groups", "delete", sg)
    fails(manager, "admin", "scaling", "info", sg, needle="No such scaling group")


def test_agent_spellings(manager: Cluster) -> None:
    sg = f"spa-{secrets.token_hex(3)}"
    ok(manager, "admin", "scaling-group", "add", sg)
    agent_id = f"i-spell-{secrets.token_hex(3)}"
    _heartbeat(manager, agent_id, sg)

    detail = js(manager, "admin", "agent", "info", agent_id)
    assert detail["id"] == agent_id and detail["status"] == "ALIVE" and detail["scaling_group"] == sg
    assert detail["addr"] == "http://10.213.99.2:6001" and detail["schedulable"] is True
    assert detail["available_slots"] == {"cpu": "3", "mem": str(3 * 2**30)} and detail["occupied_slots"] == {}
    assert detail["compute_plugins"] == {"intrinsic": {"slot_types": {"cpu": "count", "mem": "bytes"}}}
    assert js(manager, "admin", "agent", "-i", agent_id) == detail
    console = ok(manager, "admin", "agent", "--id", agent_id)
    lines = {line.split(":", 1)[0]: line.split(":", 1)[1].strip() for line in console.splitlines()}
    assert lines["Status"] == "ALIVE" and lines["Scaling Group"] == sg and lines["Compute Plugins"] == "intrinsic"
    assert lines["Available Slots"] == "cpu=3 mem=3g" and lines["Occupied Slots"] == "{}"

    listed = js(manager, "admin", "agents", "--scaling-group", sg)
    assert [i["id"] for i in listed["items"]] == [agent_id] and listed["items"][0]["available_slots"]["cpu"] == "3"
    assert listed == js(manager, "admin", "agent", "list", "--sgroup", sg)
    assert agent_id in ok(manager, "admin", "agents", "-s", "ALIVE", "--all")
    assert js(manager, "admin", "agents", "-s", "lost", "--sgroup", sg)["items"] == []

    fails(manager, "admin", "agent", "-i", f"{agent_id}-x", needle="No such agent")
    fails(manager, "admin", "agent", "-i", agent_id, "list", code=2, needle="takes no subcommand")
    fails(manager, "admin", "agents", "-s", "SLEEPING", code=2, needle="SLEEPING")
