"""ai.backend.common.metrics: the scrape check, the request metrics by route template (ASGI and aiohttp), the
per-component registries, the refresh before a scrape; and the agent's phase histogram."""

from __future__ import annotations

import asyncio
from typing import Any

import httpx
import pytest
from aiohttp import web
from aiohttp.test_utils import TestClient, TestServer
from fastapi import FastAPI
from prometheus_client.parser import text_string_to_metric_families
from pydantic import ValidationError

from ai.backend.agent.metrics import AgentMetrics
from ai.backend.common.auth import CLUSTER_SECRET_HEADER
from ai.backend.common.metrics import (
    UNMATCHED_ROUTE,
    CachedRefresh,
    ComponentMetrics,
    MetricsAccess,
    MetricsMiddleware,
    MetricsSection,
    aiohttp_metrics_middleware,
)
from ai.backend.common.problems import Forbidden
from ai.backend.common.web import SharedSecretMiddleware

SECRET = "a-metrics-test-secret"


def samples(text: str, name: str) -> dict[tuple[tuple[str, str], ...], float]:
    """The samples called ``name`` in a scrape, by their sorted labels."""
    out: dict[tuple[tuple[str, str], ...], float] = {}
    for family in text_string_to_metric_families(text):
        for s in family.samples:
            if s.name == name:
                out[tuple(sorted(s.labels.items()))] = s.value
    return out


def value(metrics: ComponentMetrics, name: str, **labels: str) -> float:
    v = metrics.registry.get_sample_value(name, labels)
    return 0.0 if v is None else v


# ------------------------------------------------------------------------------------------- access


def test_section_defaults_to_loopback_and_rejects_bad_networks() -> None:
    section = MetricsSection()
    assert section.allow_from == ["127.0.0.0/8", "::1/128"]
    assert MetricsSection.model_validate({"allow-from": ["10.0.0.0/8", "192.168.1.7"]}).allow_from
    with pytest.raises(ValidationError, match="not an IP address or network"):
        MetricsSection.model_validate({"allow-from": ["localhost"]})
    with pytest.raises(ValidationError):
        MetricsSection.model_validate({"allow-form": []})  # a misspelt key is an error, not ignored


def test_access_by_address_or_secret() -> None:
    access = MetricsSection().access(SECRET)
    assert access.allows("127.0.0.1", None)
    assert access.allows("127.8.9.10", None)
    assert access.allows("::1", None)
    assert access.allows("::ffff:127.0.0.1", None)  # an IPv4 client on a dual-stack socket
    assert not access.allows("10.1.2.3", None)
    assert not access.allows("10.1.2.3", b"wrong")
    assert access.allows("10.1.2.3", SECRET.encode())
    assert not access.allows(None, None)  # a Unix socket peer
    assert not access.allows("testclient", None)


def test_section_secret_overrides_the_internal_one() -> None:
    access = MetricsSection(secret="own-secret").access(SECRET)
    assert access.allows("10.1.2.3", b"own-secret")
    assert not access.allows("10.1.2.3", SECRET.encode())


def test_empty_allow_list_needs_the_secret_even_from_loopback() -> None:
    access = MetricsSection.model_validate({"allow-from": []}).access(SECRET)
    assert not access.allows("127.0.0.1", None)
    assert access.allows("127.0.0.1", SECRET.encode())
    # No secret at all (the webserver without [metrics] secret): an empty header is no secret.
    nobody = MetricsAccess([], "")
    assert not nobody.allows("127.0.0.1", b"")
    assert "none is configured" in (nobody.refusal().detail or "")


# --------------------------------------------------------------------------------------- registries


def test_components_have_separate_registries() -> None:
    a, b = ComponentMetrics(), ComponentMetrics()  # the same names twice: would fail in the default registry
    a.observe_request("GET", "/x", 200, 0.01)
    assert value(a, "backendai_http_requests_total", method="GET", route="/x", status="200") == 1
    assert value(b, "backendai_http_requests_total", method="GET", route="/x", status="200") == 0
    assert a.registry.get_sample_value("process_resident_memory_bytes") is not None


def test_made_up_methods_share_one_label() -> None:
    m = ComponentMetrics(process=False)
    for method in ("FOO", "BAR", "GET"):
        m.observe_request(method, "/x", 404, 0.001)
    assert value(m, "backendai_http_requests_total", method="OTHER", route="/x", status="404") == 2
    assert value(m, "backendai_http_request_duration_seconds_count", method="GET", route="/x") == 1


async def test_render_runs_refreshers_and_survives_a_failing_one() -> None:
    m = ComponentMetrics(process=False)
    calls: list[str] = []

    async def broken() -> None:
        calls.append("broken")
        raise RuntimeError("database down")

    async def fine() -> None:
        calls.append("fine")

    m.before_scrape(broken)
    m.before_scrape(fine)
    text = (await m.render()).decode()
    assert calls == ["broken", "fine"]
    assert "backendai_http_requests_total" in text


async def test_cached_refresh_runs_once_per_ttl_and_shares_a_running_one() -> None:
    runs = 0

    async def refresh() -> None:
        nonlocal runs
        runs += 1
        await asyncio.sleep(0.05)

    cached = CachedRefresh(refresh, ttl=0.2)
    await asyncio.gather(*(cached() for _ in range(5)))
    assert runs == 1
    await cached()
    assert runs == 1
    await asyncio.sleep(0.25)
    await cached()
    assert runs == 2


# --------------------------------------------------------------------------------------------- ASGI


def _fastapi_app(metrics: ComponentMetrics, access: MetricsAccess) -> FastAPI:
    app = FastAPI()

    @app.get("/items/{item_id}")
    async def item(item_id: str) -> dict[str, str]:
        return {"id": item_id}

    @app.post("/boom")
    async def boom() -> None:
        raise RuntimeError("unhandled")

    app.add_middleware(MetricsMiddleware, metrics=lambda: metrics, access=access)
    return app


def _client(app: Any, peer: str = "127.0.0.1") -> httpx.AsyncClient:
    transport = httpx.ASGITransport(app=app, client=(peer, 40000), raise_app_exceptions=False)
    return httpx.AsyncClient(transport=transport, base_url="http://test")


async def test_asgi_counts_by_route_template_and_status() -> None:
    m = ComponentMetrics(process=False)
    async with _client(_fastapi_app(m, MetricsAccess([], SECRET))) as c:
        for i in range(7):
            assert (await c.get(f"/items/{i}")).status_code == 200
        assert (await c.get("/nowhere/1")).status_code == 404
        assert (await c.post("/boom")).status_code == 500
    assert value(m, "backendai_http_requests_total", method="GET", route="/items/{item_id}", status="200") == 7
    assert value(m, "backendai_http_request_duration_seconds_count", method="GET", route="/items/{item_id}") == 7
    assert value(m, "backendai_http_requests_total", method="GET", route=UNMATCHED_ROUTE, status="404") == 1
    assert value(m, "backendai_http_requests_total", method="POST", route="/boom", status="500") == 1
    # No raw path ever becomes a label.
    text = (await m.render()).decode()
    assert "/items/3" not in text


async def test_asgi_scrape_is_refused_without_secret_from_another_address() -> None:
    m = ComponentMetrics(process=False)
    app = _fastapi_app(m, MetricsSection().access(SECRET))
    async with _client(app, peer="10.9.8.7") as c:
        r = await c.get("/metrics")
        assert r.status_code == 403
        assert r.headers["content-type"] == "application/problem+json"
        assert r.json()["status"] == 403 and "allow-from" in r.json()["detail"]
        r = await c.get("/metrics", headers={CLUSTER_SECRET_HEADER: SECRET})
        assert r.status_code == 200
        assert r.headers["content-type"].startswith("text/plain; version=0.0.4")
    async with _client(app, peer="127.0.0.1") as c:
        await c.get("/items/a")
        r = await c.get("/metrics")
        assert r.status_code == 200
        got = samples(r.text, "backendai_http_requests_total")
        assert got[(("method", "GET"), ("route", "/items/{item_id}"), ("status", "200"))] == 1
    # Scrapes are not counted as requests.
    assert not any("/metrics" in str(k) for k in samples(r.text, "backendai_http_requests_total"))


async def test_asgi_names_the_route_of_a_request_refused_before_routing() -> None:
    m = ComponentMetrics(process=False)
    app = FastAPI()

    @app.get("/items/{item_id}")
    async def item(item_id: str) -> dict[str, str]:
        return {"id": item_id}

    # The agent's order: the secret check inside, the metrics outside.
    app.add_middleware(SharedSecretMiddleware, header="X-Secret", secret="s3cret", refusal=Forbidden("no"))
    app.add_middleware(MetricsMiddleware, metrics=lambda: m, access=MetricsAccess(["127.0.0.0/8"]))
    async with _client(app) as c:
        assert (await c.get("/items/1")).status_code == 403
        assert (await c.get("/items/2", headers={"X-Secret": "s3cret"})).status_code == 200
        assert (await c.get("/metrics")).status_code == 200  # the scrape is not behind the secret
        assert (await c.get("/nothing")).status_code == 403
    assert value(m, "backendai_http_requests_total", method="GET", route="/items/{item_id}", status="403") == 1
    assert value(m, "backendai_http_requests_total", method="GET", route="/items/{item_id}", status="200") == 1
    assert value(m, "backendai_http_requests_total", method="GET", route=UNMATCHED_ROUTE, status="403") == 1


async def test_asgi_middleware_passes_through_before_start_up() -> None:
    app = FastAPI()

    @app.get("/x")
    async def x() -> dict[str, int]:
        return {"x": 1}

    app.add_middleware(MetricsMiddleware, metrics=lambda: None, access=MetricsAccess(["127.0.0.0/8"]))
    async with _client(app) as c:
        assert (await c.get("/x")).json() == {"x": 1}
        assert (await c.get("/metrics")).status_code == 404  # nothing to serve yet: the app's own answer


# ------------------------------------------------------------------------------------------ aiohttp


async def _aiohttp_client(metrics: ComponentMetrics, access: MetricsAccess | None) -> TestClient[Any, Any]:
    async def item(request: web.Request) -> web.Response:
        if request.match_info["id"] == "gone":
            raise web.HTTPGone()
        return web.json_response({"id": request.match_info["id"]})

    app = web.Application()
    app.middlewares.insert(0, aiohttp_metrics_middleware(metrics, access))
    app.router.add_get("/things/{id}", item)
    client: TestClient[Any, Any] = TestClient(TestServer(app, host="127.0.0.1"))
    await client.start_server()
    return client


async def test_aiohttp_counts_by_route_template_and_serves_loopback() -> None:
    m = ComponentMetrics(process=False)
    client = await _aiohttp_client(m, MetricsSection().access(SECRET))
    try:
        for i in range(5):
            assert (await client.get(f"/things/{i}")).status == 200
        assert (await client.get("/things/gone")).status == 410
        assert (await client.get("/other")).status == 404
        r = await client.get("/metrics")
        assert r.status == 200
        text = await r.text()
    finally:
        await client.close()
    got = samples(text, "backendai_http_requests_total")
    assert got[(("method", "GET"), ("route", "/things/{id}"), ("status", "200"))] == 5
    assert got[(("method", "GET"), ("route", "/things/{id}"), ("status", "410"))] == 1
    assert got[(("method", "GET"), ("route", UNMATCHED_ROUTE), ("status", "404"))] == 1


async def test_aiohttp_empty_allow_list_refuses_loopback_without_secret() -> None:
    m = ComponentMetrics(process=False)
    client = await _aiohttp_client(m, MetricsAccess([], SECRET))
    try:
        r = await client.get("/metrics")
        assert r.status == 403
        assert r.headers["Content-Type"] == "application/problem+json"
        assert (await r.json())["title"]
        r = await client.get("/metrics", headers={CLUSTER_SECRET_HEADER: SECRET})
        assert r.status == 200
    finally:
        await client.close()


async def test_aiohttp_without_access_leaves_metrics_to_the_routes() -> None:
    m = ComponentMetrics(process=False)
    client = await _aiohttp_client(m, None)
    try:
        assert (await client.get("/metrics")).status == 404
    finally:
        await client.close()
    assert value(m, "backendai_http_requests_total", method="GET", route=UNMATCHED_ROUTE, status="404") == 1


# -------------------------------------------------------------------------------------------- agent


def test_agent_phase_histogram_skips_what_is_no_duration() -> None:
    m = AgentMetrics(process=False)
    kernels = {"a", "b"}
    m.watch(lambda: len(kernels), lambda: 1)
    m.kernel_created({"image_check": 0.01, "container_start": 0.5, "bootstrap_exit_code": 0, "odd": 3.0}, 0.7)
    name = "backendai_agent_container_start_seconds_count"
    assert value(m, name, phase="image_check") == 1
    assert value(m, name, phase="container_start") == 1
    assert value(m, name, phase="total") == 1
    assert value(m, "backendai_agent_container_start_seconds_sum", phase="total") == pytest.approx(0.7)
    assert value(m, name, phase="bootstrap_exit_code") == 0
    assert value(m, name, phase="odd") == 0
    assert value(m, "backendai_agent_kernels_running") == 2
    kernels.add("c")
    assert value(m, "backendai_agent_kernels_running") == 3


# ----------------------------------------------------------------------------------- app proxy relay


async def test_appproxy_counts_relayed_bytes_both_ways() -> None:
    from ai.backend.appproxy.forward import Target, forward_http, forward_websocket
    from ai.backend.appproxy.metrics import AppProxyMetrics

    async def echo(request: web.Request) -> web.Response:
        return web.Response(body=(await request.read()) * 2)

    async def ws_echo(request: web.Request) -> web.WebSocketResponse:
        ws = web.WebSocketResponse()
        await ws.prepare(request)
        async for msg in ws:
            await ws.send_str(msg.data + "!")
        return ws

    upstream = web.Application()
    upstream.router.add_post("/echo", echo)
    upstream.router.add_get("/ws", ws_echo)
    app_server = TestServer(upstream, host="127.0.0.1")
    await app_server.start_server()
    metrics = AppProxyMetrics(process=False)
    target = Target("127.0.0.1", app_server.port or 0)

    async def relay(request: web.Request) -> web.StreamResponse:
        import aiohttp

        async with aiohttp.ClientSession() as client:
            if request.path == "/ws":
                return await forward_websocket(request, client, target, lambda pair: lambda: None, metrics=metrics)
            return await forward_http(request, client, target, metrics=metrics)

    proxy = web.Application()
    proxy.router.add_route("*", "/{tail:.*}", relay)
    client: TestClient[Any, Any] = TestClient(TestServer(proxy, host="127.0.0.1"))
    await client.start_server()
    try:
        r = await client.post("/echo", data=b"x" * 1000)
        assert await r.read() == b"x" * 2000
        ws = await client.ws_connect("/ws")
        await ws.send_str("hello")
        assert (await ws.receive()).data == "hello!"
        await ws.close()
    finally:
        await client.close()
        await app_server.close()
    assert value(metrics, "backendai_appproxy_relayed_bytes_total", direction="up") == 1000 + 5
    assert value(metrics, "backendai_appproxy_relayed_bytes_total", direction="down") == 2000 + 6
