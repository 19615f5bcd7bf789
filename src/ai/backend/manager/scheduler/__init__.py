"""The scheduler: places PENDING sessions on agents with free capacity, per scaling group, in named phases.

* :mod:`.dispatcher`: the run loop, its triggers and one pass (snapshot → plan → apply → start);
* :mod:`.snapshot` (reads) and :mod:`.apply` (writes), the only modules that touch the database;
* the pure phases over the records of :mod:`.state`: QueueSort (:mod:`.policies`: fifo, lifo, drf), Filter
  (:mod:`.predicates`: one function per check), Score (:mod:`.selectors`: dispersed, concentrated and the
  :class:`AgentPicker`), :mod:`.reasons` (why a session waits) and :mod:`.plan` (:func:`plan_pass`, which
  ties them together).

A session that cannot start does not block the ones behind it. The sessions of lost agents are
:mod:`..agents.health`'s.
"""

from __future__ import annotations

from .apply import REWRITE_WAITING_AFTER, apply_plan
from .dispatcher import Scheduler
from .plan import plan_pass
from .policies import POLICIES, QUEUE_POLICIES, dominant_share, pop_next
from .predicates import (
    P_ARCH,
    P_CAPACITY,
    P_CONCURRENCY,
    P_KEYPAIR_SLOTS,
    P_RESERVED,
    P_SGROUP,
    PREDICATES,
    check_predicates,
    normalize_arch,
)
from .reasons import format_amount, shortfall_reason
from .selectors import SELECTORS, STRATEGIES, AgentPicker, scheduler_opts_error, select_agent, selection_strategy
from .snapshot import Snapshot, read_snapshot
from .state import AgentState, KeypairState, PassPlan, PendingSession, ScalingGroupPolicy, Waiting

__all__ = [
    "P_ARCH",
    "P_CAPACITY",
    "P_CONCURRENCY",
    "P_KEYPAIR_SLOTS",
    "P_RESERVED",
    "P_SGROUP",
    "POLICIES",
    "PREDICATES",
    "QUEUE_POLICIES",
    "REWRITE_WAITING_AFTER",
    "SELECTORS",
    "STRATEGIES",
    "AgentPicker",
    "AgentState",
    "ScalingGroupPolicy",
    "KeypairState",
    "PassPlan",
    "PendingSession",
    "Scheduler",
    "Snapshot",
    "Waiting",
    "apply_plan",
    "check_predicates",
    "dominant_share",
    "format_amount",
    "normalize_arch",
    "plan_pass",
    "pop_next",
    "read_snapshot",
    "scheduler_opts_error",
    "select_agent",
    "selection_strategy",
    "shortfall_reason",
]
