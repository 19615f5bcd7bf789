"""Peer-call transport: small JSON round-trips with aiohttp and with httpx (ADR 0002's measured reason).

A local server in a child process (``--server uvicorn``: a bare ASGI app under uvicorn, like the agent's and the
storage proxy's; ``--server aiohttp``: an aiohttp app) answers ``POST /echo`` with a ~100-byte JSON object.
Each client, in this process, with one keep-alive pool as the peer clients use it:

* ``seq``: one request after the other (the latency of one call, and its client CPU);
* ``c64``: 64 tasks at once in a closed loop (the manager calling one agent under load).

Reported per client and mode: requests/s, p50/p99 latency, and the client process's CPU time per request
(what the peer-client base costs the manager or the agent; the server's CPU is the same for both clients).

Run: ``.venv/bin/python benchmarks/bench_peer_transport.py [--requests N] [--server uvicorn|aiohttp]``.
Results: ``benchmarks/results/peer_transport.json``.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import os
import socket
import statistics
import subprocess
import sys
import time
from collections.abc import Awaitable, Callable
from pathlib import Path
from typing import Any

import aiohttp
import httpx

BODY = {"kernel_id": "0f5e6c1e-8d6b-4f55-9b2f-3c1d2e4f5a6b", "mode": "query", "code": "print(1)"}
CONCURRENCY = 64

_SERVER = r"""
import json, sys
port, kind = int(sys.argv[1]), sys.argv[2]
ANSWER = json.dumps({"status": "finished", "console": [["stdout", "1\n"]], "exitCode": 0, "options": None,
                     "files": []}).encode()
if kind == "uvicorn":
    import uvicorn

    async def app(scope, receive, send):
        if scope["type"] != "http":
            return
        more = True
        while more:
            more = (await receive()).get("more_body", False)
        headers = [(b"content-type", b"application/json"), (b"content-length", str(len(ANSWER)).encode())]
        await send({"type": "http.response.start", "status": 200, "headers": headers})
        await send({"type": "http.response.body", "body": ANSWER})

    uvicorn.run(app, host="127.0.0.1", port=port, log_level="warning", access_log=False, timeout_keep_alive=75)
else:
    from aiohttp import web

    async def echo(request):
        await request.read()
        return web.Response(body=ANSWER, content_type="application/json")

    app = web.Application()
    app.router.add_post("/echo", echo)
    web.run_app(app, host="127.0.0.1", port=port, print=None, access_log=None)
"""


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def _wait_port(port: int, timeout: float = 15.0) -> None:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        with socket.socket() as s:
            if s.connect_ex(("127.0.0.1", port)) == 0:
                return
        time.sleep(0.05)
    raise RuntimeError("the server did not start")


Call = Callable[[], Awaitable[Any]]


async def _measure(call: Call, requests: int, concurrency: int) -> dict[str, float]:
    for _ in range(50):  # warm the pool
        await call()
    latencies: list[float] = []
    per_task = requests // concurrency

    async def worker() -> None:
        for _ in range(per_task):
            t = time.perf_counter()
            await call()
            latencies.append(time.perf_counter() - t)

    cpu0, t0 = time.process_time(), time.perf_counter()
    await asyncio.gather(*(worker() for _ in range(concurrency)))
    wall, cpu = time.perf_counter() - t0, time.process_time() - cpu0
    n = len(latencies)
    latencies.sort()
    return {
        "per_s": round(n / wall, 1),
        "p50_ms": round(statistics.median(latencies) * 1000, 3),
        "p99_ms": round(latencies[int(n * 0.99) - 1] * 1000, 3),
        "cpu_us_per_req": round(cpu / n * 1e6, 1),
    }


async def _aiohttp(url: str, requests: int, concurrency: int) -> dict[str, float]:
    # As common/peer.py uses it: one session, a per-host connection limit, the JSON encoded by hand.
    connector = aiohttp.TCPConnector(limit=0, limit_per_host=CONCURRENCY, keepalive_timeout=30)
    data = json.dumps(BODY).encode()
    async with aiohttp.ClientSession(connector=connector) as session:

        async def call() -> Any:
            async with session.post(url, data=data, headers={"Content-Type": "application/json"}) as r:
                return json.loads(await r.read())

        return await _measure(call, requests, concurrency)


async def _httpx(url: str, requests: int, concurrency: int) -> dict[str, float]:
    limits = httpx.Limits(max_connections=CONCURRENCY, max_keepalive_connections=CONCURRENCY)
    async with httpx.AsyncClient(limits=limits, timeout=30.0) as client:

        async def call() -> Any:
            r = await client.post(url, json=BODY)
            return r.json()

        return await _measure(call, requests, concurrency)


async def _run(url: str, requests: int) -> dict[str, dict[str, dict[str, float]]]:
    out: dict[str, dict[str, dict[str, float]]] = {}
    for name, fn in (("aiohttp", _aiohttp), ("httpx", _httpx)):
        out[name] = {"seq": await fn(url, requests // 4, 1), "c64": await fn(url, requests, CONCURRENCY)}
    return out


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument(
        "--requests", type=int, default=6400, help="requests per concurrent measurement (a quarter of it sequentially)"
    )
    parser.add_argument("--server", choices=("uvicorn", "aiohttp"), default="uvicorn")
    args = parser.parse_args()
    logging_off = {"PYTHONWARNINGS": "ignore"}
    port = _free_port()
    server = subprocess.Popen(
        [sys.executable, "-c", _SERVER, str(port), args.server], env={**os.environ, **logging_off}
    )
    try:
        _wait_port(port)
        results = asyncio.run(_run(f"http://127.0.0.1:{port}/echo", args.requests))
    finally:
        server.terminate()
        server.wait(10)
    print(f"server: {args.server}, {os.cpu_count()} CPUs")
    print(f"{'client':8} {'mode':5} {'per s':>8} {'p50 ms':>8} {'p99 ms':>8} {'client CPU us/req':>18}")
    for client, modes in results.items():
        for mode, r in modes.items():
            print(
                f"{client:8} {mode:5} {r['per_s']:8.0f} {r['p50_ms']:8.3f} {r['p99_ms']:8.3f} "
                f"{r['cpu_us_per_req']:18.1f}"
            )
    out = Path(__file__).parent / "results" / "peer_transport.json"
    out.parent.mkdir(exist_ok=True)
    out.write_text(json.dumps({"server": args.server, "requests": args.requests, "results": results}, indent=2) + "\n")


if __name__ == "__main__":
    main()
