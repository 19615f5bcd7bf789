"""Reverse-proxying one request of a circuit to its app: HTTP with streamed bodies both ways, and WebSockets
with TEXT, BINARY and close codes relayed both ways.

The app sees the browser's view of the address: ``Host`` is the circuit's ``host:port`` as the browser
wrote it and ``Origin`` goes through untouched, so same-origin checks such as Jupyter's pass; the
``X-Forwarded-*`` headers say who asked and how. The proxy's permit cookies are taken out of ``Cookie``
(apps must never see them), and an app cannot set one either.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
from collections.abc import Callable
from dataclasses import dataclass
from typing import TYPE_CHECKING, Protocol

import aiohttp
from aiohttp import WSMsgType, web
from multidict import CIMultiDict
from yarl import URL

from .errors import BadRequest, UpstreamDown
from .permits import is_permit_cookie

if TYPE_CHECKING:
    from .metrics import AppProxyMetrics


class Counted(Protocol):
    """A counter child (``prometheus_client``): what the relay adds the bytes to."""

    def inc(self, amount: float = 1) -> None: ...


__all__ = ["MAX_WS_MESSAGE", "Target", "WebSocketPair", "forward_http", "forward_websocket", "strip_permits"]

log = logging.getLogger("ai.backend.appproxy.forward")

#: The largest WebSocket message relayed (each is held in memory once on its way through).
MAX_WS_MESSAGE = 32 * 1024 * 1024

_HOP_BY_HOP = frozenset(
    {"connection", "keep-alive", "proxy-authenticate", "proxy-authorization", "te", "trailer", "transfer-encoding"}
)
# Besides the hop-by-hop ones: what this proxy sets itself towards the app.
_DROP_REQUEST = _HOP_BY_HOP | {
    "upgrade",
    "host",
    "cookie",
    "content-length",
    "expect",
    "x-forwarded-for",
    "x-forwarded-host",
    "x-forwarded-proto",
}
# The client side of aiohttp makes its own handshake; the subprotocols go through as a parameter.
_DROP_WEBSOCKET = _DROP_REQUEST | {
    "sec-websocket-key",
    "sec-websocket-version",
    "sec-websocket-extensions",
    "sec-websocket-protocol",
}
_DROP_RESPONSE = _HOP_BY_HOP | {"upgrade", "content-length"}

WebSocketEnd = web.WebSocketResponse | aiohttp.ClientWebSocketResponse


@dataclass(frozen=True)
class Target:
    """Where an app listens (the agent's published host port)."""

    host: str
    port: int

    def url(self, raw_path: str, *, websocket: bool = False) -> URL:
        host = f"[{self.host}]" if ":" in self.host else self.host
        return URL(f"{'ws' if websocket else 'http'}://{host}:{self.port}{raw_path}", encoded=True)


def _why(e: BaseException) -> str:
    """An exception as a short reason (client errors can quote whole response bodies)."""
    text = str(e) or type(e).__name__
    return text if len(text) <= 200 else text[:200] + "..."


def strip_permits(cookie_header: str) -> str:
    """``cookie_header`` without this proxy's permits (the other cookies kept as the browser wrote them)."""
    kept = [
        part.strip()
        for part in cookie_header.split(";")
        if part.strip() and not is_permit_cookie(part.split("=", 1)[0].strip())
    ]
    return "; ".join(kept)


def _request_headers(request: web.Request, *, websocket: bool) -> CIMultiDict[str]:
    drop = _DROP_WEBSOCKET if websocket else _DROP_REQUEST
    # Headers named in Connection are hop-by-hop too (RFC 9110 7.6.1).
    listed = {h.strip().lower() for h in request.headers.get("Connection", "").split(",") if h.strip()}
    headers: CIMultiDict[str] = CIMultiDict()
    for k, v in request.headers.items():
        low = k.lower()
        if low not in drop and low not in listed:
            headers.add(k, v)
    host = request.headers.get("Host") or f"{request.url.host}:{request.url.port}"
    headers["Host"] = host
    cookies = strip_permits("; ".join(request.headers.getall("Cookie", [])))
    if cookies:
        headers["Cookie"] = cookies
    prior = request.headers.get("X-Forwarded-For")
    remote = request.remote or ""
    headers["X-Forwarded-For"] = f"{prior}, {remote}" if prior else remote
    headers["X-Forwarded-Proto"] = "http"
    headers["X-Forwarded-Host"] = host
    return headers


def _raw_path(request: web.Request) -> str:
    raw = request.raw_path
    if not raw.startswith("/"):
        # An absolute-form target ("GET http://elsewhere/") would make this an open proxy.
        raise BadRequest("Only origin-form request targets (/path) are served here.")
    return raw


def _keep_response_header(name: str, value: str) -> bool:
    low = name.lower()
    if low in _DROP_RESPONSE:
        return False
    if low == "set-cookie" and is_permit_cookie(value.split("=", 1)[0].strip()):
        return False  # an app cannot plant or overwrite a permit
    return True


async def forward_http(
    request: web.Request, client: aiohttp.ClientSession, target: Target, *, metrics: AppProxyMetrics | None = None
) -> web.StreamResponse:
    """Send ``request`` to the app and stream its answer back; 502 when the app cannot be reached (``metrics``:
    where the bytes relayed are counted)."""
    url = target.url(_raw_path(request))
    headers = _request_headers(request, websocket=False)
    data: aiohttp.StreamReader | None = None
    if request.body_exists:
        data = request.content  # streamed: an upload never sits whole in this process
        if request.content_length is not None:
            headers["Content-Length"] = str(request.content_length)
    try:
        ctx = client.request(request.method, url, headers=headers, data=data, allow_redirects=False)
        resp = await ctx.__aenter__()
    except (TimeoutError, aiohttp.ClientError) as e:
        raise UpstreamDown(f"The app at {target.host}:{target.port} does not answer ({_why(e)}).") from None
    out = web.StreamResponse(status=resp.status, reason=resp.reason)
    try:
        for k, v in resp.headers.items():
            if _keep_response_header(k, v):
                out.headers.add(k, v)
        if resp.content_length is not None:
            out.content_length = resp.content_length
        await out.prepare(request)
        # Chunks go out as they arrive (a download streams, events flow); write() waits while the browser
        # is slower than the app, so memory stays at a few buffers whatever the size.
        async for chunk in resp.content.iter_any():
            await out.write(chunk)
            if metrics is not None:
                metrics.bytes_down.inc(len(chunk))
        await out.write_eof()
        return out
    except (TimeoutError, aiohttp.ClientError, ConnectionResetError) as e:
        if not out.prepared:
            raise UpstreamDown(f"The app's answer broke off: {_why(e)}") from None
        log.info("%s %s to %s:%d ended early: %r", request.method, request.path, target.host, target.port, e)
        # Headers are out: end the browser's connection so a chunked answer does not look complete.
        if request.transport is not None:
            request.transport.close()
        return out
    finally:
        if metrics is not None and data is not None:
            metrics.bytes_up.inc(data.total_bytes)  # what the body streamed to the app so far
        await ctx.__aexit__(None, None, None)


@dataclass(eq=False)  # identity: pairs are kept in sets
class WebSocketPair:
    """A relayed WebSocket: the browser's end and the app's end."""

    browser: web.WebSocketResponse
    app: aiohttp.ClientWebSocketResponse

    async def close(self, code: int = 1001, message: str = "The app proxy closed this connection.") -> None:
        """End both ends (the browser's first, with ``code``)."""
        with contextlib.suppress(Exception):
            await self.browser.close(code=code, message=message.encode()[:123])
        with contextlib.suppress(Exception):
            await self.app.close(code=code)


def _sendable(code: int | None) -> int:
    """A close code that may be sent on the wire for one received (or None when the peer just vanished)."""
    if code is None:
        return 1001
    if code == 1005:  # "no status": a plain close
        return 1000
    if 1000 <= code <= 1003 or 1007 <= code <= 1014 or 3000 <= code <= 4999:
        return code
    return 1001


async def _pump(src: WebSocketEnd, dst: WebSocketEnd, relayed: Counted | None) -> tuple[int | None, str]:
    """Copy messages from ``src`` to ``dst`` until ``src`` closes; returns the close code and reason seen.
    ``relayed`` counts the payload bytes (a text message's UTF-8 bytes)."""
    while True:
        msg = await src.receive()
        if msg.type is WSMsgType.TEXT:
            await dst.send_str(msg.data)
            if relayed is not None:
                relayed.inc(len(msg.data.encode()))
        elif msg.type is WSMsgType.BINARY:
            await dst.send_bytes(msg.data)
            if relayed is not None:
                relayed.inc(len(msg.data))
        elif msg.type is WSMsgType.CLOSE:
            return int(msg.data), str(msg.extra or "")
        elif msg.type in (WSMsgType.CLOSING, WSMsgType.CLOSED, WSMsgType.ERROR):
            return None, ""
        # PING and PONG are answered by each end itself (autoping).


async def _relay(pair: WebSocketPair, metrics: AppProxyMetrics | None) -> None:
    to_app = asyncio.ensure_future(_pump(pair.browser, pair.app, metrics.bytes_up if metrics else None))
    to_browser = asyncio.ensure_future(_pump(pair.app, pair.browser, metrics.bytes_down if metrics else None))
    done, pending = await asyncio.wait((to_app, to_browser), return_when=asyncio.FIRST_COMPLETED)
    for t in pending:
        t.cancel()
        with contextlib.suppress(BaseException):
            await t
    first = done.pop()
    code, reason = (None, "") if first.cancelled() or first.exception() else first.result()
    # The side that closed first decides how the other one is closed.
    other: WebSocketEnd = pair.app if first is to_app else pair.browser
    with contextlib.suppress(Exception):
        await other.close(code=_sendable(code), message=reason.encode()[:123])


async def forward_websocket(
    request: web.Request,
    client: aiohttp.ClientSession,
    target: Target,
    track: Callable[[WebSocketPair], Callable[[], None]],
    *,
    metrics: AppProxyMetrics | None = None,
) -> web.StreamResponse:
    """Open the same WebSocket on the app, then accept the browser's and relay until either end closes.
    ``track`` registers the pair with its circuit (which may close it) and returns the unregistering call."""
    url = target.url(_raw_path(request), websocket=True)
    headers = _request_headers(request, websocket=True)
    protocols = [p.strip() for p in request.headers.get("Sec-WebSocket-Protocol", "").split(",") if p.strip()]
    try:
        app_ws = await client.ws_connect(
            url, headers=headers, protocols=protocols, autoping=True, max_msg_size=MAX_WS_MESSAGE, compress=0
        )
    except aiohttp.WSServerHandshakeError as e:
        # The app refused the upgrade (a foreign origin, a kernel that is gone): its verdict, as HTTP.
        status = e.status if 400 <= e.status < 600 else 502
        return web.Response(status=status, text=f"The app refused the WebSocket: {e.message}\n")
    except (TimeoutError, aiohttp.ClientError) as e:
        raise UpstreamDown(f"The app at {target.host}:{target.port} does not answer ({_why(e)}).") from None
    browser_ws = web.WebSocketResponse(
        protocols=[app_ws.protocol] if app_ws.protocol else (), autoping=True, max_msg_size=MAX_WS_MESSAGE
    )
    pair = WebSocketPair(browser_ws, app_ws)
    untrack: Callable[[], None] | None = None
    try:
        untrack = track(pair)
        await browser_ws.prepare(request)
        await _relay(pair, metrics)
    finally:
        if untrack is not None:
            untrack()
        with contextlib.suppress(Exception):
            await app_ws.close()
        with contextlib.suppress(Exception):
            await browser_ws.close()
    return browser_ws
