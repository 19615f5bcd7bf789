"""Interrupts, unknown runs, batch builds with the python image and the CLI's range expansion, with real containers."""

from __future__ import annotations

import os
import subprocess
import sys
import time
from pathlib import Path
from typing import Any

import pytest

from .conftest import Cluster

pytestmark = pytest.mark.docker

CLI = [sys.executable, "-m", "ai.backend.client.cli"]


def _until_done(cluster: Cluster, name: str, first: dict[str, Any], run_id: str) -> list[dict[str, Any]]:
    seen = [first]
    while seen[-1]["status"] not in ("finished", "exec-timeout"):
        seen.append(cluster.exec(name, mode="continue", run_id=run_id))
    return seen


@pytest.fixture(scope="module")
def sess(cluster: Cluster) -> Any:
    r = cluster.request("POST", "/session", {"image": "python", "name": "modes-1"})
    assert r.status_code == 201, r.text
    yield "modes-1"
    cluster.request("DELETE", "/session/modes-1")


def test_interrupt_stops_an_infinite_loop_and_keeps_the_globals(cluster: Cluster, sess: str) -> None:
    cluster.exec(sess, "kept = 'here'")
    first = cluster.exec(sess, "print('looping', flush=True)\nwhile True:\n    pass", run_id="loop1")
    assert first["status"] == "continued"
    assert cluster.request("POST", f"/session/{sess}/interrupt").status_code == 204
    seen = _until_done(cluster, sess, cluster.exec(sess, mode="continue", run_id="loop1"), "loop1")
    text = "".join(item[1] for r in [first, *seen] for item in r["console"])
    assert "looping" in text and "KeyboardInterrupt" in text
    assert seen[-1]["status"] == "finished"
    after = cluster.exec(sess, "print(kept)")
    assert after["console"] == [["stdout", "here\n"]]


def test_interrupt_stops_a_batch_program(cluster: Cluster, sess: str) -> None:
    started = time.monotonic()
    first = cluster.exec(sess, mode="batch", run_id="bloop", options={"exec": "echo go; sleep 120; echo never"})
    assert cluster.request("POST", f"/session/{sess}/interrupt").status_code == 204
    seen = _until_done(cluster, sess, first, "bloop")
    text = "".join(item[1] for r in seen for item in r["console"])
    assert "go" in text and "never" not in text
    assert seen[-1]["exitCode"] != 0
    assert time.monotonic() - started < 60


def test_batch_mode_build_and_exec_with_python(cluster: Cluster, sess: str) -> None:
    cluster.exec(sess, "open('main.py', 'w').write('print(21 * 2)')")
    first = cluster.exec(
        sess,
        mode="batch",
        run_id="b-ok",
        options={"clean": "rm -f built.txt", "build": "echo built > built.txt", "exec": "*"},
    )
    seen = _until_done(cluster, sess, first, "b-ok")
    statuses = [r["status"] for r in seen]
    assert statuses[-3:] == ["clean-finished", "build-finished", "finished"] or (
        "build-finished" in statuses and statuses[-1] == "finished"
    ), statuses
    assert seen[-1]["exitCode"] == 0
    assert ["stdout", "42\n"] in seen[-1]["console"]
    failing = cluster.exec(
        sess, mode="batch", run_id="b-fail", options={"build": "echo broken >&2; exit 2", "exec": "echo ran"}
    )
    seen = _until_done(cluster, sess, failing, "b-fail")
    build = next(r for r in seen if r["status"] == "build-finished")
    assert build["exitCode"] == 2
    assert seen[-1]["exitCode"] == 127  # the exec step never runs after a failed build
    assert not any("ran" in item[1] for r in seen for item in r["console"] if item[0] == "stdout")


def test_unknown_run_and_bad_modes_are_client_errors(cluster: Cluster, sess: str) -> None:
    r = cluster.request("POST", f"/session/{sess}", {"mode": "continue", "code": "", "runId": "no-such-run"})
    assert r.status_code == 400 and "no-such-run" in r.json()["detail"]
    r = cluster.request("POST", f"/session/{sess}", {"mode": "input", "code": "x", "runId": "no-such-run"})
    assert r.status_code == 400
    r = cluster.request("POST", f"/session/{sess}", {"mode": "teleport", "code": ""})
    assert r.status_code == 400
    r = cluster.request("POST", "/session/never-existed-xyz", {"mode": "query", "code": "1"})
    assert r.status_code == 404


def test_execute_on_a_terminated_session_is_refused(cluster: Cluster) -> None:
    assert cluster.request("POST", "/session", {"image": "python", "name": "ended-1"}).status_code == 201
    assert cluster.request("DELETE", "/session/ended-1").status_code == 200
    r = cluster.request("POST", "/session/ended-1", {"mode": "query", "code": "print(1)"})
    assert r.status_code in (404, 409)
    assert r.headers["content-type"].startswith("application/problem+json")


def test_cli_range_expansion_runs_every_case_with_max_parallel(cluster: Cluster, tmp_path: Path) -> None:
    env = {**cluster.env(), "HOME": str(tmp_path)}
    code = "import os, time\nprint('case', os.environ['CASENO'], os.environ['Y'])\nopen('/tmp/x', 'w')\ntime.sleep(1)"
    p = subprocess.run(
        [
            *CLI,
            "run",
            "--rm",
            "-c",
            code,
            "-e",
            "CASENO=$X",
            "-e",
            "Y=$Y",
            "--env-range=X=case:a,b",
            "--env-range=Y=range:1,3",
            "--max-parallel",
            "2",
            "-t",
            "rngx",
            "python",
        ],
        env=env,
        capture_output=True,
        text=True,
        timeout=300,
    )
    assert p.returncode == 0, p.stdout + p.stderr
    assert "Running multiple sessions for the following combinations:" in p.stdout + p.stderr
    logs = sorted((tmp_path / ".cache" / "backend.ai" / "client-logs").glob("*.stdout.log"))
    outputs = sorted(f.read_text().strip() for f in logs)
    assert outputs == ["case a 1", "case a 2", "case b 1", "case b 2"], (outputs, p.stdout)
    # Every case ran in its own session, never more than two at once, and none is left behind.
    q = """query { compute_session_list(limit: 50, status: "TERMINATED,TERMINATING", filter: "name like \\"rngx-%\\"")
               { items { name created_at terminated_at status } } }"""
    g = cluster.request("POST", "/admin/gql", {"query": q})
    assert g.status_code == 200, g.text
    items = g.json()["data"]["compute_session_list"]["items"]
    assert sorted(i["name"] for i in items) == ["rngx-0", "rngx-1", "rngx-2", "rngx-3"], items
    edges = sorted(
        [(i["created_at"], 1) for i in items] + [(i["terminated_at"], -1) for i in items], key=lambda e: (e[0], e[1])
    )
    running = peak = 0
    for _, step in edges:
        running += step
        peak = max(peak, running)
    assert peak <= 2, edges
    bad = subprocess.run(
        [*CLI, "run", "-c", "1", "--env-range=X=linspace:1,2", "python"],
        env=env,
        capture_output=True,
        text=True,
        timeout=60,
    )
    assert bad.returncode != 0 and bad.stderr.count("\n") == 1 and "Traceback" not in bad.stderr
    assert os.path.isdir(tmp_path)
