"""The agent's side of interactive apps (ADR 0012) through its real RPC server, without a manager.

* A dummy agent: the ``services/start`` and ``services/shutdown`` routes, their 4xx answers, and the tiny real
  app servers on the kernels' host ports.
* A Docker agent (``docker`` mark): every app port of a main kernel published on a host port of the agent's
  range, on 127.0.0.1 only; an image's own label (an image derived here, ``bai-test-apps:latest``); a warm spare
  handed over with its ports; ports given back when kernels go, refused when the range is used up, and taken
  back after an agent restart, passed over when taken by another process meanwhile; the user's SSH key placed
  in the main kernel.
"""

from __future__ import annotations

import asyncio
import json
import socket
import subprocess
import sys
import uuid
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import httpx
import pytest

from ai.backend.agent.backends.docker.backend import DockerBackend
from ai.backend.agent.config import AgentConfig
from ai.backend.common.auth import CLUSTER_SECRET_HEADER
from ai.backend.common.contracts.agent import KernelSpec
from ai.backend.manager.sessions.cluster import new_ssh_keypair
from ai.backend.testutils.cluster import _free_port, docker_available
from ai.backend.testutils.ports import free_port_block
from ai.backend.testutils.processes import remove_agent_containers, stop_process, unmount_under, wait_until

TEST_IMAGE = "bai-test-apps:latest"
TEST_LABEL = "web:http:[8080,8081],echo:tcp:9000"


@dataclass
class Agent:
    state: Path
    agent_id: str
    url: str
    secret: str
    port_range: tuple[int, int]
    proc: subprocess.Popen[bytes] | None = None

    def start(self) -> None:
        log = open(self.state / "agent.log", "ab")
        self.proc = subprocess.Popen(
            [sys.executable, "-m", "ai.backend.agent.server", "-f", str(self.state / "agent.toml")],
            stdout=log,
            stderr=log,
            start_new_session=True,
        )
        wait_until(f"agent {self.agent_id}", self._health, bool, timeout=60)

    def _health(self) -> bool:
        try:
            return self.request("GET", "/v1/health").status_code == 200
        except httpx.HTTPError:
            return False

    def stop(self) -> None:
        if self.proc is not None:
            stop_process(self.proc, 30)
            self.proc = None

    def request(self, method: str, path: str, body: Any = None, *, secret: str | None = None) -> httpx.Response:
        headers = {CLUSTER_SECRET_HEADER: self.secret if secret is None else secret}
        content = body if isinstance(body, bytes) else (json.dumps(body) if body is not None else None)
        return httpx.request(method, self.url + path, headers=headers, content=content, timeout=120)

    def create(self, kid: str, image: str = "python:latest", **spec: Any) -> httpx.Response:
        body = {"kernel_id": kid, "session_id": str(uuid.uuid4()), "image": image, **spec}
        body.setdefault("slots", {"cpu": "1", "mem": str(256 * 1024 * 1024)})
        return self.request("POST", "/v1/kernels", body)

    def start_app(self, kid: str, name: str, options: Any = None) -> httpx.Response:
        body: dict[str, Any] = {"name": name}
        if options is not None:
            body["options"] = options
        return self.request("POST", f"/v1/kernels/{kid}/services/start", body)

    def execute(self, kid: str, code: str) -> dict[str, Any]:
        r = self.request("POST", f"/v1/kernels/{kid}/execute", {"mode": "query", "code": code, "run_id": "r"})
        assert r.status_code == 200, r.text
        result: dict[str, Any] = r.json()
        return result


def _launch(state: Path, *, backend: str, container: dict[str, Any], dummy: str = "") -> Agent:
    state.mkdir(parents=True, exist_ok=True)
    agent_id = f"i-apps-{uuid.uuid4().hex[:8]}"
    port = _free_port()
    secret = uuid.uuid4().hex
    settings = "".join(f"{k} = {json.dumps(v)}\n" for k, v in container.items())
    (state / "agent.toml").write_text(
        f'[agent]\nid = "{agent_id}"\nbackend = "{backend}"\nrpc-listen-port = {port}\n'
        # No manager: the heartbeats fail quietly, the RPC server works all the same.
        f'manager-url = "http://127.0.0.1:{_free_port()}"\ncluster-secret = "{secret}"\nheartbeat-interval = 30\n\n'
        f'[container]\nscratch-root = "{state}/scratches"\n{settings}\n[resource]\ncpu = 4\nmem = "4g"\n{dummy}'
    )
    low, high = container.get("port-range", (30000, 31000))
    agent = Agent(state, agent_id, f"http://127.0.0.1:{port}", secret, (low, high))
    agent.start()
    return agent


def _cleanup(agent: Agent) -> None:
    agent.stop()
    remove_agent_containers(agent.agent_id)
    unmount_under(agent.state / "scratches")


def _problem(r: httpx.Response, status: int, slug: str) -> dict[str, Any]:
    assert r.status_code == status, r.text
    doc: dict[str, Any] = r.json()
    assert r.headers["content-type"].startswith("application/problem+json") and doc["type"].endswith("/" + slug), doc
    return doc


def _refused(host: str, port: int) -> bool:
    try:
        socket.create_connection((host, port), timeout=2).close()
    except OSError:
        return True
    return False


# --- a dummy agent ------------------------------------------------------------------------------------------


@pytest.fixture(scope="module")
def dummy_agent(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Agent]:
    low, high = free_port_block(50)
    images = (
        '[[dummy.images]]\nref = "apps:1"\n'
        f'labels = {{"ai.backend.kernelspec" = "1", "ai.backend.service-ports" = "{TEST_LABEL}"}}\n'
    )
    agent = _launch(
        tmp_path_factory.mktemp("apps-dummy"),
        backend="dummy",
        container={"port-range": [low, high], "bind-host": "127.1.0.9"},
        dummy=images,
    )
    try:
        yield agent
    finally:
        agent.stop()


def test_dummy_agent_starts_and_stops_apps_over_http(dummy_agent: Agent) -> None:
    a = dummy_agent
    r = a.create("k1", "apps:1")
    assert r.status_code == 200, r.text
    created = r.json()
    assert created["kernel_host"] == "127.1.0.9"
    apps = {p["name"]: p for p in created["service_ports"]}
    assert sorted(apps) == ["echo", "sshd", "ttyd", "web"]
    r = a.start_app("k1", "web", {"envs": {}, "arguments": {}})
    assert r.status_code == 200, r.text
    assert r.json() == {"status": "started", "host": "127.1.0.9", "ports": apps["web"]["host_ports"]}
    page = httpx.get(f"http://127.1.0.9:{apps['web']['host_ports'][1]}/tree", timeout=10).json()
    assert page == {"app": "web", "kernel_id": "k1", "container_port": 8081, "path": "/tree"}
    assert a.start_app("k1", "web").json()["status"] == "running"
    r = a.start_app("k1", "ttyd")
    assert r.status_code == 200 and r.json()["ports"] == apps["ttyd"]["host_ports"]

    _problem(a.start_app("k1", "jupyter"), 404, "app-not-found")
    _problem(a.start_app("nope", "web"), 404, "not-found")
    doc = _problem(a.start_app("k1", "web", {"envs": {"A": 1}}), 400, "invalid-api-params")
    assert "options.envs.A" in doc["detail"]
    _problem(a.start_app("k1", "web", {"arguments": {"--x": {"y": 1}}}), 400, "invalid-api-params")
    _problem(a.start_app("k1", "web", "not an object"), 400, "invalid-api-params")
    _problem(a.request("POST", "/v1/kernels/k1/services/start", b"{not json"), 400, "invalid-api-params")
    _problem(a.request("POST", "/v1/kernels/k1/services/start", {"options": {}}), 400, "invalid-api-params")
    r = a.request("POST", "/v1/kernels/k1/services/start", {"name": "web"}, secret="wrong-secret")
    assert r.status_code == 401

    r = a.request("POST", "/v1/kernels/k1/services/shutdown", {"name": "web"})
    assert r.status_code == 200 and r.json() == {"status": "stopped"}
    assert _refused("127.1.0.9", apps["web"]["host_ports"][0])
    _problem(a.request("POST", "/v1/kernels/k1/services/shutdown", {"name": "nope"}), 404, "app-not-found")
    assert a.request("DELETE", "/v1/kernels/k1").status_code == 200
    assert _refused("127.1.0.9", apps["ttyd"]["host_ports"][0])


# --- a Docker agent -----------------------------------------------------------------------------------------


@pytest.fixture(scope="module")
def test_image() -> Iterator[str]:
    """``bai-test-apps:latest``: the python kernel image with an ``ai.backend.service-ports`` label of its own."""
    if not docker_available():
        pytest.fail("Docker engine or the python kernel image is missing: run scripts/setup.sh first")
    dockerfile = f'FROM python:latest\nLABEL ai.backend.service-ports="{TEST_LABEL}"\n'
    subprocess.run(["docker", "build", "-q", "-t", TEST_IMAGE, "-"], input=dockerfile.encode(), check=True)
    try:
        yield TEST_IMAGE
    finally:
        subprocess.run(["docker", "rmi", "-f", TEST_IMAGE], capture_output=True)


@pytest.fixture(scope="module")
def docker_agent(tmp_path_factory: pytest.TempPathFactory, test_image: str) -> Iterator[Agent]:
    low, high = free_port_block(60)
    agent = _launch(tmp_path_factory.mktemp("apps-docker"), backend="docker", container={"port-range": [low, high]})
    try:
        yield agent
    finally:
        _cleanup(agent)


def _inspect(container_id: str) -> dict[str, Any]:
    out = subprocess.run(["docker", "inspect", container_id], capture_output=True, text=True, check=True)
    info: dict[str, Any] = json.loads(out.stdout)[0]
    return info


def _published(info: dict[str, Any]) -> dict[int, list[tuple[str, int]]]:
    """Container port → the (address, host port) pairs Docker bound for it."""
    ports = info["NetworkSettings"]["Ports"] or {}
    return {
        int(key.split("/")[0]): [(b["HostIp"], int(b["HostPort"])) for b in bindings or ()]
        for key, bindings in ports.items()
    }


def _other_addresses() -> list[str]:
    out = subprocess.run(["hostname", "-I"], capture_output=True, text=True)
    return [a for a in out.stdout.split() if ":" not in a and not a.startswith("127.")]


def _check_published(created: dict[str, Any], low: int, high: int) -> dict[int, int]:
    """Every app port of ``created`` is published on its host port, on 127.0.0.1 only; container → host port."""
    info = _inspect(created["container_id"])
    assert info["HostConfig"]["PublishAllPorts"] is False
    published = _published(info)
    expected = {}
    for app in created["service_ports"]:
        assert len(app["host_ports"]) == len(app["container_ports"])
        for cport, hport in zip(app["container_ports"], app["host_ports"], strict=True):
            assert low <= hport <= high
            expected[cport] = hport
    assert published == {c: [("127.0.0.1", h)] for c, h in expected.items()}
    hosts = [h for a in created["service_ports"] for h in a["host_ports"]]
    assert len(set(hosts)) == len(hosts)
    return expected


@pytest.mark.docker
def test_main_kernel_apps_are_published_on_loopback(docker_agent: Agent) -> None:
    a = docker_agent
    low, high = a.port_range
    r = a.create("kpy")
    assert r.status_code == 200, r.text
    created = r.json()
    assert created["kernel_host"] == "127.0.0.1"
    label = _inspect(created["container_id"])["Config"]["Labels"]["ai.backend.service-ports"]
    names = [p.split(":")[0] for p in label.split(",") if p] + ["sshd", "ttyd"]
    assert [p["name"] for p in created["service_ports"]] == names
    ports = _check_published(created, low, high)
    assert ports[2200] and ports[7681]

    # Something listening on the container port is reachable at the host port, on loopback only.
    code = (
        "import http.server, threading\n"
        "srv = http.server.HTTPServer(('0.0.0.0', 2200), http.server.SimpleHTTPRequestHandler)\n"
        "threading.Thread(target=srv.serve_forever, daemon=True).start()\nprint('up')"
    )
    assert "up" in json.dumps(a.execute("kpy", code)["console"])
    answer = wait_until(
        "the published sshd port to answer",
        lambda: _get(f"http://127.0.0.1:{ports[2200]}/"),
        lambda status: status == 200,
        timeout=15,
    )
    assert answer == 200
    for addr in _other_addresses():
        assert _refused(addr, ports[2200]), addr

    # The runner this tree ships may not start apps yet: the agent says so (502), and a refused option is a 400.
    r = a.start_app("kpy", "sshd")
    if r.status_code != 200:
        doc = _problem(r, 502, "app-start-failed")
        assert doc["detail"]
    _problem(a.start_app("kpy", "nope"), 404, "app-not-found")
    assert a.request("DELETE", "/v1/kernels/kpy").status_code == 200


def _get(url: str) -> int:
    try:
        return httpx.get(url, timeout=3).status_code
    except httpx.HTTPError:
        return 0


@pytest.mark.docker
def test_image_label_and_warm_spares_keep_their_ports(docker_agent: Agent, test_image: str) -> None:
    a = docker_agent
    low, high = a.port_range
    r = a.create("kimg1", test_image)
    assert r.status_code == 200, r.text
    first = r.json()
    apps = {p["name"]: p for p in first["service_ports"]}
    assert list(apps) == ["web", "echo", "sshd", "ttyd"]
    assert apps["web"]["container_ports"] == [8080, 8081] and apps["echo"]["protocol"] == "tcp"
    _check_published(first, low, high)
    # The first kernel of an image starts a spare of it; the next kernel of the image is that spare.
    pool = wait_until(
        "a warm spare of the test image",
        lambda: subprocess.run(
            [
                "docker",
                "ps",
                "-q",
                "--filter",
                f"label=ai.backend.pool-image={test_image}",
                "--filter",
                f"label=ai.backend.agent-id={a.agent_id}",
            ],
            capture_output=True,
            text=True,
        ).stdout.split(),
        bool,
        timeout=60,
    )
    spare_ports = _published(_inspect(pool[0]))
    r = a.create("kimg2", test_image)
    assert r.status_code == 200, r.text
    second = r.json()
    assert "warm_handover" in second["phases"], second["phases"]
    assert second["container_id"].startswith(pool[0]) or pool[0].startswith(second["container_id"][:12])
    mine = _check_published(second, low, high)
    assert {c: [("127.0.0.1", h)] for c, h in mine.items()} == spare_ports
    hosts = {h for k in (first, second) for p in k["service_ports"] for h in p["host_ports"]}
    assert len(hosts) == 2 * 5
    for kid in ("kimg1", "kimg2"):
        assert a.request("DELETE", f"/v1/kernels/{kid}").status_code == 200


@pytest.mark.docker
def test_user_ssh_key_in_the_main_kernel(docker_agent: Agent) -> None:
    a = docker_agent
    private, public = new_ssh_keypair("user@backend.ai")
    cprivate, cpublic = new_ssh_keypair("cluster@backend.ai")
    r = a.create(
        "kssh",
        ssh_keypair={"public_key": public, "private_key": private},
        cluster_ssh={"public_key": cpublic, "private_key": cprivate},
    )
    assert r.status_code == 200, r.text
    code = (
        "import os, stat\n"
        "for p in ('/home/work/.ssh', '/home/work/.ssh/authorized_keys', '/home/work/id_container'):\n"
        "    st = os.stat(p); print(p, oct(stat.S_IMODE(st.st_mode)), st.st_uid)\n"
        "print(open('/home/work/.ssh/authorized_keys').read())\n"
        "print(open('/home/work/id_container').read() == " + repr(private) + ")"
    )
    out = "".join(text for kind, text in a.execute("kssh", code)["console"] if kind == "stdout")
    assert "/home/work/.ssh 0o700 1000" in out
    assert "/home/work/.ssh/authorized_keys 0o600 1000" in out
    assert "/home/work/id_container 0o600 1000" in out
    assert public.strip() in out and cpublic.strip() in out and out.strip().endswith("True")
    assert a.request("DELETE", "/v1/kernels/kssh").status_code == 200


@pytest.mark.docker
def test_ports_run_out_come_back_and_survive_a_restart(tmp_path: Path) -> None:
    low, high = free_port_block(6)
    # A python kernel needs 4 host ports: one kernel at a time fits in 6.
    agent = _launch(tmp_path, backend="docker", container={"port-range": [low, high], "warm-pool-size": 0})
    try:
        r = agent.create("kp1")
        assert r.status_code == 200, r.text
        first = r.json()
        doc = _problem(agent.create("kp2"), 500, "kernel-creation-failed")
        assert "No host ports left" in doc["detail"]
        # An agent restart takes the running kernel back, its ports and its apps included.
        agent.stop()
        agent.start()
        doc = _problem(agent.create("kp2"), 500, "kernel-creation-failed")
        assert "No host ports left" in doc["detail"]
        r = agent.start_app("kp1", "ttyd")
        assert r.status_code in (200, 502), r.text  # the app is known (not a 404)
        assert agent.request("DELETE", "/v1/kernels/kp1").status_code == 200
        # The ports come back once the container is gone (removed in the background).
        r = wait_until("the ports to come back", lambda: agent.create("kp2"), lambda r: r.status_code == 200, 60)
        second = r.json()
        hosts = {h for p in second["service_ports"] for h in p["host_ports"]}
        old = {h for p in first["service_ports"] for h in p["host_ports"]}
        # FIFO: the ports never used are handed out before the released ones.
        assert set(range(low, high + 1)) - old <= hosts
        assert agent.request("DELETE", "/v1/kernels/kp2").status_code == 200
    finally:
        _cleanup(agent)


@pytest.mark.docker
async def test_a_host_port_taken_meanwhile_is_passed_over(tmp_path: Path) -> None:
    """A port that passed the pool's check but was taken before Docker bound it: the kernel starts on others."""
    low, high = free_port_block(10)
    config = AgentConfig.model_validate(
        {
            "agent": {"id": f"i-apps-{uuid.uuid4().hex[:8]}"},
            "container": {"scratch-root": str(tmp_path / "scratches"), "port-range": [low, high], "warm-pool-size": 0},
        }
    )
    backend = DockerBackend(config, on_kernel_exit=lambda *a, **k: asyncio.sleep(0))
    await backend.start()
    backend.ports.usable = None  # no check: as if the port were taken right after it
    try:
        with socket.socket() as held:
            held.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
            held.bind(("127.0.0.1", low))
            held.listen()
            created = await backend.create_kernel(KernelSpec(kernel_id="kbusy", session_id="s", image="python:latest"))
        hosts = [h for p in created.service_ports for h in p["host_ports"]]
        assert low not in hosts and len(hosts) == 4
        assert low in backend.ports  # back in the pool, at the back
        await backend.destroy_kernel("kbusy")
    finally:
        await backend.close()
        remove_agent_containers(config.agent.id)
        unmount_under(tmp_path / "scratches")
