"""Output kept when the Python process dies, and the size limits of answers (runner, agent, manager)."""

from __future__ import annotations

import asyncio
import json
import os
import tempfile
from collections.abc import AsyncIterator

import pytest
from aiohttp import web

from ai.backend.agent import runner_client
from ai.backend.agent.kernel_tasks import log_tail
from ai.backend.agent.runner_client import RunnerClient, RunnerConnectionError
from ai.backend.common.problems import BadGateway
from ai.backend.kernel import runner as runner_mod
from ai.backend.kernel.protocol import COMPLETE_MAX_CHARS, COMPLETE_MAX_ITEMS, cap_completions, encode
from ai.backend.manager import agent_client

from .test_runner import CAP, Runner, run_to_end, text_of
from .test_runner import runner as runner  # noqa: F401 (the fixture)
from .test_runner import start_runner as start_runner  # noqa: F401 (the fixture)

# -- output of a Python process that dies -----------------------------------------------------


@pytest.mark.parametrize(
    ("code", "expected", "exit_code"),
    [
        ("print('A')\nimport os\nos._exit(3)", "A\n", 3),
        ("import os\nos.write(1, b'FD\\n')\nprint('PY')\nos._exit(4)", "FD\nPY\n", 4),
        ("print('B')\nimport os, signal\nos.kill(os.getpid(), signal.SIGKILL)", "B\n", -9),
        # bytearray() zero-fills holding the GIL: no helper thread may send anything meanwhile.
        ("print('C')\nimport os, signal\nb = bytearray(1 << 28)\nos.kill(os.getpid(), signal.SIGKILL)", "C\n", -9),
    ],
)
async def test_output_written_before_the_process_dies_is_kept(
    runner: Runner,
    code: str,
    expected: str,  # noqa: F811
    exit_code: int,
) -> None:
    responses = await run_to_end(runner.client, code)
    out = text_of(responses, "stdout")
    assert sorted(out.splitlines()) == sorted(expected.splitlines()), responses
    assert responses[-1]["exitCode"] == exit_code
    again = await run_to_end(runner.client, "print('next')")
    assert text_of(again, "stdout") == "next\n"


async def test_output_before_a_timeout_is_kept_and_the_note_comes_last(runner: Runner) -> None:  # noqa: F811
    first = await runner.client.execute("query", "print('T')\nsum(range(10**12))", run_id="t1", opts={"timeout": 1})
    responses = [first]
    while responses[-1]["status"] not in ("finished", "exec-timeout"):
        responses.append(await runner.client.execute("continue", run_id="t1"))
    assert responses[-1]["status"] == "exec-timeout"
    assert text_of(responses, "stdout") == "T\n"
    assert responses[-1]["console"][-1][0] == "stderr" and "timed out" in responses[-1]["console"][-1][1]


def test_journal_is_read_only_past_the_last_frame_received() -> None:
    buf = bytearray(runner_mod.JOURNAL_HEADER.size)
    for kind, data in ((b"o", b"out"), (b"e", "\u00e9".encode()), (b"r", json.dumps(["html", "<b>"]).encode())):
        buf += runner_mod.JOURNAL_RECORD.pack(kind, len(data)) + data
    runner_mod.JOURNAL_HEADER.pack_into(buf, 0, 5, len(buf) - runner_mod.JOURNAL_HEADER.size)
    assert runner_mod.read_journal(bytes(buf), 4) == [["stdout", "out"], ["stderr", "\u00e9"], ["html", "<b>"]]
    assert runner_mod.read_journal(bytes(buf), 5) == []  # that frame arrived


# -- console cap: head and tail --------------------------------------------------------------


def test_console_keeps_head_and_tail_and_says_how_much_was_cut() -> None:
    run = runner_mod.Run("r", "query", "", None)
    run.add_output("stdout", "H" * (CAP // 2))
    for _ in range(100):
        run.add_output("stdout", "m" * 10_000)
    run.add_output("stderr", "err\n")
    run.add_output("stdout", "T" * 1000)
    result = run.take_continued()
    out = "".join(t for s, t in result["console"] if s == "stdout")
    assert out.startswith("H" * (CAP // 2)) and out.endswith("T" * 1000)
    assert f"{100 * 10_000 + 1000 - CAP // 2} characters cut" in out
    assert len(out) < CAP + 300
    assert ["stderr", "err\n"] in result["console"]
    # The next answer has its own budget.
    run.add_output("stdout", "fine")
    assert run.take_continued()["console"] == [["stdout", "fine"]]


# -- completions -----------------------------------------------------------------------------


def test_completions_are_capped() -> None:
    assert cap_completions(["a", "b" * 5000, 3, "c"]) == ["a", "c"]
    assert len(cap_completions([f"n{i}" for i in range(5000)])) == COMPLETE_MAX_ITEMS
    assert sum(map(len, cap_completions(["x" * 1000] * 200))) <= COMPLETE_MAX_CHARS
    assert cap_completions("not a list") == []


async def test_a_huge_completion_is_capped_in_the_runner(runner: Runner) -> None:  # noqa: F811
    await run_to_end(runner.client, "globals()['zq' + 'a' * 10_000_000] = 1\nzqshort = 2")
    res = await runner.client.request("complete", code="zq", opts={})
    assert res["result"] == ["zqshort"]


# -- the agent's connection to a runner it does not trust ------------------------------------


@pytest.fixture
async def fake_runner() -> AsyncIterator[tuple[str, list[bytes]]]:
    """A Unix socket that answers each request with the frames queued in the list (then the real answer)."""
    d = tempfile.mkdtemp(prefix="bai-fr-")
    path = os.path.join(d, "runner.sock")
    script: list[bytes] = []

    async def serve(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        from ai.backend.kernel.protocol import read_message

        while (msg := await read_message(reader)) is not None:
            for frame in script:
                writer.write(frame)
            if msg.get("op") != "hang":
                writer.write(encode({"id": msg["id"], "ok": True}))
            await writer.drain()

    server = await asyncio.start_unix_server(serve, path=path)
    yield path, script
    server.close()
    os.unlink(path)
    os.rmdir(d)


async def test_an_oversized_frame_closes_the_connection_unread(
    fake_runner: tuple[str, list[bytes]], caplog: pytest.LogCaptureFixture
) -> None:
    path, script = fake_runner
    client = await RunnerClient.open(path, timeout=5)
    assert (await client.request("ping"))["ok"] is True
    # Announces 200 MiB, sends a little: the client must give up at the header, not wait for the body.
    script.append((200 << 20).to_bytes(4, "big") + b"{" * 1000)
    with pytest.raises(RunnerConnectionError, match="over the limit"):
        await asyncio.wait_for(client.request("ping"), 5)
    assert client.closed
    assert "over the limit" in caplog.text
    await client.close()


async def test_unsolicited_frames_close_the_connection(fake_runner: tuple[str, list[bytes]]) -> None:
    path, script = fake_runner
    client = await RunnerClient.open(path, timeout=5)
    script.append(encode({"id": 424242, "x": "y"}))
    with pytest.raises(RunnerConnectionError, match="unsolicited"):
        await asyncio.wait_for(client.request("ping"), 5)
    await client.close()
    # The late answer of a call given up on is not unsolicited.
    script.clear()
    client = await RunnerClient.open(path, timeout=5)
    with pytest.raises(TimeoutError):
        await asyncio.wait_for(client.request("hang"), 0.2)
    script.append(encode({"id": 1, "late": True}))
    assert (await asyncio.wait_for(client.request("ping"), 5))["ok"] is True
    assert not client.closed
    await client.close()


def test_frame_cap_is_above_the_largest_execute_answer() -> None:
    worst = 2 * CAP * 12 + runner_mod.RICH_LIMIT + 7 * 1024 * 1024
    assert worst < runner_client.MAX_FRAME_SIZE < agent_client.MAX_ANSWER_SIZE


# -- logs and the manager's reading of agent answers -----------------------------------------


def test_log_tail() -> None:
    assert log_tail("abc", 5) == "abc"
    cut = log_tail("0123456789", 4)
    assert cut.endswith("\n6789") and "6 earlier characters cut" in cut


async def test_manager_refuses_an_agent_answer_over_the_limit(monkeypatch: pytest.MonkeyPatch) -> None:
    async def big(request: web.Request) -> web.StreamResponse:
        resp = web.StreamResponse()  # chunked: no Content-Length to check up front
        await resp.prepare(request)
        for _ in range(64):
            await resp.write(b" " * 65536)
        await resp.write(b"{}")
        return resp

    async def sized(request: web.Request) -> web.Response:
        return web.json_response({"pad": "x" * 3_000_000})

    async def small(request: web.Request) -> web.Response:
        return web.json_response({"ok": True})

    app = web.Application()
    app.router.add_get("/big", big)
    app.router.add_get("/sized", sized)
    app.router.add_get("/small", small)
    runner_ = web.AppRunner(app)
    await runner_.setup()
    site = web.TCPSite(runner_, "127.0.0.1", 0)
    await site.start()
    port = site._server.sockets[0].getsockname()[1]  # type: ignore[union-attr]
    monkeypatch.setattr(agent_client, "MAX_ANSWER_SIZE", 1 << 20)
    rpc = agent_client.AgentRPC("secret")
    try:
        addr = f"http://127.0.0.1:{port}"
        assert await rpc.call(addr, "GET", "/small") == {"ok": True}
        for path in ("/big", "/sized"):
            with pytest.raises(BadGateway, match="over the limit"):
                await rpc.call(addr, "GET", path)
    finally:
        await rpc.close()
        await runner_.cleanup()
