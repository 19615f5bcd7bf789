"""A webserver (``ai.backend.web.server``) in front of a test cluster, for tests and benchmarks."""

from __future__ import annotations

import json
import socket
import subprocess
import sys
import time
import urllib.error
import urllib.request
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from .processes import stop_process

__all__ = ["WebServer", "launch_webserver"]


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


@dataclass
class WebServer:
    """A running webserver process and its URL."""

    url: str
    config: Path
    proc: subprocess.Popen[bytes]
    log: Path

    def env(self) -> dict[str, str]:
        """The BACKEND_* variables of a client in session mode (no keys: it logs in)."""
        return {"BACKEND_ENDPOINT": self.url, "BACKEND_ENDPOINT_TYPE": "session"}

    def shutdown(self) -> None:
        stop_process(self.proc, 10)


def launch_webserver(
    state: Path,
    manager_endpoint: str,
    *,
    redis_url: str | None = None,
    session: dict[str, Any] | None = None,
    extra_toml: str = "",
) -> WebServer:
    """Write ``web.toml`` under ``state`` (``[session]`` keys from ``session``), start the webserver for the
    manager at ``manager_endpoint`` and wait until its ``/func/`` answers."""
    state.mkdir(parents=True, exist_ok=True)
    port = _free_port()
    lines = ["[service]", f"port = {port}", "", "[api]", f"endpoint = {json.dumps(manager_endpoint)}", "", "[session]"]
    if redis_url:
        lines.append(f"redis-url = {json.dumps(redis_url)}")
    lines += [f"{k} = {json.dumps(v)}" for k, v in (session or {}).items()]
    config = state / "web.toml"
    config.write_text("\n".join(lines) + "\n" + extra_toml)
    log = state / "web.log"
    proc = subprocess.Popen(
        [sys.executable, "-m", "ai.backend.web.server", "-f", str(config)],
        stdout=log.open("ab"),
        stderr=subprocess.STDOUT,
        start_new_session=True,
    )
    ws = WebServer(f"http://127.0.0.1:{port}", config, proc, log)
    deadline = time.monotonic() + 30
    while time.monotonic() < deadline:
        if proc.poll() is not None:
            raise RuntimeError("webserver died: " + log.read_text()[-3000:])
        try:
            with urllib.request.urlopen(ws.url + "/func/", timeout=2):
                return ws
        except urllib.error.HTTPError:
            return ws  # it answers (the manager may not; the caller decides)
        except OSError:
            time.sleep(0.1)
    ws.shutdown()
    raise RuntimeError("webserver did not start: " + log.read_text()[-3000:])
