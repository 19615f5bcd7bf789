"""Batch sessions, bootstrap scripts, execution timeouts, live stats and agent restarts, with real containers."""

from __future__ import annotations

import json
import subprocess
import sys
import time
from typing import Any

import pytest

from .conftest import USER, Cluster

pytestmark = pytest.mark.docker


def test_batch_session_success_records_exit_code_result_and_logs(cluster: Cluster) -> None:
    r = cluster.request(
        "POST",
        "/session",
        {
            "image": "python",
            "name": "batch-ok",
            "type": "batch",
            "startupCommand": "echo task says hi; python3 -c 'import sys; print(\"to err\", file=sys.stderr)'",
        },
    )
    assert r.status_code == 201, r.text
    info = cluster.wait_for_status("batch-ok", "TERMINATED")
    assert info["statusInfo"] == "task-finished"
    assert {"PREPARING", "RUNNING", "TERMINATED"} <= set(info["statusHistory"])
    assert info["result"] == "SUCCESS"
    assert info["statusData"]["exit_code"] == 0
    assert info["stats"] is not None and info["stats"]["cpu_used"] >= 0
    logs = cluster.request("GET", "/session/batch-ok/logs")
    assert logs.status_code == 200, logs.text
    text = logs.json()["result"]["logs"]
    assert "task says hi" in text and "to err" in text
    task_logs = cluster.request("GET", f"/session/_/logs?taskId={info['sessionId']}")
    assert task_logs.status_code == 200 and "task says hi" in task_logs.text
    assert task_logs.headers["content-type"].startswith("text/plain")
    cli = [sys.executable, "-m", "ai.backend.client.cli"]
    p = subprocess.run(
        [*cli, "task-logs", info["sessionId"]], env=cluster.env(), capture_output=True, text=True, timeout=60
    )
    assert p.returncode == 0 and "task says hi" in p.stdout, p.stderr
    p = subprocess.run(
        [*cli, "task-logs", "no-such-task"], env=cluster.env(), capture_output=True, text=True, timeout=60
    )
    assert p.returncode != 0 and len(p.stderr.strip().splitlines()) == 1 and "Traceback" not in p.stderr
    # The container is gone once the task ended.
    assert not any(info["sessionId"] in c for c in cluster.containers())


def test_batch_session_failure_and_timeout(cluster: Cluster) -> None:
    r = cluster.request(
        "POST",
        "/session",
        {
            "image": "python",
            "name": "batch-fail",
            "type": "batch",
            "startupCommand": "echo failing; exit 3",
        },
    )
    assert r.status_code == 201, r.text
    r = cluster.request(
        "POST",
        "/session",
        {
            "image": "python",
            "name": "batch-slow",
            "type": "batch",
            "startupCommand": "sleep 600",
            "batchTimeout": 1.5,
        },
    )
    assert r.status_code == 201, r.text
    failed = cluster.wait_for_status("batch-fail", "TERMINATED")
    assert (failed["statusInfo"], failed["result"], failed["statusData"]["exit_code"]) == ("task-failed", "FAILURE", 3)
    slow = cluster.wait_for_status("batch-slow", "TERMINATED", timeout=30)
    assert (slow["statusInfo"], slow["result"]) == ("task-timeout", "FAILURE")


def test_batch_session_needs_a_startup_command_and_a_valid_timeout(cluster: Cluster) -> None:
    r = cluster.request("POST", "/session", {"image": "python", "name": "batch-bad", "type": "batch"})
    assert r.status_code == 400 and "startupCommand" in r.json()["detail"]
    r = cluster.request(
        "POST",
        "/session",
        {
            "image": "python",
            "name": "batch-bad",
            "type": "batch",
            "startupCommand": "true",
            "batchTimeout": -1,
        },
    )
    assert r.status_code == 400 and "batchTimeout" in r.json()["detail"]
    r = cluster.request("GET", "/session/batch-bad")
    assert r.status_code == 404  # nothing was created


def test_bootstrap_script_runs_before_the_session_starts(cluster: Cluster) -> None:
    r = cluster.request(
        "POST",
        "/session",
        {
            "image": "python",
            "name": "boot-1",
            "bootstrap_script": '#!/bin/bash\necho "booted as $(id -u)" > /home/work/boot.txt\necho bootstrap-out\n',
        },
    )
    assert r.status_code == 201 and r.json()["status"] == "RUNNING", r.text
    result = cluster.exec("boot-1", "print(open('boot.txt').read().strip())")
    assert result["console"] == [["stdout", "booted as 1000\n"]]
    info = cluster.request("GET", "/session/boot-1").json()
    assert info["creationPhases"]["bootstrap_exit_code"] == 0
    assert "bootstrap" in info["creationPhases"]
    logs = cluster.request("GET", "/session/boot-1/logs").json()["result"]["logs"]
    assert "bootstrap-out" in logs
    assert cluster.request("DELETE", "/session/boot-1").status_code == 200


def test_execution_timeout_ends_the_run_not_the_session(cluster: Cluster) -> None:
    r = cluster.request("POST", "/session", {"image": "python", "name": "exec-timeout"})
    assert r.status_code == 201, r.text
    body: dict[str, Any] = {
        "mode": "query",
        "code": "import time\nprint('start', flush=True)\ntime.sleep(60)",
        "runId": "slow1",
        "options": {"timeout": 1},
    }
    result = cluster.exec("exec-timeout", **body)
    seen = [result]
    while result["status"] == "continued":
        result = cluster.exec("exec-timeout", mode="continue", run_id="slow1")
        seen.append(result)
    assert result["status"] == "exec-timeout"
    assert result["exitCode"] is None
    text = "".join(c[1] for r_ in seen for c in r_["console"])
    assert "start" in text and "timed out" in text
    # The session lives on (with a fresh interpreter).
    again = cluster.exec("exec-timeout", "print(2 + 2)")
    assert again["console"] == [["stdout", "4\n"]] and again["status"] == "finished"
    bad = cluster.request("POST", "/session/exec-timeout", {"mode": "query", "code": "1", "options": {"timeout": 0}})
    assert bad.status_code == 400
    batch = cluster.exec("exec-timeout", mode="batch", run_id="b1", options={"exec": "sleep 30", "timeout": 1})
    while batch["status"] not in ("finished", "exec-timeout"):
        batch = cluster.exec("exec-timeout", mode="continue", run_id="b1")
    assert batch["status"] == "exec-timeout"
    assert cluster.request("DELETE", "/session/exec-timeout").status_code == 200


def test_live_stats_are_reported_and_change(cluster: Cluster) -> None:
    r = cluster.request("POST", "/session", {"image": "python", "name": "stats-1"})
    assert r.status_code == 201, r.text
    cluster.exec("stats-1", "buf = bytearray(64 * 1024 * 1024)\nsum(range(10**7))")
    deadline = time.monotonic() + 20
    stats: dict[str, Any] | None = None
    while time.monotonic() < deadline:
        stats = cluster.request("GET", "/session/stats-1").json()["stats"]
        if stats and stats["mem_cur_bytes"] >= 64 * 1024 * 1024 and stats["cpu_used"] > 0:
            break
        time.sleep(0.5)
    assert stats is not None and stats["mem_cur_bytes"] >= 64 * 1024 * 1024, stats
    assert stats["cpu_used"] > 0
    assert set(stats) >= {
        "cpu_used",
        "mem_max_bytes",
        "mem_cur_bytes",
        "net_rx_bytes",
        "net_tx_bytes",
        "io_read_bytes",
        "io_write_bytes",
    }
    q = "query($id: UUID!) { compute_session(id: $id) { containers { live_stat } } }"
    sid = cluster.request("GET", "/session/stats-1").json()["sessionId"]
    g = cluster.request("POST", "/admin/gql", {"query": q, "variables": {"id": sid}})
    assert g.status_code == 200, g.text
    assert '"mem_cur_bytes"' in g.json()["data"]["compute_session"]["containers"][0]["live_stat"]
    cli = [sys.executable, "-m", "ai.backend.client.cli"]
    shown = subprocess.run(
        [*cli, "session", "info", "stats-1"], env=cluster.env(), capture_output=True, text=True, timeout=60
    )
    assert shown.returncode == 0, shown.stderr
    assert "Resource usage (live" in shown.stdout and "mem_cur_bytes" in shown.stdout
    only = subprocess.run(
        [*cli, "--output", "json", "info", "-s", "stats-1"],
        env=cluster.env(),
        capture_output=True,
        text=True,
        timeout=60,
    )
    assert only.returncode == 0, only.stderr
    assert json.loads(only.stdout)["stats"]["mem_cur_bytes"] > 0
    d = cluster.request("DELETE", "/session/stats-1")
    assert d.status_code == 200 and d.json()["stats"]["mem_max_bytes"] >= 64 * 1024 * 1024


def test_agent_restart_reports_a_container_that_died_meanwhile(cluster: Cluster) -> None:
    r = cluster.request(
        "POST", "/session", {"image": "python", "name": "dies-while-away", "config": {"resources": {"mem": "256m"}}}
    )
    assert r.status_code == 201, r.text
    sid = r.json()["sessionId"]
    r = cluster.request("POST", "/session", {"image": "python", "name": "stays-alive"})
    assert r.status_code == 201, r.text
    cluster.request("POST", "/session/stays-alive", {"mode": "query", "code": "kept = 7"})
    kid = cluster.request("GET", f"/session/{sid}").json()["kernelId"]
    cluster.stop("agent")
    # A pre-started container keeps its labels when handed over, so find it by its name.
    ids = subprocess.run(
        ["docker", "ps", "-q", "--filter", f"name=bai-kernel-{kid}"], capture_output=True, text=True, check=True
    ).stdout.split()
    assert ids, cluster.containers()
    subprocess.run(["docker", "kill", ids[0]], capture_output=True, check=True)
    cluster.start("agent")
    cluster.wait_ready()
    info = cluster.wait_for_status("dies-while-away", "TERMINATED", timeout=30)
    assert info["statusInfo"] in ("self-terminated", "oom-killed"), info
    assert info["statusData"]["exit_code"] == 137
    alive = cluster.exec("stays-alive", "print(kept)")
    assert alive["console"] == [["stdout", "7\n"]]
    assert cluster.request("DELETE", "/session/stays-alive").status_code == 200


def test_batch_task_survives_an_agent_restart(cluster: Cluster) -> None:
    r = cluster.request(
        "POST",
        "/session",
        {
            "image": "python",
            "name": "batch-restart",
            "type": "batch",
            "startupCommand": "sleep 4; echo finished-after-restart",
        },
        who=USER,
    )
    assert r.status_code == 201, r.text
    cluster.stop("agent")
    cluster.start("agent")
    cluster.wait_ready()
    info = cluster.wait_for_status("batch-restart", "TERMINATED", timeout=40)
    assert (info["statusInfo"], info["result"]) == ("task-finished", "SUCCESS")
    logs = cluster.request("GET", "/session/batch-restart/logs").json()["result"]["logs"]
    assert "finished-after-restart" in logs


def test_restart_passes_through_restarting_and_keeps_files(cluster: Cluster) -> None:
    r = cluster.request("POST", "/session", {"image": "python", "name": "restart-1"})
    assert r.status_code == 201, r.text
    cluster.exec("restart-1", "x = 1\nopen('kept.txt', 'w').write('yes')")
    assert cluster.request("PATCH", "/session/restart-1").status_code == 204
    info = cluster.request("GET", "/session/restart-1").json()
    assert info["status"] == "RUNNING" and "RESTARTING" in info["statusHistory"]
    result = cluster.exec("restart-1", "print('x' in globals(), open('kept.txt').read())")
    assert result["console"] == [["stdout", "False yes\n"]]
    assert cluster.request("DELETE", "/session/restart-1").status_code == 200
    gone = cluster.request("PATCH", "/session/restart-1")
    assert gone.status_code in (404, 409)


def test_instant_batch_task_still_passes_through_running(cluster: Cluster) -> None:
    for i in range(3):
        r = cluster.request(
            "POST",
            "/session",
            {"image": "python", "name": f"batch-instant-{i}", "type": "batch", "startupCommand": "true"},
        )
        assert r.status_code == 201, r.text
    for i in range(3):
        info = cluster.wait_for_status(f"batch-instant-{i}", "TERMINATED")
        assert (info["statusInfo"], info["result"]) == ("task-finished", "SUCCESS")
        history = info["statusHistory"]
        assert history["PREPARING"] <= history["RUNNING"] <= history["TERMINATED"], history


def test_agent_rpc_refuses_calls_without_the_cluster_secret(cluster: Cluster) -> None:
    import re

    import httpx

    from ai.backend.common.auth import CLUSTER_SECRET_HEADER

    port = re.search(r"rpc-listen-port = (\d+)", (cluster.state / "agent.toml").read_text())
    assert port is not None
    url = f"http://127.0.0.1:{port.group(1)}/v1/health"
    for headers in ({}, {CLUSTER_SECRET_HEADER: "wrong-secret-value"}):
        r = httpx.get(url, headers=headers)
        assert r.status_code == 401 and r.headers["content-type"] == "application/problem+json", r.text
    ok = httpx.get(url, headers={CLUSTER_SECRET_HEADER: cluster.secret})
    assert ok.status_code == 200 and ok.json()["id"] == cluster.agent_id
