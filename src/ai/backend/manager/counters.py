"""Counters kept in memory and added to the database now and then (one write per interval, not per call).

Counts stay visible through :meth:`PendingCounts.pending` until the write that carries them has committed,
so a reader adding them to the stored value never sees a dip; a failed write puts them back.
"""

from __future__ import annotations

from collections import defaultdict
from collections.abc import Awaitable, Callable, Hashable
from typing import Generic, TypeVar

K = TypeVar("K", bound=Hashable)


class PendingCounts(Generic[K]):
    """Increments per key not yet written to the database."""

    def __init__(self) -> None:
        self._counts: dict[K, int] = defaultdict(int)
        self._flushing: dict[K, int] = {}  # being written: still pending for readers until committed

    def count(self, key: K) -> None:
        self._counts[key] += 1

    def pending(self, key: K) -> int:
        return self._counts.get(key, 0) + self._flushing.get(key, 0)

    async def flush(self, write: Callable[[dict[K, int]], Awaitable[None]]) -> None:
        """Hand the counts to ``write`` (which commits them); on failure they are counted again."""
        counts, self._counts = self._counts, defaultdict(int)
        if not counts:
            return
        self._flushing = dict(counts)
        try:
            await write(counts)
        except Exception:
            for key, n in counts.items():
                self._counts[key] += n
            raise
        finally:
            self._flushing = {}
