"""The scheduler: places PENDING sessions on agents with free capacity, FIFO per scaling group.

Each pass reads a snapshot of pending sessions and agents, decides in memory, and writes every
placement in one transaction, so an agent is never overcommitted. Passes are triggered by events
(a new session, a session ending, an agent joining) with a periodic safety pass.
"""

from __future__ import annotations

import asyncio
import logging
import uuid
from decimal import Decimal

from sqlalchemy import select

from ai.backend.common.types import ResourceSlot

from .models import Agent, Kernel, SessionRow
from .models.base import utcnow
from .registry import SessionRegistry

log = logging.getLogger(__name__)

NO_CAPACITY = "no agent has enough free resources; waiting in the queue"


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
            for session in pending:
                if session.starts_at is not None and session.starts_at > now:
                    info = f"reserved to start at {session.starts_at.isoformat()}"
                    if session.status_info != info:
                        session.status_info = info
                    continue
                requested = ResourceSlot.from_json(session.requested_slots)
                candidates = [
                    a for a in agents if a.scaling_group == session.scaling_group and requested.fits_in(free[a.id])
                ]
                if not candidates:
                    if session.status_info != NO_CAPACITY:
                        session.status_info = NO_CAPACITY
                    continue
                # Concentrated placement: the agent with the least free memory that still fits.
                agent = min(candidates, key=lambda a: free[a.id].get("mem", Decimal(0)))
                free[agent.id] = free[agent.id] - requested
                agent.occupied_slots = (ResourceSlot.from_json(agent.occupied_slots) + requested).to_json()
                kernel = (
                    await db.execute(select(Kernel).where(Kernel.session_id == session.id))
                ).scalar_one()
                kernel.agent = agent.id
                kernel.agent_addr = agent.addr
                kernel.occupied_slots = requested.to_json()
                kernel.status = "SCHEDULED"
                await reg.set_status(db, session, "SCHEDULED", "")
                session.occupying_slots = requested.to_json()
                placed.append(str(session.id))
            await db.commit()
        for sid in placed:
            reg.spawn(reg.start_session(uuid.UUID(sid)))
        return placed
