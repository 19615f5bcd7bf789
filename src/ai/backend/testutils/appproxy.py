"""An app proxy process (``ai.backend.appproxy.server``) on free loopback ports, for tests."""

from __future__ import annotations

import json
import subprocess
import sys
import time
import urllib.error
import urllib.request
from dataclasses import dataclass
from pathlib import Path

from .ports import free_port_block
from .processes import stop_process

__all__ = ["AppProxy", "free_port_range", "launch_appproxy"]


def free_port_range(count: int) -> tuple[int, int]:
    """``count`` consecutive ports that are free on 127.0.0.1 now, as ``(first, last)`` (below the ephemeral
    range, see :mod:`ai.backend.testutils.ports`)."""
    return free_port_block(count, "127.0.0.1")


@dataclass
class AppProxy:
    """A running app proxy: its API URL, its circuit port range, and its process and log."""

    url: str
    port_range: tuple[int, int]
    config: Path
    proc: subprocess.Popen[bytes]
    log: Path

    def status(self) -> dict[str, object]:
        with urllib.request.urlopen(self.url + "/v2/status", timeout=5) as resp:
            doc: dict[str, object] = json.load(resp)
            return doc

    def shutdown(self) -> None:
        stop_process(self.proc, 10)


def launch_appproxy(
    state: Path,
    *,
    secret: str,
    manager_url: str,
    alive_interval: float = 5.0,
    idle_timeout: float = 3600.0,
    circuits: int = 8,
    ports: tuple[int, int] | None = None,
) -> AppProxy:
    """Write ``appproxy.toml`` under ``state`` (room for ``circuits`` circuits), start the proxy and wait until
    its ``/v2/status`` answers. ``ports`` (first, last) fixes its API port (first) and circuit ports (the rest),
    e.g. when the manager's config must name the proxy before it starts."""
    state.mkdir(parents=True, exist_ok=True)
    first, last = ports or free_port_range(circuits + 1)
    api_port, port_range = first, (first + 1, last)
    config = state / "appproxy.toml"
    config.write_text(
        "[appproxy]\n"
        f'bind-host = "127.0.0.1"\napi-port = {api_port}\nport-range = [{port_range[0]}, {port_range[1]}]\n'
        f"secret = {json.dumps(secret)}\nmanager-url = {json.dumps(manager_url)}\n"
        f"alive-interval = {alive_interval}\nidle-timeout = {idle_timeout}\n"
    )
    log = state / "appproxy.log"
    proc = subprocess.Popen(
        [sys.executable, "-m", "ai.backend.appproxy.server", "--config", str(config)],
        stdout=log.open("ab"),
        stderr=subprocess.STDOUT,
        start_new_session=True,
    )
    proxy = AppProxy(f"http://127.0.0.1:{api_port}", port_range, config, proc, log)
    deadline = time.monotonic() + 30
    while time.monotonic() < deadline:
        if proc.poll() is not None:
            raise RuntimeError("app proxy died: " + log.read_text()[-3000:])
        try:
            proxy.status()
            return proxy
        except (urllib.error.URLError, OSError):
            time.sleep(0.1)
    proxy.shutdown()
    raise RuntimeError("app proxy did not start: " + log.read_text()[-3000:])
