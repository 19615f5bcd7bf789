"""Execution throughput: ``print(1)`` executions per second across 10 concurrent sessions.

A throw-away cluster (manager + Docker agent, SQLite) runs ``SESSIONS`` Python sessions of the fixture user.
Each client loops on ``POST /session/<name>`` with ``{"mode": "query", "code": "print(1)"}`` (closed loop:
the next execute is sent when the previous one is answered) for ``DURATION`` seconds, all sessions at once.
Two clients, measured one after the other:

* ``sdk``: the Python SDK's :class:`~ai.backend.client.session.AsyncSession` and
  ``ComputeSession.execute`` (one asyncio task per session, httpx underneath, a fresh signature per call);
* ``raw``: one keep-alive HTTP/1.1 connection per session over plain asyncio streams, each request signed
  just before it is sent (a client that costs the machine as little as possible; the 2 cores are shared by
  the client, the manager, the agent and the containers).

Baselines in the same run, on the same machine, with the same client and concurrency:

* ``version``: the unauthenticated ``GET /`` through the raw client (the HTTP stack alone): the
  ``ratio_vs_get_root`` is our executions/s divided by its requests/s;
* ``docker_exec``: ``docker exec <container> python3 -c 'print(1)'``, one loop per container (the
  naive way to run a snippet in a running container without Backend.AI): ``ratio_vs_docker_exec``.

Also reported: p50/p99 latency and the CPU time per execute of each process (client, manager, agent and
the containers' cgroups: runner + REPL), which says where an execute's time goes.
Target: ≥ 300 executions/s (the ``raw`` client).

Run: ``.venv/bin/python benchmarks/bench_exec_throughput.py [--duration S] [--sessions N] [--postgres]``
(about 50 s; ``BENCH_EXEC_DURATION`` also sets the duration). ``--postgres`` runs the manager on a fresh
PostgreSQL database with Redis (``scripts/setup.sh --test``) instead of SQLite.
Results: ``benchmarks/results/exec_throughput.json`` (``exec_throughput-pg.json``).
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import json
import os
import statistics
import subprocess
import sys
import tempfile
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from ai.backend.common.auth import sign_request_headers
from ai.backend.manager.fixtures import ADMIN, USER
from ai.backend.testutils.cluster import Cluster, launch_cluster

sys.path.insert(0, str(Path(__file__).parent))
from bench_api import Connection  # noqa: E402 - the raw keep-alive client, shared with the API benchmark

IMAGE = "python"
SESSIONS = 10
DURATION = 10.0
TARGET_EPS = 300.0
API_VERSION = "v6.20220615"
EXEC_BODY = json.dumps({"mode": "query", "code": "print(1)"}).encode()
EXPECTED_CONSOLE = [["stdout", "1\n"]]
# Unauthenticated calls are limited to 3000 per 15 minutes per client IP by default (the SDK's version
# probes count too): the GET / baseline stops short of that.
ANON_MAX = 2500


def cpu_seconds(pid: int) -> float:
    """User + system CPU time of process ``pid`` so far (Linux ``/proc``)."""
    fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
    return (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")


def rss_bytes(pid: int) -> int:
    """Resident memory of process ``pid`` (``VmRSS`` in ``/proc/<pid>/status``)."""
    for line in Path(f"/proc/{pid}/status").read_text().splitlines():
        if line.startswith("VmRSS:"):
            return int(line.split()[1]) * 1024
    return 0


def _cgroup_file(container_id: str, controller: str, names: tuple[str, ...]) -> Path | None:
    """A container's cgroup file, cgroup v1 (``cgroupfs`` or ``systemd`` driver) or v2."""
    roots = [
        Path("/sys/fs/cgroup") / controller / "docker" / container_id,
        Path("/sys/fs/cgroup") / controller / "system.slice" / f"docker-{container_id}.scope",
        Path("/sys/fs/cgroup/system.slice") / f"docker-{container_id}.scope",
        Path("/sys/fs/cgroup/docker") / container_id,
    ]
    for root in roots:
        for name in names:
            if (root / name).exists():
                return root / name
    return None


def container_cpu_seconds(container_id: str) -> float | None:
    """CPU time of all processes of a container so far (its cgroup), None where unreadable."""
    f = _cgroup_file(container_id, "cpuacct", ("cpuacct.usage", "cpu.stat"))
    if f is None:
        return None
    text = f.read_text()
    if f.name == "cpuacct.usage":
        return int(text) / 1e9
    for line in text.splitlines():
        if line.startswith("usage_usec"):
            return int(line.split()[1]) / 1e6
    return None


def container_memory_bytes(container_id: str) -> int | None:
    """Memory charged to a container's cgroup (``memory.usage_in_bytes`` / ``memory.current``)."""
    f = _cgroup_file(container_id, "memory", ("memory.usage_in_bytes", "memory.current"))
    return int(f.read_text()) if f is not None else None


@dataclass
class CpuProbe:
    """CPU seconds of the cluster's processes and containers between :meth:`start` and :meth:`stop`."""

    cluster: Cluster
    containers: list[str]
    before: dict[str, float] = field(default_factory=dict)

    def _sample(self) -> dict[str, float]:
        out = {"client": time.process_time()}
        for name, proc in self.cluster.procs.items():
            out[name] = cpu_seconds(proc.pid)
        cont = [container_cpu_seconds(c) for c in self.containers]
        if all(c is not None for c in cont):
            out["containers"] = sum(c for c in cont if c is not None)
        return out

    def start(self) -> None:
        self.before = self._sample()

    def stop(self, n: int) -> dict[str, float]:
        """CPU milliseconds per operation of each process since :meth:`start`, for ``n`` operations."""
        after = self._sample()
        return {k: round((after[k] - self.before[k]) / max(n, 1) * 1000, 3) for k in after if k in self.before}


def _percentiles(lat: list[float]) -> dict[str, float]:
    lat = sorted(lat)
    return {"p50_ms": statistics.median(lat) * 1000, "p99_ms": lat[max(int(len(lat) * 0.99) - 1, 0)] * 1000}


def set_rate_limit(cluster: Cluster, access_key: str, limit: int) -> None:
    """Raise a keypair's rate limit through the admin GraphQL API (the default 10 000 calls per 15 minutes
    would stop a benchmark that makes more calls than that)."""
    q = "mutation($ak: String!, $p: ModifyKeyPairInput!) { modify_keypair(access_key: $ak, props: $p) { ok msg } }"
    r = cluster.request(
        "POST", "/admin/graphql", {"query": q, "variables": {"ak": access_key, "p": {"rate_limit": limit}}}, who=ADMIN
    )
    data = r.json()
    data = data.get("data", data)  # the manager answers the result without the "data" wrapper, like upstream
    if r.status_code != 200 or not (data.get("modify_keypair") or {}).get("ok"):
        raise RuntimeError(f"cannot raise the rate limit of {access_key}: {r.status_code} {r.text[:300]}")


def create_sessions(cluster: Cluster, names: list[str], image: str = IMAGE) -> dict[str, str]:
    """Create the sessions (in parallel, like independent users) and return name -> container id."""

    async def one(api: Any, name: str) -> None:
        sess = await api.ComputeSession.get_or_create(image, name=name)
        if sess.status != "RUNNING":
            raise RuntimeError(f"session {name} is {sess.status}")

    async def all_() -> None:
        from ai.backend.client.session import AsyncSession

        async with AsyncSession() as api:
            await asyncio.gather(*(one(api, n) for n in names))

    os.environ.update(cluster.env(USER))
    asyncio.run(all_())
    out = {}
    for name in names:
        info = cluster.request("GET", f"/session/{name}").json()
        out[name] = info["containerId"]
    return out


def destroy_sessions(cluster: Cluster, names: list[str]) -> None:
    for name in names:
        cluster.request("DELETE", f"/session/{name}")


def _check(result: dict[str, Any], console: list[Any]) -> None:
    if result.get("status") != "finished" or console != EXPECTED_CONSOLE:
        raise RuntimeError(f"unexpected execute result: {result} (console so far {console})")


async def raw_execute_loop(
    cluster: Cluster, names: list[str], duration: float, probe: CpuProbe | None = None
) -> dict[str, Any]:
    """Closed loop of signed raw executes, one keep-alive connection per session."""
    host = cluster.endpoint.split("//", 1)[1]
    conns = [await Connection.open(cluster.endpoint) for _ in names]
    lat: list[float] = []
    deadline = 0.0

    def request(name: str, body: bytes = EXEC_BODY) -> bytes:
        path = f"/session/{name}"
        h = sign_request_headers(
            method="POST",
            path_with_query=path,
            host=host,
            content_type="application/json",
            version=API_VERSION,
            access_key=USER["access_key"],
            secret_key=USER["secret_key"],
        )
        head = [
            f"POST {path} HTTP/1.1",
            f"Host: {host}",
            "Content-Type: application/json",
            f"Content-Length: {len(body)}",
            *(f"{k}: {v}" for k, v in h.items()),
        ]
        return ("\r\n".join(head) + "\r\n\r\n").encode("latin-1") + body

    async def execute(conn: Connection, name: str) -> None:
        """One execute, continued while the kernel answers "continued" (its flush timeout passed)."""
        raw, console = request(name), []
        while True:
            status, body = await conn.request(raw)
            if status != 200:
                raise RuntimeError(f"execute in {name}: HTTP {status} {body[:300]!r}")
            result = json.loads(body)["result"]
            console += result.get("console") or []
            if result.get("status") != "continued":
                return _check(result, console)
            cont = {"mode": "continue", "code": "", "runId": result["runId"]}
            raw = request(name, json.dumps(cont).encode())

    async def worker(conn: Connection, name: str) -> None:
        while time.perf_counter() < deadline:
            t = time.perf_counter()
            await execute(conn, name)
            lat.append(time.perf_counter() - t)

    try:
        deadline = time.perf_counter() + 1.0  # warm-up: every connection, server caches
        await asyncio.gather(*(worker(c, n) for c, n in zip(conns, names, strict=True)))
        lat.clear()
        if probe:
            probe.start()
        t0 = time.perf_counter()
        deadline = t0 + duration
        await asyncio.gather(*(worker(c, n) for c, n in zip(conns, names, strict=True)))
        wall = time.perf_counter() - t0
    finally:
        for c in conns:
            await c.close()
    out: dict[str, Any] = {"n": len(lat), "per_s": len(lat) / wall, **_percentiles(lat)}
    if probe:
        out["cpu_ms_per_op"] = probe.stop(len(lat))
    return out


async def raw_get_root_loop(cluster: Cluster, n_conns: int, duration: float) -> dict[str, Any]:
    """The baseline: unauthenticated ``GET /`` with the same client and concurrency."""
    host = cluster.endpoint.split("//", 1)[1]
    raw = f"GET / HTTP/1.1\r\nHost: {host}\r\nAccept: */*\r\n\r\n".encode()
    conns = [await Connection.open(cluster.endpoint) for _ in range(n_conns)]
    lat: list[float] = []
    deadline = time.perf_counter() + duration

    async def worker(conn: Connection) -> None:
        while time.perf_counter() < deadline and len(lat) < ANON_MAX:
            t = time.perf_counter()
            status, body = await conn.request(raw)
            lat.append(time.perf_counter() - t)
            if status != 200:
                raise RuntimeError(f"GET /: HTTP {status} {body[:300]!r}")

    t0 = time.perf_counter()
    try:
        await asyncio.gather(*(worker(c) for c in conns))
    finally:
        for c in conns:
            await c.close()
    return {"n": len(lat), "per_s": len(lat) / (time.perf_counter() - t0), **_percentiles(lat)}


async def sdk_execute_loop(
    cluster: Cluster, names: list[str], duration: float, probe: CpuProbe | None = None
) -> dict[str, Any]:
    """Closed loop through the SDK: ``AsyncSession`` + ``ComputeSession.execute``, one task per session."""
    from ai.backend.client.session import AsyncSession

    os.environ.update(cluster.env(USER))
    lat: list[float] = []
    deadline = 0.0

    async def worker(api: Any, name: str) -> None:
        sess = api.ComputeSession(name)
        while time.perf_counter() < deadline:
            t = time.perf_counter()
            result = await sess.execute(code="print(1)")
            console = list(result.get("console") or [])
            while result.get("status") == "continued":  # the kernel's flush timeout passed: ask again
                result = await sess.execute(run_id=result["runId"], code="", mode="continue")
                console += result.get("console") or []
            lat.append(time.perf_counter() - t)
            _check(result, console)

    async with AsyncSession() as api:
        deadline = time.perf_counter() + 1.0
        await asyncio.gather(*(worker(api, n) for n in names))
        lat.clear()
        if probe:
            probe.start()
        t0 = time.perf_counter()
        deadline = t0 + duration
        await asyncio.gather(*(worker(api, n) for n in names))
        wall = time.perf_counter() - t0
    out: dict[str, Any] = {"n": len(lat), "per_s": len(lat) / wall, **_percentiles(lat)}
    if probe:
        out["cpu_ms_per_op"] = probe.stop(len(lat))
    return out


def docker_exec_loop(containers: list[str], duration: float) -> dict[str, Any]:
    """``docker exec <c> python3 -c 'print(1)'`` in a closed loop per container (the naive baseline)."""

    async def run() -> dict[str, Any]:
        lat: list[float] = []
        deadline = time.perf_counter() + duration

        async def worker(cid: str) -> None:
            while time.perf_counter() < deadline:
                t = time.perf_counter()
                proc = await asyncio.create_subprocess_exec(
                    "docker", "exec", cid, "python3", "-c", "print(1)", stdout=subprocess.PIPE, stderr=subprocess.PIPE
                )
                out, err = await proc.communicate()
                lat.append(time.perf_counter() - t)
                if proc.returncode != 0 or out != b"1\n":
                    raise RuntimeError(f"docker exec failed: {proc.returncode} {err[:300]!r}")

        t0 = time.perf_counter()
        await asyncio.gather(*(worker(c) for c in containers))
        return {"n": len(lat), "per_s": len(lat) / (time.perf_counter() - t0), **_percentiles(lat)}

    return asyncio.run(run())


def main(duration: float = DURATION, n_sessions: int = SESSIONS, postgres: bool = False) -> dict[str, Any]:
    results: dict[str, Any] = {
        "sessions": n_sessions,
        "duration_s": duration,
        "target_per_s": TARGET_EPS,
        "cpus": os.cpu_count(),
        "database": "postgresql+redis" if postgres else "sqlite",
    }
    with tempfile.TemporaryDirectory(prefix="bai-bench-exec-") as tmp, contextlib.ExitStack() as stack:
        db_url = redis_url = None
        if postgres:
            from ai.backend.testutils.databases import fresh_database, fresh_redis

            db_url = stack.enter_context(fresh_database("postgresql", Path(tmp)))
            redis_url = stack.enter_context(fresh_redis())
        cluster = launch_cluster(
            Path(tmp), cpu=max(n_sessions + 2, 4), mem=f"{max(n_sessions, 4)}g", db_url=db_url, redis_url=redis_url
        )
        try:
            set_rate_limit(cluster, USER["access_key"], 10_000_000)
            names = [f"bench-exec-{i}" for i in range(n_sessions)]
            containers = list(create_sessions(cluster, names).values())
            time.sleep(2.0)  # let the spare-container pool refill before measuring
            probe = CpuProbe(cluster, containers)
            results["version"] = asyncio.run(raw_get_root_loop(cluster, n_sessions, duration / 2))
            results["raw"] = asyncio.run(raw_execute_loop(cluster, names, duration, probe))
            results["sdk"] = asyncio.run(sdk_execute_loop(cluster, names, duration, probe))
            results["docker_exec"] = docker_exec_loop(containers, duration / 2)
            destroy_sessions(cluster, names)
        finally:
            cluster.shutdown()
    for client in ("raw", "sdk"):
        r = results[client]
        r["ratio_vs_get_root"] = r["per_s"] / results["version"]["per_s"]
        r["ratio_vs_docker_exec"] = r["per_s"] / results["docker_exec"]["per_s"]
        r["meets_target"] = r["per_s"] >= TARGET_EPS
    return results


def _print(res: dict[str, Any]) -> None:
    print(
        f"{res['sessions']} sessions, {res['duration_s']:.0f} s per measurement, {res['cpus']} CPUs, {res['database']}"
    )
    print(
        f"{'client':12s} {'per s':>7s} {'p50 ms':>7s} {'p99 ms':>7s} {'vs GET /':>8s} {'vs d.exec':>9s}  CPU ms per op"
    )
    for name in ("version", "docker_exec", "raw", "sdk"):
        r = res[name]
        ratios = (
            f"{r['ratio_vs_get_root']:8.3f} {r['ratio_vs_docker_exec']:9.1f}"
            if "ratio_vs_get_root" in r
            else f"{'(baseline)':>18s}"
        )
        cpu = " ".join(f"{k}={v:.2f}" for k, v in r.get("cpu_ms_per_op", {}).items())
        print(f"{name:12s} {r['per_s']:7.0f} {r['p50_ms']:7.2f} {r['p99_ms']:7.2f} {ratios}  {cpu}")
    for name in ("raw", "sdk"):
        verdict = "ok" if res[name]["meets_target"] else "MISSED"
        print(f"{name}: {res[name]['per_s']:.0f} executions/s (target ≥ {res['target_per_s']:.0f}) {verdict}")


if __name__ == "__main__":
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0] if __doc__ else None)
    parser.add_argument(
        "--duration",
        type=float,
        default=float(os.environ.get("BENCH_EXEC_DURATION", DURATION)),
        help="seconds per measurement (default %(default)s)",
    )
    parser.add_argument("--sessions", type=int, default=SESSIONS, help="concurrent sessions (default %(default)s)")
    parser.add_argument(
        "--postgres", action="store_true", help="PostgreSQL and Redis (scripts/setup.sh --test) instead of SQLite"
    )
    args = parser.parse_args(sys.argv[1:])
    t0 = time.perf_counter()
    res = main(args.duration, args.sessions, args.postgres)
    res["runtime_s"] = time.perf_counter() - t0
    _print(res)
    print(f"total {res['runtime_s']:.0f} s")
    out = Path(__file__).parent / "results"
    out.mkdir(exist_ok=True)
    (out / f"exec_throughput{'-pg' if args.postgres else ''}.json").write_text(json.dumps(res, indent=2))
