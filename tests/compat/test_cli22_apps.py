"""The official 22.03 CLI's app commands against a real cluster: ``apps``, ``app`` (Jupyter through the
manager's ``tcpproxy`` stream), ``ssh`` and ``scp`` (dropbear in the session, SFTP for OpenSSH's scp).

One module-scoped python session serves every test; each test checks the result through the app itself
(Jupyter's REST API and a kernel cell, a command's output over SSH, a file's bytes after a round trip).
"""

from __future__ import annotations

import contextlib
import os
import shutil
import signal
import socket
import subprocess
import time
import uuid
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import httpx
import pytest

from ai.backend.manager.fixtures import USER
from ai.backend.testutils.cluster import Cluster
from ai.backend.testutils.jupyter import run_cell, wait_api
from ai.backend.testutils.web import launch_webserver

from .conftest import CLI, OfficialClients, client_env
from .test_cli22_sessions import api_create, cleanup

pytestmark = pytest.mark.docker


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


#: The 22.03 ``backend.ai app`` has no signal handler: Ctrl-C is a KeyboardInterrupt wherever it lands, and one
#: that lands while aiohttp's protocol receives data is swallowed there (``data_received`` catches
#: ``BaseException``), so the proxy runs on. Under load that happens to the SIGINT that ``ssh``/``scp`` send it when
#: they finish (then they wait for it forever), and to ours. A user presses Ctrl-C again; so do these tests, every
#: few seconds, but only once nothing else of the command is still running (see ``CLIENT_BUGS``).
REINTERRUPT_AFTER = 6.0


def _children(pid: int) -> list[tuple[int, str]]:
    """``(pid, command line)`` of the direct children of ``pid``."""
    out = subprocess.run(["pgrep", "-P", str(pid)], capture_output=True, text=True).stdout.split()
    kids = []
    for child in out:
        try:
            cmd = Path(f"/proc/{child}/cmdline").read_bytes().replace(b"\0", b" ").decode(errors="replace")
        except OSError:
            continue
        kids.append((int(child), cmd))
    return kids


def _stop_app(proc: subprocess.Popen[str], timeout: float = 60) -> str:
    """Interrupt an official ``backend.ai app`` until it ends (at most ``timeout`` s); its remaining output."""
    deadline = time.monotonic() + timeout
    while True:
        proc.send_signal(signal.SIGINT)
        try:
            out, _ = proc.communicate(timeout=REINTERRUPT_AFTER)
            return out
        except subprocess.TimeoutExpired:
            if time.monotonic() > deadline:
                proc.kill()
                out, _ = proc.communicate()
                raise AssertionError(f"the official app proxy did not stop on Ctrl-C: {out!r}") from None


def run_official_ssh(
    args: list[str], env: dict[str, str], cwd: Path, timeout: float = 120
) -> subprocess.CompletedProcess[str]:
    """An official ``backend.ai ssh|scp ...``; once its ``ssh``/``scp`` child is done and only its app proxy is
    left, the proxy gets Ctrl-C again every few seconds (the client race above)."""
    proc = subprocess.Popen(
        args, stdout=subprocess.PIPE, stderr=subprocess.PIPE, stdin=subprocess.DEVNULL, env=env, cwd=cwd, text=True
    )
    deadline = time.monotonic() + timeout
    alone_since: float | None = None
    while True:
        try:
            out, err = proc.communicate(timeout=1.0)
            return subprocess.CompletedProcess(args, proc.returncode, out, err)
        except subprocess.TimeoutExpired:
            pass
        if time.monotonic() > deadline:
            proc.kill()
            out, err = proc.communicate()
            raise AssertionError(f"`{' '.join(args[1:])}` did not end in {timeout} s:\n{out}\n{err}")
        kids = _children(proc.pid)
        if kids and all(" app " in cmd for _, cmd in kids):
            alone_since = alone_since or time.monotonic()
            if time.monotonic() - alone_since > REINTERRUPT_AFTER:
                for pid, _ in kids:
                    os.kill(pid, signal.SIGINT)
                alone_since = time.monotonic()
        else:
            alone_since = None


@pytest.fixture(scope="module")
def app_session(cluster: Cluster) -> Iterator[str]:
    name = f"apps-{uuid.uuid4().hex[:8]}"
    doc = api_create(cluster, name)
    assert doc["status"] == "RUNNING", doc
    try:
        yield name
    finally:
        cleanup(cluster, name)


def _env(clients: OfficialClients, cluster: Cluster, home: Path) -> dict[str, str]:
    env = client_env(cluster, USER, home)
    # `ssh`/`scp` run `backend.ai session download` and `backend.ai app` as subprocesses found on PATH.
    env["PATH"] = str(Path(clients.cli("22.03")).parent) + os.pathsep + env.get("PATH", "")
    return env


def test_apps_lists_the_session_apps(cli22: CLI, app_session: str) -> None:
    run = cli22("apps", "-l", app_session).ok()
    assert "This session provides the following app services:" in run.out, run.describe()
    for app in ("jupyter", "jupyterlab", "sshd", "ttyd"):
        assert app in run.out, run.describe()


def test_app_of_unknown_name_is_refused(
    clients: OfficialClients, cluster: Cluster, home: Path, app_session: str
) -> None:
    # The 22.03 CLI prints the refusal, then waits for Ctrl-C anyway (asyncio_run_forever): read, then interrupt.
    proc = subprocess.Popen(
        [clients.cli("22.03"), "app", app_session, "no-such-app", "-b", f"127.0.0.1:{_free_port()}"],
        stdout=subprocess.PIPE,
        stderr=subprocess.STDOUT,
        env=_env(clients, cluster, home),
        cwd=home,
        text=True,
    )
    assert proc.stdout is not None
    try:
        line = proc.stdout.readline()
    finally:
        _stop_app(proc)
    assert 'The app "no-such-app" is not supported by the session.' in line, line


@contextlib.contextmanager
def official_app(clients: OfficialClients, env: dict[str, str], home: Path, session: str, app: str) -> Iterator[str]:
    """``backend.ai app SESSION APP -b 127.0.0.1:PORT`` of the 22.03 CLI, running; yields its base URL and
    checks that Ctrl-C ends it the way the CLI says."""
    port = _free_port()
    proc = subprocess.Popen(
        [clients.cli("22.03"), "app", session, app, "-b", f"127.0.0.1:{port}"],
        stdout=subprocess.PIPE,
        stderr=subprocess.STDOUT,
        env=env,
        cwd=home,
        text=True,
    )
    assert proc.stdout is not None
    try:
        lines = []
        deadline = time.monotonic() + 60
        while time.monotonic() < deadline:
            line = proc.stdout.readline()
            if not line:
                break
            lines.append(line)
            if f"127.0.0.1:{port}" in line:
                break
        assert any("available at" in x for x in lines), "".join(lines)
        yield f"http://127.0.0.1:{port}"
    finally:
        out = _stop_app(proc)
    assert "has terminated" in out, out


def test_app_jupyter_runs_a_cell(clients: OfficialClients, cluster: Cluster, home: Path, app_session: str) -> None:
    with official_app(clients, _env(clients, cluster, home), home, app_session, "jupyter") as base:
        with httpx.Client() as client:
            doc = wait_api(client, base)
            assert "version" in doc
            assert run_cell(client, base, "6 * 7") == "42"


def test_app_through_the_webserver_in_session_mode(
    clients: OfficialClients, cli22: CLI, cluster: Cluster, home: Path, app_session: str, tmp_path_factory: Any
) -> None:
    """Session mode: the CLI logs in to the webserver and its tcpproxy stream goes through ``/func/stream``."""
    web = launch_webserver(tmp_path_factory.mktemp("web-apps"), cluster.endpoint)
    try:
        env = {**_env(clients, cluster, home), **web.env(), "BACKEND_ACCESS_KEY": "", "BACKEND_SECRET_KEY": ""}
        login = cli22("login", input=f"{USER['email']}\n{USER['password']}\n", env=env)
        assert login.rc == 0 and "Login succeeded." in login.out, login.describe()
        try:
            with official_app(clients, env, home, app_session, "ttyd") as base:
                page = httpx.get(base + "/", timeout=60)
                assert page.status_code == 200 and "xterm" in page.text.lower(), page.text[:300]
        finally:
            cli22("logout", env=env)
    finally:
        web.shutdown()


@pytest.mark.skipif(shutil.which("ssh") is None, reason="no ssh client on this machine")
def test_ssh_runs_a_command(clients: OfficialClients, cluster: Cluster, home: Path, app_session: str) -> None:
    (home / ".ssh").mkdir(mode=0o700, exist_ok=True)
    p = run_official_ssh(
        [
            clients.cli("22.03"),
            "ssh",
            app_session,
            "-p",
            str(_free_port()),
            "echo",
            "hello-$((6*7))",
            "&&",
            "id",
            "-un",
        ],
        _env(clients, cluster, home),
        home,
    )
    assert p.returncode == 0, p.stdout + p.stderr
    assert "hello-42" in p.stdout and "work" in p.stdout, p.stdout + p.stderr


@pytest.mark.skipif(shutil.which("scp") is None, reason="no scp client on this machine")
def test_scp_round_trips_a_file(
    clients: OfficialClients, cluster: Cluster, home: Path, app_session: str, tmp_path: Path
) -> None:
    (home / ".ssh").mkdir(mode=0o700, exist_ok=True)
    payload = os.urandom(300_000)
    src = tmp_path / "up.bin"
    src.write_bytes(payload)
    env = _env(clients, cluster, home)
    up = run_official_ssh(
        [clients.cli("22.03"), "scp", app_session, "-p", str(_free_port()), str(src), "work@localhost:up.bin"],
        env,
        home,
    )
    assert up.returncode == 0, up.stdout + up.stderr
    back = tmp_path / "back.bin"
    down = run_official_ssh(
        [clients.cli("22.03"), "scp", app_session, "-p", str(_free_port()), "work@localhost:up.bin", str(back)],
        env,
        home,
    )
    assert down.returncode == 0, down.stdout + down.stderr
    assert back.read_bytes() == payload
