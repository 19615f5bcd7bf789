"""The session state machine: named status sets, the transition table and status_change."""

from __future__ import annotations

from datetime import UTC, datetime
from types import SimpleNamespace

import pytest

from ai.backend.manager.sessions.status import (
    ACTIVE,
    HOLDING,
    TERMINAL,
    TRANSITIONS,
    IllegalTransition,
    SessionStatus,
    check_transition,
    status_change,
)

NOW = datetime(2026, 12, 7, 12, 0, tzinfo=UTC)


def test_every_status_has_a_row_in_the_table_and_terminal_ones_lead_nowhere_but_acknowledgement() -> None:
    assert set(TRANSITIONS) == set(SessionStatus)
    assert TRANSITIONS[SessionStatus.TERMINATED] == frozenset()
    assert TRANSITIONS[SessionStatus.CANCELLED] == frozenset()
    assert TRANSITIONS[SessionStatus.ERROR] == {SessionStatus.TERMINATED}


def test_active_and_terminal_partition_the_statuses() -> None:
    assert ACTIVE.isdisjoint(TERMINAL)
    assert ACTIVE | TERMINAL == set(SessionStatus)
    assert HOLDING == ACTIVE - {SessionStatus.PENDING}


def test_the_happy_path_is_allowed_step_by_step() -> None:
    path = [
        "PENDING",
        "SCHEDULED",
        "PREPARING",
        "PULLING",
        "RUNNING",
        "RESTARTING",
        "RUNNING",
        "TERMINATING",
        "TERMINATED",
    ]
    for a, b in zip(path, path[1:], strict=False):
        assert check_transition(a, b) == b


@pytest.mark.parametrize(
    ("current", "to"),
    [
        ("TERMINATED", "RUNNING"),
        ("CANCELLED", "PENDING"),
        ("PENDING", "RUNNING"),
        ("RUNNING", "PENDING"),
        ("TERMINATING", "RUNNING"),
        ("ERROR", "RUNNING"),
    ],
)
def test_a_change_outside_the_table_is_refused(current: str, to: str) -> None:
    with pytest.raises(IllegalTransition, match=f"{current} session cannot become {to}"):
        check_transition(current, to)


def test_an_unknown_status_is_refused() -> None:
    with pytest.raises(ValueError):
        check_transition("RUNNING", "SLEEPING")


def test_status_change_records_history_info_data_and_the_end_time() -> None:
    row = SimpleNamespace(status="RUNNING", status_history={"PENDING": "t0"}, status_data={"a": 1})
    values = status_change(row, "TERMINATED", NOW, "user-requested", {"exit_code": 0})
    assert values["status"] == "TERMINATED"
    assert values["status_changed"] == NOW and values["terminated_at"] == NOW
    assert values["status_info"] == "user-requested"
    assert values["status_history"] == {"PENDING": "t0", "TERMINATED": NOW.isoformat()}
    assert values["status_data"] == {"a": 1, "exit_code": 0}
    assert row.status_history == {"PENDING": "t0"}  # the row itself is not changed


def test_status_change_of_a_live_status_sets_no_end_time_and_keeps_info_when_none() -> None:
    row = SimpleNamespace(status="PREPARING", status_history=None, status_data=None)
    values = status_change(row, "RUNNING", NOW)
    assert "terminated_at" not in values and "status_info" not in values and "status_data" not in values
    assert values["status_history"] == {"RUNNING": NOW.isoformat()}
