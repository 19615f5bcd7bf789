"""``backend.ai run``/``create`` while the session waits to start: the status line with the scheduler's
pending reason, and ``--max-wait`` (one line with the last reason, exit 1; ``run --rm`` destroys the
session, ``create`` keeps it queued).  The sessions here are reserved an hour ahead (``--starts-at 1h``),
so they stay PENDING with the reason ``reserved to start at ...`` and never take the agent's resources.
"""

from __future__ import annotations

import json
import re
import secrets
import subprocess
import sys
import time
from typing import Any

import pytest

from .conftest import USER, Cluster

pytestmark = pytest.mark.docker

CLI = [sys.executable, "-m", "ai.backend.client.cli"]


def cli(cluster: Cluster, *args: str, who: dict[str, Any] = USER) -> subprocess.CompletedProcess[str]:
    return subprocess.run([*CLI, *args], env=cluster.env(who), capture_output=True, text=True, timeout=120)


def _status(cluster: Cluster, name: str) -> str | None:
    r = cluster.request("GET", f"/session/{name}")
    return str(r.json()["status"]) if r.status_code == 200 else None


def test_run_max_wait_prints_the_pending_reason_and_destroys_with_rm(cluster: Cluster) -> None:
    name = f"wait-{secrets.token_hex(3)}"
    started = time.monotonic()
    p = cli(cluster, "run", "python", "-c", "print(42)", "-t", name, "--starts-at", "1h", "--max-wait", "3", "--rm")
    took = time.monotonic() - started
    assert p.returncode == 1, p.stderr
    assert p.stdout == ""  # progress and failures go to stderr only
    assert "Traceback" not in p.stderr
    lines = p.stderr.strip().splitlines()
    # Not a terminal: one line per change, here the one status (PENDING, with its reason).
    waiting = [ln for ln in lines if ln.startswith("⋯ ")]
    assert len(waiting) == 1, p.stderr
    assert re.fullmatch(rf"⋯ \[0\] Session {name}: PENDING \(reserved to start at \S+\), waited \ds", waiting[0])
    assert "\r" not in p.stderr
    assert lines[-1].startswith(f"✘ [0] Session {name} did not start within 3s (PENDING: reserved to start at ")
    assert lines[-1].endswith("; it is destroyed.")
    assert 3 <= took < 30
    assert _status(cluster, name) in (None, "CANCELLED", "TERMINATED")


def test_create_max_wait_keeps_the_session_queued(cluster: Cluster) -> None:
    name, other = f"wait-{secrets.token_hex(3)}", f"wait-{secrets.token_hex(3)}"
    try:
        p = cli(cluster, "create", "python", "-t", name, "--starts-at", "1h", "--max-wait", "2")
        assert p.returncode == 1, p.stderr
        assert p.stdout == "" and "Traceback" not in p.stderr
        last = p.stderr.strip().splitlines()[-1]
        assert last.startswith(f"✘ Session {name} did not start within 2s (PENDING: reserved to start at ")
        assert last.endswith(f"it stays queued and may start later (cancel it with 'backend.ai rm {name}').")
        assert _status(cluster, name) == "PENDING"

        # --output json: the object on stdout (nothing else there), the one line on stderr.
        p = cli(cluster, "--output", "json", "create", "python", "-t", other, "--starts-at", "1h", "--max-wait", "1")
        assert p.returncode == 1, p.stderr
        out = json.loads(p.stdout)
        assert out["name"] == other and out["status"] == "TIMEOUT" and out["created"] is True
        assert out["status_info"].startswith("reserved to start at ")
        assert [ln for ln in p.stderr.splitlines() if not ln.startswith("✘ ")] == []  # no progress lines
    finally:
        cli(cluster, "rm", name, other)
    assert _status(cluster, name) in (None, "CANCELLED", "TERMINATED")
    assert _status(cluster, other) in (None, "CANCELLED", "TERMINATED")


def test_bad_max_wait_is_one_line(cluster: Cluster) -> None:
    for command in (["run", "python", "-c", "1"], ["create", "python"]):
        p = cli(cluster, *command, "--max-wait", "-1")
        assert p.returncode == 2 and p.stdout == "", p.stderr
        lines = p.stderr.strip().splitlines()
        assert len(lines) == 1 and lines[0].startswith("✘ Error: Invalid value for '--max-wait'"), p.stderr
