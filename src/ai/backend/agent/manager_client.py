"""The agent's client of the manager's agent-facing API (heartbeats and kernel events), on the peer base.

With several managers (ADR 0014) the client talks to one at a time and moves on to the next when the current one
cannot be reached (connection refused or broken, no answer in time); the call is then sent there at once. Both
calls are idempotent: a heartbeat only refreshes, and the manager records a kernel's end once.
"""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Sequence
from typing import Any

from ai.backend.common.contracts.agent import (
    CLUSTER_SECRET_HEADER,
    HEARTBEAT_PATH,
    KERNEL_EVENTS_PATH,
    Heartbeat,
    HeartbeatAnswer,
    KernelEvent,
)
from ai.backend.common.peer import PeerAnswer, PeerClient
from ai.backend.common.problems import BadGateway, ProblemError, ServiceUnavailable

__all__ = ["ManagerClient"]

log = logging.getLogger(__name__)

#: Tries of a kernel's end report (it is idempotent: the manager records an end once).
EXIT_REPORT_TRIES = 5


class _Unreachable(BadGateway):
    """The current manager could not be reached: try the next one."""


class _NoAnswer(ServiceUnavailable):
    """The current manager did not answer in time: try the next one."""


class ManagerClient(PeerClient):
    """Calls to the managers at ``manager_urls`` (one URL or several) with the cluster secret; each waits at most
    10 s for an answer."""

    peer = "manager"

    def __init__(self, manager_urls: str | Sequence[str], cluster_secret: str) -> None:
        urls = [manager_urls] if isinstance(manager_urls, str) else list(manager_urls)
        self.urls = [u.rstrip("/") for u in urls]
        super().__init__(self.urls[0], {CLUSTER_SECRET_HEADER: cluster_secret}, limit_per_host=8, default_timeout=10.0)

    def unreachable(self, target: str, exc: BaseException) -> ProblemError:
        return _Unreachable(f"Cannot reach the manager at {self.base_url}: {type(exc).__name__}.")

    def timed_out(self, target: str, method: str, path: str) -> ProblemError:
        return _NoAnswer(f"The manager at {self.base_url} did not answer in time.")

    async def request(self, method: str, path: str, *, retries: int = 0, **kwargs: Any) -> PeerAnswer:
        """As :meth:`PeerClient.request`, each try going round the managers until one can be reached."""
        for attempt in range(retries + 1):
            for turn in range(len(self.urls)):
                try:
                    answer = await super().request(method, path, retries=0, **kwargs)
                except (_Unreachable, _NoAnswer) as e:
                    if turn + 1 == len(self.urls):
                        if attempt == retries:
                            raise
                        break
                    failed = self.base_url
                    self.urls.append(self.urls.pop(0))
                    self.base_url = self.urls[0]
                    log.warning("manager at %s unavailable (%s); switching to %s", failed, e.detail, self.base_url)
                    continue
                if answer.status < 500 or attempt == retries:
                    return answer
                break
            await asyncio.sleep(self.retry_delay * (attempt + 1))
        raise AssertionError("not reached: the last attempt returns or raises")

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
