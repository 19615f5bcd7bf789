"""Unit tests of the ``run`` logic: the execution state machine, parallelism limit, stats format."""

from __future__ import annotations

import asyncio
import io
from collections.abc import Mapping
from typing import Any

import pytest

from ai.backend.client.cli.pretty import Printer
from ai.backend.client.cli.run import exec_loop, format_stats, normalize_exit_code, run_limited


class ScriptedSession:
    """Answers ``execute()`` calls with prepared execution results and records the calls."""

    def __init__(self, results: list[dict[str, Any]]) -> None:
        self.results = list(results)
        self.calls: list[tuple[str | None, str, str, Mapping[str, Any] | None]] = []

    async def execute(
        self, run_id: str | None, code: str, mode: str = "query", opts: Mapping[str, Any] | None = None
    ) -> dict[str, Any]:
        self.calls.append((run_id, code, mode, opts))
        return self.results.pop(0)


async def test_query_mode_state_machine() -> None:
    sess = ScriptedSession(
        [
            {"runId": "r1", "status": "continued", "console": [["stdout", "Tick 1\n"]], "exitCode": None},
            {
                "runId": "r1",
                "status": "waiting-input",
                "console": [["stdout", "your name? "], ["stderr", "warn\n"]],
                "options": {"is_password": False},
            },
            {
                "runId": "r1",
                "status": "finished",
                "console": [["stdout", "hello, LABLUP!\n"], ["media", ["image/svg+xml", "<svg/>"]]],
                "exitCode": 3,
            },
        ]
    )
    out, err = io.StringIO(), io.StringIO()
    prompts: list[bool] = []

    def reader(is_password: bool) -> str:
        prompts.append(is_password)
        return "LABLUP"

    code = await exec_loop(
        sess, "query", "main()", stdout=out, stderr=err, printer=Printer(quiet=True), read_input=reader
    )
    assert code == 3
    assert sess.calls == [
        (None, "main()", "query", None),
        ("r1", "", "continue", None),
        ("r1", "LABLUP", "input", None),
    ]
    assert prompts == [False]
    assert out.getvalue() == (
        "Tick 1\nyour name? hello, LABLUP!\n"
        "----- output record (type: media) -----\n"
        '["image/svg+xml", "<svg/>"]\n'
        "----- end of record -----\n"
    )
    assert err.getvalue() == "warn\n"


async def test_batch_mode_passes_options_once() -> None:
    sess = ScriptedSession(
        [
            {"runId": "b1", "status": "clean-finished", "console": [], "exitCode": 0},
            {"runId": "b1", "status": "build-finished", "console": [["stdout", "built\n"]], "exitCode": 0},
            {"runId": "b1", "status": "finished", "console": [["stdout", "42\n"]], "exitCode": 0},
        ]
    )
    out, err = io.StringIO(), io.StringIO()
    opts = {"clean": "*", "build": "*", "exec": "python main.py"}
    code = await exec_loop(sess, "batch", "", opts=opts, stdout=out, stderr=err, printer=Printer(quiet=True))
    assert code == 0
    assert [c[2] for c in sess.calls] == ["batch", "continue", "continue"]
    assert sess.calls[0][3] == opts
    assert sess.calls[1][3] is None and sess.calls[2][3] is None
    assert out.getvalue() == "built\n42\n"


async def test_status_messages_go_to_stderr(capsys: pytest.CaptureFixture[str]) -> None:
    sess = ScriptedSession([{"runId": "r", "status": "finished", "console": [["stdout", "42\n"]], "exitCode": 0}])
    out = io.StringIO()
    await exec_loop(sess, "query", "print(42)", stdout=out, stderr=io.StringIO(), printer=Printer(), idx=0)
    captured = capsys.readouterr()
    assert out.getvalue() == "42\n"
    assert captured.out == ""
    assert "✔ [0] Execution finished. (exit code = 0)" in captured.err


async def test_unknown_status_fails() -> None:
    sess = ScriptedSession([{"runId": "r", "status": "bogus", "console": []}])
    code = await exec_loop(sess, "query", "x", stdout=io.StringIO(), stderr=io.StringIO(), printer=Printer(quiet=True))
    assert code == 1


async def test_generated_files_are_listed() -> None:
    sess = ScriptedSession(
        [
            {
                "runId": "r",
                "status": "finished",
                "console": [],
                "files": [{"name": "a.png", "url": "http://x/a"}],
            }
        ]
    )
    out = io.StringIO()
    code = await exec_loop(sess, "query", "x", stdout=out, stderr=io.StringIO(), printer=Printer(quiet=True))
    assert code is None
    assert out.getvalue() == "--- generated files ---\na.png: http://x/a\n--- end of generated files ---\n"


def test_normalize_exit_code() -> None:
    assert normalize_exit_code(None) == 0
    assert normalize_exit_code(0) == 0
    assert normalize_exit_code(127) == 127
    assert normalize_exit_code(-1) == 1
    assert normalize_exit_code(300) == 1


@pytest.mark.parametrize("limit", [1, 2, 3])
async def test_run_limited_enforces_max_parallel(limit: int) -> None:
    running = 0
    peak = 0

    def make_job(i: int) -> Any:
        async def job() -> int:
            nonlocal running, peak
            running += 1
            peak = max(peak, running)
            await asyncio.sleep(0.01)
            running -= 1
            return i

        return job

    results = await run_limited([make_job(i) for i in range(7)], limit)
    assert results == list(range(7))
    assert peak == limit


async def test_run_limited_rejects_zero() -> None:
    with pytest.raises(ValueError):
        await run_limited([], 0)


def test_format_stats_v1_and_v2() -> None:
    v1 = format_stats({"cpu_used": 12345, "mem_max_bytes": 2 * 1024 * 1024, "status": "terminated"})
    assert "cpu_used_msec  12,345" in v1
    assert "2.0 MiB" in v1
    assert "status" not in v1
    v2 = format_stats(
        {
            "version": 2,
            "cpu_util": {"current": "12.5", "pct": "12.5", "unit_hint": "percent"},
            "mem": {"current": "1048576", "stats.max": "2097152", "unit_hint": "bytes"},
        }
    )
    assert "cpu_util  12.5 %" in v2
    assert "mem       2.0 MiB" in v2
