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


def test_waiting_reasons_follow_the_placements_made_before_them() -> None:
    # A has 2 cores free, B 1. s1 (3 cores) waits on A; s2 (2 cores) then takes A; s3 (3 cores, the same
    # request as s1) must be told about the agents as they are now (B is the nearest), not s1's answer.
    from datetime import UTC, datetime

    from ai.backend.manager.scheduler import AgentState, KeypairState, PendingSession, plan_pass

    def slots(cpu: int) -> ResourceSlot:
        return ResourceSlot({"cpu": Decimal(cpu), "mem": Decimal(1024)})

    agents = [
        AgentState("A", "default", slots(4), ResourceSlot({"cpu": Decimal(2)})),
        AgentState("B", "default", slots(4), ResourceSlot({"cpu": Decimal(3)})),
    ]
    asked = {"s1": 3, "s2": 2, "s3": 3, "s4": 3}
    pending = [PendingSession(sid, "AK", "default", ResourceSlot({"cpu": Decimal(c)})) for sid, c in asked.items()]
    plan = plan_pass(pending, agents, {"AK": KeypairState(ResourceSlot(), 100)}, {}, {}, datetime.now(UTC))
    assert plan.placements == [("s2", "A")]
    reasons = {w.session_id: w.reason for w in plan.waiting}
    assert "best candidate A lacks cpu 1" in reasons["s1"], reasons
    assert "best candidate B lacks cpu 2" in reasons["s3"], reasons
    assert reasons["s4"] == reasons["s3"]  # nothing placed in between: the same answer
