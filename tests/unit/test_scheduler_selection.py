"""Agent selection strategies, predicates and waiting reasons of the scheduler's pure decision functions."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta
from decimal import Decimal

from ai.backend.common.types import ResourceSlot
from ai.backend.manager.scheduler import (
    P_ARCH,
    P_CAPACITY,
    P_CONCURRENCY,
    P_KEYPAIR_SLOTS,
    P_RESERVED,
    P_SGROUP,
    AgentState,
    KeypairState,
    PendingSession,
    ScalingGroupPolicy,
    check_predicates,
    plan_pass,
    scheduler_opts_error,
    select_agent,
    selection_strategy,
)

NOW = datetime(2026, 1, 1, tzinfo=UTC)
G = 1024**3


def slots(cpu: float, mem_g: float, **extra: float) -> ResourceSlot:
    return ResourceSlot(
        {
            "cpu": Decimal(str(cpu)),
            "mem": Decimal(int(mem_g * G)),
            **{k.replace("_", "."): Decimal(str(v)) for k, v in extra.items()},
        }
    )


def agent(aid: str, cap: ResourceSlot, used: ResourceSlot | None = None, **kw: object) -> AgentState:
    return AgentState(aid, "default", cap, used or ResourceSlot(), **kw)  # type: ignore[arg-type]


def free_of(*agents: AgentState) -> dict[str, ResourceSlot]:
    return {a.id: a.available - a.occupied for a in agents}


def test_dispersed_picks_most_room_concentrated_least() -> None:
    big, half = agent("a", slots(8, 16)), agent("b", slots(8, 16), slots(4, 8))
    full = agent("c", slots(8, 16), slots(7, 15))
    ask = slots(1, 1)
    agents = [big, half, full]
    assert select_agent(agents, free_of(*agents), ask, "dispersed") is big
    assert select_agent(agents, free_of(*agents), ask, "concentrated") is full
    # An agent that does not fit is never chosen, whatever the strategy.
    assert select_agent(agents, free_of(*agents), slots(2, 1), "concentrated") is half


def test_ineligible_agents_and_unused_accelerators() -> None:
    lost = agent("a", slots(8, 16), alive=False)
    drained = agent("b", slots(8, 16), schedulable=False)
    assert select_agent([lost, drained], free_of(lost, drained), slots(1, 1), "dispersed") is None
    gpu, cpu = agent("gpu", slots(32, 64, cuda_device=4)), agent("cpu", slots(4, 8))
    both = [gpu, cpu]
    # A CPU-only session goes to the CPU node even though the GPU node has more room...
    assert select_agent(both, free_of(*both), slots(1, 1), "dispersed") is cpu
    # ...and a GPU session can only go to the GPU node.
    assert select_agent(both, free_of(*both), slots(1, 1, cuda_device=1), "concentrated") is gpu


def test_strategy_option() -> None:
    assert selection_strategy(None) == "dispersed"
    assert selection_strategy({"agent_selection_strategy": "concentrated"}) == "concentrated"
    assert scheduler_opts_error({"agent_selection_strategy": "roundrobin"}) is not None
    assert scheduler_opts_error({"agent_selection_strategy": "dispersed", "num_retries": 3}) is None


def test_predicates_and_reasons() -> None:
    kp = KeypairState(slots(4, 8), max_concurrent=2, using=slots(4, 2), active=1)
    later = NOW + timedelta(hours=1)
    s = PendingSession("s1", "AK", "default", slots(1, 1), starts_at=later, sgroup_allowed=False)
    failed = dict(check_predicates(s, kp, NOW))
    assert set(failed) == {P_RESERVED, P_SGROUP, P_KEYPAIR_SLOTS}
    assert failed[P_RESERVED] == f"reserved to start at {later.isoformat()}"
    assert failed[P_KEYPAIR_SLOTS] == "keypair resource policy limit: cpu 4 of 4 in use, 1 asked"
    full = KeypairState(slots(100, 100), max_concurrent=1, active=1)
    assert dict(check_predicates(PendingSession("s2", "AK", "default", slots(1, 1)), full, NOW)) == {
        P_CONCURRENCY: "keypair concurrency limit: 1 of 1 sessions active"
    }
    roomy = KeypairState(slots(4, 8), max_concurrent=2, using=slots(3, 2), active=1)
    assert check_predicates(PendingSession("s3", "AK", "default", slots(1, 1), starts_at=NOW), roomy, NOW) == []


def test_plan_reports_nearest_agent_and_never_fit() -> None:
    a = agent("i-a", slots(4, 4), slots(3, 1))
    b = agent("i-b", slots(4, 4), slots(1, 3))
    pending = [PendingSession("p1", "AK", "default", slots(2, 2)), PendingSession("p2", "AK", "default", slots(8, 1))]
    plan = plan_pass(pending, [a, b], {}, {}, {}, NOW)
    assert plan.placements == []
    why = {w.session_id: w for w in plan.waiting}
    assert why["p1"].predicates == (P_CAPACITY,)
    # i-a lacks 1 of 2 cpu (half the request), i-b 1g of 2g mem: a tie broken by id.
    assert why["p1"].reason == "no agent has enough free resources: best candidate i-a lacks cpu 1"
    assert why["p2"].reason.startswith("the request can never fit on any agent: asked cpu 8, mem 1g")


def test_plan_checks_architecture_and_keypair_totals_within_a_pass() -> None:
    arm = AgentState("i-arm", "default", slots(8, 8), architecture="aarch64")
    x86 = AgentState("i-x86", "default", slots(8, 8), architecture="x86_64")
    kp = {"AK": KeypairState(slots(3, 100), max_concurrent=10)}
    pending = [PendingSession(f"p{i}", "AK", "default", slots(1, 1), architecture="arm64") for i in range(4)]
    pending.append(PendingSession("amd", "BK", "default", slots(1, 1), architecture="amd64"))
    pending.append(PendingSession("riscv", "BK", "default", slots(1, 1), architecture="riscv64"))
    plan = plan_pass(pending, [arm, x86], kp, {"default": ScalingGroupPolicy("fifo", "dispersed")}, {}, NOW)
    assert plan.placements == [("p0", "i-arm"), ("p1", "i-arm"), ("p2", "i-arm"), ("amd", "i-x86")]
    why = {w.session_id: w for w in plan.waiting}
    assert why["p3"].predicates == (P_KEYPAIR_SLOTS,) and "cpu 3 of 3 in use" in why["p3"].reason
    assert why["riscv"].predicates == (P_ARCH,)


def _cluster(sid: str, cpu: float, size: int, mode: str) -> PendingSession:
    return PendingSession(sid, "AK", "default", slots(cpu * size, size), cluster_size=size, cluster_mode=mode)


def test_multi_node_cluster_spreads_over_agents_whole_or_not_at_all() -> None:
    agents = [agent("i-a", slots(2, 8)), agent("i-b", slots(2, 8)), agent("i-c", slots(1, 8))]
    plan = plan_pass(
        [
            _cluster("big", 2, 3, "multi-node"),  # three 2-CPU kernels: only two agents have room
            _cluster("pair", 2, 2, "multi-node"),
            _cluster("one", 1, 1, "single-node"),
        ],
        agents,
        {},
        {"default": ScalingGroupPolicy("fifo", "dispersed")},
        {},
        NOW,
    )
    assert plan.placements == [("pair", "i-a"), ("one", "i-c")]
    assert plan.kernel_agents == {"pair": ["i-a", "i-b"]}
    (waiting,) = plan.waiting
    assert waiting.session_id == "big" and waiting.predicates == (P_CAPACITY,)
    assert waiting.reason == (
        "the request can never fit: a multi-node cluster of 3 kernels of cpu 2, mem 1g "
        "each; the agents have room for 2 even when empty"
    )


def test_multi_node_cluster_waits_for_room_and_gives_back_a_partial_placement() -> None:
    # Room for two 1-CPU kernels now; a cluster of three waits, and the single session behind it still gets
    # the room its partial placement would have taken.
    agents = [agent("i-a", slots(2, 8), slots(1, 1)), agent("i-b", slots(2, 8), slots(1, 1))]
    plan = plan_pass(
        [
            _cluster("trio", 1, 3, "multi-node"),
            _cluster("s1", 1, 1, "single-node"),
            _cluster("s2", 1, 1, "single-node"),
        ],
        agents,
        {},
        {"default": ScalingGroupPolicy("fifo", "concentrated")},
        {},
        NOW,
    )
    assert [sid for sid, _ in plan.placements] == ["s1", "s2"]
    assert {aid for _, aid in plan.placements} == {"i-a", "i-b"}
    (waiting,) = plan.waiting
    assert (
        waiting.reason == "no room for a multi-node cluster of 3 kernels of cpu 1, mem 1g each: "
        "the agents have room for 2 now"
    )


def test_single_node_cluster_needs_one_agent_with_room_for_all() -> None:
    agents = [agent("i-a", slots(2, 8)), agent("i-b", slots(4, 8))]
    plan = plan_pass(
        [_cluster("trio", 1, 3, "single-node")],
        agents,
        {},
        {"default": ScalingGroupPolicy("fifo", "dispersed")},
        {},
        NOW,
    )
    assert plan.placements == [("trio", "i-b")] and plan.kernel_agents == {"trio": ["i-b"] * 3}
