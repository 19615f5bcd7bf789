"""Background tasks: long operations that answer a task id at once and report progress as events.

A task is a coroutine function given a :class:`ProgressReporter`. The registry runs it in the
manager that started it, keeps its state (progress ``current``/``total``, ``message``, ``status``)
in a :class:`TaskStore` and publishes ``bgtask_updated`` and one final ``bgtask_done`` /
``bgtask_failed`` / ``bgtask_cancelled`` event on the :class:`~.events.EventBus`, whose subject is
the task id. Finished tasks are kept for 24 hours. With ``[redis] url`` the state is stored in Redis
and the events travel over Redis, so any manager can answer ``GET /events/background-task``; a task records
the manager running it, and one whose manager is gone is reported failed when it is read (ADR 0014).
"""

from __future__ import annotations

import asyncio
import json
import logging
import time
import uuid
from collections.abc import Awaitable, Callable
from dataclasses import asdict, dataclass
from typing import Any, Protocol

from ai.backend.common.problems import ProblemError

from .events import Event, EventBus

log = logging.getLogger(__name__)

RETENTION = 24 * 3600  # seconds a task's state is kept (after its last change)
RUNNING, DONE, FAILED, CANCELLED = "running", "done", "failed", "cancelled"
FINAL_EVENTS = {DONE: "bgtask_done", FAILED: "bgtask_failed", CANCELLED: "bgtask_cancelled"}
UPDATED_EVENT = "bgtask_updated"


@dataclass
class TaskInfo:
    """The state of one background task."""

    task_id: str
    name: str
    owner_access_key: str
    owner_user: str  # the creator's user UUID: any of the user's keypairs may watch the task
    status: str = RUNNING
    current: int = 0
    total: int = 0
    message: str | None = None
    created_at: float = 0.0
    finished_at: float | None = None
    manager: str = ""  # the id of the manager process running it ("" in records of older versions)

    @property
    def finished(self) -> bool:
        return self.status != RUNNING

    def event_data(self) -> dict[str, Any]:
        """The SSE data object: the documented fields plus the status."""
        return {
            "task_id": self.task_id,
            "current_progress": self.current,
            "total_progress": self.total,
            "message": self.message,
            "status": self.status,
        }

    def to_json(self) -> str:
        return json.dumps(asdict(self))

    @classmethod
    def from_json(cls, raw: str | bytes) -> TaskInfo:
        return cls(**json.loads(raw))


class TaskStore(Protocol):
    """Where task states live between events."""

    async def get(self, task_id: str) -> TaskInfo | None: ...

    async def put(self, info: TaskInfo) -> None: ...

    async def close(self) -> None: ...


class MemoryTaskStore:
    """Task states in this manager's memory (the embedded default: one manager)."""

    def __init__(self, retention: float = RETENTION) -> None:
        self.retention = retention
        self._items: dict[str, tuple[float, TaskInfo]] = {}

    def _purge(self) -> None:
        now = time.monotonic()
        for k in [k for k, (exp, _) in self._items.items() if exp <= now]:
            del self._items[k]

    async def get(self, task_id: str) -> TaskInfo | None:
        self._purge()
        item = self._items.get(task_id)
        return TaskInfo(**asdict(item[1])) if item else None

    async def put(self, info: TaskInfo) -> None:
        self._purge()
        self._items[info.task_id] = (time.monotonic() + self.retention, TaskInfo(**asdict(info)))

    async def close(self) -> None:
        self._items.clear()


class RedisTaskStore:
    """Task states as JSON strings in Redis (``bgtask:<id>``, expiring), shared by all managers."""

    def __init__(self, url: str, retention: float = RETENTION, prefix: str = "bgtask:") -> None:
        import redis.asyncio as aioredis

        self.retention = retention
        self.prefix = prefix
        self._redis: Any = aioredis.Redis.from_url(url, socket_connect_timeout=5, socket_timeout=10)

    async def get(self, task_id: str) -> TaskInfo | None:
        raw = await self._redis.get(self.prefix + task_id)
        return TaskInfo.from_json(raw) if raw else None

    async def put(self, info: TaskInfo) -> None:
        await self._redis.set(self.prefix + info.task_id, info.to_json(), ex=max(int(self.retention), 1))

    async def close(self) -> None:
        await self._redis.aclose()


class ProgressReporter:
    """Handed to a task function: reports progress (stored and published as ``bgtask_updated``)."""

    def __init__(self, registry: BackgroundTaskRegistry, info: TaskInfo) -> None:
        self._registry = registry
        self._info = info

    @property
    def task_id(self) -> str:
        return self._info.task_id

    async def update(
        self, increment: int = 0, *, current: int | None = None, total: int | None = None, message: str | None = None
    ) -> None:
        """Advance the progress by ``increment`` (or set ``current``), optionally with a new total/message."""
        info = self._info
        if total is not None:
            info.total = max(int(total), 0)
        info.current = int(current) if current is not None else info.current + int(increment)
        if message is not None:
            info.message = message
        await self._registry._save_and_publish(info, UPDATED_EVENT)


TaskFunc = Callable[[ProgressReporter], Awaitable[str | None]]
"""A task body; its return value becomes the final message."""


class BackgroundTaskRegistry:
    """Starts background tasks, records their progress and announces their end."""

    def __init__(
        self,
        bus: EventBus,
        store: TaskStore,
        *,
        manager_id: str = "",
        alive: Callable[[], Awaitable[set[str]]] | None = None,
    ) -> None:
        self.bus = bus
        self.store = store
        self._running: dict[str, asyncio.Task[None]] = {}
        # This manager, and the managers alive now (several managers only): a task of a gone one never ends.
        self.manager_id = manager_id
        self._alive = alive

    async def start(self, fn: TaskFunc, *, name: str, owner_access_key: str, owner_user: str) -> str:
        """Record a new task, run ``fn`` in the background and return the task id (a UUID string)."""
        info = TaskInfo(
            task_id=str(uuid.uuid4()),
            name=name,
            owner_access_key=owner_access_key,
            owner_user=owner_user,
            created_at=time.time(),
            manager=self.manager_id,
        )
        await self.store.put(info)
        task = asyncio.get_running_loop().create_task(self._run(fn, info), name=f"bgtask:{name}:{info.task_id}")
        self._running[info.task_id] = task
        task.add_done_callback(lambda _: self._running.pop(info.task_id, None))
        return info.task_id

    async def get(self, task_id: str) -> TaskInfo | None:
        """The task's state, or ``None`` if unknown or expired; a running task of a manager that is gone is
        recorded (and announced) failed first."""
        info = await self.store.get(task_id)
        if (
            info is None
            or info.finished
            or self._alive is None
            or not info.manager
            or info.manager == self.manager_id
            or info.manager in await self._alive()
        ):
            return info
        info.status, info.message = FAILED, "The manager running the task stopped before it ended."
        info.finished_at = time.time()
        await self._save_and_publish(info, FINAL_EVENTS[FAILED])
        return info

    async def _run(self, fn: TaskFunc, info: TaskInfo) -> None:
        try:
            message = await fn(ProgressReporter(self, info))
        except asyncio.CancelledError:
            info.status, info.message = CANCELLED, "The task was cancelled (the manager is shutting down)."
        except ProblemError as e:
            info.status, info.message = FAILED, e.detail or e.title
        except Exception as e:  # noqa: BLE001 - a failed task reports its error instead of crashing
            log.exception("background task %s (%s) failed", info.task_id, info.name)
            info.status, info.message = FAILED, f"{type(e).__name__}: {e}"
        else:
            info.status = DONE
            if message is not None:
                info.message = message
        info.finished_at = time.time()
        try:
            await self._save_and_publish(info, FINAL_EVENTS[info.status])
        except Exception:  # noqa: BLE001 - the store may be unreachable at shutdown
            log.exception("could not record the end of background task %s", info.task_id)

    async def _save_and_publish(self, info: TaskInfo, event: str) -> None:
        await self.store.put(info)
        self.bus.publish(Event(event, info.task_id, info.event_data()))

    async def shutdown(self) -> None:
        """Cancel the running tasks (each ends as ``cancelled``) and close the store."""
        tasks = list(self._running.values())
        for t in tasks:
            t.cancel()
        if tasks:
            await asyncio.gather(*tasks, return_exceptions=True)
        await self.store.close()


def make_bgtask_registry(
    bus: EventBus,
    redis_url: str | None,
    *,
    manager_id: str = "",
    alive: Callable[[], Awaitable[set[str]]] | None = None,
) -> BackgroundTaskRegistry:
    """The registry of a manager: task states in Redis when ``[redis] url`` is set, else in memory;
    ``alive`` tells which managers run (several managers)."""
    store: TaskStore = RedisTaskStore(redis_url) if redis_url else MemoryTaskStore()
    return BackgroundTaskRegistry(bus, store, manager_id=manager_id, alive=alive)
