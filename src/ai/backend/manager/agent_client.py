"""RPC from the manager to agents: JSON over HTTP to each agent's advertised address.

aiohttp rather than httpx: this is the execute hot path (every execute is one call), and httpx costs
several times more CPU per request here (it polls every idle pooled connection before each request
and logs every request at INFO level).
"""

from __future__ import annotations

import json as jsonlib
from collections.abc import Mapping
from typing import Any, NamedTuple

import aiohttp

from ai.backend.common.auth import CLUSTER_SECRET_HEADER
from ai.backend.common.problems import BadGateway, ProblemError, ServiceUnavailable

CONNECT_TIMEOUT = 5.0
MAX_CONNECTIONS_PER_AGENT = 64
#: The largest JSON answer taken from an agent (an execute answer is at most ~35 MiB, see the agent's
#: ``runner_client.MAX_FRAME_SIZE``); a larger one is a 502, not held in memory.
MAX_ANSWER_SIZE = 64 * 1024 * 1024


class AgentError(ProblemError):
    """An agent answered with an error document; its status and problem body are passed on."""

    def __init__(self, status: int, body: dict[str, Any]) -> None:
        super().__init__(body.get("detail") or body.get("title") or "agent error")
        self.status = status if 400 <= status < 500 else 502
        self.slug = str(body.get("type", "agent-error")).rsplit("/", 1)[-1]
        self.title = body.get("title", "Agent error")
        self.data = body


class _TooLarge(Exception):
    def __init__(self, size: int) -> None:
        super().__init__(size)
        self.size = size


class RawAnswer(NamedTuple):
    """An agent's non-JSON answer (session file archives)."""

    content: bytes
    content_type: str


def _timeout(seconds: float | None) -> aiohttp.ClientTimeout:
    # ``seconds`` bounds each wait for the agent's answer (like a read timeout), not the whole call.
    return aiohttp.ClientTimeout(total=None, sock_connect=CONNECT_TIMEOUT, sock_read=seconds)


def _error_body(raw: bytes) -> dict[str, Any]:
    try:
        body = jsonlib.loads(raw)
    except ValueError:
        return {}
    return body if isinstance(body, dict) else {}


class AgentRPC:
    """One keep-alive connection pool for all agents, authenticated with the cluster secret."""

    def __init__(self, cluster_secret: str) -> None:
        self._headers = {CLUSTER_SECRET_HEADER: cluster_secret}
        self._session: aiohttp.ClientSession | None = None

    def _http(self) -> aiohttp.ClientSession:
        # Created on first use: a ClientSession must be made inside the running event loop.
        if self._session is None or self._session.closed:
            # Shorter than the agents keep idle connections (RPC_KEEP_ALIVE): the manager closes first.
            connector = aiohttp.TCPConnector(limit=0, limit_per_host=MAX_CONNECTIONS_PER_AGENT, keepalive_timeout=30)
            self._session = aiohttp.ClientSession(connector=connector, headers=self._headers)
        return self._session

    async def _request(
        self, addr: str, method: str, path: str, *, data: bytes | None, headers: Mapping[str, str] | None,
        params: Mapping[str, str | int] | None, timeout: float | None, limit: int | None = None,
    ) -> tuple[int, str, bytes]:
        try:
            async with self._http().request(method, addr + path, data=data, headers=headers, params=params,
                                            timeout=_timeout(timeout)) as resp:
                ctype = resp.headers.get("Content-Type", "")
                if limit is None or (resp.content_length is not None and resp.content_length <= limit):
                    return resp.status, ctype, await resp.read()  # the hot path: one size check
                if resp.content_length is not None:
                    raise _TooLarge(resp.content_length)
                body = bytearray()
                async for chunk in resp.content.iter_chunked(1 << 16):
                    body += chunk
                    if len(body) > limit:
                        raise _TooLarge(len(body))
                return resp.status, ctype, bytes(body)
        except _TooLarge as e:
            raise BadGateway(f"The agent at {addr} sent an answer of {e.size} bytes or more, over the limit of"
                             f" {limit}.") from None
        except TimeoutError:  # asyncio's and aiohttp's timeouts are TimeoutError subclasses
            raise ServiceUnavailable(f"The agent at {addr} did not answer in time.") from None
        except (aiohttp.ClientError, OSError) as e:
            raise BadGateway(f"Cannot reach the agent at {addr}: {type(e).__name__}.") from None

    async def call(
        self, addr: str, method: str, path: str, json: Any = None, timeout: float | None = 600.0
    ) -> Any:
        """Call an agent endpoint and return its JSON answer (None for 204)."""
        data, headers = None, None
        if json is not None:
            data, headers = jsonlib.dumps(json).encode(), {"Content-Type": "application/json"}
        status, _, raw = await self._request(addr, method, path, data=data, headers=headers, params=None,
                                             timeout=timeout, limit=MAX_ANSWER_SIZE)
        if status == 204:
            return None
        try:
            body = jsonlib.loads(raw)
        except ValueError:
            raise BadGateway(f"The agent at {addr} sent a malformed answer.") from None
        if status >= 400:
            raise AgentError(status, body if isinstance(body, dict) else {})
        return body

    async def call_raw(
        self, addr: str, method: str, path: str, *, params: dict[str, str | int] | None = None,
        content: bytes | None = None, content_type: str | None = None, timeout: float | None = 600.0,
    ) -> RawAnswer:
        """Call an agent endpoint that takes or answers raw bytes; errors are raised as in :meth:`call`."""
        headers = {"Content-Type": content_type} if content_type else None
        status, ctype, raw = await self._request(addr, method, path, data=content, headers=headers, params=params,
                                                 timeout=timeout)
        if status >= 400:
            raise AgentError(status, _error_body(raw))
        return RawAnswer(raw, ctype)

    async def close(self) -> None:
        if self._session is not None:
            await self._session.close()
            self._session = None
