"""Background tasks the manager starts and keeps a reference to until they end (an unreferenced task may be
collected mid-flight)."""

from __future__ import annotations

import asyncio
from collections.abc import Callable, Coroutine
from typing import Any

# Starts a coroutine in the background.
Spawn = Callable[[Coroutine[Any, Any, Any]], None]


class BackgroundTasks:
    """A set of running tasks; :meth:`spawn` starts one and forgets it when it ends."""

    def __init__(self) -> None:
        self._tasks: set[asyncio.Task[Any]] = set()

    def spawn(self, coro: Coroutine[Any, Any, Any]) -> None:
        """Run ``coro`` in the background, keeping a reference until it ends."""
        task = asyncio.get_running_loop().create_task(coro)
        self._tasks.add(task)
        task.add_done_callback(self._tasks.discard)
