"""The terminal stream ``GET /stream/session/:id/pty`` end to end: client ⇄ manager ⇄ agent ⇄ runner ⇄ bash.

Refusals happen before the upgrade: the handshake is answered with the problem's HTTP status (401 for a
bad signature, 404 for an unknown or another user's session, 409 for a session that is not running) and
an ``application/problem+json`` body. An unknown ``app`` is accepted, then answered with one ``error``
message and a close.
"""

from __future__ import annotations

import asyncio
import base64
import json
import re
import subprocess
import time
from collections.abc import AsyncIterator, Callable
from typing import Any

import pytest
from websockets.asyncio.client import ClientConnection, connect
from websockets.exceptions import ConnectionClosed, InvalidStatus

from ai.backend.client.config import APIConfig
from ai.backend.client.exceptions import BackendAPIError, BackendClientError
from ai.backend.client.session import AsyncSession, Session
from ai.backend.common.auth import sign_request_headers

from .conftest import ADMIN, USER, Cluster

pytestmark = pytest.mark.docker

VERSION = "v6.20220615"
_ANSI = re.compile(r"\x1b\[[0-9;?]*[ -/]*[@-~]|\x1b\][^\x07\x1b]*(?:\x07|\x1b\\)|\x1b[=>]")


def clean(text: str) -> str:
    """Terminal output without escape sequences and carriage returns."""
    return _ANSI.sub("", text).replace("\r", "")


def ws_headers(cluster: Cluster, path: str, who: dict[str, Any] = USER) -> dict[str, str]:
    host = cluster.endpoint.split("//", 1)[1]
    h = sign_request_headers(
        method="GET",
        path_with_query=path,
        host=host,
        content_type="application/octet-stream",
        version=VERSION,
        access_key=who["access_key"],
        secret_key=who["secret_key"],
    )
    # Like the upstream client: no Content-Type on the upgrade; the server reads it as application/octet-stream.
    h.pop("Content-Type")
    return h


def open_ws(cluster: Cluster, path: str, who: dict[str, Any] = USER, headers: dict[str, str] | None = None) -> Any:
    url = "ws://" + cluster.endpoint.split("//", 1)[1] + path
    return connect(
        url,
        additional_headers=headers if headers is not None else ws_headers(cluster, path, who),
        proxy=None,
        open_timeout=30,
    )


class Term:
    """A raw terminal client: typed input, accumulated (cleaned) output and the error messages."""

    def __init__(self, ws: ClientConnection) -> None:
        self.ws = ws
        self.out = ""
        self.errors: list[str] = []
        self.closed = False

    async def send(self, **msg: Any) -> None:
        await self.ws.send(json.dumps(msg))

    async def type(self, text: str) -> None:
        await self.send(type="stdin", chars=base64.b64encode(text.encode()).decode())

    async def _recv(self, timeout: float) -> None:
        try:
            raw = await asyncio.wait_for(self.ws.recv(), timeout)
        except ConnectionClosed:
            self.closed = True
            return
        assert isinstance(raw, str), "the server must send TEXT frames only"
        msg = json.loads(raw)
        if msg["type"] == "out":
            self.out += base64.b64decode(msg["data"]).decode("utf-8", "replace")
        else:
            assert msg["type"] == "error", msg
            assert isinstance(msg["data"], str) and msg["data"]
            self.errors.append(msg["data"])

    async def wait_for(self, pattern: str, timeout: float = 20.0) -> re.Match[str]:
        """Wait until the cleaned output since now matches ``pattern`` (multiline)."""
        start = len(self.out)
        deadline = time.monotonic() + timeout
        rx = re.compile(pattern, re.M)
        while True:
            m = rx.search(clean(self.out[start:]))
            if m:
                return m
            left = deadline - time.monotonic()
            if left <= 0 or self.closed:
                raise AssertionError(f"no {pattern!r} in the terminal output: {clean(self.out[start:])[-800:]!r}")
            try:
                await self._recv(left)
            except TimeoutError:
                pass

    async def wait_error(self, timeout: float = 10.0) -> str:
        n = len(self.errors)
        deadline = time.monotonic() + timeout
        while len(self.errors) == n:
            left = deadline - time.monotonic()
            if left <= 0 or self.closed:
                raise AssertionError(f"no error message (closed={self.closed})")
            try:
                await self._recv(left)
            except TimeoutError:
                pass
        return self.errors[n]

    async def wait_closed(self, timeout: float = 15.0) -> None:
        deadline = time.monotonic() + timeout
        while not self.closed:
            left = deadline - time.monotonic()
            if left <= 0:
                raise AssertionError("the terminal did not close")
            try:
                await self._recv(left)
            except TimeoutError:
                pass

    async def run(self, command: str, marker: str) -> str:
        """Type ``command; echo <marker>`` and return the output before the marker line."""
        await self.type(f"{command}; echo {marker[:1]}''{marker[1:]}\n")  # the echoed command line differs
        m = await self.wait_for(rf"^(?P<body>(?:.*\n)*?){re.escape(marker)}$")
        return m.group("body")


def container_processes(container: str) -> list[str]:
    """Command lines of the live processes in a container (the image has no ``ps``: read ``/proc``)."""
    script = (
        "import os\n"
        "for p in os.listdir('/proc'):\n"
        "    if p.isdigit():\n"
        "        try:\n"
        "            cmd = open(f'/proc/{p}/cmdline', 'rb').read().replace(b'\\0', b' ').decode().strip()\n"
        "        except OSError:\n"
        "            continue\n"
        "        if cmd and str(os.getpid()) != p:\n"
        "            print(cmd)\n"
    )
    out = subprocess.run(
        ["docker", "exec", container, "python3", "-c", script], capture_output=True, text=True, check=True, timeout=30
    )
    return out.stdout.splitlines()


def wait_until_gone(container: str, pred: Callable[[str], bool], timeout: float = 15.0) -> list[str]:
    deadline = time.monotonic() + timeout
    while True:
        left = [p for p in container_processes(container) if pred(p)]
        if not left or time.monotonic() > deadline:
            return left
        time.sleep(0.3)


@pytest.fixture(scope="module")
def term_session(cluster: Cluster) -> AsyncIterator[dict[str, Any]]:
    cluster.create_session("pty-main", expect=(200, 201))
    info = cluster.session_info("pty-main")
    yield info
    cluster.request("DELETE", "/session/pty-main")


async def test_raw_terminal_protocol(cluster: Cluster, term_session: dict[str, Any]) -> None:
    async with open_ws(cluster, "/stream/session/pty-main/pty?app=ttyd") as ws:
        t = Term(ws)
        await t.type("echo $((6*7))\n")
        await t.wait_for(r"^42$")
        assert (await t.run("id -u", "DONE1")).strip().splitlines()[-1] == "1000"
        body = await t.run("pwd; echo $TERM; test -t 0 && echo tty", "DONE2")
        assert body.strip().splitlines()[-3:] == ["/home/work", "xterm-256color", "tty"]
        await t.send(type="resize", rows=33, cols=111)
        assert (await t.run("stty size", "DONE3")).strip().splitlines()[-1] == "33 111"
        await t.send(type="ping")  # keep-alive: no answer, no error
        assert (await t.run("echo after-ping", "DONE4")).strip().splitlines()[-1] == "after-ping"
        assert t.errors == []


async def test_ctrl_c_interrupts_foreground(cluster: Cluster, term_session: dict[str, Any]) -> None:
    async with open_ws(cluster, "/stream/session/pty-main/pty") as ws:
        t = Term(ws)
        began = time.monotonic()
        await t.type("sleep 30; echo FINISHED-$?\n")
        await asyncio.sleep(1.0)
        await t.type("\x03")
        body = await t.run("echo status=$?", "DONE")
        assert time.monotonic() - began < 15
        assert "status=130" in body  # 128 + SIGINT
        assert "FINISHED-" not in clean(t.out).replace("echo FINISHED-$?", "")


async def test_bad_messages_give_errors_and_keep_going(cluster: Cluster, term_session: dict[str, Any]) -> None:
    async with open_ws(cluster, "/stream/session/pty-main/pty") as ws:
        t = Term(ws)
        bad: list[tuple[str | bytes, str]] = [
            ("not json", "JSON"),
            ("[1, 2]", "object"),
            ('{"type": "ping"}', ""),  # a plain ping is fine (rest-api.md §14 item 38): no error
            (json.dumps({"type": "dance"}), "unknown message type"),
            (json.dumps({"type": "stdin"}), "chars"),
            (json.dumps({"type": "stdin", "chars": "***"}), "base64"),
            (json.dumps({"type": "resize", "rows": 0, "cols": 80}), "rows"),
            (json.dumps({"type": "resize", "rows": 24, "cols": "80"}), "cols"),
            (json.dumps({"type": "resize", "rows": 24, "cols": 5000}), "cols"),
            (json.dumps({"type": "stdin", "chars": "A" * (2 << 20)}), "split"),
            (b"\x00binary", "text"),
        ]
        for msg, expect in bad:
            await ws.send(msg)
            if expect:
                err = await t.wait_error()
                assert expect.lower() in err.lower(), (msg[:40], err)
        assert len(t.errors) == len([e for _, e in bad if e])
        # Still a working terminal.
        assert (await t.run("echo $((7*6))", "DONE")).strip().splitlines()[-1] == "42"


async def test_restart_gives_a_fresh_shell_and_kills_the_old_one(
    cluster: Cluster, term_session: dict[str, Any]
) -> None:
    container = term_session["containerId"]
    async with open_ws(cluster, "/stream/session/pty-main/pty") as ws:
        t = Term(ws)
        await t.type("export MARK=kept; sleep 4242 &\n")
        old_pid = (await t.run("echo pid=$$ mark=$MARK", "DONE1")).strip().splitlines()[-1]
        assert old_pid.endswith("mark=kept")
        assert any("sleep 4242" in p for p in container_processes(container))
        await t.send(type="resize", rows=40, cols=120)
        await t.send(type="restart")
        new = (await t.run("echo pid=$$ mark=${MARK:-unset}; stty size", "DONE2")).strip().splitlines()
        assert new[-2].endswith("mark=unset") and new[-2].split()[0] != old_pid.split()[0], (old_pid, new)
        assert new[-1] == "40 120"  # the size survives the restart
        assert wait_until_gone(container, lambda p: "sleep 4242" in p) == []


async def test_close_ends_the_shell_and_its_children(cluster: Cluster, term_session: dict[str, Any]) -> None:
    container = term_session["containerId"]
    async with open_ws(cluster, "/stream/session/pty-main/pty") as ws:
        t = Term(ws)
        await t.type("sleep 5151 & (sleep 5252; true) &\n")
        await t.run("true", "DONE")
        procs = container_processes(container)
        assert any("sleep 5151" in p for p in procs) and any(p.startswith("/bin/bash") for p in procs), procs
    left = wait_until_gone(container, lambda p: p.startswith("/bin/bash") or "sleep 5" in p)
    assert left == [], left
    # Nothing left behind in the ipc dir either (the agent side of the runner's sockets).
    kid = term_session["kernelId"]
    ipc = cluster.state / "scratches" / kid / "ipc"
    assert [p.name for p in ipc.glob("pty-*")] == []


async def test_shell_exit_closes_the_stream(cluster: Cluster, term_session: dict[str, Any]) -> None:
    container = term_session["containerId"]
    async with open_ws(cluster, "/stream/session/pty-main/pty") as ws:
        t = Term(ws)
        await t.type("exit 3\n")
        await t.wait_closed()
    assert wait_until_gone(container, lambda p: p.startswith("/bin/bash")) == []


async def test_several_terminals_and_the_limit(cluster: Cluster, term_session: dict[str, Any]) -> None:
    await asyncio.sleep(1.0)  # the terminals of the previous tests are closed asynchronously
    conns = []
    try:
        for i in range(8):
            ws = await open_ws(cluster, "/stream/session/pty-main/pty")
            conns.append(ws)
            t = Term(ws)
            assert (await t.run(f"echo term{i}", f"DONE{i}")).strip().splitlines()[-1] == f"term{i}"
        async with open_ws(cluster, "/stream/session/pty-main/pty") as ws:
            t = Term(ws)
            err = await t.wait_error()
            assert "too many" in err
            await t.wait_closed()
    finally:
        for ws in conns:
            await ws.close()
    # Once closed, terminals can be opened again.
    await asyncio.sleep(1.0)
    async with open_ws(cluster, "/stream/session/pty-main/pty") as ws:
        assert (await Term(ws).run("echo again", "DONE")).strip().splitlines()[-1] == "again"


async def test_refusals(cluster: Cluster, term_session: dict[str, Any]) -> None:
    cluster.create_session("pty-admin-owned", who=ADMIN, expect=(200, 201))
    try:
        # Another user's session: not found for this caller, refused before the upgrade.
        with pytest.raises(InvalidStatus) as ei:
            async with open_ws(cluster, "/stream/session/pty-admin-owned/pty"):
                pass
        assert ei.value.response.status_code == 404
        body = json.loads(ei.value.response.body or b"{}")
        assert body["type"].endswith("session-not-found")
        # A bad signature.
        headers = ws_headers(cluster, "/stream/session/pty-main/pty")
        headers["Authorization"] = headers["Authorization"][:-4] + "0000"
        with pytest.raises(InvalidStatus) as ei:
            async with open_ws(cluster, "/stream/session/pty-main/pty", headers=headers):
                pass
        assert ei.value.response.status_code == 401
        # A signature for another path does not open this one.
        headers = ws_headers(cluster, "/stream/session/pty-main/execute")
        with pytest.raises(InvalidStatus) as ei:
            async with open_ws(cluster, "/stream/session/pty-main/pty", headers=headers):
                pass
        assert ei.value.response.status_code == 401
        # An admin may open a user's terminal by naming the owner (delegation like the other endpoints)...
        path = f"/stream/session/pty-main/pty?owner_access_key={USER['access_key']}"
        async with open_ws(cluster, path, who=ADMIN) as ws:
            assert (await Term(ws).run("id -u", "DONE")).strip().splitlines()[-1] == "1000"
        # ... but a user may not name another owner.
        path = f"/stream/session/pty-admin-owned/pty?owner_access_key={ADMIN['access_key']}"
        with pytest.raises(InvalidStatus) as ei:
            async with open_ws(cluster, path):
                pass
        assert ei.value.response.status_code == 403
    finally:
        cluster.request("DELETE", "/session/pty-admin-owned", who=ADMIN)
    # A session that is not running any more.
    with pytest.raises(InvalidStatus) as ei:
        async with open_ws(cluster, "/stream/session/pty-admin-owned/pty", who=ADMIN):
            pass
    assert ei.value.response.status_code == 409
    # An unknown app: an error message, then the close.
    async with open_ws(cluster, "/stream/session/pty-main/pty?app=jupyter") as ws:
        t = Term(ws)
        assert "jupyter" in await t.wait_error()
        await t.wait_closed()


async def test_legacy_kernel_path(cluster: Cluster, term_session: dict[str, Any]) -> None:
    async with open_ws(cluster, "/stream/kernel/pty-main/pty") as ws:
        assert (await Term(ws).run("echo legacy", "DONE")).strip().splitlines()[-1] == "legacy"


def _sdk_config(cluster: Cluster, who: dict[str, Any] = USER) -> APIConfig:
    return APIConfig(
        endpoint=cluster.endpoint, endpoint_type="api", access_key=who["access_key"], secret_key=who["secret_key"]
    )


async def _read_until(pty: Any, needle: str, timeout: float = 20.0) -> str:
    buf = b""

    async def _collect() -> str:
        nonlocal buf
        async for chunk in pty:
            buf += chunk
            if re.search(needle, clean(buf.decode("utf-8", "replace")), re.M):
                return clean(buf.decode("utf-8", "replace"))
        raise AssertionError(f"terminal closed before {needle!r}: {buf[-500:]!r}")

    return await asyncio.wait_for(_collect(), timeout)


async def test_sdk_stream_pty(cluster: Cluster, term_session: dict[str, Any]) -> None:
    async with AsyncSession(config=_sdk_config(cluster)) as api:
        sess = api.ComputeSession("pty-main")
        async with sess.stream_pty() as pty:
            await pty.send_stdin("echo $((6*7))\n")
            await _read_until(pty, r"^42$")
            await pty.resize(21, 77)
            await pty.send_stdin("stty size\n")
            await _read_until(pty, r"^21 77$")
            await pty.ping()
            await pty.send_stdin(b"export X=1; echo pid=$$ x=${X:-no}\n")
            first = await _read_until(pty, r"^pid=\d+ x=1$")
            old_pid = re.findall(r"^pid=(\d+) x=1$", first, re.M)[-1]
            await pty.restart()
            await pty.send_stdin("echo pid=$$ x=${X:-no}\n")
            out = await _read_until(pty, r"^pid=\d+ x=no$")
            assert re.findall(r"^pid=(\d+) x=no$", out, re.M)[-1] != old_pid
            await pty.send_str("{broken")  # the raw send: the server answers an error message
            ev = await pty.receive_event(timeout=10)
            while ev is not None and ev.type != "error":
                ev = await pty.receive_event(timeout=10)
            assert ev is not None and "JSON" in str(ev.data)
            assert pty.errors and "JSON" in pty.errors[-1]
        assert pty.closed
        with pytest.raises(BackendAPIError) as ei:
            async with api.ComputeSession("no-such-session").stream_pty():
                pass
        assert ei.value.status == 404


def test_sdk_streams_need_async_session(cluster: Cluster) -> None:
    with Session(config=_sdk_config(cluster)) as api:
        sess = api.ComputeSession("pty-main")
        with pytest.raises(BackendClientError, match="AsyncSession"):
            with sess.stream_pty():
                pass
        with pytest.raises(BackendClientError, match="AsyncSession"):
            with sess.stream_execute("print(1)"):
                pass


def test_status_history(cluster: Cluster, term_session: dict[str, Any]) -> None:
    r = cluster.request("GET", "/session/pty-main/status-history")
    assert r.status_code == 200, r.text
    history = r.json()["result"]
    assert "RUNNING" in history and history == term_session["statusHistory"]
    assert cluster.request("GET", "/session/pty-admin-nope/status-history").status_code == 404
    with Session(config=_sdk_config(cluster)) as api:
        assert api.ComputeSession("pty-main").get_status_history()["result"] == history
