"""Agents and pending sessions written straight into a manager database, for scheduler tests and benchmarks
that run the real scheduling code without the API in front of it (thousands of rows in one transaction).
"""

from __future__ import annotations

import uuid
from datetime import datetime, timedelta
from pathlib import Path
from typing import Any

from sqlalchemy import insert, select, update
from sqlalchemy.ext.asyncio import AsyncSession

from ai.backend.manager.fixtures import DEFAULT_GROUP_ID, USER
from ai.backend.manager.models import AgentRow, KernelRow, KeyPairResourcePolicyRow, KeyPairRow, SessionRow
from ai.backend.manager.models.accounts import UserRow

from .cluster import prepare_database

IMAGE = "python:3.11-debian12"


def prepare_schema(db_url: str, state: Path, secret: str = "scheduler-rows-secret") -> None:
    """The schema and the default fixtures in ``db_url`` (a minimal ``manager.toml`` is written to ``state``)."""
    cfg = state / "manager.toml"
    cfg.write_text(f'[manager]\ncluster-secret = "{secret}"\nstate-dir = "{state}"\n\n[db]\nurl = "{db_url}"\n')
    prepare_database(cfg)


async def unlimit_fixture_user(db: AsyncSession, max_sessions: int) -> None:
    """Let the fixture user's keypair policy allow ``max_sessions`` sessions and any amount of slots."""
    policy = (
        await db.execute(select(KeyPairRow.resource_policy).where(KeyPairRow.access_key == USER["access_key"]))
    ).scalar_one()
    await db.execute(
        update(KeyPairResourcePolicyRow)
        .where(KeyPairResourcePolicyRow.name == policy)
        .values(max_concurrent_sessions=max_sessions, total_resource_slots={})
    )


async def insert_agents(db: AsyncSession, ids: list[str], available: dict[str, str], now: datetime) -> None:
    """ALIVE schedulable x86_64 agents of ``default`` with ``available`` slots and nothing occupied."""
    await db.execute(
        insert(AgentRow),
        [
            {
                "id": aid,
                "status": "ALIVE",
                "scaling_group": "default",
                "schedulable": True,
                "available_slots": available,
                "occupied_slots": {},
                "addr": f"http://127.0.0.1:1/a/{aid}",
                "first_contact": now,
                "last_heartbeat": now,
                "architecture": "x86_64",
                "compute_plugins": {},
            }
            for aid in ids
        ],
    )


async def insert_pending(
    db: AsyncSession, names: list[str], slots: dict[str, str], now: datetime, **columns: Any
) -> None:
    """PENDING single-kernel sessions of the fixture user, oldest first in the order of ``names``, each asking
    for ``slots``; ``columns`` are more session columns (e.g. ``status_history``)."""
    user_uuid = (await db.execute(select(UserRow.uuid).where(UserRow.email == USER["email"]))).scalar_one()
    sids = [uuid.uuid4() for _ in names]
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
                "image": IMAGE,
                "status": "PENDING",
                "status_data": {},
                "status_history": {},
                "created_at": now + timedelta(microseconds=i),
                "requested_slots": slots,
                "occupying_slots": {},
                "environ": {},
                "resource_opts": {},
                **columns,
            }
            for i, (sid, name) in enumerate(zip(sids, names, strict=True))
        ],
    )
    await db.execute(
        insert(KernelRow),
        [
            {
                "id": uuid.uuid4(),
                "session_id": sid,
                "image": IMAGE,
                "status": "PENDING",
                "occupied_slots": {},
                "service_ports": [],
                "last_stat": {},
                "created_at": now,
            }
            for sid in sids
        ],
    )
