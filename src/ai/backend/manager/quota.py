"""Keypair resource policy limits as resource slots."""

from __future__ import annotations

from collections.abc import Iterable
from decimal import Decimal

from ai.backend.common.types import SLOT_TYPES, ResourceSlot

from .models import KeyPairResourcePolicy


def policy_limits(policy: KeyPairResourcePolicy, slot_names: Iterable[str] = ()) -> ResourceSlot:
    """The policy's total slots; slots it leaves out are unlimited (``Infinity``) under ``UNLIMITED``
    and zero under ``LIMITED``, for every known slot and every name in ``slot_names``."""
    limits = dict(ResourceSlot.from_json(policy.total_resource_slots))
    filler = Decimal("Infinity") if policy.default_for_unspecified != "LIMITED" else Decimal(0)
    for name in {*SLOT_TYPES, *slot_names}:
        limits.setdefault(name, filler)
    return ResourceSlot(limits)
