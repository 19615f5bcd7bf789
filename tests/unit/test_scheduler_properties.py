"""Property tests of the scheduler's decisions (hypothesis).

A small simulator plays random sequences of session creations, terminations and scheduling passes
through :func:`plan_pass`, carrying the placements over from pass to pass as the database would:

* no agent is ever over its capacity and no keypair over its policy's total slots or concurrency,
  whatever the requests (single kernels and clusters of either mode), policies, agent sizes, scheduling
  order or selection strategy; a single-node cluster lands whole on one agent, a multi-node one is placed
  whole or not at all;
* with ``drf``, two users who keep submitting equal sessions to a saturated group end up within one
  session of each other's dominant share, even when one of them held the whole group at the start.
"""

from __future__ import annotations

import itertools
from dataclasses import dataclass, field
from datetime import UTC, datetime
from decimal import Decimal

from hypothesis import given, settings
from hypothesis import strategies as st

from ai.backend.common.types import ResourceSlot
from ai.backend.manager.scheduler import (
    POLICIES,
    STRATEGIES,
    AgentState,
    KeypairState,
    PendingSession,
    ScalingGroupPolicy,
    dominant_share,
    plan_pass,
)

NOW = datetime(2026, 1, 1, tzinfo=UTC)
SLOTS = ("cpu", "mem", "cuda.device")


def slot(values: tuple[int, int, int]) -> ResourceSlot:
    return ResourceSlot({k: Decimal(v) for k, v in zip(SLOTS, values, strict=True)})


amounts = st.tuples(st.integers(0, 6), st.integers(0, 8), st.integers(0, 2))


@dataclass
class Sim:
    agents: list[AgentState]
    policies: dict[str, KeypairState]  # limits only; holdings are derived from ``running``
    settings: ScalingGroupPolicy
    pending: list[PendingSession] = field(default_factory=list)
    # sid -> (access key, [(agent, slots) per kernel], total slots)
    running: dict[str, tuple[str, list[tuple[str, ResourceSlot]], ResourceSlot]] = field(default_factory=dict)
    seq: int = 0

    def create(self, ak: str, requested: ResourceSlot, size: int = 1, mode: str = "single-node") -> str:
        """A session of ``size`` kernels of ``requested`` each."""
        self.seq += 1
        sid = f"s{self.seq:04d}"
        total = ResourceSlot({k: v * size for k, v in requested.items()})
        self.pending.append(PendingSession(sid, ak, "default", total, cluster_size=size, cluster_mode=mode))
        return sid

    def occupied(self, agent_id: str) -> ResourceSlot:
        return sum((r for _, kernels, _ in self.running.values() for a, r in kernels if a == agent_id), ResourceSlot())

    def holding(self, ak: str) -> tuple[ResourceSlot, int]:
        mine = [total for k, _, total in self.running.values() if k == ak]
        return sum(mine, ResourceSlot()), len(mine)

    def schedule(self) -> list[str]:
        agents = [AgentState(a.id, a.scaling_group, a.available, self.occupied(a.id)) for a in self.agents]
        keypairs = {ak: KeypairState(p.limit, p.max_concurrent, *self.holding(ak)) for ak, p in self.policies.items()}
        usage = {("default", ak): self.holding(ak)[0] for ak in self.policies}
        plan = plan_pass(self.pending, agents, keypairs, {"default": self.settings}, usage, NOW)
        by_id = {s.id: s for s in self.pending}
        for sid, agent_id in plan.placements:
            s = by_id.pop(sid)
            per_agent = plan.kernel_agents.get(sid, [agent_id])
            assert len(per_agent) == s.cluster_size and per_agent[0] == agent_id
            if s.cluster_mode == "single-node":
                assert set(per_agent) == {agent_id}, "a single-node cluster lands on one agent"
            per = ResourceSlot({k: v / s.cluster_size for k, v in s.requested.items()})
            self.running[sid] = (s.access_key, [(a, per) for a in per_agent], s.requested)
        assert {w.session_id for w in plan.waiting} == set(by_id), "every pending session is placed or explained"
        self.pending = [s for s in self.pending if s.id in by_id]
        return [sid for sid, _ in plan.placements]

    def check_invariants(self) -> None:
        for a in self.agents:
            assert self.occupied(a.id).fits_in(a.available), f"agent {a.id} overcommitted"
        for ak, p in self.policies.items():
            using, n = self.holding(ak)
            assert not using.exceeding(p.limit), f"keypair {ak} over its total slots"
            assert n <= p.max_concurrent, f"keypair {ak} over its concurrency limit"


ops = st.lists(
    st.one_of(
        st.tuples(st.just("create"), st.sampled_from(["AK1", "AK2", "AK3"]), amounts),
        st.tuples(
            st.sampled_from(["single-node", "multi-node"]),
            st.tuples(st.sampled_from(["AK1", "AK2", "AK3"]), st.integers(2, 4)),
            amounts,
        ),
        st.tuples(st.just("terminate"), st.integers(0, 1000), st.just((0, 0, 0))),
        st.tuples(st.just("schedule"), st.just(0), st.just((0, 0, 0))),
    ),
    max_size=60,
)


@settings(max_examples=150, deadline=None)
@given(
    caps=st.lists(amounts, min_size=1, max_size=4),
    limits=st.lists(st.tuples(amounts, st.integers(0, 4)), min_size=3, max_size=3),
    policy=st.sampled_from(POLICIES),
    strategy=st.sampled_from(STRATEGIES),
    steps=ops,
)
def test_no_sequence_overcommits_an_agent_or_a_policy(
    caps: list[tuple[int, int, int]],
    limits: list[tuple[tuple[int, int, int], int]],
    policy: str,
    strategy: str,
    steps: list[tuple[str, object, tuple[int, int, int]]],
) -> None:
    sim = Sim(
        [AgentState(f"i-{i}", "default", slot(c)) for i, c in enumerate(caps)],
        {f"AK{i + 1}": KeypairState(slot(lim), n) for i, (lim, n) in enumerate(limits)},
        ScalingGroupPolicy(policy, strategy),
    )
    for op, arg, amount in steps:
        if op == "create":
            sim.create(str(arg), slot(amount))
        elif op in ("single-node", "multi-node"):
            ak, size = arg  # type: ignore[misc]
            sim.create(ak, slot(amount), size, op)
        elif op == "terminate" and sim.running:
            ids = sorted(sim.running)
            del sim.running[ids[int(str(arg)) % len(ids)]]
        else:
            sim.schedule()
        sim.check_invariants()
    sim.schedule()
    sim.check_invariants()


@settings(max_examples=60, deadline=None)
@given(
    units=st.lists(st.integers(1, 6), min_size=1, max_size=3),  # agent sizes, in sessions
    size=amounts.filter(lambda a: a[0] + a[1] > 0),
    lifetimes=st.lists(st.integers(1, 4), min_size=1, max_size=30),
)
def test_drf_converges_to_fair_shares(units: list[int], size: tuple[int, int, int], lifetimes: list[int]) -> None:
    one = slot(size)
    caps = [slot(tuple(u * v for v in size)) for u in units]  # type: ignore[arg-type]
    unlimited = KeypairState(ResourceSlot(), 10**6)
    sim = Sim(
        [AgentState(f"i-{i}", "default", c) for i, c in enumerate(caps)],
        {"A": unlimited, "B": unlimited},
        ScalingGroupPolicy("drf", "dispersed"),
    )
    total = sum(caps, ResourceSlot())
    ends: dict[str, int] = {}
    life = itertools.cycle(lifetimes)
    # A fills the whole group before B submits anything.
    for _ in range(sum(units)):
        sim.create("A", one)
    for sid in sim.schedule():
        ends[sid] = next(life)
    rounds = max(lifetimes) + 2 * sum(units) + 2
    for t in range(1, rounds + 1):
        for ak in ("A", "B"):  # both keep a queue
            while sum(1 for s in sim.pending if s.access_key == ak) < sum(units):
                sim.create(ak, one)
        for sid in [s for s, end in ends.items() if end <= t]:
            del sim.running[sid], ends[sid]
        for sid in sim.schedule():
            ends[sid] = t + next(life)
        sim.check_invariants()
        assert len(sim.running) == sum(units), "the group stays saturated"
    share = {ak: dominant_share(sim.holding(ak)[0], total) for ak in ("A", "B")}
    # Equal sessions: within one session's share means within one session (exact, no rounding).
    held = {ak: sim.holding(ak)[1] for ak in ("A", "B")}
    assert abs(held["A"] - held["B"]) <= 1, (held, share)
