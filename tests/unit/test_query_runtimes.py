"""Query mode of the non-Python runtimes (C, C++, Node.js, Lua) through a real runner subprocess.

The compilers and interpreters of the host are used; a runtime whose tool is missing here is skipped
(the kernel images, which have them all, are covered by tests/integration/test_images_runtimes.py).
"""

from __future__ import annotations

import asyncio
import shutil
import time
from typing import Any

import pytest

from ai.backend.kernel import query_runtimes

from .test_runner import CAP, Runner, StartRunner, run_to_end, text_of
from .test_runner import start_runner as start_runner  # noqa: F401 (the fixture)


def console_of(responses: list[dict[str, Any]]) -> list[list[Any]]:
    """The console items of a whole run (several answers when compiling outlasts the flush timeout)."""
    merged: list[list[Any]] = []
    for response in responses:
        for stream, text in response["console"]:
            if merged and merged[-1][0] == stream:
                merged[-1][1] += text
            else:
                merged.append([stream, text])
    return merged


async def run(client: Any, code: str) -> tuple[list[list[Any]], int]:
    """Run a query to its end: (console items, exit code)."""
    responses = await run_to_end(client, code)
    return console_of(responses), responses[-1]["exitCode"]


needs_gcc = pytest.mark.skipif(shutil.which("gcc") is None, reason="gcc is not installed")
needs_gxx = pytest.mark.skipif(shutil.which("g++") is None, reason="g++ is not installed")
needs_node = pytest.mark.skipif(shutil.which("node") is None, reason="node is not installed")
needs_lua = pytest.mark.skipif(
    not any(shutil.which(x) for x in ("lua5.3", "lua5.4", "lua")), reason="lua is not installed"
)


def test_snippet_without_main_becomes_the_body_of_main(tmp_path: object) -> None:
    command, scratch = query_runtimes.prepare_query("c", 'printf("hi\\n");')
    try:
        source = open(f"{scratch}/input.c").read()
        assert "int main(void) {" in source and "#include <stdio.h>" in source
        assert '#line 1 "<input>"\nprintf("hi\\n");' in source
        assert command.startswith("rm -f ") and "gcc -Wall" in command and command.endswith(f"{scratch}/input")
        # A full program is kept as written (only the #line marker is added).
        _, again = query_runtimes.prepare_query("c", "int main(void) { return 0; }", scratch)
        assert again == scratch
        assert open(f"{scratch}/input.c").read() == '#line 1 "<input>"\nint main(void) { return 0; }\n'
    finally:
        shutil.rmtree(scratch)


def test_unknown_runtime_is_not_a_query_runtime() -> None:
    assert set(query_runtimes.RUNTIMES) == {"c", "cpp", "nodejs", "lua"}
    with pytest.raises(KeyError):
        query_runtimes.prepare_query("python", "print(1)")


@needs_gcc
async def test_c_query_compiles_and_runs(start_runner: StartRunner) -> None:  # noqa: F811
    runner = await start_runner(runtime_type="c")
    client = runner.client
    assert await run(client, 'printf("%d\\n", 6 * 7);') == ([["stdout", "42\n"]], 0)
    full = '#include <stdio.h>\nint main(void) { puts("full"); fputs("err\\n", stderr); return 3; }'
    assert await run(client, full) == ([["stdout", "full\n"], ["stderr", "err\n"]], 3)
    # Each query is a fresh program: nothing is shared, but files in the work dir stay.
    assert await run(client, 'FILE *f = fopen("made-by-c.txt", "w"); fputs("x", f); fclose(f);') == ([], 0)
    assert (runner.workdir / "made-by-c.txt").read_text() == "x"


@needs_gcc
async def test_c_compile_error_goes_to_stderr(start_runner: StartRunner) -> None:  # noqa: F811
    runner = await start_runner(runtime_type="c")
    console, exit_code = await run(runner.client, "int x = ;")
    assert exit_code == 1
    assert [s for s, _ in console] == ["stderr"]
    assert "<input>:1:" in console[0][1] and "error" in console[0][1]


@needs_gcc
async def test_c_output_streams_across_continuations(start_runner: StartRunner) -> None:  # noqa: F811
    runner = await start_runner(runtime_type="c")
    code = 'printf("tick\\n"); fflush(stdout); sleep(2); printf("done\\n");'
    responses = await run_to_end(runner.client, code)
    assert responses[0]["status"] == "continued" and responses[0]["console"] == [["stdout", "tick\n"]]
    assert text_of(responses, "stdout") == "tick\ndone\n"
    assert responses[-1]["exitCode"] == 0


@needs_gcc
async def test_c_output_is_capped(start_runner: StartRunner) -> None:  # noqa: F811
    runner = await start_runner(runtime_type="c")
    code = 'for (int i = 0; i < 200000; i++) fputs("0123456789", stdout);'
    responses = await run_to_end(runner.client, code)
    out = text_of(responses, "stdout")
    assert out.startswith("0123456789") and "[output truncated: stdout exceeded" in out
    assert len(out) < CAP + 500


@needs_gcc
async def test_interrupt_kills_a_c_query(start_runner: StartRunner) -> None:  # noqa: F811
    runner = await start_runner(runtime_type="c")
    client = runner.client
    # This program ignores SIGINT: the interrupt must still end it (SIGKILL after a grace period).
    code = "#include <signal.h>\nint main(void) { signal(SIGINT, SIG_IGN); for (;;) {} }"
    first = await client.execute("query", code, run_id="spin")
    assert first["status"] == "continued"
    started = time.monotonic()
    assert (await client.request("interrupt"))["ok"] is True
    responses = [first]
    while responses[-1]["status"] != "finished":
        responses.append(await client.execute("continue", run_id="spin"))
        assert time.monotonic() - started < 10, responses
    assert responses[-1]["exitCode"] == 128 + 9
    assert await run(client, 'puts("alive");') == ([["stdout", "alive\n"]], 0)


@needs_gxx
async def test_cpp_query_and_default_batch(start_runner: StartRunner) -> None:  # noqa: F811
    runner = await start_runner(runtime_type="cpp")
    client = runner.client
    # (g++ may take longer than one flush timeout: the first answers can be "continued".)
    responses = await run_to_end(client, "vector<int> v{1, 2, 3}; cout << accumulate(v.begin(), v.end(), 0) << endl;")
    assert text_of(responses, "stdout") == "6\n" and text_of(responses, "stderr") == "", responses
    assert responses[-1]["exitCode"] == 0
    (runner.workdir / "main.cpp").write_text('#include <iostream>\nint main() { std::cout << "batch++\\n"; }\n')
    responses = await run_to_end(client, "", mode="batch", opts={"build": "*", "exec": "*"})
    assert [r["status"] for r in responses][-2:] == ["build-finished", "finished"]
    assert text_of(responses, "stdout") == "batch++\n" and responses[-1]["exitCode"] == 0
    assert (await client.request("complete", code="pri"))["result"] == []


@needs_node
async def test_nodejs_query_and_batch(start_runner: StartRunner) -> None:  # noqa: F811
    runner = await start_runner(runtime_type="nodejs")
    client = runner.client
    assert await run(client, "console.log(1 + 1); console.error('to stderr')") == (
        [["stdout", "2\n"], ["stderr", "to stderr\n"]],
        0,
    )
    console, exit_code = await run(client, "throw new Error('boom')")
    assert exit_code == 1 and "Error: boom" in console[-1][1]
    (runner.workdir / "main.js").write_text("console.log('from main.js')\n")
    responses = await run_to_end(client, "", mode="batch", opts={"build": "*", "exec": "*"})
    assert text_of(responses, "stdout") == "from main.js\n" and responses[-1]["exitCode"] == 0


@needs_node
async def test_restart_of_a_query_runtime_is_harmless(start_runner: StartRunner) -> None:  # noqa: F811
    runner = await start_runner(runtime_type="nodejs")
    assert (await runner.client.request("restart"))["ok"] is True
    assert await run(runner.client, "console.log('after restart')") == ([["stdout", "after restart\n"]], 0)


@needs_lua
async def test_lua_query(start_runner: StartRunner) -> None:  # noqa: F811
    runner = await start_runner(runtime_type="lua")
    assert await run(runner.client, "print(6 * 7)") == ([["stdout", "42\n"]], 0)


async def test_a_missing_compiler_is_reported(start_runner: StartRunner, monkeypatch: pytest.MonkeyPatch) -> None:  # noqa: F811
    monkeypatch.setenv("PATH", "/nonexistent")
    runner: Runner = await start_runner(runtime_type="lua")
    console, exit_code = await asyncio.wait_for(run(runner.client, "print(1)"), 30)
    assert exit_code == 127 and "not found" in console[-1][1]
