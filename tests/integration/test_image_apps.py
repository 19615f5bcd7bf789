"""The apps of a real kernel container of the python image (ADR 0012): sshd, ttyd and Jupyter started
through the runner's ``start_service``, then used for real.

The container is started the way the agent starts kernels (``backends/docker/backend.py``): the runner
mounted read-only at ``/opt/backend.ai``, its socket in a mounted ipc directory, the unprivileged
``work`` user, every capability dropped, ``no-new-privileges`` and a read-only root file system with
``/home/work`` and ``/tmp`` mounted writable.  Its app ports are published on 127.0.0.1 only, as the agent
does with ``bind-host``; the tests reach them there (ssh, scp, HTTP, WebSocket) and from inside the
container (``docker exec``).
"""

from __future__ import annotations

import asyncio
import json
import os
import re
import shutil
import subprocess
import uuid
from collections.abc import AsyncIterator, Iterator
from dataclasses import dataclass
from pathlib import Path

import pytest
from websockets.asyncio.client import connect

from ai.backend.agent.runner_client import RunnerClient
from ai.backend.testutils.cluster import docker_available

pytestmark = pytest.mark.docker

IMAGE = "python:latest"
KERNEL_PKG = Path(__file__).resolve().parents[2] / "src" / "ai" / "backend" / "kernel"
APP_PORTS = {"sshd": 2200, "ttyd": 7681, "jupyter": 8090, "jupyterlab": 8091}
_ANSI = re.compile(r"\x1b\[[0-9;?]*[ -/]*[@-~]|\x1b\][^\x07\x1b]*(?:\x07|\x1b\\)|\x1b[=>()][0-9A-Za-z]?")


@dataclass
class Kernel:
    name: str
    socket: str
    home: Path
    ports: dict[int, int]  # container port -> host port on 127.0.0.1

    def exec(self, *argv: str, timeout: float = 30) -> str:
        out = subprocess.run(["docker", "exec", self.name, *argv], capture_output=True, text=True, timeout=timeout)
        assert out.returncode == 0, out.stderr
        return out.stdout

    def fetch(self, port: int, path: str) -> tuple[int, dict[str, str], str]:
        """GET ``http://127.0.0.1:<port><path>`` from inside the container."""
        script = (
            "import json, sys, urllib.request\n"
            f"r = urllib.request.urlopen('http://127.0.0.1:{port}{path}', timeout=20)\n"
            "json.dump([r.status, dict(r.headers), r.read().decode('utf-8', 'replace')], sys.stdout)\n"
        )
        status, headers, body = json.loads(self.exec("python3", "-c", script))
        return status, {k.lower(): v for k, v in headers.items()}, body


def _ssh_options(key: Path, port: int) -> list[str]:
    return [
        "-i", str(key), "-o", "StrictHostKeyChecking=no", "-o", "UserKnownHostsFile=/dev/null",
        "-o", "BatchMode=yes", "-o", "LogLevel=ERROR", "-o", f"Port={port}",
    ]  # fmt: skip


@pytest.fixture(scope="module")
def kernel(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Kernel]:
    if not docker_available():
        pytest.fail("Docker engine or the python kernel image is missing: run scripts/setup.sh first")
    labels = json.loads(
        subprocess.run(
            ["docker", "image", "inspect", "-f", "{{json .Config.Labels}}", IMAGE], capture_output=True, text=True
        ).stdout
    )
    if "jupyter:http:8090" not in labels.get("ai.backend.service-ports", ""):
        pytest.fail(f"{IMAGE} predates the apps (ADR 0012): rebuild it with scripts/build-image.sh python")
    root = tmp_path_factory.mktemp("apps")
    dirs = {name: root / name for name in ("ipc", "home", "tmp")}
    for d, mode in zip(dirs.values(), (0o700, 0o755, 0o1777), strict=True):
        d.mkdir()
        os.chown(d, 1000, 1000)
        d.chmod(mode)
    name = f"bai-test-apps-{uuid.uuid4().hex[:8]}"
    publish = [arg for port in APP_PORTS.values() for arg in ("-p", f"127.0.0.1::{port}")]
    subprocess.run(
        [
            "docker", "run", "-d", "--name", name, "--user", "1000:1000", "--read-only",
            "--cap-drop", "ALL", "--security-opt", "no-new-privileges", "--pids-limit", "512",
            "-v", f"{KERNEL_PKG}:/opt/backend.ai/ai/backend/kernel:ro",
            "-v", f"{dirs['ipc']}:/run/backend.ai/ipc:rw",
            "-v", f"{dirs['home']}:/home/work:rw",
            "-v", f"{dirs['tmp']}:/tmp:rw",
            "--tmpfs", "/var/tmp",
            *publish,
            "--entrypoint", "",
            IMAGE,
            "python3", "-I", "/opt/backend.ai/ai/backend/kernel/runner.py",
            "--socket", "/run/backend.ai/ipc/runner.sock", "--runtime-type", "python", "--workdir", "/home/work",
        ],
        check=True, capture_output=True, timeout=60,
    )  # fmt: skip
    try:
        ports: dict[int, int] = {}
        for line in subprocess.run(["docker", "port", name], capture_output=True, text=True).stdout.splitlines():
            m = re.match(r"(\d+)/tcp -> 127\.0\.0\.1:(\d+)", line)
            if m:
                ports[int(m[1])] = int(m[2])
        yield Kernel(name, str(dirs["ipc"] / "runner.sock"), dirs["home"], ports)
    finally:
        subprocess.run(["docker", "rm", "-f", name], capture_output=True, timeout=60)
        shutil.rmtree(root, ignore_errors=True)


@pytest.fixture
async def runner(kernel: Kernel) -> AsyncIterator[RunnerClient]:
    client = await RunnerClient.open(kernel.socket, timeout=30)
    yield client
    await client.close()


async def start(runner: RunnerClient, name: str, **options: object) -> dict[str, object]:
    answer = await runner.request(
        "start_service", name=name, ports=[APP_PORTS[name]], protocol="http", options=dict(options)
    )
    answer.pop("id", None)
    return answer


async def test_get_apps_lists_the_intrinsic_apps_and_jupyter(runner: RunnerClient) -> None:
    apps = (await runner.request("get_apps"))["apps"]
    assert [app["name"] for app in apps] == ["sshd", "ttyd", "jupyter", "jupyterlab"]
    assert apps[2]["url_template"] == "{protocol}://{host}:{port}/tree"


async def test_sshd_ssh_and_scp_with_the_generated_key(kernel: Kernel, runner: RunnerClient, tmp_path: Path) -> None:
    assert await start(runner, "sshd") == {"status": "started"}
    assert await start(runner, "sshd") == {"status": "running"}
    assert kernel.exec("python3", "-c", "import socket; socket.create_connection(('127.0.0.1', 2200)); print('ok')")
    # No authorized_keys came from the agent: the runner made a keypair, the private half in OpenSSH format.
    exported = kernel.home / "id_container"
    assert exported.read_text().startswith("-----BEGIN OPENSSH PRIVATE KEY-----")
    assert exported.stat().st_mode & 0o777 == 0o600
    assert (kernel.home / ".ssh" / "authorized_keys").stat().st_mode & 0o777 == 0o600
    key = tmp_path / "id_container"
    shutil.copy(exported, key)
    key.chmod(0o600)
    port = kernel.ports[2200]
    opts = _ssh_options(key, port)
    out = subprocess.run(
        ["ssh", *opts, "work@127.0.0.1", "echo hi-$((6*7)); id -un; pwd"], capture_output=True, text=True, timeout=30
    )
    assert out.stdout.split() == ["hi-42", "work", "/home/work"], out.stderr
    # A terminal, as an interactive ssh gets (dropbear runs unprivileged: the pty must still be usable).
    out = subprocess.run(["ssh", "-tt", *opts, "work@127.0.0.1", "tty"], capture_output=True, text=True, timeout=30)
    assert "/dev/pts/" in out.stdout, out.stderr
    # OpenSSH 9's scp speaks SFTP: dropbear runs /usr/lib/sftp-server (openssh-sftp-server).
    up, down = tmp_path / "up.txt", tmp_path / "down.txt"
    up.write_text("through sftp\n")
    scp = ["scp", *opts]
    subprocess.run([*scp, str(up), "work@127.0.0.1:/tmp/up.txt"], check=True, capture_output=True, timeout=30)
    subprocess.run([*scp, "work@127.0.0.1:/tmp/up.txt", str(down)], check=True, capture_output=True, timeout=30)
    assert down.read_text() == "through sftp\n"


async def test_sshd_uses_the_authorized_keys_it_finds(kernel: Kernel, runner: RunnerClient, tmp_path: Path) -> None:
    # What the agent does with the user's keypair: authorized_keys written before the first start.
    key = tmp_path / "user_key"
    subprocess.run(["ssh-keygen", "-q", "-t", "ed25519", "-N", "", "-f", str(key)], check=True, timeout=30)
    await runner.request("shutdown_service", name="sshd")
    before = (kernel.home / "id_container").read_bytes() if (kernel.home / "id_container").exists() else b""
    authorized = kernel.home / ".ssh" / "authorized_keys"
    authorized.write_text(Path(f"{key}.pub").read_text())
    os.chown(authorized, 1000, 1000)
    authorized.chmod(0o600)
    try:
        assert await start(runner, "sshd") == {"status": "started"}
        out = subprocess.run(
            ["ssh", *_ssh_options(key, kernel.ports[2200]), "work@127.0.0.1", "echo user-key"],
            capture_output=True,
            text=True,
            timeout=30,
        )
        assert out.stdout.strip() == "user-key", out.stderr
        if before:
            assert (kernel.home / "id_container").read_bytes() == before  # not regenerated
    finally:
        await runner.request("shutdown_service", name="sshd")
        authorized.unlink()


async def test_ttyd_page_and_terminal(kernel: Kernel, runner: RunnerClient) -> None:
    assert await start(runner, "ttyd") == {"status": "started"}
    status, headers, body = kernel.fetch(7681, "/")
    assert status == 200 and 'src="xterm.js"' in body
    # xterm.js is Debian's browser bundle (libjs-xterm), not bookworm's 288-byte stub.
    status, headers, body = kernel.fetch(7681, "/some/prefix/xterm.js")
    assert status == 200 and len(body) > 100_000 and "Terminal" in body
    status, _, body = kernel.fetch(7681, "/xterm-addon-fit.js")
    assert status == 200 and "FitAddon" in body
    # The terminal itself, through the published port with a third-party WebSocket client.
    port = kernel.ports[7681]
    async with connect(f"ws://127.0.0.1:{port}/prefix/ws", origin=f"http://127.0.0.1:{port}") as ws:  # type: ignore[arg-type]
        await ws.send("r24,80")
        await ws.send("iecho from-$((6*7)); tmux display -p 'session=#S'\r")
        seen = ""
        async with asyncio.timeout(30):
            while not (re.search(r"from-42", seen) and "session=main" in seen):
                frame = await ws.recv()
                seen += _ANSI.sub("", frame.decode("utf-8", "replace") if isinstance(frame, bytes) else frame)


async def test_jupyter_and_jupyterlab(kernel: Kernel, runner: RunnerClient) -> None:
    answer = await start(runner, "jupyter", arguments={"--debug": None})
    assert answer["status"] == "failed" and "argument --debug is not allowed for jupyter" in str(answer["error"])
    assert await start(runner, "jupyter") == {"status": "started"}
    assert await start(runner, "jupyter") == {"status": "running"}
    status, headers, body = kernel.fetch(8090, "/api/status")
    assert status == 200 and "last_activity" in json.loads(body)
    status, headers, body = kernel.fetch(8090, "/tree")  # no token asked: the proxies authenticate
    assert status == 200 and "frame-ancestors 'self'" in headers["content-security-policy"]
    # The notebooks' kernel: ipykernel in the Jupyter venv, seeing the image's own packages.
    spec = kernel.exec("/opt/jupyter/bin/jupyter", "kernelspec", "list", "--json")
    assert "python3" in json.loads(spec)["kernelspecs"]
    kernel.exec("/opt/jupyter/bin/python", "-c", "import ipykernel, numpy, matplotlib")
    assert await start(runner, "jupyterlab") == {"status": "started"}
    status, _, body = kernel.fetch(8091, "/lab")
    assert status == 200 and "JupyterLab" in body
    for name in ("jupyter", "jupyterlab"):
        stopped = await runner.request("shutdown_service", name=name)
        assert stopped["status"] == "stopped"
