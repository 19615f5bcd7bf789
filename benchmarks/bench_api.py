"""API overhead of the manager: signed calls as a ratio against the unauthenticated ``GET /``.

For each database (SQLite and PostgreSQL) a manager-only server (no agent, no Docker) is started on a
fresh database; a few sessions are inserted directly through the manager's models. Then, at 1, 50 and
200 concurrent clients, p50 and p99 latency of:

* ``GET /`` (the version document, no authentication): the baseline;
* signed ``GET /session/<id>`` of a session of the caller (authentication, rate-limit counting,
  session + kernel lookup);
* signed ``POST /admin/graphql`` with ``{ keypair { access_key is_active } }``.

Each is reported as a ratio against the baseline at the same concurrency on the same database.

Client: one asyncio process, one keep-alive HTTP/1.1 connection per client over plain asyncio streams
(``Connection`` below); closed loop, every client sends its next request when the previous one is
answered, for ``DURATION`` seconds or ``MAX_REQUESTS`` requests. httpx was tried first: with 50+
connections in one pool its own CPU use saturated a core at under 100 requests/s, so it measured the
client. Requests are signed once per measurement (the signature covers method, path, date and host,
not the body, and a date stays valid for 15 minutes), so the client spends no time signing. Both
sides' CPU use is recorded: ``client_cpu`` (CPU seconds per wall second; near 1.0 would mean the
client limited the throughput, the machine has 2 cores shared by both) and ``server_cpu_ms_per_req``
(the manager process's CPU time per request, from ``/proc``; the least noisy overhead figure).

Rate limits: every (endpoint, concurrency) pair uses a keypair of its own with the default limit of
10 000 calls per 15 minutes and sends fewer than 10 000 calls; anonymous calls are unlimited on this
server (``anonymous-rate-limit = 0``; the limiter still counts them). Any non-200 answer aborts.

Rate-limit counters live in the manager's memory; ``--redis`` puts them in the test Redis instead.

Run: ``.venv/bin/python benchmarks/bench_api.py [--quick] [--redis]`` (about 90 s; needs the test
PostgreSQL and Redis: ``scripts/setup.sh --test``). Results: ``benchmarks/results/api.json``.
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import json
import os
import statistics
import sys
import tempfile
import time
import uuid
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from sqlalchemy import select

from ai.backend.common.auth import sign_request_headers
from ai.backend.manager.accounts import add_keypair
from ai.backend.manager.db import create_engine, session_factory
from ai.backend.manager.fixtures import DEFAULT_GROUP_ID, USER
from ai.backend.manager.models import KernelRow, SessionRow, UserRow
from ai.backend.manager.models.base import utcnow
from ai.backend.testutils.cluster import Cluster, launch_manager
from ai.backend.testutils.databases import DB_KINDS, fresh_database, fresh_redis

CONCURRENCY = (1, 50, 200)
ENDPOINTS = ("version", "session_info", "graphql")
API_VERSION = "v6.20220615"
GQL_QUERY = {"query": "{ keypair { access_key is_active } }"}
RATE_LIMIT = 10000
SESSIONS_PER_KEY = 5
DURATION = 4.0  # seconds per measurement (the benchmark takes about two minutes)
MAX_REQUESTS = 3000  # per measurement, also bounded by DURATION
CLIENT = "one asyncio process, one keep-alive HTTP/1.1 connection per client (raw streams)"


@dataclass
class Caller:
    access_key: str
    secret_key: str
    session_ids: list[str]


async def _seed(db_url: str, n_keypairs: int) -> list[Caller]:
    """Keypairs of the fixture user, each owning a few RUNNING sessions with their main kernel."""
    engine = create_engine(db_url)
    callers = []
    try:
        async with session_factory(engine)() as db:
            user = (await db.execute(select(UserRow).where(UserRow.email == USER["email"]))).scalar_one()
            for i in range(n_keypairs):
                kp = await add_keypair(db, user)
                ids = []
                for j in range(SESSIONS_PER_KEY):
                    now = utcnow()
                    sid = uuid.uuid4()
                    db.add(
                        SessionRow(
                            id=sid,
                            name=f"bench-{i}-{j}",
                            session_type="interactive",
                            access_key=kp.access_key,
                            user_uuid=user.uuid,
                            domain_name="default",
                            group_id=DEFAULT_GROUP_ID,
                            scaling_group="default",
                            image="python:3.11-debian12",
                            status="RUNNING",
                            status_changed=now,
                            created_at=now,
                            status_history={"PENDING": now.isoformat()},
                            requested_slots={"cpu": "1", "mem": "268435456"},
                            occupying_slots={"cpu": "1", "mem": "268435456"},
                        )
                    )
                    await db.flush()
                    db.add(
                        KernelRow(
                            session_id=sid,
                            image="python:3.11-debian12",
                            status="RUNNING",
                            created_at=now,
                            agent="i-bench",
                            agent_addr="http://127.0.0.1:1",
                            container_id=f"c{j:063d}",
                            occupied_slots={"cpu": "1", "mem": "268435456"},
                        )
                    )
                    ids.append(str(sid))
                callers.append(Caller(kp.access_key, kp.secret_key, ids))
            await db.commit()
    finally:
        await engine.dispose()
    return callers


def _signed(m: Cluster, method: str, path: str, who: Caller) -> dict[str, str]:
    return sign_request_headers(
        method=method,
        path_with_query=path,
        host=m.endpoint.split("//", 1)[1],
        content_type="application/json",
        version=API_VERSION,
        access_key=who.access_key,
        secret_key=who.secret_key,
    )


def _raw(m: Cluster, method: str, path: str, headers: dict[str, str], body: bytes = b"") -> bytes:
    """One HTTP/1.1 keep-alive request, byte for byte."""
    host = m.endpoint.split("//", 1)[1]
    lines = [f"{method} {path} HTTP/1.1", f"Host: {host}", "Accept: */*", "User-Agent: bench-api"]
    lines += [f"{k}: {v}" for k, v in headers.items() if k.lower() != "host"]
    if body or method == "POST":
        lines.append(f"Content-Length: {len(body)}")
    return ("\r\n".join(lines) + "\r\n\r\n").encode("latin-1") + body


def _requests(m: Cluster, endpoint: str, who: Caller | None) -> list[bytes]:
    """The requests a measurement cycles through, signed once (a date stays valid for 15 minutes)."""
    if endpoint == "version":
        return [_raw(m, "GET", "/", {})]
    assert who is not None
    if endpoint == "session_info":
        return [_raw(m, "GET", f"/session/{sid}", _signed(m, "GET", f"/session/{sid}", who)) for sid in who.session_ids]
    return [
        _raw(m, "POST", "/admin/graphql", _signed(m, "POST", "/admin/graphql", who), json.dumps(GQL_QUERY).encode())
    ]


class Connection:
    """A minimal keep-alive HTTP/1.1 client connection (responses must carry Content-Length)."""

    def __init__(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        self.reader, self.writer = reader, writer

    @classmethod
    async def open(cls, endpoint: str) -> Connection:
        host, port = endpoint.split("//", 1)[1].rsplit(":", 1)
        reader, writer = await asyncio.open_connection(host, int(port))
        return cls(reader, writer)

    async def request(self, raw: bytes) -> tuple[int, bytes]:
        self.writer.write(raw)
        head = await self.reader.readuntil(b"\r\n\r\n")
        status = int(head[9:12])
        length = None
        for line in head.split(b"\r\n")[1:]:
            name, _, value = line.partition(b":")
            if name.strip().lower() == b"content-length":
                length = int(value)
                break
        if length is None:
            raise RuntimeError(f"response without Content-Length: {head[:300]!r}")
        return status, await self.reader.readexactly(length)

    async def close(self) -> None:
        self.writer.close()
        with contextlib.suppress(OSError):
            await self.writer.wait_closed()


def _cpu_seconds(pid: int) -> float:
    """User + system CPU time of process ``pid`` so far (Linux ``/proc``)."""
    fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
    return (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")


async def _measure(
    conns: list[Connection], reqs: list[bytes], total: int, duration: float = 1e9, server_pid: int | None = None
) -> dict[str, Any]:
    """Closed loop: each connection (one client) sends its next request when the last one is answered,
    until ``total`` requests were sent or ``duration`` seconds passed."""
    latencies: list[float] = []
    sent = 0
    failure: list[str] = []
    deadline = time.perf_counter() + duration

    async def worker(conn: Connection) -> None:
        nonlocal sent
        while sent < total and not failure and time.perf_counter() < deadline:
            raw = reqs[sent % len(reqs)]
            sent += 1
            t = time.perf_counter()
            status, body = await conn.request(raw)
            latencies.append(time.perf_counter() - t)
            if status != 200:
                failure.append(f"{raw.split(b' ', 2)[:2]!r}: HTTP {status} {body[:300]!r}")

    server0 = _cpu_seconds(server_pid) if server_pid else 0.0
    cpu0, wall0 = time.process_time(), time.perf_counter()
    await asyncio.gather(*(worker(c) for c in conns))
    cpu, wall = time.process_time() - cpu0, time.perf_counter() - wall0
    server = _cpu_seconds(server_pid) - server0 if server_pid else 0.0
    if failure:
        raise RuntimeError(failure[0])
    latencies.sort()
    return {
        "n": len(latencies),
        "p50_ms": statistics.median(latencies) * 1000,
        "p99_ms": latencies[max(int(len(latencies) * 0.99) - 1, 0)] * 1000,
        "throughput_rps": len(latencies) / wall,
        "client_cpu": cpu / wall,
        "server_cpu_ms_per_req": server / len(latencies) * 1000,
    }


async def _bench_server(m: Cluster, callers: list[Caller], quick: bool) -> dict[str, Any]:
    out: dict[str, Any] = {}
    keys = iter(callers)
    pid = m.procs["manager"].pid
    duration = DURATION / 4 if quick else DURATION
    for c in CONCURRENCY:
        row: dict[str, Any] = {}
        for endpoint in ENDPOINTS:
            who = None if endpoint == "version" else next(keys)
            reqs = _requests(m, endpoint, who)
            assert MAX_REQUESTS + c < RATE_LIMIT  # per keypair: warm-up (c) + measurement
            # Fresh connections per measurement: the server closes keep-alive connections idle for 5 s.
            conns = [await Connection.open(m.endpoint) for _ in range(c)]
            try:
                await _measure(conns, reqs, max(c, 20))  # every connection once; warms the server's caches
                row[endpoint] = await _measure(conns, reqs, MAX_REQUESTS, duration, pid)
            finally:
                for conn in conns:
                    await conn.close()
        base = row["version"]
        for endpoint in ENDPOINTS[1:]:
            r = row[endpoint]
            r["ratio_p50"] = r["p50_ms"] / base["p50_ms"]
            r["ratio_p99"] = r["p99_ms"] / base["p99_ms"]
            r["ratio_server_cpu"] = r["server_cpu_ms_per_req"] / base["server_cpu_ms_per_req"]
        out[str(c)] = row
    return out


def main(quick: bool = False, redis: bool = False) -> dict[str, Any]:
    limiter = "Redis" if redis else "manager memory"
    results: dict[str, Any] = {"client": CLIENT, "rate_limit_counters": limiter, "quick": quick, "databases": {}}
    for kind in DB_KINDS:
        with contextlib.ExitStack() as stack:
            tmp = Path(stack.enter_context(tempfile.TemporaryDirectory(prefix=f"bai-bench-api-{kind}-")))
            db_url = stack.enter_context(fresh_database(kind, tmp))
            redis_url = stack.enter_context(fresh_redis()) if redis else None
            m = launch_manager(tmp, db_url=db_url, redis_url=redis_url, settings={"anonymous-rate-limit": 0})
            stack.callback(m.shutdown)
            callers = asyncio.run(_seed(db_url, len(CONCURRENCY) * (len(ENDPOINTS) - 1)))
            results["databases"][kind] = asyncio.run(_bench_server(m, callers, quick))
    return results


def _print(res: dict[str, Any]) -> None:
    print(f"rate-limit counters in {res['rate_limit_counters']}; client: {res['client']}")
    print(
        f"{'database':10s} {'clients':>7s} {'endpoint':13s} {'p50 ms':>8s} {'p99 ms':>8s} {'req/s':>6s} "
        f"{'srv cpu ms':>10s} {'cli cpu':>7s} | {'ratio p50':>9s} {'p99':>6s} {'srv cpu':>7s}"
    )
    for kind, by_c in res["databases"].items():
        for c, row in by_c.items():
            for endpoint, r in row.items():
                ratios = (
                    f"{r['ratio_p50']:9.2f} {r['ratio_p99']:6.2f} {r['ratio_server_cpu']:7.2f}"
                    if "ratio_p50" in r
                    else f"{'(baseline)':>9s}"
                )
                print(
                    f"{kind:10s} {c:>7s} {endpoint:13s} {r['p50_ms']:8.2f} {r['p99_ms']:8.2f} "
                    f"{r['throughput_rps']:6.0f} {r['server_cpu_ms_per_req']:10.2f} {r['client_cpu']:7.2f} | "
                    f"{ratios}"
                )


if __name__ == "__main__":
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0] if __doc__ else None)
    parser.add_argument("--quick", action="store_true", help="a quarter of the time (a smoke run; api-quick.json)")
    parser.add_argument("--redis", action="store_true", help="rate-limit counters in the test Redis (api-redis.json)")
    args = parser.parse_args(sys.argv[1:])
    t0 = time.perf_counter()
    res = main(args.quick, args.redis)
    res["runtime_s"] = time.perf_counter() - t0
    _print(res)
    print(f"total {res['runtime_s']:.0f} s")
    out = Path(__file__).parent / "results"
    out.mkdir(exist_ok=True)
    name = "api" + ("-redis" if args.redis else "") + ("-quick" if args.quick else "")
    (out / f"{name}.json").write_text(json.dumps(res, indent=2))
