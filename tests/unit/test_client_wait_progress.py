"""The waiting line of ``run``/``create`` (``ai.backend.client.cli.waiting``), the no-project hint and the
two shapes of fields the server is changing (folder file lists, problem ``msg``)."""

from __future__ import annotations

import asyncio
import io
import json
import re
from collections.abc import Mapping
from typing import Any

import click
import pytest

from ai.backend.client.cli.hints import format_no_project_hint, membership_problem
from ai.backend.client.cli.waiting import (
    WaitProgress,
    create_with_progress,
    format_elapsed,
    format_max_wait_message,
    format_wait_line,
    watch_start,
)
from ai.backend.client.exceptions import BackendAPIError
from ai.backend.client.func.vfolder import decode_file_list


class FakeClock:
    def __init__(self) -> None:
        self.now = 100.0

    def __call__(self) -> float:
        return self.now


class TTYBuffer(io.StringIO):
    def isatty(self) -> bool:
        return True


@pytest.mark.parametrize(
    ("seconds", "text"), [(0, "0s"), (7.9, "7s"), (65, "1m05s"), (3600 * 2 + 180, "2h03m"), (-3, "0s")]
)
def test_format_elapsed(seconds: float, text: str) -> None:
    assert format_elapsed(seconds) == text


def test_wait_line_shows_the_reason_only_while_pending() -> None:
    reason = "no agent has enough free resources:\n best candidate i-1 lacks cpu 2"
    assert format_wait_line("s1", "PENDING", reason, 12.4) == (
        "Session s1: PENDING (no agent has enough free resources: best candidate i-1 lacks cpu 2), waited 12s"
    )
    assert format_wait_line("s1", "PULLING", "stale", 61) == "Session s1: PULLING, waited 1m01s"
    assert format_wait_line("s1", None, None, 0) == "Session s1: creating, waited 0s"


def test_max_wait_message() -> None:
    reason = "keypair resource policy limit: cpu 2 of 2 in use"
    kept = format_max_wait_message("s1", 3, "PENDING", reason, destroyed=False)
    assert kept == (
        "Session s1 did not start within 3s (PENDING: keypair resource policy limit: cpu 2 of 2 in use); "
        "it stays queued and may start later (cancel it with 'backend.ai rm s1')."
    )
    gone = format_max_wait_message("s1", 90, None, None, destroyed=True)
    assert gone == "Session s1 did not start within 1m30s (PENDING); it is destroyed."
    assert "\n" not in format_max_wait_message("s", 1, "PENDING", "a\nb", destroyed=True)


def test_non_tty_prints_one_line_per_change() -> None:
    out, clock = io.StringIO(), FakeClock()
    p = WaitProgress("s1", stream=out, clock=clock)
    assert p.live is False
    p.update(None, None)  # not known yet: nothing
    p.update("PENDING", "reason A")
    clock.now += 5
    p.update("PENDING", "reason A")  # same: nothing
    p.update("PENDING", "reason B")
    clock.now += 2
    p.update("PREPARING", None)
    p.redraw()  # no live line off a terminal
    p.finish()
    lines = click.unstyle(out.getvalue()).splitlines()
    assert lines == [
        "⋯ Session s1: PENDING (reason A), waited 0s",
        "⋯ Session s1: PENDING (reason B), waited 5s",
        "⋯ Session s1: PREPARING, waited 7s",
    ]
    assert "\r" not in out.getvalue()


def test_tty_redraws_one_line_in_place_and_erases_it() -> None:
    out, clock = TTYBuffer(), FakeClock()
    p = WaitProgress("s1", stream=out, clock=clock)
    assert p.live is True
    p.update("PENDING", "waiting for an agent")
    clock.now += 3
    p.redraw()
    p.finish()
    text = out.getvalue()
    assert "\n" not in text
    frames = [click.unstyle(f) for f in text.split("\r\x1b[2K") if f]
    assert frames[0].startswith("⋯ Session s1: PENDING (waiting for an agent), waited 0s")
    assert frames[1].startswith("⋯ Session s1: PENDING (waiting for an agent), waited 3s")
    assert text.endswith("\r\x1b[2K")  # erased at the end


def test_disabled_progress_prints_nothing() -> None:
    out = TTYBuffer()
    p = WaitProgress("s1", stream=out, enabled=False)
    p.update("PENDING", "x")
    p.redraw()
    p.finish()
    assert out.getvalue() == ""
    assert (p.status, p.reason) == ("PENDING", "x")  # still recorded for the max-wait message


def test_watch_start_polls_no_faster_than_half_a_second_and_skips_failures() -> None:
    calls: list[float] = []
    answers: list[Mapping[str, Any] | Exception] = [
        BackendAPIError(404, "Not Found", {"title": "No such session"}),
        {"status": "PENDING", "statusInfo": "no alive schedulable agent in the scaling group"},
        {"status": "PREPARING", "statusInfo": ""},
    ]

    async def fetch() -> Mapping[str, Any] | None:
        calls.append(asyncio.get_running_loop().time())
        answer = answers[min(len(calls) - 1, len(answers) - 1)]
        if isinstance(answer, Exception):
            raise answer
        return answer

    async def create() -> str:
        await asyncio.sleep(2.2)
        return "done"

    out = io.StringIO()
    p = WaitProgress("s1", stream=out)

    async def main() -> str:
        return str(await create_with_progress(create, fetch, p, interval=0.1))

    assert asyncio.run(main()) == "done"
    gaps = [b - a for a, b in zip(calls, calls[1:], strict=False)]
    assert 2 <= len(calls) <= 4 and all(g >= 0.45 for g in gaps), calls
    lines = [re.sub(r", waited \d+s$", "", ln) for ln in click.unstyle(out.getvalue()).splitlines()]
    assert lines == [
        "⋯ Session s1: PENDING (no alive schedulable agent in the scaling group)",
        "⋯ Session s1: PREPARING",
    ]
    assert (p.status, p.reason) == ("PREPARING", None)


def test_watch_start_stops_when_cancelled() -> None:
    async def fetch() -> Mapping[str, Any] | None:
        return {"status": "PENDING", "statusInfo": "r"}

    out = TTYBuffer()
    p = WaitProgress("s1", stream=out)

    async def main() -> None:
        task = asyncio.get_running_loop().create_task(watch_start(p, fetch))
        await asyncio.sleep(0.8)
        task.cancel()
        with pytest.raises(asyncio.CancelledError):
            await task

    asyncio.run(main())
    assert out.getvalue().endswith("\r\x1b[2K") and p.status == "PENDING"


# ---- the no-project hint ----


def test_membership_problems_are_recognized_from_the_server_messages() -> None:
    session = BackendAPIError(
        404,
        "Not Found",
        {"title": "Not Found", "detail": "No project (group) 'default' in domain 'default' that the user belongs to."},
    )
    assert membership_problem(session) == (True, "default", "default")
    folder = BackendAPIError(
        404, "Not Found", {"title": "Not Found", "msg": "No group 'lab' that you are a member of."}
    )
    assert membership_problem(folder) == (True, "lab", None)
    host = BackendAPIError(
        403,
        "Forbidden",
        {"title": "Forbidden", "detail": "You may not create folders on the storage host 'x'; see GET ..."},
    )
    assert membership_problem(host) == (False, None, None)
    assert membership_problem(BackendAPIError(404, "Not Found", {"title": "No such session"})) is None
    assert membership_problem(ValueError("No group 'x' that you are a member of.")) is None


def test_no_project_hint_names_the_add_users_command() -> None:
    uid = "0b0f3c5e-1111-2222-3333-444455556666"
    assert format_no_project_hint("default", "default", uid, []) == (
        "you belong to no project; an admin can add you with: "
        f"backend.ai admin group add-users default -d default {uid}"
    )
    other = format_no_project_hint("default", "default", uid, ["lab", "vision"])
    assert "pick one of yours (lab, vision) with -g/--group" in other and f"add-users default -d default {uid}" in other
    assert format_no_project_hint(None, None, None, None).endswith("backend.ai admin group add-users PROJECT USER_UUID")


# ---- both shapes of changing fields ----


def test_file_lists_come_as_a_list_or_as_a_json_string() -> None:
    files = [{"filename": "a.txt", "size": 3, "mode": "-rw-r--r--", "mtime": "1.0"}]
    assert decode_file_list(files) == files
    assert decode_file_list(json.dumps(files)) == files
    assert decode_file_list("") == [] and decode_file_list(None) == []
    from ai.backend.client.exceptions import BackendClientError

    with pytest.raises(BackendClientError, match="file list"):
        decode_file_list("{not json")
    with pytest.raises(BackendClientError, match="file list"):
        decode_file_list(json.dumps({"a": 1}))


@pytest.mark.parametrize(
    ("body", "shown"),
    [
        ({"title": "Bad", "detail": "the detail", "msg": "the detail"}, "Bad: the detail (400)"),
        ({"title": "Bad", "msg": "only msg"}, "Bad: only msg (400)"),
        ({"title": "Bad", "detail": "the detail", "msg": "another"}, "Bad: the detail (400)"),
        ({"title": "Bad"}, "Bad (400)"),
    ],
)
def test_problem_bodies_show_detail_else_msg(body: dict[str, Any], shown: str) -> None:
    assert str(BackendAPIError(400, "Bad Request", body)) == shown
