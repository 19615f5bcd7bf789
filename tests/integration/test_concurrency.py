"""Many simultaneous clients get answers, not server errors, on SQLite and on PostgreSQL (+ Redis).

Every request here is sent at the same moment over its own connection, so the manager has to hold as
many in flight as there are clients: database sessions, rate-limit counter updates (in memory for
SQLite, in Redis for PostgreSQL) and the signature checks.
"""

from __future__ import annotations

import asyncio
import json
from typing import Any

import httpx

from ai.backend.common.auth import sign_request_headers
from ai.backend.manager.fixtures import USER
from ai.backend.testutils.cluster import Cluster

CLIENTS = 200
Request = tuple[str, str, dict[str, str], bytes | None]  # method, path, headers, body


async def _burst(m: Cluster, requests: list[Request]) -> list[httpx.Response]:
    limits = httpx.Limits(max_connections=len(requests), max_keepalive_connections=0)
    async with httpx.AsyncClient(base_url=m.endpoint, limits=limits, timeout=120) as client:
        start = asyncio.Event()

        async def one(method: str, path: str, headers: dict[str, str], body: bytes | None) -> httpx.Response:
            await start.wait()
            return await client.request(method, path, headers=headers, content=body)

        tasks = [asyncio.ensure_future(one(*r)) for r in requests]
        await asyncio.sleep(0)
        start.set()
        return list(await asyncio.gather(*tasks))


def _signed(m: Cluster, method: str, path: str, who: dict[str, Any] = USER) -> dict[str, str]:
    return sign_request_headers(
        method=method,
        path_with_query=path,
        host=m.endpoint.split("//", 1)[1],
        content_type="application/json",
        version="v6.20220615",
        access_key=who["access_key"],
        secret_key=who["secret_key"],
    )


def _summary(responses: list[httpx.Response]) -> str:
    codes: dict[int, int] = {}
    for r in responses:
        codes[r.status_code] = codes.get(r.status_code, 0) + 1
    bad = next((r for r in responses if r.status_code != 200), None)
    return f"status counts {codes}" + (f"; first failure: {bad.text[:300]}" if bad is not None else "")


def test_simultaneous_anonymous_calls(manager: Cluster) -> None:
    responses = asyncio.run(_burst(manager, [("GET", "/", {}, None)] * CLIENTS))
    assert all(r.status_code == 200 for r in responses), _summary(responses)
    assert all(r.json()["version"] == "v6.20220615" for r in responses)


def test_simultaneous_signed_calls(manager: Cluster) -> None:
    gql = json.dumps({"query": "{ keypair { access_key is_active } }"}).encode()
    requests: list[Request] = [("GET", "/auth/test", _signed(manager, "GET", "/auth/test"), None)] * (CLIENTS // 2)
    requests += [("POST", "/admin/graphql", _signed(manager, "POST", "/admin/graphql"), gql)] * (CLIENTS // 2)
    responses = asyncio.run(_burst(manager, requests))
    assert all(r.status_code == 200 for r in responses), _summary(responses)
    keypairs = [r.json()["keypair"] for r in responses if r.request.url.path == "/admin/graphql"]
    assert keypairs == [{"access_key": USER["access_key"], "is_active": True}] * (CLIENTS // 2)
