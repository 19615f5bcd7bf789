"""The binning of ``GET /resource/usage-stats`` (``ai.backend.manager.api.usage_stats``): bins, the time a
session held its slots, and the hours each bin gets."""

from __future__ import annotations

import uuid
from datetime import UTC, datetime, timedelta
from decimal import Decimal
from typing import Any

import pytest

from ai.backend.common.problems import Forbidden
from ai.backend.manager.api.usage_stats import (
    bin_sessions,
    held_from,
    make_bins,
    scope_conditions,
    summary,
)
from ai.backend.manager.auth import AuthContext

NOW = datetime(2026, 12, 9, 15, 30, tzinfo=UTC)  # a Wednesday
GIB = 1024**3


def row(
    start: datetime,
    end: datetime | None,
    slots: dict[str, Any],
    status: str = "TERMINATED",
    history: dict[str, Any] | None = None,
) -> tuple[Any, ...]:
    return (start, end, status, end or start, history or {}, slots)


def test_day_bins_end_with_today() -> None:
    bins = make_bins(NOW, 30, "day")
    assert len(bins) == 30
    assert bins[-1].start == datetime(2026, 12, 9, tzinfo=UTC)
    assert bins[-1].end == datetime(2026, 12, 10, tzinfo=UTC)
    assert bins[0].start == datetime(2026, 11, 10, tzinfo=UTC)
    assert all(b.end == n.start for b, n in zip(bins, bins[1:], strict=False))


def test_week_bins_start_on_monday_and_cover_the_window() -> None:
    bins = make_bins(NOW, 30, "week")
    assert all(b.start.weekday() == 0 and b.end - b.start == timedelta(days=7) for b in bins)
    assert bins[0].start <= datetime(2026, 11, 10, tzinfo=UTC) < bins[0].end
    assert bins[-1].start <= NOW < bins[-1].end
    assert len(make_bins(NOW, 1, "week")) == 1


def test_hours_are_split_across_days_and_bytes_become_gib_hours() -> None:
    bins = make_bins(NOW, 3, "day")
    # 2 CPUs and 4 GiB from 22:00 two days ago to 02:00 yesterday: 2 h in each day.
    start = datetime(2026, 12, 7, 22, tzinfo=UTC)
    bin_sessions([row(start, start + timedelta(hours=4), {"cpu": "2", "mem": str(4 * GIB)})], bins, NOW)
    first, second, today = (b.to_json() for b in bins)
    assert first["sessions"] == 1 and second["sessions"] == 0
    assert first["cpu_hours"] == 4.0 and second["cpu_hours"] == 4.0 and today["cpu_hours"] == 0.0
    assert first["mem_gib_hours"] == 8.0 and second["mem_gib_hours"] == 8.0


def test_running_sessions_count_until_now_and_accelerators_sum_up() -> None:
    bins = make_bins(NOW, 2, "day")
    start = datetime(2026, 12, 9, 14, 30, tzinfo=UTC)
    slots = {"cpu": 1, "mem": "0", "cuda.device": "2", "cuda.mem": str(GIB)}
    bin_sessions([row(start, None, slots, status="RUNNING")], bins, NOW)
    today = bins[-1].to_json()
    assert today["sessions"] == 1 and today["cpu_hours"] == 1.0
    assert today["accelerator_hours"] == 2.0  # cuda.mem is bytes: not an accelerator count
    assert today["slot_hours"]["cuda.mem"] == 1.0 and "mem" not in today["slot_hours"]


def test_held_from_uses_the_placement_time_and_unplaced_sessions_count_nothing() -> None:
    created = datetime(2026, 12, 9, 10, tzinfo=UTC)
    placed = created + timedelta(minutes=30)
    assert held_from(created, {"PENDING": created.isoformat(), "SCHEDULED": placed.isoformat()}) == placed
    assert held_from(created, {"SCHEDULED": "garbage"}) == created
    assert held_from(created, None) == created
    bins = make_bins(NOW, 1, "day")
    bin_sessions([row(created, created + timedelta(hours=1), {}, status="CANCELLED")], bins, NOW)
    assert bins[0].sessions == 0 and bins[0].slot_hours == {}


def test_sessions_older_than_the_window_count_only_their_overlap() -> None:
    bins = make_bins(NOW, 2, "day")
    start = bins[0].start - timedelta(days=5)
    bin_sessions([row(start, bins[0].start + timedelta(hours=3), {"cpu": "1"})], bins, NOW)
    assert bins[0].sessions == 0  # started before the window
    assert bins[0].to_json()["cpu_hours"] == 3.0


def test_summary_of_nothing() -> None:
    assert summary(0, {}) == {
        "sessions": 0,
        "cpu_hours": 0.0,
        "mem_gib_hours": 0.0,
        "accelerator_hours": 0.0,
        "slot_hours": {},
    }
    assert summary(1, {"cpu": Decimal("1.23456")})["cpu_hours"] == 1.2346


def _ctx(role: str) -> AuthContext:
    return AuthContext(
        access_key="AKIA",
        user_uuid=uuid.uuid4(),
        email="me@example.org",
        role=role,
        domain_name="default",
        is_admin=role in ("admin", "superadmin"),
        resource_policy="default",
        api_version="v6",
    )


def test_only_admins_see_other_users() -> None:
    user = _ctx("user")
    assert len(scope_conditions(user, None, None)) == 1
    assert len(scope_conditions(user, "me@example.org", "default")) == 2  # own sessions in a project
    assert len(scope_conditions(user, str(user.user_uuid), None)) == 1
    with pytest.raises(Forbidden):
        scope_conditions(user, "other@example.org", None)
    # Domain admins stay in their domain; superadmins do not.
    assert len(scope_conditions(_ctx("admin"), "other@example.org", None)) == 2
    assert len(scope_conditions(_ctx("superadmin"), "other@example.org", None)) == 1
    assert len(scope_conditions(_ctx("superadmin"), None, "default")) == 1  # the whole project
