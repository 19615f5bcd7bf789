"""Which scaling groups a caller may use (those associated with its domain, its group or its keypair),
and what the agents of a scaling group can hold.

These run on every session creation and scheduling pass, so their statements are built once, with bound
parameters: building a statement and its cache key again costs more than running it on SQLite.
"""

from __future__ import annotations

import json
import time
import uuid
from collections.abc import Awaitable, Callable
from typing import Any

from sqlalchemy import Select, Text, bindparam, cast, func, select, union
from sqlalchemy.ext.asyncio import AsyncSession

from ai.backend.common.types import ResourceSlot

from .agents.status import AgentStatus
from .models import AgentRow, ScalingGroupRow, sgroups_for_domains, sgroups_for_groups, sgroups_for_keypairs


def _allowed_query(with_group: bool, include_private: bool) -> Select[Any]:
    parts = [
        select(sgroups_for_domains.c.scaling_group.label("name")).where(
            sgroups_for_domains.c.domain == bindparam("domain")
        ),
        select(sgroups_for_keypairs.c.scaling_group.label("name")).where(
            sgroups_for_keypairs.c.access_key == bindparam("access_key")
        ),
    ]
    if with_group:
        parts.append(
            select(sgroups_for_groups.c.scaling_group.label("name")).where(
                sgroups_for_groups.c.group == bindparam("group_id")
            )
        )
    names = union(*parts).subquery()
    q = select(ScalingGroupRow.name).where(
        ScalingGroupRow.name.in_(select(names.c.name)), ScalingGroupRow.is_active.is_(True)
    )
    if not include_private:
        q = q.where(ScalingGroupRow.is_public.is_(True))
    return q.order_by(ScalingGroupRow.name)


# (group given, private groups included) -> the statement
_ALLOWED = {(g, p): _allowed_query(g, p) for g in (False, True) for p in (False, True)}
_SLOTS_TEXT = cast(AgentRow.available_slots, Text)
_CAPACITIES = (
    select(_SLOTS_TEXT, func.count()).where(AgentRow.scaling_group == bindparam("scaling_group")).group_by(_SLOTS_TEXT)
)
_OFFERED = select(_SLOTS_TEXT).where(AgentRow.status == AgentStatus.ALIVE).distinct()


async def allowed_scaling_groups(
    db: AsyncSession,
    *,
    domain: str,
    group_id: uuid.UUID | None,
    access_key: str,
    include_private: bool = False,
) -> list[str]:
    """Names of the active scaling groups usable in this domain/group/keypair, sorted by name.

    Non-public scaling groups are left out unless ``include_private`` (for admins).
    """
    params: dict[str, Any] = {"domain": domain, "access_key": access_key}
    if group_id is not None:
        params["group_id"] = group_id
    q = _ALLOWED[(group_id is not None, include_private)]
    return list((await db.execute(q, params)).scalars().all())


async def agent_capacities(db: AsyncSession, scaling_group: str) -> list[ResourceSlot]:
    """The ``available_slots`` of every agent that ever joined ``scaling_group``, one entry per agent.

    Agents of a group are mostly alike: the query groups them by their slots as stored, so each distinct
    capacity is decoded once and the entries of alike agents are the same object."""
    out: list[ResourceSlot] = []
    for text, n in (await db.execute(_CAPACITIES, {"scaling_group": scaling_group})).all():
        out.extend([ResourceSlot.from_json(json.loads(text) if text else None)] * int(n))
    return out


class CapacityCache:
    """:func:`agent_capacities` per scaling group, kept for ``ttl`` seconds or until :meth:`invalidate`.

    Agents rows change with every heartbeat and placement, so table generations cannot tell when a
    capacity changed; the heartbeat handler calls :meth:`invalidate` when an agent joins or its capacity
    or scaling group changes, and what another manager process registered is seen within ``ttl``."""

    def __init__(self, ttl: float = 2.0) -> None:
        self.ttl = ttl
        self._version = 0
        self._entries: dict[str, tuple[float, int, list[ResourceSlot]]] = {}

    def invalidate(self) -> None:
        self._version += 1
        self._entries.clear()

    async def get(self, scaling_group: str, load: Callable[[], Awaitable[list[ResourceSlot]]]) -> list[ResourceSlot]:
        now = time.monotonic()
        hit = self._entries.get(scaling_group)
        if hit is not None and hit[1] == self._version and now - hit[0] < self.ttl:
            return hit[2]
        version = self._version
        value = await load()
        if version == self._version:  # not invalidated while loading
            self._entries[scaling_group] = (now, version, value)
        return value


async def offered_slot_names(db: AsyncSession) -> set[str]:
    """Slot names some ALIVE agent offers (cpu, mem and its compute plugins' slots)."""
    texts = (await db.execute(_OFFERED)).scalars()
    return {str(k) for text in texts if text for k in (json.loads(text) or {})}
