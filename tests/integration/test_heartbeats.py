"""Agent heartbeats over the real ``/internal/heartbeat`` endpoint: a repeated heartbeat only refreshes
``last_heartbeat``, while any change (capacity, address, scaling group) and a LOST agent's return are
written at once."""

from __future__ import annotations

import asyncio
import json
import secrets
from typing import Any

import httpx
from sqlalchemy import update

from ai.backend.common.auth import CLUSTER_SECRET_HEADER
from ai.backend.manager.db import create_engine, session_factory
from ai.backend.manager.models import AgentRow

from .conftest import ADMIN, Cluster


def _beat(m: Cluster, agent_id: str, cpu: str = "4", addr: str = "http://10.213.98.2:6001") -> None:
    body = {
        "id": agent_id,
        "addr": addr,
        "scaling_group": "default",
        "architecture": "x86_64",
        "available_slots": {"cpu": cpu, "mem": str(4 * 2**30)},
        "live_stat": {"node": {"cpu_util": "1"}},
    }
    r = httpx.post(m.endpoint + "/internal/heartbeat", json=body, headers={CLUSTER_SECRET_HEADER: m.secret}, timeout=30)
    assert r.status_code == 200, r.text


def _agent(m: Cluster, agent_id: str) -> dict[str, Any]:
    r = m.request(
        "POST",
        "/admin/graphql",
        {
            "query": "query($id: String!) { agent(agent_id: $id) { status addr available_slots last_heartbeat } }",
            "variables": {"id": agent_id},
        },
        who=ADMIN,
    )
    assert r.status_code == 200 and not r.json().get("errors"), r.text
    body = r.json()
    row: dict[str, Any] = body.get("data", body)["agent"]
    return row


async def _mark_lost(db_url: str, agent_id: str) -> None:
    engine = create_engine(db_url)
    try:
        async with session_factory(engine)() as db:
            await db.execute(update(AgentRow).where(AgentRow.id == agent_id).values(status="LOST"))
            await db.commit()
    finally:
        await engine.dispose()


def test_repeated_heartbeats_refresh_and_changes_are_written_at_once(manager: Cluster) -> None:
    agent_id = f"i-hb-{secrets.token_hex(3)}"
    _beat(manager, agent_id)
    first = _agent(manager, agent_id)
    assert first["status"] == "ALIVE" and json.loads(first["available_slots"])["cpu"] == "4", first
    _beat(manager, agent_id)  # the same again: only the time moves
    second = _agent(manager, agent_id)
    assert second["last_heartbeat"] > first["last_heartbeat"]
    assert {k: v for k, v in second.items() if k != "last_heartbeat"} == {
        k: v for k, v in first.items() if k != "last_heartbeat"
    }
    _beat(manager, agent_id, cpu="2")  # a smaller agent must never be overcommitted: written at once
    assert json.loads(_agent(manager, agent_id)["available_slots"])["cpu"] == "2"
    _beat(manager, agent_id, cpu="2", addr="http://10.213.98.6:6001")
    assert _agent(manager, agent_id)["addr"] == "http://10.213.98.6:6001"
    # A LOST agent that comes back with the very same heartbeat is ALIVE again.
    asyncio.run(_mark_lost(manager.db_url, agent_id))
    assert _agent(manager, agent_id)["status"] == "LOST"
    _beat(manager, agent_id, cpu="2", addr="http://10.213.98.6:6001")
    assert _agent(manager, agent_id)["status"] == "ALIVE"
