"""Behaviour of the kernel runner, exercised as a real subprocess through RunnerClient."""

from __future__ import annotations

import asyncio
import os
import shutil
import signal
import statistics
import sys
import tempfile
import time
from collections.abc import AsyncIterator, Awaitable, Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pytest

from ai.backend.agent.runner_client import RunnerClient, RunnerConnectionError

RUNNER = Path(__file__).resolve().parents[2] / "src" / "ai" / "backend" / "kernel" / "runner.py"
FLUSH_TIMEOUT = 0.5
CAP = 524_288


@dataclass
class Runner:
    client: RunnerClient
    proc: asyncio.subprocess.Process
    socket: str
    workdir: Path


StartRunner = Callable[..., Awaitable[Runner]]


@pytest.fixture
async def start_runner(tmp_path: Path) -> AsyncIterator[StartRunner]:
    """Factory starting runners with a short socket path (AF_UNIX paths max ~107 bytes)."""
    started: list[Runner] = []
    sock_dirs: list[str] = []

    async def _start(*extra: str, runtime_type: str = "python") -> Runner:
        sock_dir = tempfile.mkdtemp(prefix="bai-rt-")
        sock_dirs.append(sock_dir)
        sock = os.path.join(sock_dir, "ipc", "runner.sock")  # "ipc" does not exist yet
        workdir = tmp_path / f"work{len(started)}"
        workdir.mkdir()
        proc = await asyncio.create_subprocess_exec(
            sys.executable, "-I", str(RUNNER),
            "--socket", sock,
            "--runtime-type", runtime_type,
            "--flush-timeout", str(FLUSH_TIMEOUT),
            "--workdir", str(workdir),
            *extra,
        )  # fmt: skip
        client = RunnerClient()
        runner = Runner(client, proc, sock, workdir)
        started.append(runner)
        await client.connect(sock, timeout=15)
        # Wait until the Python child is up, so that timing-sensitive tests don't
        # include its start-up in their first run.
        await run_to_end(client, "pass")
        return runner

    yield _start

    for runner in started:
        if not runner.client.closed:
            try:
                await asyncio.wait_for(runner.client.request("shutdown"), 5)
            except (TimeoutError, RunnerConnectionError):
                pass
            await runner.client.close()
        try:
            await asyncio.wait_for(runner.proc.wait(), 5)
        except TimeoutError:
            runner.proc.kill()
            await runner.proc.wait()
    for d in sock_dirs:
        shutil.rmtree(d, ignore_errors=True)


@pytest.fixture
async def runner(start_runner: StartRunner) -> Runner:
    return await start_runner()


async def run_to_end(
    client: RunnerClient,
    code: str,
    run_id: str | None = None,
    mode: str = "query",
    opts: dict[str, Any] | None = None,
) -> list[dict[str, Any]]:
    """Execute and keep calling ``continue`` until ``finished``; returns every response."""
    responses = [await client.execute(mode, code, run_id=run_id, opts=opts)]
    run_id = responses[0]["runId"]
    while responses[-1]["status"] != "finished":
        assert responses[-1]["status"] in ("continued", "clean-finished", "build-finished"), responses[-1]
        assert len(responses) < 50, responses
        responses.append(await client.execute("continue", run_id=run_id))
    return responses


def text_of(responses: list[dict[str, Any]], stream: str) -> str:
    return "".join(t for r in responses for s, t in r["console"] if s == stream)


async def query(client: RunnerClient, code: str) -> dict[str, Any]:
    """One query-mode execute that must finish within the flush timeout."""
    result = await client.execute("query", code)
    assert result["status"] == "finished", result
    return result


# -------------------------------------------------------------------------------------------


async def test_ping_and_result_shape(runner: Runner) -> None:
    pong = await runner.client.ping()
    assert pong["ok"] is True
    assert pong["runtime_type"] == "python"
    assert set(pong["features"]) >= {"query", "batch", "user-input"}

    result = await runner.client.execute("query", "print('hello')", run_id="r-1")
    assert result["id"] > 0
    assert {k: result[k] for k in ("runId", "status", "exitCode", "console", "options", "files")} == {
        "runId": "r-1",
        "status": "finished",
        "exitCode": 0,
        "console": [["stdout", "hello\n"]],
        "options": None,
        "files": [],
    }
    generated = await runner.client.execute("query", "pass")
    assert isinstance(generated["runId"], str) and generated["runId"]


async def test_socket_is_created_with_restricted_mode(runner: Runner) -> None:
    mode = os.stat(runner.socket).st_mode & 0o777
    assert mode & 0o007 == 0


async def test_globals_persist_between_runs(runner: Runner) -> None:
    await query(runner.client, "x = 6")
    result = await query(runner.client, "print(x * 7)")
    assert result["console"] == [["stdout", "42\n"]]
    result = await query(runner.client, "print(__name__)")
    assert result["console"] == [["stdout", "__main__\n"]]


async def test_cwd_is_workdir(runner: Runner) -> None:
    result = await query(runner.client, "import os; print(os.getcwd())")
    assert result["console"] == [["stdout", f"{os.path.realpath(runner.workdir)}\n"]]


async def test_stdout_stderr_interleaving_order(runner: Runner) -> None:
    code = "import sys\nprint('a')\nprint('b', file=sys.stderr)\nprint('c')\nprint('d')\n"
    result = await query(runner.client, code)
    assert result["console"] == [["stdout", "a\n"], ["stderr", "b\n"], ["stdout", "c\nd\n"]]


async def test_fd_level_output_is_captured(runner: Runner) -> None:
    result = await query(runner.client, "import os\nprint('a')\nos.system('echo hi')\nprint('b')")
    assert result["console"] == [["stdout", "a\nhi\nb\n"]]
    result = await query(runner.client, "import os\nos.write(2, b'raw\\n')")
    assert ["stderr", "raw\n"] in result["console"]


async def test_exception_goes_to_stderr(runner: Runner) -> None:
    result = await query(runner.client, "print('before')\n1/0")
    assert result["exitCode"] == 0
    assert result["console"][0] == ["stdout", "before\n"]
    kind, text = result["console"][1]
    assert kind == "stderr"
    assert text.startswith("Traceback (most recent call last):\n")
    assert 'File "<input>", line 2' in text
    assert "ZeroDivisionError: division by zero" in text
    assert "repl.py" not in text
    result = await query(runner.client, "def broken(:\n  pass")
    assert "SyntaxError" in result["console"][0][1]


async def test_system_exit_does_not_kill_the_session(runner: Runner) -> None:
    await query(runner.client, "kept = 1")
    result = await query(runner.client, "import sys; print('bye'); sys.exit(3)")
    assert result["console"] == [["stdout", "bye\n"]]
    assert result["exitCode"] == 3
    result = await query(runner.client, "print(kept)")
    assert result["console"] == [["stdout", "1\n"]]


async def test_input_round_trip(runner: Runner) -> None:
    client = runner.client
    code = "name = input('What is your name?\\n>> ')\nprint('Hello, ' + name + '!')"
    first = await client.execute("query", code, run_id="ask")
    assert first["status"] == "waiting-input"
    assert first["exitCode"] is None
    assert first["options"] == {"is_password": False}
    assert first["console"] == [["stdout", "What is your name?\n>> "]]
    second = await client.execute("input", "Lablup", run_id="ask")
    assert second["status"] == "finished"
    assert second["console"] == [["stdout", "Hello, Lablup!\n"]]
    # Input for a run that is not waiting is an error, not a hang.
    bad = await client.execute("input", "x", run_id="ask")
    assert "error" in bad


async def test_getpass_sets_is_password(runner: Runner) -> None:
    client = runner.client
    first = await client.execute("query", "import getpass\npw = getpass.getpass('Secret: ')", run_id="pw")
    assert first["status"] == "waiting-input"
    assert first["options"] == {"is_password": True}
    assert first["console"] == [["stdout", "Secret: "]]
    second = await client.execute("user-input", "hunter2", run_id="pw")
    assert second["status"] == "finished"
    result = await query(client, "print(len(pw))")
    assert result["console"] == [["stdout", "7\n"]]


async def test_long_run_is_continued(runner: Runner) -> None:
    client = runner.client
    code = "import time\nprint('tick 1', flush=True)\ntime.sleep(0.8)\nprint('tick 2')"
    t0 = time.monotonic()
    first = await client.execute("query", code, run_id="long")
    elapsed = time.monotonic() - t0
    assert first["status"] == "continued"
    assert first["exitCode"] is None
    assert first["console"] == [["stdout", "tick 1\n"]]
    assert elapsed >= FLUSH_TIMEOUT * 0.9
    second = await client.execute("continue", run_id="long")
    assert second["status"] == "finished"
    assert second["console"] == [["stdout", "tick 2\n"]]
    unknown = await client.execute("continue", run_id="long")
    assert "error" in unknown


async def test_interrupt_infinite_loop(runner: Runner) -> None:
    client = runner.client
    await query(client, "survivor = 'still here'")
    task = asyncio.create_task(client.execute("query", "while True: pass", run_id="spin"))
    done: set[asyncio.Task[dict[str, Any]]] = set()
    for _ in range(40):
        assert (await client.request("interrupt"))["ok"] is True
        done, _pending = await asyncio.wait({task}, timeout=0.05)
        if done:
            break
    assert done, "interrupt did not stop the loop"
    responses = [task.result()]
    while responses[-1]["status"] != "finished":
        responses.append(await client.execute("continue", run_id="spin"))
    err = text_of(responses, "stderr")
    assert "KeyboardInterrupt" in err
    result = await query(client, "print(survivor)")
    assert result["console"] == [["stdout", "still here\n"]]


async def test_interrupt_while_waiting_for_input(runner: Runner) -> None:
    client = runner.client
    first = await client.execute("query", "input('? ')", run_id="wi")
    assert first["status"] == "waiting-input"
    again = await client.execute("continue", run_id="wi")  # still waiting: said again
    assert again["status"] == "waiting-input"
    assert again["options"] == {"is_password": False}
    await client.request("interrupt")
    last = await client.execute("continue", run_id="wi")
    assert last["status"] == "finished"
    assert "KeyboardInterrupt" in text_of([last], "stderr")


async def test_interrupt_when_idle_is_harmless(runner: Runner) -> None:
    assert (await runner.client.request("interrupt"))["ok"] is True
    result = await query(runner.client, "print('ok')")
    assert result["console"] == [["stdout", "ok\n"]]


async def test_completion(runner: Runner) -> None:
    client = runner.client
    await query(client, "import os\nmy_variable = 1")
    result = await client.request("complete", code="os.pa", opts={"post": "", "line": "os.pa", "row": 0, "col": 5})
    assert "os.path" in result["result"]
    result = await client.request("complete", code="x = my_va", opts=None)
    assert result["result"] == ["my_variable"]
    result = await client.request("complete", code="zzz_no_such_name", opts={})
    assert result["result"] == []


async def test_restart_resets_globals_and_keeps_files(runner: Runner) -> None:
    client = runner.client
    await query(client, "gone = 1\nopen('kept.txt', 'w').write('data')")
    assert (await client.request("restart"))["ok"] is True
    result = await query(client, "print('gone' in globals(), open('kept.txt').read())")
    assert result["console"] == [["stdout", "False data\n"]]


async def test_batch_build_and_exec(runner: Runner) -> None:
    opts = {"clean": "", "build": "echo building", "exec": "echo run; echo oops >&2; exit 3"}
    responses = await run_to_end(runner.client, "", mode="batch", run_id="b1", opts=opts)
    statuses = [(r["status"], r["exitCode"]) for r in responses if r["status"] != "continued"]
    assert statuses == [("clean-finished", 0), ("build-finished", 0), ("finished", 3)]
    build = responses[1]
    assert build["console"] == [["stdout", "building\n"]]
    assert text_of(responses[2:], "stdout") == "run\n"
    assert text_of(responses[2:], "stderr") == "oops\n"


async def test_batch_build_failure_skips_exec(runner: Runner) -> None:
    runner.workdir.joinpath("marker").write_text("")
    opts = {"clean": "rm marker", "build": "echo broken >&2; exit 2", "exec": "echo never"}
    responses = await run_to_end(runner.client, "", mode="batch", opts=opts)
    statuses = [(r["status"], r["exitCode"]) for r in responses if r["status"] != "continued"]
    assert statuses == [("clean-finished", 0), ("build-finished", 2), ("finished", 127)]
    assert not runner.workdir.joinpath("marker").exists()
    assert text_of(responses, "stderr") == "broken\n"
    assert "never" not in text_of(responses, "stdout")


async def test_batch_default_exec(runner: Runner) -> None:
    if shutil.which("python3") is None:
        pytest.skip("python3 is not on PATH")
    runner.workdir.joinpath("main.py").write_text("print('from main')\n")
    responses = await run_to_end(runner.client, "", mode="batch", opts={"build": "*", "exec": "*"})
    assert responses[-1]["exitCode"] == 0
    assert text_of(responses, "stdout") == "from main\n"


async def test_output_cap(runner: Runner) -> None:
    code = "print('x' * 600_000)\nimport sys; print('after', file=sys.stderr)\nprint('end')"
    result = await query(runner.client, code)
    console = result["console"]
    assert console[0] == ["stdout", "x" * (CAP // 2)]  # the head of the stream
    assert console[1] == ["stderr", "after\n"]  # the other stream is unaffected
    kind, rest = console[2]  # then a note of how much was cut, and the tail
    assert kind == "stdout" and len(console) == 3
    note, tail = rest[1:].split("\n", 1)
    cut = 600_000 + len("\nend\n") - CAP
    assert "truncated" in note and f"{cut} characters cut" in note and len(note) < 200
    assert tail == "x" * (CAP // 2 - len("\nend\n")) + "\nend\n"
    # The next run has its own budget.
    result = await query(runner.client, "print('fine')")
    assert result["console"] == [["stdout", "fine\n"]]


async def test_overlapping_runs_are_fifo(runner: Runner) -> None:
    client = runner.client
    first = asyncio.create_task(
        client.execute("query", "import time\ntime.sleep(0.7)\norder = ['a']\nprint('A')", run_id="a")
    )
    await asyncio.sleep(0.05)  # let "a" be queued first
    second = asyncio.create_task(client.execute("query", "order.append('b')\nprint(order)", run_id="b"))
    a1, b1 = await asyncio.gather(first, second)
    assert a1["status"] == "continued"
    assert b1["status"] == "continued"
    assert b1["console"] == []
    a2 = await client.execute("continue", run_id="a")
    assert a2["status"] == "finished"
    assert a2["console"] == [["stdout", "A\n"]]
    b2 = await client.execute("continue", run_id="b")
    assert b2["status"] == "finished"
    assert b2["console"] == [["stdout", "['a', 'b']\n"]]


async def test_concurrent_requests_on_one_connection(runner: Runner) -> None:
    client = runner.client
    slow = asyncio.create_task(run_to_end(client, "import time; time.sleep(0.4); print('slow')"))
    await asyncio.sleep(0.05)
    pongs = await asyncio.gather(*(client.ping() for _ in range(10)))
    assert not slow.done()  # the pings were answered while the execute was pending
    assert len({p["id"] for p in pongs}) == 10
    assert text_of(await slow, "stdout") == "slow\n"


async def test_sigkill_is_reported_and_session_recovers(runner: Runner) -> None:
    client = runner.client
    await query(client, "lost = 1")
    result = await client.execute("query", "import os, signal\nos.kill(os.getpid(), signal.SIGKILL)")
    assert result["status"] == "finished"
    assert result["exitCode"] == -9
    assert result["killed"] == {"signal": 9, "oom": False}
    assert "SIGKILL" in text_of([result], "stderr")
    result = await query(client, "print('lost' in globals())")
    assert result["console"] == [["stdout", "False\n"]]


async def test_oom_kill_detected_from_cgroup_counter(start_runner: StartRunner, tmp_path: Path) -> None:
    events = tmp_path / "memory.events"
    events.write_text("low 0\nhigh 0\nmax 3\noom 1\noom_kill 1\n")
    runner = await start_runner("--oom-events-file", str(events))
    code = (
        f"open({str(events)!r}, 'w').write('oom 2\\noom_kill 2\\n')\n"
        "import os, signal\nos.kill(os.getpid(), signal.SIGKILL)"
    )
    result = await runner.client.execute("query", code)
    assert result["killed"] == {"signal": 9, "oom": True}
    assert "out-of-memory" in text_of([result], "stderr")


async def test_unknown_op_and_bad_requests_get_errors(runner: Runner) -> None:
    client = runner.client
    reply = await client.request("no-such-op")
    assert "unknown op" in reply["error"]
    reply = await client.execute("sideways", "x")
    assert "error" in reply
    reply = await client.execute("continue", run_id="never-started")
    assert "error" in reply
    reply = await client.request("execute", mode="query", code=123)
    assert "error" in reply
    assert (await client.ping())["ok"] is True


async def test_shutdown_removes_socket(runner: Runner) -> None:
    assert os.path.exists(runner.socket)
    reply = await runner.client.request("shutdown")
    assert reply["ok"] is True
    assert await asyncio.wait_for(runner.proc.wait(), 5) == 0
    assert not os.path.exists(runner.socket)
    with pytest.raises(RunnerConnectionError):
        for _ in range(100):  # the close may take a moment to be noticed
            await runner.client.ping()
            await asyncio.sleep(0.01)
    assert runner.client.closed


async def test_reaper_mode_forwards_sigterm(start_runner: StartRunner) -> None:
    runner = await start_runner("--reaper")
    await query(runner.client, "print(1)")
    runner.proc.send_signal(signal.SIGTERM)
    assert await asyncio.wait_for(runner.proc.wait(), 5) == 0
    assert not os.path.exists(runner.socket)


async def test_connect_times_out_without_runner() -> None:
    client = RunnerClient()
    with pytest.raises(RunnerConnectionError):
        await client.connect("/nonexistent-dir-for-bai-test/runner.sock", timeout=0.05)
    assert client.closed


async def test_print_round_trip_latency(runner: Runner) -> None:
    client = runner.client
    for _ in range(20):
        await client.execute("query", "print(1)")
    samples = []
    for _ in range(300):
        t0 = time.perf_counter()
        result = await client.execute("query", "print(1)")
        samples.append(time.perf_counter() - t0)
        assert result["console"] == [["stdout", "1\n"]]
    print(
        f"\nexecute print(1) round trip: median {statistics.median(samples) * 1e3:.3f} ms,"
        f" p90 {sorted(samples)[int(len(samples) * 0.9)] * 1e3:.3f} ms"
    )
