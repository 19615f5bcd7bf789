"""The session state machine: statuses, the named sets of statuses, the allowed transitions and the one
function that computes a status change, for the ORM writers and the scheduler's bulk SQL alike.

A session moves ``PENDING → SCHEDULED → PREPARING (→ PULLING) → RUNNING (⇄ RESTARTING) → TERMINATING →
TERMINATED``; it can be ``CANCELLED`` before it starts and end in ``ERROR`` when it fails to. Kernels follow
their session with the same names.
"""

from __future__ import annotations

from collections.abc import Mapping
from datetime import datetime
from enum import StrEnum
from typing import Any, Protocol


class SessionStatus(StrEnum):
    """Where a session is in its life. The values are the wire and database spellings."""

    PENDING = "PENDING"
    SCHEDULED = "SCHEDULED"
    PREPARING = "PREPARING"
    PULLING = "PULLING"
    RUNNING = "RUNNING"
    RESTARTING = "RESTARTING"
    RUNNING_DEGRADED = "RUNNING_DEGRADED"
    TERMINATING = "TERMINATING"
    TERMINATED = "TERMINATED"
    CANCELLED = "CANCELLED"
    ERROR = "ERROR"


# Kernels use the session's names (upstream has separate enums with the same members).
KernelStatus = SessionStatus

S = SessionStatus

# A session that still holds, or waits for, resources: counted against quotas, blocks its name.
ACTIVE: frozenset[SessionStatus] = frozenset(
    {
        S.PENDING,
        S.SCHEDULED,
        S.PREPARING,
        S.PULLING,
        S.RUNNING,
        S.RESTARTING,
        S.RUNNING_DEGRADED,
        S.TERMINATING,
    }
)
# A session that has ended for good: nothing moves it any more.
TERMINAL: frozenset[SessionStatus] = frozenset({S.TERMINATED, S.CANCELLED, S.ERROR})
# Ended the way a user meant to (an ERROR session still has a failure to read).
ENDED_CLEANLY: frozenset[SessionStatus] = frozenset({S.TERMINATED, S.CANCELLED})
# Placed on agents: what counts against a keypair's policy when the scheduler places another one.
HOLDING: frozenset[SessionStatus] = ACTIVE - {S.PENDING}
# Where waiting for a session to start stops: it runs, or it never will.
START_SETTLED: frozenset[SessionStatus] = frozenset({S.RUNNING}) | TERMINAL
# Being started on its agents (an agent that does not answer fails it by itself).
STARTING: frozenset[SessionStatus] = frozenset({S.PREPARING, S.PULLING})
# Not yet given to an agent: destroying such a session cancels it.
QUEUED: frozenset[SessionStatus] = frozenset({S.PENDING, S.SCHEDULED})
# Whose kernels have a container on their agent (reconciliation looks for it).
HAS_CONTAINER: frozenset[SessionStatus] = frozenset({S.RUNNING, S.RUNNING_DEGRADED})
# Running on an agent: what a lost agent takes down with it.
ON_AGENT: frozenset[SessionStatus] = frozenset({S.RUNNING, S.RESTARTING, S.RUNNING_DEGRADED})
# Kernels that are not going away yet.
KERNEL_GOING: frozenset[SessionStatus] = frozenset({S.TERMINATING, S.TERMINATED})

# Every status change a session may make. ``status_change`` refuses any other: a refused change is a bug
# in the caller, never something a user can cause.
TRANSITIONS: Mapping[SessionStatus, frozenset[SessionStatus]] = {
    S.PENDING: frozenset({S.SCHEDULED, S.CANCELLED, S.ERROR}),
    S.SCHEDULED: frozenset({S.PREPARING, S.CANCELLED, S.ERROR}),
    S.PREPARING: frozenset({S.PULLING, S.RUNNING, S.TERMINATING, S.TERMINATED, S.ERROR}),
    S.PULLING: frozenset({S.PREPARING, S.RUNNING, S.TERMINATING, S.TERMINATED, S.ERROR}),
    S.RUNNING: frozenset({S.RESTARTING, S.RUNNING_DEGRADED, S.TERMINATING, S.TERMINATED, S.ERROR}),
    S.RESTARTING: frozenset({S.RUNNING, S.TERMINATING, S.TERMINATED, S.ERROR}),
    S.RUNNING_DEGRADED: frozenset({S.RUNNING, S.TERMINATING, S.TERMINATED, S.ERROR}),
    S.TERMINATING: frozenset({S.TERMINATED, S.ERROR}),
    # Destroying a failed session acknowledges its failure.
    S.ERROR: frozenset({S.TERMINATED}),
    S.TERMINATED: frozenset(),
    S.CANCELLED: frozenset(),
}


class IllegalTransition(RuntimeError):
    """A writer tried a status change that :data:`TRANSITIONS` does not allow."""


def check_transition(current: str, to: str) -> SessionStatus:
    """``to`` as a status, if a session in ``current`` may enter it (entering the same status again is a
    no-op change and allowed); raises :class:`IllegalTransition` otherwise."""
    target = SessionStatus(to)
    if current != target and target not in TRANSITIONS[SessionStatus(current)]:
        raise IllegalTransition(f"a {current} session cannot become {target}")
    return target


def status_values(to: SessionStatus, now: datetime, info: str | None = None) -> dict[str, Any]:
    """The plain columns written when a session enters ``to`` at ``now`` (the status, its time, ``info``
    when given, the end time of a terminal status), without the history and data columns, which the ORM
    writers merge in Python and the bulk writers in SQL."""
    values: dict[str, Any] = {"status": to, "status_changed": now}
    if info is not None:
        values["status_info"] = info
    if to in TERMINAL:
        values["terminated_at"] = now
    return values


class HasStatus(Protocol):
    """What :func:`status_change` reads of a session row."""

    status: str
    status_history: dict[str, Any]
    status_data: dict[str, Any]


def status_change(
    session: HasStatus, to: str, now: datetime, info: str | None = None, data: dict[str, Any] | None = None
) -> dict[str, Any]:
    """The columns of ``session`` that change when it enters ``to`` at ``now``: the status, its time and
    history entry, ``info`` (when given), ``data`` merged into ``status_data``, and the end time of a
    terminal status. Raises :class:`IllegalTransition` for a change :data:`TRANSITIONS` does not allow."""
    target = check_transition(session.status, to)
    values = status_values(target, now, info)
    values["status_history"] = {**(session.status_history or {}), target.value: now.isoformat()}
    if data:
        values["status_data"] = {**(session.status_data or {}), **data}
    return values
