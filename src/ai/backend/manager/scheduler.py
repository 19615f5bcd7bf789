"""The scheduler: places PENDING sessions on agents with free capacity, per scaling group in the order
of the group's ``scheduler`` policy: ``fifo`` (oldest first), ``lifo`` (newest first) or ``drf``
(dominant resource fairness: the session of the access key with the smallest dominant share of the
group's capacity first, oldest first among equals), on the agent the group's
``scheduler_opts.agent_selection_strategy`` picks (``dispersed`` by default, or ``concentrated``).
A session that cannot start does not block the ones behind it.

Each pass reads a snapshot (pending sessions, agents, the owners' keypair policies and what their
sessions hold, the scaling groups they may still use, the images' architectures), decides with the pure
functions of :mod:`.scheduling`, and writes every placement in one transaction, with the pending rows
and the agents locked, so an agent is never overcommitted. A session left waiting gets the reason in
``status_info`` and ``status_data.scheduler = {"predicates", "retries", "last_try"}``; both are cleared
when it is placed. Passes are triggered by events (a new session, a session ending, an agent joining)
with a periodic safety pass.

:func:`handle_lost_agents` is the other half of agent health: the sessions of an agent that stopped
sending heartbeats are flagged, then terminated after a grace period.
"""

from __future__ import annotations

import asyncio
import gc
import json
import logging
import time
import uuid
from datetime import datetime, timedelta
from typing import Any, cast

from sqlalchemy import Table, bindparam, select, update
from sqlalchemy.ext.asyncio import AsyncSession

from ai.backend.common.types import ResourceSlot

from .cluster import kernel_layout, per_kernel_slots
from .json_sql import json_with_key, json_without_key
from .models import Agent, Image, Kernel, KeyPair, KeyPairResourcePolicy, ScalingGroup, SessionRow
from .models.base import utcnow
from .quota import has_finite_limit, keypair_holdings, policy_limits
from .registry import SessionRegistry
from .scheduling import (
    POLICIES,
    AgentState,
    GroupSettings,
    KeypairState,
    PassPlan,
    PendingSession,
    dominant_share,
    plan_pass,
    pop_next,
    selection_strategy,
)
from .sessions.status import HOLDING, ON_AGENT, check_transition, status_values
from .sessions.status import SessionStatus as S
from .sgroups import allowed_scaling_groups

__all__ = ["AGENT_LOST", "POLICIES", "Scheduler", "dominant_share", "handle_lost_agents", "pop_next"]

log = logging.getLogger(__name__)

AGENT_LOST = "agent-lost"
# A waiting session whose reason is unchanged gets its ``last_try`` rewritten at most this often (seconds).
REWRITE_WAITING_AFTER = 10.0
# What a pass reads of a pending session.
_PENDING_COLUMNS = (SessionRow.id, SessionRow.status_info, SessionRow.access_key, SessionRow.domain_name,
                    SessionRow.group_id, SessionRow.scaling_group, SessionRow.image, SessionRow.requested_slots,
                    SessionRow.starts_at, SessionRow.status_data, SessionRow.status_history,
                    SessionRow.cluster_size, SessionRow.cluster_mode)


class Scheduler:
    """Runs scheduling passes whenever ``registry.schedule_event`` is set (and every few seconds)."""

    # After a pass of d seconds the next one waits min(GAP_FACTOR * d, MAX_GAP): triggers meanwhile (every
    # creation is one) are coalesced into that one pass, so passes take at most about a quarter of the
    # manager's time under a burst, however many agents each pass reads; an idle manager still runs a
    # pass as soon as it is triggered, a few milliseconds at most after the previous one.
    GAP_FACTOR = 3.0
    MAX_GAP = 1.0

    def __init__(self, registry: SessionRegistry, interval: float = 5.0) -> None:
        self.registry = registry
        self.interval = interval

    async def run(self) -> None:
        """Run passes when triggered (``registry.schedule_event``) or every ``interval`` seconds, one at a
        time; triggers during a pass or its gap make one more pass."""
        ev = self.registry.schedule_event
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
        try:
            return await self._pass()
        finally:
            if paused:
                gc.enable()

    async def _pass(self) -> list[str]:
        reg = self.registry
        now = utcnow()
        async with reg.db() as db:
            # Only the columns a pass reads (plain rows, no ORM objects: 10,000 of them must load fast).
            rows = (
                await db.execute(
                    select(*_PENDING_COLUMNS).where(SessionRow.status == S.PENDING).order_by(SessionRow.created_at)
                    .with_for_update()
                )
            ).all()
            if not rows:
                return []
            agents = (
                await db.execute(
                    select(Agent).where(Agent.status == "ALIVE", Agent.schedulable.is_(True)).with_for_update()
                )
            ).scalars().all()
            pending = await _pending_snapshot(db, rows)
            groups = {name: GroupSettings(policy or "fifo", selection_strategy(opts)) for name, policy, opts in (
                await db.execute(select(ScalingGroup.name, ScalingGroup.scheduler, ScalingGroup.scheduler_opts))
            ).all()}
            # Only ``drf`` orders by usage: the other groups' holdings need not be read.
            drf = {p.scaling_group for p in pending if groups.get(p.scaling_group, GroupSettings()).policy == "drf"}
            plan = plan_pass(
                pending,
                [AgentState(a.id, a.scaling_group, ResourceSlot.from_json(a.available_slots),
                            ResourceSlot.from_json(a.occupied_slots), a.architecture or "x86_64") for a in agents],
                await _keypair_snapshot(db, rows),
                groups,
                await _usage_snapshot(db, drf),
                now,
            )
            await self._apply(db, plan, {str(r.id): r for r in rows}, {a.id: a for a in agents}, now)
            await db.commit()
        placed = [sid for sid, _ in plan.placements]
        for sid in placed:
            reg.spawn(reg.start_session(uuid.UUID(sid)))
        return placed

    async def _apply(self, db: AsyncSession, plan: PassPlan, rows: dict[str, Any],
                     agents: dict[str, Agent], now: datetime) -> None:
        """Write the plan: placements (SCHEDULED, reasons cleared, as ``registry.set_status`` would) and
        the reasons of those left waiting, as plain table statements (the ORM's per-row bookkeeping costs
        more than the database for 10,000 rows): one UPDATE per kind of placement and chunk of sessions
        (their status history and data are changed by the database, see :mod:`.json_sql`), one per agent
        and kind of kernel, and one executemany for the reasons."""
        # Occupied slots summed per agent and written once, not re-serialized per placement.
        occupied: dict[str, ResourceSlot] = {}
        # Placed sessions by the slots they now occupy: one UPDATE per group (and chunk).
        placed_by_slots: dict[str, tuple[dict[str, str], list[Any]]] = {}
        kernel_updates: list[dict[str, Any]] = []
        stamp = utcnow()
        # Sessions mostly ask for the same few amounts: decode and split each distinct request once.
        decoded: dict[tuple[Any, ...], tuple[dict[str, str], ResourceSlot, dict[str, str], str]] = {}
        for sid, agent_id in plan.placements:
            session = rows[sid]
            per_agent = plan.kernel_agents.get(sid, [agent_id])
            key = (tuple(sorted((session.requested_slots or {}).items())), len(per_agent))
            if key not in decoded:
                requested = ResourceSlot.from_json(session.requested_slots)
                per_kernel = per_kernel_slots(requested, len(per_agent))
                slots_json, per_json = requested.to_json(), per_kernel.to_json()
                decoded[key] = (slots_json, per_kernel, per_json, json.dumps(slots_json, sort_keys=True))
            slots, per, per_json, slots_key = decoded[key]
            for k, kernel_agent in zip(kernel_layout(len(per_agent)), per_agent, strict=True):
                agent = agents[kernel_agent]
                occupied[agent.id] = occupied.get(agent.id, ResourceSlot.from_json(agent.occupied_slots)) + per
                kernel_updates.append({"b_session_id": session.id, "b_host": k.hostname, "agent": agent.id,
                                       "agent_addr": agent.addr, "occupied_slots": per_json,
                                       "status": S.SCHEDULED})
            placed_by_slots.setdefault(slots_key, (slots, []))[1].append(session.id)
        for agent_id, total in occupied.items():
            agents[agent_id].occupied_slots = total.to_json()
        waiting_updates = []
        for w in plan.waiting:
            session = rows[w.session_id]
            previous = (session.status_data or {}).get("scheduler") or {}
            if _still_recorded(session.status_info, previous, w.reason[:256], w.predicates, now):
                continue
            waiting_updates.append({"b_id": session.id, "status_info": w.reason[:256], "status_data": {
                **(session.status_data or {}), "scheduler": {
                    "predicates": list(w.predicates), "retries": int(previous.get("retries", 0)) + 1,
                    "last_try": now.isoformat()}}})
        kernels = cast(Table, Kernel.__table__)
        sessions = cast(Table, SessionRow.__table__)
        dialect = db.get_bind().dialect.name
        for slots, ids in placed_by_slots.values():
            # PENDING → SCHEDULED (every row read was PENDING), as status_change would write it, in SQL.
            values = {
                **status_values(check_transition(S.PENDING, S.SCHEDULED), stamp, ""), "occupying_slots": slots,
                "status_history": json_with_key(sessions.c.status_history, S.SCHEDULED, stamp.isoformat(), dialect),
                "status_data": json_without_key(sessions.c.status_data, "scheduler", dialect),
            }
            for chunk in _chunks(ids):
                await db.execute(update(sessions).where(sessions.c.id.in_(chunk)).values(**values))
        if kernel_updates:
            await db.execute(update(kernels).where(kernels.c.session_id == bindparam("b_session_id"),
                                                   kernels.c.cluster_hostname == bindparam("b_host")), kernel_updates)
        if waiting_updates:
            await db.execute(update(sessions).where(sessions.c.id == bindparam("b_id")), waiting_updates)


def _chunks(ids: list[Any], size: int = 1000) -> list[list[Any]]:
    """``ids`` in pieces small enough for one statement's parameters on either database."""
    return [ids[i:i + size] for i in range(0, len(ids), size)]


def _still_recorded(info: str | None, previous: dict[str, Any], reason: str, predicates: Any, now: datetime) -> bool:
    """Whether a waiting session's row already says what this pass found, recently enough: a backlog of
    thousands that cannot start would otherwise be rewritten by every pass (``retries`` then counts the
    passes that recorded a try, and ``last_try`` is at most ``REWRITE_WAITING_AFTER`` old)."""
    if info != reason or previous.get("predicates") != list(predicates):
        return False
    try:
        last = datetime.fromisoformat(str(previous.get("last_try")))
    except ValueError:
        return False
    return now - last < timedelta(seconds=REWRITE_WAITING_AFTER)


async def _pending_snapshot(db: AsyncSession, rows: Any) -> list[PendingSession]:
    """Pending rows as :class:`PendingSession`: with the image architecture and scaling group access."""
    arch = dict((await db.execute(
        select(Image.name, Image.architecture).where(Image.name.in_({r.image for r in rows}))
    )).all())
    allowed: dict[tuple[str, uuid.UUID, str], list[str]] = {}
    # Pending sessions mostly ask for the same few amounts: decode each once (a ResourceSlot is immutable).
    slots: dict[tuple[tuple[str, Any], ...], ResourceSlot] = {}
    out = []
    for r in rows:
        key = (r.domain_name, r.group_id, r.access_key)
        if key not in allowed:
            # Private groups count: the owner passed the creation checks; what matters is a removed association.
            allowed[key] = await allowed_scaling_groups(db, domain=r.domain_name, group_id=r.group_id,
                                                        access_key=r.access_key, include_private=True)
        asked = tuple((r.requested_slots or {}).items())
        requested = slots.get(asked)
        if requested is None:
            requested = slots[asked] = ResourceSlot.from_json(r.requested_slots)
        out.append(PendingSession(str(r.id), r.access_key, r.scaling_group, requested,
                                  r.starts_at, arch.get(r.image), r.scaling_group in allowed[key],
                                  r.cluster_size or 1, r.cluster_mode or "single-node"))
    return out


async def _keypair_snapshot(db: AsyncSession, rows: Any) -> dict[str, KeypairState]:
    """The policy and holdings of each owner of a pending session: the number of sessions it holds (one
    COUNT), and the slots they hold, summed only for keypairs whose policy bounds some slot (what an
    unbounded policy's sessions hold never matters)."""
    keys = {r.access_key for r in rows}
    asked: dict[str, set[str]] = {}
    for r in rows:
        asked.setdefault(r.access_key, set()).update(r.requested_slots or {})
    policies = (await db.execute(
        select(KeyPair.access_key, KeyPairResourcePolicy)
        .join(KeyPairResourcePolicy, KeyPairResourcePolicy.name == KeyPair.resource_policy)
        .where(KeyPair.access_key.in_(keys))
    )).all()
    limits = {ak: policy_limits(policy, asked.get(ak, ())) for ak, policy in policies}
    holding = await keypair_holdings(db, keys, HOLDING, [ak for ak, lim in limits.items() if has_finite_limit(lim)])
    out = {}
    for ak, policy in policies:
        using, n = holding.get(ak, (ResourceSlot(), 0))
        out[ak] = KeypairState(limits[ak], policy.max_concurrent_sessions, using, n)
    return out


async def _usage_snapshot(db: AsyncSession, scaling_groups: set[str]) -> dict[tuple[str, str], ResourceSlot]:
    """What each keypair occupies in each of ``scaling_groups`` (those scheduled by ``drf``)."""
    usage: dict[tuple[str, str], ResourceSlot] = {}
    if not scaling_groups:
        return usage
    for sg, ak, occ in (await db.execute(
        select(SessionRow.scaling_group, SessionRow.access_key, SessionRow.occupying_slots)
        .where(SessionRow.status.in_(HOLDING), SessionRow.scaling_group.in_(scaling_groups))
    )).all():
        usage[(sg, ak)] = usage.get((sg, ak), ResourceSlot()) + ResourceSlot.from_json(occ)
    return usage


# ---- lost agents ---------------------------------------------------------------------------------------



async def handle_lost_agents(registry: SessionRegistry, grace: float) -> list[str]:
    """Flag the running sessions of LOST agents with ``status_info = "agent-lost"`` (they may come back:
    a manager-side outage does not stop containers), unflag them when their agent is ALIVE again, and
    terminate them with reason ``agent-lost`` once the agent has been lost for ``grace`` seconds,
    freeing their slots. Returns the ids of the sessions terminated.

    It runs every few seconds, so it reads only the sessions concerned (on a LOST agent, or flagged), a
    few columns each, and writes only what changes (a write would also expire the session caches)."""
    now = utcnow()
    async with registry.db() as db:
        # A session is as lost as its first lost agent (any kernel's: a cluster needs all of them).
        lost_since: dict[uuid.UUID, datetime] = {}
        flagged: set[uuid.UUID] = set()
        for sid, info, lost_at in (await db.execute(
            select(SessionRow.id, SessionRow.status_info, Agent.lost_at)
            .join(Kernel, Kernel.session_id == SessionRow.id).join(Agent, Agent.id == Kernel.agent)
            .where(SessionRow.status.in_(ON_AGENT), Agent.status == "LOST")
        )).all():
            at = lost_at or now
            lost_since[sid] = min(lost_since.get(sid, at), at)
            if info == AGENT_LOST:
                flagged.add(sid)
        ended = [sid for sid, at in lost_since.items() if at + timedelta(seconds=grace) <= now]
        to_flag = [sid for sid, at in lost_since.items() if sid not in flagged and sid not in ended]
        to_unflag = [sid for sid in (await db.execute(
            select(SessionRow.id).where(SessionRow.status.in_(ON_AGENT), SessionRow.status_info == AGENT_LOST)
        )).scalars() if sid not in lost_since]
        for ids, info in ((to_flag, AGENT_LOST), (to_unflag, "")):
            if ids:
                await db.execute(update(SessionRow).where(SessionRow.id.in_(ids)).values(status_info=info))
        for sid in to_flag:
            log.warning("session %s: an agent of its kernels is lost", sid)
        await db.commit()
    for sid in ended:
        log.warning("terminating session %s: its agent stayed lost for %.0fs", sid, grace)
        await registry.mark_terminated(sid, AGENT_LOST)
    return [str(sid) for sid in ended]
