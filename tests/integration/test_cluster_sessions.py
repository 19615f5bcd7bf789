"""Cluster sessions on real Docker: three kernels (main1, sub1, sub2) on a private network of their own,
the BACKENDAI_CLUSTER_* variables, one shared SSH keypair, execution in main1, isolation from other
sessions, and cleanup of every container and the network."""

from __future__ import annotations

import json
import subprocess
import sys
import time
from collections.abc import Iterator
from typing import Any

import pytest

from ai.backend.testutils.cluster import Cluster, docker_available, launch_cluster

pytestmark = pytest.mark.docker


def _set_policy(c: Cluster, **props: Any) -> None:
    data = c.gql(
        "mutation($n: String!, $p: ModifyKeyPairResourcePolicyInput!) { "
        "modify_keypair_resource_policy(name: $n, props: $p) { ok msg } }",
        {"n": "default", "p": props},
    )
    assert data["modify_keypair_resource_policy"]["ok"], data


@pytest.fixture(scope="module")
def cc(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Cluster]:
    if not docker_available():
        pytest.fail("Docker engine or the python kernel image is missing: run scripts/setup.sh first")
    c = launch_cluster(tmp_path_factory.mktemp("clusters"), cpu=8, mem="4g", storage=False)
    try:
        _set_policy(c, max_containers_per_session=4)
        yield c
    finally:
        c.shutdown()


def _run(c: Cluster, name: str, code: str) -> str:
    """Run ``code`` in the session's main kernel to the end; its stdout."""
    body: dict[str, Any] = {"mode": "query", "code": code}
    out = []
    for _ in range(100):
        r = c.request("POST", f"/session/{name}", body)
        assert r.status_code == 200, r.text
        result = r.json()["result"]
        out += [text for kind, text in result["console"] if kind == "stdout"]
        if result["status"] != "continued":
            assert result["status"] == "finished", result
            return "".join(out)
        body = {"mode": "continue", "runId": result["runId"], "code": ""}
    raise AssertionError("the run did not finish")


def _containers(session_id: str) -> dict[str, dict[str, Any]]:
    """The session's containers by hostname, as Docker reports them."""
    ids = subprocess.run(
        ["docker", "ps", "-aq", "--filter", f"label=ai.backend.session-id={session_id}"],
        capture_output=True,
        text=True,
        check=True,
    ).stdout.split()
    if not ids:
        return {}
    # Containers being removed meanwhile are left out (inspect answers the others and exits non-zero).
    out = subprocess.run(["docker", "inspect", *ids], capture_output=True, text=True).stdout
    return {i["Config"]["Hostname"]: i for i in json.loads(out or "[]")}


def _docker_exec(container: str, *cmd: str) -> str:
    return subprocess.run(["docker", "exec", container, *cmd], capture_output=True, text=True, check=True).stdout


def test_three_kernel_cluster(cc: Cluster) -> None:
    r = cc.request(
        "POST",
        "/session",
        {
            "image": "python",
            "name": "trio",
            "clusterSize": 3,
            "clusterMode": "single-node",
            "config": {"resources": {"cpu": 1, "mem": "256m"}},
        },
    )
    assert r.status_code == 201 and r.json()["status"] == "RUNNING", r.text
    sid = r.json()["sessionId"]
    other = cc.request(
        "POST", "/session", {"image": "python", "name": "outsider", "config": {"resources": {"cpu": 1, "mem": "256m"}}}
    )
    assert other.status_code == 201 and other.json()["status"] == "RUNNING", other.text
    try:
        info = cc.request("GET", "/session/trio").json()
        # The session holds three kernels' worth; the agent the sum of them.
        assert info["occupiedSlots"]["cpu"] == "3" and int(info["occupiedSlots"]["mem"]) == 3 * 256 * 1024**2, info
        containers = _containers(sid)
        assert sorted(containers) == ["main1", "sub1", "sub2"], list(containers)
        network = f"bai-cluster-{sid}"
        assert all(set(c["NetworkSettings"]["Networks"]) == {network} for c in containers.values())
        assert all(
            c["HostConfig"]["NanoCpus"] == 10**9 and c["HostConfig"]["Memory"] == 256 * 1024**2
            for c in containers.values()
        )

        # Execution goes to main1, which sees its place in the cluster and can resolve its peers.
        env = json.loads(
            _run(
                cc,
                "trio",
                "import os, json, socket\n"
                "print(json.dumps({**{k: v for k, v in os.environ.items() "
                "if k.startswith('BACKENDAI_CLUSTER_')}, 'me': socket.gethostname()}))",
            )
        )
        assert env == {
            "BACKENDAI_CLUSTER_SIZE": "3",
            "BACKENDAI_CLUSTER_HOSTS": "main1,sub1,sub2",
            "BACKENDAI_CLUSTER_REPLICAS": "main:1,sub:2",
            "BACKENDAI_CLUSTER_HOST": "main1",
            "BACKENDAI_CLUSTER_IDX": "1",
            "BACKENDAI_CLUSTER_ROLE": "main",
            "BACKENDAI_CLUSTER_LOCAL_RANK": "0",
            "me": "main1",
        }, env
        sub2_env = _docker_exec(containers["sub2"]["Id"], "env")
        for line in (
            "BACKENDAI_CLUSTER_ROLE=sub",
            "BACKENDAI_CLUSTER_IDX=2",
            "BACKENDAI_CLUSTER_LOCAL_RANK=2",
            "BACKENDAI_CLUSTER_HOST=sub2",
        ):
            assert line in sub2_env.splitlines(), sub2_env

        # One keypair for the whole session, private to the kernel user, and authorized everywhere.
        keys = {h: _docker_exec(c["Id"], "cat", "/home/config/ssh/id_cluster.pub") for h, c in containers.items()}
        assert len(set(keys.values())) == 1 and next(iter(keys.values())).startswith("ssh-ed25519 "), keys
        assert _docker_exec(containers["sub1"]["Id"], "cat", "/home/work/.ssh/authorized_keys") == keys["main1"]
        mode = _run(
            cc,
            "trio",
            "import os, stat\nst = os.stat('/home/config/ssh/id_cluster')\n"
            "print(oct(stat.S_IMODE(st.st_mode)), st.st_uid == os.getuid())",
        )
        assert mode.split() == ["0o600", "True"], mode

        # main1 reaches a service on sub1 by hostname over the session's network.
        subprocess.run(
            [
                "docker",
                "exec",
                "-d",
                containers["sub1"]["Id"],
                "python3",
                "-m",
                "http.server",
                "8080",
                "--bind",
                "0.0.0.0",
                "--directory",
                "/home/config",
            ],
            check=True,
        )
        fetch = (
            "import urllib.request, time\n"
            "for _ in range(50):\n"
            "    try:\n"
            "        print(urllib.request.urlopen('http://{host}:8080/ssh/id_cluster.pub', timeout=2)"
            ".read().decode(), end='')\n"
            "        break\n"
            "    except OSError as e:\n"
            "        err = e\n"
            "        time.sleep(0.1)\n"
            "else:\n"
            "    print('unreachable', type(err).__name__)\n"
        )
        assert _run(cc, "trio", fetch.format(host="sub1")) == keys["sub1"]

        # Another session (on the default network, no inter-container traffic) cannot reach sub1,
        # neither by name nor by address.
        sub1_ip = containers["sub1"]["NetworkSettings"]["Networks"][network]["IPAddress"]
        probe = (
            "import socket\n"
            "try:\n    socket.gethostbyname('sub1')\n    print('resolved')\n"
            "except OSError:\n    print('no-name')\n"
            "s = socket.socket(); s.settimeout(2)\n"
            f"try:\n    s.connect(({sub1_ip!r}, 8080))\n    print('connected')\n"
            "except OSError:\n    print('blocked')\n"
        )
        assert _run(cc, "outsider", probe).split() == ["no-name", "blocked"]
    finally:
        assert cc.request("DELETE", "/session/trio").status_code == 200
        assert cc.request("DELETE", "/session/outsider").status_code == 200
    # Every kernel and the network are gone, and the agent's slots are free again.
    deadline = time.monotonic() + 20
    while time.monotonic() < deadline and (_containers(sid) or _network_exists(f"bai-cluster-{sid}")):
        time.sleep(0.3)
    assert not _containers(sid)
    assert not _network_exists(f"bai-cluster-{sid}")
    agents = cc.gql("{ agents { id occupied_slots } }", {})["agents"]
    assert all(json.loads(a["occupied_slots"]).get("cpu", "0") in ("0", 0) for a in agents), agents


def _network_exists(name: str) -> bool:
    return subprocess.run(["docker", "network", "inspect", name], capture_output=True).returncode == 0


def test_sub_kernel_death_ends_the_session(cc: Cluster) -> None:
    """A cluster is one unit: when a sub kernel dies, the session ends and its other kernels are removed."""
    r = cc.request(
        "POST",
        "/session",
        {"image": "python", "name": "duet", "clusterSize": 2, "config": {"resources": {"cpu": 1, "mem": "256m"}}},
    )
    assert r.status_code == 201 and r.json()["status"] == "RUNNING", r.text
    sid = r.json()["sessionId"]
    containers = _containers(sid)
    subprocess.run(["docker", "kill", containers["sub1"]["Id"]], capture_output=True, check=True)
    deadline = time.monotonic() + 30
    info: dict[str, Any] = {}
    while time.monotonic() < deadline:
        info = cc.request("GET", "/session/duet").json()
        if info["status"] == "TERMINATED" and not _containers(sid) and not _network_exists(f"bai-cluster-{sid}"):
            break
        time.sleep(0.3)
    assert info["status"] == "TERMINATED", info
    assert not _containers(sid) and not _network_exists(f"bai-cluster-{sid}")


@pytest.mark.parametrize(
    ("body", "status", "words"),
    [
        ({"clusterSize": 5}, 4, ["clusterSize 5", "limit of 4"]),
        ({"clusterSize": 3, "config": {"resources": {"cpu": 3, "mem": "256m"}}}, 4, ["never fit", "single-node"]),
        (
            {"clusterSize": 3, "clusterMode": "multi-node", "config": {"resources": {"cpu": 3, "mem": "256m"}}},
            4,
            ["never fit", "multi-node", "room for 2"],
        ),
        ({"clusterSize": 2, "clusterMode": "ring"}, 4, ["clusterMode"]),
        ({"clusterSize": 0}, 4, ["clusterSize"]),
    ],
)
def test_bad_cluster_requests(cc: Cluster, body: dict[str, Any], status: int, words: list[str]) -> None:
    r = cc.request("POST", "/session", {"image": "python", "name": "bad-cluster", **body})
    assert r.status_code // 100 == status, r.text
    problem = r.json()
    text = f"{problem.get('title')} {problem.get('detail')}"
    assert all(w in text for w in words), problem
    listed = cc.request("GET", "/session/bad-cluster")
    assert listed.status_code == 404, listed.text


def test_cli_runs_a_cluster_in_main1(cc: Cluster) -> None:
    """`backend.ai run --cluster-size 2 --rm` runs the code in main1 and removes every kernel afterwards."""
    code = "import os; print(os.environ['BACKENDAI_CLUSTER_HOST'], os.environ['BACKENDAI_CLUSTER_HOSTS'])"
    out = subprocess.run(
        [
            sys.executable,
            "-m",
            "ai.backend.client.cli",
            "run",
            "--rm",
            "--cluster-size",
            "2",
            "--cluster-mode",
            "multi-node",
            "-r",
            "cpu=1",
            "-r",
            "mem=256m",
            "-c",
            code,
            "python",
        ],
        env=cc.env(),
        capture_output=True,
        text=True,
        timeout=120,
    )
    assert out.returncode == 0, out.stderr
    assert "main1 main1,sub1" in out.stdout, out.stdout
    bad = subprocess.run(
        [
            sys.executable,
            "-m",
            "ai.backend.client.cli",
            "run",
            "--rm",
            "--cluster-size",
            "9",
            "-c",
            "print(1)",
            "python",
        ],
        env=cc.env(),
        capture_output=True,
        text=True,
        timeout=60,
    )
    assert bad.returncode != 0 and "clusterSize 9" in bad.stderr and "Traceback" not in bad.stderr, bad.stderr
