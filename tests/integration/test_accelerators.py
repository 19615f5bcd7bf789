"""Compute plugins end to end: an agent with the mock plugin (2 whole + 2 fractional simulated GPUs), and
a real GPU through Docker DeviceRequests where ``nvidia-smi`` works."""

from __future__ import annotations

import json
import shutil
import subprocess
import sys
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from ai.backend.testutils.cluster import docker_available, launch_cluster
from ai.backend.testutils.processes import wait_until

from .conftest import Cluster

pytestmark = pytest.mark.docker

MOCK_TOML = """
slot_name = "cuda"
device_plugin_name = "CUDADevice"
devices = [
  { mother_uuid = "mock-gpu-0", model_name = "CUDA GPU", numa_node = 0, subproc_count = 108, memory_size = "40G" },
  { mother_uuid = "mock-gpu-1", model_name = "CUDA GPU", numa_node = 1, subproc_count = 108, memory_size = "40G" },
  { mother_uuid = "mock-frac-0", memory_size = "40G", allocation_mode = "fractional" },
  { mother_uuid = "mock-frac-1", memory_size = "40G", allocation_mode = "fractional" },
]
"""
WHOLE = {"mock-gpu-0", "mock-gpu-1"}


@pytest.fixture(scope="module")
def gpu_cluster(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Cluster]:
    if not docker_available():
        pytest.fail("Docker engine or the python kernel image is missing: run scripts/setup.sh first")
    state = tmp_path_factory.mktemp("accel")
    (state / "mock-accelerator.toml").write_text(MOCK_TOML)
    agent_toml = (
        f'allowed-compute-plugins = ["ai.backend.accelerator.mock"]\n\n'
        f'[plugins.mock]\nconfig = "{state / "mock-accelerator.toml"}"'
    )
    c = launch_cluster(state, storage=False, agent_toml=agent_toml)
    try:
        yield c
    finally:
        c.shutdown()


def _env(c: Cluster, name: str) -> dict[str, str]:
    code = "import os, json\nprint(json.dumps({k: v for k, v in os.environ.items() if 'CUDA' in k}))"
    out: dict[str, str] = json.loads(c.exec(name, code)["console"][0][1])
    return out


def _agent(c: Cluster) -> dict[str, Any]:
    q = "{ agents { id available_slots occupied_slots compute_plugins } }"
    agents = [a for a in c.gql(q)["agents"] if a["id"] == c.agent_id]
    return {k: json.loads(v) if k != "id" else v for k, v in agents[0].items()}


def test_slots_are_reported(gpu_cluster: Cluster) -> None:
    c = gpu_cluster
    r = c.request("GET", "/config/resource-slots")
    assert r.status_code == 200
    assert r.json() == {"cpu": "count", "mem": "bytes", "cuda.device": "count", "cuda.shares": "count"}
    agent = _agent(c)
    assert agent["available_slots"]["cuda.device"] == "2" and agent["available_slots"]["cuda.shares"] == "2"
    plugin = agent["compute_plugins"]["ai.backend.accelerator.mock"]
    assert {d["device_id"] for d in plugin["devices"]} == WHOLE | {"mock-frac-0", "mock-frac-1"}
    checked = c.request("POST", "/resource/check-presets", {})
    assert checked.status_code == 200, checked.text
    assert checked.json()["scaling_group_remaining"]["cuda.device"] == "2"


def test_unknown_slot_is_400(gpu_cluster: Cluster) -> None:
    r = gpu_cluster.request(
        "POST", "/session", {"image": "python", "name": "tpu-1", "config": {"resources": {"tpu.device": "1"}}}
    )
    assert r.status_code == 400 and "tpu.device" in r.json()["detail"], r.text
    assert gpu_cluster.request("GET", "/session/tpu-1").status_code == 404


def test_devices_are_allocated_queued_released_and_survive_restart(gpu_cluster: Cluster) -> None:
    c = gpu_cluster
    c.create_session("gpu-a", config={"resources": {"mem": "256m", "cuda.device": "1"}}, running=False)
    c.create_session("gpu-b", config={"resources": {"mem": "256m", "cuda.device": "1"}}, running=False)
    env_a, env_b = _env(c, "gpu-a"), _env(c, "gpu-b")
    dev_a, dev_b = env_a["BACKENDAI_ACCELERATOR_CUDA_DEVICES"], env_b["BACKENDAI_ACCELERATOR_CUDA_DEVICES"]
    assert {dev_a, dev_b} == WHOLE  # one device each, never the same one
    assert env_a["CUDA_VISIBLE_DEVICES"] == "0"
    assert _agent(c)["occupied_slots"]["cuda.device"] == "2"
    # Both devices are taken: the third waits.
    r = c.request(
        "POST",
        "/session",
        {
            "image": "python",
            "name": "gpu-c",
            "enqueueOnly": True,
            "config": {"resources": {"mem": "256m", "cuda.device": "1"}},
        },
    )
    assert r.status_code == 201, r.text
    time.sleep(3)
    assert c.request("GET", "/session/gpu-c").json()["status"] == "PENDING"
    # More devices than the agent has can never fit.
    r = c.request(
        "POST", "/session", {"image": "python", "name": "gpu-3", "config": {"resources": {"cuda.device": "3"}}}
    )
    assert r.status_code == 406, r.text
    # An agent restart keeps both allocations: when gpu-b ends, gpu-c gets exactly gpu-b's device
    # (had the agent forgotten gpu-a's, it would hand out the first device, gpu-a's).
    assert dev_a == "mock-gpu-0"
    c.stop("agent")
    c.start("agent")
    # The manager still lists the restarted agent alive before it answers its RPC port again.
    wait_until("the agent to come back", c.agent_answers, bool, timeout=60)
    assert c.request("DELETE", "/session/gpu-b").status_code == 200
    c.wait_for_status("gpu-c", "RUNNING")
    assert _env(c, "gpu-c")["BACKENDAI_ACCELERATOR_CUDA_DEVICES"] == dev_b
    assert _env(c, "gpu-a")["BACKENDAI_ACCELERATOR_CUDA_DEVICES"] == dev_a
    for name in ("gpu-a", "gpu-c"):
        assert c.request("DELETE", f"/session/{name}").status_code == 200
    deadline = time.monotonic() + 10
    while _agent(c)["occupied_slots"].get("cuda.device", "0") != "0" and time.monotonic() < deadline:
        time.sleep(0.3)
    assert _agent(c)["occupied_slots"].get("cuda.device", "0") == "0"


def test_fractional_shares_and_batch_end_release(gpu_cluster: Cluster) -> None:
    c = gpu_cluster
    c.create_session("frac-a", config={"resources": {"mem": "256m", "cuda.shares": "1.5"}}, running=False)
    shares = _env(c, "frac-a")["BACKENDAI_ACCELERATOR_CUDA_SHARES"]
    assert sorted(shares.split(",")) == ["mock-frac-0=1", "mock-frac-1=0.5"] or sorted(shares.split(",")) == [
        "mock-frac-0=0.5",
        "mock-frac-1=1",
    ]
    # A batch session takes the remaining half and gives it back when its task ends.
    r = c.request(
        "POST",
        "/session",
        {
            "image": "python",
            "name": "frac-batch",
            "type": "batch",
            "startupCommand": "echo $BACKENDAI_ACCELERATOR_CUDA_SHARES",
            "config": {"resources": {"mem": "256m", "cuda.shares": "0.5"}},
        },
    )
    assert r.status_code == 201, r.text
    c.wait_for_status("frac-batch", "TERMINATED")
    logs = c.request("GET", "/session/frac-batch/logs").json()["result"]["logs"]
    assert "=0.5" in logs
    # fits only because the batch session gave its share back
    c.create_session("frac-b", config={"resources": {"mem": "256m", "cuda.shares": "0.5"}}, running=False)
    for name in ("frac-a", "frac-b"):
        assert c.request("DELETE", f"/session/{name}").status_code == 200


def test_agent_refuses_unknown_plugin(tmp_path: Path) -> None:
    (tmp_path / "agent.toml").write_text('[agent]\nallow-compute-plugins = ["ai.backend.accelerator.nope"]\n')
    out = subprocess.run(
        [sys.executable, "-m", "ai.backend.agent.server", "-f", str(tmp_path / "agent.toml")],
        capture_output=True,
        text=True,
        timeout=60,
    )
    assert out.returncode == 2
    assert out.stderr.strip().count("\n") == 0 and "unknown compute plugin" in out.stderr
    (tmp_path / "agent.toml").write_text(
        '[agent]\nallow-compute-plugins = ["ai.backend.accelerator.mock"]\n'
        f'[plugins.mock]\nconfig = "{tmp_path}/missing.toml"\n'
    )
    out = subprocess.run(
        [sys.executable, "-m", "ai.backend.agent.server", "-f", str(tmp_path / "agent.toml")],
        capture_output=True,
        text=True,
        timeout=60,
    )
    assert out.returncode == 2 and out.stderr.strip().count("\n") == 0 and "missing.toml" in out.stderr


def _nvidia_gpu() -> bool:
    if shutil.which("nvidia-smi") is None:
        return False
    try:
        return subprocess.run(["nvidia-smi", "-L"], capture_output=True, timeout=20).returncode == 0
    except (OSError, subprocess.TimeoutExpired):
        return False


def test_real_gpu_through_device_requests(tmp_path_factory: pytest.TempPathFactory) -> None:
    if not _nvidia_gpu():
        pytest.skip("no NVIDIA GPU here")
    state = tmp_path_factory.mktemp("cuda")
    c = launch_cluster(state, storage=False, agent_toml='allow-compute-plugins = ["ai.backend.accelerator.cuda"]')
    try:
        assert "cuda.device" in c.request("GET", "/config/resource-slots").json()
        c.create_session("real-gpu", config={"resources": {"mem": "256m", "cuda.device": "1"}}, running=False)
        info = c.request("GET", "/session/real-gpu").json()
        fmt = "{{json .HostConfig.DeviceRequests}}"
        inspect = subprocess.run(
            ["docker", "inspect", "-f", fmt, info["containerId"]], capture_output=True, text=True, check=True
        )
        requests = json.loads(inspect.stdout)
        assert requests[0]["Driver"] == "nvidia" and len(requests[0]["DeviceIDs"]) == 1
        code = "import os\nprint(sorted(os.listdir('/dev')))"
        r = c.request("POST", "/session/real-gpu", {"mode": "query", "code": code})
        assert "nvidia0" in r.json()["result"]["console"][0][1] or "nvidiactl" in r.json()["result"]["console"][0][1]
        assert c.request("DELETE", "/session/real-gpu").status_code == 200
    finally:
        c.shutdown()
