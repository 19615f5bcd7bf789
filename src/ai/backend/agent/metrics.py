"""The agent's Prometheus metrics (``GET /metrics`` on its RPC port; plumbing: :mod:`ai.backend.common.metrics`).

* ``backendai_agent_container_start_seconds{phase}``: the phases of each kernel creation as the backend
  measured them (``image_check``, ``warm_handover`` or ``container_create``, ``container_start``,
  ``runner_ready``, ``dotfiles``, ``bootstrap``; the dummy backend's simulated ``container_start``), and
  ``total``: the whole creation on this agent;
* ``backendai_agent_kernels_running`` and ``backendai_agent_kernels_creating``, read when scraped.

In a fleet (``agent/fleet.py``) every agent has its own registry: ``/a/<agent id>/metrics``.
"""

from __future__ import annotations

from collections.abc import Callable, Mapping

from fastapi import FastAPI
from prometheus_client import Gauge, Histogram

from ai.backend.common.metrics import ComponentMetrics, MetricsMiddleware

from .config import AgentConfig

__all__ = ["AgentMetrics", "install_metrics"]

#: A warm handover takes milliseconds, a fresh container about a second, a pull or a bootstrap script minutes.
PHASE_BUCKETS = (0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0, 30.0, 60.0, 120.0, 300.0, 600.0)


class AgentMetrics(ComponentMetrics):
    """The agent's registry; the kernel gauges read ``kernels()`` and ``creating()`` when scraped."""

    def __init__(self, *, process: bool = True) -> None:
        super().__init__(process=process)
        self.container_start_seconds = Histogram(
            "backendai_agent_container_start_seconds",
            "Kernel creation on this agent, by phase (total: the whole creation).",
            ("phase",),
            buckets=PHASE_BUCKETS,
            registry=self.registry,
        )
        self.kernels_running = Gauge(
            "backendai_agent_kernels_running", "Kernels this agent runs.", registry=self.registry
        )
        self.kernels_creating = Gauge(
            "backendai_agent_kernels_creating", "Kernels being created on this agent.", registry=self.registry
        )

    def watch(self, kernels: Callable[[], int], creating: Callable[[], int]) -> None:
        """Read the kernel gauges from these callables at each scrape."""
        self.kernels_running.set_function(lambda: float(kernels()))
        self.kernels_creating.set_function(lambda: float(creating()))

    def kernel_created(self, phases: Mapping[str, object], total: float) -> None:
        """Record a creation's phase timings (seconds; other entries such as exit codes are skipped)."""
        for phase, seconds in phases.items():
            if isinstance(seconds, float | int) and not isinstance(seconds, bool) and phase in _TIMED:
                self.container_start_seconds.labels(phase).observe(float(seconds))
        self.container_start_seconds.labels("total").observe(total)


# The phase names that are durations (bootstrap_exit_code is not).
_TIMED = frozenset(
    {
        "image_check",
        "warm_handover",
        "container_create",
        "container_start",
        "runner_ready",
        "dotfiles",
        "bootstrap",
    }
)


def install_metrics(app: FastAPI, config: AgentConfig) -> AgentMetrics:
    """The agent's metrics, counting ``app``'s requests and served at ``GET /metrics``. Add it last (outermost),
    after the cluster-secret check, which would refuse a scraper from an allowed address."""
    metrics = AgentMetrics()
    app.add_middleware(
        MetricsMiddleware, metrics=lambda: metrics, access=config.metrics.access(config.agent.cluster_secret)
    )
    return metrics
