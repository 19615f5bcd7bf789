"""Live utilisation kept in memory from heartbeats.

Each agent's host (CPU %, per core too, memory in use) and each live kernel's Container Stats Object.
"""

from __future__ import annotations

from numbers import Real
from typing import Any

KEYS = ("cpu_util_pct", "mem_used_bytes", "mem_total_bytes")


class AgentLiveStats:
    """The ``live_stat`` of every agent's latest heartbeat (numbers only; anything else is dropped)."""

    def __init__(self) -> None:
        self._stats: dict[str, dict[str, float]] = {}
        self._cores: dict[str, dict[str, float]] = {}

    def update(self, agent_id: str, reported: Any) -> None:
        if not isinstance(reported, dict):
            return
        self._stats[agent_id] = {k: float(v) for k, v in reported.items() if k in KEYS and _number(v)}
        cores = reported.get("cpu_util_pct_cores")
        self._cores[agent_id] = {
            str(k): float(v)
            for k, v in (cores.items() if isinstance(cores, dict) else ())
            if str(k).isdigit() and _number(v)
        }

    def get(self, agent_id: str) -> dict[str, float]:
        return self._stats.get(agent_id, {})

    def cores(self, agent_id: str) -> dict[str, float]:
        """Per-core CPU utilisation (core index → %) of the agent's latest heartbeat."""
        return self._cores.get(agent_id, {})


def _number(v: Any) -> bool:
    return isinstance(v, Real) and not isinstance(v, bool)


#: The Container Stats Object keys (rest-api.md §2.10); all integers.
CONTAINER_KEYS = (
    "cpu_used",
    "mem_max_bytes",
    "mem_cur_bytes",
    "net_rx_bytes",
    "net_tx_bytes",
    "io_read_bytes",
    "io_write_bytes",
    "io_max_scratch_size",
    "io_cur_scratch_size",
)


class KernelLiveStats:
    """The Container Stats Object of every live kernel, from the latest heartbeat of its agent."""

    def __init__(self) -> None:
        self._by_agent: dict[str, dict[str, dict[str, int]]] = {}
        self._agent_of: dict[str, str] = {}

    def update(self, agent_id: str, reported: Any) -> None:
        """Replace what ``agent_id`` reported before (kernels it no longer reports are dropped)."""
        if not isinstance(reported, dict):
            return
        for kid in self._by_agent.pop(agent_id, {}):
            self._agent_of.pop(kid, None)
        fresh: dict[str, dict[str, int]] = {}
        for kid, stats in reported.items():
            if not isinstance(kid, str) or not isinstance(stats, dict):
                continue
            fresh[kid] = {
                k: int(v)
                for k, v in stats.items()
                if k in CONTAINER_KEYS and isinstance(v, int | float) and not isinstance(v, bool)
            }
            self._agent_of[kid] = agent_id
        self._by_agent[agent_id] = fresh

    def get(self, kernel_id: str) -> dict[str, int] | None:
        agent = self._agent_of.get(kernel_id)
        return None if agent is None else self._by_agent.get(agent, {}).get(kernel_id)
