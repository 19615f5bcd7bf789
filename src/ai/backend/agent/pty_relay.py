"""The agent's terminal relay: ``/v1/kernels/{kid}/pty`` (WebSocket) ⇄ a terminal socket of the kernel runner.

The manager opens the WebSocket with the cluster secret header. The agent asks the runner for
``pty_open`` (see ``ai.backend.kernel.pty_session``), connects to the returned socket in the kernel's
ipc dir and relays:

* manager → agent: BINARY frames are keystrokes; TEXT frames are JSON controls
  ``{"type": "resize", "rows": R, "cols": C}``, ``{"type": "restart"}`` and ``{"type": "close"}``;
* agent → manager: BINARY frames are terminal output; TEXT frames are ``{"type": "error", "data": msg}``.

The WebSocket closes when the shell exits; closing the WebSocket closes the terminal (the runner
kills the shell's whole session).
"""

from __future__ import annotations

import asyncio
import contextlib
import hmac
import json
import logging
import os
import re
import stat
from typing import Any

from fastapi import WebSocket, WebSocketDisconnect
from fastapi.responses import JSONResponse

from ai.backend.common.auth import CLUSTER_SECRET_HEADER
from ai.backend.common.problems import AuthorizationFailed, ProblemError
from ai.backend.kernel.pty_session import (
    KIND_CLOSE,
    KIND_ERROR,
    KIND_OUTPUT,
    KIND_RESIZE,
    KIND_RESTART,
    KIND_STDIN,
    MAX_FRAME,
    FrameError,
    encode_frame,
    encode_resize,
    read_frame,
)

from .backends.docker.backend import DockerBackend

__all__ = ["open_terminal_socket", "serve_pty"]

log = logging.getLogger(__name__)

#: The only socket names a runner may answer (a container must not point the agent anywhere else).
_SOCKET_NAME = re.compile(r"^pty-[A-Za-z0-9_-]{1,64}\.sock$")


async def deny(ws: WebSocket, exc: ProblemError) -> None:
    """Refuse the handshake with the problem's HTTP status (or a close code where denial is unsupported)."""
    body = exc.body()
    try:
        await ws.send_denial_response(JSONResponse(body, status_code=exc.status, media_type="application/problem+json"))
    except RuntimeError:
        await ws.close(code=4000 + exc.status % 1000, reason=str(body.get("detail") or exc.title)[:120])


async def open_terminal_socket(
    ipc_dir: str | os.PathLike[str], name: str
) -> tuple[asyncio.StreamReader, asyncio.StreamWriter]:
    """Connect to the terminal socket ``name`` in a kernel's ipc dir.

    The ipc dir belongs to the kernel user: the entry is opened with ``O_PATH | O_NOFOLLOW`` and must be
    a socket, and the connection goes through that very inode (``/proc/self/fd/N``), so a symlink or a
    swapped file cannot redirect the agent (which runs as root) to a host socket.
    """
    if not _SOCKET_NAME.match(name):
        raise ValueError(f"the runner answered an unexpected terminal socket name: {name!r}")
    fd = os.open(os.path.join(os.fspath(ipc_dir), name), os.O_PATH | os.O_NOFOLLOW | os.O_CLOEXEC)
    try:
        if not stat.S_ISSOCK(os.fstat(fd).st_mode):
            raise ValueError(f"{name} in the kernel's ipc dir is not a socket")
        return await asyncio.open_unix_connection(f"/proc/self/fd/{fd}", limit=MAX_FRAME)
    finally:
        os.close(fd)


def _control_frame(text: str) -> bytes | None:
    """The runner frame for a JSON control message of the manager; ``None`` for ``close``."""
    msg: Any = json.loads(text)
    kind = msg.get("type") if isinstance(msg, dict) else None
    if kind == "resize":
        rows, cols = msg.get("rows"), msg.get("cols")
        if not isinstance(rows, int) or not isinstance(cols, int):
            raise ValueError("resize needs integer rows and cols")
        return encode_frame(KIND_RESIZE, encode_resize(rows, cols))
    if kind == "restart":
        return encode_frame(KIND_RESTART)
    if kind == "close":
        return None
    raise ValueError(f"unknown control message type {kind!r}")


async def _ws_to_runner(ws: WebSocket, writer: asyncio.StreamWriter) -> None:
    while True:
        msg = await ws.receive()
        if msg["type"] == "websocket.disconnect":
            return
        data: bytes | None = msg.get("bytes")
        text: str | None = msg.get("text")
        if data is not None:
            for i in range(0, len(data), MAX_FRAME):  # keystrokes may be split freely
                writer.write(encode_frame(KIND_STDIN, data[i : i + MAX_FRAME]))
        elif text is not None:
            try:
                frame = _control_frame(text)
            except (ValueError, FrameError) as e:  # json.JSONDecodeError is a ValueError
                await ws.send_text(json.dumps({"type": "error", "data": f"bad control message: {e}"}))
                continue
            if frame is None:
                return
            writer.write(frame)
        await writer.drain()


async def _runner_to_ws(ws: WebSocket, reader: asyncio.StreamReader) -> None:
    while True:
        frame = await read_frame(reader)
        if frame is None:
            return  # the shell exited
        kind, payload = frame
        if kind == KIND_OUTPUT:
            await ws.send_bytes(payload)
        elif kind == KIND_ERROR:
            await ws.send_text(json.dumps({"type": "error", "data": payload.decode("utf-8", "replace")}))


async def serve_pty(ws: WebSocket, backend: DockerBackend, kid: str, cluster_secret: str) -> None:
    """Handle one terminal WebSocket of the manager (the HTTP auth middleware does not see WebSockets)."""
    if not hmac.compare_digest(ws.headers.get(CLUSTER_SECRET_HEADER, ""), cluster_secret):
        await deny(ws, AuthorizationFailed("Bad or missing cluster secret."))
        return
    rows, cols = ws.query_params.get("rows"), ws.query_params.get("cols")
    size: dict[str, int] = {}
    if rows and cols and rows.isdigit() and cols.isdigit():
        size = {"rows": int(rows), "cols": int(cols)}
    try:
        answer = await backend.runner_request(kid, "pty_open", **size)
        state = backend.kernels[kid]
        reader, writer = await open_terminal_socket(state.scratch / "ipc", str(answer.get("socket")))
    except ProblemError as e:
        await deny(ws, e)
        return
    except (KeyError, ValueError, OSError) as e:
        log.warning("cannot open a terminal in kernel %s: %s", kid, e)
        await deny(ws, ProblemError(f"Cannot open a terminal in kernel {kid}: {e}"))
        return
    await ws.accept()
    tasks = [asyncio.ensure_future(_ws_to_runner(ws, writer)), asyncio.ensure_future(_runner_to_ws(ws, reader))]
    try:
        done, _ = await asyncio.wait(tasks, return_when=asyncio.FIRST_COMPLETED)
        for task in done:
            exc = task.exception()
            if exc is not None and not isinstance(exc, (WebSocketDisconnect, ConnectionError, OSError, FrameError)):
                log.warning("terminal relay of kernel %s failed: %r", kid, exc)
    finally:
        for task in tasks:
            task.cancel()
        await asyncio.gather(*tasks, return_exceptions=True)
        with contextlib.suppress(ConnectionError, OSError, RuntimeError):
            writer.write(encode_frame(KIND_CLOSE))
            await writer.drain()
        writer.close()
        with contextlib.suppress(ConnectionError, OSError, RuntimeError):
            await ws.close()
