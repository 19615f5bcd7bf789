"""The background-task registry (:mod:`ai.backend.manager.bgtask`) on the in-process bus and store."""

from __future__ import annotations

import asyncio
import uuid

from ai.backend.common.problems import Conflict
from ai.backend.manager.bgtask import BackgroundTaskRegistry, MemoryTaskStore, ProgressReporter, TaskInfo
from ai.backend.manager.events import Event, EventBus


async def _collect(q: asyncio.Queue[Event], task_id: str, until: str) -> list[Event]:
    out: list[Event] = []
    while True:
        ev = await asyncio.wait_for(q.get(), 5)
        if ev.session_id == task_id:
            out.append(ev)
            if ev.name == until:
                return out


async def test_progress_then_done_with_the_return_value_as_message() -> None:
    bus = EventBus()
    reg = BackgroundTaskRegistry(bus, MemoryTaskStore())
    gate = asyncio.Event()

    async def work(p: ProgressReporter) -> str:
        await p.update(total=3, message="starting")
        for i in range(3):
            await p.update(1, message=f"step {i}")
        await gate.wait()
        return "all 3 done"

    async with bus.subscribe() as q:
        tid = await reg.start(work, name="demo", owner_access_key="AK", owner_user="u1")
        assert uuid.UUID(tid)
        await asyncio.sleep(0.05)
        info = await reg.get(tid)
        assert info is not None and info.status == "running" and (info.current, info.total) == (3, 3)
        assert info.message == "step 2" and not info.finished
        gate.set()
        events = await _collect(q, tid, "bgtask_done")
    assert [e.name for e in events] == ["bgtask_updated"] * 4 + ["bgtask_done"]
    assert [e.data["current_progress"] for e in events] == [0, 1, 2, 3, 3]
    assert events[-1].data == {
        "task_id": tid,
        "current_progress": 3,
        "total_progress": 3,
        "message": "all 3 done",
        "status": "done",
    }
    final = await reg.get(tid)
    assert final is not None and final.finished and final.finished_at is not None
    assert (final.owner_access_key, final.owner_user, final.name) == ("AK", "u1", "demo")


async def test_failures_report_their_message() -> None:
    bus = EventBus()
    reg = BackgroundTaskRegistry(bus, MemoryTaskStore())

    async def refused(p: ProgressReporter) -> None:
        raise Conflict("the registry is locked")

    async def broken(p: ProgressReporter) -> None:
        await p.update(1)
        raise RuntimeError("disk on fire")

    async with bus.subscribe() as q:
        t1 = await reg.start(refused, name="a", owner_access_key="AK", owner_user="u")
        e1 = await _collect(q, t1, "bgtask_failed")
        t2 = await reg.start(broken, name="b", owner_access_key="AK", owner_user="u")
        e2 = await _collect(q, t2, "bgtask_failed")
    assert e1[-1].data["message"] == "the registry is locked"
    assert e2[-1].data["message"] == "RuntimeError: disk on fire" and e2[-1].data["current_progress"] == 1
    assert (await reg.get(t2)).status == "failed"  # type: ignore[union-attr]


async def test_shutdown_cancels_running_tasks() -> None:
    bus = EventBus()
    reg = BackgroundTaskRegistry(bus, MemoryTaskStore())

    async def forever(p: ProgressReporter) -> None:
        await asyncio.Event().wait()

    async with bus.subscribe() as q:
        tid = await reg.start(forever, name="long", owner_access_key="AK", owner_user="u")
        await asyncio.sleep(0.01)
        store = reg.store  # shutdown closes (empties) it: record what was written instead
        snapshot: list[TaskInfo] = []
        orig_put = store.put

        async def spy(info: TaskInfo) -> None:
            snapshot.append(TaskInfo(**vars(info)))
            await orig_put(info)

        store.put = spy  # type: ignore[method-assign]
        await reg.shutdown()
        events = await _collect(q, tid, "bgtask_cancelled")
    assert events[-1].data["status"] == "cancelled" and "cancelled" in events[-1].data["message"]
    assert snapshot[-1].status == "cancelled"


async def test_memory_store_expires_and_copies() -> None:
    store = MemoryTaskStore(retention=0.05)
    info = TaskInfo(task_id="t", name="n", owner_access_key="AK", owner_user="u")
    await store.put(info)
    got = await store.get("t")
    assert got == info and got is not info
    got.current = 99  # type: ignore[union-attr]
    assert (await store.get("t")).current == 0  # type: ignore[union-attr]
    await asyncio.sleep(0.08)
    assert await store.get("t") is None
    assert await store.get("never") is None


async def test_bus_drops_oldest_for_slow_subscribers_and_unsubscribes() -> None:
    bus = EventBus(queue_size=2)
    async with bus.subscribe() as q:
        assert bus.subscriber_count == 1
        for i in range(4):
            bus.publish(Event(f"e{i}", "s"))
        assert [q.get_nowait().name, q.get_nowait().name] == ["e2", "e3"]
    assert bus.subscriber_count == 0


async def test_a_running_task_of_a_gone_manager_reads_as_failed() -> None:
    """Several managers (ADR 0014): the task's record says who runs it; once that manager is gone, a read on
    another manager records and announces the failure (its watchers would otherwise wait for ever)."""
    bus, store = EventBus(), MemoryTaskStore()
    alive = {"m-a", "m-b"}

    async def managers() -> set[str]:
        return set(alive)

    a = BackgroundTaskRegistry(bus, store, manager_id="m-a", alive=managers)
    b = BackgroundTaskRegistry(bus, store, manager_id="m-b", alive=managers)
    gate = asyncio.Event()

    async def work(p: ProgressReporter) -> str:
        await gate.wait()
        return "done"

    tid = await a.start(work, name="demo", owner_access_key="AK", owner_user="u1")
    info = await b.get(tid)
    assert info is not None and (info.status, info.manager) == ("running", "m-a")  # m-a lives: left alone
    alive.discard("m-a")
    async with bus.subscribe() as q:
        info = await b.get(tid)
        assert info is not None and info.status == "failed" and "stopped" in (info.message or "")
        assert [e.name for e in await _collect(q, tid, "bgtask_failed")] == ["bgtask_failed"]
    stored = await store.get(tid)
    assert stored is not None and stored.finished_at is not None and stored.status == "failed"
    gate.set()
    await a.shutdown()
