"""The agent's side of apps without containers: the SSH files of a main kernel, the fleet's loopback hosts, the
Docker backend's start/shutdown against a fake runner on a real Unix socket, and the dummy backend's real
loopback app servers."""

from __future__ import annotations

import asyncio
import io
import tarfile
from collections.abc import AsyncIterator
from pathlib import Path
from typing import Any

import aiohttp
import pytest

from ai.backend.agent.apps import AppNotFound, AppStartFailed
from ai.backend.agent.backends.docker.backend import DockerBackend, KernelState
from ai.backend.agent.backends.dummy import DummyBackend
from ai.backend.agent.cluster_kernels import ssh_keypair_tar
from ai.backend.agent.config import AgentConfig
from ai.backend.agent.fleet import fleet_configs, loopback_host
from ai.backend.common.contracts.agent import KernelSpec, ServiceOptions, SSHKeypair
from ai.backend.common.problems import InvalidAPIParameters, NotFound
from ai.backend.common.service_ports import ServicePort
from ai.backend.kernel.protocol import encode, read_message
from ai.backend.manager.sessions.cluster import new_ssh_keypair
from ai.backend.testutils.ports import free_port_block


def _members(data: bytes) -> dict[str, tuple[tarfile.TarInfo, bytes]]:
    out = {}
    with tarfile.open(fileobj=io.BytesIO(data)) as tar:
        for m in tar.getmembers():
            f = tar.extractfile(m) if m.isfile() else None
            out[m.name.rstrip("/")] = (m, f.read() if f else b"")
    return out


def test_main_kernel_ssh_files_merge_the_user_and_cluster_keys() -> None:
    user_private, user_public = new_ssh_keypair("user@backend.ai")
    cluster_private, cluster_public = new_ssh_keypair("s@backend.ai")
    user = SSHKeypair(public_key=user_public + "\n", private_key=user_private)
    spec = {"cluster_ssh": {"private_key": cluster_private, "public_key": cluster_public}}
    data = ssh_keypair_tar(spec, 1000, 1000, user_key=user)
    assert data is not None
    files = _members(data)
    info, keys = files["home/work/.ssh/authorized_keys"]
    assert info.mode == 0o600 and keys.decode() == f"{user_public.strip()}\n{cluster_public.strip()}\n"
    info, private = files["home/work/id_container"]
    assert info.mode == 0o600 and private.decode() == user_private
    assert files["home/work/.ssh"][0].mode == 0o700 and files["home/work/.ssh"][0].isdir()
    assert files["home/config/ssh/id_cluster"][1].decode() == cluster_private
    assert all(m.uid == 1000 and m.gid == 1000 for m, _ in files.values())
    # The user's key alone (a session of one kernel).
    files = _members(ssh_keypair_tar({}, 1000, 1000, user_key=user) or b"")
    assert set(files) == {"home/work/.ssh", "home/work/.ssh/authorized_keys", "home/work/id_container"}
    assert files["home/work/.ssh/authorized_keys"][1].decode() == user_public.strip() + "\n"
    with pytest.raises(ValueError, match="one OpenSSH public key line"):
        SSHKeypair(public_key=user_public + "\nssh-ed25519 AAAA intruder", private_key=user_private)


def test_ssh_keypair_is_an_optional_field_of_the_kernel_spec() -> None:
    private, public = new_ssh_keypair("u")
    spec = KernelSpec.model_validate(
        {
            "kernel_id": "k",
            "session_id": "s",
            "image": "i",
            "ssh_keypair": {"public_key": public, "private_key": private},
        }
    )
    assert spec.ssh_keypair is not None and spec.is_main and spec.preopen_ports == []
    assert KernelSpec(kernel_id="k", session_id="s", image="i", cluster_role="sub").is_main is False


def test_fleet_agents_publish_on_loopback_addresses_of_their_own() -> None:
    base = AgentConfig.model_validate({"agent": {"rpc-listen-host": "127.0.0.1"}})
    cfgs = fleet_configs(base, count=300, port=7000, id_prefix="i-d-")
    hosts = [c.container.bind_host for c in cfgs]
    assert hosts[0] == "127.1.0.1" and hosts[255] == "127.1.1.0" and len(set(hosts)) == 300
    assert all(c.container.kernel_host == h for c, h in zip(cfgs, hosts, strict=True))
    assert loopback_host(2) == "127.1.0.2"
    pinned = AgentConfig.model_validate({"container": {"advertised-host": "node1"}})
    assert {c.container.bind_host for c in fleet_configs(pinned, count=3, port=7000, id_prefix="x")} == {"127.0.0.1"}


# --- the Docker backend against a fake runner ---------------------------------------------------------------


class FakeRunner:
    """A runner on a real Unix socket that records the requests and answers from ``answers`` by op."""

    def __init__(self, answers: dict[str, dict[str, Any]]) -> None:
        self.answers = answers
        self.requests: list[dict[str, Any]] = []

    async def handle(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        while (msg := await read_message(reader)) is not None:
            self.requests.append(msg)
            answer = self.answers.get(msg["op"], {"error": f"unknown op: {msg['op']!r}"})
            writer.write(encode({"id": msg["id"], **answer}))
            await writer.drain()
        writer.close()


@pytest.fixture
async def docker_backend(tmp_path: Path) -> AsyncIterator[tuple[DockerBackend, FakeRunner]]:
    config = AgentConfig.model_validate({"container": {"scratch-root": str(tmp_path), "advertised-host": "node9"}})
    backend = DockerBackend(config, on_kernel_exit=lambda *a, **k: asyncio.sleep(0))
    runner = FakeRunner({})
    (tmp_path / "k1" / "ipc").mkdir(parents=True)
    server = await asyncio.start_unix_server(runner.handle, str(tmp_path / "k1" / "ipc" / "runner.sock"))
    apps = [
        ServicePort("jupyter", "http", (8091, 8092), (30010, 30011), allowed_arguments=("--debug",), allowed_envs=()),
        ServicePort("sshd", "tcp", (2200,), (30012,)),
    ]
    backend.kernels["k1"] = KernelState("k1", "c1", tmp_path / "k1", apps=apps)
    try:
        yield backend, runner
    finally:
        for k in backend.kernels.values():
            if k.runner:
                await k.runner.close()
        server.close()
        await backend.docker.close()


async def test_docker_backend_forwards_start_and_shutdown_to_the_runner(
    docker_backend: tuple[DockerBackend, FakeRunner],
) -> None:
    backend, runner = docker_backend
    runner.answers["start_service"] = {"status": "started"}
    opts = ServiceOptions(arguments={"--debug": None})
    assert await backend.start_service("k1", "jupyter", opts) == {
        "status": "started",
        "host": "node9",
        "ports": [30010, 30011],
    }
    req = runner.requests[-1]
    assert {k: v for k, v in req.items() if k != "id"} == {
        "op": "start_service",
        "name": "jupyter",
        "ports": [8091, 8092],
        "protocol": "http",
        "options": {"envs": {}, "arguments": {"--debug": None}},
    }
    runner.answers["start_service"] = {"status": "running"}
    assert (await backend.start_service("k1", "sshd", ServiceOptions()))["status"] == "running"
    assert runner.requests[-1]["protocol"] == "tcp"
    runner.answers["shutdown_service"] = {"status": "stopped"}
    assert await backend.shutdown_service("k1", "sshd") == {"status": "stopped"}
    assert runner.requests[-1]["op"] == "shutdown_service" and runner.requests[-1]["name"] == "sshd"


async def test_docker_backend_start_failures(docker_backend: tuple[DockerBackend, FakeRunner]) -> None:
    backend, runner = docker_backend
    seen = len(runner.requests)
    with pytest.raises(AppNotFound):
        await backend.start_service("k1", "vscode", ServiceOptions())
    with pytest.raises(NotFound):
        await backend.start_service("nope", "sshd", ServiceOptions())
    with pytest.raises(InvalidAPIParameters, match="--port"):
        await backend.start_service("k1", "jupyter", ServiceOptions(arguments={"--port": "1"}))
    with pytest.raises(InvalidAPIParameters, match="TOKEN"):
        await backend.start_service("k1", "jupyter", ServiceOptions(envs={"TOKEN": "x"}))
    assert len(runner.requests) == seen  # refused before reaching the runner
    # The runner that predates apps.
    with pytest.raises(AppStartFailed, match="cannot start apps"):
        await backend.start_service("k1", "sshd", ServiceOptions())
    runner.answers["start_service"] = {"status": "failed", "error": "the executable file is not found: dropbear"}
    with pytest.raises(AppStartFailed) as e:
        await backend.start_service("k1", "sshd", ServiceOptions())
    assert e.value.status == 502 and e.value.body()["detail"] == "the executable file is not found: dropbear"
    runner.answers["start_service"] = {"status": "failed", "error": "DisallowedEnvironment: HOME"}
    with pytest.raises(InvalidAPIParameters, match="HOME"):
        await backend.start_service("k1", "sshd", ServiceOptions(envs={"HOME": "/"}))


# --- the dummy backend's app servers ------------------------------------------------------------------------


async def test_dummy_kernels_serve_their_apps_on_loopback(tmp_path: Path) -> None:
    low, high = free_port_block(40)
    label = "web:http:[8080,8081],echo:tcp:9000,later:preopen:5000"
    config = AgentConfig.model_validate(
        {
            "agent": {"backend": "dummy"},
            "container": {"port-range": [low, high], "bind-host": "127.1.0.77"},
            "dummy": {"images": [{"ref": "apps:1", "labels": {"ai.backend.service-ports": label}}]},
        }
    )
    backend = DummyBackend(config, on_kernel_exit=lambda *a, **k: asyncio.sleep(0))
    free = len(backend.ports)
    created = await backend.create_kernel(
        KernelSpec(kernel_id="k1", session_id="s", image="apps:1", preopen_ports=[5005])
    )
    assert created.kernel_host == "127.1.0.77"
    ports = {p["name"]: p for p in created.service_ports}
    assert list(ports) == ["web", "echo", "later", "sshd", "ttyd", "5005"]
    assert ports["web"]["container_ports"] == [8080, 8081] and len(ports["web"]["host_ports"]) == 2
    assert len(backend.ports) == free - 7
    # A kernel that is not its session's main one offers no apps.
    sub = await backend.create_kernel(KernelSpec(kernel_id="k2", session_id="s", image="apps:1", cluster_role="sub"))
    assert sub.service_ports == []

    started = await backend.start_service("k1", "web", ServiceOptions())
    assert started == {"status": "started", "host": "127.1.0.77", "ports": ports["web"]["host_ports"]}
    assert (await backend.start_service("k1", "web", ServiceOptions()))["status"] == "running"
    async with aiohttp.ClientSession() as http:
        for cport, hport in zip([8080, 8081], started["ports"], strict=True):
            async with http.get(f"http://127.1.0.77:{hport}/lab?x=1") as r:
                assert r.status == 200
                assert await r.json() == {"app": "web", "kernel_id": "k1", "container_port": cport, "path": "/lab"}
        async with http.ws_connect(f"http://127.1.0.77:{started['ports'][0]}/terminals/1") as ws:
            await ws.send_str("ls\n")
            assert (await ws.receive()).data == "ls\n"
    (echo_port,) = (await backend.start_service("k1", "echo", ServiceOptions()))["ports"]
    reader, writer = await asyncio.open_connection("127.1.0.77", echo_port)
    writer.write(b"ping")
    assert await reader.readexactly(4) == b"ping"
    writer.close()
    # A preopen app starts nothing: the user's own process listens there.
    assert (await backend.start_service("k1", "5005", ServiceOptions()))["status"] == "started"
    with pytest.raises(OSError):
        await asyncio.open_connection("127.1.0.77", ports["5005"]["host_ports"][0])
    with pytest.raises(AppNotFound):
        await backend.start_service("k1", "jupyter", ServiceOptions())

    assert await backend.shutdown_service("k1", "echo") == {"status": "stopped"}
    assert await backend.shutdown_service("k1", "echo") == {"status": "not-running"}
    with pytest.raises(OSError):
        await asyncio.open_connection("127.1.0.77", echo_port)
    await backend.destroy_kernel("k1")
    with pytest.raises(OSError):
        await asyncio.open_connection("127.1.0.77", started["ports"][0])
    await backend.destroy_kernel("k2")
    assert len(backend.ports) == free  # every port back in the pool
    await backend.close()


async def test_dummy_apps_need_free_ports() -> None:
    # Room for one kernel of the python image (jupyter, jupyterlab, sshd, ttyd) and not for two.
    low, _ = free_port_block(6)
    config = AgentConfig.model_validate({"agent": {"backend": "dummy"}, "container": {"port-range": [low, low + 5]}})
    backend = DummyBackend(config, on_kernel_exit=lambda *a, **k: asyncio.sleep(0))
    await backend.create_kernel(KernelSpec(kernel_id="k1", session_id="s", image="python:3.11-debian12"))
    with pytest.raises(Exception, match="No host ports left") as e:
        await backend.create_kernel(KernelSpec(kernel_id="k2", session_id="s", image="python:3.11-debian12"))
    assert getattr(e.value, "status", None) == 500 and "k2" not in backend.kernels
    with pytest.raises(InvalidAPIParameters, match="preopen_ports: port 2200"):
        await backend.create_kernel(
            KernelSpec(kernel_id="k3", session_id="s", image="python:3.11-debian12", preopen_ports=[2200])
        )
    await backend.destroy_kernel("k1")
    await backend.create_kernel(KernelSpec(kernel_id="k2", session_id="s", image="python:3.11-debian12"))
    await backend.close()
