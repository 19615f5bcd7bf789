"""CPU cost of the request metrics (``ai.backend.common.metrics``) per request, in process.

* ``asgi``: a FastAPI app with the manager's execute route shape (``POST /session/{ref}`` answering a
  ``JSONResponse``) driven by direct ASGI calls, without and with :class:`MetricsMiddleware`: the difference is
  what the middleware adds to every manager/agent/storage-proxy request (routing and the endpoint included in
  both, no network);
* ``aiohttp``: :func:`aiohttp_metrics_middleware` called with a mocked request around a trivial handler;
* ``observe``: :meth:`ComponentMetrics.observe_request` alone (counter + histogram of a cached label set).

Rounds alternate between the variants and the median round is reported, so a busy machine (the 2 shared
cores) affects both alike. Run: ``.venv/bin/python benchmarks/bench_metrics_overhead.py [--requests N]``.
Results: ``benchmarks/results/metrics_overhead.json``.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import statistics
import time
from pathlib import Path
from typing import Any

from aiohttp import web
from aiohttp.test_utils import make_mocked_request
from fastapi import FastAPI, Request
from fastapi.responses import JSONResponse

from ai.backend.common.metrics import ComponentMetrics, MetricsAccess, MetricsMiddleware, aiohttp_metrics_middleware

ROUNDS = 7


def _fastapi_app(with_metrics: bool) -> tuple[Any, ComponentMetrics]:
    app = FastAPI()
    metrics = ComponentMetrics(process=False)

    @app.post("/session/{ref}")
    async def execute(ref: str, request: Request) -> JSONResponse:
        return JSONResponse({"result": {"status": "finished", "console": [["stdout", "1\n"]]}})

    if with_metrics:
        app.add_middleware(MetricsMiddleware, metrics=lambda: metrics, access=MetricsAccess(["127.0.0.0/8"]))
    return app, metrics


async def _drive_asgi(app: Any, n: int) -> float:
    """CPU seconds for ``n`` requests through ``app`` (direct ASGI calls)."""
    body = {"type": "http.request", "body": b'{"mode": "query", "code": "print(1)"}', "more_body": False}

    async def receive() -> dict[str, Any]:
        return body

    async def send(message: dict[str, Any]) -> None:
        pass

    started = time.process_time()
    for i in range(n):
        scope = {
            "type": "http",
            "asgi": {"version": "3.0"},
            "http_version": "1.1",
            "method": "POST",
            "scheme": "http",
            "path": f"/session/s{i % 10}",
            "raw_path": f"/session/s{i % 10}".encode(),
            "query_string": b"",
            "root_path": "",
            "headers": [(b"content-type", b"application/json")],
            "client": ("127.0.0.1", 40000),
            "server": ("127.0.0.1", 8081),
        }
        await app(scope, receive, send)
    return time.process_time() - started


async def _drive_aiohttp(with_metrics: bool, n: int) -> float:
    metrics = ComponentMetrics(process=False)
    mw = aiohttp_metrics_middleware(metrics, MetricsAccess(["127.0.0.0/8"]))
    app = web.Application()

    async def handler(request: web.Request) -> web.Response:
        return web.Response(text="ok")

    app.router.add_post("/func/{tail:.*}", handler)
    request = make_mocked_request("POST", "/func/session/s1", app=app)
    match = await app.router.resolve(request)
    request._match_info = match  # what aiohttp sets before the middlewares run
    started = time.process_time()
    if with_metrics:
        for _ in range(n):
            await mw(request, handler)
    else:
        for _ in range(n):
            await handler(request)
    return time.process_time() - started


def _observe(n: int) -> float:
    metrics = ComponentMetrics(process=False)
    started = time.process_time()
    for _ in range(n):
        metrics.observe_request("POST", "/session/{ref}", 200, 0.0012)
    return time.process_time() - started


async def main(n: int) -> dict[str, Any]:
    plain, _ = _fastapi_app(False)
    counted, metrics = _fastapi_app(True)
    await _drive_asgi(plain, 500)  # warm up (imports, route compilation, label children)
    await _drive_asgi(counted, 500)
    rounds: dict[str, list[float]] = {k: [] for k in ("asgi_plain", "asgi_metrics", "aio_plain", "aio_metrics", "obs")}
    for _ in range(ROUNDS):
        rounds["asgi_plain"].append(await _drive_asgi(plain, n) / n)
        rounds["asgi_metrics"].append(await _drive_asgi(counted, n) / n)
        rounds["aio_plain"].append(await _drive_aiohttp(False, n) / n)
        rounds["aio_metrics"].append(await _drive_aiohttp(True, n) / n)
        rounds["obs"].append(_observe(n) / n)
    us = {k: statistics.median(v) * 1e6 for k, v in rounds.items()}
    counted_requests = metrics.registry.get_sample_value(
        "backendai_http_requests_total", {"method": "POST", "route": "/session/{ref}", "status": "200"}
    )
    assert counted_requests == 500 + ROUNDS * n, counted_requests
    return {
        "requests_per_round": n,
        "rounds": ROUNDS,
        "asgi_us_per_request": {"without": round(us["asgi_plain"], 2), "with": round(us["asgi_metrics"], 2)},
        "asgi_overhead_us": round(us["asgi_metrics"] - us["asgi_plain"], 2),
        "aiohttp_overhead_us": round(us["aio_metrics"] - us["aio_plain"], 2),
        "observe_request_us": round(us["obs"], 2),
    }


if __name__ == "__main__":
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--requests", type=int, default=5000)
    args = parser.parse_args()
    result = asyncio.run(main(args.requests))
    print(json.dumps(result, indent=2))
    out = Path(__file__).parent / "results" / "metrics_overhead.json"
    out.parent.mkdir(exist_ok=True)
    out.write_text(json.dumps(result, indent=2) + "\n")
