"""Each agent's latest host utilisation (CPU %, memory in use), kept in memory from heartbeats."""

from __future__ import annotations

from numbers import Real
from typing import Any

KEYS = ("cpu_util_pct", "mem_used_bytes", "mem_total_bytes")


class AgentLiveStats:
    """The ``live_stat`` of every agent's latest heartbeat (numbers only; anything else is dropped)."""

    def __init__(self) -> None:
        self._stats: dict[str, dict[str, float]] = {}

    def update(self, agent_id: str, reported: Any) -> None:
        if not isinstance(reported, dict):
            return
        self._stats[agent_id] = {
            k: float(v) for k, v in reported.items() if k in KEYS and isinstance(v, Real) and not isinstance(v, bool)
        }

    def get(self, agent_id: str) -> dict[str, float]:
        return self._stats.get(agent_id, {})


def live_stats(state: Any) -> AgentLiveStats:
    """The app's :class:`AgentLiveStats`, created on first use."""
    store: AgentLiveStats | None = getattr(state, "agent_live_stats", None)
    if store is None:
        store = state.agent_live_stats = AgentLiveStats()
    return store
