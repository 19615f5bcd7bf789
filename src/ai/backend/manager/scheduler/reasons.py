"""Waiting reasons: the one-line text a session left PENDING shows in ``status_info`` when no agent has
room for it (what it lacks on the nearest agent, or that it can never fit), and slot amounts for people."""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from decimal import Decimal

from ai.backend.common.types import SLOT_TYPES, BinarySize, ResourceSlot

from ..sessions.cluster import kernels_fitting, per_kernel_slots
from .policies import dominant_share
from .state import AgentState, PendingSession


def format_amount(slot: str, value: Decimal) -> str:
    """A slot amount for people: sizes with binary suffixes, counts as plain numbers."""
    if value.is_infinite():
        return "unlimited"
    if SLOT_TYPES.get(slot, "bytes" if slot.endswith(".mem") else "count") == "bytes":
        return str(BinarySize(int(value)))
    return ResourceSlot({slot: value}).to_json()[slot]


def format_slots(slots: Mapping[str, Decimal]) -> str:
    """The non-zero amounts of ``slots`` for people, by slot name ("nothing" when none)."""
    return ", ".join(f"{k} {format_amount(k, v)}" for k, v in sorted(slots.items()) if v > 0) or "nothing"


def shortfall_reason(
    candidates: Sequence[AgentState], free: Mapping[str, ResourceSlot], requested: ResourceSlot
) -> str:
    """Why no candidate fits: "can never fit" when none has the capacity even empty, else the nearest one."""
    if not candidates:
        return "no alive schedulable agent in the scaling group"
    if not any(requested.fits_in(a.available) for a in candidates):
        big = max(candidates, key=lambda a: (dominant_share(a.available, requested), a.id))
        return (
            "the request can never fit on any agent: asked "
            + format_slots(requested)
            + f"; the largest agent {big.id} has "
            + format_slots(big.available)
        )

    def lacking(a: AgentState) -> dict[str, Decimal]:
        f = free[a.id]
        return {k: v - f.get(k, Decimal(0)) for k, v in requested.items() if v > f.get(k, Decimal(0))}

    def gap(a: AgentState) -> Decimal:
        return max((v / requested[k] for k, v in lacking(a).items()), default=Decimal(0))

    best = min(candidates, key=lambda a: (gap(a), a.id))
    lack = ", ".join(f"{k} {format_amount(k, v)}" for k, v in sorted(lacking(best).items()))
    return f"no agent has enough free resources: best candidate {best.id} lacks {lack}"


def cluster_shortfall(candidates: Sequence[AgentState], free: Mapping[str, ResourceSlot], s: PendingSession) -> str:
    """:func:`shortfall_reason` for a session; a multi-node cluster counts the kernels there is room for."""
    if s.cluster_size <= 1 or s.cluster_mode != "multi-node" or not candidates:
        return shortfall_reason(candidates, free, s.requested)
    per = per_kernel_slots(s.requested, s.cluster_size)
    now = sum(kernels_fitting(per, free[a.id]) for a in candidates)
    ever = sum(kernels_fitting(per, a.available) for a in candidates)
    what = f"a multi-node cluster of {s.cluster_size} kernels of {format_slots(per)} each"
    if ever < s.cluster_size:
        return f"the request can never fit: {what}; the agents have room for {ever} even when empty"
    return f"no room for {what}: the agents have room for {now} now"
