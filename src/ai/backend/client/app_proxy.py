"""A local TCP port that leads to an app of a compute session (what ``backend.ai app`` runs).

:class:`LocalAppProxy` listens on a local address; every accepted connection gets its own
``tcpproxy`` WebSocket to the manager (:meth:`ComputeSession.stream_tcpproxy`), and :func:`relay`
copies bytes both ways as BINARY messages until either side ends::

    async with AsyncSession() as api:
        proxy = LocalAppProxy(api, api.ComputeSession("mysess"), "jupyter", host="127.0.0.1", port=8080)
        await proxy.start()            # OSError if the address is taken
        ...                            # browse http://127.0.0.1:8080
        await proxy.close()

Closing: the WebSocket protocol has no half-close. When the local client stops sending (EOF) the
relay keeps passing the app's answer until the app closes the connection or has sent nothing for
``linger`` seconds (a client that half-closes still gets its whole answer; one that left entirely
does not hold a WebSocket open for long). When the app side ends first the local connection is closed.
A WebSocket the server refuses (or closes with an error before the app sent anything) is answered
with the text the 22.03 CLI writes, ``HTTP/1.1 503 Service Unavailable`` ... ``WebSocket reply: <why>``,
so that a browser shows the reason.
"""

from __future__ import annotations

import asyncio
import contextlib
import socket
import time
from collections.abc import Callable, Mapping, Sequence
from typing import TYPE_CHECKING

from .app_options import AppArgumentValue
from .exceptions import BackendAPIError, BackendError
from .session import api_session
from .ws import WebSocketResponse, WSMsgType

if TYPE_CHECKING:
    from .func.session import ComputeSession
    from .session import AsyncSession

__all__ = ("CHUNK_SIZE", "LINGER_SECONDS", "LocalAppProxy", "error_reply", "relay")

#: Largest BINARY message sent upstream (the manager reads the app in pieces of this size too).
CHUNK_SIZE = 256 * 1024
#: How long a half-closed local connection waits for more of the app's answer.
LINGER_SECONDS = 30.0
# Close codes of a normal end: the app closed the connection (1001 going away) or the socket ended (1000).
_NORMAL_CLOSE = frozenset({1000, 1001})


def error_reply(reason: str) -> bytes:
    """What a local client reads when the server refuses the app (the 22.03 CLI's text)."""
    return (f"HTTP/1.1 503 Service Unavailable\r\nConnection: Closed\r\n\r\nWebSocket reply: {reason}").encode()


async def _close_writer(writer: asyncio.StreamWriter) -> None:
    writer.close()
    with contextlib.suppress(OSError, asyncio.CancelledError):
        await writer.wait_closed()


async def relay(
    ws: WebSocketResponse,
    reader: asyncio.StreamReader,
    writer: asyncio.StreamWriter,
    *,
    chunk_size: int = CHUNK_SIZE,
    linger: float = LINGER_SECONDS,
) -> str | None:
    """Copy bytes between a local connection and an app WebSocket until they are done.

    Returns ``None`` after a normal end, or the reason of a WebSocket that closed with an error
    (already answered to the local client with :func:`error_reply` when the app had sent nothing).
    The local connection is closed on return; the WebSocket is left to its opener.
    """
    received = False
    last_activity = time.monotonic()

    async def downstream() -> None:
        nonlocal received, last_activity
        while True:
            msg = await ws.receive()
            if msg.type == WSMsgType.CLOSED:
                return
            if msg.type == WSMsgType.BINARY and msg.data:
                received = True
                last_activity = time.monotonic()
                writer.write(msg.data)
                await writer.drain()

    async def upstream() -> None:
        nonlocal last_activity
        while chunk := await reader.read(chunk_size):
            last_activity = time.monotonic()
            await ws.send_bytes(chunk)

    down = asyncio.create_task(downstream())
    up = asyncio.create_task(upstream())
    try:
        await asyncio.wait({down, up}, return_when=asyncio.FIRST_COMPLETED)
        if up.done() and not down.done() and up.exception() is None:
            # Local EOF: maybe a half-close, so let the rest of the answer through while it flows.
            while not down.done():
                remaining = last_activity + linger - time.monotonic()
                if remaining <= 0:
                    break
                await asyncio.wait({down}, timeout=remaining)
    finally:
        for task in (down, up):
            task.cancel()
        await asyncio.gather(down, up, return_exceptions=True)
    failure: str | None = None
    if ws.closed and ws.close_code not in _NORMAL_CLOSE:
        failure = ws.close_reason or f"the connection closed with code {ws.close_code}"
        if not received:
            with contextlib.suppress(OSError):
                writer.write(error_reply(failure))
                await writer.drain()
    await _close_writer(writer)
    return failure


class LocalAppProxy:
    """A listening local address whose connections lead to *app* of the session *compute_session*.

    ``on_error`` gets one line for each connection the server refused (nothing is printed here).
    """

    def __init__(
        self,
        api: AsyncSession,
        compute_session: ComputeSession,
        app: str,
        *,
        host: str = "127.0.0.1",
        port: int = 8080,
        container_port: int | None = None,
        envs: Mapping[str, str] | None = None,
        arguments: Mapping[str, AppArgumentValue | Sequence[str]] | None = None,
        on_error: Callable[[str], None] | None = None,
        linger: float = LINGER_SECONDS,
    ) -> None:
        self.api = api
        self.compute_session = compute_session
        self.app = app
        self.host = host
        self.port = port
        self.container_port = container_port
        self.envs = dict(envs or {})
        self.arguments = dict(arguments or {})
        self.on_error = on_error
        self.linger = linger
        self._server: asyncio.Server | None = None
        self._handlers: set[asyncio.Task[None]] = set()

    @property
    def bound_port(self) -> int:
        """The port listened on (the free one picked for port 0)."""
        if self._server is None or not self._server.sockets:
            return self.port
        return int(self._server.sockets[0].getsockname()[1])

    @property
    def connections(self) -> int:
        """How many local connections are being relayed now."""
        return len(self._handlers)

    async def start(self) -> None:
        """Listen; raises ``OSError`` when the address cannot be bound (e.g. it is in use)."""
        if self.port == 0:
            # A name may resolve to several addresses; each would get another free port, so bind one.
            infos = await asyncio.get_running_loop().getaddrinfo(
                self.host, 0, type=socket.SOCK_STREAM, flags=socket.AI_PASSIVE
            )
            if not infos:
                raise OSError(f"cannot resolve {self.host}")
            family, type_, proto, _name, addr = infos[0]
            sock = socket.socket(family, type_, proto)
            try:
                sock.bind(addr)
            except OSError:
                sock.close()
                raise
            self._server = await asyncio.start_server(self._accept, sock=sock)
        else:
            self._server = await asyncio.start_server(self._accept, self.host, self.port)

    async def _accept(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        task = asyncio.current_task()
        assert task is not None
        self._handlers.add(task)
        try:
            await self._handle(reader, writer)
        except asyncio.CancelledError:
            # Only close() cancels these tasks. Ending normally matters: Python 3.11's streams callback
            # calls task.exception() and would log a cancelled task as an error with its traceback.
            pass
        finally:
            self._handlers.discard(task)

    async def _handle(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        # Each connection runs in its own task; the API functions find the client session through this.
        api_session.set(self.api)
        try:
            await self._relay(reader, writer)
        finally:
            writer.close()  # idempotent; on cancellation (proxy closing) nothing else closes it

    async def _relay(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        try:
            opener = self.compute_session.stream_tcpproxy(
                self.app, port=self.container_port, envs=self.envs, arguments=self.arguments
            )
            async with opener as ws:
                failure = await relay(ws, reader, writer, linger=self.linger)
        except BackendError as e:
            reason = str(e)
            if isinstance(e, BackendAPIError):
                reason = e.detail or e.title
            with contextlib.suppress(OSError):
                writer.write(error_reply(reason))
                await writer.drain()
            await _close_writer(writer)
            self._report(str(e))
            return
        except OSError:
            await _close_writer(writer)  # the local client went away
            return
        if failure is not None:
            self._report(failure)

    def _report(self, message: str) -> None:
        if self.on_error is not None:
            self.on_error(message)

    async def close(self) -> None:
        """Stop listening and end every relayed connection."""
        server, self._server = self._server, None
        if server is not None:
            server.close()
        handlers = list(self._handlers)
        for task in handlers:
            task.cancel()
        await asyncio.gather(*handlers, return_exceptions=True)
        if server is not None:
            with contextlib.suppress(Exception):
                await asyncio.wait_for(server.wait_closed(), 5)

    async def __aenter__(self) -> LocalAppProxy:
        await self.start()
        return self

    async def __aexit__(self, *exc_info: object) -> None:
        await self.close()
