"""Soak: 10,000 executes of ``print(1)`` in one session; memory and latency must stay flat.

One session of a throw-away cluster (SQLite) takes ``COUNT`` executes, one after the other, over one
keep-alive connection (each request signed as it is sent). After a warm-up of ``WARMUP`` executes (caches,
pools and allocator arenas fill up), the resident memory (``VmRSS``) of the manager and agent processes
(``Cluster.procs``) and the container's memory (its cgroup's usage, and the summed RSS of its processes:
runner + REPL, from the host's ``/proc``) are sampled every ``SAMPLE_EVERY`` executes.

Reported: p50 latency over the first and the last 1,000 executes (and their ratio), and the memory growth
per execute of each process: the least-squares slope of RSS over the executes after the warm-up, in bytes.
Upstream Backend.AI 23.09.10 grows about 2 MiB per execute; the target here is flat: a slope of at most
``FLAT_BYTES`` per execute for each process, and a last/first p50 ratio of at most 1.5.

Known, bounded growth: the in-memory rate limiter keeps one timestamp per call of the keypair for its
15-minute window (about 40 bytes per execute) and forgets them after the window; tracemalloc finds nothing else growing.

Run: ``.venv/bin/python benchmarks/bench_soak.py [--count N]`` (``BENCH_SOAK_COUNT`` also sets it; the
default 10,000 takes about 1 minute plus 15 s of cluster start on an idle 2-core machine).
Results: ``benchmarks/results/soak.json``.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import os
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

from ai.backend.common.auth import sign_request_headers
from ai.backend.manager.fixtures import USER
from ai.backend.testutils.cluster import Cluster, launch_cluster

sys.path.insert(0, str(Path(__file__).parent))
from bench_api import Connection  # noqa: E402 - the raw keep-alive client
from bench_exec_throughput import (  # noqa: E402
    API_VERSION,
    container_memory_bytes,
    create_sessions,
    rss_bytes,
    set_rate_limit,
)

COUNT = 10_000
WARMUP = 500
SAMPLE_EVERY = 250
WINDOW = 1000  # executes in the "first" and "last" latency windows
FLAT_BYTES = 1024  # allowed growth per execute (upstream: about 2 MiB)
SESSION = "bench-soak"


def container_processes_rss(container_id: str) -> int | None:
    """Summed RSS of the container's processes, read from the host's /proc (PIDs from ``docker top``)."""
    out = subprocess.run(["docker", "top", container_id, "-eo", "pid"], capture_output=True, text=True)
    if out.returncode != 0:
        return None
    total = 0
    for line in out.stdout.split()[1:]:
        try:
            total += rss_bytes(int(line))
        except (OSError, ValueError):
            continue
    return total


def sample(cluster: Cluster, container_id: str) -> dict[str, int | None]:
    out: dict[str, int | None] = {name: rss_bytes(p.pid) for name, p in cluster.procs.items()}
    out["container_cgroup"] = container_memory_bytes(container_id)
    out["container_processes"] = container_processes_rss(container_id)
    return out


def slope(xs: list[int], ys: list[int]) -> float:
    """Least-squares slope of ys over xs."""
    mx, my = statistics.fmean(xs), statistics.fmean(ys)
    den = sum((x - mx) ** 2 for x in xs)
    return sum((x - mx) * (y - my) for x, y in zip(xs, ys, strict=True)) / den if den else 0.0


async def soak(cluster: Cluster, container_id: str, count: int) -> dict[str, Any]:
    host = cluster.endpoint.split("//", 1)[1]
    path = f"/session/{SESSION}"
    body = json.dumps({"mode": "query", "code": "print(1)"}).encode()
    conn = await Connection.open(cluster.endpoint)
    lat: list[float] = []
    samples: list[tuple[int, dict[str, int | None]]] = []
    try:
        for i in range(WARMUP + count):
            if i >= WARMUP and (i - WARMUP) % SAMPLE_EVERY == 0:
                samples.append((i - WARMUP, sample(cluster, container_id)))
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
            t = time.perf_counter()
            status, answer = await conn.request(("\r\n".join(head) + "\r\n\r\n").encode("latin-1") + body)
            if i >= WARMUP:
                lat.append(time.perf_counter() - t)
            result = json.loads(answer)["result"] if status == 200 else None
            if result is None or result.get("console") != [["stdout", "1\n"]]:
                raise RuntimeError(f"execute {i}: HTTP {status} {answer[:300]!r}")
        samples.append((count, sample(cluster, container_id)))
    finally:
        await conn.close()
    first, last = lat[:WINDOW], lat[-WINDOW:]
    res: dict[str, Any] = {
        "count": count,
        "p50_first_ms": statistics.median(first) * 1000,
        "p50_last_ms": statistics.median(last) * 1000,
        "memory": {},
    }
    res["p50_ratio_last_first"] = res["p50_last_ms"] / res["p50_first_ms"]
    for key in samples[0][1]:
        pts = [(n, s[key]) for n, s in samples if s[key] is not None]
        if len(pts) < 2:
            continue
        xs, ys = [p[0] for p in pts], [int(p[1]) for p in pts]  # type: ignore[arg-type]
        per_exec = slope(xs, ys)
        res["memory"][key] = {
            "start_bytes": ys[0],
            "end_bytes": ys[-1],
            "growth_bytes_per_execute": per_exec,
            "flat": per_exec <= FLAT_BYTES,
        }
    return res


def main(count: int = COUNT) -> dict[str, Any]:
    with tempfile.TemporaryDirectory(prefix="bai-bench-soak-") as tmp:
        cluster = launch_cluster(Path(tmp))
        try:
            set_rate_limit(cluster, USER["access_key"], 10_000_000)
            container_id = create_sessions(cluster, [SESSION])[SESSION]
            t0 = time.perf_counter()
            res = asyncio.run(soak(cluster, container_id, count))
            res["soak_s"] = time.perf_counter() - t0
            cluster.request("DELETE", f"/session/{SESSION}")
        finally:
            cluster.shutdown()
    res["target_flat_bytes_per_execute"] = FLAT_BYTES
    res["ok"] = res["p50_ratio_last_first"] <= 1.5 and all(m["flat"] for m in res["memory"].values())
    return res


if __name__ == "__main__":
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0] if __doc__ else None)
    parser.add_argument(
        "--count",
        type=int,
        default=int(os.environ.get("BENCH_SOAK_COUNT", COUNT)),
        help="executes after the warm-up (default %(default)s)",
    )
    args = parser.parse_args(sys.argv[1:])
    if args.count < 2 * WINDOW:
        parser.error(f"--count must be at least {2 * WINDOW}")
    t0 = time.perf_counter()
    res = main(args.count)
    res["runtime_s"] = time.perf_counter() - t0
    print(
        f"{res['count']} executes in {res['soak_s']:.0f} s; p50 first {WINDOW}: {res['p50_first_ms']:.2f} ms, "
        f"last {WINDOW}: {res['p50_last_ms']:.2f} ms (ratio {res['p50_ratio_last_first']:.2f}, target ≤ 1.5)"
    )
    for name, m in res["memory"].items():
        print(
            f"  {name:20s} {m['start_bytes'] / 2**20:8.1f} MiB -> {m['end_bytes'] / 2**20:8.1f} MiB, "
            f"{m['growth_bytes_per_execute']:8.1f} B/execute ({'flat' if m['flat'] else 'GROWS'}; "
            f"upstream 23.09.10: ~2 MiB/execute)"
        )
    print(f"{'ok' if res['ok'] else 'MISSED'}; total {res['runtime_s']:.0f} s")
    out = Path(__file__).parent / "results"
    out.mkdir(exist_ok=True)
    (out / "soak.json").write_text(json.dumps(res, indent=2))
