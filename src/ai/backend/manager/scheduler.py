"""The scheduler: places PENDING sessions on agents with free capacity, per scaling group in the order
of the group's ``scheduler`` policy: ``fifo`` (oldest first), ``lifo`` (newest first) or ``drf``
(dominant resource fairness: the session of the access key with the smallest dominant share of the
group's capacity first, oldest first among equals). A session that does not fit does not block the
ones behind it.

Each pass reads a snapshot of pending sessions and agents, decides in memory, and writes every
placement in one transaction, so an agent is never overcommitted. Passes are triggered by events
(a new session, a session ending, an agent joining) with a periodic safety pass.
"""

from __future__ import annotations

import asyncio
import logging
import uuid
from collections.abc import Sequence
from datetime import datetime
from decimal import Decimal

from sqlalchemy import select
from sqlalchemy.ext.asyncio import AsyncSession

from ai.backend.common.types import ResourceSlot

from .models import Agent, Kernel, ScalingGroup, SessionRow
from .models.base import utcnow
from .models.sessions import ACTIVE_STATUSES
from .registry import SessionRegistry

log = logging.getLogger(__name__)

NO_CAPACITY = "no agent has enough free resources; waiting in the queue"
POLICIES = ("fifo", "lifo", "drf")


def dominant_share(using: ResourceSlot | None, capacity: ResourceSlot) -> Decimal:
    """The largest fraction of any slot of ``capacity`` that ``using`` occupies (0 for nothing)."""
    shares = [v / capacity[k] for k, v in (using or {}).items() if capacity.get(k, Decimal(0)) > 0]
    return max(shares, default=Decimal(0))


def pop_next(
    queue: list[SessionRow], policy: str, usage: dict[str, ResourceSlot], capacity: ResourceSlot
) -> SessionRow:
    """Remove and return the session ``policy`` serves next from ``queue`` (sorted oldest first).

    For ``drf``, ``usage`` maps access keys to what they occupy in the scaling group now.
    """
    if policy == "lifo":
        return queue.pop()
    if policy == "drf":
        best = min(range(len(queue)), key=lambda i: (dominant_share(usage.get(queue[i].access_key), capacity), i))
        return queue.pop(best)
    return queue.pop(0)


class Scheduler:
    """Runs scheduling passes whenever ``registry.schedule_event`` is set (and every few seconds)."""

    def __init__(self, registry: SessionRegistry, interval: float = 5.0) -> None:
        self.registry = registry
        self.interval = interval

    async def run(self) -> None:
        ev = self.registry.schedule_event
        while True:
            try:
                await asyncio.wait_for(ev.wait(), timeout=self.interval)
            except TimeoutError:
                pass
            ev.clear()
            try:
                await self.schedule_once()
            except Exception:  # noqa: BLE001 - a failed pass must not stop the scheduler
                log.exception("scheduling pass failed")

    async def schedule_once(self) -> list[str]:
        """One pass; returns the ids of the sessions placed."""
        reg = self.registry
        now = utcnow()
        placed: list[str] = []
        async with reg.db() as db:
            pending = (
                await db.execute(
                    select(SessionRow).where(SessionRow.status == "PENDING").order_by(SessionRow.created_at)
                )
            ).scalars().all()
            if not pending:
                return placed
            agents = (
                await db.execute(
                    select(Agent).where(Agent.status == "ALIVE", Agent.schedulable.is_(True)).with_for_update()
                )
            ).scalars().all()
            free = {
                a.id: ResourceSlot.from_json(a.available_slots) - ResourceSlot.from_json(a.occupied_slots)
                for a in agents
            }
            policies = dict((await db.execute(select(ScalingGroup.name, ScalingGroup.scheduler))).all())
            queues: dict[str, list[SessionRow]] = {}
            for session in pending:
                queues.setdefault(session.scaling_group, []).append(session)
            usage: dict[tuple[str, str], ResourceSlot] = {}
            if any(policies.get(sg) == "drf" for sg in queues):
                for sg, ak, occ in (
                    await db.execute(
                        select(SessionRow.scaling_group, SessionRow.access_key, SessionRow.occupying_slots)
                        .where(SessionRow.status.in_(ACTIVE_STATUSES - {"PENDING"}))
                    )
                ).all():
                    usage[(sg, ak)] = usage.get((sg, ak), ResourceSlot()) + ResourceSlot.from_json(occ)
            for sgroup, queue in queues.items():
                policy = policies.get(sgroup, "fifo")
                capacity = sum(
                    (ResourceSlot.from_json(a.available_slots) for a in agents if a.scaling_group == sgroup),
                    ResourceSlot(),
                )
                group_usage = {ak: slots for (sg, ak), slots in usage.items() if sg == sgroup}
                while queue:
                    session = pop_next(queue, policy, group_usage, capacity)
                    if await self._place(db, session, agents, free, now):
                        placed.append(str(session.id))
                        group_usage[session.access_key] = (
                            group_usage.get(session.access_key, ResourceSlot())
                            + ResourceSlot.from_json(session.requested_slots)
                        )
            await db.commit()
        for sid in placed:
            reg.spawn(reg.start_session(uuid.UUID(sid)))
        return placed

    async def _place(
        self, db: AsyncSession, session: SessionRow, agents: Sequence[Agent], free: dict[str, ResourceSlot],
        now: datetime,
    ) -> bool:
        """Place one pending session on the fullest agent of its group that fits; False if none does."""
        if session.starts_at is not None and session.starts_at > now:
            info = f"reserved to start at {session.starts_at.isoformat()}"
            if session.status_info != info:
                session.status_info = info
            return False
        requested = ResourceSlot.from_json(session.requested_slots)
        candidates = [a for a in agents if a.scaling_group == session.scaling_group and requested.fits_in(free[a.id])]
        if not candidates:
            if session.status_info != NO_CAPACITY:
                session.status_info = NO_CAPACITY
            return False
        # Concentrated placement: the agent with the least free memory that still fits.
        agent = min(candidates, key=lambda a: free[a.id].get("mem", Decimal(0)))
        free[agent.id] = free[agent.id] - requested
        agent.occupied_slots = (ResourceSlot.from_json(agent.occupied_slots) + requested).to_json()
        kernel = (await db.execute(select(Kernel).where(Kernel.session_id == session.id))).scalar_one()
        kernel.agent = agent.id
        kernel.agent_addr = agent.addr
        kernel.occupied_slots = requested.to_json()
        kernel.status = "SCHEDULED"
        await self.registry.set_status(db, session, "SCHEDULED", "")
        session.occupying_slots = requested.to_json()
        return True
