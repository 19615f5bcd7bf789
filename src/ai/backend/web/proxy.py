"""The ``/func/`` proxy: the manager's API re-signed with the logged-in user's keypair.

Each call is signed for the manager's own URL (its host and the path as sent), so the manager checks it
like any client's and needs no ``X-Forwarded-URL`` trust. Bodies and answers stream through (uploads,
downloads, Server-Sent Events); WebSocket upgrades become a signed WebSocket to the manager, and TEXT and
BINARY frames are copied both ways.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
from typing import Any
from urllib.parse import urlsplit

import aiohttp
from aiohttp import WSMsgType, web
from yarl import URL

from ai.backend.common.auth import sign_request_headers
from ai.backend.common.logs import forward_request_id
from ai.backend.common.problems import BadGateway, problem_document

from .config import APISection

__all__ = ["API_VERSION", "Upstream", "manager_url", "proxy_func", "proxy_root"]

log = logging.getLogger("ai.backend.web.proxy")

API_VERSION = "v6.20220615"
#: Bodies up to this size are read into memory (and their hash signed); larger or unsized ones stream.
BUFFER_LIMIT = 4 * 1024 * 1024
#: Answers up to this size (with a Content-Length) are sent in one piece rather than streamed.
SMALL_ANSWER = 1024 * 1024
#: The largest WebSocket message taken from a browser (the manager's own limit, uvicorn's default).
MAX_WS_MESSAGE = 16 * 1024 * 1024

# Hop-by-hop headers, those the signature sets, and those the webserver alone may set towards the manager.
_DROP_REQUEST = frozenset(
    {
        "connection",
        "keep-alive",
        "proxy-authenticate",
        "proxy-authorization",
        "te",
        "trailer",
        "transfer-encoding",
        "upgrade",
        "host",
        "cookie",
        "authorization",
        "date",
        "x-backendai-date",
        "x-sorna-date",
        "x-backendai-version",
        "x-sorna-version",
        "content-length",
        "content-type",
        "x-forwarded-url",
        "x-forwarded-for",
        "x-forwarded-host",
        "x-forwarded-proto",
        "x-real-ip",
        "x-backendai-body-sha256",
        "x-backendai-cluster-secret",
        "expect",
        "origin",
        "referer",
        "sec-websocket-key",
        "sec-websocket-version",
        "sec-websocket-extensions",
        "sec-websocket-protocol",
        "sec-websocket-accept",
    }
)
# Hop-by-hop headers and anything that would let the manager's answer set state in the browser.
_DROP_RESPONSE = frozenset(
    {
        "connection",
        "keep-alive",
        "proxy-authenticate",
        "te",
        "trailer",
        "transfer-encoding",
        "upgrade",
        "content-length",
        "set-cookie",
        "access-control-allow-origin",
        "access-control-allow-credentials",
        "access-control-allow-headers",
        "access-control-allow-methods",
        "access-control-expose-headers",
        "server",
        "date",
    }
)


class Upstream:
    """The manager endpoint(s) and one pooled HTTP client for all of them."""

    def __init__(self, conf: APISection) -> None:
        self.conf = conf
        self.endpoints = list(conf.endpoint)
        self._client: aiohttp.ClientSession | None = None

    @property
    def client(self) -> aiohttp.ClientSession:
        if self._client is None:
            connector = aiohttp.TCPConnector(limit=0, ssl=self.conf.ssl_verify, keepalive_timeout=30)
            self._client = aiohttp.ClientSession(
                connector=connector,
                auto_decompress=False,
                cookie_jar=aiohttp.DummyCookieJar(),
                timeout=aiohttp.ClientTimeout(total=None, sock_connect=self.conf.connect_timeout),
                skip_auto_headers=("User-Agent", "Content-Type"),
                # Every call to the manager (the proxy's, the console's, WebSockets) carries this request's id.
                middlewares=(forward_request_id,),
            )
        return self._client

    async def close(self) -> None:
        if self._client is not None:
            await self._client.close()

    def _rotate(self) -> None:
        self.endpoints.append(self.endpoints.pop(0))

    async def authorize(self, domain: str, username: str, password: str, client_ip: str) -> tuple[int, Any]:
        """The manager's ``POST /auth/authorize`` (unsigned): its status and decoded JSON answer."""
        body = {"type": "keypair", "domain": domain, "username": username, "password": password}
        for attempt in range(len(self.endpoints)):
            endpoint = self.endpoints[0]
            try:
                async with self.client.post(
                    endpoint + "/auth/authorize", json=body, headers={"X-Forwarded-For": client_ip}
                ) as resp:
                    try:
                        answer = await resp.json(content_type=None)
                    except ValueError:
                        answer = None
                    return resp.status, answer
            except aiohttp.ClientConnectionError as e:
                if attempt + 1 < len(self.endpoints):
                    self._rotate()
                    continue
                raise BadGateway(f"The manager at {endpoint} cannot be reached: {e}") from None
        raise BadGateway("No manager endpoint is configured.")


def _forward_headers(request: web.Request) -> dict[str, str]:
    headers = {k: v for k, v in request.headers.items() if k.lower() not in _DROP_REQUEST}
    prior = request.headers.get("X-Forwarded-For")
    remote = request.remote or ""
    headers["X-Forwarded-For"] = f"{prior}, {remote}" if prior else remote
    return headers


def _response_headers(upstream: aiohttp.ClientResponse) -> dict[str, str]:
    out: dict[str, str] = {}
    for k, v in upstream.headers.items():
        if k.lower() not in _DROP_RESPONSE:
            out[k] = v if k not in out else f"{out[k]}, {v}"
    return out


def manager_url(endpoint: str, tail: str, query: str) -> tuple[URL, str, str]:
    """The manager URL (exactly as it goes on the wire), its path with query, and its Host header value."""
    parts = urlsplit(endpoint)
    path = parts.path.rstrip("/") + "/" + tail
    path_with_query = path + (f"?{query}" if query else "")
    return URL(f"{parts.scheme}://{parts.netloc}{path_with_query}", encoded=True), path_with_query, parts.netloc


def _raw_tail(request: web.Request) -> tuple[str, str]:
    """The path after ``/func/`` and the query string, still percent-encoded as the client sent them."""
    raw = request.raw_path
    path, _, query = raw.partition("?")
    tail = path[len("/func") :].lstrip("/")
    return tail, query


async def proxy_root(request: web.Request, upstream: Upstream) -> web.StreamResponse:
    """``GET /func/``: the manager's root (its API version), with no login needed."""
    url, _, _ = manager_url(upstream.endpoints[0], "", "")
    try:
        async with upstream.client.get(url) as resp:
            body = await resp.read()
            return web.Response(status=resp.status, body=body, headers=_response_headers(resp))
    except aiohttp.ClientConnectionError as e:
        raise BadGateway(f"The manager cannot be reached: {e}") from None


async def proxy_func(
    request: web.Request, upstream: Upstream, tail: str, access_key: str, secret_key: str, *, websocket: bool = False
) -> web.StreamResponse:
    """Forward one ``/func/`` call to the manager as the keypair's owner and stream the answer back."""
    raw_tail, query = _raw_tail(request)
    version = request.headers.get("X-BackendAI-Version") or API_VERSION
    if websocket:
        return await _proxy_websocket(request, upstream, raw_tail, query, version, access_key, secret_key)
    method = request.method
    content_type = request.headers.get("Content-Type") or "application/octet-stream"
    headers = _forward_headers(request)
    body: Any
    length = request.content_length
    if not request.body_exists:
        body = b""
    elif length is not None and length <= BUFFER_LIMIT:
        body = await request.read()
    else:
        body = request.content  # streamed: large uploads never sit in this process's memory
        if length is not None:
            headers["Content-Length"] = str(length)
    in_memory = isinstance(body, bytes)
    url, path_with_query, host = manager_url(upstream.endpoints[0], raw_tail, query)
    headers.update(
        sign_request_headers(
            method=method,
            path_with_query=path_with_query,
            host=host,
            content_type=content_type,
            version=version,
            access_key=access_key,
            secret_key=secret_key,
            body=body if in_memory else b"",
            # The body's hash is signed when it is at hand, so a captured call cannot carry another body.
            sign_body=in_memory and (bool(body) or method not in ("GET", "HEAD")),
        )
    )
    try:
        ctx = upstream.client.request(
            method, url, data=body if (not in_memory or body) else None, headers=headers, allow_redirects=False
        )
        resp = await ctx.__aenter__()
    except aiohttp.ClientConnectionError as e:
        raise BadGateway(f"The manager cannot be reached: {e}") from None
    stream: web.StreamResponse | None = None
    try:
        out_headers = _response_headers(resp)
        if resp.content_length is not None and resp.content_length <= SMALL_ANSWER:
            data = await resp.read()
            return web.Response(status=resp.status, body=data, headers=out_headers)
        stream = web.StreamResponse(status=resp.status, headers=out_headers)
        if resp.content_length is not None:
            stream.content_length = resp.content_length
        await stream.prepare(request)
        # Chunks go out as they arrive: Server-Sent Events and long downloads flow without buffering.
        async for chunk in resp.content.iter_any():
            await stream.write(chunk)
        await stream.write_eof()
        return stream
    except (aiohttp.ClientPayloadError, aiohttp.ClientConnectionError, ConnectionResetError) as e:
        if stream is None:
            raise BadGateway(f"The manager's answer broke off: {e}") from None
        # Headers are out: all that is left is to end the client's connection as the manager's ended.
        log.info("stream of %s /%s ended early: %s", method, raw_tail, e)
        return stream
    finally:
        await ctx.__aexit__(None, None, None)


async def _proxy_websocket(
    request: web.Request, upstream: Upstream, raw_tail: str, query: str, version: str, access_key: str, secret_key: str
) -> web.StreamResponse:
    url, path_with_query, host = manager_url(upstream.endpoints[0], raw_tail, query)
    url = url.with_scheme("wss" if url.scheme == "https" else "ws")
    headers = _forward_headers(request)
    # The manager reads a handshake without Content-Type as application/octet-stream; none is sent.
    signed = sign_request_headers(
        method="GET",
        path_with_query=path_with_query,
        host=host,
        content_type="application/octet-stream",
        version=version,
        access_key=access_key,
        secret_key=secret_key,
    )
    signed.pop("Content-Type", None)
    headers.update(signed)
    protocols = [p.strip() for p in request.headers.get("Sec-WebSocket-Protocol", "").split(",") if p.strip()]
    try:
        up_ws = await upstream.client.ws_connect(
            url, headers=headers, protocols=protocols, autoping=True, heartbeat=None, max_msg_size=0, compress=0
        )
    except aiohttp.WSServerHandshakeError as e:
        # A refusal before the upgrade (no such session, not yours, not running) is answered as HTTP.
        status = e.status if 400 <= e.status < 600 else 502
        return web.json_response(
            problem_document(status, "websocket-refused", "WebSocket refused by the manager", e.message),
            status=status,
            content_type="application/problem+json",
        )
    except aiohttp.ClientConnectionError as e:
        raise BadGateway(f"The manager cannot be reached: {e}") from None
    # A browser's message is bounded like the manager bounds it (uvicorn's 16 MiB): the webserver holds
    # each one in memory before passing it on.
    down_ws = web.WebSocketResponse(protocols=protocols, autoping=True, max_msg_size=MAX_WS_MESSAGE)
    try:
        await down_ws.prepare(request)

        async def to_manager() -> None:
            async for msg in down_ws:
                if msg.type == WSMsgType.TEXT:
                    await up_ws.send_str(msg.data)
                elif msg.type == WSMsgType.BINARY:
                    await up_ws.send_bytes(msg.data)
            await up_ws.close(code=down_ws.close_code or 1000)

        async def to_browser() -> None:
            async for msg in up_ws:
                if msg.type == WSMsgType.TEXT:
                    await down_ws.send_str(msg.data)
                elif msg.type == WSMsgType.BINARY:
                    await down_ws.send_bytes(msg.data)
            await down_ws.close(code=up_ws.close_code or 1000)

        tasks = [asyncio.ensure_future(to_manager()), asyncio.ensure_future(to_browser())]
        # Either side closing ends both directions.
        _, pending = await asyncio.wait(tasks, return_when=asyncio.FIRST_COMPLETED)
        for t in pending:
            t.cancel()
        for t in tasks:
            with contextlib.suppress(asyncio.CancelledError, ConnectionError, aiohttp.ClientError):
                await t
    finally:
        await up_ws.close()
        await down_ws.close()
    return down_ws
