"""The app proxy's Prometheus metrics (``GET /metrics`` on its API port; plumbing:
:mod:`ai.backend.common.metrics`). A scrape may carry the proxy's secret (``[appproxy] secret``, shared with
the manager) in ``X-BackendAI-Cluster-Secret`` instead of coming from an address of ``[metrics] allow-from``.

* ``backendai_appproxy_circuits_open``: circuits open now (read when scraped);
* ``backendai_appproxy_relayed_bytes_total{direction}``: bytes relayed through the circuits, ``up`` (browser to
  app: request bodies and WebSocket messages) and ``down`` (app to browser). HTTP bodies are counted as they
  stream; WebSocket messages by their payload.
"""

from __future__ import annotations

from collections.abc import Callable

from aiohttp import web
from prometheus_client import Counter, Gauge

from ai.backend.common.metrics import ComponentMetrics, aiohttp_metrics_middleware

from .config import AppProxyConfig

__all__ = ["AppProxyMetrics", "install_metrics"]


class AppProxyMetrics(ComponentMetrics):
    """The app proxy's registry."""

    def __init__(self, *, process: bool = True) -> None:
        super().__init__(process=process)
        self.circuits_open = Gauge(
            "backendai_appproxy_circuits_open",
            "Circuits open (one per user, session, app and port).",
            registry=self.registry,
        )
        relayed = Counter(
            "backendai_appproxy_relayed_bytes_total",
            "Bytes relayed through the circuits: up (browser to app) and down (app to browser).",
            ("direction",),
            registry=self.registry,
        )
        self.bytes_up, self.bytes_down = relayed.labels("up"), relayed.labels("down")

    def watch(self, circuits: Callable[[], int]) -> None:
        """Read the open circuits from ``circuits`` at each scrape."""
        self.circuits_open.set_function(lambda: float(circuits()))


def install_metrics(app: web.Application, config: AppProxyConfig) -> AppProxyMetrics:
    """Count ``app``'s requests (outermost middleware) and serve ``GET /metrics`` on the API port."""
    metrics = AppProxyMetrics()
    app.middlewares.insert(0, aiohttp_metrics_middleware(metrics, config.metrics.access(config.appproxy.secret)))
    return metrics
