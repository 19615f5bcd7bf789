"""Agent liveness: agents whose heartbeats stopped are marked LOST (nothing new is scheduled on them), and
the sessions running on a LOST agent are flagged, then ended after a grace period unless it comes back.

Both run every few seconds from the manager's housekeeping; they need only a database session factory and,
to end a session, a ``terminate(session_id, reason)`` callable (the session lifecycle's).
"""

from __future__ import annotations

import logging
import uuid
from collections.abc import Awaitable, Callable
from datetime import datetime, timedelta

from sqlalchemy import select, update
from sqlalchemy.ext.asyncio import AsyncSession, async_sessionmaker

from ..models import AgentRow, KernelRow, SessionRow
from ..models.base import utcnow
from ..sessions.status import ON_AGENT
from .status import AgentStatus

log = logging.getLogger(__name__)

# The ``status_info`` of a session on a lost agent, and the reason it is terminated with.
AGENT_LOST = "agent-lost"

Terminate = Callable[[uuid.UUID, str], Awaitable[None]]


async def mark_lost_agents(db: async_sessionmaker[AsyncSession], timeout: float) -> list[str]:
    """Mark ALIVE agents without a heartbeat for ``timeout`` seconds as LOST, so nothing new is scheduled on
    them; returns their ids."""
    cutoff = utcnow() - timedelta(seconds=timeout)
    async with db() as s:
        stale = (
            (
                await s.execute(
                    select(AgentRow).where(AgentRow.status == AgentStatus.ALIVE, AgentRow.last_heartbeat < cutoff)
                )
            )
            .scalars()
            .all()
        )
        for agent in stale:
            agent.status = AgentStatus.LOST
            agent.lost_at = utcnow()
            agent.status_changed = agent.lost_at
            log.warning("agent %s stopped sending heartbeats; marked LOST", agent.id)
        lost = [agent.id for agent in stale]
        await s.commit()
    return lost


async def handle_lost_agents(db: async_sessionmaker[AsyncSession], terminate: Terminate, grace: float) -> list[str]:
    """Flag the running sessions of LOST agents with ``status_info = "agent-lost"`` (they may come back:
    a manager-side outage does not stop containers), unflag them when their agent is ALIVE again, and
    terminate them with reason ``agent-lost`` once the agent has been lost for ``grace`` seconds,
    freeing their slots. Returns the ids of the sessions terminated.

    It runs every few seconds, so it reads only the sessions concerned (on a LOST agent, or flagged), a
    few columns each, and writes only what changes (a write would also expire the session caches)."""
    now = utcnow()
    async with db() as s:
        # A session is as lost as its first lost agent (any kernel's: a cluster needs all of them).
        lost_since: dict[uuid.UUID, datetime] = {}
        flagged: set[uuid.UUID] = set()
        for sid, info, lost_at in (
            await s.execute(
                select(SessionRow.id, SessionRow.status_info, AgentRow.lost_at)
                .join(KernelRow, KernelRow.session_id == SessionRow.id)
                .join(AgentRow, AgentRow.id == KernelRow.agent)
                .where(SessionRow.status.in_(ON_AGENT), AgentRow.status == AgentStatus.LOST)
            )
        ).all():
            at = lost_at or now
            lost_since[sid] = min(lost_since.get(sid, at), at)
            if info == AGENT_LOST:
                flagged.add(sid)
        ended = [sid for sid, at in lost_since.items() if at + timedelta(seconds=grace) <= now]
        to_flag = [sid for sid, at in lost_since.items() if sid not in flagged and sid not in ended]
        to_unflag = [
            sid
            for sid in (
                await s.execute(
                    select(SessionRow.id).where(SessionRow.status.in_(ON_AGENT), SessionRow.status_info == AGENT_LOST)
                )
            ).scalars()
            if sid not in lost_since
        ]
        for ids, info in ((to_flag, AGENT_LOST), (to_unflag, "")):
            if ids:
                await s.execute(update(SessionRow).where(SessionRow.id.in_(ids)).values(status_info=info))
        for sid in to_flag:
            log.warning("session %s: an agent of its kernels is lost", sid)
        await s.commit()
    for sid in ended:
        log.warning("terminating session %s: its agent stayed lost for %.0fs", sid, grace)
        await terminate(sid, AGENT_LOST)
    return [str(sid) for sid in ended]


async def check_agents(db: async_sessionmaker[AsyncSession], terminate: Terminate, timeout: float) -> None:
    """The periodic liveness pass: mark agents whose heartbeats stopped for ``timeout`` seconds LOST, then
    handle the sessions on LOST agents, ending them after another ``timeout``."""
    await mark_lost_agents(db, timeout)
    await handle_lost_agents(db, terminate, grace=timeout)
