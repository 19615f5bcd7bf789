"""The scheduler's writes: a pass's plan applied in the pass's transaction. Placed sessions become SCHEDULED
(status columns from :mod:`..sessions.status`, the scheduler's record cleared), their kernels get their
agents, the agents' occupied slots grow; a session left waiting gets the reason in ``status_info`` and
``status_data.scheduler = {"predicates", "retries", "last_try"}``, rewritten only when it changed or grew old.
"""

from __future__ import annotations

import json
from datetime import datetime, timedelta
from typing import Any, cast

from sqlalchemy import Table, bindparam, update
from sqlalchemy.ext.asyncio import AsyncSession

from ai.backend.common.types import ResourceSlot

from ..json_sql import json_with_key, json_without_key
from ..models import AgentRow, KernelRow, SessionRow
from ..models.base import utcnow
from ..sessions.cluster import kernel_layout, per_kernel_slots
from ..sessions.status import SessionStatus as S
from ..sessions.status import check_transition, status_values
from .state import PassPlan

# A waiting session whose reason is unchanged gets its ``last_try`` rewritten at most this often (seconds).
REWRITE_WAITING_AFTER = 10.0


async def apply_plan(
    db: AsyncSession,
    plan: PassPlan,
    rows: dict[str, Any],
    agents: dict[str, AgentRow],
    now: datetime,
    *,
    owner: str | None = None,
) -> None:
    """Write the plan: placements (SCHEDULED, reasons cleared, as ``registry.set_status`` would) and
    the reasons of those left waiting, as plain table statements (the ORM's per-row bookkeeping costs
    more than the database for 10,000 rows): one UPDATE per kind of placement and chunk of sessions
    (their status history and data are changed by the database, see :mod:`..json_sql`), one per agent
    and kind of kernel, and one executemany for the reasons. ``rows`` and ``agents`` are the snapshot's;
    ``owner``: the scheduling manager, recorded as the placed sessions' ``manager_id`` (ADR 0014)."""
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
            kernel_updates.append(
                {
                    "b_session_id": session.id,
                    "b_host": k.hostname,
                    "agent": agent.id,
                    "agent_addr": agent.addr,
                    "occupied_slots": per_json,
                    "status": S.SCHEDULED,
                }
            )
        placed_by_slots.setdefault(slots_key, (slots, []))[1].append(session.id)
    for agent_id, total in occupied.items():
        agents[agent_id].occupied_slots = total.to_json()
    waiting_updates = []
    for w in plan.waiting:
        session = rows[w.session_id]
        previous = (session.status_data or {}).get("scheduler") or {}
        if _still_recorded(session.status_info, previous, w.reason[:256], w.predicates, now):
            continue
        waiting_updates.append(
            {
                "b_id": session.id,
                "status_info": w.reason[:256],
                "status_data": {
                    **(session.status_data or {}),
                    "scheduler": {
                        "predicates": list(w.predicates),
                        "retries": int(previous.get("retries", 0)) + 1,
                        "last_try": now.isoformat(),
                    },
                },
            }
        )
    kernels = cast(Table, KernelRow.__table__)
    sessions = cast(Table, SessionRow.__table__)
    dialect = db.get_bind().dialect.name
    for slots, ids in placed_by_slots.values():
        # PENDING → SCHEDULED (every row read was PENDING), as status_change would write it, in SQL.
        values = {
            **status_values(check_transition(S.PENDING, S.SCHEDULED), stamp, ""),
            "occupying_slots": slots,
            "status_history": json_with_key(sessions.c.status_history, S.SCHEDULED, stamp.isoformat(), dialect),
            "status_data": json_without_key(sessions.c.status_data, "scheduler", dialect),
        }
        if owner is not None:
            values["manager_id"] = owner
        for chunk in _chunks(ids):
            await db.execute(update(sessions).where(sessions.c.id.in_(chunk)).values(**values))
    if kernel_updates:
        await db.execute(
            update(kernels).where(
                kernels.c.session_id == bindparam("b_session_id"), kernels.c.cluster_hostname == bindparam("b_host")
            ),
            kernel_updates,
        )
    if waiting_updates:
        await db.execute(update(sessions).where(sessions.c.id == bindparam("b_id")), waiting_updates)


def _chunks(ids: list[Any], size: int = 1000) -> list[list[Any]]:
    """``ids`` in pieces small enough for one statement's parameters on either database."""
    return [ids[i : i + size] for i in range(0, len(ids), size)]


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
