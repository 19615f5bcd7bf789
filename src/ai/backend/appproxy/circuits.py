"""Circuits: one listening port per user x session x app x container port, forwarding to the app's
published port for the browser that holds the circuit's permit.

A circuit is made by the first ``/v2/proxy/auth`` for its key and reused by later ones; it takes the lowest
free port of ``port-range`` (a port some other process holds is skipped). On its port it serves
``/__bai/setup?token=...`` (sets the permit, see :mod:`.permits`) and forwards every other request to the
app (:mod:`.forward`) once the permit is checked. Closing a circuit stops its listener and ends every open
connection on it, HTTP and WebSocket alike.
"""

from __future__ import annotations

import asyncio
import contextlib
import hmac
import logging
import secrets
import time
from collections.abc import Callable
from urllib.parse import urlsplit

import aiohttp
from aiohttp import web

from ai.backend.common.app_tokens import AppGrant
from ai.backend.common.problems import ProblemError

from .config import AppProxySection
from .errors import NoFreePort, PermitMissing, PermitRefused, refusal
from .forward import Target, WebSocketPair, forward_http, forward_websocket
from .metrics import AppProxyMetrics
from .permits import PERMIT_MAX_AGE, BadTicket, NonceBook, permit_name, permit_value, safe_redirect, verify_ticket

__all__ = ["SETUP_PATH", "Circuit", "CircuitKey", "CircuitTable"]

log = logging.getLogger("ai.backend.appproxy.circuits")

SETUP_PATH = "/__bai/setup"
#: (user, session id, app, container port): what one circuit serves.
CircuitKey = tuple[str, str, str, int]
_DEFAULT_PORTS = {"http": 80, "https": 443}


def _netloc(origin: str) -> str:
    """``host:port`` of an Origin header value (the scheme's default port written out); "" when opaque."""
    parts = urlsplit(origin)
    if not parts.hostname:
        return ""
    try:
        port = parts.port or _DEFAULT_PORTS.get(parts.scheme, 0)
    except ValueError:
        return ""
    host = f"[{parts.hostname}]" if ":" in parts.hostname else parts.hostname
    return f"{host}:{port}".lower()


def _host_netloc(host: str) -> str:
    return host.lower() if host.rpartition(":")[2].isdigit() and not host.endswith("]") else f"{host.lower()}:80"


class Circuit:
    """One circuit: its key, the app it forwards to, its listener and the connections open on it."""

    def __init__(self, table: CircuitTable, grant: AppGrant, port: int) -> None:
        self.table = table
        self.id = secrets.token_hex(8)
        self.user = grant.user
        self.access_key = grant.access_key
        self.session_id = grant.session_id
        self.app = grant.app
        self.container_port = grant.container_port
        self.target = Target(grant.host, grant.port)
        self.port = port
        self.created = time.time()
        self.closed = False
        self._active = 0
        self._idle_since = time.monotonic()
        self.used = False  # a request went through since the manager was last told (idle-timeout activity)
        self._requests: set[asyncio.Task[object]] = set()
        self._websockets: set[WebSocketPair] = set()
        self._client: aiohttp.ClientSession | None = None
        self._runner: web.AppRunner | None = None

    @property
    def key(self) -> CircuitKey:
        return (self.user, self.session_id, self.app, self.container_port)

    @property
    def origin(self) -> str:
        """The circuit's origin as browsers reach it (``http://advertised-host:port``)."""
        conf = self.table.conf
        host = conf.advertised_host
        host = f"[{host}]" if ":" in host else host
        return f"{conf.public_scheme}://{host}:{self.port}"

    def idle_for(self, now: float) -> float:
        """Seconds since the circuit's last connection ended (0 while one is open)."""
        return 0.0 if self._active else now - self._idle_since

    def __repr__(self) -> str:
        return f"<Circuit {self.id} :{self.port} {self.app}@{self.session_id} -> {self.target.host}:{self.target.port}>"

    # ----------------------------------------------------------------------------- listener lifetime

    async def start(self) -> None:
        """Listen on the circuit's port; OSError when the port is taken."""
        app = web.Application()
        app.router.add_route("*", "/{tail:.*}", self._handle)
        # A short grace: whatever is still open when the circuit closes was ended by close() already.
        runner = web.AppRunner(app, access_log=None, shutdown_timeout=1.0, handle_signals=False)
        await runner.setup()
        try:
            await web.TCPSite(runner, self.table.conf.bind_host, self.port).start()
        except BaseException:
            await runner.cleanup()
            raise
        self._runner = runner
        self._client = aiohttp.ClientSession(
            connector=aiohttp.TCPConnector(limit=0, keepalive_timeout=30),
            auto_decompress=False,  # bodies go through as the app encoded them
            cookie_jar=aiohttp.DummyCookieJar(),
            timeout=aiohttp.ClientTimeout(total=None, sock_connect=10),
            skip_auto_headers=("User-Agent", "Content-Type", "Accept", "Accept-Encoding"),
        )

    async def close(self) -> None:
        """Stop listening and end every connection: WebSockets with 1001 (going away), requests cut."""
        if self.closed:
            return
        self.closed = True
        for pair in list(self._websockets):
            await pair.close(1001, "The app proxy closed this app's circuit; open the app again.")
        for task in list(self._requests):
            task.cancel()
        if self._runner is not None:
            await self._runner.cleanup()
        if self._client is not None:
            await self._client.close()

    # --------------------------------------------------------------------------------- requests

    def _track_websocket(self, pair: WebSocketPair) -> Callable[[], None]:
        self._websockets.add(pair)
        return lambda: self._websockets.discard(pair)

    async def _handle(self, request: web.Request) -> web.StreamResponse:
        if self.closed:
            raise web.HTTPServiceUnavailable()
        if request.path == SETUP_PATH:
            return self._setup(request)
        refused = self._check_permit(request) or self._check_origin(request)
        if refused is not None:
            return refusal(request, refused)
        assert self._client is not None
        self.used = True
        self._active += 1
        task = asyncio.current_task()
        try:
            metrics = self.table.metrics
            if request.headers.get("Upgrade", "").lower() == "websocket" and request.method == "GET":
                return await forward_websocket(
                    request, self._client, self.target, self._track_websocket, metrics=metrics
                )
            if task is not None:
                self._requests.add(task)
            return await forward_http(request, self._client, self.target, metrics=metrics)
        except ProblemError as e:
            return refusal(request, e, open_again=False)
        finally:
            if task is not None:
                self._requests.discard(task)
            self._active -= 1
            if not self._active:
                self._idle_since = time.monotonic()

    def _setup(self, request: web.Request) -> web.StreamResponse:
        """``/__bai/setup?token=TICKET``: set the permit cookie and go on to the app's start page."""
        conf = self.table.conf
        try:
            ticket = verify_ticket(conf.secret, request.query.get("token", ""))
        except BadTicket as e:
            return refusal(request, PermitRefused(str(e)))
        if ticket.circuit != self.id or ticket.user != self.user:
            return refusal(request, PermitRefused("This setup link belongs to another app."))
        if not self.table.nonces.spend(ticket.nonce, ticket.expires):
            return refusal(request, PermitRefused("This setup link was already used."))
        resp = web.Response(
            status=302,
            headers={
                "Location": safe_redirect(ticket.redirect),
                "Cache-Control": "no-store",
                "Referrer-Policy": "no-referrer",
            },
        )
        resp.set_cookie(
            permit_name(self.id),
            permit_value(conf.secret, self.id, self.user),
            max_age=PERMIT_MAX_AGE,
            path="/",
            httponly=True,
            samesite="Lax",
        )
        return resp

    def _check_permit(self, request: web.Request) -> ProblemError | None:
        given = request.cookies.get(permit_name(self.id))
        if given is None:
            return PermitMissing("This browser holds no permit for this app, or the permit has expired.")
        if not hmac.compare_digest(given.encode(), permit_value(self.table.conf.secret, self.id, self.user).encode()):
            return PermitRefused("The permit this browser holds for this app is not valid.")
        return None

    def _check_origin(self, request: web.Request) -> ProblemError | None:
        # Every circuit is "same site" for the browser (sites ignore ports), so the permit alone would go
        # along with requests that another app's pages make here; their Origin tells them apart.
        origin = request.headers.get("Origin")
        if origin is None:
            return None
        if _netloc(origin) != _host_netloc(request.headers.get("Host", "")):
            return PermitRefused(f"Requests from another origin ({origin}) are refused by this app's circuit.")
        return None


class CircuitTable:
    """The open circuits, by id and by key, and the ports they hold."""

    def __init__(self, conf: AppProxySection, nonces: NonceBook) -> None:
        self.conf = conf
        self.nonces = nonces
        self._by_id: dict[str, Circuit] = {}
        self._by_key: dict[CircuitKey, Circuit] = {}
        self._lock = asyncio.Lock()
        self.metrics: AppProxyMetrics | None = None

    def watch(self, metrics: AppProxyMetrics) -> None:
        """Report the open circuits and the bytes they relay to ``metrics``."""
        self.metrics = metrics
        metrics.watch(lambda: len(self))

    def __len__(self) -> int:
        return len(self._by_id)

    def get(self, circuit_id: str) -> Circuit | None:
        return self._by_id.get(circuit_id)

    def sessions(self) -> set[str]:
        """The sessions that have a circuit open."""
        return {c.session_id for c in self._by_id.values()}

    def take_active(self) -> set[str]:
        """The sessions whose apps were used since the previous call (a request went through, or a
        connection is still open), for the manager's idle timeout; resets the marks."""
        active = set()
        for c in self._by_id.values():
            if c.used or c.idle_for(time.monotonic()) == 0.0:
                active.add(c.session_id)
            c.used = False
        return active

    async def open(self, grant: AppGrant) -> tuple[Circuit, bool]:
        """The circuit for ``grant`` (made on the lowest free port, or reused) and whether it was reused."""
        key: CircuitKey = (grant.user, grant.session_id, grant.app, grant.container_port)
        async with self._lock:
            found = self._by_key.get(key)
            if found is not None:
                # The manager's latest word on where the app is published wins.
                found.target = Target(grant.host, grant.port)
                return found, True
            used = {c.port for c in self._by_id.values()}
            lo, hi = self.conf.port_range
            for port in range(lo, hi + 1):
                if port in used:
                    continue
                circuit = Circuit(self, grant, port)
                try:
                    await circuit.start()
                except OSError as e:
                    log.debug("port %d is not free (%s)", port, e)
                    continue
                self._by_id[circuit.id] = circuit
                self._by_key[key] = circuit
                log.info("opened %r for user %s", circuit, circuit.user)
                return circuit, False
        raise NoFreePort(f"All ports {lo}-{hi} are in use; close some apps and try again.")

    async def close(self, circuit: Circuit, why: str) -> None:
        """Forget ``circuit`` and close it (its port is free again)."""
        if self._by_id.pop(circuit.id, None) is None:
            return
        if self._by_key.get(circuit.key) is circuit:
            del self._by_key[circuit.key]
        log.info("closing %r: %s", circuit, why)
        try:
            await circuit.close()
        except Exception:  # noqa: BLE001 - a broken connection must not keep the others open
            log.exception("error while closing %r", circuit)

    async def close_session(self, session_id: str, why: str) -> int:
        """Close every circuit of ``session_id``; how many there were."""
        doomed = [c for c in self._by_id.values() if c.session_id == session_id]
        for c in doomed:
            await self.close(c, why)
        return len(doomed)

    async def close_idle(self, idle_timeout: float, now: float | None = None) -> int:
        """Close the circuits with no connection for ``idle_timeout`` seconds; how many."""
        now = time.monotonic() if now is None else now
        doomed = [c for c in self._by_id.values() if c.idle_for(now) >= idle_timeout]
        for c in doomed:
            await self.close(c, f"no connection for {int(c.idle_for(now))} s")
        return len(doomed)

    async def close_all(self) -> None:
        for c in list(self._by_id.values()):
            with contextlib.suppress(Exception):
                await self.close(c, "the app proxy is stopping")
