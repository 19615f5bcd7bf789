"""``ComputeSession.stream_execute`` (SDK) against a real cluster: query runs, user input, batch runs."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import pytest

from ai.backend.client.config import APIConfig
from ai.backend.client.exceptions import BackendAPIError, BackendClientError
from ai.backend.client.session import AsyncSession
from ai.backend.client.ws import WSMsgType

from .conftest import USER, Cluster

pytestmark = pytest.mark.docker


def _config(cluster: Cluster) -> APIConfig:
    return APIConfig(
        endpoint=cluster.endpoint, endpoint_type="api", access_key=USER["access_key"], secret_key=USER["secret_key"]
    )


def _stdout(results: list[dict[str, Any]]) -> str:
    return "".join(item[1] for r in results for item in r["console"] if item[0] == "stdout")


@pytest.fixture(scope="module")
def stream_session(cluster: Cluster) -> Any:
    r = cluster.request("POST", "/session", {"image": "python", "name": "stream-sdk"})
    assert r.status_code in (200, 201) and r.json()["status"] == "RUNNING", r.text
    yield "stream-sdk"
    cluster.request("DELETE", "/session/stream-sdk")


async def test_query_with_continuations(cluster: Cluster, stream_session: str) -> None:
    code = "import time\nfor i in range(3):\n    print(i, flush=True)\n    time.sleep(0.8)\nprint(6*7)"
    async with AsyncSession(config=_config(cluster)) as api:
        sess = api.ComputeSession(stream_session)
        results: list[dict[str, Any]] = []
        async with sess.stream_execute(code, mode="query") as stream:
            while True:
                result = await stream.receive_json(timeout=60)
                results.append(result)
                if result["status"] == "finished":
                    break
        statuses = [r["status"] for r in results]
        # The server continues the run by itself: several results, one run id, no client bookkeeping.
        assert statuses[-1] == "finished" and "continued" in statuses, statuses
        assert len({r["runId"] for r in results}) == 1
        assert _stdout(results) == "0\n1\n2\n42\n"
        assert stream.closed


async def test_user_input_like_the_spec_example(cluster: Cluster, stream_session: str) -> None:
    aiohttp = pytest.importorskip("aiohttp")
    code = "name = input('who? ')\nprint('hi', name)"
    async with AsyncSession(config=_config(cluster)) as api:
        kern = api.ComputeSession(stream_session)
        seen: list[dict[str, Any]] = []
        async with kern.stream_execute(code, mode="query") as stream:
            # The client-sdk-cli.md §6 example, verbatim in spirit (aiohttp's message type constants).
            async for result in stream:
                if result.type != aiohttp.WSMsgType.TEXT:
                    continue
                result = json.loads(result.data)
                seen.append(result)
                if result["status"] == "waiting-input":
                    await stream.send_text("bob")
        assert [r["status"] for r in seen][-1] == "finished"
        assert "waiting-input" in [r["status"] for r in seen]
        assert "hi bob\n" in _stdout(seen)
        assert "who? " in _stdout(seen)


async def test_send_str_input_and_message_objects(cluster: Cluster, stream_session: str) -> None:
    code = "a = int(input())\nb = int(input())\nprint(a * b)"
    async with AsyncSession(config=_config(cluster)) as api:
        sess = api.ComputeSession(stream_session)
        answers = iter(["6", "7"])
        results = []
        async with sess.stream_execute(code) as stream:
            async for msg in stream:
                assert msg.type == WSMsgType.TEXT
                result = msg.json()
                results.append(result)
                if result["status"] == "waiting-input":
                    await stream.send_str(next(answers))
        assert _stdout(results).strip().splitlines()[-1] == "42"
        assert next(answers, None) is None  # both inputs were asked for


async def test_batch_mode(
    cluster: Cluster, stream_session: str, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    (tmp_path / "main.py").write_text("import sys\nprint('batch', sys.argv[1:])\nsys.exit(3)\n")
    monkeypatch.chdir(tmp_path)
    async with AsyncSession(config=_config(cluster)) as api:
        sess = api.ComputeSession(stream_session)
        await sess.upload(["main.py"])
        results = []
        async with sess.stream_execute("", mode="batch", opts={"exec": "python3 main.py x y"}) as stream:
            while (msg := await stream.receive(timeout=60)).type != WSMsgType.CLOSED:
                results.append(msg.json())
        statuses = [r["status"] for r in results if r["status"] != "continued"]
        assert statuses == ["clean-finished", "build-finished", "finished"], statuses
        assert "batch ['x', 'y']\n" in _stdout(results)
        assert results[-1]["exitCode"] == 3


async def test_refusals(cluster: Cluster, stream_session: str) -> None:
    async with AsyncSession(config=_config(cluster)) as api:
        with pytest.raises(BackendAPIError) as ei:
            async with api.ComputeSession("no-such-stream-session").stream_execute("print(1)"):
                pass
        assert ei.value.status == 404 and "no-such-stream-session" in str(ei.value)
        with pytest.raises(BackendClientError, match="query and batch"):
            api.ComputeSession(stream_session).stream_execute("1", mode="complete")
        # A wrong secret key: the signed handshake is refused with 401.
        bad = APIConfig(
            endpoint=cluster.endpoint,
            endpoint_type="api",
            access_key=USER["access_key"],
            secret_key="wrong-" + USER["secret_key"],
        )
    async with AsyncSession(config=bad) as api:
        with pytest.raises(BackendAPIError) as ei:
            async with api.ComputeSession(stream_session).stream_execute("print(1)"):
                pass
        assert ei.value.status == 401


UPSTREAM_SCRIPT = r"""
import asyncio, base64, json, re, sys
from ai.backend.client.session import AsyncSession

async def main(name):
    async with AsyncSession() as api:
        sess = api.ComputeSession(name)
        results = []
        async with sess.stream_execute("print(6*7)") as ws:
            async for msg in ws:
                results.append(json.loads(msg.data))
                if results[-1]["status"] == "finished":
                    break
        print("EXEC", "".join(c[1] for r in results for c in r["console"] if c[0] == "stdout").strip())
        async with sess.stream_pty() as pty:
            # (22.03's StreamPty.resize() is broken upstream: it uses a missing ``self.ws``.)
            await pty.send_str(json.dumps({"type": "resize", "rows": 24, "cols": 80}))
            chars = base64.b64encode(b"echo $((6*7)); stty size\n").decode()
            await pty.send_str(json.dumps({"type": "stdin", "chars": chars}))
            buf = b""
            async for msg in pty:
                doc = json.loads(msg.data)
                assert doc["type"] == "out", doc
                buf += base64.b64decode(doc["data"])
                if re.search(rb"42\r?\n24 80\r?\n", buf):
                    break
        print("PTY ok")

asyncio.run(asyncio.wait_for(main(sys.argv[1]), 60))
"""


def test_upstream_2203_client_streams(cluster: Cluster, stream_session: str, tmp_path: Path) -> None:
    """The upstream 22.03 SDK (aiohttp, its own handshake signing) streams against this server."""
    import subprocess

    from .test_cli_sdk import _upstream_client

    python = _upstream_client().parent / "python"
    script = tmp_path / "upstream_streams.py"
    script.write_text(UPSTREAM_SCRIPT)
    env = {**cluster.env(), "PYTHONWARNINGS": "ignore"}
    run = subprocess.run(
        [str(python), str(script), stream_session], env=env, capture_output=True, text=True, timeout=120
    )
    assert run.returncode == 0, run.stderr[-3000:]
    assert run.stdout.splitlines() == ["EXEC 42", "PTY ok"]
