"""The scheduler's run loop and its passes: a pass reads a snapshot (:mod:`.snapshot`), decides with the pure
:func:`.plan.plan_pass` and writes the plan (:mod:`.apply`) in one transaction, with the pending rows and the
agents locked so an agent is never overcommitted; the sessions it placed are then started.

Passes are triggered by events (a new session, a session ending, an agent joining: whoever sets the ``wake``
event) with a periodic safety pass. The scheduler knows nothing else of the manager: a session factory, the
event and a callable that starts a placed session. With several managers only the elected leader runs it
(``presence.py``).
"""

from __future__ import annotations

import asyncio
import gc
import logging
import time
import uuid
from collections.abc import Callable

from sqlalchemy.ext.asyncio import AsyncSession, async_sessionmaker

from ..models.base import utcnow
from .apply import apply_plan
from .plan import plan_pass
from .snapshot import read_snapshot

log = logging.getLogger(__name__)


class Scheduler:
    """Runs scheduling passes whenever ``wake`` is set (and every ``interval`` seconds).

    ``db`` opens the pass's transaction; ``start(session_id)`` is called once per placed session after the
    pass commits and must return at once (the start itself runs in the background)."""

    # After a pass of d seconds the next one waits min(GAP_FACTOR * d, MAX_GAP): triggers meanwhile (every
    # creation is one) are coalesced into that one pass, so passes take at most about a quarter of the
    # manager's time under a burst, however many agents each pass reads; an idle manager still runs a
    # pass as soon as it is triggered, a few milliseconds at most after the previous one.
    GAP_FACTOR = 3.0
    MAX_GAP = 1.0

    def __init__(
        self,
        db: async_sessionmaker[AsyncSession],
        wake: asyncio.Event,
        start: Callable[[uuid.UUID], None],
        interval: float = 5.0,
        on_pass: Callable[[float], None] | None = None,
        *,
        owner: str | None = None,
    ) -> None:
        self.db = db
        self.wake = wake
        self.start = start
        self.interval = interval
        # Told the duration of every pass, failed ones included (the manager's metrics).
        self.on_pass = on_pass
        # The manager that runs the passes: recorded on the sessions it places, whose starts are its own.
        self.owner = owner

    async def run(self) -> None:
        """Run passes when triggered (``wake``) or every ``interval`` seconds, one at a time; triggers during
        a pass or its gap make one more pass."""
        ev = self.wake
        while True:
            try:
                await asyncio.wait_for(ev.wait(), timeout=self.interval)
            except TimeoutError:
                pass
            ev.clear()
            started = time.monotonic()
            try:
                await self.schedule_once()
            except Exception:  # noqa: BLE001 - a failed pass must not stop the scheduler
                log.exception("scheduling pass failed")
            await asyncio.sleep(min(self.GAP_FACTOR * (time.monotonic() - started), self.MAX_GAP))

    async def schedule_once(self) -> list[str]:
        """One pass; returns the ids of the sessions placed.

        The cyclic garbage collector is paused during the pass: a big pass allocates tens of thousands of
        long-lived objects (rows, snapshots, updates), and the full collections that would trigger cost
        about a third of its time; what other tasks leave to collect meanwhile waits until the pass ends."""
        paused = gc.isenabled()
        gc.disable()
        started = time.perf_counter()
        try:
            return await self._pass()
        finally:
            if paused:
                gc.enable()
            if self.on_pass is not None:
                self.on_pass(time.perf_counter() - started)

    async def _pass(self) -> list[str]:
        now = utcnow()
        async with self.db() as db:
            snap = await read_snapshot(db)
            if snap is None:
                return []
            plan = plan_pass(snap.pending, snap.agents, snap.keypairs, snap.groups, snap.usage, now)
            await apply_plan(db, plan, snap.rows, snap.agent_rows, now, owner=self.owner)
            await db.commit()
        placed = [sid for sid, _ in plan.placements]
        for sid in placed:
            self.start(uuid.UUID(sid))
        return placed
