"""Session activity shared between managers (ADR 0014): what one manager saw reaches the leader's idle checks
through the store, without I/O on the execute path (a fake store here; Redis in production)."""

from __future__ import annotations

import time
import uuid

import pytest

from ai.backend.manager.sessions.limits import ActivityTracker


class FakeStore:
    """The sorted set of ``RedisActivityStore``: a score only grows."""

    def __init__(self) -> None:
        self.scores: dict[str, float] = {}
        self.pushes = 0
        self.fail = False

    async def push(self, seen: dict[str, float]) -> None:
        if self.fail:
            raise ConnectionError("redis is down")
        self.pushes += 1
        for sid, at in seen.items():
            self.scores[sid] = max(at, self.scores.get(sid, 0.0))

    async def last(self, session_ids: list[str]) -> dict[str, float]:
        return {s: self.scores[s] for s in session_ids if s in self.scores}

    async def close(self) -> None:
        pass


async def test_use_seen_on_one_manager_keeps_a_session_alive_on_the_leader() -> None:
    store = FakeStore()
    follower, leader = ActivityTracker(store), ActivityTracker(store)
    leader.started -= 1000  # the leader has watched for long
    sid = uuid.uuid4()
    assert leader.idle_seconds(sid, running_for=1000) == pytest.approx(1000, abs=1)
    follower.touch(sid)  # an execute on the follower: memory only
    assert store.pushes == 0
    await follower.flush()
    assert abs(store.scores[str(sid)] - time.time()) < 1
    await follower.flush()  # nothing new: no write
    assert store.pushes == 1
    await leader.refresh([sid])
    assert leader.idle_seconds(sid, running_for=1000) < 1


async def test_a_failed_flush_is_sent_again_and_no_store_means_memory_only() -> None:
    store = FakeStore()
    tracker = ActivityTracker(store)
    sid = uuid.uuid4()
    tracker.touch(sid)
    store.fail = True
    with pytest.raises(ConnectionError):
        await tracker.flush()
    store.fail = False
    await tracker.flush()
    assert str(sid) in store.scores
    alone = ActivityTracker()
    alone.touch(sid)
    await alone.flush()  # without a store: nothing to do
    await alone.refresh([sid])
    assert alone.idle_seconds(sid, running_for=10) < 1
