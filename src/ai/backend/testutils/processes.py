"""Stopping what tests start: server processes, and the containers an agent left behind."""

from __future__ import annotations

import contextlib
import signal
import subprocess
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any, TypeVar

from ai.backend.common.mounts import mounts_under, unmount

T = TypeVar("T")


def stop_process(proc: subprocess.Popen[Any], timeout: float = 10) -> None:
    """SIGTERM ``proc`` and wait up to ``timeout`` seconds, then SIGKILL it (nothing when it already ended)."""
    if proc.poll() is not None:
        return
    proc.send_signal(signal.SIGTERM)
    try:
        proc.wait(timeout)
    except subprocess.TimeoutExpired:
        proc.kill()
        proc.wait()


def unmount_under(path: Path) -> None:
    """Lazily unmount every mount at or below ``path`` (the scratch and folder images a test's agent or
    storage proxy left mounted), deepest first; their loop devices go with them."""
    for point in mounts_under(path.resolve()):
        with contextlib.suppress(OSError):
            unmount(point)


def agent_containers(agent_id: str, *, check: bool = True) -> list[str]:
    """IDs of every container (running or not) that the agent ``agent_id`` created."""
    out = subprocess.run(
        ["docker", "ps", "-aq", "--filter", f"label=ai.backend.agent-id={agent_id}"],
        capture_output=True,
        text=True,
        check=check,
    )
    return out.stdout.split()


def remove_agent_containers(agent_id: str) -> None:
    """Force-remove what the agent ``agent_id`` left behind (after a test killed it)."""
    ids = agent_containers(agent_id, check=False)
    if ids:
        subprocess.run(["docker", "rm", "-f", *ids], capture_output=True)


def wait_until(
    what: str, probe: Callable[[], T], ok: Callable[[T], bool], timeout: float = 30, interval: float = 0.2
) -> T:
    """Call ``probe`` every ``interval`` seconds until ``ok`` accepts its answer, and return that answer;
    an AssertionError naming ``what`` and the last answer after ``timeout`` seconds."""
    deadline = time.monotonic() + timeout
    while True:
        got = probe()
        if ok(got):
            return got
        if time.monotonic() > deadline:
            raise AssertionError(f"timed out waiting for {what}; last: {got}")
        time.sleep(interval)
