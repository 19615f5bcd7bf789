"""The agent's client of the manager's agent-facing API (heartbeats and kernel events), on the peer base."""

from __future__ import annotations

from ai.backend.common.contracts.agent import (
    CLUSTER_SECRET_HEADER,
    HEARTBEAT_PATH,
    KERNEL_EVENTS_PATH,
    Heartbeat,
    HeartbeatAnswer,
    KernelEvent,
)
from ai.backend.common.peer import PeerClient

__all__ = ["ManagerClient"]

#: Tries of a kernel's end report (it is idempotent: the manager records an end once).
EXIT_REPORT_TRIES = 5


class ManagerClient(PeerClient):
    """Calls to the manager at ``manager_url`` with the cluster secret; each waits at most 10 s for an answer."""

    peer = "manager"

    def __init__(self, manager_url: str, cluster_secret: str) -> None:
        super().__init__(manager_url, {CLUSTER_SECRET_HEADER: cluster_secret}, limit_per_host=8, default_timeout=10.0)

    async def heartbeat(self, hb: Heartbeat) -> HeartbeatAnswer:
        """Send a heartbeat; the manager's answer (an answer without a JSON object reads as a plain ``ok``)."""
        answer = await self.call("POST", HEARTBEAT_PATH, hb.to_wire())
        if not isinstance(answer, dict):
            return HeartbeatAnswer()
        stale = answer.get("stale_kernels")
        # The stale list is taken as far as it is a list of ids; anything else is ignored, not refused.
        return HeartbeatAnswer(
            stale_kernels=[k for k in stale if isinstance(k, str)] if isinstance(stale, list) else None
        )

    async def kernel_event(self, event: KernelEvent, *, tries: int = 1) -> None:
        """Report a kernel event; with ``tries``, transport failures and 5xx answers are tried again."""
        await self.call("POST", KERNEL_EVENTS_PATH, event.to_wire(), retries=tries - 1)
