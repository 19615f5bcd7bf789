"""A backlog that cannot start: passes of the real scheduler code over a real database (SQLite and
PostgreSQL) keep each waiting session's reason right without rewriting every row on every pass.

A waiting session's row is written when its reason or failed predicates change, and otherwise at most every
``REWRITE_WAITING_AFTER`` seconds (``status_data.scheduler.retries`` counts the passes that recorded a try).
"""

from __future__ import annotations

import asyncio
from datetime import timedelta
from pathlib import Path
from typing import Any

from sqlalchemy import select, update

from ai.backend.manager.db import create_engine, session_factory
from ai.backend.manager.models import AgentRow, SessionRow
from ai.backend.manager.models.base import utcnow
from ai.backend.manager.scheduler import REWRITE_WAITING_AFTER, Scheduler
from ai.backend.testutils.scheduler_rows import insert_agents, insert_pending, prepare_schema, unlimit_fixture_user

SLOTS = {"cpu": "1", "mem": str(1024**3)}


async def _setup(url: str, sessions: int) -> None:
    """One agent with room for 4 sessions, and ``sessions`` pending ones of the fixture user."""
    engine = create_engine(url)
    try:
        async with session_factory(engine)() as db:
            await unlimit_fixture_user(db, 1000)
            now = utcnow()
            await insert_agents(db, ["i-backlog"], {"cpu": "4", "mem": str(64 * 1024**3)}, now)
            await insert_pending(
                db,
                [f"backlog-{i}" for i in range(sessions)],
                SLOTS,
                now,
                status_data={"note": "kept"},
                status_history={"PENDING": now.isoformat()},
            )
            await db.commit()
    finally:
        await engine.dispose()


async def _scenario(url: str) -> list[dict[str, dict[str, Any]]]:
    """Five passes (see the test); the waiting rows' (status_info, scheduler data) after the first four,
    every row after the last."""
    engine = create_engine(url)
    factory = session_factory(engine)
    scheduler = Scheduler(factory, asyncio.Event(), lambda sid: None)  # placements are not started

    async def waiting() -> dict[str, dict[str, Any]]:
        async with factory() as db:
            rows = (
                await db.execute(
                    select(SessionRow.name, SessionRow.status_info, SessionRow.status_data).where(
                        SessionRow.status == "PENDING"
                    )
                )
            ).all()
        return {name: {"info": info, **(data or {}).get("scheduler", {})} for name, info, data in rows}

    try:
        out = []
        placed = await scheduler.schedule_once()
        assert len(placed) == 4
        out.append(await waiting())
        await scheduler.schedule_once()  # nothing changed: nothing rewritten
        out.append(await waiting())
        async with factory() as db:  # the record of one waiting session grows old
            row = (await db.execute(select(SessionRow).where(SessionRow.name == "backlog-4"))).scalar_one()
            old = (utcnow() - timedelta(seconds=REWRITE_WAITING_AFTER + 5)).isoformat()
            row.status_data = {**row.status_data, "scheduler": {**row.status_data["scheduler"], "last_try": old}}
            await db.commit()
        await scheduler.schedule_once()
        out.append(await waiting())
        async with factory() as db:  # the agent is drained: every reason changes at once
            await db.execute(update(AgentRow).where(AgentRow.id == "i-backlog").values(schedulable=False))
            await db.commit()
        await scheduler.schedule_once()
        out.append(await waiting())
        async with factory() as db:  # back, and big enough for everyone
            await db.execute(
                update(AgentRow)
                .where(AgentRow.id == "i-backlog")
                .values(schedulable=True, available_slots={"cpu": "64", "mem": str(64 * 1024**3)})
            )
            await db.commit()
        placed = await scheduler.schedule_once()
        assert len(placed) == 6
        async with factory() as db:
            rows = (
                await db.execute(
                    select(
                        SessionRow.name,
                        SessionRow.status,
                        SessionRow.status_info,
                        SessionRow.status_data,
                        SessionRow.status_history,
                        SessionRow.occupying_slots,
                    )
                )
            ).all()
        out.append(
            {
                name: {"status": st, "info": info, "data": data, "history": history, "occupying": occ}
                for name, st, info, data, history, occ in rows
            }
        )
        return out
    finally:
        await engine.dispose()


def test_unchanged_reasons_are_not_rewritten_every_pass(db_url: str, tmp_path: Path) -> None:
    prepare_schema(db_url, tmp_path)
    asyncio.run(_setup(db_url, 10))
    first, second, aged, drained, placed = asyncio.run(_scenario(db_url))
    assert len(first) == 6
    for rec in first.values():
        assert rec["retries"] == 1 and "no agent has enough free resources" in rec["info"], rec
        assert rec["predicates"] == ["agent_capacity"], rec
    assert second == first  # not one row rewritten
    assert aged["backlog-4"]["retries"] == 2 and aged["backlog-4"]["last_try"] > first["backlog-4"]["last_try"]
    assert {k: v for k, v in aged.items() if k != "backlog-4"} == {k: v for k, v in first.items() if k != "backlog-4"}
    for name, rec in drained.items():
        assert "no alive schedulable agent" in rec["info"], rec
        assert rec["retries"] == aged[name]["retries"] + 1, (name, rec)
    # Placed at last: the scheduler's record is gone, the history has SCHEDULED after what it had.
    for name, row in placed.items():
        assert row["status"] == "SCHEDULED" and row["info"] == "" and row["data"] == {"note": "kept"}, row
        assert row["history"].keys() == {"PENDING", "SCHEDULED"}, row
        assert row["history"]["PENDING"] < row["history"]["SCHEDULED"], row
        assert row["occupying"] == {"cpu": "1", "mem": str(1024**3)}, (name, row)
