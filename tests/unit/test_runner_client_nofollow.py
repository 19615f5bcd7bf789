"""The agent's runner client never follows a symlink planted in the kernel-owned ipc directory."""

from __future__ import annotations

import asyncio
import os
from pathlib import Path

import pytest

from ai.backend.agent.runner_client import RunnerClient, RunnerConnectionError


async def test_connects_to_a_real_socket_but_not_through_a_symlink(tmp_path: Path) -> None:
    accepted: list[bool] = []

    async def on_conn(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        accepted.append(True)
        writer.close()

    target = tmp_path / "host.sock"
    server = await asyncio.start_unix_server(on_conn, path=str(target))
    try:
        client = RunnerClient()
        await client.connect(target, timeout=2)
        await client.close()
        await asyncio.sleep(0.05)
        assert accepted == [True]
        link = tmp_path / "runner.sock"
        os.symlink(target, link)
        with pytest.raises(RunnerConnectionError, match="not a socket"):
            await RunnerClient().connect(link, timeout=2)
        regular = tmp_path / "plain.sock"
        regular.write_text("")
        with pytest.raises(RunnerConnectionError, match="not a socket"):
            await RunnerClient().connect(regular, timeout=2)
        await asyncio.sleep(0.05)
        assert accepted == [True]  # neither attempt reached the host socket
    finally:
        server.close()
        await server.wait_closed()
