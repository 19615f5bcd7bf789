"""WebSocket streams of the API: signed handshakes and the response wrappers (``AsyncSession`` only).

:func:`connect_websocket` opens a :class:`~ai.backend.client.request.Request` as a WebSocket. The
handshake is a ``GET`` signed exactly like a normal request (path and query string as sent, the
``Host`` the socket library sends, ``Content-Type: application/octet-stream`` as the signed content type
of a bodyless upgrade). A refused handshake raises ``BackendAPIError`` with the server's problem body::

    async with AsyncSession():
        async with connect_websocket(Request("GET", "/stream/session/mysess/execute")) as ws:
            await ws.send_json({"code": "print(1)", "mode": "query"})
            async for msg in ws:          # WSMessage objects (type, data); msg.json() parses TEXT data
                print(msg.json())

:class:`StreamPty` adds the terminal protocol (rest-api.md §6.5) on top of :class:`WebSocketResponse`.
The blocking :class:`~ai.backend.client.session.Session` cannot stream: entering one of these context
managers there raises ``BackendClientError``.
"""

from __future__ import annotations

import asyncio
import base64
import enum
import json
import ssl
from collections.abc import AsyncIterator, Awaitable, Callable
from dataclasses import dataclass
from typing import Any, Generic, Literal, TypeVar

import httpx
from websockets.asyncio.client import ClientConnection
from websockets.asyncio.client import connect as ws_connect
from websockets.exceptions import ConnectionClosed, InvalidHandshake, InvalidStatus, WebSocketException

from .exceptions import BackendAPIError, BackendClientError
from .request import Request
from .session import AsyncSession, BaseSession

__all__ = (
    "PtyEvent",
    "StreamPty",
    "WSMessage",
    "WSMsgType",
    "WebSocketContextManager",
    "WebSocketResponse",
    "build_handshake",
    "connect_websocket",
)

#: The signed content type of a bodyless WebSocket upgrade (what the reference server assumes).
HANDSHAKE_CONTENT_TYPE = "application/octet-stream"
#: Largest message accepted from the server (execute results carry up to 2 x 512k characters of console).
MAX_MESSAGE_SIZE = 64 << 20
# Headers of the prepared HTTP request that make no sense on (or would be duplicated in) a WebSocket upgrade.
_SKIP_HEADERS = frozenset(
    {"host", "content-length", "transfer-encoding", "connection", "accept-encoding", "accept", "upgrade"}
)

R = TypeVar("R", bound="WebSocketResponse")


class WSMsgType(enum.IntEnum):
    """Message kinds; the values equal ``aiohttp.WSMsgType`` so code written for aiohttp compares fine."""

    CONTINUATION = 0x0
    TEXT = 0x1
    BINARY = 0x2
    PING = 0x9
    PONG = 0xA
    CLOSE = 0x8
    CLOSING = 0x100
    CLOSED = 0x101
    ERROR = 0x102


@dataclass(frozen=True)
class WSMessage:
    """One received message: ``type`` and ``data`` (``str`` for TEXT, ``bytes`` for BINARY, ``None`` else)."""

    type: WSMsgType
    data: Any
    extra: Any = None

    def json(self) -> Any:
        """The TEXT data parsed as JSON."""
        if self.type != WSMsgType.TEXT:
            raise BackendClientError(f"Expected a text message, got {self.type.name}.")
        try:
            return json.loads(self.data)
        except json.JSONDecodeError as e:
            raise BackendClientError(f"The server sent a malformed JSON message: {e}") from None


def build_handshake(request: Request, client: httpx.AsyncClient) -> tuple[str, dict[str, str]]:
    """The ``ws://``/``wss://`` URL and the signed headers of the upgrade request for ``request``."""
    request.method = "GET"
    request.set_content(None, content_type=HANDSHAKE_CONTENT_TYPE)
    prepared = request.build(client)
    url = prepared.url
    scheme = {"http": "ws", "https": "wss"}.get(url.scheme, url.scheme)
    # The path and query go on the wire exactly as signed (httpx already percent-encoded them).
    ws_url = str(url.copy_with(scheme=scheme))
    headers = {
        k.decode("latin-1"): v.decode("latin-1")
        for k, v in prepared.headers.raw
        if k.decode("latin-1").lower() not in _SKIP_HEADERS
    }
    if request.config.endpoint_type == "session":
        cookies = "; ".join(f"{c.name}={c.value}" for c in client.cookies.jar)
        if cookies:
            headers["Cookie"] = cookies
    return ws_url, headers


class WebSocketResponse:
    """An open WebSocket of the API (a thin wrapper around a ``websockets`` connection).

    Async-iterable: ``async for msg in ws`` yields :class:`WSMessage` objects until the socket closes.
    """

    def __init__(self, session: BaseSession, conn: ClientConnection) -> None:
        self._session = session
        self._conn = conn
        self._exception: BaseException | None = None

    @property
    def session(self) -> BaseSession:
        """The client session that opened the socket."""
        return self._session

    @property
    def raw_websocket(self) -> ClientConnection:
        """The underlying ``websockets`` connection."""
        return self._conn

    @property
    def closed(self) -> bool:
        """Whether the socket is closed (by either side)."""
        return self._conn.close_code is not None

    @property
    def close_code(self) -> int | None:
        """The close code once closed."""
        return self._conn.close_code

    @property
    def close_reason(self) -> str | None:
        """The reason the closing side gave, once closed (``None`` before, ``""`` if it gave none)."""
        return self._conn.close_reason

    def exception(self) -> BaseException | None:
        """The error that broke the connection, if any."""
        return self._exception

    async def _send(self, data: str | bytes) -> None:
        try:
            await self._conn.send(data)
        except ConnectionClosed as e:
            self._exception = e
            raise BackendClientError(
                f"The WebSocket is closed ({e.rcvd.code if e.rcvd else 'no close frame'})."
            ) from None

    async def send_str(self, data: str) -> None:
        """Send a TEXT message."""
        await self._send(str(data))

    send_text = send_str

    async def send_bytes(self, data: bytes) -> None:
        """Send a BINARY message."""
        await self._send(bytes(data))

    async def send_json(self, obj: Any) -> None:
        """Send ``obj`` as a JSON TEXT message."""
        await self._send(json.dumps(obj))

    async def receive(self, timeout: float | None = None) -> WSMessage:
        """The next message; a ``CLOSED`` message once the socket is closed."""
        try:
            data = await asyncio.wait_for(self._conn.recv(), timeout)
        except ConnectionClosed as e:
            if e.rcvd is None or e.rcvd.code not in (1000, 1001):
                self._exception = e
            return WSMessage(WSMsgType.CLOSED, None, e.rcvd.code if e.rcvd else None)
        except TimeoutError:
            raise BackendClientError(f"No message from the server within {timeout} seconds.") from None
        if isinstance(data, bytes):
            return WSMessage(WSMsgType.BINARY, data)
        return WSMessage(WSMsgType.TEXT, data)

    async def receive_str(self, timeout: float | None = None) -> str:
        """The next message, which must be TEXT."""
        msg = await self.receive(timeout)
        if msg.type != WSMsgType.TEXT:
            raise BackendClientError(f"Expected a text message, got {msg.type.name}.")
        return str(msg.data)

    async def receive_bytes(self, timeout: float | None = None) -> bytes:
        """The next message, which must be BINARY."""
        msg = await self.receive(timeout)
        if msg.type != WSMsgType.BINARY:
            raise BackendClientError(f"Expected a binary message, got {msg.type.name}.")
        return bytes(msg.data)

    async def receive_json(self, timeout: float | None = None) -> Any:
        """The next message parsed as JSON."""
        return (await self.receive(timeout)).json()

    async def close(self, code: int = 1000) -> None:
        """Close the socket (idempotent)."""
        await self._conn.close(code)

    async def __aiter__(self) -> AsyncIterator[Any]:
        while True:
            msg = await self.receive()
            if msg.type == WSMsgType.CLOSED:
                return
            yield msg


@dataclass(frozen=True)
class PtyEvent:
    """One terminal message from the server: ``out`` with ``bytes`` data, or ``error`` with a message."""

    type: Literal["out", "error"]
    data: bytes | str


class StreamPty(WebSocketResponse):
    """A terminal in a compute session (``GET /stream/session/:id/pty``).

    ``async for chunk in pty`` yields the terminal's output bytes; server ``error`` messages (for a bad
    message; the terminal stays usable) are collected in :attr:`errors`. :meth:`events` yields both.
    ``send_str`` stays the raw TEXT send of :class:`WebSocketResponse`; type with :meth:`send_stdin`.
    """

    def __init__(self, session: BaseSession, conn: ClientConnection) -> None:
        super().__init__(session, conn)
        self.errors: list[str] = []

    async def send_stdin(self, data: str | bytes) -> None:
        """Type ``data`` (text is UTF-8 encoded; control characters allowed)."""
        raw = data.encode("utf-8") if isinstance(data, str) else bytes(data)
        await self.send_json({"type": "stdin", "chars": base64.b64encode(raw).decode("ascii")})

    write = send_stdin

    async def resize(self, rows: int, cols: int) -> None:
        """Set the terminal size (the foreground program gets SIGWINCH)."""
        if not (isinstance(rows, int) and isinstance(cols, int) and rows > 0 and cols > 0):
            raise BackendClientError("rows and cols must be positive integers")
        await self.send_json({"type": "resize", "rows": rows, "cols": cols})

    async def restart(self) -> None:
        """Replace the shell (and everything it started) with a fresh one; files stay."""
        await self.send_json({"type": "restart"})

    async def ping(self) -> None:
        """Keep-alive: counts as activity against the session's idle timeout."""
        await self.send_json({"type": "ping"})

    async def receive_event(self, timeout: float | None = None) -> PtyEvent | None:
        """The next ``out``/``error`` message (``None`` once closed); other messages are skipped."""
        while True:
            msg = await self.receive(timeout)
            if msg.type == WSMsgType.CLOSED:
                return None
            if msg.type != WSMsgType.TEXT:
                continue
            doc = msg.json()
            if not isinstance(doc, dict):
                continue
            if doc.get("type") == "out":
                try:
                    return PtyEvent("out", base64.b64decode(str(doc.get("data", ""))))
                except ValueError:
                    raise BackendClientError("The server sent undecodable terminal output.") from None
            if doc.get("type") == "error":
                self.errors.append(str(doc.get("data")))
                return PtyEvent("error", str(doc.get("data")))

    async def events(self) -> AsyncIterator[PtyEvent]:
        """Yield every ``out`` and ``error`` message until the terminal closes."""
        while (ev := await self.receive_event()) is not None:
            yield ev

    async def __aiter__(self) -> AsyncIterator[Any]:
        async for ev in self.events():
            if ev.type == "out":
                yield ev.data


class WebSocketContextManager(Generic[R]):
    """Opens the WebSocket of a request on ``async with`` and closes it on exit.

    ``on_enter`` runs with the fresh response before it is handed out (e.g. the first message of a
    streaming execute). Connection failures fail over to the next configured endpoint.
    """

    def __init__(
        self, request: Request, *, response_cls: type[R], on_enter: Callable[[R], Awaitable[None]] | None = None
    ) -> None:
        self.request = request
        self.response_cls = response_cls
        self.on_enter = on_enter
        self._response: R | None = None

    def _ssl(self) -> ssl.SSLContext | None:
        if not self.request.config.skip_sslcert_validation:
            return None
        ctx = ssl.create_default_context()
        ctx.check_hostname = False
        ctx.verify_mode = ssl.CERT_NONE
        return ctx

    async def _connect(self) -> ClientConnection:
        session = self.request.session
        config = session.config
        attempts = len(config.endpoints)
        for attempt in range(attempts):
            endpoint = config.endpoint
            url, headers = build_handshake(self.request, session.http_client)
            extra: dict[str, Any] = {}
            if url.startswith("wss:") and (ctx := self._ssl()) is not None:
                extra["ssl"] = ctx
            try:
                return await ws_connect(
                    url,
                    additional_headers=headers,
                    user_agent_header=None,
                    open_timeout=config.connection_timeout or None,
                    max_size=MAX_MESSAGE_SIZE,
                    **extra,
                )
            except InvalidStatus as e:
                resp = e.response
                raise BackendAPIError(resp.status_code, resp.reason_phrase, bytes(resp.body or b"")) from None
            except (OSError, TimeoutError) as e:
                if attempt + 1 < attempts and isinstance(e, ConnectionError | TimeoutError):
                    config.rotate_endpoints()
                    continue
                raise BackendClientError(
                    f"Cannot connect to the API endpoint {endpoint}: {str(e) or type(e).__name__}"
                ) from e
            except (InvalidHandshake, WebSocketException) as e:
                raise BackendClientError(f"The WebSocket handshake with {endpoint} failed: {e}") from e
        raise BackendClientError("No API endpoint is configured")

    async def __aenter__(self) -> R:
        session = self.request.session
        if not isinstance(session, AsyncSession):
            raise BackendClientError("WebSocket streams need an AsyncSession; the blocking Session cannot stream.")
        conn = await self._connect()
        response = self.response_cls(session, conn)
        self._response = response
        if self.on_enter is not None:
            try:
                await self.on_enter(response)
            except BaseException:
                await conn.close()
                raise
        return response

    async def __aexit__(self, *exc_info: object) -> Literal[False]:
        response, self._response = self._response, None
        if response is not None:
            await response.close()
        return False

    def __enter__(self) -> Any:
        raise BackendClientError(
            "WebSocket streams need an AsyncSession and 'async with'; the blocking Session cannot stream."
        )

    def __exit__(self, *exc_info: object) -> Literal[False]:
        return False


def connect_websocket(
    request: Request,
    *,
    response_cls: type[R] = WebSocketResponse,  # type: ignore[assignment]
    on_enter: Callable[[R], Awaitable[None]] | None = None,
) -> WebSocketContextManager[R]:
    """Open ``request`` as a WebSocket (see :class:`WebSocketContextManager`)."""
    return WebSocketContextManager(request, response_cls=response_cls, on_enter=on_enter)
