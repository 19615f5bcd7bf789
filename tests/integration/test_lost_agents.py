"""The periodic lost-agent check over a real database (SQLite and PostgreSQL): the sessions of a LOST agent
are flagged ``agent-lost``, ended once the agent has been lost for the grace period, unflagged when their
agent is back, and a cluster session counts as lost when any of its kernels' agents is.
"""

from __future__ import annotations

import asyncio
import uuid
from datetime import timedelta
from pathlib import Path
from typing import Any

from sqlalchemy import insert, select

from ai.backend.manager.agent_client import AgentRPC
from ai.backend.manager.agents.health import AGENT_LOST, handle_lost_agents
from ai.backend.manager.db import create_engine, session_factory
from ai.backend.manager.events import EventBus
from ai.backend.manager.fixtures import DEFAULT_GROUP_ID, USER
from ai.backend.manager.models import AgentRow, KernelRow, SessionRow
from ai.backend.manager.models.accounts import UserRow
from ai.backend.manager.models.base import utcnow
from ai.backend.manager.registry import SessionRegistry
from ai.backend.testutils.scheduler_rows import prepare_schema

GRACE = 60.0


async def _scenario(url: str) -> tuple[list[str], dict[str, tuple[str, str]], list[str], dict[str, tuple[str, str]]]:
    engine = create_engine(url)
    factory = session_factory(engine)
    now = utcnow()
    try:
        async with factory() as db:
            user_uuid = (await db.execute(select(UserRow.uuid).where(UserRow.email == USER["email"]))).scalar_one()
            agents = {
                "back": ("ALIVE", None),
                "lost-now": ("LOST", now - timedelta(seconds=5)),
                "lost-long": ("LOST", now - timedelta(seconds=GRACE + 5)),
            }
            await db.execute(
                insert(AgentRow),
                [
                    {
                        "id": aid,
                        "status": st,
                        "lost_at": lost_at,
                        "scaling_group": "default",
                        "schedulable": True,
                        "available_slots": {"cpu": "4"},
                        "occupied_slots": {},
                        "addr": f"http://127.0.0.1:1/{aid}",
                        "first_contact": now,
                        "last_heartbeat": now,
                        "architecture": "x86_64",
                        "compute_plugins": {},
                    }
                    for aid, (st, lost_at) in agents.items()
                ],
            )
            # name -> (status_info before, agents of its kernels)
            sessions: dict[str, tuple[str, list[str]]] = {
                "returned": (AGENT_LOST, ["back"]),
                "fine": ("", ["back"]),
                "flag-me": ("", ["lost-now"]),
                "end-me": ("", ["lost-long"]),
                "cluster": ("", ["back", "lost-now"]),
            }
            for name, (info, kernel_agents) in sessions.items():
                sid = uuid.uuid4()
                await db.execute(
                    insert(SessionRow),
                    [
                        {
                            "id": sid,
                            "name": name,
                            "access_key": USER["access_key"],
                            "user_uuid": user_uuid,
                            "domain_name": "default",
                            "group_id": DEFAULT_GROUP_ID,
                            "scaling_group": "default",
                            "image": "python:3.11-debian12",
                            "status": "RUNNING",
                            "status_info": info,
                            "status_data": {},
                            "status_history": {"RUNNING": now.isoformat()},
                            "created_at": now,
                            "requested_slots": {},
                            "occupying_slots": {},
                            "environ": {},
                            "resource_opts": {},
                            "cluster_size": len(kernel_agents),
                        }
                    ],
                )
                await db.execute(
                    insert(KernelRow),
                    [
                        {
                            "id": uuid.uuid4(),
                            "session_id": sid,
                            "image": "python:3.11-debian12",
                            "status": "RUNNING",
                            "agent": aid,
                            "agent_addr": None,
                            "cluster_role": "main" if i == 0 else "sub",
                            "cluster_idx": i,
                            "cluster_hostname": "main1" if i == 0 else f"sub{i}",
                            "occupied_slots": {},
                            "service_ports": [],
                            "last_stat": {},
                        }
                        for i, aid in enumerate(kernel_agents)
                    ],
                )
            await db.commit()
        # The real lifecycle ends the sessions (single-kernel ones: no agent is called).
        registry = SessionRegistry(factory, AgentRPC("lost-agents-secret"), EventBus())

        async def states() -> dict[str, tuple[str, str]]:
            async with factory() as db:
                return {
                    n: (st, info or "")
                    for n, st, info in (
                        await db.execute(select(SessionRow.name, SessionRow.status, SessionRow.status_info))
                    ).all()
                }

        ended = await handle_lost_agents(factory, registry.mark_terminated, GRACE)
        first = await states()
        again = await handle_lost_agents(factory, registry.mark_terminated, GRACE)
        second = await states()
        async with factory() as db:
            names = {str(sid): n for sid, n in (await db.execute(select(SessionRow.id, SessionRow.name))).all()}
        return [names[s] for s in ended], first, [names[s] for s in again], second
    finally:
        await engine.dispose()


def test_lost_agent_sessions_are_flagged_ended_and_unflagged(db_url: str, tmp_path: Path) -> None:
    prepare_schema(db_url, tmp_path)
    ended, first, again, second = asyncio.run(_scenario(db_url))
    assert ended == ["end-me"]
    expected: dict[str, Any] = {
        "returned": ("RUNNING", ""),
        "fine": ("RUNNING", ""),
        "flag-me": ("RUNNING", AGENT_LOST),
        "end-me": ("TERMINATED", AGENT_LOST),
        "cluster": ("RUNNING", AGENT_LOST),
    }
    assert first == expected
    assert again == [] and second == first
