"""The manager's Prometheus metrics (``GET /metrics``; the shared plumbing is :mod:`ai.backend.common.metrics`).

Observed where things happen, in memory only (no database work on any request path):

* ``backendai_manager_scheduler_pass_seconds``: one scheduling pass (``scheduler/dispatcher.py``);
* ``backendai_manager_execute_seconds{mode}``: an execute's round trip to the agent and its runner
  (``api/session.py``);
* ``backendai_manager_rate_limit_refusals_total{scope}``: calls the rate limiter refused, per ``ip``
  (anonymous calls), ``keypair`` or ``login`` (password attempts per account) (``ratelimit.py``).

Read from the database when scraped, at most once a second however often it is scraped (one grouped query on
the sessions, one on the agents):

* ``backendai_manager_sessions{status}``: sessions per status, for the statuses of a live session (ended ones
  pile up for ever: counting them would make every scrape slower);
* ``backendai_manager_pending_sessions`` and ``backendai_manager_pending_oldest_wait_seconds``;
* ``backendai_manager_agents{status}``, and over the alive agents, per scaling group and slot type,
  ``backendai_manager_agent_capacity{scaling_group,slot}`` and ``backendai_manager_agent_occupied{...}``.
"""

from __future__ import annotations

import math
from collections import defaultdict
from collections.abc import Callable, Iterator

from fastapi import FastAPI
from prometheus_client import Counter, Histogram
from prometheus_client.core import GaugeMetricFamily, Metric
from prometheus_client.registry import Collector
from sqlalchemy import func, select
from sqlalchemy.ext.asyncio import AsyncSession, async_sessionmaker

from ai.backend.common.metrics import CachedRefresh, ComponentMetrics, MetricsMiddleware

from .agents.status import AgentStatus
from .config import ManagerConfig
from .models import AgentRow, SessionRow
from .models.base import utcnow
from .sessions.status import ACTIVE, SessionStatus

__all__ = ["ManagerMetrics", "install_metrics"]

#: A pass takes milliseconds with an empty queue and about a second with ten thousand sessions waiting.
PASS_BUCKETS = (0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0)
EXECUTE_BUCKETS = (0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0, 30.0, 60.0, 300.0)
_LIVE_STATUSES = sorted(ACTIVE)


class _Snapshot(Collector):
    """Metric families computed by the last refresh, handed out as they are at each collection."""

    def __init__(self) -> None:
        self.families: list[Metric] = []

    def collect(self) -> Iterator[Metric]:
        return iter(self.families)

    def describe(self) -> list[Metric]:
        return []  # nothing to check at registration; the names are fixed in _read_database


class ManagerMetrics(ComponentMetrics):
    """The manager's registry; ``db`` is read when scraped (see the module docstring)."""

    def __init__(self, db: async_sessionmaker[AsyncSession], *, ttl: float = 1.0) -> None:
        super().__init__()
        self.db = db
        self.scheduler_pass_seconds = Histogram(
            "backendai_manager_scheduler_pass_seconds",
            "Duration of one scheduling pass (snapshot, plan, writes).",
            buckets=PASS_BUCKETS,
            registry=self.registry,
        )
        self.execute_seconds = Histogram(
            "backendai_manager_execute_seconds",
            "Round trip of an execute call to the session's agent and runner, by mode.",
            ("mode",),
            buckets=EXECUTE_BUCKETS,
            registry=self.registry,
        )
        self.rate_limit_refusals = Counter(
            "backendai_manager_rate_limit_refusals_total",
            "Calls refused with 429 by the rate limiter: per client address (ip), keypair or login account.",
            ("scope",),
            registry=self.registry,
        )
        self._snapshot = _Snapshot()
        self.registry.register(self._snapshot)
        self.before_scrape(CachedRefresh(self._read_database, ttl))

    def rate_limited(self, scope: str) -> None:
        """A call was refused by the rate limiter (``scope``: ``ip``, ``keypair`` or ``login``)."""
        self.rate_limit_refusals.labels(scope).inc()

    async def _read_database(self) -> None:
        now = utcnow()
        async with self.db() as db:
            sessions = (
                await db.execute(
                    select(SessionRow.status, func.count(), func.min(SessionRow.created_at))
                    .where(SessionRow.status.in_(_LIVE_STATUSES))
                    .group_by(SessionRow.status)
                )
            ).all()
            agents = (
                await db.execute(
                    select(AgentRow.status, AgentRow.scaling_group, AgentRow.available_slots, AgentRow.occupied_slots)
                )
            ).all()
        by_status = GaugeMetricFamily(
            "backendai_manager_sessions", "Sessions per status (the statuses of live sessions).", labels=["status"]
        )
        counts = {str(status): (int(n), oldest) for status, n, oldest in sessions}
        for status in _LIVE_STATUSES:
            by_status.add_metric([str(status)], counts.get(str(status), (0, None))[0])
        pending, oldest = counts.get(SessionStatus.PENDING, (0, None))
        families: list[Metric] = [
            by_status,
            GaugeMetricFamily("backendai_manager_pending_sessions", "Sessions waiting to be scheduled.", pending),
            GaugeMetricFamily(
                "backendai_manager_pending_oldest_wait_seconds",
                "How long the oldest waiting session has waited (0 when none waits).",
                max(0.0, (now - oldest).total_seconds()) if oldest is not None else 0.0,
            ),
        ]
        agent_counts: dict[str, int] = {str(s): 0 for s in AgentStatus}
        capacity: dict[tuple[str, str], float] = defaultdict(float)
        occupied: dict[tuple[str, str], float] = defaultdict(float)
        for agent_status, group, available, used in agents:
            agent_counts[str(agent_status)] = agent_counts.get(str(agent_status), 0) + 1
            if agent_status != AgentStatus.ALIVE:
                continue
            for slot, value in (available or {}).items():
                capacity[(group, slot)] += _number(value)
                occupied[(group, slot)] += 0.0  # a slot nobody uses is reported as 0, not left out
            for slot, value in (used or {}).items():
                occupied[(group, slot)] += _number(value)
        by_agent_status = GaugeMetricFamily("backendai_manager_agents", "Agents per status.", labels=["status"])
        for agent_status, n in sorted(agent_counts.items()):
            by_agent_status.add_metric([agent_status], n)
        cap = GaugeMetricFamily(
            "backendai_manager_agent_capacity",
            "Slots the alive agents offer, per scaling group and slot type (mem in bytes).",
            labels=["scaling_group", "slot"],
        )
        occ = GaugeMetricFamily(
            "backendai_manager_agent_occupied",
            "Slots held by sessions on the alive agents, per scaling group and slot type (mem in bytes).",
            labels=["scaling_group", "slot"],
        )
        for key in sorted(capacity):
            cap.add_metric(list(key), capacity[key])
        for key in sorted(occupied):
            occ.add_metric(list(key), occupied[key])
        families += [by_agent_status, cap, occ]
        self._snapshot.families = families


def _number(value: object) -> float:
    """A slot amount as stored (a string of an unscaled number, or a number); 0 for what is not finite."""
    try:
        f = float(value)  # type: ignore[arg-type]
    except (TypeError, ValueError):
        return 0.0
    return f if math.isfinite(f) else 0.0


def install_metrics(app: FastAPI, config: ManagerConfig) -> None:
    """Count the requests of ``app`` and serve ``GET /metrics``; the metrics themselves are the context's
    (built at start-up with the database). Add it after the rate limiter and before the URL compatibility
    middleware: it then sees the rewritten path's route and the rate limiter's refusals."""

    def current() -> ComponentMetrics | None:
        ctx = getattr(app.state, "ctx", None)
        return None if ctx is None else ctx.metrics

    getter: Callable[[], ComponentMetrics | None] = current
    app.add_middleware(MetricsMiddleware, metrics=getter, access=config.metrics.access(config.manager.cluster_secret))
