"""Batch C cold run: compile and run a C file in a fresh session, as a ratio against ``docker run``.

* ours: ``backend.ai run --rm --build 'gcc main.c -o main' --exec ./main c main.c`` — a new session of
  the ``c`` image (``c:latest``, runtime type c), the file uploaded, built and run in batch mode, then the
  session destroyed;
* baseline: ``docker run --rm -v <dir>:/src:ro -w /src c:latest sh -c 'gcc main.c -o /tmp/main && /tmp/main'``
  doing the same compile and run.

Each side is timed ``RUNS`` times after one warm-up run; the median is reported. Like
``bench_skeleton.py``: once with an idle gap of ``GAP`` seconds before every run (a user starting a job on
an idle cluster; the agent's spare container is ready), once back to back. Target: ratio ≤ 2.0.

Run: ``.venv/bin/python benchmarks/bench_batch_c.py [--runs N]`` (about 80 s; needs the ``c`` image:
``bash scripts/build-image.sh c``). Results: ``benchmarks/results/batch_c.json``.
"""

from __future__ import annotations

import argparse
import json
import os
import statistics
import subprocess
import sys
import tempfile
import time
import urllib.request
from pathlib import Path
from typing import Any

from ai.backend.common.auth import CLUSTER_SECRET_HEADER
from ai.backend.manager.fixtures import USER
from ai.backend.testutils.cluster import Cluster, launch_cluster

IMAGE = "c:latest"
RUNS = 7
GAP = 1.5
TARGET = 2.0
BIN = Path(sys.executable).parent
SOURCE = '#include <stdio.h>\nint main(void) { printf("hello from C\\n"); return 0; }\n'
EXPECTED = "hello from C"


def wait_for_image(cluster: Cluster, alias: str = "c", timeout: float = 60) -> None:
    """Wait until an agent has reported the image (it is in the manager's alias list)."""
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        req = urllib.request.Request(
            cluster.endpoint + "/internal/status", headers={CLUSTER_SECRET_HEADER: cluster.secret}
        )
        with urllib.request.urlopen(req, timeout=5) as resp:
            if alias in json.load(resp)["image_aliases"]:
                return
        time.sleep(0.5)
    raise RuntimeError(f"the manager does not know the {alias!r} image; build it: bash scripts/build-image.sh c")


def _timed(cmd: list[str], n: int, *, cwd: Path, env: dict[str, str] | None = None, gap: float = 0.0) -> list[float]:
    out = []
    for _ in range(n):
        time.sleep(gap)
        t = time.perf_counter()
        p = subprocess.run(cmd, cwd=cwd, env=env, capture_output=True, text=True, timeout=300)
        out.append(time.perf_counter() - t)
        if p.returncode != 0 or EXPECTED not in p.stdout:
            raise RuntimeError(f"{' '.join(cmd)} failed ({p.returncode}):\n{p.stdout[-2000:]}\n{p.stderr[-2000:]}")
    return out


def main(runs: int = RUNS) -> dict[str, Any]:
    if subprocess.run(["docker", "image", "inspect", IMAGE], capture_output=True).returncode != 0:
        raise SystemExit(f"{IMAGE} is missing: build it with `bash scripts/build-image.sh c`")
    results: dict[str, Any] = {"runs": runs, "gap_s": GAP}
    with tempfile.TemporaryDirectory(prefix="bai-bench-c-") as tmp:
        src = Path(tmp) / "src"
        src.mkdir()
        (src / "main.c").write_text(SOURCE)
        (Path(tmp) / "cluster").mkdir()
        cluster = launch_cluster(Path(tmp) / "cluster")
        try:
            wait_for_image(cluster)
            env = cluster.env(USER)
            ours = [
                str(BIN / "backend.ai"),
                "run",
                "--rm",
                "--build",
                "gcc main.c -o main",
                "--exec",
                "./main",
                "c",
                "main.c",
            ]
            docker = [
                "docker",
                "run",
                "--rm",
                "-v",
                f"{src}:/src:ro",
                "-w",
                "/src",
                IMAGE,
                "sh",
                "-c",
                "gcc main.c -o /tmp/main && /tmp/main",
            ]
            _timed(docker, 1, cwd=src)  # warm both paths once (page cache, image layers, imports)
            _timed(ours, 1, cwd=src, env=env)
            for name, gap in (("cold_run", GAP), ("cold_run_back_to_back", 0.0)):
                d = statistics.median(_timed(docker, runs, cwd=src, gap=gap))
                o = statistics.median(_timed(ours, runs, cwd=src, env=env, gap=gap))
                results[name] = {"ours_s": o, "docker_run_s": d, "ratio": o / d, "target": TARGET}
        finally:
            cluster.shutdown()
    return results


if __name__ == "__main__":
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0] if __doc__ else None)
    parser.add_argument(
        "--runs",
        type=int,
        default=int(os.environ.get("BENCH_C_RUNS", RUNS)),
        help="timed runs per side and measurement (default %(default)s)",
    )
    args = parser.parse_args(sys.argv[1:])
    t0 = time.perf_counter()
    res = main(args.runs)
    res["runtime_s"] = time.perf_counter() - t0
    for name in ("cold_run", "cold_run_back_to_back"):
        r = res[name]
        verdict = "ok" if r["ratio"] <= r["target"] else "MISSED"
        print(
            f"batch C {name:22s} ours {r['ours_s']:.3f} s, docker run {r['docker_run_s']:.3f} s: "
            f"ratio {r['ratio']:.3f} (target ≤ {r['target']}) {verdict}"
        )
    print(f"total {res['runtime_s']:.0f} s")
    out = Path(__file__).parent / "results"
    out.mkdir(exist_ok=True)
    (out / "batch_c.json").write_text(json.dumps(res, indent=2))
