"""Coalescing of many small writes into few transactions.

A burst of session starts used to cost three transactions per session; on SQLite, whose writers take
turns, the turns themselves became the limit. A :class:`Coalescer` gathers the items submitted while its
previous flush runs and hands them to the next flush together, so a burst costs a few transactions in
all and a lone item still goes out at once.
"""

from __future__ import annotations

import asyncio
from collections.abc import Awaitable, Callable, Sequence
from typing import Generic, TypeVar

T = TypeVar("T")
R = TypeVar("R")


class Coalescer(Generic[T, R]):
    """``await submit(item)`` returns what ``flush`` gave for that item; ``flush`` takes a list of at most
    ``max_batch`` items and returns one result per item, in order. Only one flush runs at a time. When a
    flush raises, every item of that batch gets the exception."""

    def __init__(self, flush: Callable[[list[T]], Awaitable[Sequence[R]]], max_batch: int = 500) -> None:
        if max_batch < 1:
            raise ValueError("max_batch must be at least 1")
        self._flush = flush
        self._max_batch = max_batch
        self._queue: list[tuple[T, asyncio.Future[R]]] = []
        self._drainer: asyncio.Task[None] | None = None

    async def submit(self, item: T) -> R:
        fut: asyncio.Future[R] = asyncio.get_running_loop().create_future()
        self._queue.append((item, fut))
        if self._drainer is None or self._drainer.done():
            self._drainer = asyncio.get_running_loop().create_task(self._drain())
        return await fut

    async def _drain(self) -> None:
        while self._queue:
            batch, self._queue = self._queue[: self._max_batch], self._queue[self._max_batch :]
            try:
                results = await self._flush([item for item, _ in batch])
                if len(results) != len(batch):
                    raise RuntimeError(f"a flush of {len(batch)} items gave {len(results)} results")
            except BaseException as e:  # noqa: BLE001 - handed to every waiter of the batch
                for _, fut in batch:
                    if not fut.done():
                        if isinstance(e, asyncio.CancelledError):
                            fut.cancel()
                        else:
                            fut.set_exception(e)
                if isinstance(e, asyncio.CancelledError):
                    for _, fut in self._queue:
                        fut.cancel()
                    self._queue = []
                    raise
                continue
            for (_, fut), result in zip(batch, results, strict=True):
                if not fut.done():
                    fut.set_result(result)
