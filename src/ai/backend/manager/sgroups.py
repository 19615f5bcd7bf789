"""Which scaling groups a caller may use: those associated with its domain, its group or its keypair."""

from __future__ import annotations

import uuid

from sqlalchemy import select, union
from sqlalchemy.ext.asyncio import AsyncSession

from .models import ScalingGroup, sgroups_for_domains, sgroups_for_groups, sgroups_for_keypairs


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
