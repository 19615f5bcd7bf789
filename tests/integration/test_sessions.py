"""End-to-end session lifecycle against a real manager, a real agent and real containers."""

from __future__ import annotations

import subprocess
import time
import uuid
from datetime import UTC, datetime, timedelta

import pytest

from .conftest import ADMIN, USER, Cluster

pytestmark = pytest.mark.docker


def test_execute_keeps_state_and_runs_unprivileged(cluster: Cluster) -> None:
    body = cluster.create_session("state-test")
    uuid.UUID(str(body["sessionId"]))
    assert body["created"] is True
    r1 = cluster.exec("state-test", "x = 6\nimport os\nprint(os.getuid(), os.getcwd())")
    assert r1["status"] == "finished"
    assert r1["console"] == [["stdout", "1000 /home/work\n"]]
    r2 = cluster.exec("state-test", "print(x * 7)")
    assert r2["console"] == [["stdout", "42\n"]]
    # Reuse: the same name and image gives back the same session with 200.
    again = cluster.request("POST", "/session", {"image": "python", "name": "state-test"})
    assert again.status_code == 200 and again.json()["created"] is False
    assert again.json()["sessionId"] == body["sessionId"]
    # Same name, no reuse: 409 problem.
    dup = cluster.request("POST", "/session", {"image": "python", "name": "state-test", "reuseIfExists": False})
    assert dup.status_code == 409
    assert dup.headers["content-type"].startswith("application/problem+json")
    info = cluster.request("GET", "/session/state-test").json()
    assert info["status"] == "RUNNING"
    phases = set(info["creationPhases"])
    # Either a cold start or the hand-over of a pre-started spare container.
    assert phases >= {"container_create", "container_start", "runner_ready", "total"} or phases >= {
        "warm_handover",
        "total",
    }, phases
    assert cluster.request("DELETE", "/session/state-test").status_code == 200


def test_container_is_confined(cluster: Cluster) -> None:
    cluster.create_session("confined", config={"resources": {"cpu": "1", "mem": "128m"}, "environ": {"MYVAR": "hello"}})
    r = cluster.exec("confined", "import os\nprint(os.environ['MYVAR'], os.environ['BACKENDAI_SESSION_NAME'])")
    assert r["console"] == [["stdout", "hello confined\n"]]
    r = cluster.exec("confined", "print(open('/proc/self/status').read())")
    status = str(r["console"][0][1])  # type: ignore[index]
    assert "NoNewPrivs:\t1" in status
    cap_eff = next(line for line in status.splitlines() if line.startswith("CapEff:"))
    assert cap_eff.split()[1] == "0000000000000000"
    container = cluster.request("GET", "/session/confined").json()["containerId"]
    assert container
    fmt = "{{.HostConfig.Memory}} {{.HostConfig.MemorySwap}} {{.HostConfig.NanoCpus}} {{.HostConfig.PidsLimit}}"
    inspect = subprocess.run(["docker", "inspect", "-f", fmt, container], capture_output=True, text=True, check=True)
    assert inspect.stdout.split() == [str(128 * 2**20), str(128 * 2**20), "1000000000", "1024"]
    cluster.request("DELETE", "/session/confined")


def test_stdout_stderr_order_and_exception(cluster: Cluster) -> None:
    cluster.create_session("order-test")
    code = "import sys\nprint('a')\nprint('b', file=sys.stderr)\nprint('c')\n1/0"
    r = cluster.exec("order-test", code)
    console = r["console"]
    assert console[0] == ["stdout", "a\n"]  # type: ignore[index]
    assert console[1] == ["stderr", "b\n"]  # type: ignore[index]
    assert console[2] == ["stdout", "c\n"]  # type: ignore[index]
    assert console[3][0] == "stderr" and "ZeroDivisionError" in console[3][1]  # type: ignore[index]
    assert r["exitCode"] == 0
    cluster.request("DELETE", "/session/order-test")


def test_input_and_continuation(cluster: Cluster) -> None:
    cluster.create_session("input-test")
    r = cluster.exec("input-test", "name = input('What is your name? ')\nprint('Hello, ' + name)")
    assert r["status"] == "waiting-input"
    assert r["options"] == {"is_password": False}
    assert "What is your name?" in str(r["console"])
    r2 = cluster.exec("input-test", "Lablup", mode="input", run_id=str(r["runId"]))
    assert r2["status"] == "finished"
    assert ["stdout", "Hello, Lablup\n"] in r2["console"]  # type: ignore[operator]
    # A run longer than the flush interval comes back as "continued" first.
    r3 = cluster.exec("input-test", "import time\nprint('tick', flush=True)\ntime.sleep(2.5)\nprint('done')")
    assert r3["status"] == "continued"
    out = "".join(str(c[1]) for c in r3["console"])  # type: ignore[union-attr]
    while r3["status"] == "continued":
        r3 = cluster.exec("input-test", "", mode="continue", run_id=str(r3["runId"]))
        out += "".join(str(c[1]) for c in r3["console"])  # type: ignore[union-attr]
    assert out == "tick\ndone\n"
    cluster.request("DELETE", "/session/input-test")


def test_memory_limit_kills_and_session_says_so(cluster: Cluster) -> None:
    cluster.create_session("oom-test", config={"resources": {"mem": "160m"}})
    r = cluster.exec("oom-test", "x = bytearray(600 * 1024 * 1024)\nprint('survived')")
    assert ["stdout", "survived\n"] not in r["console"]  # type: ignore[operator]
    deadline = time.monotonic() + 20
    info = {}
    while time.monotonic() < deadline:
        info = cluster.request("GET", "/session/oom-test").json()
        if info["status"] == "TERMINATED":
            break
        time.sleep(0.3)
    assert info["status"] == "TERMINATED", info
    assert info["statusInfo"] == "oom-killed"


def test_destroy_leaves_no_container(cluster: Cluster) -> None:
    cluster.create_session("destroy-test")
    container = cluster.request("GET", "/session/destroy-test").json()["containerId"]
    assert container[:12] in set(cluster.containers())
    r = cluster.request("DELETE", "/session/destroy-test")
    assert r.status_code == 200
    assert "mem_max_bytes" in r.json()["stats"]
    deadline = time.monotonic() + 10
    while time.monotonic() < deadline:
        left = subprocess.run(
            ["docker", "ps", "-aq", "--no-trunc", "--filter", f"id={container}"], capture_output=True, text=True
        ).stdout
        if not left.strip():
            break
        time.sleep(0.2)
    assert not left.strip()
    assert cluster.request("GET", "/session/destroy-test").json()["status"] == "TERMINATED"
    assert cluster.request("DELETE", "/session/destroy-test").status_code == 404
    r = cluster.request("POST", "/session/destroy-test", {"mode": "query", "code": "print(1)"})
    assert r.status_code == 409


def test_other_users_session_is_invisible(cluster: Cluster) -> None:
    cluster.create_session("private-sess", who=ADMIN)
    for method, body in (("GET", None), ("DELETE", None), ("POST", {"mode": "query", "code": "print(1)"})):
        r = cluster.request(method, "/session/private-sess", body, who=USER)
        assert r.status_code == 404, r.text
    # A normal user may not act for another access key.
    r = cluster.request("GET", f"/session/private-sess?owner_access_key={ADMIN['access_key']}", who=USER)
    assert r.status_code == 403
    # The admin may act for the user's key (and the session is not there).
    r = cluster.request("GET", f"/session/private-sess?owner_access_key={USER['access_key']}", who=ADMIN)
    assert r.status_code == 404
    assert cluster.request("DELETE", "/session/private-sess", who=ADMIN).status_code == 200


def test_enqueue_only_then_wait(cluster: Cluster) -> None:
    r = cluster.request("POST", "/session", {"image": "python", "name": "queued-1", "enqueueOnly": True})
    assert r.status_code == 201
    assert r.json()["status"] == "PENDING"
    assert r.json()["servicePorts"] == []
    deadline = time.monotonic() + 30
    while time.monotonic() < deadline:
        if cluster.request("GET", "/session/queued-1").json()["status"] == "RUNNING":
            break
        time.sleep(0.2)
    assert cluster.request("GET", "/session/queued-1").json()["status"] == "RUNNING"
    cluster.request("DELETE", "/session/queued-1")


def test_pending_session_is_cancelled(cluster: Cluster) -> None:
    future = (datetime.now(UTC) + timedelta(hours=1)).isoformat()
    r = cluster.request(
        "POST", "/session", {"image": "python", "name": "later-1", "starts_at": future, "maxWaitSeconds": 1}
    )
    assert r.status_code == 201
    assert r.json()["status"] == "TIMEOUT"
    info = cluster.request("GET", "/session/later-1").json()
    assert info["status"] == "PENDING" and "reserved" in info["statusInfo"]
    assert cluster.request("DELETE", "/session/later-1").status_code == 200
    assert cluster.request("GET", "/session/later-1").json()["status"] == "CANCELLED"


def test_legacy_kernel_paths_and_version_prefix(cluster: Cluster) -> None:
    r = cluster.request("POST", "/v2/kernel/create", {"lang": "python", "clientSessionToken": "legacy-1"})
    assert r.status_code == 201, r.text
    r = cluster.request("POST", "/kernel/legacy-1", {"mode": "query", "code": "print('old')"})
    assert r.json()["result"]["console"] == [["stdout", "old\n"]]
    assert cluster.request("DELETE", "/v4/kernel/legacy-1").status_code == 200


def test_state_survives_manager_and_agent_restart(cluster: Cluster) -> None:
    cluster.create_session("survivor")
    cluster.exec("survivor", "kept = 'still here'")
    cluster.stop("manager")
    cluster.stop("agent")
    cluster.start("manager")
    cluster.start("agent")
    cluster.wait_ready()
    info = cluster.request("GET", "/session/survivor").json()
    assert info["status"] == "RUNNING"
    r = cluster.exec("survivor", "print(kept)")
    assert r["console"] == [["stdout", "still here\n"]]
    assert cluster.request("DELETE", "/session/survivor").status_code == 200
