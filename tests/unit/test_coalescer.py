"""The :class:`~ai.backend.manager.batching.Coalescer`: submissions made while a flush runs go out together."""

from __future__ import annotations

import asyncio
import random

import pytest

from ai.backend.manager.batching import Coalescer


class Recorder:
    """A flush that records its batches, checks that it never overlaps itself, and answers ``item * 10``."""

    def __init__(self, delay: float = 0.0) -> None:
        self.batches: list[list[int]] = []
        self.active = 0
        self.max_active = 0
        self.delay = delay

    async def __call__(self, items: list[int]) -> list[int]:
        self.batches.append(list(items))
        self.active += 1
        self.max_active = max(self.max_active, self.active)
        try:
            await asyncio.sleep(self.delay)
        finally:
            self.active -= 1
        return [i * 10 for i in items]


async def test_a_burst_goes_out_in_few_batches_with_each_result_to_its_submitter() -> None:
    flush = Recorder(delay=0.01)
    c: Coalescer[int, int] = Coalescer(flush, max_batch=30)

    async def submit_later(i: int) -> int:
        await asyncio.sleep(random.random() * 0.05)  # spread over ~5 flush durations
        return await c.submit(i)

    results = await asyncio.wait_for(asyncio.gather(*(submit_later(i) for i in range(100))), 3)
    assert results == [i * 10 for i in range(100)]
    sizes = [len(b) for b in flush.batches]
    assert sum(sizes) == 100 and sorted(i for b in flush.batches for i in b) == list(range(100))
    assert max(sizes) <= 30
    assert len(flush.batches) <= 20, sizes  # far fewer flushes than items
    assert flush.max_active == 1


async def test_simultaneous_submits_are_split_by_max_batch_in_order() -> None:
    flush = Recorder()
    c: Coalescer[int, int] = Coalescer(flush, max_batch=30)
    results = await asyncio.wait_for(asyncio.gather(*(c.submit(i) for i in range(100))), 3)
    assert results == [i * 10 for i in range(100)]
    assert flush.batches == [list(range(0, 30)), list(range(30, 60)), list(range(60, 90)), list(range(90, 100))]


async def test_items_submitted_during_a_flush_go_out_together_in_the_next() -> None:
    gate = asyncio.Event()
    batches: list[list[str]] = []

    async def flush(items: list[str]) -> list[str]:
        batches.append(items)
        if len(batches) == 1:
            await gate.wait()
        return [s.upper() for s in items]

    c: Coalescer[str, str] = Coalescer(flush)
    first = asyncio.create_task(c.submit("a"))
    await asyncio.sleep(0.01)
    assert batches == [["a"]]  # the lone item went out without waiting for company
    later = [asyncio.create_task(c.submit(s)) for s in "bcd"]
    await asyncio.sleep(0.01)
    assert batches == [["a"]] and not any(t.done() for t in later)  # one flush at a time
    gate.set()
    assert await asyncio.wait_for(first, 2) == "A"
    assert await asyncio.wait_for(asyncio.gather(*later), 2) == ["B", "C", "D"]
    assert batches == [["a"], ["b", "c", "d"]]


async def test_a_lone_submit_is_flushed_promptly() -> None:
    flush = Recorder()
    c: Coalescer[int, int] = Coalescer(flush)
    task = asyncio.create_task(c.submit(7))
    for _ in range(3):  # no timer: the flush starts within a few turns of the event loop
        await asyncio.sleep(0)
    assert flush.batches == [[7]]
    assert await asyncio.wait_for(task, 1) == 70
    # And again after the drainer has finished.
    assert await asyncio.wait_for(c.submit(8), 1) == 80
    assert flush.batches == [[7], [8]]


async def test_a_failed_flush_reaches_every_submitter_of_its_batch_and_later_batches_still_run() -> None:
    release = asyncio.Event()
    batches: list[list[int]] = []

    async def flush(items: list[int]) -> list[int]:
        batches.append(items)
        if len(batches) == 1:
            await release.wait()
        if -1 in items:
            await asyncio.sleep(0.02)
            raise ValueError("bad batch")
        return [i * 10 for i in items]

    c: Coalescer[int, int] = Coalescer(flush)
    first = asyncio.create_task(c.submit(1))
    await asyncio.sleep(0.01)
    doomed = [asyncio.create_task(c.submit(i)) for i in (2, -1, 3)]
    await asyncio.sleep(0.01)
    release.set()
    assert await asyncio.wait_for(first, 2) == 10
    await asyncio.sleep(0.005)  # the failing flush is running now
    after = asyncio.create_task(c.submit(4))
    errors = await asyncio.wait_for(asyncio.gather(*doomed, return_exceptions=True), 2)
    assert all(isinstance(e, ValueError) and str(e) == "bad batch" for e in errors), errors
    assert await asyncio.wait_for(after, 1) == 40
    assert batches == [[1], [2, -1, 3], [4]]


async def test_a_flush_with_the_wrong_number_of_results_fails_its_batch_only() -> None:
    calls = 0

    async def flush(items: list[int]) -> list[int]:
        nonlocal calls
        calls += 1
        return [0] * (len(items) - 1) if calls == 1 else [i for i in items]

    c: Coalescer[int, int] = Coalescer(flush)
    results = await asyncio.wait_for(asyncio.gather(c.submit(1), c.submit(2), return_exceptions=True), 2)
    assert all(isinstance(r, RuntimeError) and "2 items gave 1 results" in str(r) for r in results), results
    assert await asyncio.wait_for(c.submit(3), 2) == 3

    async def too_many(items: list[int]) -> list[int]:
        return [*items, 99]

    c2: Coalescer[int, int] = Coalescer(too_many)
    with pytest.raises(RuntimeError):
        await asyncio.wait_for(c2.submit(5), 2)


async def test_a_cancelled_submitter_does_not_disturb_its_batch() -> None:
    """Cancelling a submitter cancels only its wait: its item was handed over and is still flushed (as
    coded: the flush may already have it), and the other submitters get their results."""
    release = asyncio.Event()
    flush_items: list[list[int]] = []

    async def flush(items: list[int]) -> list[int]:
        flush_items.append(items)
        await release.wait()
        return [i * 10 for i in items]

    c: Coalescer[int, int] = Coalescer(flush)
    in_flight = [asyncio.create_task(c.submit(i)) for i in (1, 2)]
    await asyncio.sleep(0.01)
    queued = [asyncio.create_task(c.submit(i)) for i in (3, 4)]
    await asyncio.sleep(0.01)
    in_flight[0].cancel()
    queued[0].cancel()
    release.set()
    with pytest.raises(asyncio.CancelledError):
        await in_flight[0]
    with pytest.raises(asyncio.CancelledError):
        await queued[0]
    assert await asyncio.wait_for(in_flight[1], 2) == 20 and await asyncio.wait_for(queued[1], 2) == 40
    assert flush_items == [[1, 2], [3, 4]]


async def test_a_cancelled_flush_cancels_its_batch_and_the_queue_and_the_next_submit_starts_afresh() -> None:
    started = asyncio.Event()
    batches: list[list[int]] = []

    async def flush(items: list[int]) -> list[int]:
        batches.append(items)
        if len(batches) == 1:
            started.set()
            await asyncio.sleep(10)
        return [i * 10 for i in items]

    c: Coalescer[int, int] = Coalescer(flush)
    first = asyncio.create_task(c.submit(1))
    await asyncio.wait_for(started.wait(), 1)
    queued = asyncio.create_task(c.submit(2))
    await asyncio.sleep(0)
    drainer = c._drainer
    assert drainer is not None
    drainer.cancel()  # what the loop's shutdown does to a running flush
    for t in (first, queued):
        with pytest.raises(asyncio.CancelledError):
            await asyncio.wait_for(t, 1)
    assert await asyncio.wait_for(c.submit(3), 1) == 30
    assert batches == [[1], [3]]
