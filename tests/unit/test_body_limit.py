"""The manager's request body limit: 413 before the app reads anything, with and without Content-Length."""

from __future__ import annotations

from collections.abc import AsyncIterator

import httpx
import pytest
from starlette.applications import Starlette
from starlette.requests import Request
from starlette.responses import JSONResponse
from starlette.routing import Route

from ai.backend.manager.body_limit import BodyLimitMiddleware

seen: list[int] = []


async def _echo(request: Request) -> JSONResponse:
    body = await request.body()
    seen.append(len(body))
    return JSONResponse({"size": len(body)})


def _client(limit: int) -> httpx.AsyncClient:
    app = BodyLimitMiddleware(Starlette(routes=[Route("/", _echo, methods=["POST"])]), limit=limit)
    return httpx.AsyncClient(transport=httpx.ASGITransport(app=app), base_url="http://test")


async def _chunks(total: int, size: int = 1000) -> AsyncIterator[bytes]:
    sent = 0
    while sent < total:
        n = min(size, total - sent)
        sent += n
        yield b"x" * n


@pytest.mark.parametrize("chunked", [False, True])
async def test_bodies_up_to_the_limit_pass_and_bigger_ones_are_refused(chunked: bool) -> None:
    seen.clear()
    async with _client(5000) as c:
        ok = await c.post("/", content=_chunks(5000) if chunked else b"x" * 5000)
        assert ok.status_code == 200 and ok.json() == {"size": 5000}
        big = await c.post("/", content=_chunks(5001) if chunked else b"x" * 5001)
        assert big.status_code == 413
        assert big.headers["content-type"] == "application/problem+json"
        assert "5000 bytes" in big.json()["detail"]
    assert seen == [5000]  # the refused body never reached the app
