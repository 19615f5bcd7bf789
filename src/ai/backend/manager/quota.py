"""Keypair resource policy limits as resource slots, and what a keypair's sessions hold against them."""

from __future__ import annotations

from collections.abc import Collection, Iterable
from decimal import Decimal

from sqlalchemy import bindparam, func, select
from sqlalchemy.ext.asyncio import AsyncSession

from ai.backend.common.types import SLOT_TYPES, ResourceSlot

from .models import KeyPairResourcePolicyRow, SessionRow

# Built once (expanding parameters for the key and status lists): these run on every creation and pass.
_COUNTS = (
    select(SessionRow.access_key, func.count())
    .where(
        SessionRow.access_key.in_(bindparam("keys", expanding=True)),
        SessionRow.status.in_(bindparam("statuses", expanding=True)),
    )
    .group_by(SessionRow.access_key)
)
_SLOTS = select(SessionRow.access_key, SessionRow.requested_slots).where(
    SessionRow.access_key.in_(bindparam("keys", expanding=True)),
    SessionRow.status.in_(bindparam("statuses", expanding=True)),
)


def policy_limits(policy: KeyPairResourcePolicyRow, slot_names: Iterable[str] = ()) -> ResourceSlot:
    """The policy's total slots; slots it leaves out are unlimited (``Infinity``) under ``UNLIMITED``
    and zero under ``LIMITED``, for every known slot and every name in ``slot_names``."""
    limits = dict(ResourceSlot.from_json(policy.total_resource_slots))
    filler = Decimal("Infinity") if policy.default_for_unspecified != "LIMITED" else Decimal(0)
    for name in {*SLOT_TYPES, *slot_names}:
        limits.setdefault(name, filler)
    return ResourceSlot(limits)


def has_finite_limit(limit: ResourceSlot) -> bool:
    """Whether any slot of ``limit`` is bounded; when none is, what sessions hold never matters."""
    return any(v.is_finite() for v in limit.values())


async def keypair_holdings(
    db: AsyncSession,
    access_keys: Collection[str],
    statuses: Collection[str],
    need_slots: Collection[str],
) -> dict[str, tuple[ResourceSlot, int]]:
    """For each of ``access_keys`` with sessions in ``statuses``: the sum of their requested slots and
    their number. The count is one aggregate query; the slots are summed (one row per session) only for
    the keys in ``need_slots`` (those whose policy bounds a slot), the others get empty slots."""
    if not access_keys:
        return {}
    out: dict[str, tuple[ResourceSlot, int]] = {}
    statuses = list(statuses)
    for ak, n in (await db.execute(_COUNTS, {"keys": list(access_keys), "statuses": statuses})).all():
        out[ak] = (ResourceSlot(), int(n))
    summed = [ak for ak in need_slots if ak in out]
    if summed:
        sums: dict[str, ResourceSlot] = {}
        for ak, slots in (await db.execute(_SLOTS, {"keys": summed, "statuses": statuses})).all():
            sums[ak] = sums.get(ak, ResourceSlot()) + ResourceSlot.from_json(slots)
        for ak, total in sums.items():
            out[ak] = (total, out[ak][1])
    return out
