"""The scheduling orders of a scaling group: fifo, lifo and dominant resource fairness (drf)."""

from __future__ import annotations

from decimal import Decimal

from ai.backend.common.types import ResourceSlot
from ai.backend.manager.models import SessionRow
from ai.backend.manager.scheduler import dominant_share, pop_next


def _queue() -> list[SessionRow]:
    # Oldest first, as the scheduler loads them.
    return [SessionRow(name=n, access_key=ak) for n, ak in (("a1", "AK_A"), ("a2", "AK_A"), ("b1", "AK_B"))]


def _drain(policy: str, usage: dict[str, ResourceSlot], capacity: ResourceSlot, grow: bool = False) -> list[str]:
    q, order = _queue(), []
    while q:
        s = pop_next(q, policy, usage, capacity)
        order.append(s.name)
        if grow:  # what the scheduler does after placing a session
            usage[s.access_key] = usage.get(s.access_key, ResourceSlot()) + ResourceSlot({"cpu": Decimal(1)})
    return order


CAP = ResourceSlot({"cpu": Decimal(4), "mem": Decimal(4096)})


def test_fifo_and_lifo() -> None:
    assert _drain("fifo", {}, CAP) == ["a1", "a2", "b1"]
    assert _drain("lifo", {}, CAP) == ["b1", "a2", "a1"]


def test_drf_serves_the_smallest_dominant_share_first() -> None:
    # AK_A already holds half the memory (its dominant share), AK_B a quarter of the CPUs.
    usage = {"AK_A": ResourceSlot({"cpu": Decimal(0), "mem": Decimal(2048)}), "AK_B": ResourceSlot({"cpu": Decimal(1)})}
    assert _drain("drf", usage, CAP) == ["b1", "a1", "a2"]
    # With equal shares the oldest goes first, and shares grow as sessions are placed.
    assert _drain("drf", {}, CAP, grow=True) == ["a1", "b1", "a2"]


def test_dominant_share() -> None:
    assert dominant_share(None, CAP) == 0
    assert dominant_share(ResourceSlot({"cpu": Decimal(1), "mem": Decimal(3072)}), CAP) == Decimal("0.75")
    # A slot the group has none of does not count (no division by zero).
    assert dominant_share(ResourceSlot({"cuda.device": Decimal(1)}), CAP) == 0
