"""Interactive apps: time to a Jupyter cell through the app proxy, and what each proxy costs.

1. **Time to Jupyter**: from ``POST /session`` to a Jupyter kernel answering ``1+1`` in a browser's way
   (``start-service`` → the app proxy's one-use link → permit cookie → Jupyter's REST API and kernel
   WebSocket through the circuit), against a JupyterHub-style baseline in the same run: ``docker run`` of
   the same image starting the same notebook server on a published port, then the same cell.
   Ratio = ours / baseline (target: ≤ 1.5; the baseline skips scheduling, the proxy and the auth).
2. **Throughput**: a 100 MB file downloaded from Jupyter's ``/files/`` route directly from the
   app's published host port, through the browser-facing app proxy, and through the manager's
   ``tcpproxy`` stream with our ``backend.ai app`` listener (the official CLI's path); ratios of
   throughputs against direct (1.0 = free).
3. **Small round trips**: ``GET /api`` on one keep-alive connection, median latency over 300 calls, the
   same three routes; ratios of latencies against direct.

Run: ``.venv/bin/python benchmarks/bench_apps.py [--rounds 3] [--size-mb 100] [--json FILE]``. It starts its own
throw-away cluster (manager, Docker agent, app proxy) and removes it afterwards.
"""

from __future__ import annotations

import argparse
import json
import statistics
import subprocess
import tempfile
import threading
import time
import uuid
from pathlib import Path
from typing import Any

import httpx

from ai.backend.testutils.cluster import Cluster, _free_port, launch_cluster
from ai.backend.testutils.jupyter import run_cell, wait_api

IMAGE = "python:3.11-debian12"


def _session(cluster: Cluster, name: str) -> dict[str, Any]:
    body = {"image": "python", "name": name, "config": {"resources": {"cpu": "1", "mem": "1g"}}}
    r = cluster.request("POST", "/session", body)
    assert r.status_code in (200, 201), r.text
    doc: dict[str, Any] = r.json()
    return doc


def _open_app(cluster: Cluster, name: str, app: str) -> tuple[httpx.Client, str]:
    """start-service, then the one-use link: a client holding the permit and the circuit's base URL."""
    r = cluster.request("POST", f"/session/{name}/start-service", {"app": app})
    assert r.status_code == 200, r.text
    client = httpx.Client(follow_redirects=True, timeout=120)
    resp = client.get(r.json()["url"])
    assert resp.status_code < 400, resp.text[:300]
    base = f"{resp.url.scheme}://{resp.url.host}:{resp.url.port}"
    return client, base


def time_to_jupyter(cluster: Cluster) -> float:
    name = f"bench-jup-{uuid.uuid4().hex[:6]}"
    t0 = time.perf_counter()
    _session(cluster, name)
    client, base = _open_app(cluster, name, "jupyter")
    try:
        wait_api(client, base)
        assert run_cell(client, base, "1+1") == "2"
    finally:
        client.close()
    elapsed = time.perf_counter() - t0
    cluster.request("DELETE", f"/session/{name}?forced=true")
    return elapsed


def time_to_jupyter_docker() -> float:
    port = _free_port()
    t0 = time.perf_counter()
    cid = subprocess.run(
        [
            "docker", "run", "-d", "--rm", "-p", f"127.0.0.1:{port}:8888", IMAGE,
            "/opt/jupyter/bin/python", "-m", "notebook", "--no-browser", "--ServerApp.ip=0.0.0.0",
            "--ServerApp.port=8888", "--ServerApp.token=", "--ServerApp.password=",
        ],
        capture_output=True, text=True, check=True,
    ).stdout.strip()  # fmt: skip
    try:
        with httpx.Client(timeout=120) as client:
            base = f"http://127.0.0.1:{port}"
            wait_api(client, base)
            assert run_cell(client, base, "1+1") == "2"
        return time.perf_counter() - t0
    finally:
        subprocess.run(["docker", "rm", "-f", cid], capture_output=True)


def _download(client: httpx.Client, url: str) -> tuple[float, int]:
    t0 = time.perf_counter()
    n = 0
    # Jupyter refuses /files/ without a Referer of its own origin when it has no token (as a browser sends).
    referer = url.split("/files/")[0] + "/tree"
    with client.stream("GET", url, headers={"Referer": referer}) as r:
        assert r.status_code == 200, r.status_code
        for chunk in r.iter_raw(1 << 20):
            n += len(chunk)
    return time.perf_counter() - t0, n


def _latency(client: httpx.Client, url: str, count: int) -> float:
    samples = []
    for _ in range(count):
        t0 = time.perf_counter()
        r = client.get(url)
        samples.append(time.perf_counter() - t0)
        assert r.status_code == 200
    return statistics.median(samples)


class CliProxy:
    """Our ``backend.ai app`` listener (the manager's tcpproxy stream) in a background thread."""

    def __init__(self, cluster: Cluster, session: str, app: str) -> None:
        self.port = _free_port()
        self.proc = subprocess.Popen(
            [str(Path(__file__).resolve().parents[1] / ".venv/bin/backend.ai"), "app", session, app,
             "-b", f"127.0.0.1:{self.port}"],
            env=cluster.env(), stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True,
        )  # fmt: skip
        assert self.proc.stdout is not None
        for line in self.proc.stdout:
            if f"127.0.0.1:{self.port}" in line:
                break
        threading.Thread(target=self.proc.stdout.read, daemon=True).start()

    def close(self) -> None:
        self.proc.terminate()
        self.proc.wait(10)


def transfer(cluster: Cluster, size_mb: int, rounds: int, calls: int) -> dict[str, Any]:
    name = f"bench-xfer-{uuid.uuid4().hex[:6]}"
    _session(cluster, name)
    code = f"open('big.bin','wb').write(bytes({size_mb} << 20))"
    r = cluster.request("POST", f"/session/{name}", {"mode": "query", "code": code, "runId": "x"})
    assert r.status_code == 200, r.text
    # The published host port of Jupyter (GraphQL keeps the raw service ports).
    data = cluster.gql(
        "query($f: String) { compute_session_list(filter: $f) { items { service_ports } } }",
        {"f": f'name == "{name}"'},
    )
    ports = json.loads(data["compute_session_list"]["items"][0]["service_ports"])
    host_port = next(p["host_ports"][0] for p in ports if p["name"] == "jupyter")
    proxied, base_proxy = _open_app(cluster, name, "jupyter")
    cli = CliProxy(cluster, name, "jupyter")
    routes = {
        "direct": (httpx.Client(timeout=120), f"http://127.0.0.1:{host_port}"),
        "appproxy": (proxied, base_proxy),
        "tcpproxy": (httpx.Client(timeout=120), f"http://127.0.0.1:{cli.port}"),
    }
    out: dict[str, Any] = {}
    try:
        for client, base in routes.values():
            wait_api(client, base)
        speeds: dict[str, list[float]] = {k: [] for k in routes}
        for _ in range(rounds):
            for key, (client, base) in routes.items():
                secs, n = _download(client, f"{base}/files/big.bin")
                assert n == size_mb << 20, (key, n)
                speeds[key].append(n / secs / 1e6)
        lat = {key: _latency(client, f"{base}/api", calls) for key, (client, base) in routes.items()}
        for key in routes:
            mbps = statistics.median(speeds[key])
            out[key] = {"MB_per_s": round(mbps, 1), "rounds": [round(s, 1) for s in speeds[key]],
                        "latency_ms": round(lat[key] * 1000, 3)}  # fmt: skip
        for key in ("appproxy", "tcpproxy"):
            out[key]["throughput_ratio"] = round(out[key]["MB_per_s"] / out["direct"]["MB_per_s"], 3)
            out[key]["latency_ratio"] = round(out[key]["latency_ms"] / out["direct"]["latency_ms"], 2)
    finally:
        cli.close()
        for client, _ in routes.values():
            client.close()
        cluster.request("DELETE", f"/session/{name}?forced=true")
    return out


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--rounds", type=int, default=3)
    ap.add_argument("--size-mb", type=int, default=100)
    ap.add_argument("--calls", type=int, default=300)
    ap.add_argument("--json", type=Path)
    ap.add_argument("--only", choices=("startup", "transfer"), help="run one part")
    args = ap.parse_args()
    result: dict[str, Any] = {}
    with tempfile.TemporaryDirectory(prefix="bench-apps-") as tmp:
        cluster = launch_cluster(Path(tmp), cpu=2, mem="6g", appproxy=True)
        try:
            ours, base = [], []
            for _ in range(0 if args.only == "transfer" else args.rounds):
                base.append(time_to_jupyter_docker())
                ours.append(time_to_jupyter(cluster))
            if ours:
                result["time_to_jupyter"] = {
                    "ours_s": [round(x, 3) for x in ours],
                    "docker_run_s": [round(x, 3) for x in base],
                    "ratio": round(statistics.median(ours) / statistics.median(base), 3),
                }
                print(json.dumps(result, indent=2), flush=True)
            if args.only != "startup":
                result["transfer"] = transfer(cluster, args.size_mb, args.rounds, args.calls)
        finally:
            cluster.shutdown()
    print(json.dumps(result, indent=2))
    if args.json:
        args.json.write_text(json.dumps(result, indent=2))


if __name__ == "__main__":
    main()
