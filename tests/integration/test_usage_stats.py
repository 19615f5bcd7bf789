"""``GET /resource/usage-stats`` on a real manager, on SQLite and PostgreSQL: sessions of the past (written
straight into the database, since a test cannot wait for days) are binned by day and by week; only the
caller's own sessions count unless an admin filters by user or project; bad parameters are 400s.
"""

from __future__ import annotations

import asyncio
import secrets
import uuid
from collections.abc import Iterator
from datetime import UTC, datetime, timedelta
from typing import Any

import pytest
from sqlalchemy import delete, insert

from ai.backend.manager.db import create_engine, session_factory
from ai.backend.manager.fixtures import ADMIN, DEFAULT_GROUP_ID, USER
from ai.backend.manager.models import SessionRow
from ai.backend.testutils.cluster import Cluster

GIB = 1024**3


def _gql(m: Cluster, query: str, variables: dict[str, Any]) -> dict[str, Any]:
    r = m.request("POST", "/admin/gql", {"query": query, "variables": variables}, who=ADMIN)
    assert r.status_code == 200 and not r.json().get("errors"), r.text
    data: dict[str, Any] = r.json()["data"]
    return data


def _new_user(m: Cluster) -> dict[str, Any]:
    email = f"usage-{secrets.token_hex(3)}@example.org"
    out = _gql(
        m,
        "mutation($e: String!, $p: UserInput!) { create_user(email: $e, props: $p) { ok msg user { uuid } } }",
        {
            "e": email,
            "p": {"password": "pass-word-1", "domain_name": "default", "role": "user", "group_ids": []},
        },
    )
    assert out["create_user"]["ok"], out
    kp = _gql(m, "query($e: String) { keypairs(email: $e) { access_key secret_key } }", {"e": email})["keypairs"][0]
    return {"email": email, "uuid": out["create_user"]["user"]["uuid"], **kp}


def _session(who: dict[str, Any], start: datetime, hours: float | None, slots: dict[str, Any], **extra: Any) -> Any:
    """A sessions row that was placed at ``start`` and ended ``hours`` later (None: still running)."""
    end = None if hours is None else start + timedelta(hours=hours)
    status = extra.pop("status", "RUNNING" if end is None else "TERMINATED")
    return {
        "id": uuid.uuid4(),
        "name": f"u-{secrets.token_hex(4)}",
        "access_key": who["access_key"],
        "user_uuid": uuid.UUID(who["uuid"]),
        "domain_name": "default",
        "group_id": extra.pop("group_id", DEFAULT_GROUP_ID),
        "scaling_group": "default",
        "image": "python:3.11-debian12",
        "status": status,
        "status_data": {},
        "status_history": {"PENDING": start.isoformat(), "SCHEDULED": start.isoformat()},
        "status_changed": end or start,
        "created_at": start,
        "terminated_at": end,
        "requested_slots": slots,
        "occupying_slots": slots,
        "environ": {},
        "resource_opts": {},
        **extra,
    }


async def _write(url: str, rows: list[dict[str, Any]], *, remove: bool = False) -> None:
    engine = create_engine(url)
    try:
        async with session_factory(engine)() as db:
            if remove:
                await db.execute(delete(SessionRow).where(SessionRow.id.in_([r["id"] for r in rows])))
            else:
                await db.execute(insert(SessionRow), rows)
            await db.commit()
    finally:
        await engine.dispose()


@pytest.fixture(scope="module")
def history(manager: Cluster) -> Iterator[dict[str, Any]]:
    """Two fresh users, a project, and sessions of theirs over the past weeks."""
    alice, bob = _new_user(manager), _new_user(manager)
    project = f"usage-{secrets.token_hex(3)}"
    pid = _gql(
        manager,
        'mutation($n: String!) { create_group(name: $n, props: {domain_name: "default"}) { ok group { id } } }',
        {"n": project},
    )["create_group"]["group"]["id"]
    now = datetime.now(UTC)
    today = now.replace(hour=0, minute=0, second=0, microsecond=0)
    # The running one started 30 minutes ago, or at midnight if that was later.
    running_start = max(today, now - timedelta(minutes=30))
    rows = {
        # 2 CPUs and 4 GiB for 2 hours, three days ago.
        "three_days": _session(
            alice, today - timedelta(days=3) + timedelta(hours=10), 2, {"cpu": "2", "mem": str(4 * GIB)}
        ),
        # Still running, with an accelerator slot.
        "running": _session(alice, running_start, None, {"cpu": "1", "mem": str(GIB), "cuda.device": "1"}),
        # Long before the window: not counted at all.
        "old": _session(alice, today - timedelta(days=50), 5, {"cpu": "4"}),
        # Began before the window (45 days ago), ended 12 hours into its first day: only those 12 hours count.
        "straddling": _session(
            alice,
            today - timedelta(days=45),
            (timedelta(days=45 - 29) + timedelta(hours=12)).total_seconds() / 3600,
            {"cpu": "1"},
        ),
        # Cancelled before it was placed: held nothing.
        "cancelled": _session(alice, today + timedelta(minutes=1), 0, {}, status="CANCELLED"),
        # In the project, yesterday: 1 CPU for 1 hour.
        "project": _session(
            alice, today - timedelta(days=1) + timedelta(hours=3), 1, {"cpu": "1"}, group_id=uuid.UUID(pid)
        ),
        # Someone else's.
        "bob": _session(bob, today - timedelta(days=1) + timedelta(hours=5), 1, {"cpu": "8"}),
    }
    asyncio.run(_write(manager.db_url, list(rows.values())))
    try:
        yield {"alice": alice, "bob": bob, "project": project, "project_id": pid, "rows": rows, "today": today}
    finally:
        asyncio.run(_write(manager.db_url, list(rows.values()), remove=True))


def _stats(m: Cluster, who: dict[str, Any], query: str = "", status: int = 200) -> dict[str, Any]:
    r = m.request("GET", "/resource/usage-stats" + query, who=who)
    assert r.status_code == status, r.text
    if status != 200:
        assert r.headers["content-type"].startswith("application/problem+json")
    doc: dict[str, Any] = r.json()
    return doc


def _by_day(doc: dict[str, Any]) -> dict[str, dict[str, Any]]:
    return {b["start"][:10]: b for b in doc["bins"]}


def _day(t: datetime) -> str:
    return t.date().isoformat()


def test_own_sessions_per_day(manager: Cluster, history: dict[str, Any]) -> None:
    alice, rows, today = history["alice"], history["rows"], history["today"]
    doc = _stats(manager, alice)
    assert doc["days"] == 30 and doc["bin"] == "day" and len(doc["bins"]) == 30
    days = _by_day(doc)
    first = today - timedelta(days=29)
    assert doc["start"].startswith(_day(first)) and _day(today) in days
    three = days[_day(rows["three_days"]["created_at"])]
    assert (three["sessions"], three["cpu_hours"], three["mem_gib_hours"]) == (1, 4.0, 8.0)
    straddle = days[_day(first)]
    assert straddle["sessions"] == 0 and straddle["cpu_hours"] == 12.0
    run = days[_day(rows["running"]["created_at"])]
    assert run["sessions"] == 1
    assert 0 < run["accelerator_hours"] <= 1.0 and run["slot_hours"]["cuda.device"] == run["accelerator_hours"]
    proj = days[_day(rows["project"]["created_at"])]
    assert proj["sessions"] == 1 and proj["cpu_hours"] == 1.0  # Bob's 8 CPU-hours on that day are not Alice's
    total = doc["total"]
    assert total["sessions"] == 3  # three_days, running, project (not old, straddling nor cancelled)
    assert 17.0 < total["cpu_hours"] <= 18.0
    assert doc["active_sessions"] == 1


def test_weekly_bins_hold_the_same_sessions(manager: Cluster, history: dict[str, Any]) -> None:
    alice = history["alice"]
    daily, weekly = _stats(manager, alice), _stats(manager, alice, "?bin=week&days=30")
    assert weekly["bin"] == "week" and 5 <= len(weekly["bins"]) <= 6
    starts = [datetime.fromisoformat(b["start"]) for b in weekly["bins"]]
    assert all(s.weekday() == 0 for s in starts)
    assert weekly["total"]["sessions"] == daily["total"]["sessions"] == 3
    # The weekly window begins on the Monday before the daily one: more of the straddling session counts.
    assert weekly["total"]["cpu_hours"] >= daily["total"]["cpu_hours"]
    assert sum(b["cpu_hours"] for b in weekly["bins"]) == pytest.approx(weekly["total"]["cpu_hours"], abs=0.01)
    short = _stats(manager, alice, "?days=2")  # today and yesterday: the running one and the project's
    assert len(short["bins"]) == 2 and short["total"]["sessions"] == 2


def test_project_filter_narrows_own_sessions(manager: Cluster, history: dict[str, Any]) -> None:
    alice = history["alice"]
    for ref in (history["project"], history["project_id"]):
        doc = _stats(manager, alice, f"?group={ref}")
        assert doc["total"]["sessions"] == 1 and doc["total"]["cpu_hours"] == 1.0, doc["total"]
    # Naming oneself is allowed; naming someone else is for admins.
    assert _stats(manager, alice, f"?user={alice['email']}")["total"]["sessions"] == 3
    _stats(manager, alice, f"?user={history['bob']['email']}", status=403)
    _stats(manager, USER, f"?user={alice['uuid']}", status=403)


def test_admins_filter_by_user_and_project(manager: Cluster, history: dict[str, Any]) -> None:
    bob, alice = history["bob"], history["alice"]
    doc = _stats(manager, ADMIN, f"?user={bob['email']}")
    assert doc["total"]["sessions"] == 1 and doc["total"]["cpu_hours"] == 8.0
    assert _stats(manager, ADMIN, f"?user={alice['uuid']}")["total"]["sessions"] == 3
    assert _stats(manager, ADMIN, f"?group={history['project']}")["total"]["cpu_hours"] == 1.0
    nobody = _stats(manager, ADMIN, "?user=nobody@example.org")
    assert nobody["total"]["sessions"] == 0 and len(nobody["bins"]) == 30
    # The admin's own usage is not Alice's.
    assert _stats(manager, ADMIN)["total"]["cpu_hours"] < 17.0


@pytest.mark.parametrize(
    "query", ["?days=0", "?days=93", "?days=many", "?bin=month", "?user=" + "x" * 200, "?user=a%00b", "?group=%01"]
)
def test_bad_parameters_are_400(manager: Cluster, history: dict[str, Any], query: str) -> None:
    doc = _stats(manager, history["alice"], query, status=400)
    assert doc["detail"]


def test_needs_a_signature(manager: Cluster) -> None:
    import httpx

    r = httpx.get(manager.endpoint + "/resource/usage-stats")
    assert r.status_code == 401
