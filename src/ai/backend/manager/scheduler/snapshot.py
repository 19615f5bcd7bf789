"""The scheduler's reads: one snapshot per pass of the pending sessions (locked), the alive schedulable agents
(locked), the owners' keypair policies and what their sessions hold, the scaling groups they may still use,
the images' architectures, the groups' settings and, for ``drf`` groups, each keypair's usage.

Only the columns a pass needs are read, as plain rows where possible: 10,000 pending sessions must load fast.
"""

from __future__ import annotations

import uuid
from dataclasses import dataclass
from typing import Any

from sqlalchemy import select
from sqlalchemy.ext.asyncio import AsyncSession

from ai.backend.common.types import ResourceSlot

from ..agents.status import AgentStatus
from ..models import AgentRow, ImageRow, KeyPairResourcePolicyRow, KeyPairRow, ScalingGroupRow, SessionRow
from ..quota import has_finite_limit, keypair_holdings, policy_limits
from ..scaling_groups import allowed_scaling_groups
from ..sessions.status import HOLDING
from ..sessions.status import SessionStatus as S
from .selectors import selection_strategy
from .state import DEFAULT_POLICY, AgentState, KeypairState, PendingSession, ScalingGroupPolicy

# What a pass reads of a pending session.
_PENDING_COLUMNS = (
    SessionRow.id,
    SessionRow.status_info,
    SessionRow.access_key,
    SessionRow.domain_name,
    SessionRow.group_id,
    SessionRow.scaling_group,
    SessionRow.image,
    SessionRow.requested_slots,
    SessionRow.starts_at,
    SessionRow.status_data,
    SessionRow.status_history,
    SessionRow.cluster_size,
    SessionRow.cluster_mode,
)


@dataclass
class Snapshot:
    """What one pass reads: the rows it will write back (by id) and the records the pure phases decide on."""

    rows: dict[str, Any]  # pending session id -> its row (the columns of ``_PENDING_COLUMNS``)
    agent_rows: dict[str, AgentRow]  # agent id -> its ORM row (locked; the pass updates ``occupied_slots``)
    pending: list[PendingSession]  # oldest first
    agents: list[AgentState]
    keypairs: dict[str, KeypairState]
    groups: dict[str, ScalingGroupPolicy]
    usage: dict[tuple[str, str], ResourceSlot]  # (scaling group, access key) -> occupied, ``drf`` groups only


async def read_snapshot(db: AsyncSession) -> Snapshot | None:
    """Read (and lock) what a pass needs in ``db``'s transaction; None when no session is pending."""
    # Only the columns a pass reads (plain rows, no ORM objects: 10,000 of them must load fast).
    rows = (
        await db.execute(
            select(*_PENDING_COLUMNS)
            .where(SessionRow.status == S.PENDING)
            .order_by(SessionRow.created_at)
            .with_for_update()
        )
    ).all()
    if not rows:
        return None
    agents = (
        (
            await db.execute(
                select(AgentRow)
                .where(AgentRow.status == AgentStatus.ALIVE, AgentRow.schedulable.is_(True))
                .with_for_update()
            )
        )
        .scalars()
        .all()
    )
    pending = await _pending_snapshot(db, rows)
    groups = {
        name: ScalingGroupPolicy(policy or DEFAULT_POLICY, selection_strategy(opts))
        for name, policy, opts in (
            await db.execute(select(ScalingGroupRow.name, ScalingGroupRow.scheduler, ScalingGroupRow.scheduler_opts))
        ).all()
    }
    # Only ``drf`` orders by usage: the other groups' holdings need not be read.
    drf = {p.scaling_group for p in pending if groups.get(p.scaling_group, ScalingGroupPolicy()).policy == "drf"}
    return Snapshot(
        rows={str(r.id): r for r in rows},
        agent_rows={a.id: a for a in agents},
        pending=pending,
        agents=[
            AgentState(
                a.id,
                a.scaling_group,
                ResourceSlot.from_json(a.available_slots),
                ResourceSlot.from_json(a.occupied_slots),
                a.architecture or "x86_64",
            )
            for a in agents
        ],
        keypairs=await _keypair_snapshot(db, rows),
        groups=groups,
        usage=await _usage_snapshot(db, drf),
    )


async def _pending_snapshot(db: AsyncSession, rows: Any) -> list[PendingSession]:
    """Pending rows as :class:`PendingSession`: with the image architecture and scaling group access."""
    arch = dict(
        (
            await db.execute(
                select(ImageRow.name, ImageRow.architecture).where(ImageRow.name.in_({r.image for r in rows}))
            )
        ).all()
    )
    allowed: dict[tuple[str, uuid.UUID, str], list[str]] = {}
    # Pending sessions mostly ask for the same few amounts: decode each once (a ResourceSlot is immutable).
    slots: dict[tuple[tuple[str, Any], ...], ResourceSlot] = {}
    out = []
    for r in rows:
        key = (r.domain_name, r.group_id, r.access_key)
        if key not in allowed:
            # Private groups count: the owner passed the creation checks; what matters is a removed association.
            allowed[key] = await allowed_scaling_groups(
                db, domain=r.domain_name, group_id=r.group_id, access_key=r.access_key, include_private=True
            )
        asked = tuple((r.requested_slots or {}).items())
        requested = slots.get(asked)
        if requested is None:
            requested = slots[asked] = ResourceSlot.from_json(r.requested_slots)
        out.append(
            PendingSession(
                str(r.id),
                r.access_key,
                r.scaling_group,
                requested,
                r.starts_at,
                arch.get(r.image),
                r.scaling_group in allowed[key],
                r.cluster_size or 1,
                r.cluster_mode or "single-node",
            )
        )
    return out


async def _keypair_snapshot(db: AsyncSession, rows: Any) -> dict[str, KeypairState]:
    """The policy and holdings of each owner of a pending session: the number of sessions it holds (one
    COUNT), and the slots they hold, summed only for keypairs whose policy bounds some slot (what an
    unbounded policy's sessions hold never matters)."""
    keys = {r.access_key for r in rows}
    asked: dict[str, set[str]] = {}
    for r in rows:
        asked.setdefault(r.access_key, set()).update(r.requested_slots or {})
    policies = (
        await db.execute(
            select(KeyPairRow.access_key, KeyPairResourcePolicyRow)
            .join(KeyPairResourcePolicyRow, KeyPairResourcePolicyRow.name == KeyPairRow.resource_policy)
            .where(KeyPairRow.access_key.in_(keys))
        )
    ).all()
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
    for sg, ak, occ in (
        await db.execute(
            select(SessionRow.scaling_group, SessionRow.access_key, SessionRow.occupying_slots).where(
                SessionRow.status.in_(HOLDING), SessionRow.scaling_group.in_(scaling_groups)
            )
        )
    ).all():
        usage[(sg, ak)] = usage.get((sg, ak), ResourceSlot()) + ResourceSlot.from_json(occ)
    return usage
