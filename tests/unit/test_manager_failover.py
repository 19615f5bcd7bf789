"""Unit tests of failing over between several managers (ADR 0014): the agent's manager client, the SDK's retry of
idempotent requests, and the configurations that take a list of managers (no servers but local sockets)."""

from __future__ import annotations

import asyncio
import os
import socket
from collections.abc import AsyncIterator, Callable

import httpx
import pytest
from aiohttp import web

from ai.backend.agent.config import AgentConfig
from ai.backend.agent.manager_client import ManagerClient
from ai.backend.appproxy.config import AppProxyConfig
from ai.backend.client.config import APIConfig, set_config
from ai.backend.client.exceptions import BackendClientError
from ai.backend.client.request import Request
from ai.backend.client.session import AsyncSession
from ai.backend.common.problems import ProblemError

AK = "AKIAIOSFODNN7EXAMPLE"
SK = "wJalrXUtnFEMI/K7MDENG/bPxRfiCYEXAMPLEKEY"


@pytest.fixture(autouse=True)
def clean_env(monkeypatch: pytest.MonkeyPatch) -> None:
    for key in list(os.environ):
        if key.startswith(("BACKEND_", "SORNA_")):
            monkeypatch.delenv(key)
    set_config(None)


def _dead_url() -> str:
    """A local port where nothing listens (connections are refused)."""
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return f"http://127.0.0.1:{s.getsockname()[1]}"


async def _serve(handler: Callable[[web.Request], web.StreamResponse]) -> AsyncIterator[str]:
    app = web.Application()
    app.router.add_route("*", "/{tail:.*}", handler)  # type: ignore[arg-type]
    runner = web.AppRunner(app)
    await runner.setup()
    site = web.TCPSite(runner, "127.0.0.1", 0)
    await site.start()
    port = site._server.sockets[0].getsockname()[1]  # type: ignore[union-attr]
    try:
        yield f"http://127.0.0.1:{port}"
    finally:
        await runner.cleanup()


@pytest.fixture
async def manager() -> AsyncIterator[tuple[str, list[str]]]:
    """A live "manager" answering every call with ``{"ok": true}``; the list collects the paths it was sent."""
    seen: list[str] = []

    async def handler(request: web.Request) -> web.StreamResponse:
        seen.append(request.path)
        return web.json_response({"ok": True})

    async for url in _serve(handler):
        yield url, seen


@pytest.fixture
async def hangup() -> AsyncIterator[str]:
    """A "manager" that dies under every request: it reads the request and closes the connection unanswered."""

    async def client(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        await reader.readuntil(b"\r\n\r\n")
        writer.transport.abort()

    server = await asyncio.start_server(client, "127.0.0.1", 0)
    port = server.sockets[0].getsockname()[1]
    try:
        yield f"http://127.0.0.1:{port}"
    finally:
        server.close()


async def test_agent_client_moves_to_the_next_manager_and_stays(manager: tuple[str, list[str]]) -> None:
    live, seen = manager
    dead = _dead_url()
    client = ManagerClient([dead, live], "secret-secret")
    try:
        assert await client.call("POST", "/internal/heartbeat", {}) == {"ok": True}
        assert client.base_url == live
        await client.call("POST", "/internal/heartbeat", {})
        assert seen == ["/internal/heartbeat", "/internal/heartbeat"]
        assert client.urls == [live, dead]  # the one that answers is tried first from now on
    finally:
        await client.close()


async def test_agent_client_fails_over_from_a_manager_that_hangs_up(
    manager: tuple[str, list[str]], hangup: str
) -> None:
    live, seen = manager
    client = ManagerClient([hangup, live], "secret-secret")
    try:
        assert await client.call("POST", "/internal/kernel-events", {}) == {"ok": True}
        assert seen == ["/internal/kernel-events"]
    finally:
        await client.close()


async def test_agent_client_raises_when_no_manager_answers() -> None:
    client = ManagerClient([_dead_url(), _dead_url()], "secret-secret")
    client.retry_delay = 0.01
    try:
        with pytest.raises(ProblemError) as e:
            await client.call("POST", "/internal/heartbeat", {}, retries=1)
        assert e.value.status == 502
    finally:
        await client.close()


def test_agent_and_appproxy_configs_take_a_list_of_managers() -> None:
    a, b = "http://10.0.0.1:8081", "http://10.0.0.2:8081/"
    for given in ([a, b], f"{a}, {b}"):
        agent = AgentConfig.model_validate({"agent": {"manager-url": given}})
        assert agent.agent.manager_urls == [a, b.rstrip("/")]
        proxy = AppProxyConfig.model_validate({"appproxy": {"secret": "s" * 16, "manager-url": given}})
        assert proxy.appproxy.manager_urls == [a, b.rstrip("/")]
    assert AgentConfig.model_validate({}).agent.manager_urls == ["http://127.0.0.1:8081"]
    for bad in ("ftp://x", "", [a, "10.0.0.3"]):
        with pytest.raises(ValueError, match="http"):
            AgentConfig.model_validate({"agent": {"manager-url": bad}})
        with pytest.raises(ValueError, match="http"):
            AppProxyConfig.model_validate({"appproxy": {"secret": "s" * 16, "manager-url": bad}})


def _sdk_config(*endpoints: str) -> APIConfig:
    config = APIConfig(endpoint=",".join(endpoints), access_key=AK, secret_key=SK)
    # The order matters here: undo the client-side shuffle.
    while str(config.endpoint).rstrip("/") != endpoints[0]:
        config.rotate_endpoints()
    return config


async def test_sdk_repeats_an_idempotent_request_on_the_next_endpoint(
    manager: tuple[str, list[str]], hangup: str
) -> None:
    live, seen = manager
    async with AsyncSession(config=_sdk_config(hangup, live), proxy_mode=True):
        async with Request("GET", "/session/abc").fetch() as resp:
            assert resp.status == 200
    assert seen == ["/session/abc"]


async def test_sdk_does_not_repeat_a_post_the_dead_manager_may_have_run(
    manager: tuple[str, list[str]], hangup: str
) -> None:
    live, seen = manager
    async with AsyncSession(config=_sdk_config(hangup, live), proxy_mode=True):
        rqst = Request("POST", "/session")
        rqst.set_json({"image": "python"})
        with pytest.raises(BackendClientError, match="failed"):
            async with rqst.fetch():
                pass
        # A refused connection is another matter: nothing was sent, so a POST moves on too.
    async with AsyncSession(config=_sdk_config(_dead_url(), live), proxy_mode=True):
        rqst = Request("POST", "/session")
        rqst.set_json({"image": "python"})
        async with rqst.fetch() as resp:
            assert resp.status == 200
    assert seen == ["/session"]


def test_httpx_errors_of_a_hangup_are_the_ones_retried() -> None:
    # The SDK relies on these being distinct from timeouts (a timeout may mean the request is running).
    assert not issubclass(httpx.RemoteProtocolError, httpx.TimeoutException)
    assert not issubclass(httpx.ReadError, httpx.TimeoutException)
