"""Prometheus metrics shared by every server: a registry per component, the request metrics, ``GET /metrics``
and who may read it.

* :class:`ComponentMetrics` owns one :class:`~prometheus_client.CollectorRegistry` (never the process-wide
  default one: tests and the agent fleet run several components in one process, each with its own series)
  and the request metrics every server has: ``backendai_http_requests_total{method,route,status}`` and
  ``backendai_http_request_duration_seconds{method,route}``. ``route`` is the route *template*
  (``/session/{ref}``), never the raw path, so ids in paths cannot multiply the series; requests no route
  matched share ``<unmatched>``. The components subclass it for their own metrics (``<component>/metrics.py``).
* :class:`MetricsMiddleware` (ASGI, for the FastAPI servers) and :func:`aiohttp_metrics_middleware` count
  every request and answer ``GET /metrics`` themselves, before any route or other middleware: the agent's and
  the storage proxy's secret checks would refuse a scraper that reaches them from an allowed address.
* :class:`MetricsAccess`: a scrape is answered when it carries the component's internal secret in
  ``X-BackendAI-Cluster-Secret`` *or* comes from an address of ``[metrics] allow-from`` (loopback by default);
  anything else gets a 403 problem document. The address is the TCP peer's: ``X-Forwarded-For`` is not read,
  so a reverse proxy in front makes every request come from the proxy (use the secret there).
"""

from __future__ import annotations

import asyncio
import hmac
import ipaddress
import json
import logging
import time
from collections.abc import Awaitable, Callable, Iterable
from typing import TYPE_CHECKING, Any

from prometheus_client import CollectorRegistry, Counter, Histogram, PlatformCollector, ProcessCollector
from prometheus_client.exposition import generate_latest
from pydantic import BaseModel, ConfigDict, Field, field_validator

if TYPE_CHECKING:  # the configurations import this module: aiohttp is imported where its middleware is made
    from aiohttp import web
    from starlette.types import ASGIApp, Message, Receive, Scope, Send

from .auth import CLUSTER_SECRET_HEADER
from .problems import Forbidden

__all__ = [
    "CONTENT_TYPE",
    "DEFAULT_ALLOW_FROM",
    "METRICS_PATH",
    "ComponentMetrics",
    "MetricsAccess",
    "MetricsMiddleware",
    "MetricsSection",
    "UNMATCHED_ROUTE",
    "aiohttp_metrics_middleware",
]

log = logging.getLogger(__name__)

METRICS_PATH = "/metrics"
#: The text format every Prometheus version reads (our names need none of the 1.0.0 format's escaping).
CONTENT_TYPE = "text/plain; version=0.0.4; charset=utf-8"
DEFAULT_ALLOW_FROM = ("127.0.0.0/8", "::1/128")
UNMATCHED_ROUTE = "<unmatched>"
#: Request latencies: from a cached execute (about a millisecond) to a long upload.
REQUEST_BUCKETS = (0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0, 30.0, 60.0)
_KNOWN_METHODS = frozenset({"GET", "HEAD", "POST", "PUT", "PATCH", "DELETE", "OPTIONS"})
_SECRET_HEADER = CLUSTER_SECRET_HEADER.lower().encode()


class MetricsSection(BaseModel):
    """``[metrics]`` of a component's configuration file."""

    model_config = ConfigDict(extra="forbid", populate_by_name=True)

    # Addresses or networks whose scrapes need no secret; [] means every scrape must carry the secret.
    allow_from: list[str] = Field(default_factory=lambda: list(DEFAULT_ALLOW_FROM), alias="allow-from")
    # The secret a scrape may carry in X-BackendAI-Cluster-Secret; "" means the component's own internal
    # secret (see docs/operator-guide.md, "Metrics"), and nothing for the webserver, which has none.
    secret: str = ""

    @field_validator("allow_from")
    @classmethod
    def _networks(cls, v: list[str]) -> list[str]:
        for entry in v:
            try:
                ipaddress.ip_network(entry, strict=False)
            except ValueError:
                raise ValueError(f"{entry!r} is not an IP address or network") from None
        return v

    def access(self, internal_secret: str = "") -> MetricsAccess:
        """Who may scrape: this section's secret (else ``internal_secret``) or an allowed address."""
        return MetricsAccess(self.allow_from, self.secret or internal_secret)


class MetricsAccess:
    """The scrape check: the right secret, or a peer address inside one of the allowed networks."""

    def __init__(self, allow_from: Iterable[str], secret: str = "") -> None:
        self.networks = [ipaddress.ip_network(a, strict=False) for a in allow_from]
        self.secret = secret.encode()

    def allows(self, peer: str | None, given_secret: bytes | None) -> bool:
        if self.secret and given_secret is not None and hmac.compare_digest(given_secret, self.secret):
            return True
        if not peer or not self.networks:
            return False
        try:
            addr = ipaddress.ip_address(peer.split("%", 1)[0])
        except ValueError:
            return False  # a Unix socket peer or a name: never on the allow-list
        if isinstance(addr, ipaddress.IPv6Address) and addr.ipv4_mapped is not None:
            addr = addr.ipv4_mapped
        return any(addr in net for net in self.networks)

    def refusal(self) -> Forbidden:
        how = f"the {CLUSTER_SECRET_HEADER} header" if self.secret else "no secret (none is configured)"
        return Forbidden(
            f"Metrics are served to the addresses of [metrics] allow-from, or with {how}; this request has neither."
        )


class ComponentMetrics:
    """One component's registry, its request metrics and what must be refreshed before each scrape."""

    def __init__(self, *, process: bool = True) -> None:
        self.registry = CollectorRegistry()
        if process:  # process_cpu_seconds_total, process_resident_memory_bytes, open fds; python_info
            ProcessCollector(registry=self.registry)
            PlatformCollector(registry=self.registry)
        self.requests = Counter(
            "backendai_http_requests_total",
            "HTTP requests answered, by method, route template and status code.",
            ("method", "route", "status"),
            registry=self.registry,
        )
        self.request_seconds = Histogram(
            "backendai_http_request_duration_seconds",
            "Time from a request's arrival until its answer was sent (streams: until they ended).",
            ("method", "route"),
            buckets=REQUEST_BUCKETS,
            registry=self.registry,
        )
        # The labelled children by (method, route, status): .labels() takes a lock and builds a tuple per call.
        self._children: dict[tuple[str, str, int], tuple[Any, Any]] = {}
        self._refreshers: list[Callable[[], Awaitable[None]]] = []

    def observe_request(self, method: str, route: str, status: int, seconds: float) -> None:
        """Count one answered request (``route``: its template, or :data:`UNMATCHED_ROUTE`)."""
        if method not in _KNOWN_METHODS:
            method = "OTHER"  # a client cannot make up label values
        key = (method, route, status)
        children = self._children.get(key)
        if children is None:
            children = (self.requests.labels(method, route, str(status)), self.request_seconds.labels(method, route))
            self._children[key] = children
        children[0].inc()
        children[1].observe(seconds)

    def before_scrape(self, refresh: Callable[[], Awaitable[None]]) -> None:
        """Have ``refresh`` run (awaited) before every scrape, e.g. to read gauges from a database."""
        self._refreshers.append(refresh)

    async def render(self) -> bytes:
        """The registry in the Prometheus text format, after the refreshers ran (a failing one is logged and
        leaves its metrics as they were)."""
        for refresh in self._refreshers:
            try:
                await refresh()
            except Exception:  # noqa: BLE001 - a scrape must still answer the other metrics
                log.exception("refreshing metrics before a scrape failed")
        return generate_latest(self.registry)


class CachedRefresh:
    """An async refresh run at most once per ``ttl`` seconds; concurrent scrapes share the run under way."""

    def __init__(self, refresh: Callable[[], Awaitable[None]], ttl: float = 1.0) -> None:
        self._refresh = refresh
        self.ttl = ttl
        self._at = -float("inf")
        self._lock = asyncio.Lock()

    async def __call__(self) -> None:
        if time.monotonic() - self._at < self.ttl:
            return
        async with self._lock:
            if time.monotonic() - self._at < self.ttl:
                return  # another scrape refreshed while this one waited
            await self._refresh()
            self._at = time.monotonic()


# ------------------------------------------------------------------------------------------------ ASGI


class MetricsMiddleware:
    """ASGI: answers ``GET /metrics`` (see :class:`MetricsAccess`) and times every other HTTP request.

    A plain ASGI wrapper, as the other middlewares of the hot path. ``metrics`` is called per request, so a
    component whose metrics are built at start-up (the manager's, with its database) can pass a getter; None
    means "not started yet" and the request passes uncounted. The route template is read from the scope after
    the app ran (Starlette's router records the matched route there), so this middleware must sit where the
    router's scope is the one it passed on (no middleware between them copying the scope).
    """

    def __init__(self, app: ASGIApp, *, metrics: Callable[[], ComponentMetrics | None], access: MetricsAccess) -> None:
        self.app = app
        self.metrics = metrics
        self.access = access

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return
        metrics = self.metrics()
        if metrics is None:
            await self.app(scope, receive, send)
            return
        if scope["path"] == METRICS_PATH and scope["method"] in ("GET", "HEAD"):
            await self._scrape(metrics, scope, send)
            return
        status = 500  # what the server answers when the app raises before starting a response

        async def send_status(message: Message) -> None:
            nonlocal status
            if message["type"] == "http.response.start":
                status = message["status"]
            await send(message)

        started = time.perf_counter()
        try:
            await self.app(scope, receive, send_status)
        finally:
            metrics.observe_request(
                scope["method"], _route_template(scope, status), status, time.perf_counter() - started
            )

    async def _scrape(self, metrics: ComponentMetrics, scope: Scope, send: Send) -> None:
        peer = (scope.get("client") or (None, 0))[0]
        given = next((v for k, v in scope.get("headers", []) if k == _SECRET_HEADER), None)
        if not self.access.allows(peer, given):
            body, status, ctype = _refusal_body(self.access), 403, b"application/problem+json"
        else:
            body, status, ctype = await metrics.render(), 200, CONTENT_TYPE.encode()
        headers = [(b"content-type", ctype), (b"content-length", str(len(body)).encode())]
        await send({"type": "http.response.start", "status": status, "headers": headers})
        await send({"type": "http.response.body", "body": b"" if scope["method"] == "HEAD" else body})


def _route_template(scope: Scope, status: int) -> str:
    """The template of the route that answered; for a request refused before routing (a rate limit, a secret
    check), the route it would have reached. A 404/405 without a route is looked up no further: no route
    matches it, and a flood of them must not cost a second scan of the routes each."""
    route = scope.get("route")
    if route is None and status not in (404, 405):
        try:
            route = _match(getattr(getattr(scope.get("app"), "router", None), "routes", ()), scope)
        except Exception:  # noqa: BLE001 - a label is not worth failing a request over
            route = None
    path = getattr(route, "path", None)
    return path if isinstance(path, str) and path else UNMATCHED_ROUTE


def _match(routes: Iterable[Any], scope: Scope) -> Any:
    """The route of ``routes`` that fully matches ``scope``, descending into included routers: newer FastAPI
    versions keep an included router as one route holding the ``original_router`` (whose routes carry their
    router's prefix; a prefix given to ``include_router`` itself is not applied here, none of ours has one)."""
    from starlette.routing import Match

    for candidate in routes:
        nested = getattr(candidate, "original_router", None)
        if nested is not None:
            found = _match(nested.routes, scope)
            if found is not None:
                return found
        elif candidate.matches(scope)[0] is Match.FULL:
            return candidate
    return None


def _refusal_body(access: MetricsAccess) -> bytes:
    return json.dumps(access.refusal().body()).encode()


# --------------------------------------------------------------------------------------------- aiohttp


def aiohttp_metrics_middleware(metrics: ComponentMetrics, access: MetricsAccess | None) -> Any:
    """The aiohttp twin of :class:`MetricsMiddleware`; put it first in ``app.middlewares`` (outermost), e.g.
    ``app.middlewares.insert(0, aiohttp_metrics_middleware(...))``. The route template is the matched
    resource's ``canonical`` form (``/func/{tail}``). ``access`` None: this server only counts its requests
    and leaves ``/metrics`` to its routes (the storage proxy's public port; its manager port serves them)."""
    from aiohttp import web

    @web.middleware
    async def metrics_middleware(request: web.Request, handler: Any) -> web.StreamResponse:
        if access is not None and request.path == METRICS_PATH and request.method in ("GET", "HEAD"):
            return await _aiohttp_scrape(request, metrics, access)
        status = 500
        started = time.perf_counter()
        try:
            resp: web.StreamResponse = await handler(request)
            status = resp.status
            return resp
        except web.HTTPException as e:  # aiohttp's answers raised as exceptions (redirects, 404s)
            status = e.status
            raise
        except asyncio.CancelledError:
            status = 499  # the client went away first (nginx's convention)
            raise
        finally:
            resource = request.match_info.route.resource
            route = resource.canonical if resource is not None else UNMATCHED_ROUTE
            metrics.observe_request(request.method, route, status, time.perf_counter() - started)

    return metrics_middleware


async def _aiohttp_scrape(request: web.Request, metrics: ComponentMetrics, access: MetricsAccess) -> web.Response:
    from aiohttp import web

    given = request.headers.get(CLUSTER_SECRET_HEADER)
    if not access.allows(request.remote, given.encode() if given is not None else None):
        return web.Response(status=403, body=_refusal_body(access), content_type="application/problem+json")
    resp = web.Response(body=await metrics.render())
    resp.headers["Content-Type"] = CONTENT_TYPE
    return resp
