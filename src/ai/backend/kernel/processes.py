"""Process helpers shared by the kernel runner and its terminals (standard library only)."""

from __future__ import annotations

import asyncio
import contextlib
import os
import subprocess


async def wait_process(proc: subprocess.Popen[bytes]) -> int:
    """Wait for ``proc`` to exit without waiting for its pipes to close.

    Uses a pidfd when available (no thread, no polling), else a waiter thread.
    """
    loop = asyncio.get_running_loop()
    try:
        pidfd = os.pidfd_open(proc.pid)
    except (AttributeError, OSError):
        return await loop.run_in_executor(None, proc.wait)
    fut: asyncio.Future[None] = loop.create_future()

    def _ready() -> None:
        if not fut.done():
            fut.set_result(None)

    loop.add_reader(pidfd, _ready)
    try:
        await fut
    finally:
        loop.remove_reader(pidfd)
        os.close(pidfd)
    return proc.wait()


def killpg_quietly(pgid: int, sig: int) -> None:
    """Signal a process group, ignoring groups that no longer exist."""
    with contextlib.suppress(ProcessLookupError, PermissionError):
        os.killpg(pgid, sig)
