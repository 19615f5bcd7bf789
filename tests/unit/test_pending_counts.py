"""In-memory usage counters: visible while being written, kept when the write fails."""

from __future__ import annotations

import pytest

from ai.backend.manager.counters import PendingCounts


async def test_counts_stay_pending_until_written_and_survive_a_failed_write() -> None:
    c: PendingCounts[str] = PendingCounts()
    for _ in range(3):
        c.count("a")
    seen_during_write = []

    async def failing(counts: dict[str, int]) -> None:
        c.count("a")  # a call counted while the write is in flight
        seen_during_write.append(c.pending("a"))
        raise RuntimeError("database is down")

    with pytest.raises(RuntimeError):
        await c.flush(failing)
    assert seen_during_write == [4] and c.pending("a") == 4  # nothing lost

    written: list[dict[str, int]] = []

    async def ok(counts: dict[str, int]) -> None:
        written.append(dict(counts))

    await c.flush(ok)
    assert written == [{"a": 4}] and c.pending("a") == 0
    await c.flush(ok)  # nothing to write: no call
    assert len(written) == 1
