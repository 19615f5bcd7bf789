"""The runner's terminals (``ai.backend.kernel.pty_session``) on this machine, without Docker."""

from __future__ import annotations

import asyncio
import os
import re
import time
from collections.abc import AsyncIterator
from pathlib import Path

import pytest

from ai.backend.agent.pty_relay import open_terminal_socket
from ai.backend.kernel import pty_session
from ai.backend.kernel.pty_session import (
    KIND_CLOSE,
    KIND_ERROR,
    KIND_OUTPUT,
    KIND_RESIZE,
    KIND_RESTART,
    KIND_STDIN,
    PtyError,
    PtyManager,
    encode_frame,
    encode_resize,
    read_frame,
    session_pids,
)
from ai.backend.testutils.processes import wait_until

_ANSI = re.compile(r"\x1b\[[0-9;?]*[ -/]*[@-~]|\x1b\][^\x07\x1b]*(?:\x07|\x1b\\)|\x1b[=>]")


class Client:
    def __init__(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        self.reader, self.writer = reader, writer
        self.out = ""
        self.errors: list[str] = []
        self.eof = False

    async def send(self, kind: bytes, payload: bytes = b"") -> None:
        self.writer.write(encode_frame(kind, payload))
        await self.writer.drain()

    async def type(self, text: str) -> None:
        await self.send(KIND_STDIN, text.encode())

    async def expect(self, pattern: str, timeout: float = 15.0) -> re.Match[str]:
        start = len(self.out)
        rx = re.compile(pattern, re.M)
        deadline = time.monotonic() + timeout
        while True:
            m = rx.search(_ANSI.sub("", self.out[start:]).replace("\r", ""))
            if m:
                return m
            if self.eof or time.monotonic() > deadline:
                raise AssertionError(f"no {pattern!r} in {self.out[start:][-500:]!r}")
            try:
                frame = await asyncio.wait_for(read_frame(self.reader), max(deadline - time.monotonic(), 0.01))
            except TimeoutError:
                continue
            if frame is None:
                self.eof = True
            elif frame[0] == KIND_OUTPUT:
                self.out += frame[1].decode("utf-8", "replace")
            elif frame[0] == KIND_ERROR:
                self.errors.append(frame[1].decode())

    async def wait_eof(self, timeout: float = 10.0) -> None:
        async def _drain() -> None:
            while await read_frame(self.reader) is not None:
                pass

        await asyncio.wait_for(_drain(), timeout)
        self.eof = True


@pytest.fixture
async def manager(tmp_path: Path) -> AsyncIterator[PtyManager]:
    work = tmp_path / "work"
    work.mkdir()
    ipc = tmp_path / "ipc"
    ipc.mkdir()
    m = PtyManager(str(ipc), str(work), limit=2)
    yield m
    await m.close_all()


def _env() -> dict[str, str]:
    return {"PATH": os.environ.get("PATH", "/usr/bin:/bin"), "LANG": "C.UTF-8"}


async def _open(m: PtyManager, **size: int) -> tuple[str, Client]:
    name = await m.open(_env(), size.get("rows"), size.get("cols"))
    reader, writer = await open_terminal_socket(m.ipc_dir, name)
    return name, Client(reader, writer)


def _wait_gone(sid: int, timeout: float = 5.0) -> list[int]:
    return wait_until(
        f"the processes of session {sid} to end",
        lambda: session_pids(sid),
        lambda pids: not pids,
        timeout,
        interval=0.05,
    )


async def test_shell_runs_in_the_workdir_with_the_terminal_settings(manager: PtyManager) -> None:
    name, c = await _open(manager, rows=30, cols=100)
    assert re.fullmatch(r"pty-[0-9a-f]{16}\.sock", name)
    await c.type("echo $((6*7))\n")
    await c.expect(r"^42$")
    await c.type("pwd; echo $TERM; stty size; test -t 0 && echo TTY-OK\n")
    m = await c.expect(r"^(?P<pwd>/.*)\nxterm-256color\n30 100\nTTY-OK$")
    assert m.group("pwd") == manager.workdir
    await c.send(KIND_RESIZE, encode_resize(40, 132))
    await c.type("stty size\n")
    await c.expect(r"^40 132$")
    # The socket is gone once the agent is connected: nobody else may attach.
    await asyncio.sleep(0.1)
    assert not (Path(manager.ipc_dir) / name).exists()


async def test_restart_kills_the_whole_session(manager: PtyManager) -> None:
    _, c = await _open(manager)
    await c.type("export MARK=1; sleep 777 & echo SID=$$\n")
    old = int((await c.expect(r"^SID=(\d+)$")).group(1))
    assert len(session_pids(old)) >= 2  # the shell and its background job
    await c.send(KIND_RESTART)
    await c.type("echo SID=$$ MARK=${MARK:-none}\n")
    m = await c.expect(r"^SID=(\d+) MARK=none$")
    assert int(m.group(1)) != old
    assert _wait_gone(old) == []


async def test_close_frame_and_disconnect_end_everything(manager: PtyManager) -> None:
    _, c = await _open(manager)
    await c.type("sleep 888 & echo SID=$$\n")
    sid = int((await c.expect(r"^SID=(\d+)$")).group(1))
    await c.send(KIND_CLOSE)
    await c.wait_eof()
    assert _wait_gone(sid) == []
    assert manager.sessions == {}
    # A dropped connection does the same.
    _, c2 = await _open(manager)
    await c2.type("echo SID=$$\n")
    sid2 = int((await c2.expect(r"^SID=(\d+)$")).group(1))
    c2.writer.close()
    assert await asyncio.to_thread(_wait_gone, sid2) == []


async def test_exit_closes_the_socket_after_the_last_output(manager: PtyManager) -> None:
    _, c = await _open(manager)
    await c.type("echo SID=$$\n")
    sid = int((await c.expect(r"^SID=(\d+)$")).group(1))
    await c.type("echo bye-bye; exit 0\n")
    await c.expect(r"^bye-bye$")
    await c.wait_eof()
    assert _wait_gone(sid) == []


async def test_limit_and_bad_sizes(manager: PtyManager) -> None:
    await _open(manager)
    await _open(manager)
    with pytest.raises(PtyError, match="too many"):
        await manager.open(_env())
    await manager.close_all()
    with pytest.raises(PtyError, match="rows and cols"):
        await manager.open(_env(), 0, 80)
    with pytest.raises(PtyError, match="rows and cols"):
        await manager.open(_env(), "24", 80)
    assert manager.sessions == {}


async def test_bad_frames_get_error_frames(manager: PtyManager) -> None:
    _, c = await _open(manager)
    await c.send(KIND_RESIZE, b"\x00")
    await c.type("echo still-here\n")
    await c.expect(r"^still-here$")
    assert c.errors and "resize" in c.errors[0]
    await c.send(KIND_OUTPUT, b"not for the runner")
    await c.type("echo again\n")
    await c.expect(r"^again$")
    assert any("unexpected frame kind" in e for e in c.errors)


async def test_unclaimed_terminal_is_closed(manager: PtyManager, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(pty_session, "CONNECT_TIMEOUT", 0.3)
    name = await manager.open(_env())
    shell = manager.sessions[name].shell
    assert shell is not None
    sid = shell.proc.pid
    await asyncio.sleep(1.0)
    assert manager.sessions == {}
    assert not (Path(manager.ipc_dir) / name).exists()
    assert _wait_gone(sid) == []
