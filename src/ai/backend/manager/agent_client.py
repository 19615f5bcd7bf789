"""RPC from the manager to agents: JSON over HTTP to each agent's advertised address, on the peer-client base
(:mod:`ai.backend.common.peer`: aiohttp, chosen for this hot path, every execute being one call; ADR 0002).

No call is retried: creating a kernel is not idempotent, and the callers of the others (destroy, execute)
decide themselves what a failure means.
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any, NamedTuple

from ai.backend.common.contracts import parse_wire
from ai.backend.common.contracts.agent import CLUSTER_SECRET_HEADER, KERNELS_PATH, KernelCreated, KernelSpec
from ai.backend.common.peer import CONNECT_TIMEOUT, PeerAnswer, PeerClient, PeerProblem, problem_fields
from ai.backend.common.problems import BadGateway, ProblemError

__all__ = ["CONNECT_TIMEOUT", "MAX_ANSWER_SIZE", "AgentError", "AgentRPC", "RawAnswer"]

MAX_CONNECTIONS_PER_AGENT = 64
#: The largest JSON answer taken from an agent (an execute answer is at most ~35 MiB, see the agent's
#: ``runner_client.MAX_FRAME_SIZE``); a larger one is a 502, not held in memory.
MAX_ANSWER_SIZE = 64 * 1024 * 1024


class AgentError(PeerProblem):
    """An agent answered with an error document; its status and problem body are passed on."""

    def __init__(self, status: int, body: Mapping[str, Any]) -> None:
        super().__init__(status, body, "Agent error", "agent-error")


class RawAnswer(NamedTuple):
    """An agent's non-JSON answer (session file archives)."""

    content: bytes
    content_type: str


class _AgentPeer(PeerClient):
    peer = "agent"

    def refused(self, target: str, method: str, path: str, answer: PeerAnswer) -> AgentError:
        return AgentError(answer.status, problem_fields(answer.body))


class AgentRPC:
    """One keep-alive connection pool for all agents, authenticated with the cluster secret."""

    def __init__(self, cluster_secret: str) -> None:
        # Idle connections are closed sooner than the agents close theirs (RPC_KEEP_ALIVE): the manager first.
        self._peer = _AgentPeer(
            headers={CLUSTER_SECRET_HEADER: cluster_secret},
            limit_per_host=MAX_CONNECTIONS_PER_AGENT,
            keepalive_timeout=30,
        )

    async def call(self, addr: str, method: str, path: str, json: Any = None, timeout: float | None = 600.0) -> Any:
        """Call an agent endpoint and return its JSON answer (None for 204)."""
        return await self._peer.call(method, addr + path, json, timeout=timeout, limit=MAX_ANSWER_SIZE, target=addr)

    async def call_raw(
        self,
        addr: str,
        method: str,
        path: str,
        *,
        params: dict[str, str | int] | None = None,
        content: bytes | None = None,
        content_type: str | None = None,
        timeout: float | None = 600.0,
    ) -> RawAnswer:
        """Call an agent endpoint that takes or answers raw bytes; errors are raised as in :meth:`call`."""
        headers = {"Content-Type": content_type} if content_type else None
        answer = await self._peer.request(
            method, addr + path, data=content, headers=headers, params=params, timeout=timeout, target=addr
        )
        if answer.status >= 400:
            raise self._peer.refused(addr, method, path, answer)
        return RawAnswer(answer.body, answer.content_type)

    async def create_kernel(self, addr: str, spec: KernelSpec, timeout: float | None = 900) -> KernelCreated:
        """Create one kernel on the agent at ``addr`` (``POST /v1/kernels``): the typed form of that call."""
        answer = await self.call(addr, "POST", KERNELS_PATH, spec.to_wire(), timeout=timeout)
        try:
            return parse_wire(KernelCreated, answer, "answer")
        except ProblemError as e:
            raise BadGateway(f"The agent at {addr} answered a kernel creation with {e.detail}.") from None

    async def close(self) -> None:
        await self._peer.close()
