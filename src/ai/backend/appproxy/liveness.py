"""Closing what should not stay open: every ``alive-interval`` the proxy asks the manager which of its
circuits' sessions still run (``POST {manager-url}/internal/appproxy/alive``, ADR 0012 decision 6) and closes
the circuits of the others, so a missed ``DELETE /v2/sessions/{id}`` cannot leave a circuit open onto a port
that a later kernel reuses; circuits with no connection for ``idle-timeout`` seconds close too.

A manager that cannot be reached or answers nonsense closes nothing (it is logged once, and its recovery):
an outage of the manager must not cut the apps users are working in. With several managers the next one is
asked when one cannot be reached, and the one that answered is asked first the next time.
"""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Set as AbstractSet

import aiohttp

from ai.backend.common.app_tokens import APPPROXY_SECRET_HEADER

from .circuits import CircuitTable
from .config import AppProxySection

__all__ = ["ALIVE_PATH", "AliveChecker", "liveness_loop"]

log = logging.getLogger("ai.backend.appproxy.liveness")

ALIVE_PATH = "/internal/appproxy/alive"


class AliveChecker:
    """Asks the manager about the sessions of the open circuits and closes those it does not report."""

    def __init__(self, conf: AppProxySection, table: CircuitTable, client: aiohttp.ClientSession) -> None:
        self.conf = conf
        self.table = table
        self.client = client
        self._failing = False
        self._urls = list(conf.manager_urls)

    def _failed(self, why: str) -> None:
        if not self._failing:
            log.warning("cannot ask the manager which sessions run (%s); circuits stay open until it answers", why)
        else:
            log.debug("manager still not answering: %s", why)
        self._failing = True

    async def _ask(self, session_ids: set[str], active: AbstractSet[str] = frozenset()) -> set[str] | None:
        """The sessions among ``session_ids`` that the manager reports alive; None when it did not say.
        ``active`` tells it which of them were used (activity for their idle timeout)."""
        body = {"session_ids": sorted(session_ids), "active": sorted(active)}
        for turn in range(len(self._urls)):
            url = self._urls[0] + ALIVE_PATH
            try:
                async with self.client.post(url, json=body, headers={APPPROXY_SECRET_HEADER: self.conf.secret}) as resp:
                    if resp.status != 200:
                        self._failed(f"{url} answered HTTP {resp.status}")
                        return None
                    doc = await resp.json(content_type=None)
                break
            except (TimeoutError, aiohttp.ClientError, ValueError) as e:
                self._failed(f"{url}: {e or type(e).__name__}")
                if isinstance(e, ValueError) or turn + 1 == len(self._urls):
                    return None
                self._urls.append(self._urls.pop(0))  # the next manager; the one that answers stays first
        alive = doc.get("alive") if isinstance(doc, dict) else None
        if not isinstance(alive, list) or not all(isinstance(s, str) for s in alive):
            self._failed(f'{url} answered without an "alive" list of session ids')
            return None
        if self._failing:
            log.info("the manager answers again at %s", url)
            self._failing = False
        return set(alive)

    async def check(self) -> int:
        """One round; returns how many circuits it closed."""
        asked = self.table.sessions()
        if not asked:
            return 0
        alive = await self._ask(asked, self.table.take_active())
        if alive is None:
            return 0
        closed = 0
        # Only sessions that were asked about: a circuit opened while the question was out stays.
        for session_id in sorted(asked - alive):
            closed += await self.table.close_session(session_id, "the manager does not report its session running")
        return closed


async def liveness_loop(checker: AliveChecker) -> None:
    """Run :meth:`AliveChecker.check` and the idle sweep every ``alive-interval`` seconds, forever."""
    conf = checker.conf
    while True:
        await asyncio.sleep(conf.alive_interval)
        try:
            await checker.check()
            await checker.table.close_idle(conf.idle_timeout)
        except asyncio.CancelledError:
            raise
        except Exception:  # noqa: BLE001 - the loop must outlive any one bad round
            log.exception("liveness round failed")
