"""The Filter phase: the checks a pending session must pass before any agent is looked for.

Each predicate is a function of the same signature, ``(session, keypair, now) -> reason or None``, named
as it is recorded in ``status_data.scheduler.predicates`` when it fails; :data:`PREDICATES` lists them in
the order they run. A new predicate is one function and one line in that list.

The agents' side of the filter is :func:`architecture`: only agents of the image's architecture are
candidates. When no candidate has room, the pass records :data:`P_CAPACITY` (see :mod:`.reasons`).
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from datetime import datetime
from decimal import Decimal

from .reasons import format_amount
from .state import AgentState, KeypairState, PendingSession

Predicate = Callable[[PendingSession, KeypairState | None, datetime], str | None]


def reserved_time(session: PendingSession, keypair: KeypairState | None, now: datetime) -> str | None:
    """Fails while the session is reserved to start later."""
    if session.starts_at is not None and session.starts_at > now:
        return f"reserved to start at {session.starts_at.isoformat()}"
    return None


def scaling_group_access(session: PendingSession, keypair: KeypairState | None, now: datetime) -> str | None:
    """Fails when the owner may no longer use the session's scaling group."""
    if not session.sgroup_allowed:
        return f"scaling group {session.scaling_group!r} is no longer available to the owner"
    return None


def keypair_concurrency_limit(session: PendingSession, keypair: KeypairState | None, now: datetime) -> str | None:
    """Fails when the keypair already holds as many sessions as its policy allows."""
    if keypair is not None and keypair.active >= keypair.max_concurrent:
        return f"keypair concurrency limit: {keypair.active} of {keypair.max_concurrent} sessions active"
    return None


def keypair_resource_limit(session: PendingSession, keypair: KeypairState | None, now: datetime) -> str | None:
    """Fails when the session's slots would take the keypair over its policy's totals."""
    if keypair is None:
        return None
    over = (keypair.using + session.requested).exceeding(keypair.limit)
    if not over:
        return None
    return "keypair resource policy limit: " + ", ".join(
        f"{k} {format_amount(k, keypair.using.get(k, Decimal(0)))} of "
        f"{format_amount(k, keypair.limit[k])} in use, {format_amount(k, session.requested[k])} asked"
        for k in sorted(over)
    )


# The predicates every pending session is checked against, in this order.
PREDICATES: list[Predicate] = [reserved_time, scaling_group_access, keypair_concurrency_limit, keypair_resource_limit]


def check_predicates(session: PendingSession, keypair: KeypairState | None, now: datetime) -> list[tuple[str, str]]:
    """The predicates ``session`` fails now, as (name, reason) pairs; empty when it may start."""
    failed: list[tuple[str, str]] = []
    for predicate in PREDICATES:
        reason = predicate(session, keypair, now)
        if reason is not None:
            failed.append((predicate.__name__, reason))
    return failed


# ---- the agents' side --------------------------------------------------------------------------------

_ARCH_ALIASES = {"amd64": "x86_64", "x86-64": "x86_64", "arm64": "aarch64", "armv8": "aarch64"}


def normalize_arch(arch: str | None) -> str | None:
    """Docker's and the kernel's spelling of a CPU architecture made comparable (``amd64`` = ``x86_64``)."""
    if not arch:
        return None
    a = arch.lower()
    return _ARCH_ALIASES.get(a, a)


def architecture(
    session: PendingSession, members: Sequence[AgentState], by_arch: dict[str | None, list[AgentState]]
) -> tuple[Sequence[AgentState], str | None]:
    """The candidate agents of ``session`` among a scaling group's ``members``: those of its image's
    architecture (all when unrecorded), and why it fails when the group has agents but none of that one.
    ``by_arch`` keeps one list per architecture for the pass (the picker keys its heaps by the list)."""
    if not session.architecture:
        return members, None
    arch = normalize_arch(session.architecture)
    if arch not in by_arch:
        by_arch[arch] = [a for a in members if normalize_arch(a.architecture) == arch]
    candidates = by_arch[arch]
    if members and not candidates:
        return candidates, f"no agent of architecture {arch} in the scaling group"
    return candidates, None


# Names recorded in ``status_data.scheduler.predicates``.
P_RESERVED = reserved_time.__name__
P_SGROUP = scaling_group_access.__name__
P_CONCURRENCY = keypair_concurrency_limit.__name__
P_KEYPAIR_SLOTS = keypair_resource_limit.__name__
P_ARCH = architecture.__name__
P_CAPACITY = "agent_capacity"  # no candidate has room (the Score phase found none)
