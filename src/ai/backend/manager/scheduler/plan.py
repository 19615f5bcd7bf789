"""One scheduling pass as a pure function over snapshots (no database, no clock of its own), tying the
phases together per scaling group: QueueSort (:mod:`.policies`) picks the next session, Filter
(:mod:`.predicates`) checks it and narrows the agents, Score (:mod:`.selectors`) picks its agent, and
:mod:`.reasons` words why a session waits.

:func:`plan_pass` answers which session goes to which agent and, for every session left waiting, the
predicates it failed and a one-line reason for ``status_info``. It tracks what it places, so within one
pass no agent exceeds its capacity and no keypair exceeds its policy's total slots or concurrent sessions.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from datetime import datetime
from typing import Any

from ai.backend.common.types import ResourceSlot

from ..sessions.cluster import per_kernel_slots
from .policies import pop_next
from .predicates import P_ARCH, P_CAPACITY, architecture, check_predicates
from .reasons import cluster_shortfall
from .selectors import AgentPicker
from .state import AgentState, KeypairState, PassPlan, PendingSession, ScalingGroupPolicy, Waiting


def plan_pass(
    pending: Sequence[PendingSession],
    agents: Sequence[AgentState],
    keypairs: Mapping[str, KeypairState],
    groups: Mapping[str, ScalingGroupPolicy],
    usage: Mapping[tuple[str, str], ResourceSlot],
    now: datetime,
) -> PassPlan:
    """Decide one scheduling pass. ``pending`` is oldest first; ``usage`` maps (scaling group, access key)
    to what that keypair occupies in the group (for ``drf``). A session that cannot start does not block
    the ones behind it."""
    plan = PassPlan()
    free = {a.id: a.available - a.occupied for a in agents}
    kp_state = dict(keypairs)
    queues: dict[str, list[PendingSession]] = {}
    for s in pending:
        queues.setdefault(s.scaling_group, []).append(s)
    for sgroup, queue in queues.items():
        settings = groups.get(sgroup, ScalingGroupPolicy())
        members = [a for a in agents if a.scaling_group == sgroup and a.eligible]
        capacity = sum((a.available for a in members), ResourceSlot())
        group_usage = {ak: slots for (sg, ak), slots in usage.items() if sg == sgroup}
        picker = AgentPicker(free, settings.strategy)
        by_arch: dict[str | None, list[AgentState]] = {}
        # Why a request does not fit scans every candidate; a backlog asks the same thing again and again
        # with nothing placed in between: (candidates, request, free-slots state) -> reason.
        shortfalls: dict[tuple[Any, ...], str] = {}
        while queue:
            s = pop_next(queue, settings.policy, group_usage, capacity)
            kp = kp_state.get(s.access_key)
            failed = check_predicates(s, kp, now)
            candidates: Sequence[AgentState] = members
            if not failed:
                candidates, arch_reason = architecture(s, members, by_arch)
                if arch_reason is not None:
                    failed.append((P_ARCH, arch_reason))
            chosen = None if failed else _place(picker, candidates, s)
            if chosen is None:
                if not failed:
                    key = (
                        id(candidates),
                        tuple(sorted(s.requested.items())),
                        s.cluster_size,
                        s.cluster_mode,
                        picker.changes,
                    )
                    if key not in shortfalls:
                        shortfalls[key] = cluster_shortfall(candidates, free, s)
                    failed.append((P_CAPACITY, shortfalls[key]))
                plan.waiting.append(Waiting(s.id, tuple(n for n, _ in failed), "; ".join(r for _, r in failed)))
                continue
            if s.cluster_size > 1:
                plan.kernel_agents[s.id] = chosen
            if kp is not None:
                kp_state[s.access_key] = KeypairState(
                    kp.limit, kp.max_concurrent, kp.using + s.requested, kp.active + 1
                )
            group_usage[s.access_key] = group_usage.get(s.access_key, ResourceSlot()) + s.requested
            plan.placements.append((s.id, chosen[0]))
    return plan


def _place(picker: AgentPicker, candidates: Sequence[AgentState], s: PendingSession) -> list[str] | None:
    """Place every kernel of ``s`` (recorded in the picker), or none: the agent of each kernel in layout order.
    Single-node sessions go whole to one agent; multi-node ones kernel by kernel."""
    if s.cluster_size <= 1 or s.cluster_mode != "multi-node":
        agent = picker.pick(candidates, s.requested)
        if agent is None:
            return None
        picker.placed(agent.id, s.requested)
        return [agent.id] * max(s.cluster_size, 1)
    per = per_kernel_slots(s.requested, s.cluster_size)
    chosen: list[str] = []
    for _ in range(s.cluster_size):
        agent = picker.pick(candidates, per)
        if agent is None:
            for aid in chosen:
                picker.unplaced(aid, per)
            return None
        picker.placed(agent.id, per)
        chosen.append(agent.id)
    return chosen
