"""The session services on a real SQLite database with a fake agent RPC (the agents stand in for what the
product calls over HTTP): destroy, cancel, restart refusal and an end reported while the kernels start."""

from __future__ import annotations

import asyncio
import uuid
from collections.abc import AsyncIterator
from pathlib import Path
from typing import Any

import pytest
from sqlalchemy import insert, select, update

from ai.backend.manager.db import create_engine, session_factory
from ai.backend.manager.events import EventBus
from ai.backend.manager.fixtures import DEFAULT_GROUP_ID, USER
from ai.backend.manager.models import AgentRow, KernelRow, SessionRow
from ai.backend.manager.models.accounts import UserRow
from ai.backend.manager.models.base import utcnow
from ai.backend.manager.registry import SessionNotRunning, SessionRegistry
from ai.backend.testutils.scheduler_rows import IMAGE, insert_agents, prepare_schema


class FakeAgentRPC:
    """Records the calls the session services make to agents and answers like an agent would."""

    def __init__(self) -> None:
        self.calls: list[tuple[str, str, str]] = []

    async def call(self, addr: str, method: str, path: str, json: Any = None, timeout: float | None = None) -> Any:
        self.calls.append((addr, method, path))
        if method == "DELETE" and path.startswith("/v1/kernels/"):
            return {"stats": {"cpu_used": 1234}}
        return {}

    async def close(self) -> None:
        pass


@pytest.fixture(scope="module")
def schema(tmp_path_factory: pytest.TempPathFactory) -> Path:
    state = tmp_path_factory.mktemp("lifecycle")
    prepare_schema(f"sqlite+aiosqlite:///{state}/template.db", state)
    return state / "template.db"


@pytest.fixture
async def services(schema: Path, tmp_path: Path) -> AsyncIterator[tuple[SessionRegistry, FakeAgentRPC, EventBus]]:
    db_file = tmp_path / "manager.db"
    db_file.write_bytes(schema.read_bytes())
    engine = create_engine(f"sqlite+aiosqlite:///{db_file}")
    rpc, bus = FakeAgentRPC(), EventBus()
    reg = SessionRegistry(session_factory(engine), rpc, bus)  # type: ignore[arg-type]  # the fake RPC
    async with reg.db() as db:
        await insert_agents(db, ["a1"], {"cpu": "4", "mem": "4g"}, utcnow())
        await db.commit()
    yield reg, rpc, bus
    await engine.dispose()


async def _session(reg: SessionRegistry, status: str) -> uuid.UUID:
    """A one-kernel session in ``status`` on agent a1, occupying 1 CPU there."""
    now = utcnow()
    sid, kid = uuid.uuid4(), uuid.uuid4()
    async with reg.db() as db:
        user_uuid = (await db.execute(select(UserRow.uuid).where(UserRow.email == USER["email"]))).scalar_one()
        await db.execute(
            insert(SessionRow),
            [
                {
                    "id": sid,
                    "name": f"s-{sid.hex[:6]}",
                    "access_key": USER["access_key"],
                    "user_uuid": user_uuid,
                    "domain_name": "default",
                    "group_id": DEFAULT_GROUP_ID,
                    "scaling_group": "default",
                    "image": IMAGE,
                    "status": status,
                    "status_data": {},
                    "status_history": {status: now.isoformat()},
                    "created_at": now,
                    "requested_slots": {"cpu": "1"},
                    "occupying_slots": {"cpu": "1"},
                    "environ": {},
                    "resource_opts": {},
                }
            ],
        )
        await db.execute(
            insert(KernelRow),
            [
                {
                    "id": kid,
                    "session_id": sid,
                    "image": IMAGE,
                    "status": status,
                    "agent": "a1",
                    "agent_addr": "http://agent-a1",
                    "occupied_slots": {"cpu": "1"},
                    "created_at": now,
                }
            ],
        )
        agent = await db.get(AgentRow, "a1")
        assert agent is not None
        agent.occupied_slots = {"cpu": "1"}
        await db.commit()
    return sid


async def _row(reg: SessionRegistry, sid: uuid.UUID) -> tuple[SessionRow, AgentRow]:
    async with reg.db() as db:
        session, agent = await db.get(SessionRow, sid), await db.get(AgentRow, "a1")
    assert session is not None and agent is not None
    return session, agent


async def test_destroying_a_running_session_removes_its_kernel_and_gives_its_slots_back(
    services: tuple[SessionRegistry, FakeAgentRPC, EventBus],
) -> None:
    reg, rpc, bus = services
    sid = await _session(reg, "RUNNING")
    async with bus.subscribe() as q:
        session, _ = await _row(reg, sid)
        stats = await reg.destroy(session, "user-requested")
        names = [q.get_nowait().name for _ in range(q.qsize())]
    assert stats == {"cpu_used": 1234}
    assert [(m, p.split("/")[2]) for _, m, p in rpc.calls] == [("DELETE", "kernels")]
    session, agent = await _row(reg, sid)
    assert session.status == "TERMINATED" and session.status_info == "user-requested"
    assert set(session.status_history) >= {"RUNNING", "TERMINATING", "TERMINATED"}
    assert session.terminated_at is not None
    assert agent.occupied_slots in ({}, {"cpu": "0"})
    assert names == ["session_terminating", "session_terminated"]


async def test_destroying_a_pending_session_cancels_it_without_calling_an_agent(
    services: tuple[SessionRegistry, FakeAgentRPC, EventBus],
) -> None:
    reg, rpc, _ = services
    sid = await _session(reg, "PENDING")
    session, _ = await _row(reg, sid)
    assert await reg.destroy(session, "user-requested") == {}
    session, _ = await _row(reg, sid)
    assert session.status == "CANCELLED" and rpc.calls == []
    assert reg.schedule_event.is_set()  # freed slots: the scheduler looks again


async def test_a_session_that_is_not_running_cannot_restart(
    services: tuple[SessionRegistry, FakeAgentRPC, EventBus],
) -> None:
    reg, rpc, _ = services
    sid = await _session(reg, "TERMINATED")
    session, _ = await _row(reg, sid)
    with pytest.raises(SessionNotRunning, match="TERMINATED, not RUNNING"):
        await reg.restart(session)
    assert rpc.calls == []


async def test_an_end_reported_while_the_kernels_start_is_recorded_once_the_start_returns(
    services: tuple[SessionRegistry, FakeAgentRPC, EventBus],
) -> None:
    reg, _, _ = services
    sid = await _session(reg, "PREPARING")
    assert reg.launcher.defer_end(sid, {"reason": "x"}) is False  # not being started here: recorded at once
    reg.launcher._starting.add(sid)  # as Launcher.start does while the agents create the kernels
    await reg.mark_terminated(sid, "self-terminated", exit_code=0)
    session, _ = await _row(reg, sid)
    assert session.status == "PREPARING"  # kept for the launcher, not recorded yet
    end = reg.launcher._early_exits.pop(sid)
    reg.launcher._starting.discard(sid)
    await reg.mark_terminated(sid, **end)
    session, _ = await _row(reg, sid)
    assert session.status == "TERMINATED" and session.status_info == "self-terminated"
    assert session.status_data.get("exit_code") == 0


# ---- several managers (ADR 0014): recovery takes over only what gone managers left -------------------------


async def _owned(reg: SessionRegistry, status: str, owner: str | None) -> uuid.UUID:
    sid = await _session(reg, status)
    async with reg.db() as db:
        await db.execute(update(SessionRow).where(SessionRow.id == sid).values(manager_id=owner))
        await db.commit()
    return sid


async def test_recovery_leaves_the_sessions_of_live_managers_alone(
    services: tuple[SessionRegistry, FakeAgentRPC, EventBus],
) -> None:
    reg, rpc, _ = services
    reg.lifecycle.manager_id = "m-me"
    theirs = await _owned(reg, "PREPARING", "m-live")
    dead_destroy = await _owned(reg, "TERMINATING", "m-dead")
    dead_start = await _owned(reg, "PREPARING", "m-dead")
    unknown = await _owned(reg, "RESTARTING", None)
    counts = await reg.recover_orphans({"m-live", "m-me"})
    assert counts == {"TERMINATING": 1, "PREPARING": 1, "RESTARTING": 1}
    statuses = {sid: (await _row(reg, sid))[0] for sid in (theirs, dead_destroy, dead_start, unknown)}
    assert (statuses[theirs].status, statuses[theirs].manager_id) == ("PREPARING", "m-live")
    assert statuses[dead_destroy].status == "TERMINATED"
    assert (statuses[dead_start].status, statuses[dead_start].status_info) == ("ERROR", "creation-interrupted")
    assert statuses[unknown].status == "RUNNING"
    assert {s.manager_id for sid, s in statuses.items() if sid != theirs} == {"m-me"}  # claimed before acting
    assert not any(str(theirs) in path for _, _, path in rpc.calls)  # its kernels were not touched


async def test_two_managers_recovering_at_once_act_on_each_session_once(
    services: tuple[SessionRegistry, FakeAgentRPC, EventBus], tmp_path: Path
) -> None:
    reg, _, bus = services
    engine = create_engine(f"sqlite+aiosqlite:///{tmp_path / 'manager.db'}")  # a second manager, same database
    other = SessionRegistry(session_factory(engine), FakeAgentRPC(), bus, manager_id="m-b")  # type: ignore[arg-type]
    reg.lifecycle.manager_id = "m-a"
    orphans = [await _owned(reg, "PREPARING", "m-dead") for _ in range(3)]
    try:
        async with bus.subscribe() as q:
            first, second = await asyncio.gather(
                reg.recover_orphans({"m-a", "m-b"}), other.recover_orphans({"m-a", "m-b"})
            )
            failures = [e for e in (q.get_nowait() for _ in range(q.qsize())) if e.name == "session_failure"]
    finally:
        await engine.dispose()
    assert first.get("PREPARING", 0) + second.get("PREPARING", 0) == 3, (first, second)
    assert sorted(e.session_id for e in failures) == sorted(map(str, orphans))  # one failure per session


async def test_destroy_and_restart_record_the_manager_carrying_them_out(
    services: tuple[SessionRegistry, FakeAgentRPC, EventBus],
) -> None:
    reg, _, _ = services
    reg.lifecycle.manager_id = "m-me"
    sid = await _owned(reg, "RUNNING", "m-old")
    await reg.restart((await _row(reg, sid))[0])
    assert (await _row(reg, sid))[0].manager_id == "m-me"
    # A TERMINATING session of this manager is its own: recovery by a manager that sees it alive keeps off.
    async with reg.db() as db:
        await db.execute(update(SessionRow).where(SessionRow.id == sid).values(status="TERMINATING"))
        await db.commit()
    assert await reg.recover_orphans({"m-me"}) == {}
