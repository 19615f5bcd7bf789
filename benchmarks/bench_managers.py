"""Several managers (ADR 0014): API-inclusive throughput of TWO managers against ONE, as ratios from one run.

Each shape gets a fresh PostgreSQL database and a fresh Redis database on the test servers
(``ai.backend.testutils.databases``), one or two managers sharing them, and one fleet of ``AGENTS`` dummy agents
(``ai.backend.testutils.fleet``, zero create delay) whose ``manager-url`` lists every manager. The fixture user
gets an unlimited keypair policy (``scheduler_rows.unlimit_fixture_user``) and an unlimited rate limit, written
into the database before the managers start so no cache holds the old values. Then, for each shape:

(a) **creations/s**: ``POST /session`` (``python`` image, ``enqueueOnly: false``) from ``CREATE_CLIENTS``
    concurrent clients spread round-robin over the managers' endpoints. The call answers once the session is
    RUNNING, so a creation includes the API, the scheduling pass of the leader (woken over ``NOTIFY`` when the
    creation landed on the other manager), the start on a dummy agent and the start event over the Redis bus.
    Every answer must be a 201 with status RUNNING. The sessions are destroyed afterwards, untimed.
(b) **GET /session/{id}/s**: ``GET_CLIENTS`` concurrent clients spread round-robin over the endpoints, each
    cycling through the sessions made in (a) (before they are destroyed).

The figure of interest is two / one for each. Each shape runs ``--rounds`` times (2; 1 with ``--quick``),
in the order one, two, two, one: other work on this shared machine drifts, and ABBA spreads it over both
shapes; the figures are the means over the rounds (each round is kept in the JSON). The machine has 2 cores
shared by the client, the managers, the fleet, PostgreSQL and Redis, so a ratio near 1 means the managers
are not the bottleneck here (or that the cores are), not that a second manager cannot help on a bigger
machine: the managers' CPU seconds per request (from ``/proc``) and the client's CPU use tell which.

Client: the closed-loop raw keep-alive HTTP/1.1 client of ``bench_api.py`` (one connection per client); each
request is signed once per endpoint (the signature does not cover the body; a date stays valid 15 minutes).

Run: ``PYTHONPATH=src .venv/bin/python benchmarks/bench_managers.py [--quick]`` (about 2 minutes, 30 s with
``--quick``; needs the test PostgreSQL and Redis: ``scripts/setup.sh --test``).
Results: ``benchmarks/results/managers[-quick].json``.
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import json
import secrets
import statistics
import sys
import tempfile
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

from sqlalchemy import update

sys.path.insert(0, str(Path(__file__).parent))
from bench_api import Connection, _cpu_seconds  # noqa: E402 - the shared raw client

from ai.backend.common.auth import CLUSTER_SECRET_HEADER, sign_request_headers  # noqa: E402
from ai.backend.manager.db import create_engine, session_factory  # noqa: E402
from ai.backend.manager.fixtures import USER  # noqa: E402
from ai.backend.manager.models import KeyPairRow  # noqa: E402
from ai.backend.testutils.cluster import Cluster, _free_port, _write_manager_config, prepare_database  # noqa: E402
from ai.backend.testutils.databases import fresh_database, fresh_redis  # noqa: E402
from ai.backend.testutils.fleet import start_fleet  # noqa: E402
from ai.backend.testutils.processes import stop_process  # noqa: E402
from ai.backend.testutils.scheduler_rows import unlimit_fixture_user  # noqa: E402

API_VERSION = "v6.20220615"
AGENTS = 20
HEARTBEAT = 2.0
CREATE_CLIENTS = 16
GET_CLIENTS = 50
CREATE_DURATION = 8.0  # seconds per measurement; --quick divides by 3
GET_DURATION = 5.0
MAX_CREATIONS = 3000  # bounds the sessions (and the destroy pass) per shape
FLEET_TABLES = '[resource]\ncpu = 256\nmem = "1t"\n'
CLIENT = "one asyncio process, one keep-alive HTTP/1.1 connection per client (bench_api.Connection)"


def launch_managers(state: Path, count: int, db_url: str, redis_url: str) -> Cluster:
    """``count`` managers on one PostgreSQL database and one Redis database, no agent (``launch_cluster`` with
    ``managers=`` also starts a Docker agent and a storage proxy, which this benchmark does not want)."""
    secret = secrets.token_urlsafe(24)
    ports = [_free_port() for _ in range(count)]
    for i, port in enumerate(ports):
        _write_manager_config(state, port, secret, db_url, redis_url, None, name=Cluster.manager_name(i))
    prepare_database(state / "manager.toml")
    asyncio.run(_unlimit(db_url))  # before the managers start: nothing cached yet
    urls = [f"http://127.0.0.1:{p}" for p in ports]
    c = Cluster(state, urls[0], secret, "", {}, db_url, redis_url, endpoints=urls)
    try:
        for i in range(count):
            c.start(Cluster.manager_name(i))
        for i in range(count):
            c.at(i).wait_ready(agents=False)
    except Exception:
        c.shutdown()
        raise
    return c


async def _unlimit(db_url: str) -> None:
    """Any number of sessions and slots for the fixture user's policy, and no rate limit on its keypair."""
    engine = create_engine(db_url)
    try:
        async with session_factory(engine)() as db:
            await unlimit_fixture_user(db, 1_000_000)
            await db.execute(update(KeyPairRow).where(KeyPairRow.access_key == USER["access_key"]).values(rate_limit=0))
            await db.commit()
    finally:
        await engine.dispose()


def _wait_agents(c: Cluster, fleet: Any) -> None:
    """Until every agent of the fleet is alive (the table is shared, so one manager's view suffices)."""
    deadline = time.monotonic() + HEARTBEAT * 2 + 60
    while True:
        r = c.request("GET", "/internal/status", headers={CLUSTER_SECRET_HEADER: c.secret})
        alive = r.json().get("agents_alive", 0) if r.status_code == 200 else 0
        if alive >= AGENTS:
            return
        if time.monotonic() > deadline or fleet.poll() is not None:
            log = (c.state / "fleet.log").read_text()[-2000:]
            raise RuntimeError(f"only {alive} of {AGENTS} agents joined: {log}")
        time.sleep(0.3)


def _raw(endpoint: str, method: str, path: str, body: bytes = b"") -> bytes:
    """One signed HTTP/1.1 keep-alive request as the fixture user, byte for byte."""
    host = endpoint.split("//", 1)[1]
    headers = sign_request_headers(
        method=method,
        path_with_query=path,
        host=host,
        content_type="application/json",
        version=API_VERSION,
        access_key=USER["access_key"],
        secret_key=USER["secret_key"],
    )
    lines = [f"{method} {path} HTTP/1.1", f"Host: {host}", "Accept: */*", "User-Agent: bench-managers"]
    lines += [f"{k}: {v}" for k, v in headers.items() if k.lower() != "host"]
    if body or method == "POST":
        lines.append(f"Content-Length: {len(body)}")
    return ("\r\n".join(lines) + "\r\n\r\n").encode("latin-1") + body


async def _closed_loop(
    conns: list[tuple[Connection, int]],
    make: Callable[[int, int], bytes],
    check: Callable[[int, bytes], str | None],
    duration: float,
    total: int,
    pids: list[int],
) -> dict[str, Any]:
    """Each client (a connection to endpoint ``e``) sends ``make(i, e)`` when its last request is answered,
    until ``duration`` seconds or ``total`` requests; ``check(status, body)`` returns why an answer is wrong."""
    latencies: list[float] = []
    bodies: list[bytes] = []
    sent = 0
    failure: list[str] = []
    deadline = time.perf_counter() + duration

    async def worker(conn: Connection, e: int) -> None:
        nonlocal sent
        while sent < total and not failure and time.perf_counter() < deadline:
            i = sent
            sent += 1
            t = time.perf_counter()
            status, body = await conn.request(make(i, e))
            latencies.append(time.perf_counter() - t)
            bodies.append(body)
            why = check(status, body)
            if why:
                failure.append(why)

    srv0 = [_cpu_seconds(p) for p in pids]
    cpu0, wall0 = time.process_time(), time.perf_counter()
    await asyncio.gather(*(worker(c, e) for c, e in conns))
    cpu, wall = time.process_time() - cpu0, time.perf_counter() - wall0
    srv = sum(_cpu_seconds(p) for p in pids) - sum(srv0)
    if failure:
        raise RuntimeError(failure[0])
    n = len(latencies)
    latencies.sort()
    return {
        "n": n,
        "per_s": n / wall,
        "p50_ms": statistics.median(latencies) * 1000,
        "p99_ms": latencies[max(int(n * 0.99) - 1, 0)] * 1000,
        "client_cpu": cpu / wall,
        "managers_cpu_ms_per_req": srv / n * 1000,
        "bodies": bodies,
    }


async def _open(endpoints: list[str], clients: int) -> list[tuple[Connection, int]]:
    """``clients`` connections, round-robin over ``endpoints``."""
    return [(await Connection.open(endpoints[i % len(endpoints)]), i % len(endpoints)) for i in range(clients)]


async def _close(conns: list[tuple[Connection, int]]) -> None:
    for conn, _ in conns:
        await conn.close()


def _check_created(status: int, body: bytes) -> str | None:
    if status != 201:
        return f"POST /session: HTTP {status} {body[:300]!r}"
    if json.loads(body).get("status") != "RUNNING":
        return f"POST /session: not RUNNING: {body[:300]!r}"
    return None


def _check_ok(status: int, body: bytes) -> str | None:
    return None if status == 200 else f"GET /session: HTTP {status} {body[:300]!r}"


async def _bench_shape(c: Cluster, quick: bool) -> dict[str, Any]:
    endpoints = c.endpoints
    pids = [c.procs[Cluster.manager_name(i)].pid for i in range(len(endpoints))]
    scale = 1 / 3 if quick else 1.0
    prefix = f"hb{secrets.token_hex(2)}-"
    # Signed once per endpoint; the body (not signed) carries each creation's own name.
    heads = [_raw(e, "POST", "/session") for e in endpoints]
    heads = [h[: h.rindex(b"Content-Length:")] for h in heads]

    def creator(names: str) -> Callable[[int, int], bytes]:
        def create(i: int, e: int) -> bytes:
            body = json.dumps(
                {"image": "python", "name": f"{names}{i}", "enqueueOnly": False, "resources": {"cpu": 1, "mem": "64m"}}
            ).encode()
            return heads[e] + f"Content-Length: {len(body)}\r\n\r\n".encode() + body

        return create

    out: dict[str, Any] = {}
    conns = await _open(endpoints, CREATE_CLIENTS)
    try:
        # Every connection once: warms the managers' caches and pools (these sessions are left alone).
        await _closed_loop(conns, creator(f"{prefix}warm-"), _check_created, 60, CREATE_CLIENTS, [])
        r = await _closed_loop(conns, creator(prefix), _check_created, CREATE_DURATION * scale, MAX_CREATIONS, pids)
    finally:
        await _close(conns)
    ids = [json.loads(b)["sessionId"] for b in r.pop("bodies")]
    out["create"] = r

    gets = [[_raw(e, "GET", f"/session/{sid}") for sid in ids] for e in endpoints]
    conns = await _open(endpoints, GET_CLIENTS)
    try:
        await _closed_loop(conns, lambda i, e: gets[e][i % len(ids)], _check_ok, 60, GET_CLIENTS, [])
        r = await _closed_loop(conns, lambda i, e: gets[e][i % len(ids)], _check_ok, GET_DURATION * scale, 10**9, pids)
    finally:
        await _close(conns)
    r.pop("bodies")
    out["get"] = r

    # Untimed clean-up, so the shapes end alike (the database is dropped anyway).
    dels = [[_raw(e, "DELETE", f"/session/{sid}") for sid in ids] for e in endpoints]
    conns = await _open(endpoints, 8)
    try:
        await _closed_loop(conns, lambda i, e: dels[e][i], lambda s, b: None, 120, len(ids), [])
    finally:
        await _close(conns)
    return out


def _run_shape(managers: int, quick: bool) -> dict[str, Any]:
    with contextlib.ExitStack() as stack:
        state = Path(stack.enter_context(tempfile.TemporaryDirectory(prefix=f"bai-bench-managers-{managers}-")))
        db_url = stack.enter_context(fresh_database("postgresql", state))
        redis_url = stack.enter_context(fresh_redis())
        c = launch_managers(state, managers, db_url, redis_url)
        stack.callback(c.shutdown)
        fleet = start_fleet(
            c, state, AGENTS, heartbeat=HEARTBEAT, tables=FLEET_TABLES, manager_urls=c.endpoints, id_prefix="i-hb-"
        )
        stack.callback(stop_process, fleet, 20)
        _wait_agents(c, fleet)
        res = asyncio.run(_bench_shape(c, quick))
        res["managers"] = managers
        return res


def main(quick: bool = False, rounds: int = 2) -> dict[str, Any]:
    """``rounds`` runs of each shape in the order one, two, two, one, ... (ABBA: a load on the shared machine
    that drifts during the run weighs on both shapes alike); a shape's figures are the means over its rounds."""
    order = [("one", 1), ("two", 2), ("two", 2), ("one", 1)] * rounds
    runs: dict[str, list[dict[str, Any]]] = {"one": [], "two": []}
    for name, managers in order[: 2 * rounds]:
        runs[name].append(_run_shape(managers, quick))
    shapes: dict[str, Any] = {}
    for name, rs in runs.items():
        shapes[name] = {"managers": rs[0]["managers"], "rounds": rs}
        for what in ("create", "get"):
            shapes[name][what] = {
                key: statistics.mean(r[what][key] for r in rs)
                for key in ("n", "per_s", "p50_ms", "p99_ms", "client_cpu", "managers_cpu_ms_per_req")
            }
    ratios = {
        f"{what}_per_s": shapes["two"][what]["per_s"] / shapes["one"][what]["per_s"] for what in ("create", "get")
    }
    return {
        "quick": quick,
        "rounds": rounds,
        "client": CLIENT,
        "agents": AGENTS,
        "create_clients": CREATE_CLIENTS,
        "get_clients": GET_CLIENTS,
        "shapes": shapes,
        "ratio_two_over_one": ratios,
    }


def _print(res: dict[str, Any]) -> None:
    print(f"{res['agents']} dummy agents; {res['rounds']} round(s) per shape (means); client: {res['client']}")
    print(
        f"{'measure':22s} {'managers':>8s} {'n':>6s} {'per s':>7s} {'p50 ms':>8s} {'p99 ms':>8s} "
        f"{'mgr cpu ms/req':>14s} {'cli cpu':>7s}"
    )
    labels = {
        "create": f"POST /session x{res['create_clients']}",
        "get": f"GET /session/id x{res['get_clients']}",
    }
    for what, label in labels.items():
        for shape in ("one", "two"):
            r = res["shapes"][shape][what]
            print(
                f"{label:22s} {res['shapes'][shape]['managers']:8d} {r['n']:6.0f} {r['per_s']:7.1f} {r['p50_ms']:8.1f} "
                f"{r['p99_ms']:8.1f} {r['managers_cpu_ms_per_req']:14.2f} {r['client_cpu']:7.2f}"
            )
        print(f"{label:22s} {'two/one':>8s} {res['ratio_two_over_one'][what + '_per_s']:14.2f}")


if __name__ == "__main__":
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0] if __doc__ else None)
    parser.add_argument("--quick", action="store_true", help="a third of the time, one round (managers-quick.json)")
    parser.add_argument("--rounds", type=int, help="runs of each shape, alternating (default 2; 1 with --quick)")
    args = parser.parse_args(sys.argv[1:])
    t0 = time.perf_counter()
    res = main(args.quick, args.rounds or (1 if args.quick else 2))
    res["runtime_s"] = time.perf_counter() - t0
    _print(res)
    print(f"total {res['runtime_s']:.0f} s")
    out = Path(__file__).parent / "results"
    out.mkdir(exist_ok=True)
    (out / f"managers{'-quick' if args.quick else ''}.json").write_text(json.dumps(res, indent=2))
