"""The scheduler's decisions as pure functions over snapshots (no database, no clock of their own).

:func:`plan_pass` takes the pending sessions of every scaling group (oldest first), the agents, the
keypairs' policy state and the groups' settings, and answers which session goes to which agent and,
for every session left waiting, the predicates it failed and a one-line reason for ``status_info``.
It tracks what it places, so within one pass no agent exceeds its capacity and no keypair exceeds
its policy's total slots or concurrent sessions; :mod:`.scheduler` reads the snapshot and writes the
result in one transaction.

Agent selection per scaling group (``scheduler_opts.agent_selection_strategy``):

* ``dispersed`` (the default): the fitting agent with the most room left after the placement;
* ``concentrated``: the fitting agent with the least room left (best fit, filling agents up).

"Room" is the dominant remaining share: the largest ``free / capacity`` after the placement over the
slots the session asks for. Agents with accelerator slot types the session does not use come last
either way, so plain CPU sessions do not take up GPU nodes. Agents not ``ALIVE``, not schedulable or of
another architecture than the image are never chosen.
"""

from __future__ import annotations

import heapq
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from datetime import datetime
from decimal import Decimal
from typing import Any, Protocol, TypeVar

from ai.backend.common.types import SLOT_TYPES, BinarySize, ResourceSlot

from .cluster import kernels_fitting, per_kernel_slots

POLICIES = ("fifo", "lifo", "drf")
STRATEGIES = ("concentrated", "dispersed")
DEFAULT_STRATEGY = "dispersed"
STRATEGY_KEY = "agent_selection_strategy"

# Predicate names recorded in ``status_data.scheduler.predicates``.
P_RESERVED = "reserved_time"
P_SGROUP = "scaling_group_access"
P_CONCURRENCY = "keypair_concurrency_limit"
P_KEYPAIR_SLOTS = "keypair_resource_limit"
P_ARCH = "architecture"
P_CAPACITY = "agent_capacity"

_ARCH_ALIASES = {"amd64": "x86_64", "x86-64": "x86_64", "arm64": "aarch64", "armv8": "aarch64"}


def normalize_arch(arch: str | None) -> str | None:
    """Docker's and the kernel's spelling of a CPU architecture made comparable (``amd64`` = ``x86_64``)."""
    if not arch:
        return None
    a = arch.lower()
    return _ARCH_ALIASES.get(a, a)


def selection_strategy(opts: Mapping[str, Any] | None) -> str:
    """The agent selection strategy a scaling group's ``scheduler_opts`` names (default ``dispersed``)."""
    value = (opts or {}).get(STRATEGY_KEY)
    return value if value in STRATEGIES else DEFAULT_STRATEGY


def scheduler_opts_error(opts: Mapping[str, Any]) -> str | None:
    """Why ``opts`` is not a valid ``scheduler_opts`` (only the keys the scheduler reads are checked)."""
    if STRATEGY_KEY in opts and opts[STRATEGY_KEY] not in STRATEGIES:
        return (f"scheduler_opts.{STRATEGY_KEY} must be one of {', '.join(STRATEGIES)}; "
                f"got {opts[STRATEGY_KEY]!r}.")
    return None


def format_amount(slot: str, value: Decimal) -> str:
    """A slot amount for people: sizes with binary suffixes, counts as plain numbers."""
    if value.is_infinite():
        return "unlimited"
    if SLOT_TYPES.get(slot, "bytes" if slot.endswith(".mem") else "count") == "bytes":
        return str(BinarySize(int(value)))
    return ResourceSlot({slot: value}).to_json()[slot]


# ---- snapshots --------------------------------------------------------------------------------------


class _Keyed(Protocol):
    @property
    def access_key(self) -> str: ...


Q = TypeVar("Q", bound=_Keyed)


@dataclass(frozen=True)
class AgentState:
    """An agent as a pass sees it: total capacity and what is occupied at the start of the pass."""

    id: str
    scaling_group: str
    available: ResourceSlot
    occupied: ResourceSlot = field(default_factory=ResourceSlot)
    architecture: str = "x86_64"
    alive: bool = True
    schedulable: bool = True

    @property
    def eligible(self) -> bool:
        return self.alive and self.schedulable


@dataclass(frozen=True)
class PendingSession:
    """A PENDING session: what it asks for and what its predicates need."""

    id: str
    access_key: str
    scaling_group: str
    requested: ResourceSlot
    starts_at: datetime | None = None
    architecture: str | None = None  # of the image, when recorded
    sgroup_allowed: bool = True  # the owner may still use the scaling group
    cluster_size: int = 1  # kernels; ``requested`` is their total
    cluster_mode: str = "single-node"  # all kernels on one agent, or each placed on its own (multi-node)


@dataclass(frozen=True)
class KeypairState:
    """A keypair's policy and what its sessions already hold (SCHEDULED and later, PENDING excluded)."""

    limit: ResourceSlot  # the policy's totals; slots it leaves unlimited are absent or Infinity
    max_concurrent: int
    using: ResourceSlot = field(default_factory=ResourceSlot)
    active: int = 0


@dataclass(frozen=True)
class GroupSettings:
    policy: str = "fifo"
    strategy: str = DEFAULT_STRATEGY


@dataclass(frozen=True)
class Waiting:
    """A session the pass leaves PENDING: the failed predicates and the reason shown in ``status_info``."""

    session_id: str
    predicates: tuple[str, ...]
    reason: str


@dataclass
class PassPlan:
    placements: list[tuple[str, str]] = field(default_factory=list)  # (session id, main1's agent id), in order
    waiting: list[Waiting] = field(default_factory=list)
    # Multi-kernel sessions: the agent of each kernel, in layout order (main1, sub1, ...).
    kernel_agents: dict[str, list[str]] = field(default_factory=dict)


# ---- session order ----------------------------------------------------------------------------------


def dominant_share(using: Mapping[str, Decimal] | None, capacity: Mapping[str, Decimal]) -> Decimal:
    """The largest fraction of any slot of ``capacity`` that ``using`` occupies (0 for nothing)."""
    shares = [v / capacity[k] for k, v in (using or {}).items() if capacity.get(k, Decimal(0)) > 0]
    return max(shares, default=Decimal(0))


def pop_next(queue: list[Q], policy: str, usage: Mapping[str, ResourceSlot], capacity: ResourceSlot) -> Q:
    """Remove and return the session ``policy`` serves next from ``queue`` (sorted oldest first).

    For ``drf``, ``usage`` maps access keys to what they occupy in the scaling group now.
    """
    if policy == "lifo":
        return queue.pop()
    if policy == "drf":
        best = min(range(len(queue)), key=lambda i: (dominant_share(usage.get(queue[i].access_key), capacity), i))
        return queue.pop(best)
    return queue.pop(0)


# ---- agent selection --------------------------------------------------------------------------------


_ZERO = Decimal(0)


def _remaining_share(agent: AgentState, free: ResourceSlot, requested: ResourceSlot) -> Decimal:
    """The largest ``(free - requested) / capacity`` over the slots asked for (all of the agent's when the
    request asks for none), 0 when there is none. Plain loops: it runs once per agent and placement."""
    available = agent.available
    asked = [k for k, v in requested.items() if v > 0] or list(available)
    best = _ZERO
    found = False
    for k in asked:
        cap = available.get(k, _ZERO)
        if cap > 0:
            share = (free.get(k, _ZERO) - requested.get(k, _ZERO)) / cap
            if not found or share > best:
                best, found = share, True
    return best


def _unused_accelerators(agent: AgentState, requested: ResourceSlot) -> int:
    """How many slot types beyond cpu/mem the agent has and the session does not ask for."""
    n = 0
    for k, v in agent.available.items():
        if k not in SLOT_TYPES and v > 0 and requested.get(k, _ZERO) <= 0:
            n += 1
    return n


def select_agent(
    candidates: Sequence[AgentState], free: Mapping[str, ResourceSlot], requested: ResourceSlot, strategy: str
) -> AgentState | None:
    """The agent ``strategy`` picks among ``candidates`` that fit ``requested`` in their ``free`` slots."""
    fitting = [a for a in candidates if a.eligible and requested.fits_in(free[a.id])]
    if not fitting:
        return None
    sign = -1 if strategy == "dispersed" else 1
    return min(fitting, key=lambda a: (_unused_accelerators(a, requested),
                                       sign * _remaining_share(a, free[a.id], requested), a.id))


def _selection_key(agent: AgentState, free: ResourceSlot, requested: ResourceSlot,
                   sign: int) -> tuple[int, Decimal, str]:
    """What :func:`select_agent` minimizes: accelerators left unused, then the (signed) room, then the id."""
    return (_unused_accelerators(agent, requested), sign * _remaining_share(agent, free, requested), agent.id)


class AgentPicker:
    """:func:`select_agent` for a whole pass, without scanning every agent for every session.

    Within a pass free slots only shrink, and only on the agent just chosen. One heap of selection keys
    per kind of request (the requested slots and the candidate list) holds the candidates; placements are
    logged, and a heap re-keys the agents placed on since it last looked before choosing. An agent that
    does not fit is dropped from that heap (it cannot fit later in the pass). The choice is exactly
    :func:`select_agent`'s: the same keys, the same tie-break on the agent id.
    """

    def __init__(self, free: dict[str, ResourceSlot], strategy: str) -> None:
        self.free = free
        self.sign = -1 if strategy == "dispersed" else 1
        self._log: list[str] = []  # agent ids in the order placements changed them
        self.changes = 0  # placements and undos so far: free slots are unchanged while this is
        self._agents: dict[str, AgentState] = {}
        # (request signature) -> [heap of (key, agent id), current key by agent id, position in _log]
        self._heaps: dict[tuple[Any, ...], tuple[list[tuple[tuple[int, Decimal, str], str]],
                                                 dict[str, tuple[int, Decimal, str]], list[int]]] = {}

    def pick(self, candidates: Sequence[AgentState], requested: ResourceSlot) -> AgentState | None:
        sig = (tuple(sorted(requested.items())), id(candidates))
        entry = self._heaps.get(sig)
        if entry is None:
            by_id = {a.id: a for a in candidates if a.eligible}
            keys = {a.id: _selection_key(a, self.free[a.id], requested, self.sign) for a in by_id.values()
                    if requested.fits_in(self.free[a.id])}
            heap = [(k, aid) for aid, k in keys.items()]
            heapq.heapify(heap)
            entry = (heap, keys, [len(self._log)])
            self._heaps[sig] = entry
            self._agents.update(by_id)
        heap, keys, seen = entry
        for aid in self._log[seen[0]:]:
            if aid in keys:
                agent = self._agents[aid]
                if requested.fits_in(self.free[aid]):
                    keys[aid] = _selection_key(agent, self.free[aid], requested, self.sign)
                    heapq.heappush(heap, (keys[aid], aid))
                else:
                    del keys[aid]
        seen[0] = len(self._log)
        while heap:
            key, aid = heap[0]
            if keys.get(aid) != key:
                heapq.heappop(heap)  # superseded by a newer key, or dropped
                continue
            return self._agents[aid]
        return None

    def placed(self, agent_id: str, requested: ResourceSlot) -> None:
        """Record that ``requested`` now occupies ``agent_id``."""
        self.free[agent_id] = self.free[agent_id] - requested
        self._log.append(agent_id)
        self.changes += 1

    def unplaced(self, agent_id: str, requested: ResourceSlot) -> None:
        """Undo :meth:`placed` (a cluster that did not fit whole). Free slots grew, which the heaps do not
        expect, so they are rebuilt on the next pick."""
        self.free[agent_id] = self.free[agent_id] + requested
        self._heaps.clear()
        self.changes += 1


def shortfall_reason(candidates: Sequence[AgentState], free: Mapping[str, ResourceSlot],
                     requested: ResourceSlot) -> str:
    """Why no candidate fits: "can never fit" when none has the capacity even empty, else the nearest one."""
    if not candidates:
        return "no alive schedulable agent in the scaling group"
    if not any(requested.fits_in(a.available) for a in candidates):
        big = max(candidates, key=lambda a: (dominant_share(a.available, requested), a.id))
        return ("the request can never fit on any agent: asked "
                + _fmt_slots(requested) + f"; the largest agent {big.id} has " + _fmt_slots(big.available))

    def lacking(a: AgentState) -> dict[str, Decimal]:
        f = free[a.id]
        return {k: v - f.get(k, Decimal(0)) for k, v in requested.items() if v > f.get(k, Decimal(0))}

    def gap(a: AgentState) -> Decimal:
        return max((v / requested[k] for k, v in lacking(a).items()), default=Decimal(0))

    best = min(candidates, key=lambda a: (gap(a), a.id))
    lack = ", ".join(f"{k} {format_amount(k, v)}" for k, v in sorted(lacking(best).items()))
    return f"no agent has enough free resources: best candidate {best.id} lacks {lack}"


def _fmt_slots(slots: Mapping[str, Decimal]) -> str:
    return ", ".join(f"{k} {format_amount(k, v)}" for k, v in sorted(slots.items()) if v > 0) or "nothing"


# ---- predicates -------------------------------------------------------------------------------------


def check_predicates(session: PendingSession, keypair: KeypairState | None, now: datetime) -> list[tuple[str, str]]:
    """The predicates ``session`` fails now, as (name, reason) pairs; empty when it may start."""
    failed: list[tuple[str, str]] = []
    if session.starts_at is not None and session.starts_at > now:
        failed.append((P_RESERVED, f"reserved to start at {session.starts_at.isoformat()}"))
    if not session.sgroup_allowed:
        failed.append((P_SGROUP, f"scaling group {session.scaling_group!r} is no longer available to the owner"))
    if keypair is not None:
        if keypair.active >= keypair.max_concurrent:
            failed.append((P_CONCURRENCY, f"keypair concurrency limit: {keypair.active} of "
                                          f"{keypair.max_concurrent} sessions active"))
        over = (keypair.using + session.requested).exceeding(keypair.limit)
        if over:
            failed.append((P_KEYPAIR_SLOTS, "keypair resource policy limit: " + ", ".join(
                f"{k} {format_amount(k, keypair.using.get(k, Decimal(0)))} of "
                f"{format_amount(k, keypair.limit[k])} in use, {format_amount(k, session.requested[k])} asked"
                for k in sorted(over))))
    return failed


# ---- one pass ---------------------------------------------------------------------------------------


def plan_pass(
    pending: Sequence[PendingSession],
    agents: Sequence[AgentState],
    keypairs: Mapping[str, KeypairState],
    groups: Mapping[str, GroupSettings],
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
        settings = groups.get(sgroup, GroupSettings())
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
            candidates = members
            if not failed and s.architecture:
                arch = normalize_arch(s.architecture)
                if arch not in by_arch:  # one list per architecture: the picker keys its heaps by the list
                    by_arch[arch] = [a for a in members if normalize_arch(a.architecture) == arch]
                candidates = by_arch[arch]
                if members and not candidates:
                    failed.append((P_ARCH, f"no agent of architecture {arch} in the scaling group"))
            chosen = None if failed else _place(picker, candidates, s)
            if chosen is None:
                if not failed:
                    key = (id(candidates), tuple(sorted(s.requested.items())), s.cluster_size, s.cluster_mode,
                           picker.changes)
                    if key not in shortfalls:
                        shortfalls[key] = _cluster_shortfall(candidates, free, s)
                    failed.append((P_CAPACITY, shortfalls[key]))
                plan.waiting.append(Waiting(s.id, tuple(n for n, _ in failed), "; ".join(r for _, r in failed)))
                continue
            if s.cluster_size > 1:
                plan.kernel_agents[s.id] = chosen
            if kp is not None:
                kp_state[s.access_key] = KeypairState(kp.limit, kp.max_concurrent, kp.using + s.requested,
                                                      kp.active + 1)
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


def _cluster_shortfall(candidates: Sequence[AgentState], free: Mapping[str, ResourceSlot], s: PendingSession) -> str:
    """:func:`shortfall_reason` for a session; a multi-node cluster counts the kernels there is room for."""
    if s.cluster_size <= 1 or s.cluster_mode != "multi-node" or not candidates:
        return shortfall_reason(candidates, free, s.requested)
    per = per_kernel_slots(s.requested, s.cluster_size)
    now = sum(kernels_fitting(per, free[a.id]) for a in candidates)
    ever = sum(kernels_fitting(per, a.available) for a in candidates)
    what = f"a multi-node cluster of {s.cluster_size} kernels of {_fmt_slots(per)} each"
    if ever < s.cluster_size:
        return f"the request can never fit: {what}; the agents have room for {ever} even when empty"
    return f"no room for {what}: the agents have room for {now} now"
