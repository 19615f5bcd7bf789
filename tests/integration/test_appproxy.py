"""The app proxy (``ai.backend.appproxy``) as a real process on loopback, in front of a real aiohttp "app"
(HTTP echo, WebSocket echo, 100 MB answers) and a stand-in for the manager's ``/internal/appproxy/alive``:
tokens, circuits, permits, forwarding, memory bounds while streaming, and every way a circuit closes."""

from __future__ import annotations

import asyncio
import dataclasses
import gzip
import secrets
import socket
import threading
import time
import uuid
from collections.abc import Iterator
from concurrent.futures import Future
from dataclasses import dataclass
from pathlib import Path
from typing import Any
from urllib.parse import urlsplit

import aiohttp
import pytest
from aiohttp import WSMsgType, web
from yarl import URL

from ai.backend.common.app_tokens import APPPROXY_SECRET_HEADER, AppGrant, issue
from ai.backend.testutils.appproxy import AppProxy, launch_appproxy

SECRET = "appproxy-test-secret-" + uuid.uuid4().hex
MiB = 1 << 20
_CHUNK = b"x" * MiB


class Backends:
    """The app and the fake manager, served from their own event loop in a thread (the tests' loops come
    and go per test)."""

    def __init__(self) -> None:
        self.loop = asyncio.new_event_loop()
        self.thread = threading.Thread(target=self.loop.run_forever, daemon=True)
        self.runners: list[web.AppRunner] = []
        self.app_port = 0
        self.manager_port = 0
        self.ws_closes: list[int | None] = []
        self.ws_headers: list[dict[str, str]] = []
        self.slow_ended = threading.Event()
        self.alive_calls: list[tuple[str | None, Any]] = []
        self.dead: set[str] = set()
        self.manager_mode = "ok"  # ok | error | garbage

    # ------------------------------------------------------------------------------------ the app

    async def _echo(self, request: web.Request) -> web.StreamResponse:
        return web.json_response(
            {"method": request.method, "path": request.raw_path, "headers": list(request.headers.items())}
        )

    async def _upload(self, request: web.Request) -> web.StreamResponse:
        n = 0
        async for chunk in request.content.iter_any():
            n += len(chunk)
        return web.json_response({"bytes": n})

    async def _big(self, request: web.Request) -> web.StreamResponse:
        mb = int(request.query.get("mb", "1"))
        resp = web.StreamResponse(headers={"Content-Type": "application/octet-stream"})
        resp.content_length = mb * MiB
        await resp.prepare(request)
        for _ in range(mb if request.method == "GET" else 0):
            await resp.write(_CHUNK)
        await resp.write_eof()
        return resp

    async def _slow(self, request: web.Request) -> web.StreamResponse:
        resp = web.StreamResponse()
        await resp.prepare(request)
        try:
            while True:
                await resp.write(b"tick\n")
                await asyncio.sleep(0.05)
        finally:
            self.slow_ended.set()

    async def _set_cookie(self, request: web.Request) -> web.StreamResponse:
        resp = web.Response(text="ok")
        resp.headers.add("Set-Cookie", "app=1; Path=/")
        resp.headers.add("Set-Cookie", "bai_permit_planted=evil; Path=/")
        return resp

    async def _gzip(self, request: web.Request) -> web.StreamResponse:
        if request.headers.get("If-None-Match") == '"v1"':
            return web.Response(status=304, headers={"ETag": '"v1"'})
        body = gzip.compress(b"compressed by the app " * 100)
        return web.Response(body=body, headers={"Content-Encoding": "gzip", "ETag": '"v1"'})

    async def _redirect(self, request: web.Request) -> web.StreamResponse:
        return web.Response(status=303, headers={"Location": "/echo?after=redirect"})

    async def _ws(self, request: web.Request) -> web.StreamResponse:
        self.ws_headers.append(dict(request.headers))
        ws = web.WebSocketResponse(protocols=("app.v1",))
        await ws.prepare(request)
        async for msg in ws:
            if msg.type is WSMsgType.TEXT:
                if msg.data.startswith("close:"):
                    await ws.close(code=int(msg.data[6:]), message=b"bye from the app")
                    break
                await ws.send_str("echo:" + msg.data)
            elif msg.type is WSMsgType.BINARY:
                await ws.send_bytes(msg.data[::-1])
        self.ws_closes.append(ws.close_code)
        return ws

    # ---------------------------------------------------------------------------- the fake manager

    async def _alive(self, request: web.Request) -> web.StreamResponse:
        body = await request.json()
        self.alive_calls.append((request.headers.get(APPPROXY_SECRET_HEADER), body))
        if self.manager_mode == "error":
            return web.json_response({"title": "down"}, status=500)
        if self.manager_mode == "garbage":
            return web.Response(text="not json")
        return web.json_response({"alive": [s for s in body["session_ids"] if s not in self.dead]})

    # --------------------------------------------------------------------------------- lifecycle

    async def _serve(self, app: web.Application) -> int:
        runner = web.AppRunner(app, shutdown_timeout=1)
        await runner.setup()
        site = web.TCPSite(runner, "127.0.0.1", 0)
        await site.start()
        self.runners.append(runner)
        return int(runner.addresses[0][1])

    async def _start(self) -> None:
        app = web.Application()
        app.router.add_route("*", "/echo", self._echo)
        app.router.add_route("*", "/echo/{tail:.*}", self._echo)
        app.router.add_post("/upload", self._upload)
        app.router.add_get("/big", self._big)
        app.router.add_get("/slow", self._slow)
        app.router.add_get("/set-cookie", self._set_cookie)
        app.router.add_get("/ws", self._ws)
        app.router.add_get("/gzip", self._gzip)
        app.router.add_post("/redirect", self._redirect)
        self.app_port = await self._serve(app)
        manager = web.Application()
        manager.router.add_post("/internal/appproxy/alive", self._alive)
        self.manager_port = await self._serve(manager)

    async def _stop(self) -> None:
        for r in self.runners:
            await r.cleanup()

    def run(self, coro: Any) -> Any:
        fut: Future[Any] = asyncio.run_coroutine_threadsafe(coro, self.loop)
        return fut.result(30)

    def start(self) -> None:
        self.thread.start()
        self.run(self._start())

    def stop(self) -> None:
        self.run(self._stop())
        self.loop.call_soon_threadsafe(self.loop.stop)
        self.thread.join(10)


@pytest.fixture(scope="module")
def backends() -> Iterator[Backends]:
    b = Backends()
    b.start()
    try:
        yield b
    finally:
        b.stop()


@pytest.fixture(scope="module")
def proxy(backends: Backends, tmp_path_factory: pytest.TempPathFactory) -> Iterator[AppProxy]:
    p = launch_appproxy(
        tmp_path_factory.mktemp("appproxy"),
        secret=SECRET,
        manager_url=f"http://127.0.0.1:{backends.manager_port}",
        alive_interval=0.2,
        circuits=40,
    )
    try:
        yield p
    finally:
        p.shutdown()


# ------------------------------------------------------------------------------------------- helpers


def make_grant(backends: Backends, **kw: Any) -> AppGrant:
    doc: dict[str, Any] = {
        "user": str(uuid.uuid4()),
        "access_key": "AKIATESTTESTTESTTEST",
        "session_id": str(uuid.uuid4()),
        "kernel_id": str(uuid.uuid4()),
        "app": "jupyter",
        "protocol": "http",
        "host": "127.0.0.1",
        "port": backends.app_port,
        "container_port": 8888,
        "redirect": "/echo?from=setup",
    }
    doc.update(kw)
    return AppGrant(**doc)


def token(grant: AppGrant, secret: str = SECRET, **kw: Any) -> str:
    """A token for ``grant`` with a nonce of its own (each token is usable once)."""
    return issue(dataclasses.replace(grant, nonce=secrets.token_urlsafe(12)), secret, **kw)


def client() -> aiohttp.ClientSession:
    """A client that keeps no cookies by itself (each test says which ones it sends)."""
    return aiohttp.ClientSession(cookie_jar=aiohttp.DummyCookieJar())


def browser() -> aiohttp.ClientSession:
    """A client that keeps cookies as a browser does (per host, whatever the port)."""
    return aiohttp.ClientSession(cookie_jar=aiohttp.CookieJar(unsafe=True), headers={"Accept": "text/html"})


@dataclass
class Opened:
    origin: str  # http://127.0.0.1:PORT
    circuit: str
    cookie: str  # "bai_permit_<circuit>=<value>"
    setup_url: str
    location: str  # where the setup link sent the browser


async def open_app(proxy: AppProxy, grant: AppGrant) -> Opened:
    """What a CLI does: the JSON answer of /v2/proxy/auth, then the setup link, by hand."""
    async with client() as c:
        r = await c.get(
            proxy.url + "/v2/proxy/auth", params={"token": token(grant)}, headers={"Accept": "application/json"}
        )
        assert r.status == 200, await r.text()
        doc = await r.json()
        parts = urlsplit(doc["url"])
        assert parts.path == "/__bai/setup"
        s = await c.get(doc["url"], allow_redirects=False)
        assert s.status == 302, await s.text()
        morsel = s.cookies[f"bai_permit_{doc['circuit']}"]
        return Opened(
            f"{parts.scheme}://{parts.netloc}",
            doc["circuit"],
            f"{morsel.key}={morsel.value}",
            doc["url"],
            s.headers["Location"],
        )


def port_open(port: int) -> bool:
    with socket.socket() as s:
        s.settimeout(1)
        return s.connect_ex(("127.0.0.1", port)) == 0


async def wait_for(what: str, probe: Any, timeout: float = 10.0) -> None:
    deadline = time.monotonic() + timeout
    while not probe():
        if time.monotonic() > deadline:
            raise AssertionError(f"timed out waiting until {what}")
        await asyncio.sleep(0.05)


def rss_peak_kib(pid: int) -> int:
    for line in Path(f"/proc/{pid}/status").read_text().splitlines():
        if line.startswith("VmHWM:"):
            return int(line.split()[1])
    raise AssertionError("no VmHWM")


# --------------------------------------------------------------------------------------------- tests


async def test_browser_flow_sets_permit_and_reaches_the_app(proxy: AppProxy, backends: Backends) -> None:
    grant = make_grant(backends)
    async with browser() as b:
        r = await b.get(proxy.url + "/v2/proxy/auth", params={"token": token(grant)}, allow_redirects=False)
        assert r.status == 302 and r.headers["Cache-Control"] == "no-store"
        setup = r.headers["Location"]
        parts = urlsplit(setup)
        lo, hi = proxy.port_range
        assert parts.path == "/__bai/setup" and parts.hostname == "127.0.0.1" and lo <= (parts.port or 0) <= hi
        s = await b.get(setup, allow_redirects=False)
        assert s.status == 302 and s.headers["Location"] == "/echo?from=setup"
        cookie = s.headers["Set-Cookie"]
        name = cookie.split("=", 1)[0]
        assert name.startswith("bai_permit_") and len(name) > len("bai_permit_")
        flags = [f.strip().lower() for f in cookie.split(";")]
        assert {"httponly", "samesite=lax", "path=/", "max-age=43200"} <= set(flags), cookie
        b.cookie_jar.update_cookies({"theme": "dark"}, response_url=URL(f"{parts.scheme}://{parts.netloc}/"))
        app = await b.get(f"{parts.scheme}://{parts.netloc}/echo?from=setup")
        assert app.status == 200, await app.text()
        doc = await app.json()
        headers = {k.lower(): v for k, v in doc["headers"]}
        assert doc["path"] == "/echo?from=setup"
        # The app sees the browser's address (Jupyter's same-origin checks) and who asked, but no permit.
        assert headers["host"] == parts.netloc and headers["x-forwarded-host"] == parts.netloc
        assert headers["x-forwarded-proto"] == "http" and headers["x-forwarded-for"] == "127.0.0.1"
        assert "bai_permit_" not in headers.get("cookie", "") and "theme=dark" in headers.get("cookie", "")
        # One go, as a browser follows redirects: the app's page at the end.
        again = await b.get(proxy.url + "/v2/proxy/auth", params={"token": token(grant)})
        assert again.status == 200 and str(again.url).endswith("/echo?from=setup")
        assert again.url.port == parts.port  # the same circuit is reused


async def test_json_answer_reuse_and_separate_circuits(proxy: AppProxy, backends: Backends) -> None:
    grant = make_grant(backends)
    first, second = await open_app(proxy, grant), await open_app(proxy, grant)
    assert first.circuit == second.circuit and first.origin == second.origin
    other_port = await open_app(
        proxy, make_grant(backends, user=grant.user, session_id=grant.session_id, container_port=8889)
    )
    other_user = await open_app(proxy, make_grant(backends, session_id=grant.session_id))
    assert len({first.circuit, other_port.circuit, other_user.circuit}) == 3
    assert len({first.origin, other_port.origin, other_user.origin}) == 3
    st = proxy.status()
    assert st["api_version"] == "v2" and isinstance(st["circuits"], int) and st["circuits"] >= 3


async def test_permit_is_required_and_opens_one_circuit_only(proxy: AppProxy, backends: Backends) -> None:
    a = await open_app(proxy, make_grant(backends))
    b = await open_app(proxy, make_grant(backends))
    name_a, value_a = a.cookie.split("=", 1)
    name_b = f"bai_permit_{b.circuit}"
    async with client() as c:
        assert (await c.get(a.origin + "/echo", headers={"Cookie": a.cookie})).status == 200
        missing = await c.get(a.origin + "/echo")
        assert missing.status == 401 and missing.content_type == "application/problem+json"
        page = await c.get(a.origin + "/echo", headers={"Accept": "text/html,*/*"})
        assert page.status == 401 and page.content_type == "text/html" and "Open the app again" in await page.text()
        forged = await c.get(a.origin + "/echo", headers={"Cookie": f"{name_a}=AAAA{value_a[4:]}"})
        assert forged.status == 403
        # A's permit at B: under its own name it is no permit for B, under B's name a wrong one.
        assert (await c.get(b.origin + "/echo", headers={"Cookie": a.cookie})).status == 401
        assert (await c.get(b.origin + "/echo", headers={"Cookie": f"{name_b}={value_a}"})).status == 403
        # Setup links: spent once, and never at another circuit.
        assert (await c.get(a.setup_url, allow_redirects=False)).status == 403
        ticket = urlsplit(b.setup_url).query
        fresh = await open_app(proxy, make_grant(backends))
        moved = await c.get(f"{a.origin}/__bai/setup?{urlsplit(fresh.setup_url).query}", allow_redirects=False)
        assert moved.status == 403 and "set-cookie" not in moved.headers
        assert ticket and (await c.get(f"{a.origin}/__bai/setup?token=x.y", allow_redirects=False)).status == 403


async def test_refused_tokens(proxy: AppProxy, backends: Backends) -> None:
    grant = make_grant(backends)
    auth = proxy.url + "/v2/proxy/auth"
    async with client() as c:
        expired = await c.get(auth, params={"token": token(grant, ttl=-1)})
        assert expired.status == 401 and "expired" in (await expired.json())["detail"]
        once = token(grant)
        assert (await c.get(auth, params={"token": once}, allow_redirects=False)).status == 302
        reused = await c.get(auth, params={"token": once}, allow_redirects=False)
        assert reused.status == 401 and "already used" in (await reused.json())["detail"]
        forged = await c.get(auth, params={"token": token(grant, "another-secret-of-16+chars")})
        assert forged.status == 403 and (await forged.json())["type"].endswith("/app-token-refused")
        payload, sig = token(grant).split(".")
        tampered = await c.get(auth, params={"token": payload[:-2] + "AA." + sig})
        assert tampered.status == 403
        for junk in ("garbage", "a.b", "." * 3):
            assert (await c.get(auth, params={"token": junk})).status == 403
        assert (await c.get(auth)).status == 400
        tcp = await c.get(auth, params={"token": token(make_grant(backends, app="sshd", protocol="tcp"))})
        assert tcp.status == 400 and "backend.ai app" in (await tcp.json())["detail"]
        page = await c.get(auth, params={"token": "garbage"}, headers={"Accept": "text/html"})
        assert page.status == 403 and page.content_type == "text/html" and "<h1>" in await page.text()
        unknown = await c.get(proxy.url + "/v2/nothing")
        assert unknown.status == 404 and unknown.content_type == "application/problem+json"


async def test_http_semantics_pass_through(proxy: AppProxy, backends: Backends) -> None:
    a = await open_app(proxy, make_grant(backends))
    headers = {"Cookie": a.cookie}
    async with aiohttp.ClientSession(cookie_jar=aiohttp.DummyCookieJar(), auto_decompress=False) as c:
        r = await c.get(a.origin + "/gzip", headers=headers)
        raw = await r.read()
        assert r.headers["Content-Encoding"] == "gzip" and int(r.headers["Content-Length"]) == len(raw)
        assert gzip.decompress(raw) == b"compressed by the app " * 100  # as the app encoded it
        r = await c.get(a.origin + "/gzip", headers={**headers, "If-None-Match": '"v1"'})
        assert r.status == 304 and await r.read() == b""
        r = await c.head(a.origin + "/big?mb=3", headers=headers)
        assert r.status == 200 and r.content_length == 3 * MiB and await r.read() == b""
        r = await c.post(a.origin + "/redirect", headers=headers, allow_redirects=False)
        assert r.status == 303 and r.headers["Location"] == "/echo?after=redirect"
        r = await c.put(a.origin + "/echo/%2Fenc%20oded?q=a%26b", headers=headers, data=b"x" * 10)
        doc = await r.json()
        assert doc["method"] == "PUT" and doc["path"] == "/echo/%2Fenc%20oded?q=a%26b", doc


async def test_app_cannot_plant_a_permit(proxy: AppProxy, backends: Backends) -> None:
    a = await open_app(proxy, make_grant(backends))
    async with client() as c:
        r = await c.get(a.origin + "/set-cookie", headers={"Cookie": a.cookie})
        assert r.status == 200
        assert r.headers.getall("Set-Cookie") == ["app=1; Path=/"]
        # Requests that another page sends here (every circuit is the same site for a browser) are refused.
        foreign = await c.get(a.origin + "/echo", headers={"Cookie": a.cookie, "Origin": "http://127.0.0.1:1"})
        assert foreign.status == 403
        own = await c.post(a.origin + "/echo", headers={"Cookie": a.cookie, "Origin": a.origin})
        assert own.status == 200 and (await own.json())["method"] == "POST"


async def test_websocket_round_trip(proxy: AppProxy, backends: Backends) -> None:
    a = await open_app(proxy, make_grant(backends))
    ws_url = a.origin.replace("http://", "ws://") + "/ws?x=1"
    async with client() as c:
        async with c.ws_connect(ws_url, headers={"Cookie": a.cookie}, origin=a.origin, protocols=("app.v1",)) as ws:
            assert ws.protocol == "app.v1"
            await ws.send_str("héllo")
            assert (await ws.receive(5)).data == "echo:héllo"
            await ws.send_bytes(b"\x00\x01\x02\xff")
            got = await ws.receive(5)
            assert got.type is WSMsgType.BINARY and got.data == b"\xff\x02\x01\x00"
            big = bytes(range(256)) * 8192  # 2 MiB in one message
            await ws.send_bytes(big)
            assert (await ws.receive(5)).data == big[::-1]
            await ws.close(code=4002, message=b"bye from the browser")
        await wait_for("the app saw the close", lambda: 4002 in backends.ws_closes)
        seen = backends.ws_headers[-1]
        assert seen["Host"] == urlsplit(a.origin).netloc and seen["Origin"] == a.origin
        assert "bai_permit_" not in seen.get("Cookie", "")
        async with c.ws_connect(ws_url, headers={"Cookie": a.cookie}) as ws:
            await ws.send_str("close:4001")
            msg = await ws.receive(5)
            assert msg.type is WSMsgType.CLOSE and msg.data == 4001 and msg.extra == "bye from the app"
        with pytest.raises(aiohttp.WSServerHandshakeError) as no_permit:
            await c.ws_connect(ws_url)
        assert no_permit.value.status == 401
        with pytest.raises(aiohttp.WSServerHandshakeError) as foreign:
            await c.ws_connect(ws_url, headers={"Cookie": a.cookie}, origin="http://evil.example")
        assert foreign.value.status == 403


async def test_large_bodies_stream_in_bounded_memory(proxy: AppProxy, backends: Backends) -> None:
    a = await open_app(proxy, make_grant(backends))
    headers = {"Cookie": a.cookie}
    async with client() as c:
        # Warm up (first requests allocate the buffers that every later one reuses).
        warm = await c.get(a.origin + "/big?mb=4", headers=headers)
        assert len(await warm.read()) == 4 * MiB
        before = rss_peak_kib(proxy.proc.pid)
        r = await c.get(a.origin + "/big?mb=100", headers=headers)
        assert r.status == 200 and r.content_length == 100 * MiB
        n = 0
        async for chunk in r.content.iter_any():
            n += len(chunk)
        assert n == 100 * MiB

        async def body() -> Any:
            for _ in range(100):
                yield _CHUNK

        up = await c.post(a.origin + "/upload", data=body(), headers=headers)
        assert up.status == 200 and (await up.json())["bytes"] == 100 * MiB
        growth_mib = (rss_peak_kib(proxy.proc.pid) - before) / 1024
        assert growth_mib < 30, f"the proxy's peak memory grew by {growth_mib:.0f} MiB for 100 MiB each way"


async def test_app_down_is_a_502_page(proxy: AppProxy, backends: Backends) -> None:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        dead_port = s.getsockname()[1]  # closed again: nothing listens there
    a = await open_app(proxy, make_grant(backends, port=dead_port))
    async with client() as c:
        r = await c.get(a.origin + "/", headers={"Cookie": a.cookie, "Accept": "text/html"})
        assert r.status == 502 and "cannot be reached" in await r.text()
        r = await c.get(a.origin + "/", headers={"Cookie": a.cookie})
        assert r.status == 502 and (await r.json())["type"].endswith("/app-unreachable")


async def test_delete_session_closes_listener_and_connections(proxy: AppProxy, backends: Backends) -> None:
    grant = make_grant(backends)
    a = await open_app(proxy, grant)
    b = await open_app(proxy, make_grant(backends, session_id=grant.session_id, container_port=9999))
    keep = await open_app(proxy, make_grant(backends))
    port = urlsplit(a.origin).port or 0
    delete = f"{proxy.url}/v2/sessions/{grant.session_id}"
    backends.slow_ended.clear()
    async with client() as c:
        assert (await c.delete(delete)).status == 401
        assert (await c.delete(delete, headers={APPPROXY_SECRET_HEADER: "wrong-secret-value"})).status == 403
        ws = await c.ws_connect(a.origin.replace("http", "ws") + "/ws", headers={"Cookie": a.cookie})
        slow = await c.get(a.origin + "/slow", headers={"Cookie": a.cookie})
        assert (await slow.content.readline()) == b"tick\n"
        r = await c.delete(delete, headers={APPPROXY_SECRET_HEADER: SECRET})
        assert r.status == 200 and await r.json() == {"closed": 2}
        msg = await ws.receive(5)
        assert msg.type is WSMsgType.CLOSE and msg.data == 1001
        with pytest.raises(aiohttp.ClientPayloadError):
            await asyncio.wait_for(slow.read(), 5)
        await wait_for("the app's stream ended", backends.slow_ended.is_set)
        assert not port_open(port) and not port_open(urlsplit(b.origin).port or 0)
        assert (await c.get(keep.origin + "/echo", headers={"Cookie": keep.cookie})).status == 200
        assert await (await c.delete(delete, headers={APPPROXY_SECRET_HEADER: SECRET})).json() == {"closed": 0}
        # The session's apps can be opened again (a new circuit, the lowest free port: the one just freed).
        again = await open_app(proxy, grant)
        assert again.circuit != a.circuit and urlsplit(again.origin).port in (port, urlsplit(b.origin).port)
        assert (await c.get(again.origin + "/echo", headers={"Cookie": a.cookie})).status == 401


async def test_alive_loop_closes_circuits_of_ended_sessions(proxy: AppProxy, backends: Backends) -> None:
    live, dead = make_grant(backends), make_grant(backends)
    a, d = await open_app(proxy, live), await open_app(proxy, dead)
    backends.manager_mode = "error"
    backends.dead.add(dead.session_id)
    try:
        n = len(backends.alive_calls)
        await wait_for("three more alive calls", lambda: len(backends.alive_calls) >= n + 3)
        assert port_open(urlsplit(d.origin).port or 0), "a failing manager must not close circuits"
        backends.manager_mode = "garbage"
        n = len(backends.alive_calls)
        await wait_for("two more alive calls", lambda: len(backends.alive_calls) >= n + 2)
        assert port_open(urlsplit(d.origin).port or 0)
        backends.manager_mode = "ok"
        await wait_for("the dead session's circuit closed", lambda: not port_open(urlsplit(d.origin).port or 0))
    finally:
        backends.manager_mode = "ok"
    header, body = backends.alive_calls[-1]
    assert header == SECRET and live.session_id in body["session_ids"]
    assert body["session_ids"] == sorted(set(body["session_ids"]))
    async with client() as c:
        assert (await c.get(a.origin + "/echo", headers={"Cookie": a.cookie})).status == 200
        # That request is reported once as activity of its session (for the manager's idle timeout), then not.
        n = len(backends.alive_calls)
        await wait_for("alive calls after the request", lambda: len(backends.alive_calls) >= n + 2)
        reported = [body.get("active", []) for _, body in backends.alive_calls[n:]]
        await wait_for("two more alive calls", lambda: len(backends.alive_calls) >= n + 4)
        later = backends.alive_calls[-1][1].get("active")
    assert any(live.session_id in r for r in reported), reported
    assert later == [], later
    assert proxy.proc.poll() is None


async def test_idle_circuits_close_and_a_missing_manager_closes_nothing(backends: Backends, tmp_path: Path) -> None:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        nowhere = s.getsockname()[1]
    p = launch_appproxy(
        tmp_path, secret=SECRET, manager_url=f"http://127.0.0.1:{nowhere}", alive_interval=0.2, idle_timeout=1.5
    )
    try:
        a = await open_app(p, make_grant(backends))
        port = urlsplit(a.origin).port or 0
        async with client() as c:
            ws = await c.ws_connect(a.origin.replace("http", "ws") + "/ws", headers={"Cookie": a.cookie})
            await asyncio.sleep(2.5)  # past the idle timeout, with the manager unreachable all along
            assert port_open(port) and p.status()["circuits"] == 1
            await ws.send_str("still here")
            assert (await ws.receive(5)).data == "echo:still here"
            await ws.close()
            await wait_for("the idle circuit closed", lambda: p.status()["circuits"] == 0, timeout=6)
            assert not port_open(port)
        log = p.log.read_text()
        assert log.count("cannot ask the manager") == 1, log[-2000:]
        assert "no connection for" in log and p.proc.poll() is None
    finally:
        p.shutdown()
