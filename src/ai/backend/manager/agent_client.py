"""RPC from the manager to agents: JSON over HTTP to each agent's advertised address."""

from __future__ import annotations

from typing import Any

import httpx

from ai.backend.common.auth import CLUSTER_SECRET_HEADER
from ai.backend.common.problems import BadGateway, ProblemError, ServiceUnavailable


class AgentError(ProblemError):
    """An agent answered with an error document; its status and problem body are passed on."""

    def __init__(self, status: int, body: dict[str, Any]) -> None:
        super().__init__(body.get("detail") or body.get("title") or "agent error")
        self.status = status if 400 <= status < 500 else 502
        self.slug = str(body.get("type", "agent-error")).rsplit("/", 1)[-1]
        self.title = body.get("title", "Agent error")
        self.data = body


class AgentRPC:
    """One keep-alive HTTP client per agent address, authenticated with the cluster secret."""

    def __init__(self, cluster_secret: str) -> None:
        self._secret = cluster_secret
        self._clients: dict[str, httpx.AsyncClient] = {}

    def _client(self, addr: str) -> httpx.AsyncClient:
        client = self._clients.get(addr)
        if client is None:
            client = httpx.AsyncClient(
                base_url=addr,
                headers={CLUSTER_SECRET_HEADER: self._secret},
                timeout=httpx.Timeout(connect=5.0, read=None, write=30.0, pool=30.0),
                limits=httpx.Limits(max_connections=64, max_keepalive_connections=32),
            )
            self._clients[addr] = client
        return client

    async def call(
        self, addr: str, method: str, path: str, json: Any = None, timeout: float | None = 600.0
    ) -> Any:
        """Call an agent endpoint and return its JSON answer (None for 204)."""
        try:
            resp = await self._client(addr).request(method, path, json=json, timeout=timeout)
        except httpx.TimeoutException:
            raise ServiceUnavailable(f"The agent at {addr} did not answer in time.") from None
        except httpx.HTTPError as e:
            raise BadGateway(f"Cannot reach the agent at {addr}: {type(e).__name__}.") from None
        if resp.status_code == 204:
            return None
        try:
            body = resp.json()
        except ValueError:
            raise BadGateway(f"The agent at {addr} sent a malformed answer.") from None
        if resp.status_code >= 400:
            raise AgentError(resp.status_code, body if isinstance(body, dict) else {})
        return body

    async def close(self) -> None:
        for client in self._clients.values():
            await client.aclose()
        self._clients.clear()
