"""Which scaling groups a caller may use (those associated with its domain, its group or its keypair),
and what the agents of a scaling group can hold."""

from __future__ import annotations

import json
import uuid

from sqlalchemy import Text, cast, func, select, union
from sqlalchemy.ext.asyncio import AsyncSession

from ai.backend.common.types import ResourceSlot

from .models import Agent, ScalingGroup, sgroups_for_domains, sgroups_for_groups, sgroups_for_keypairs


async def allowed_scaling_groups(
    db: AsyncSession, *, domain: str, group_id: uuid.UUID | None, access_key: str, include_private: bool = False,
) -> list[str]:
    """Names of the active scaling groups usable in this domain/group/keypair, sorted by name.

    Non-public scaling groups are left out unless ``include_private`` (for admins).
    """
    parts = [
        select(sgroups_for_domains.c.scaling_group.label("name")).where(sgroups_for_domains.c.domain == domain),
        select(sgroups_for_keypairs.c.scaling_group.label("name")).where(
            sgroups_for_keypairs.c.access_key == access_key
        ),
    ]
    if group_id is not None:
        parts.append(
            select(sgroups_for_groups.c.scaling_group.label("name")).where(sgroups_for_groups.c.group == group_id)
        )
    names = union(*parts).subquery()
    q = select(ScalingGroup.name).where(ScalingGroup.name.in_(select(names.c.name)), ScalingGroup.is_active.is_(True))
    if not include_private:
        q = q.where(ScalingGroup.is_public.is_(True))
    return list((await db.execute(q.order_by(ScalingGroup.name))).scalars().all())


async def agent_capacities(db: AsyncSession, scaling_group: str) -> list[ResourceSlot]:
    """The ``available_slots`` of every agent that ever joined ``scaling_group``, one entry per agent.

    Agents of a group are mostly alike: the query groups them by their slots as stored, so each distinct
    capacity is decoded once and the entries of alike agents are the same object."""
    rows = (await db.execute(
        select(cast(Agent.available_slots, Text), func.count())
        .where(Agent.scaling_group == scaling_group)
        .group_by(cast(Agent.available_slots, Text))
    )).all()
    out: list[ResourceSlot] = []
    for text, n in rows:
        out.extend([ResourceSlot.from_json(json.loads(text) if text else None)] * int(n))
    return out


async def offered_slot_names(db: AsyncSession) -> set[str]:
    """Slot names some ALIVE agent offers (cpu, mem and its compute plugins' slots)."""
    texts = (await db.execute(
        select(cast(Agent.available_slots, Text)).where(Agent.status == "ALIVE").distinct()
    )).scalars()
    return {str(k) for text in texts if text for k in (json.loads(text) or {})}
