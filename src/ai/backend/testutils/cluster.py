"""A throw-away real cluster (manager + Docker agent processes) for tests and benchmarks.

Each instance gets its own state directory, free ports, agent id and SQLite database, so it never
touches a cluster started with ``make demo``.
"""

from __future__ import annotations

import json
import os
import secrets
import signal
import socket
import subprocess
import sys
import time
import urllib.request
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import httpx

from ai.backend.common.auth import CLUSTER_SECRET_HEADER, sign_request_headers
from ai.backend.manager.fixtures import USER

REPO = Path(__file__).resolve().parents[4]


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def docker_available() -> bool:
    try:
        out = subprocess.run(["docker", "image", "inspect", "python:latest"], capture_output=True, timeout=20)
        return out.returncode == 0
    except (OSError, subprocess.TimeoutExpired):
        return False


@dataclass
class Cluster:
    state: Path
    endpoint: str
    secret: str
    agent_id: str
    procs: dict[str, subprocess.Popen[bytes]]

    def env(self, who: dict[str, Any] = USER) -> dict[str, str]:
        """Environment for the SDK/CLI acting as ``who``."""
        env = {k: v for k, v in os.environ.items() if not k.startswith(("BACKEND_", "SORNA_"))}
        env.update(BACKEND_ENDPOINT=self.endpoint, BACKEND_ACCESS_KEY=who["access_key"],
                   BACKEND_SECRET_KEY=who["secret_key"], BACKEND_ENDPOINT_TYPE="api")
        return env

    def request(self, method: str, path: str, body: Any = None, who: dict[str, Any] = USER,
                headers: dict[str, str] | None = None, timeout: float = 120) -> httpx.Response:
        """A signed request as ``who``; ``headers`` override the signed ones (to test failures)."""
        host = self.endpoint.split("//", 1)[1]
        h = sign_request_headers(method=method, path_with_query=path, host=host, content_type="application/json",
                                 version="v6.20220615", access_key=who["access_key"], secret_key=who["secret_key"])
        h.update(headers or {})
        content = json.dumps(body) if body is not None else None
        return httpx.request(method, self.endpoint + path, headers=h, content=content, timeout=timeout)

    def start(self, name: str) -> None:
        module = {"manager": "ai.backend.manager.server", "agent": "ai.backend.agent.server"}[name]
        log = open(self.state / f"{name}.log", "ab")
        self.procs[name] = subprocess.Popen([sys.executable, "-m", module, "-f", str(self.state / f"{name}.toml")],
                                            stdout=log, stderr=log, start_new_session=True)

    def stop(self, name: str) -> None:
        proc = self.procs.pop(name, None)
        if proc and proc.poll() is None:
            proc.send_signal(signal.SIGTERM)
            try:
                proc.wait(15)
            except subprocess.TimeoutExpired:
                proc.kill()
                proc.wait()

    def wait_ready(self, timeout: float = 60) -> None:
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            req = urllib.request.Request(self.endpoint + "/internal/status",
                                         headers={CLUSTER_SECRET_HEADER: self.secret})
            try:
                with urllib.request.urlopen(req, timeout=2) as resp:
                    st = json.load(resp)
                    if st["agents_alive"] and "python" in st["image_aliases"]:
                        return
            except OSError:
                pass
            for name, p in self.procs.items():
                if p.poll() is not None:
                    raise RuntimeError(f"{name} died: " + (self.state / f"{name}.log").read_text()[-3000:])
            time.sleep(0.2)
        raise RuntimeError("cluster not ready: " + (self.state / "manager.log").read_text()[-2000:])

    def containers(self) -> list[str]:
        out = subprocess.run(["docker", "ps", "-aq", "--filter", f"label=ai.backend.agent-id={self.agent_id}"],
                             capture_output=True, text=True, check=True)
        return out.stdout.split()

    def shutdown(self) -> None:
        """Stop both servers and remove this cluster's containers."""
        self.stop("agent")
        self.stop("manager")
        ids = self.containers()
        if ids:
            subprocess.run(["docker", "rm", "-f", *ids], capture_output=True)


def launch_cluster(state: Path, *, cpu: int = 4, mem: str = "4g") -> Cluster:
    """Write configs under ``state``, create the schema and fixtures, start both servers and wait."""
    mport, aport = _free_port(), _free_port()
    secret = secrets.token_urlsafe(24)
    agent_id = f"i-test-{secrets.token_hex(4)}"
    (state / "manager.toml").write_text(
        f'[manager]\nservice-addr-port = {mport}\ncluster-secret = "{secret}"\nstate-dir = "{state}"\n'
        'heartbeat-timeout = 30.0\n'
    )
    (state / "agent.toml").write_text(
        f'[agent]\nid = "{agent_id}"\nrpc-listen-port = {aport}\nmanager-url = "http://127.0.0.1:{mport}"\n'
        f'cluster-secret = "{secret}"\nheartbeat-interval = 1.0\n\n'
        f'[container]\nscratch-root = "{state}/scratches"\n\n[resource]\ncpu = {cpu}\nmem = "{mem}"\n'
    )
    cli = [sys.executable, "-m", "ai.backend.manager.cli", "-f", str(state / "manager.toml")]
    subprocess.run([*cli, "schema", "oneshot"], check=True, capture_output=True)
    subprocess.run([*cli, "fixture", "populate"], check=True, capture_output=True)
    c = Cluster(state, f"http://127.0.0.1:{mport}", secret, agent_id, {})
    c.start("manager")
    c.start("agent")
    try:
        c.wait_ready()
    except Exception:
        c.shutdown()
        raise
    return c
