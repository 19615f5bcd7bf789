"""The webserver's added latency: ``/func/`` calls as a ratio against the same calls made to the manager directly.

A manager-only server (SQLite, no agent) and a webserver in front of it (login sessions in memory) are started;
the fixture user logs in once. At 1 and 50 concurrent clients, p50 and p99 latency of:

* ``GET /auth/test`` (authentication only) and
* ``POST /admin/graphql`` with ``{ keypair { access_key is_active } }``,

each measured **direct** (signed with the user's keypair, to the manager) and **through the webserver**
(``/func/...`` with the login cookie and ``X-BackendAI-Version``; the webserver signs for the manager). The
ratio is webserver / direct at the same concurrency. The webserver's CPU per request is recorded too.

Client: the closed-loop raw HTTP/1.1 client of ``bench_api.py`` (one keep-alive connection per client). The
user's keypair gets an unlimited rate limit first so the thousands of calls are not refused.

Run: ``.venv/bin/python benchmarks/bench_webserver.py [--quick]`` (about 40 s). Results:
``benchmarks/results/webserver.json``.
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import json
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

import httpx
from sqlalchemy import update

sys.path.insert(0, str(Path(__file__).parent))
from bench_api import Connection, _cpu_seconds, _measure  # noqa: E402 - the shared raw client

from ai.backend.common.auth import sign_request_headers  # noqa: E402
from ai.backend.manager.db import create_engine, session_factory  # noqa: E402
from ai.backend.manager.fixtures import USER  # noqa: E402
from ai.backend.manager.models import KeyPairRow  # noqa: E402
from ai.backend.testutils.cluster import Cluster, launch_manager  # noqa: E402
from ai.backend.testutils.web import WebServer, launch_webserver  # noqa: E402

CONCURRENCY = (1, 50)
API_VERSION = "v6.20220615"
GQL = json.dumps({"query": "{ keypair { access_key is_active } }"}).encode()
CALLS = {"auth_test": ("GET", "/auth/test", b""), "graphql": ("POST", "/admin/graphql", GQL)}
DURATION = 4.0
MAX_REQUESTS = 3000


def _raw(host: str, method: str, path: str, headers: dict[str, str], body: bytes) -> bytes:
    lines = [f"{method} {path} HTTP/1.1", f"Host: {host}", "Accept: */*", "User-Agent: bench-webserver"]
    lines += [f"{k}: {v}" for k, v in headers.items() if k.lower() != "host"]
    if body or method == "POST":
        lines.append(f"Content-Length: {len(body)}")
    return ("\r\n".join(lines) + "\r\n\r\n").encode("latin-1") + body


def _direct(m: Cluster, call: str) -> bytes:
    method, path, body = CALLS[call]
    host = m.endpoint.split("//", 1)[1]
    headers = sign_request_headers(
        method=method,
        path_with_query=path,
        host=host,
        content_type="application/json",
        version=API_VERSION,
        access_key=USER["access_key"],
        secret_key=USER["secret_key"],
    )
    return _raw(host, method, path, headers, body)


def _via_web(w: WebServer, cookie: str, call: str) -> bytes:
    method, path, body = CALLS[call]
    headers = {
        "Cookie": f"AIOHTTP_SESSION={cookie}",
        "X-BackendAI-Version": API_VERSION,
        "Content-Type": "application/json",
    }
    return _raw(w.url.split("//", 1)[1], method, "/func" + path, headers, body)


async def _unlimited(db_url: str) -> None:
    engine = create_engine(db_url)
    try:
        async with session_factory(engine)() as db:
            await db.execute(update(KeyPairRow).where(KeyPairRow.access_key == USER["access_key"]).values(rate_limit=0))
            await db.commit()
    finally:
        await engine.dispose()


async def _bench(m: Cluster, w: WebServer, cookie: str, quick: bool) -> dict[str, Any]:
    out: dict[str, Any] = {}
    duration = DURATION / 4 if quick else DURATION
    web_pid, mgr_pid = w.proc.pid, m.procs["manager"].pid
    for c in CONCURRENCY:
        row: dict[str, Any] = {}
        for call in CALLS:
            pair: dict[str, Any] = {}
            for route, endpoint, raw in (
                ("direct", m.endpoint, _direct(m, call)),
                ("webserver", w.url, _via_web(w, cookie, call)),
            ):
                conns = [await Connection.open(endpoint) for _ in range(c)]
                try:
                    await _measure(conns, [raw], max(c, 20))  # warm-up: caches, connection pools
                    web0 = _cpu_seconds(web_pid)
                    r = await _measure(conns, [raw], MAX_REQUESTS, duration, mgr_pid)
                    r["webserver_cpu_ms_per_req"] = (_cpu_seconds(web_pid) - web0) / r["n"] * 1000
                    pair[route] = r
                finally:
                    for conn in conns:
                        await conn.close()
            d, v = pair["direct"], pair["webserver"]
            pair["ratio_p50"] = v["p50_ms"] / d["p50_ms"]
            pair["ratio_p99"] = v["p99_ms"] / d["p99_ms"]
            pair["added_p50_ms"] = v["p50_ms"] - d["p50_ms"]
            row[call] = pair
        out[str(c)] = row
    return out


def main(quick: bool = False) -> dict[str, Any]:
    with contextlib.ExitStack() as stack:
        tmp = Path(stack.enter_context(tempfile.TemporaryDirectory(prefix="bai-bench-web-")))
        m = launch_manager(tmp / "manager", settings={"anonymous-rate-limit": 0})
        stack.callback(m.shutdown)
        asyncio.run(_unlimited(m.db_url))
        w = launch_webserver(tmp / "web", m.endpoint)
        stack.callback(w.shutdown)
        r = httpx.post(
            w.url + "/server/login",
            json={"username": USER["email"], "password": USER["password"]},
            headers={"X-BackendAI-Version": API_VERSION},
        )
        r.raise_for_status()
        cookie = r.cookies["AIOHTTP_SESSION"]
        return {
            "quick": quick,
            "client": "raw keep-alive HTTP/1.1, closed loop (bench_api.Connection)",
            "store": "memory",
            "concurrency": asyncio.run(_bench(m, w, cookie, quick)),
        }


def _print(res: dict[str, Any]) -> None:
    print(
        f"{'clients':>7s} {'call':10s} {'direct p50':>10s} {'p99':>7s} {'web p50':>8s} {'p99':>7s} | "
        f"{'ratio p50':>9s} {'p99':>5s} {'+p50 ms':>7s} {'web cpu ms/req':>14s}"
    )
    for c, row in res["concurrency"].items():
        for call, p in row.items():
            d, v = p["direct"], p["webserver"]
            print(
                f"{c:>7s} {call:10s} {d['p50_ms']:10.2f} {d['p99_ms']:7.2f} {v['p50_ms']:8.2f} {v['p99_ms']:7.2f} | "
                f"{p['ratio_p50']:9.2f} {p['ratio_p99']:5.2f} {p['added_p50_ms']:7.2f} "
                f"{v['webserver_cpu_ms_per_req']:14.2f}"
            )


if __name__ == "__main__":
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0] if __doc__ else None)
    parser.add_argument("--quick", action="store_true", help="a quarter of the time (webserver-quick.json)")
    args = parser.parse_args(sys.argv[1:])
    t0 = time.perf_counter()
    res = main(args.quick)
    res["runtime_s"] = time.perf_counter() - t0
    _print(res)
    out = Path(__file__).parent / "results"
    out.mkdir(exist_ok=True)
    (out / f"webserver{'-quick' if args.quick else ''}.json").write_text(json.dumps(res, indent=2))
