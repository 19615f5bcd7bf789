"""The webserver's Prometheus metrics (``GET /metrics``; plumbing: :mod:`ai.backend.common.metrics`).

* ``backendai_web_logins_total{result}``: password logins (``POST /server/login``) that succeeded (``ok``),
  that the manager refused (``failed``: a wrong password, an inactive account, the manager's own limit) and
  that were refused here for too many failures (``blocked``);
* ``backendai_web_func_requests_total{kind}``: calls proxied to the manager under ``/func/`` (``http`` or
  ``websocket``), counted once the login is checked.

The webserver has no secret of its own: without ``[metrics] secret`` only the addresses of ``allow-from``
may scrape.
"""

from __future__ import annotations

from aiohttp import web
from prometheus_client import Counter

from ai.backend.common.metrics import ComponentMetrics, aiohttp_metrics_middleware

from .config import WebConfig

__all__ = ["METRICS_KEY", "WebMetrics", "install_metrics"]


class WebMetrics(ComponentMetrics):
    """The webserver's registry."""

    def __init__(self, *, process: bool = True) -> None:
        super().__init__(process=process)
        logins = Counter(
            "backendai_web_logins_total",
            "Password logins by result: ok, failed (refused by the manager), blocked (too many failures).",
            ("result",),
            registry=self.registry,
        )
        self.login_ok, self.login_failed, self.login_blocked = (logins.labels(r) for r in ("ok", "failed", "blocked"))
        func = Counter(
            "backendai_web_func_requests_total",
            "Calls proxied to the manager under /func/, by kind (http, websocket).",
            ("kind",),
            registry=self.registry,
        )
        self.func_http, self.func_websocket = func.labels("http"), func.labels("websocket")


METRICS_KEY = web.AppKey("metrics", WebMetrics)


def install_metrics(app: web.Application, config: WebConfig) -> WebMetrics:
    """Count ``app``'s requests (outermost middleware), serve ``GET /metrics`` and keep the metrics in
    ``app[METRICS_KEY]`` for the handlers."""
    metrics = WebMetrics()
    app[METRICS_KEY] = metrics
    app.middlewares.insert(0, aiohttp_metrics_middleware(metrics, config.metrics.access()))
    return metrics
