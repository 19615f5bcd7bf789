"""A throw-away storage proxy process for tests and benchmarks (see docs/storage-proxy.md).

``launch_storage_proxy(state)`` writes ``state/storage-proxy.toml`` with one ``vfs`` volume
(``volume1`` at ``state/vfroot/volume1``, with ``quota-images`` when run as root), starts
``python -m ai.backend.storage.server`` on free loopback ports and waits until both APIs answer. Use
:meth:`StorageProxy.manager_toml` for the manager's ``[storage-proxies.<node_id>]`` table.
"""

from __future__ import annotations

import json
import os
import re
import secrets
import subprocess
import sys
import time
import urllib.request
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import httpx

from ai.backend.common.contracts.storage import AUTH_HEADER

from .processes import stop_process, unmount_under

__all__ = ["MANAGER_AUTH_HEADER", "StorageProxy", "launch_storage_proxy"]

MANAGER_AUTH_HEADER = AUTH_HEADER


@dataclass
class StorageProxy:
    state: Path
    client_url: str
    manager_url: str
    secret: str  # the manager secret ([api.manager].secret)
    jwt_secret: str  # signs upload/download tokens ([storage-proxy].secret)
    volume_path: Path  # the host directory of volume "volume1"
    proc: subprocess.Popen[bytes]
    node_id: str = "local"
    volume: str = "volume1"
    log_path: Path = field(default_factory=Path)
    env: dict[str, str] = field(default_factory=dict)  # the process's environment (kept for restart())

    @property
    def host(self) -> str:
        """The volume host name the manager uses: ``<node_id>:<volume>``."""
        return f"{self.node_id}:{self.volume}"

    @property
    def pid(self) -> int:
        return self.proc.pid

    def manager_headers(self) -> dict[str, str]:
        return {MANAGER_AUTH_HEADER: self.secret}

    def request(self, method: str, path: str, body: Any = None, timeout: float = 60) -> httpx.Response:
        """A request to the manager-facing API with the secret header."""
        return httpx.request(
            method, self.manager_url + path, json=body, headers=self.manager_headers(), timeout=timeout
        )

    def manager_toml(self) -> str:
        """The ``[storage-proxies.<node_id>]`` table for ``manager.toml``."""
        return "\n".join(
            [
                f"[storage-proxies.{self.node_id}]",
                f"client-api = {json.dumps(self.client_url)}",
                f"manager-api = {json.dumps(self.manager_url)}",
                f"secret = {json.dumps(self.secret)}",
            ]
        )

    def folder_path(self, vfid: str) -> Path:
        """Where folder ``vfid`` (32 hex digits or a UUID) lives on the host."""
        v = vfid.replace("-", "").lower()
        return self.volume_path / v[0:2] / v[2:4] / v[4:]

    def log(self) -> str:
        try:
            return self.log_path.read_text(errors="replace")
        except OSError:
            return ""

    def kill(self) -> None:
        """SIGKILL the proxy (a crash: no shutdown code runs) and reap it. Its quota images stay mounted, as
        after a real crash; :meth:`restart` or :meth:`shutdown` deal with them."""
        if self.proc.poll() is None:
            self.proc.kill()
        self.proc.wait()

    def restart(self, timeout: float = 30) -> None:
        """Start the proxy again (stopped first if it still runs) with the same configuration and state, on the
        same ports (so the manager's ``[storage-proxies]`` URLs and handed-out upload URLs stay valid)."""
        stop_process(self.proc, 10)
        config = self.state / "storage-proxy.toml"
        text = config.read_text()
        for section, url in (("client", self.client_url), ("manager", self.manager_url)):
            port = url.rsplit(":", 1)[1]
            text = re.sub(rf"(\[api\.{section}\]\nservice-addr = \{{[^}}]*port = )\d+", rf"\g<1>{port}", text)
        config.write_text(text)
        self.proc = _spawn(config, self.log_path, self.env, timeout)
        _wait_answering(self, timeout)

    def shutdown(self) -> None:
        """Stop the proxy (SIGTERM, then SIGKILL after 10 s) and unmount its folders' quota images (a proxy
        started again on the same state mounts them again)."""
        stop_process(self.proc, 10)
        unmount_under(self.volume_path)


def launch_storage_proxy(
    state: Path,
    *,
    manager_secret: str | None = None,
    jwt_secret: str | None = None,
    node_id: str = "local",
    volume: str = "volume1",
    session_expire: str = "1h",
    max_upload_size: str = "100g",
    scandir_limit: int = 1000,
    extra_toml: str = "",
    env: dict[str, str] | None = None,
    timeout: float = 30,
) -> StorageProxy:
    """Start a storage proxy with its state (config, volume, log) under ``state``; ready when returned."""
    state.mkdir(parents=True, exist_ok=True)
    manager_secret = manager_secret or secrets.token_hex(16)
    jwt_secret = jwt_secret or secrets.token_hex(24)
    volume_path = (state / "vfroot" / volume).resolve()
    lines = [
        "[storage-proxy]",
        f"node-id = {json.dumps(node_id)}",
        f"secret = {json.dumps(jwt_secret)}",
        f"session-expire = {json.dumps(session_expire)}",
        f"max-upload-size = {json.dumps(max_upload_size)}",
        f"scandir-limit = {scandir_limit}",
        "",
        "[api.client]",
        'service-addr = { host = "127.0.0.1", port = 0 }',
        "",
        "[api.manager]",
        'service-addr = { host = "127.0.0.1", port = 0 }',
        f"secret = {json.dumps(manager_secret)}",
        "",
        f"[volume.{volume}]",
        'backend = "vfs"',
        f"path = {json.dumps(str(volume_path))}",
    ]
    if os.geteuid() == 0:  # as the all-in-one does: quotas hold for writes from sessions (needs mount)
        lines.append("options = { quota-images = true }")
    if extra_toml:
        lines += ["", extra_toml]
    config = state / "storage-proxy.toml"
    config.write_text("\n".join(lines) + "\n")
    log_path = state / "storage-proxy.log"
    proc_env = {k: v for k, v in os.environ.items() if not k.startswith("BACKENDAI_STORAGE_PROXY__")}
    proc_env.update(env or {})
    proc = _spawn(config, log_path, proc_env, timeout)
    ports = json.loads((state / "storage-proxy.ready").read_text())
    sp = StorageProxy(
        state=state,
        client_url=f"http://127.0.0.1:{ports['client_port']}",
        manager_url=f"http://127.0.0.1:{ports['manager_port']}",
        secret=manager_secret,
        jwt_secret=jwt_secret,
        volume_path=volume_path,
        proc=proc,
        node_id=node_id,
        volume=volume,
        log_path=log_path,
        env=proc_env,
    )
    _wait_answering(sp, timeout)
    return sp


def _spawn(config: Path, log_path: Path, env: dict[str, str], timeout: float) -> subprocess.Popen[bytes]:
    """Start the proxy of ``config`` and wait until it has written its ready file (its ports)."""
    ready = config.parent / "storage-proxy.ready"
    ready.unlink(missing_ok=True)
    log = open(log_path, "ab")
    proc = subprocess.Popen(
        [sys.executable, "-m", "ai.backend.storage.server", "-f", str(config), "--ready-file", str(ready)],
        stdout=log,
        stderr=log,
        env=env,
        start_new_session=True,
    )
    log.close()
    deadline = time.monotonic() + timeout
    while not ready.exists():
        if proc.poll() is not None:
            raise RuntimeError("storage proxy died: " + log_path.read_text(errors="replace")[-3000:])
        if time.monotonic() > deadline:
            proc.kill()
            raise RuntimeError("storage proxy not ready: " + log_path.read_text(errors="replace")[-3000:])
        time.sleep(0.05)
    return proc


def _wait_answering(sp: StorageProxy, timeout: float) -> None:
    """The ready file is written during start-up; wait until the manager API really answers."""
    deadline = time.monotonic() + timeout
    while True:
        req = urllib.request.Request(sp.manager_url + "/", headers=sp.manager_headers())
        try:
            with urllib.request.urlopen(req, timeout=2):
                return
        except OSError:
            if sp.proc.poll() is not None or time.monotonic() > deadline:
                sp.shutdown()
                raise RuntimeError("storage proxy not answering: " + sp.log()[-3000:]) from None
            time.sleep(0.05)
