"""Usage statistics over time: ``GET /resource/usage-stats``.

What a user's sessions took over the last ``days`` days (default 30), binned by UTC day or by week
(Monday to Sunday, UTC): per bin the sessions started and the resource-hours held (CPU-hours, memory
GiB-hours, accelerator-hours and each slot's own hours). Upstream's ``/resource/stats/user/month`` answers
a similar question from the kernels' live statistics; this one is computed from the sessions table alone,
so it needs no statistics store and answers the same on SQLite and PostgreSQL.

A session holds its ``occupying_slots`` from the moment it was placed on agents (``SCHEDULED`` in its status
history; ``created_at`` when the history does not say) until it ended (``terminated_at``, or the time it
reached its final status) or, while it is still active, until now. A session that was never placed (still
pending, or cancelled before it was) held nothing and is not counted as started.

Whose sessions: the caller's own. Admins may pass ``user`` (an e-mail address or user UUID) and/or ``group``
(a project name or ID): superadmins anywhere, domain admins within their own domain (sessions elsewhere are
simply not counted, so the answer reveals nothing about other domains). Normal users may pass their own
``user`` and a ``group``, which narrows down their own sessions. A filter that names nobody gives empty bins.

The sessions are read with one query (the filters are subqueries of it); the binning is done here.
"""

from __future__ import annotations

import uuid
from collections.abc import Iterable, Mapping
from dataclasses import dataclass, field
from datetime import datetime, timedelta
from decimal import Decimal
from typing import Any, Literal

from fastapi import APIRouter, Depends, Request
from pydantic import field_validator
from sqlalchemy import and_, or_, select

from ai.backend.common.problems import Forbidden

from ..auth import AuthContext
from ..models import ProjectRow, SessionRow, UserRow
from ..models.base import utcnow
from ..sessions.status import ACTIVE, S
from .bodies import DocumentedRoute, Field, RequestModel, body_of
from .deps import auth_required, manager_context
from .resource import slot_kind

router = APIRouter(route_class=DocumentedRoute)

MAX_DAYS = 92
GIB = Decimal(1024**3)
HOUR = Decimal(3600)
DAY = timedelta(days=1)
# The statuses whose time stamp in the status history marks the start of holding resources, earliest first.
_PLACED = (S.SCHEDULED, S.PREPARING, S.PULLING, S.RUNNING)


class UsageStatsParams(RequestModel):
    """The window, the bin width and (admins) whose sessions."""

    days: int = Field(30, ge=1, le=MAX_DAYS, description="How many days back, today (UTC) included.")
    bin: Literal["day", "week"] = Field("day", description="Bin width: a UTC day, or a Monday-to-Sunday week.")
    user: str | None = Field(None, max_length=128, description="An e-mail address or user UUID (admins).")
    group: str | None = Field(None, max_length=128, description="A project (group) name or ID.")

    @field_validator("user", "group")
    @classmethod
    def _printable(cls, v: str | None) -> str | None:
        # PostgreSQL refuses NUL in text (a 500 if it got that far); no name or e-mail has control characters.
        if v is not None and any(ord(c) < 32 or ord(c) == 127 for c in v):
            raise ValueError("must not contain control characters")
        return v


@dataclass
class Bin:
    """One bin's sums: sessions started in it and resource-hours held in it, per slot."""

    start: datetime
    end: datetime
    sessions: int = 0
    slot_hours: dict[str, Decimal] = field(default_factory=dict)

    def add(self, slots: Mapping[str, Decimal], hours: Decimal) -> None:
        for name, amount in slots.items():
            self.slot_hours[name] = self.slot_hours.get(name, Decimal(0)) + amount * hours

    def to_json(self) -> dict[str, Any]:
        return {"start": self.start.isoformat(), "end": self.end.isoformat(), **summary(self.sessions, self.slot_hours)}


def summary(sessions: int, slot_hours: Mapping[str, Decimal]) -> dict[str, Any]:
    """The wire form of one bin's (or the window's) sums. Byte slots are given in GiB-hours."""
    per_slot: dict[str, float] = {}
    accel = Decimal(0)
    for name, value in sorted(slot_hours.items()):
        if slot_kind(name) == "bytes":
            value = value / GIB
        elif name != "cpu":
            accel += value  # devices and device shares, whatever the accelerator
        per_slot[name] = round(float(value), 4)
    return {
        "sessions": sessions,
        "cpu_hours": per_slot.get("cpu", 0.0),
        "mem_gib_hours": per_slot.get("mem", 0.0),
        "accelerator_hours": round(float(accel), 4),
        "slot_hours": per_slot,
    }


def make_bins(now: datetime, days: int, width: Literal["day", "week"]) -> list[Bin]:
    """The bins covering the last ``days`` UTC days up to the end of today, oldest first."""
    today = now.replace(hour=0, minute=0, second=0, microsecond=0)
    first = today - (days - 1) * DAY
    step = DAY
    if width == "week":
        first -= first.weekday() * DAY  # back to Monday
        step = 7 * DAY
    bins = []
    start = first
    while start <= today:
        bins.append(Bin(start, start + step))
        start += step
    return bins


def held_from(created_at: datetime, history: Any) -> datetime:
    """When the session was placed on agents (and started holding its slots)."""
    if isinstance(history, Mapping):
        for status in _PLACED:
            stamp = history.get(status.value)
            if isinstance(stamp, str):
                try:
                    t = datetime.fromisoformat(stamp)
                except ValueError:
                    continue
                return t if t.tzinfo is not None else t.replace(tzinfo=created_at.tzinfo)
    return created_at


def held_until(status: str, terminated_at: datetime | None, status_changed: datetime, now: datetime) -> datetime:
    """When the session stopped holding its slots (now, for an active session)."""
    if terminated_at is not None:
        return terminated_at
    return now if status in ACTIVE else status_changed


def finite_slots(raw: Any) -> dict[str, Decimal]:
    """The positive, finite amounts of a stored slot mapping (malformed entries are skipped)."""
    out: dict[str, Decimal] = {}
    if not isinstance(raw, Mapping):
        return out
    for name, value in raw.items():
        try:
            amount = Decimal(value if isinstance(value, str) else str(value))
        except ArithmeticError:
            continue
        if amount.is_finite() and amount > 0:
            out[str(name)] = amount
    return out


def bin_sessions(rows: Iterable[Any], bins: list[Bin], now: datetime) -> None:
    """Add each session (a row of :func:`_query`'s columns) to the bins it started in and held slots in."""
    if not bins:
        return
    window_start, width = bins[0].start, bins[0].end - bins[0].start
    for created_at, terminated_at, status, status_changed, history, occupying in rows:
        slots = finite_slots(occupying)
        if not slots:
            continue  # never placed: held nothing
        start = held_from(created_at, history)
        end = min(held_until(status, terminated_at, status_changed, now), now)
        if start >= window_start:
            idx = int((start - window_start) / width)
            if idx < len(bins):
                bins[idx].sessions += 1
        # Only the bins the session overlaps (not all of them): long windows with many short sessions stay cheap.
        first = max(0, int((start - window_start) / width))
        for b in bins[first:]:
            if b.start >= end:
                break
            overlap = (min(end, b.end) - max(start, b.start)).total_seconds()
            if overlap > 0:
                b.add(slots, Decimal(str(overlap)) / HOUR)


def _as_uuid(value: str) -> uuid.UUID | None:
    try:
        return uuid.UUID(value)
    except ValueError:
        return None


def scope_conditions(ctx: AuthContext, user: str | None, group: str | None) -> list[Any]:
    """The WHERE conditions choosing whose sessions count (the caller's own unless an admin filters)."""
    names_self = user is None or user == ctx.email or _as_uuid(user) == ctx.user_uuid
    if not names_self and not ctx.is_admin:
        raise Forbidden("Only administrators may see the usage of other users.")
    conds: list[Any] = []
    if names_self and (user is not None or group is None or not ctx.is_admin):
        # The caller's own sessions: by default, when they name themselves, and for non-admins always.
        conds.append(SessionRow.user_uuid == ctx.user_uuid)
    elif user is not None:
        uid = _as_uuid(user)
        match = UserRow.email == user if uid is None else or_(UserRow.email == user, UserRow.uuid == uid)
        conds.append(SessionRow.user_uuid.in_(select(UserRow.uuid).where(match)))
    if group is not None:
        gid = _as_uuid(group)
        match = ProjectRow.name == group if gid is None else or_(ProjectRow.name == group, ProjectRow.id == gid)
        projects = select(ProjectRow.id).where(match)
        if not ctx.is_superadmin:
            # Project names are unique per domain: a name means the project of the caller's domain.
            projects = projects.where(ProjectRow.domain_name == ctx.domain_name)
        conds.append(SessionRow.group_id.in_(projects))
    if ctx.is_admin and not ctx.is_superadmin:
        conds.append(SessionRow.domain_name == ctx.domain_name)
    return conds


def _query(conds: list[Any], window_start: datetime, now: datetime) -> Any:
    """The sessions that may have held slots in the window: begun before now, not ended before the window."""
    return select(
        SessionRow.created_at,
        SessionRow.terminated_at,
        SessionRow.status,
        SessionRow.status_changed,
        SessionRow.status_history,
        SessionRow.occupying_slots,
    ).where(
        *conds,
        SessionRow.created_at < now,
        or_(
            SessionRow.terminated_at >= window_start,
            and_(
                SessionRow.terminated_at.is_(None),
                or_(SessionRow.status.in_(ACTIVE), SessionRow.status_changed >= window_start),
            ),
        ),
    )


@router.get("/resource/usage-stats")
async def usage_stats(
    request: Request,
    ctx: AuthContext = Depends(auth_required),
    params: UsageStatsParams = Depends(body_of(UsageStatsParams)),
) -> dict[str, Any]:
    """Sessions started and resource-hours held per day (or week) over the last ``days`` days."""
    user = params.user.strip() if params.user and params.user.strip() else None
    group = params.group.strip() if params.group and params.group.strip() else None
    conds = scope_conditions(ctx, user, group)
    now = utcnow()
    bins = make_bins(now, params.days, params.bin)
    async with manager_context(request).db() as db:
        rows = (await db.execute(_query(conds, bins[0].start, now))).all()
    bin_sessions(rows, bins, now)
    totals: dict[str, Decimal] = {}
    for b in bins:
        for name, value in b.slot_hours.items():
            totals[name] = totals.get(name, Decimal(0)) + value
    return {
        "start": bins[0].start.isoformat(),
        "end": bins[-1].end.isoformat(),
        "now": now.isoformat(),
        "days": params.days,
        "bin": params.bin,
        "user": user,
        "group": group,
        "bins": [b.to_json() for b in bins],
        "total": summary(sum(b.sessions for b in bins), totals),
        "active_sessions": sum(1 for r in rows if r[2] in ACTIVE and finite_slots(r[5])),
    }
