"""Scheduler benchmarks, each against a baseline measured in the same run.

(a) One full scheduling pass of the real :class:`Scheduler` code path (snapshot read, plan, one commit)
    over a database with A agents and S pending sessions inserted directly, for (A, S) in 100/100,
    1000/1000 and 1000/10000 (target ≤ 1 s at 1000/10000). Baseline: reading the same pending-session
    and agent rows with plain SELECTs. SQLite always, PostgreSQL with ``--postgres``.
(b) End to end: a real manager and a fleet of A dummy agents (``ai.backend.agent.fleet``, one process),
    two ways, each reported as sessions per second (target ≥ 500/s):
    * *API-inclusive*: S sessions created with ``enqueueOnly`` by 32 concurrent signed ``POST /session``
      requests, then the time until all are RUNNING (the creation requests are part of it);
    * *scheduling pipeline* (``-pending``): S sessions written PENDING straight into the database, then one
      creation through the API wakes the scheduler; the time from the rows' commit until all are RUNNING
      covers the passes, the starts over HTTP on the agents and every state write, but not the creation
      requests.
    Baseline: S ``GET /`` through the same client at the same concurrency.

Run: ``.venv/bin/python benchmarks/bench_scheduler.py`` (about a minute: pass sizes as above, end to end
with 100 and 1000 sessions on 100 agents); ``--big`` adds end-to-end bursts of 100, 1,000 and 10,000
sessions on 1,000 agents (about 15 minutes); ``--postgres`` repeats (a) and the default end to end on the
PostgreSQL test server; ``--skip-pass`` / ``--skip-e2e`` leave a part out.
Results: benchmarks/results/scheduler.json.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import tempfile
import time
from contextlib import ExitStack
from pathlib import Path
from typing import Any

import aiohttp
from sqlalchemy import func, select

from ai.backend.common.auth import CLUSTER_SECRET_HEADER, sign_request_headers
from ai.backend.manager.db import create_engine, session_factory
from ai.backend.manager.fixtures import ADMIN, USER
from ai.backend.manager.models import AgentRow, SessionRow
from ai.backend.manager.models.base import utcnow
from ai.backend.manager.scheduler import Scheduler
from ai.backend.testutils.cluster import Cluster, launch_manager
from ai.backend.testutils.databases import fresh_database
from ai.backend.testutils.fleet import start_fleet
from ai.backend.testutils.processes import stop_process
from ai.backend.testutils.scheduler_rows import insert_agents, insert_pending, prepare_schema, unlimit_fixture_user

PASS_SIZES = [(100, 100), (1000, 1000), (1000, 10000)]
AGENT_SLOTS = {"cpu": "16", "mem": str(64 * 1024**3)}
SESSION_SLOTS = {"cpu": "1", "mem": str(1024**3)}
E2E_SLOTS = {"cpu": "1", "mem": str(256 * 1024**2)}


# ---- (a) one scheduling pass ------------------------------------------------------------------------


async def _populate(db_url: str, agents: int, sessions: int) -> None:
    """A agents and S pending single-kernel sessions of the fixture user, with an unlimited policy."""
    engine = create_engine(db_url)
    try:
        async with session_factory(engine)() as db:
            await unlimit_fixture_user(db, 10 * sessions)
            now = utcnow()
            await insert_agents(db, [f"i-bench-{i}" for i in range(agents)], AGENT_SLOTS, now)
            await insert_pending(db, [f"bench-{i}" for i in range(sessions)], SESSION_SLOTS, now)
            await db.commit()
    finally:
        await engine.dispose()


async def _insert_pending(db_url: str, prefix: str, sessions: int) -> float:
    """S pending single-kernel sessions of the fixture user, written straight into the database as the
    API would have left them (the manager is running and sees them at its next pass); returns the
    ``time.perf_counter()`` of the commit."""
    engine = create_engine(db_url)
    try:
        async with session_factory(engine)() as db:
            now = utcnow()
            await insert_pending(
                db,
                [f"{prefix}{i}" for i in range(sessions)],
                E2E_SLOTS,
                now,
                status_history={"PENDING": now.isoformat()},
                status_changed=now,
            )
            await db.commit()
            return time.perf_counter()
    finally:
        await engine.dispose()


async def _time_pass(db_url: str, sessions: int) -> dict[str, float]:
    """Baseline SELECTs, then one real pass; placed sessions are not started (no agents behind them)."""
    engine = create_engine(db_url)
    try:
        factory = session_factory(engine)
        async with factory() as db:  # warm the connection and the ORM
            await db.execute(select(AgentRow.id).limit(1))
        t = time.perf_counter()
        async with factory() as db:
            rows = (
                (
                    await db.execute(
                        select(SessionRow).where(SessionRow.status == "PENDING").order_by(SessionRow.created_at)
                    )
                )
                .scalars()
                .all()
            )
            agents = (await db.execute(select(AgentRow).where(AgentRow.status == "ALIVE"))).scalars().all()
        select_s = time.perf_counter() - t
        assert len(rows) == sessions and agents, (len(rows), len(agents))
        t = time.perf_counter()
        placed = await Scheduler(factory, asyncio.Event(), lambda sid: None).schedule_once()  # not started
        pass_s = time.perf_counter() - t
        assert len(placed) == sessions, f"placed {len(placed)} of {sessions}"
        return {"pass_s": pass_s, "select_s": select_s, "ratio": pass_s / select_s}
    finally:
        await engine.dispose()


def bench_pass(kind: str) -> dict[str, Any]:
    out: dict[str, Any] = {}
    for agents, sessions in PASS_SIZES:
        with tempfile.TemporaryDirectory(prefix="bai-bench-sched-") as tmp, fresh_database(kind, Path(tmp)) as url:
            prepare_schema(url, Path(tmp))
            asyncio.run(_populate(url, agents, sessions))
            r = asyncio.run(_time_pass(url, sessions))
        r.update(agents=agents, sessions=sessions)
        out[f"{agents}x{sessions}"] = r
        print(
            f"pass[{kind}] {agents:5d} agents {sessions:6d} sessions: {r['pass_s']:.3f}s "
            f"(select {r['select_s']:.3f}s, ratio {r['ratio']:.1f})",
            flush=True,
        )
    return out


# ---- (b) end to end with a dummy fleet --------------------------------------------------------------


def _gql(c: Cluster, query: str) -> None:
    r = c.request("POST", "/admin/graphql", {"query": query}, who=ADMIN)
    assert r.status_code == 200 and "errors" not in r.json(), r.text


async def _signed_burst(c: Cluster, n: int, concurrency: int, make: Any) -> float:
    """``n`` signed requests (``make(i)`` -> (method, path, body)) at ``concurrency``; seconds taken.

    aiohttp, not httpx: at 32 connections httpx's pool costs the client ~3 ms of CPU per request, which
    made the client, not the manager, the bottleneck of the ``GET /`` baseline (and took a core from the
    manager during the creation burst on a small machine)."""
    host = c.endpoint.split("//", 1)[1]
    connector = aiohttp.TCPConnector(limit=concurrency)
    async with aiohttp.ClientSession(
        c.endpoint, connector=connector, timeout=aiohttp.ClientTimeout(total=120)
    ) as client:
        queue = iter(range(n))

        async def worker() -> None:
            for i in queue:
                method, path, body = make(i)
                h = sign_request_headers(
                    method=method,
                    path_with_query=path,
                    host=host,
                    content_type="application/json",
                    version="v6.20220615",
                    access_key=USER["access_key"],
                    secret_key=USER["secret_key"],
                )
                async with client.request(
                    method, path, headers=h, data=json.dumps(body) if body is not None else None
                ) as r:
                    text = await r.text()
                    assert r.status < 300, text

        t = time.perf_counter()
        await asyncio.gather(*(worker() for _ in range(concurrency)))
        return time.perf_counter() - t


async def _count_running(db: Any, prefix: str) -> int:
    """How many sessions named ``prefix*`` are RUNNING; raises if one failed (it would never run)."""
    counts = dict(
        (
            await db.execute(
                select(SessionRow.status, func.count())
                .where(SessionRow.name.like(f"{prefix}%"))
                .group_by(SessionRow.status)
            )
        ).all()
    )
    if counts.get("ERROR") or counts.get("CANCELLED"):
        why = (
            await db.execute(
                select(SessionRow.status_info, SessionRow.status_data)
                .where(SessionRow.name.like(f"{prefix}%"), SessionRow.status.in_(("ERROR", "CANCELLED")))
                .limit(1)
            )
        ).first()
        raise RuntimeError(f"sessions failed: {counts}; e.g. {why}")
    return int(counts.get("RUNNING", 0))


_LAST_ERROR = [""]
POLL_INTERVAL = 0.05


async def _poll_running(db_url: str, prefix: str, n: int, since: float, limit: float) -> float:
    """Seconds from ``since`` until ``n`` sessions named ``prefix*`` are RUNNING (one connection, polled
    every ``POLL_INTERVAL`` s: the resolution of the measurement)."""
    engine = create_engine(db_url)
    try:
        async with session_factory(engine)() as db:
            while await _count_running(db, prefix) < n:
                await db.rollback()  # a fresh snapshot next time
                if time.perf_counter() - since > limit:
                    raise RuntimeError(f"{n} sessions not all RUNNING after {limit:.0f} s")
                await asyncio.sleep(POLL_INTERVAL)
        return time.perf_counter() - since
    finally:
        await engine.dispose()


def _wait_running(db_url: str, prefix: str, n: int, since: float) -> float | None:
    """Seconds from ``since`` until ``n`` sessions named ``prefix*`` are RUNNING; ``None`` (the reason printed
    and kept in ``_LAST_ERROR``) when one failed or it takes too long, so the other sizes still run."""
    try:
        return asyncio.run(_poll_running(db_url, prefix, n, since, 600 + n * 0.2))
    except RuntimeError as e:
        _LAST_ERROR[0] = str(e)
        print(f"e2e {prefix}: {e}", flush=True)
        return None


def bench_end_to_end(
    agents: int,
    sizes: list[int],
    heartbeat: float,
    concurrency: int = 32,
    db: str = "sqlite",
    pending: list[int] | None = None,
) -> dict[str, Any]:
    """One manager (on a ``db`` database) and one fleet of ``agents`` dummy agents; each size in ``sizes`` is
    one burst of API creations. Each size in ``pending`` is a batch of sessions already PENDING (written
    into the database, then one creation through the API wakes the scheduler): the time until all are
    RUNNING is the scheduling pipeline alone (passes, starts over HTTP on the agents, state writes)."""
    out: dict[str, Any] = {}
    with tempfile.TemporaryDirectory(prefix="bai-bench-e2e-") as tmp, ExitStack() as stack:
        state = Path(tmp)
        url = stack.enter_context(fresh_database(db, state)) if db != "sqlite" else None
        m = launch_manager(state, db_url=url)
        stack.callback(m.shutdown)
        _gql(
            m,
            'mutation { modify_keypair_resource_policy(name: "default", props: '
            "{max_concurrent_sessions: 1000000}) { ok msg } }",
        )
        _gql(
            m,
            f'mutation {{ modify_keypair(access_key: "{USER["access_key"]}", props: {{rate_limit: 10000000}}) '
            "{ ok msg } }",
        )
        fleet = start_fleet(m, state, agents, heartbeat=heartbeat, tables='[resource]\ncpu = 256\nmem = "1t"\n')
        stack.callback(stop_process, fleet, 20)
        deadline = time.monotonic() + heartbeat * 2 + 60
        while True:
            r = m.request("GET", "/internal/status", headers={CLUSTER_SECRET_HEADER: m.secret})
            alive = r.json().get("agents_alive", 0) if r.status_code == 200 else 0
            if alive >= agents:
                break
            if time.monotonic() > deadline or fleet.poll() is not None:
                raise RuntimeError(
                    f"only {alive} of {agents} agents joined: " + (state / "fleet.log").read_text()[-2000:]
                )
            time.sleep(0.5)
        for n in sizes:
            prefix = f"e2e{n}-"
            baseline_s = asyncio.run(_signed_burst(m, n, concurrency, lambda i: ("GET", "/", None)))
            t = time.perf_counter()
            create_s = asyncio.run(
                _signed_burst(
                    m,
                    n,
                    concurrency,
                    lambda i, p=prefix: (
                        "POST",
                        "/session",
                        {
                            "image": "python",
                            "name": f"{p}{i}",
                            "enqueueOnly": True,
                            "resources": {"cpu": 1, "mem": "256m"},
                        },
                    ),
                )
            )
            total_s = _wait_running(m.db_url, prefix, n, t)
            if total_s is None:
                out[f"{agents}x{n}"] = {"agents": agents, "sessions": n, "db": db, "error": _LAST_ERROR[0]}
                continue
            res = {
                "agents": agents,
                "sessions": n,
                "db": db,
                "create_s": create_s,
                "all_running_s": total_s,
                "sessions_per_s": n / total_s,
                "baseline_get_s": baseline_s,
                "ratio": total_s / baseline_s,
                "target_per_s": 500,
            }
            out[f"{agents}x{n}"] = res
            print(
                f"e2e[{db}] {agents:5d} agents {n:6d} sessions: all RUNNING in {total_s:.2f}s "
                f"({res['sessions_per_s']:.0f}/s; enqueue {create_s:.2f}s; {n} GET / {baseline_s:.2f}s, "
                f"ratio {res['ratio']:.1f})",
                flush=True,
            )
        for n in pending or []:
            prefix = f"pend{n}-"
            baseline_s = asyncio.run(_signed_burst(m, n, concurrency, lambda i: ("GET", "/", None)))
            # Timed from the commit of the rows: the periodic safety pass may find them before the wake-up.
            t = asyncio.run(_insert_pending(m.db_url, prefix, n))
            asyncio.run(
                _signed_burst(
                    m,
                    1,
                    1,
                    lambda i, p=prefix: (
                        "POST",
                        "/session",
                        {
                            "image": "python",
                            "name": f"{p}wake",
                            "enqueueOnly": True,
                            "resources": {"cpu": 1, "mem": "256m"},
                        },
                    ),
                )
            )
            total_s = _wait_running(m.db_url, prefix, n + 1, t)
            if total_s is None:
                out[f"{agents}x{n}-pending"] = {"agents": agents, "sessions": n, "db": db, "error": _LAST_ERROR[0]}
                continue
            res = {
                "agents": agents,
                "sessions": n,
                "db": db,
                "all_running_s": total_s,
                "sessions_per_s": n / total_s,
                "baseline_get_s": baseline_s,
                "ratio": total_s / baseline_s,
                "target_per_s": 500,
            }
            out[f"{agents}x{n}-pending"] = res
            print(
                f"e2e[{db}] {agents:5d} agents {n:6d} pending sessions: all RUNNING in {total_s:.2f}s "
                f"({res['sessions_per_s']:.0f}/s; {n} GET / {baseline_s:.2f}s, ratio {res['ratio']:.1f})",
                flush=True,
            )
    return out


def main(argv: list[str] | None = None) -> dict[str, Any]:
    parser = argparse.ArgumentParser()
    parser.add_argument("--postgres", action="store_true", help="also time the pass and end to end on PostgreSQL")
    parser.add_argument("--big", action="store_true", help="also run end to end with 10,000 sessions")
    parser.add_argument("--skip-e2e", action="store_true")
    parser.add_argument("--skip-pass", action="store_true")
    args = parser.parse_args(argv)
    res: dict[str, Any] = {}
    if not args.skip_pass:
        res["pass_sqlite"] = bench_pass("sqlite")
        if args.postgres:
            res["pass_postgresql"] = bench_pass("postgresql")
    if not args.skip_e2e:
        res["e2e"] = bench_end_to_end(100, [100, 1000], heartbeat=3.0, pending=[100, 1000])
        if args.postgres:
            res["e2e_postgresql"] = bench_end_to_end(100, [100, 1000], heartbeat=3.0, db="postgresql", pending=[1000])
        if args.big:
            # 1,000 agents: a 10 s heartbeat interval keeps their heartbeats at 100/s for the manager.
            res["e2e_big"] = bench_end_to_end(1000, [100, 1000, 10000], heartbeat=10.0, pending=[100, 1000, 10000])
    return res


if __name__ == "__main__":
    results = main()
    for kind in ("pass_sqlite", "pass_postgresql"):
        for name, r in results.get(kind, {}).items():
            verdict = "ok" if name != "1000x10000" or r["pass_s"] <= 1.0 else "MISSED"
            print(f"{kind} {name}: {r['pass_s']:.3f}s (target ≤ 1 s at 1000x10000) {verdict}")
    for kind in ("e2e", "e2e_postgresql", "e2e_big"):
        for name, r in results.get(kind, {}).items():
            if "error" in r:
                print(f"{kind} {name}: FAILED: {r['error']}")
                continue
            verdict = "ok" if r["sessions_per_s"] >= 500 else "MISSED"
            mode = "scheduling pipeline" if name.endswith("-pending") else "API-inclusive"
            print(f"{kind} {name} ({mode}): {r['sessions_per_s']:.0f} sessions/s (target ≥ 500) {verdict}")
    out = Path(__file__).parent / "results"
    out.mkdir(exist_ok=True)
    (out / "scheduler.json").write_text(json.dumps(results, indent=2))
