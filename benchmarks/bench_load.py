"""Load: 200 concurrent clients for 10 minutes mixing every kind of call, on SQLite and on PostgreSQL.

A throw-away cluster (manager, Docker agent, storage proxy) per database; on PostgreSQL the rate-limit
counters, events and cache generations go through the test Redis, as in a multi-manager deployment.
``USERS`` users (their own keypairs, rate limits raised so the limiter does not shape the load) each get
one running ``python`` session and one folder with a file, then ``CLIENTS`` closed-loop clients (one
keep-alive connection each, spread over the users) pick their next call by weight:

=================  ======  ==========================================================================
call               weight  what it does
=================  ======  ==========================================================================
``root``              15   ``GET /`` (no authentication): the baseline the others are compared with
``session_info``      15   ``GET /session/<own session>``
``execute``           20   ``POST /session/<own session>`` running ``print(1)``
``session_list``      10   GraphQL ``compute_session_list(limit: 20)`` of the caller's sessions
``graphql``           10   GraphQL ``{ keypair { access_key is_active } }``
``folders``           10   ``GET /folders`` (the caller's folders)
``folder_files``       8   ``GET /folders/<own folder>/files``
``mkdir``              5   ``POST /folders/<own folder>/mkdir`` of a fresh directory name
``create_destroy``     2   ``POST /session`` (a new session, waiting until it runs) then ``DELETE`` it
=================  ======  ==========================================================================

Reported per call: count, p50 and p99 latency and p99 as a ratio against ``root`` in the same run;
errors (anything but 2xx, the documented 4xx of the call and 429) must be zero; the manager's resident
memory sampled every 10 s, with its growth over the second half of the run (flat: within 10%).

Run: ``.venv/bin/python benchmarks/bench_load.py [--duration S] [--clients N] [--db sqlite|postgresql|both]``
(the defaults, 600 s and 200 clients on both databases, take about 22 minutes; needs Docker, the kernel
images and the test PostgreSQL and Redis: ``scripts/setup.sh --test``). Results:
``benchmarks/results/load.json``.
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import json
import random
import sys
import tempfile
import time
import uuid
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from ai.backend.common.auth import sign_request_headers
from ai.backend.manager.fixtures import ADMIN, DEFAULT_GROUP_ID
from ai.backend.testutils.cluster import Cluster, launch_cluster
from ai.backend.testutils.databases import fresh_database, fresh_redis

sys.path.insert(0, str(Path(__file__).parent))
from bench_api import Connection  # noqa: E402 - the raw keep-alive client
from bench_exec_throughput import rss_bytes, set_rate_limit  # noqa: E402

API_VERSION = "v6.20220615"
DURATION = 600.0
CLIENTS = 200
USERS = 10
WEIGHTS = {
    "root": 15,
    "session_info": 15,
    "execute": 20,
    "session_list": 10,
    "graphql": 10,
    "folders": 10,
    "folder_files": 8,
    "mkdir": 5,
    "create_destroy": 2,
}
# Answers that are part of a call's documented behaviour under load, not errors.
ALLOWED = {"create_destroy": {429, 503}}  # 503: no agent has room right now (other clients' sessions)
RESULTS = Path(__file__).parent / "results" / "load.json"


@dataclass
class User:
    email: str
    access_key: str
    secret_key: str
    session: str
    folder: str


@dataclass
class Tally:
    latencies: dict[str, list[float]] = field(default_factory=lambda: {k: [] for k in WEIGHTS})
    statuses: dict[str, dict[int, int]] = field(default_factory=lambda: {k: {} for k in WEIGHTS})
    errors: list[str] = field(default_factory=list)


def _gql(c: Cluster, query: str, variables: dict[str, Any]) -> dict[str, Any]:
    r = c.request("POST", "/admin/gql", {"query": query, "variables": variables}, who=ADMIN)
    body = r.json()
    if r.status_code != 200 or body.get("errors"):
        raise RuntimeError(f"GraphQL failed: {r.status_code} {body}")
    data: dict[str, Any] = body["data"]
    return data


def make_users(c: Cluster, n: int) -> list[User]:
    """``n`` users with a raised rate limit, a running session and a folder holding one file each."""
    users = []
    for i in range(n):
        email = f"load-{i}-{uuid.uuid4().hex[:6]}@example.org"
        _gql(
            c,
            "mutation($e: String!, $p: UserInput!) { create_user(email: $e, props: $p) { ok } }",
            {
                "e": email,
                "p": {"password": "load-test-pw", "domain_name": "default", "group_ids": [str(DEFAULT_GROUP_ID)]},
            },
        )
        kp = _gql(c, "query($e: String) { keypairs(email: $e) { access_key secret_key } }", {"e": email})
        ak, sk = kp["keypairs"][0]["access_key"], kp["keypairs"][0]["secret_key"]
        set_rate_limit(c, ak, 10_000_000)
        who = {"access_key": ak, "secret_key": sk}
        session, folder = f"load-s{i}", f"load-f{i}"
        r = c.request(
            "POST",
            "/session",
            {"image": "python", "name": session, "config": {"resources": {"cpu": 1, "mem": "256m"}}},
            who=who,
        )
        if r.status_code not in (200, 201) or r.json()["status"] != "RUNNING":
            raise RuntimeError(f"session {session}: {r.status_code} {r.text[:300]}")
        r = c.request("POST", "/folders", {"name": folder}, who=who)
        if r.status_code not in (200, 201):
            raise RuntimeError(f"folder {folder}: {r.status_code} {r.text[:300]}")
        users.append(User(email, ak, sk, session, folder))
    return users


class Signer:
    """Signed request bytes, re-signed once a minute (a signature's date is valid for 15 minutes)."""

    def __init__(self, c: Cluster) -> None:
        self.host = c.endpoint.split("//", 1)[1]
        self._cache: dict[tuple[str, str, str, int], dict[str, str]] = {}

    def raw(self, method: str, path: str, who: User | None, body: Any = None) -> bytes:
        data = json.dumps(body).encode() if body is not None else b""
        headers: dict[str, str] = {}
        if who is not None:
            key = (method, path, who.access_key, int(time.time() // 60))
            headers = self._cache.get(key) or {}
            if not headers:
                headers = self._cache[key] = sign_request_headers(
                    method=method,
                    path_with_query=path,
                    host=self.host,
                    content_type="application/json",
                    version=API_VERSION,
                    access_key=who.access_key,
                    secret_key=who.secret_key,
                )
        lines = [f"{method} {path} HTTP/1.1", f"Host: {self.host}", "Accept: */*"]
        lines += [f"{k}: {v}" for k, v in headers.items()]
        if data or method in ("POST", "DELETE"):
            lines.append(f"Content-Length: {len(data)}")
        return ("\r\n".join(lines) + "\r\n\r\n").encode("latin-1") + data


SESSION_LIST = {
    "query": "query($l: Int!, $o: Int!) { compute_session_list(limit: $l, offset: $o) "
    "{ items { id name status } total_count } }",
    "variables": {"l": 20, "o": 0},
}
KEYPAIR = {"query": "{ keypair { access_key is_active } }"}


async def _call(conn: Connection, signer: Signer, kind: str, who: User) -> list[tuple[int, bytes]]:
    """One call of ``kind`` (two requests for ``create_destroy``); the answers' statuses and bodies."""
    if kind == "root":
        return [await conn.request(signer.raw("GET", "/", None))]
    if kind == "session_info":
        return [await conn.request(signer.raw("GET", f"/session/{who.session}", who))]
    if kind == "execute":
        return [
            await conn.request(
                signer.raw("POST", f"/session/{who.session}", who, {"mode": "query", "code": "print(1)"})
            )
        ]
    if kind == "session_list":
        return [await conn.request(signer.raw("POST", "/admin/graphql", who, SESSION_LIST))]
    if kind == "graphql":
        return [await conn.request(signer.raw("POST", "/admin/graphql", who, KEYPAIR))]
    if kind == "folders":
        return [await conn.request(signer.raw("GET", "/folders", who))]
    if kind == "folder_files":
        return [await conn.request(signer.raw("GET", f"/folders/{who.folder}/files", who))]
    if kind == "mkdir":
        return [
            await conn.request(
                signer.raw("POST", f"/folders/{who.folder}/mkdir", who, {"path": f"d-{uuid.uuid4().hex[:10]}"})
            )
        ]
    name = f"load-c-{uuid.uuid4().hex[:10]}"
    created = await conn.request(
        signer.raw(
            "POST",
            "/session",
            who,
            {"image": "python", "name": name, "config": {"resources": {"cpu": 1, "mem": "256m"}}},
        )
    )
    if created[0] not in (200, 201):
        return [created]
    return [created, await conn.request(signer.raw("DELETE", f"/session/{name}", who))]


async def _run_load(c: Cluster, users: list[User], clients: int, duration: float) -> tuple[Tally, list[int]]:
    signer = Signer(c)
    tally = Tally()
    kinds, weights = list(WEIGHTS), list(WEIGHTS.values())
    deadline = time.perf_counter() + duration
    manager_pid = c.procs["manager"].pid
    memory: list[int] = []

    async def client(i: int) -> None:
        rnd = random.Random(i)
        who = users[i % len(users)]
        conn = await Connection.open(c.endpoint)
        try:
            while time.perf_counter() < deadline:
                kind = rnd.choices(kinds, weights)[0]
                t = time.perf_counter()
                try:
                    answers = await _call(conn, signer, kind, who)
                except (OSError, asyncio.IncompleteReadError, RuntimeError) as e:
                    tally.errors.append(f"{kind}: {type(e).__name__}: {e}")
                    await conn.close()
                    conn = await Connection.open(c.endpoint)
                    continue
                tally.latencies[kind].append(time.perf_counter() - t)
                for status, body in answers:
                    tally.statuses[kind][status] = tally.statuses[kind].get(status, 0) + 1
                    if not (200 <= status < 300 or status in ALLOWED.get(kind, set()) or status == 429):
                        tally.errors.append(f"{kind}: HTTP {status} {body[:200]!r}")
        finally:
            await conn.close()

    async def sample_memory() -> None:
        while time.perf_counter() < deadline:
            memory.append(rss_bytes(manager_pid))
            await asyncio.sleep(10)

    await asyncio.gather(sample_memory(), *(client(i) for i in range(clients)))
    return tally, memory


def _p(lat: list[float], q: float) -> float:
    s = sorted(lat)
    return s[min(int(len(s) * q), len(s) - 1)] * 1000 if s else float("nan")


def summarize(tally: Tally, memory: list[int], duration: float) -> dict[str, Any]:
    base = _p(tally.latencies["root"], 0.99)
    calls = {}
    for kind, lat in tally.latencies.items():
        calls[kind] = {
            "count": len(lat),
            "per_s": len(lat) / duration,
            "p50_ms": _p(lat, 0.5),
            "p99_ms": _p(lat, 0.99),
            "p99_ratio_vs_root": _p(lat, 0.99) / base if lat else None,
            "statuses": tally.statuses[kind],
        }
    half = memory[len(memory) // 2 :] or memory
    growth = (half[-1] - half[0]) / half[0] if half and half[0] else 0.0
    return {
        "calls": calls,
        "errors": len(tally.errors),
        "first_errors": tally.errors[:10],
        "manager_rss_mib": [round(m / 2**20, 1) for m in memory],
        "manager_rss_growth_second_half": growth,
        "memory_flat": growth <= 0.10,
    }


@contextlib.contextmanager
def _cluster(kind: str, state: Path) -> Iterator[Cluster]:
    with contextlib.ExitStack() as stack:
        db_url = stack.enter_context(fresh_database(kind, state))
        redis_url = stack.enter_context(fresh_redis()) if kind == "postgresql" else None
        c = launch_cluster(state, cpu=16, mem="16g", db_url=db_url, redis_url=redis_url)
        stack.callback(c.shutdown)
        yield c


def main(
    duration: float = DURATION,
    clients: int = CLIENTS,
    dbs: tuple[str, ...] = ("sqlite", "postgresql"),
    keep: Path | None = None,
) -> dict[str, Any]:
    out: dict[str, Any] = {"duration_s": duration, "clients": clients, "users": USERS, "weights": WEIGHTS}
    for kind in dbs:
        with contextlib.ExitStack() as stack:
            if keep is not None:  # the servers' logs stay there for a look afterwards
                state = keep / kind
                state.mkdir(parents=True, exist_ok=False)
            else:
                state = Path(stack.enter_context(tempfile.TemporaryDirectory(prefix=f"bench-load-{kind}-")))
            c = stack.enter_context(_cluster(kind, state))
            users = make_users(c, USERS)
            tally, memory = asyncio.run(_run_load(c, users, clients, duration))
            out[kind] = summarize(tally, memory, duration)
    RESULTS.parent.mkdir(exist_ok=True)
    RESULTS.write_text(json.dumps(out, indent=2))
    return out


def _print(res: dict[str, Any]) -> None:
    print(f"load: {res['clients']} clients for {res['duration_s']:.0f} s")
    for kind in ("sqlite", "postgresql"):
        r = res.get(kind)
        if r is None:
            continue
        print(
            f"  {kind}: errors {r['errors']}, manager RSS {r['manager_rss_mib'][:1]} -> "
            f"{r['manager_rss_mib'][-1:]} MiB (second-half growth {r['manager_rss_growth_second_half']:.1%})"
        )
        for call, v in r["calls"].items():
            ratio = v["p99_ratio_vs_root"]
            print(
                f"    {call:<15} {v['count']:>7} calls {v['per_s']:>7.1f}/s  p50 {v['p50_ms']:>7.1f} ms  "
                f"p99 {v['p99_ms']:>8.1f} ms  p99/root {ratio if ratio is None else round(ratio, 1)}"
            )
        for e in r["first_errors"]:
            print(f"    error: {e}")
    if any(res.get(k, {}).get("errors") for k in ("sqlite", "postgresql")):
        sys.exit(1)


if __name__ == "__main__":
    parser = argparse.ArgumentParser(description=__doc__.split("\n", 1)[0])
    parser.add_argument("--duration", type=float, default=DURATION)
    parser.add_argument("--clients", type=int, default=CLIENTS)
    parser.add_argument("--db", choices=("sqlite", "postgresql", "both"), default="both")
    parser.add_argument("--keep", type=Path, help="keep each cluster's state and logs under this new directory")
    args = parser.parse_args()
    _print(main(args.duration, args.clients, ("sqlite", "postgresql") if args.db == "both" else (args.db,), args.keep))
