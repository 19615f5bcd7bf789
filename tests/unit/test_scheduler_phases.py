"""The scheduler's named phases: every predicate of ``PREDICATES`` runs and is recorded by its name, a new
predicate is one function and one line in the list, and every queue policy is served through its table."""

from __future__ import annotations

from collections.abc import Mapping
from datetime import UTC, datetime, timedelta
from decimal import Decimal

import pytest

from ai.backend.common.types import ResourceSlot
from ai.backend.manager.scheduler import (
    PREDICATES,
    QUEUE_POLICIES,
    AgentState,
    KeypairState,
    PendingSession,
    ScalingGroupPolicy,
    check_predicates,
    plan_pass,
    pop_next,
)
from ai.backend.manager.scheduler import predicates as predicates_module
from ai.backend.manager.scheduler import state as state_module

NOW = datetime(2026, 1, 1, tzinfo=UTC)
ONE = ResourceSlot({"cpu": Decimal(1)})
ROOMY = KeypairState(ResourceSlot({"cpu": Decimal(100)}), 100)

# For each predicate, by name: a session and its keypair that fail that predicate alone.
FAILING_ALONE: dict[str, tuple[PendingSession, KeypairState]] = {
    "reserved_time": (PendingSession("s", "AK", "default", ONE, starts_at=NOW + timedelta(hours=1)), ROOMY),
    "scaling_group_access": (PendingSession("s", "AK", "default", ONE, sgroup_allowed=False), ROOMY),
    "keypair_concurrency_limit": (
        PendingSession("s", "AK", "default", ONE),
        KeypairState(ResourceSlot({"cpu": Decimal(100)}), 1, active=1),
    ),
    "keypair_resource_limit": (
        PendingSession("s", "AK", "default", ONE),
        KeypairState(ResourceSlot({"cpu": Decimal(1)}), 100, using=ONE),
    ),
}


def _plan(session: PendingSession, keypair: KeypairState) -> tuple[tuple[str, ...], str]:
    agents = [AgentState("i-1", "default", ResourceSlot({"cpu": Decimal(8)}))]
    plan = plan_pass([session], agents, {"AK": keypair}, {}, {}, NOW)
    assert not plan.placements and len(plan.waiting) == 1
    return plan.waiting[0].predicates, plan.waiting[0].reason


def test_every_predicate_runs_and_is_recorded_by_its_name() -> None:
    assert [p.__name__ for p in PREDICATES] == list(FAILING_ALONE)
    for predicate in PREDICATES:
        session, keypair = FAILING_ALONE[predicate.__name__]
        reason = predicate(session, keypair, NOW)
        assert reason, predicate.__name__
        assert check_predicates(session, keypair, NOW) == [(predicate.__name__, reason)]
        assert _plan(session, keypair) == ((predicate.__name__,), reason)
        # The others pass the same session.
        assert all(p(session, keypair, NOW) is None for p in PREDICATES if p is not predicate)


def test_a_new_predicate_is_one_function_and_one_line(monkeypatch: pytest.MonkeyPatch) -> None:
    def no_cpu_over_four(session: PendingSession, keypair: KeypairState | None, now: datetime) -> str | None:
        return "more than 4 CPUs" if session.requested.get("cpu", Decimal(0)) > 4 else None

    monkeypatch.setattr(predicates_module, "PREDICATES", [*PREDICATES, no_cpu_over_four])
    big = PendingSession("big", "AK", "default", ResourceSlot({"cpu": Decimal(5)}))
    assert _plan(big, ROOMY) == (("no_cpu_over_four",), "more than 4 CPUs")
    session, keypair = FAILING_ALONE["reserved_time"]
    late_and_big = PendingSession("s", "AK", "default", big.requested, starts_at=session.starts_at)
    predicates, reason = _plan(late_and_big, keypair)
    assert predicates == ("reserved_time", "no_cpu_over_four") and reason.endswith("; more than 4 CPUs")


class _Queued:
    def __init__(self, name: str, access_key: str) -> None:
        self.name, self.access_key = name, access_key


CAP = ResourceSlot({"cpu": Decimal(4), "mem": Decimal(4096)})
# AK_A already holds half the memory, AK_B a quarter of the CPUs: drf serves AK_B first.
USAGE = {"AK_A": ResourceSlot({"mem": Decimal(2048)}), "AK_B": ResourceSlot({"cpu": Decimal(1)})}
# The order each policy of the table serves a queue of a1, a2, b1 (oldest first) in, usage unchanged.
EXPECTED = {"fifo": ["a1", "a2", "b1"], "lifo": ["b1", "a2", "a1"], "drf": ["b1", "a1", "a2"]}


def _drain(policy: str, usage: Mapping[str, ResourceSlot]) -> list[str]:
    queue = [_Queued("a1", "AK_A"), _Queued("a2", "AK_A"), _Queued("b1", "AK_B")]
    return [pop_next(queue, policy, usage, CAP).name for _ in range(3)]


@pytest.mark.parametrize("policy", list(QUEUE_POLICIES))
def test_each_queue_policy_through_the_table(policy: str) -> None:
    assert set(QUEUE_POLICIES) == set(EXPECTED)
    queue = [_Queued("a1", "AK_A"), _Queued("a2", "AK_A"), _Queued("b1", "AK_B")]
    assert queue[QUEUE_POLICIES[policy](queue, USAGE, CAP)].name == EXPECTED[policy][0]
    assert _drain(policy, USAGE) == EXPECTED[policy]
    # plan_pass serves the group's queue by the same table: with room for one session, the first one wins.
    pending = [PendingSession(q.name, q.access_key, "default", ONE) for q in queue]
    agents = [AgentState("i-1", "default", CAP, occupied=ResourceSlot({"cpu": Decimal(3)}))]
    usage = {("default", ak): slots for ak, slots in USAGE.items()}
    plan = plan_pass(pending, agents, {}, {"default": ScalingGroupPolicy(policy)}, usage, NOW)
    assert plan.placements == [(EXPECTED[policy][0], "i-1")]


def test_an_unknown_policy_is_served_as_the_default() -> None:
    assert state_module.DEFAULT_POLICY == "fifo"
    assert _drain("no-such-policy", USAGE) == EXPECTED["fifo"]


def test_a_new_policy_is_one_function_and_one_line(monkeypatch: pytest.MonkeyPatch) -> None:
    def by_name(queue: list[_Queued], usage: Mapping[str, ResourceSlot], capacity: ResourceSlot) -> int:
        return min(range(len(queue)), key=lambda i: queue[i].name[::-1])

    monkeypatch.setitem(QUEUE_POLICIES, "by-name-reversed", by_name)
    assert _drain("by-name-reversed", {}) == ["a1", "b1", "a2"]
