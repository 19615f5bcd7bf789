"""Walking-skeleton benchmarks, each a ratio against a baseline measured in the same run.

1. Cold run: ``backend.ai run --rm python -c pass`` vs ``docker run --rm <image> python3 -c pass``
   (target ≤ 2.0).
2. Warm execute: p50 of ``print(1)`` through the SDK in a running session vs ``docker exec
   <container> python3 -c 'print(1)'`` (target ≤ 0.25).
3. CLI start-up: ``backend.ai --help`` vs ``python3 -c pass`` (target ≤ 5).

Run: ``.venv/bin/python benchmarks/bench_skeleton.py`` (starts its own throw-away cluster).
"""

from __future__ import annotations

import json
import os
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

from ai.backend.manager.fixtures import USER
from ai.backend.testutils.cluster import launch_cluster

IMAGE = "python:3.11-debian12"
BIN = Path(sys.executable).parent


def _time(cmd: list[str], n: int, env: dict[str, str] | None = None, gap: float = 0.0) -> list[float]:
    out = []
    for _ in range(n):
        time.sleep(gap)
        t = time.perf_counter()
        subprocess.run(cmd, env=env, check=True, capture_output=True)
        out.append(time.perf_counter() - t)
    return out


def main() -> dict[str, Any]:
    results: dict[str, Any] = {}
    with tempfile.TemporaryDirectory(prefix="bai-bench-") as tmp:
        cluster = launch_cluster(Path(tmp))
        try:
            env = cluster.env(USER)
            cli = [str(BIN / "backend.ai")]
            # Warm both paths once (page cache, image layers, imports).
            _time(["docker", "run", "--rm", IMAGE, "python3", "-c", "pass"], 1)
            _time([*cli, "run", "--rm", "python", "-c", "pass"], 1, env)
            n = 7
            # A user starting a session on an idle cluster: both sides get the same idle gap before each run.
            docker_cold = statistics.median(
                _time(["docker", "run", "--rm", IMAGE, "python3", "-c", "pass"], n, gap=1.5)
            )
            ours_cold = statistics.median(_time([*cli, "run", "--rm", "python", "-c", "pass"], n, env, gap=1.5))
            results["cold_run"] = {
                "ours_s": ours_cold,
                "docker_run_s": docker_cold,
                "ratio": ours_cold / docker_cold,
                "target": 2.0,
            }
            # Back to back (no gap): the spare container is still being replaced when the next run starts.
            docker_b2b = statistics.median(_time(["docker", "run", "--rm", IMAGE, "python3", "-c", "pass"], n))
            ours_b2b = statistics.median(_time([*cli, "run", "--rm", "python", "-c", "pass"], n, env))
            results["cold_run_back_to_back"] = {
                "ours_s": ours_b2b,
                "docker_run_s": docker_b2b,
                "ratio": ours_b2b / docker_b2b,
                "target": 2.0,
            }

            os.environ.update(env)
            from ai.backend.client.session import Session

            with Session() as api:
                sess = api.ComputeSession.get_or_create("python", name="bench-warm")
                for _ in range(20):
                    sess.execute(code="print(1)")
                lat = []
                for _ in range(300):
                    t = time.perf_counter()
                    r = sess.execute(code="print(1)")
                    lat.append(time.perf_counter() - t)
                    assert r["console"] == [["stdout", "1\n"]], r
                cid = subprocess.run(
                    ["docker", "ps", "-q", "--filter", f"label=ai.backend.agent-id={cluster.agent_id}"],
                    capture_output=True,
                    text=True,
                    check=True,
                ).stdout.split()[0]
                _time(["docker", "exec", cid, "python3", "-c", "print(1)"], 2)
                dexec = statistics.median(_time(["docker", "exec", cid, "python3", "-c", "print(1)"], 30))
                sess.destroy()
            p50 = statistics.median(lat)
            p99 = sorted(lat)[int(len(lat) * 0.99) - 1]
            results["warm_execute"] = {
                "ours_p50_s": p50,
                "ours_p99_s": p99,
                "docker_exec_s": dexec,
                "ratio": p50 / dexec,
                "target": 0.25,
            }
        finally:
            cluster.shutdown()
    py = statistics.median(_time([sys.executable, "-c", "pass"], 21))
    helpc = statistics.median(_time([str(BIN / "backend.ai"), "--help"], 21))
    results["cli_help"] = {"ours_s": helpc, "python_pass_s": py, "ratio": helpc / py, "target": 5.0}
    return results


if __name__ == "__main__":
    res = main()
    for name, r in res.items():
        verdict = "ok" if r["ratio"] <= r["target"] else "MISSED"
        print(f"{name:14s} ratio {r['ratio']:.3f} (target ≤ {r['target']}) {verdict}  {json.dumps(r)}")
    out = Path(__file__).parent / "results"
    out.mkdir(exist_ok=True)
    (out / "skeleton.json").write_text(json.dumps(res, indent=2))
