"""The Docker backend: creates, watches and destroys kernel containers through the Engine API."""

from __future__ import annotations

import asyncio
import json
import logging
import os
import shutil
import time
from collections.abc import Awaitable, Callable
from dataclasses import dataclass, field
from decimal import Decimal
from pathlib import Path
from typing import Any

import aiodocker
from aiodocker.exceptions import DockerError

from ai.backend.common.problems import InvalidAPIParameters, NotFound, ProblemError
from ai.backend.common.types import BinarySize

from .config import AgentConfig
from .runner_client import RunnerClient, RunnerConnectionError
from .stats import container_stats

log = logging.getLogger(__name__)

KERNEL_PKG_DIR = Path(__file__).resolve().parent.parent / "kernel"
RUNNER_MOUNT = "/opt/backend.ai/ai/backend/kernel"
IPC_MOUNT = "/run/backend.ai/ipc"
LABEL_KERNEL = "ai.backend.kernel-id"
LABEL_SESSION = "ai.backend.session-id"
LABEL_AGENT = "ai.backend.agent-id"
LABEL_OWNER = "ai.backend.owner"

KernelEventCallback = Callable[[str, str, int | None], Awaitable[None]]


class KernelCreationFailed(ProblemError):
    status, slug, title = 500, "kernel-creation-failed", "The kernel could not be started"


class RunnerUnavailable(ProblemError):
    status, slug, title = 502, "runner-unavailable", "The kernel runner is not responding"


@dataclass
class KernelState:
    """What the agent keeps about one live kernel."""

    kernel_id: str
    container_id: str
    ipc_dir: Path
    runner: RunnerClient | None = None
    destroying: bool = False
    runner_lock: asyncio.Lock = field(default_factory=asyncio.Lock)


class DockerBackend:
    """Owns this agent's kernel containers."""

    def __init__(self, config: AgentConfig, on_kernel_exit: KernelEventCallback) -> None:
        self.config = config
        self.docker = aiodocker.Docker()
        self.kernels: dict[str, KernelState] = {}
        self._on_kernel_exit = on_kernel_exit
        self._watch_task: asyncio.Task[None] | None = None
        self._bg_tasks: set[asyncio.Task[None]] = set()
        self.scratch_root = Path(config.container.scratch_root).resolve()

    async def start(self) -> None:
        """Prepare the kernel network, re-attach to our running containers, and watch Docker events."""
        self.scratch_root.mkdir(parents=True, exist_ok=True)
        await self._ensure_network()
        await self._reattach()
        self._watch_task = asyncio.create_task(self._watch_events())

    async def close(self) -> None:
        if self._watch_task:
            self._watch_task.cancel()
        if self._bg_tasks:
            await asyncio.gather(*self._bg_tasks, return_exceptions=True)
        for k in self.kernels.values():
            if k.runner:
                await k.runner.close()
        await self.docker.close()

    async def _ensure_network(self) -> None:
        name = self.config.container.network
        try:
            await self.docker.networks.get(name)
        except DockerError:
            try:
                await self.docker.networks.create({
                    "Name": name, "Driver": "bridge", "CheckDuplicate": True,
                    # Kernels of different users must not reach each other.
                    "Options": {"com.docker.network.bridge.enable_icc": "false"},
                    "Labels": {"ai.backend.managed": "1"},
                })
            except DockerError as e:
                if e.status != 409:
                    raise

    async def _reattach(self) -> None:
        containers = await self.docker.containers.list(
            all=True, filters={"label": [f"{LABEL_AGENT}={self.config.agent.id}"]}
        )
        for c in containers:
            labels = c._container.get("Labels", {})
            kid = labels.get(LABEL_KERNEL)
            if not kid:
                continue
            if c._container.get("State") == "running":
                self.kernels[kid] = KernelState(kid, c.id, self.scratch_root / kid / "ipc")
                log.info("re-attached to kernel %s", kid)
            else:
                info = await c.show()
                await self._report_exit(kid, info)
                await self._remove(c.id, self.scratch_root / kid)

    async def list_images(self) -> list[dict[str, Any]]:
        """Local images carrying the kernel labels, one entry per repository tag."""
        out = []
        for img in await self.docker.images.list(filters={"label": ["ai.backend.kernelspec"]}):
            for ref in img.get("RepoTags") or []:
                if ref == "<none>:<none>":
                    continue
                out.append({"ref": ref, "digest": img["Id"], "labels": img.get("Labels") or {},
                            "size": img.get("Size", 0)})
        return out

    async def create_kernel(self, spec: dict[str, Any]) -> dict[str, Any]:
        """Create and start a kernel container, wait for its runner, and report the phase timings."""
        kid = str(spec["kernel_id"])
        if kid in self.kernels:
            raise InvalidAPIParameters(f"Kernel {kid} already exists on this agent.")
        phases: dict[str, float] = {}
        t = time.monotonic()
        try:
            img = await self.docker.images.inspect(spec["image"])
        except DockerError:
            raise KernelCreationFailed(
                f"Image {spec['image']!r} is not present on agent {self.config.agent.id}."
            ) from None
        labels = img["Config"].get("Labels") or {}
        phases["image_check"] = round(time.monotonic() - t, 4)
        cc = self.config.container
        scratch = self.scratch_root / kid
        ipc = scratch / "ipc"
        ipc.mkdir(parents=True, exist_ok=True)
        os.chown(ipc, cc.kernel_uid, cc.kernel_gid)
        ipc.chmod(0o700)
        slots = spec.get("slots") or {}
        cpu = Decimal(str(slots.get("cpu", "1")))
        mem = int(Decimal(str(slots.get("mem", 256 * 1024 * 1024))))
        environ = dict(spec.get("environ") or {})
        cores = str(max(int(cpu), 1))
        for name in filter(None, (labels.get("ai.backend.envs.corecount") or "").split(",")):
            environ.setdefault(name.strip(), cores)
        environ.update({
            "BACKENDAI_SESSION_ID": str(spec["session_id"]), "BACKENDAI_KERNEL_ID": kid,
            "BACKENDAI_SESSION_NAME": str(spec.get("session_name", "")),
            "BACKENDAI_CLUSTER_SIZE": str(spec.get("cluster_size", 1)),
            "BACKENDAI_CLUSTER_HOST": str(spec.get("cluster_hostname", "main1")),
            "BACKENDAI_CLUSTER_HOSTS": str(spec.get("cluster_hostname", "main1")),
            "BACKENDAI_CLUSTER_ROLE": str(spec.get("cluster_role", "main")),
            "BACKENDAI_CLUSTER_IDX": str(spec.get("cluster_idx", 1)),
            "BACKENDAI_CLUSTER_LOCAL_RANK": "0",
            "BACKENDAI_CLUSTER_REPLICAS": f"{spec.get('cluster_role', 'main')}:1",
        })
        runtime_type = labels.get("ai.backend.runtime-type", "python")
        config: dict[str, Any] = {
            "Image": spec["image"],
            "Cmd": ["python3", "-I", f"{RUNNER_MOUNT}/runner.py", "--socket", f"{IPC_MOUNT}/runner.sock",
                    "--runtime-type", runtime_type, "--workdir", "/home/work",
                    "--flush-timeout", str(cc.flush_timeout)],
            "Entrypoint": [],
            "User": f"{cc.kernel_uid}:{cc.kernel_gid}",
            "WorkingDir": "/home/work",
            "Hostname": str(spec.get("cluster_hostname", "main1")),
            "Env": [f"{k}={v}" for k, v in environ.items()],
            "Labels": {LABEL_KERNEL: kid, LABEL_SESSION: str(spec["session_id"]),
                       LABEL_AGENT: self.config.agent.id, LABEL_OWNER: str(spec.get("access_key", ""))},
            "HostConfig": {
                "Binds": [f"{KERNEL_PKG_DIR}:{RUNNER_MOUNT}:ro", f"{ipc}:{IPC_MOUNT}:rw"],
                "NanoCpus": int(cpu * Decimal(1_000_000_000)),
                "Memory": mem,
                "MemorySwap": mem,  # no swap beyond the memory limit
                "PidsLimit": cc.pids_limit,
                "CapDrop": ["ALL"],
                "SecurityOpt": ["no-new-privileges"],
                "NetworkMode": cc.network,
                "ShmSize": int(BinarySize.parse(cc.shm_size)),
                "AutoRemove": False,
            },
        }
        t = time.monotonic()
        try:
            container = await self.docker.containers.create(config, name=f"bai-kernel-{kid}")
            phases["container_create"] = round(time.monotonic() - t, 4)
            state = KernelState(kid, container.id, ipc)
            self.kernels[kid] = state
            t = time.monotonic()
            await container.start()
            phases["container_start"] = round(time.monotonic() - t, 4)
        except DockerError as e:
            self.kernels.pop(kid, None)
            await self._remove(f"bai-kernel-{kid}", scratch)
            raise KernelCreationFailed(f"Docker refused to run the kernel: {e.message}") from None
        t = time.monotonic()
        try:
            state.runner = RunnerClient()
            await state.runner.connect(str(ipc / "runner.sock"), timeout=30.0)
            await state.runner.request("ping")
        except (TimeoutError, RunnerConnectionError, OSError) as e:
            logs = await self._logs(container.id)
            await self.destroy_kernel(kid)
            raise KernelCreationFailed(f"The kernel runner did not start: {e}. Container log: {logs[-500:]}") from None
        phases["runner_ready"] = round(time.monotonic() - t, 4)
        return {"container_id": container.id, "service_ports": [], "phases": phases}

    async def _logs(self, container_id: str) -> str:
        try:
            container = self.docker.containers.container(container_id)
            return "".join(await container.log(stdout=True, stderr=True))
        except DockerError:
            return ""

    def _get(self, kid: str) -> KernelState:
        state = self.kernels.get(kid)
        if state is None or state.destroying:
            raise NotFound(f"Kernel {kid} does not exist on this agent.")
        return state

    async def runner_request(self, kid: str, op: str, **fields: Any) -> dict[str, Any]:
        """Send a request to a kernel's runner over its long-lived socket connection."""
        state = self._get(kid)
        if state.runner is None or state.runner.closed:
            async with state.runner_lock:
                if state.runner is None or state.runner.closed:
                    state.runner = RunnerClient()
                    try:
                        await state.runner.connect(str(state.ipc_dir / "runner.sock"), timeout=5.0)
                    except (TimeoutError, RunnerConnectionError, OSError):
                        raise RunnerUnavailable(f"Cannot connect to the runner of kernel {kid}.") from None
        try:
            resp = await state.runner.request(op, **fields)
        except RunnerConnectionError as e:
            raise RunnerUnavailable(f"The runner of kernel {kid} went away: {e}.") from None
        resp.pop("id", None)
        if "error" in resp:
            raise InvalidAPIParameters(f"The kernel refused the request: {resp['error']}")
        return resp

    async def logs(self, kid: str) -> str:
        return await self._logs(self._get(kid).container_id)

    async def destroy_kernel(self, kid: str) -> dict[str, Any]:
        """Kill and remove a kernel's container; answers its last stats."""
        state = self.kernels.get(kid)
        if state is None:
            raise NotFound(f"Kernel {kid} does not exist on this agent.")
        state.destroying = True
        stats = container_stats(state.container_id)
        if state.runner:
            await state.runner.close()
        self.kernels.pop(kid, None)
        # Killing and removing take Docker a few hundred milliseconds; the caller need not wait for it.
        task = asyncio.create_task(self._remove(state.container_id, self.scratch_root / kid))
        self._bg_tasks.add(task)
        task.add_done_callback(self._bg_tasks.discard)
        return stats

    async def _remove(self, container_id: str, scratch: Path) -> None:
        try:
            await self.docker.containers.container(container_id).delete(force=True, v=True)
        except DockerError as e:
            if e.status != 404:
                log.warning("removing container %s failed: %s", container_id[:12], e.message)
        await asyncio.to_thread(shutil.rmtree, scratch, True)

    async def _report_exit(self, kid: str, info: dict[str, Any]) -> None:
        st = info.get("State", {})
        reason = "oom-killed" if st.get("OOMKilled") else "self-terminated"
        if st.get("ExitCode") not in (0, None) and reason != "oom-killed":
            reason = "failed-to-start" if not st.get("StartedAt", "").startswith("2") else "self-terminated"
        await self._on_kernel_exit(kid, reason, st.get("ExitCode"))

    async def _watch_events(self) -> None:
        """Report kernels whose containers die without being destroyed by us (crash, OOM, exit)."""
        while True:
            try:
                sub = self.docker.events.subscribe(filters=json.dumps({
                    "type": ["container"], "event": ["die"], "label": [f"{LABEL_AGENT}={self.config.agent.id}"],
                }))
                while True:
                    ev = await sub.get()
                    if ev is None:
                        break
                    attrs = ev.get("Actor", {}).get("Attributes", {})
                    kid = attrs.get(LABEL_KERNEL)
                    state = self.kernels.get(kid) if kid else None
                    if state is None or state.destroying:
                        continue
                    state.destroying = True
                    try:
                        info = await self.docker.containers.container(state.container_id).show()
                    except DockerError:
                        info = {}
                    if state.runner:
                        await state.runner.close()
                    await self._report_exit(kid, info)
                    await self._remove(state.container_id, self.scratch_root / kid)
                    self.kernels.pop(kid, None)
            except asyncio.CancelledError:
                raise
            except Exception:  # noqa: BLE001 - reconnect to the event stream
                log.exception("docker event watcher failed; retrying")
                await asyncio.sleep(1.0)
