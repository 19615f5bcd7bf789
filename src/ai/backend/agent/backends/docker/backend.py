"""The Docker backend: creates, watches and destroys kernel containers through the Engine API."""

from __future__ import annotations

import asyncio
import io
import json
import logging
import os
import secrets
import shutil
import tarfile
import time
from collections.abc import Awaitable, Callable
from dataclasses import dataclass, field
from decimal import Decimal
from pathlib import Path, PurePosixPath
from typing import Any

import aiodocker
from aiodocker.exceptions import DockerError

from ai.backend.common.contracts.agent import FolderMount, KernelCreated, KernelSpec, ServiceOptions
from ai.backend.common.problems import InvalidAPIParameters, NotFound, ProblemError
from ai.backend.common.service_ports import LABEL as SERVICE_PORTS_LABEL
from ai.backend.common.service_ports import ServicePort, kernel_service_ports, preopen_service_ports
from ai.backend.common.types import BinarySize

from ...accelerators import AcceleratorManager
from ...apps import (
    check_options,
    fetch_app_info,
    find_app,
    host_ports,
    publish,
    service_answer,
    shutdown_answer,
)
from ...cluster_kernels import cluster_environ, ssh_keypair_tar
from ...config import AgentConfig
from ...kernel_tasks import (
    BOOTSTRAP_PATH,
    CONTAINER_LOG_LIMIT,
    CONTAINER_LOG_LINES,
    TaskLog,
    dotfile_path,
    drive_batch,
    files_tar,
    log_tail,
    parse_perm,
)
from ...port_pool import PortPool, PortPoolExhausted, port_is_free
from ...runner_client import RunnerClient, RunnerConnectionError
from ...stats import container_stats, network_stats
from .networks import ClusterNetworks, endpoint_config
from .publishing import bound_host_ports, is_port_conflict, port_config
from .scratch import WRITABLE, ScratchSpace

log = logging.getLogger(__name__)

KERNEL_PKG_DIR = Path(__file__).resolve().parents[3] / "kernel"  # ai/backend/kernel
RUNNER_MOUNT = "/opt/backend.ai/ai/backend/kernel"
IPC_MOUNT = "/run/backend.ai/ipc"
LABEL_KERNEL = "ai.backend.kernel-id"
LABEL_SESSION = "ai.backend.session-id"
LABEL_AGENT = "ai.backend.agent-id"
LABEL_OWNER = "ai.backend.owner"
LABEL_POOL = "ai.backend.pool-image"

KernelEventCallback = Callable[..., Awaitable[None]]
#: Longest a bootstrap script may run before the session starts anyway.
BOOTSTRAP_TIMEOUT = 600.0
#: Tries at starting a fresh kernel whose host ports another process took between the check and the start.
PORT_CONFLICT_TRIES = 3
SSH_DIR = PurePosixPath("/home/work/.ssh")


def folder_binds(mounts: list[FolderMount]) -> list[str]:
    """Docker ``Binds`` for a kernel's virtual folders (the spec's ``mounts``)."""
    binds = []
    for m in mounts:
        host, target = m.host_path, m.container_path
        if not (
            host.startswith("/") and target.startswith("/") and ":" not in host + target and "," not in host + target
        ):
            raise InvalidAPIParameters(f"Malformed folder mount: {m.model_dump()!r}")
        if not os.path.isdir(host):
            raise KernelCreationFailed(f"The folder to mount is missing on this host: {host}", reason="mount-failed")
        binds.append(f"{host}:{target}:{m.mode}")
    return binds


async def _ignore_event(kid: str, event: str) -> None:
    return None


def _image_apps(labels: dict[str, str], *, main: bool) -> list[ServicePort]:
    """The apps of a kernel of an image with ``labels`` (the image's and the intrinsic ones for a main kernel)."""
    try:
        return kernel_service_ports(labels.get(SERVICE_PORTS_LABEL), main=main)
    except ValueError as e:
        raise KernelCreationFailed(f"The image's {SERVICE_PORTS_LABEL} label is invalid: {e}") from None


def _apps_of_records(records: list[Any]) -> list[ServicePort]:
    """Apps from their stored records (kernel.json of a kernel taken back); malformed ones are left out."""
    out = []
    for record in records:
        try:
            out.append(ServicePort.from_record(record))
        except ValueError:
            log.warning("ignoring a malformed service port record %r", record)
    return out


def is_registry_reference(image: str) -> bool:
    """Whether ``image`` names a remote registry (``host.domain/...``, ``host:port/...``, ``localhost/...``)."""
    first, sep, _ = image.partition("/")
    return bool(sep) and ("." in first or ":" in first or first == "localhost")


class KernelCreationFailed(ProblemError):
    status, slug, title = 500, "kernel-creation-failed", "The kernel could not be started"


class RunnerUnavailable(ProblemError):
    status, slug, title = 502, "runner-unavailable", "The kernel runner is not responding"


@dataclass
class KernelState:
    """What the agent keeps about one live kernel."""

    kernel_id: str
    container_id: str
    scratch: Path
    runner: RunnerClient | None = None
    destroying: bool = False
    runner_lock: asyncio.Lock = field(default_factory=asyncio.Lock)
    task_log: TaskLog = field(default_factory=TaskLog)
    batch_task: asyncio.Task[None] | None = None
    pid: int | None = None  # the container's init process, for its network counters
    apps: list[ServicePort] = field(default_factory=list)  # its apps, published on host ports


class DockerBackend:
    """Owns this agent's kernel containers."""

    def __init__(
        self,
        config: AgentConfig,
        on_kernel_exit: KernelEventCallback,
        on_kernel_event: Callable[[str, str], Awaitable[None]] | None = None,
        accelerators: AcceleratorManager | None = None,
    ) -> None:
        self.config = config
        # Compute plugins: which kernel holds which accelerator devices.
        self.accelerators = accelerators if accelerators is not None else AcceleratorManager()
        self._on_kernel_event = on_kernel_event or _ignore_event
        self.docker = aiodocker.Docker()
        self.kernels: dict[str, KernelState] = {}
        self._on_kernel_exit = on_kernel_exit
        self._watch_task: asyncio.Task[None] | None = None
        self._bg_tasks: set[asyncio.Task[None]] = set()
        # Pre-started spare containers per image, and the refills in progress.
        self.pool: dict[str, list[KernelState]] = {}
        self._refilling: dict[str, asyncio.Task[None]] = {}
        self.scratch_root = Path(config.container.scratch_root).resolve()
        cc = config.container
        self.scratch = ScratchSpace(
            self.scratch_root, int(BinarySize.parse(cc.scratch_size)), cc.kernel_uid, cc.kernel_gid
        )
        self._template_locks: dict[str, asyncio.Lock] = {}
        self.networks = ClusterNetworks(self.docker, config.agent.id)
        # Host ports for the kernels' and the spares' apps; the ports of each container by its scratch
        # directory (unique to a kernel or spare), given back once the container is gone (_remove).
        self.ports = PortPool(*cc.port_range, usable=port_is_free(cc.bind_host))
        self._scratch_ports: dict[Path, list[int]] = {}

    async def start(self) -> None:
        """Prepare the kernel network, re-attach to our running containers, and watch Docker events."""
        self.scratch_root.mkdir(parents=True, exist_ok=True)
        await self._ensure_network()
        await self._reattach()
        # Scratch images of kernels that ended while no agent ran (or of a crashed creation).
        live = {k.scratch for k in self.kernels.values()}
        for path in await asyncio.to_thread(self.scratch.cleanup, live):
            log.info("removed the leftover scratch %s", path)
        for name in await self.networks.remove_unused():
            log.info("removed the leftover cluster network %s", name)
        self._watch_task = asyncio.create_task(self._watch_events())

    async def close(self) -> None:
        if self._watch_task:
            self._watch_task.cancel()
        for task in self._refilling.values():
            task.cancel()
        spares = [k for ks in self.pool.values() for k in ks]
        self.pool.clear()
        for k in spares:
            if k.runner:
                await k.runner.close()
            self._bg_tasks.add(asyncio.create_task(self._remove(k.container_id, k.scratch)))
        if self._bg_tasks:
            await asyncio.gather(*self._bg_tasks, return_exceptions=True)
        # The batch tasks stop following their runs first: a run goes on in its container and is followed again
        # after a restart (_reattach), so closing its runner client must not report the task as lost.
        kernels = list(self.kernels.values())
        tasks = [k.batch_task for k in kernels if k.batch_task is not None]
        for task in tasks:
            task.cancel()
        await asyncio.gather(*tasks, return_exceptions=True)
        for k in kernels:
            if k.runner:
                await k.runner.close()
        await self.docker.close()

    async def _ensure_network(self) -> None:
        name = self.config.container.network
        try:
            await self.docker.networks.get(name)
        except DockerError:
            try:
                await self.docker.networks.create(
                    {
                        "Name": name,
                        "Driver": "bridge",
                        "CheckDuplicate": True,
                        # Kernels of different users must not reach each other.
                        "Options": {"com.docker.network.bridge.enable_icc": "false"},
                        "Labels": {"ai.backend.managed": "1"},
                    }
                )
            except DockerError as e:
                if e.status != 409:
                    raise

    async def _reattach(self) -> None:
        """Take back our running kernels after a restart; drop spares and containers that ended."""
        containers = await self.docker.containers.list(
            all=True, filters={"label": [f"{LABEL_AGENT}={self.config.agent.id}"]}
        )
        for c in containers:
            info = await c.show()
            labels = info["Config"].get("Labels") or {}
            scratch = Path(
                next(
                    (m["Source"] for m in info.get("Mounts", []) if m.get("Destination") == IPC_MOUNT),
                    str(self.scratch_root / "unknown" / "ipc"),
                )
            ).parent
            kid = labels.get(LABEL_KERNEL)
            if not kid and (scratch / "kernel.json").exists():
                kid = json.loads((scratch / "kernel.json").read_text()).get(LABEL_KERNEL)
            if not kid:
                await self._remove(c.id, scratch)  # an unassigned spare: start fresh ones later
                continue
            if info["State"].get("Running"):
                if info["State"].get("Paused"):
                    # Left paused by a file transfer that the previous agent process did not finish.
                    try:
                        await c.unpause()
                    except DockerError as e:
                        log.warning("could not unpause kernel %s: %s", kid, e.message)
                state = self.kernels[kid] = KernelState(kid, c.id, scratch, pid=info["State"].get("Pid") or None)
                log.info("re-attached to kernel %s", kid)
                ports = bound_host_ports(info)
                self.ports.claim(ports)
                self._scratch_ports[scratch] = ports
                try:
                    meta = json.loads((scratch / "kernel.json").read_text())
                except (OSError, ValueError):
                    meta = {}
                if isinstance(meta, dict) and isinstance(meta.get("service_ports"), list):
                    state.apps = _apps_of_records(meta["service_ports"])
                if isinstance(meta, dict) and meta.get("accelerators"):
                    self.accelerators.restore(kid, meta["accelerators"])
                if isinstance(meta, dict) and isinstance(meta.get("batch_run_id"), str):
                    # The batch task kept running in the container; follow it again.
                    self._start_batch_task(state, {}, meta["batch_run_id"], resume=True)
            else:
                await self._report_exit(kid, info)
                await self._remove(c.id, scratch)

    async def create_network(self, name: str, mode: str) -> dict[str, Any]:
        """Create a cluster session's network (see :class:`ClusterNetworks`)."""
        return await self.networks.create(name, mode)

    async def remove_network(self, name: str) -> bool:
        return await self.networks.remove(name)

    async def list_images(self) -> list[dict[str, Any]]:
        """Local images carrying the kernel labels, one entry per repository tag."""
        out = []
        for img in await self.docker.images.list(filters={"label": ["ai.backend.kernelspec"]}):
            for ref in img.get("RepoTags") or []:
                if ref == "<none>:<none>":
                    continue
                out.append(
                    {"ref": ref, "digest": img["Id"], "labels": img.get("Labels") or {}, "size": img.get("Size", 0)}
                )
        return out

    def _container_config(
        self,
        image: str,
        labels: dict[str, str],
        cpu: Decimal,
        mem: int,
        ipc: Path,
        environ: dict[str, str],
        extra_labels: dict[str, str],
        hostname: str,
        mounts: list[str] | None = None,
        host_extra: dict[str, Any] | None = None,
        apps: list[ServicePort] | None = None,
    ) -> dict[str, Any]:
        cc = self.config.container
        exposed, bindings = port_config(apps or [], cc.bind_host)
        runtime_path = labels.get("ai.backend.runtime-path")
        config: dict[str, Any] = {
            "Image": image,
            "Cmd": [
                "python3",
                "-I",
                f"{RUNNER_MOUNT}/runner.py",
                "--socket",
                f"{IPC_MOUNT}/runner.sock",
                "--runtime-type",
                labels.get("ai.backend.runtime-type", "python"),
                *(["--runtime-path", runtime_path] if runtime_path else []),
                "--workdir",
                "/home/work",
                "--flush-timeout",
                str(cc.flush_timeout),
            ],
            "Entrypoint": [],
            "User": f"{cc.kernel_uid}:{cc.kernel_gid}",
            "WorkingDir": "/home/work",
            "Hostname": hostname,
            "Env": [f"{k}={v}" for k, v in environ.items()],
            "Labels": {LABEL_AGENT: self.config.agent.id, **extra_labels},
            "ExposedPorts": exposed,
            "HostConfig": {
                # Each app port on its own host port, on bind-host only (ADR 0012).
                "PortBindings": bindings,
                "PublishAllPorts": False,
                "Binds": [f"{KERNEL_PKG_DIR}:{RUNNER_MOUNT}:ro", f"{ipc}:{IPC_MOUNT}:rw", *(mounts or [])],
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
        if self.scratch.enabled:
            # Only the scratch image is writable, so a kernel cannot fill the host disk (ADR 0009).
            config["HostConfig"]["ReadonlyRootfs"] = True
            config["HostConfig"]["Binds"] += self.scratch.binds(ipc.parent)
        config["HostConfig"].update(host_extra or {})  # accelerator devices (DeviceRequests)
        return config

    async def _make_scratch(self, scratch: Path, image: str) -> None:
        """Create and mount the kernel's bounded scratch image, seeded with the image's ``/home/work``."""
        if not self.scratch.enabled:
            return
        try:
            image_id = str((await self.docker.images.inspect(image))["Id"])
            template = self.scratch.template_dir(image_id)
            if not template.exists():
                async with self._template_locks.setdefault(image_id, asyncio.Lock()):
                    if not template.exists():
                        home = await self._image_home(image)
                        await asyncio.to_thread(self.scratch.make_template, image_id, home)
            await asyncio.to_thread(self.scratch.create, scratch, template)
        except (DockerError, OSError) as e:
            await asyncio.to_thread(self.scratch.remove, scratch)
            shutil.rmtree(scratch, ignore_errors=True)
            raise KernelCreationFailed(f"Could not create the kernel's scratch space: {e}") from None

    async def _image_home(self, image: str) -> Any:
        """The image's ``/home/work`` as a tar (None when it has none), read from a created, never started
        container."""
        container = await self.docker.containers.create(
            {"Image": image, "Cmd": ["true"], "Entrypoint": [], "Labels": {LABEL_AGENT: self.config.agent.id}}
        )
        try:
            return await container.get_archive("/home/work")
        except DockerError:
            return None
        finally:
            await container.delete(force=True)

    async def _launch(
        self, config: dict[str, Any], name: str, scratch: Path
    ) -> tuple[str, RunnerClient, dict[str, float]]:
        """Create and start a container and connect to its runner; cleans up on failure."""
        phases: dict[str, float] = {}
        t = time.monotonic()
        try:
            container = await self.docker.containers.create(config, name=name)
            phases["container_create"] = round(time.monotonic() - t, 4)
            t = time.monotonic()
            await container.start()
            phases["container_start"] = round(time.monotonic() - t, 4)
        except DockerError as e:
            await self._remove(name, scratch)
            busy = {"reason": "host-port-busy"} if is_port_conflict(str(e.message)) else {}
            raise KernelCreationFailed(f"Docker refused to run the kernel: {e.message}", **busy) from None
        t = time.monotonic()
        runner = RunnerClient()
        try:
            await runner.connect(str(scratch / "ipc" / "runner.sock"), timeout=30.0)
            await runner.request("ping")
        except (TimeoutError, RunnerConnectionError, OSError) as e:
            logs = await self._logs(container.id)
            await runner.close()
            await self._remove(container.id, scratch)
            raise KernelCreationFailed(f"The kernel runner did not start: {e}. Container log: {logs[-500:]}") from None
        phases["runner_ready"] = round(time.monotonic() - t, 4)
        return container.id, runner, phases

    def _prepare_scratch(self, scratch: Path) -> Path:
        cc = self.config.container
        ipc = scratch / "ipc"
        ipc.mkdir(parents=True, exist_ok=True)
        os.chown(ipc, cc.kernel_uid, cc.kernel_gid)
        ipc.chmod(0o700)
        return ipc

    async def _image_labels(self, image: str) -> dict[str, str]:
        try:
            img = await self.docker.images.inspect(image)
        except DockerError:
            raise KernelCreationFailed(
                f"Image {image!r} is not present on agent {self.config.agent.id}.", reason="image-not-found"
            ) from None
        return dict(img["Config"].get("Labels") or {})

    async def _ensure_image(self, image: str, kid: str, auth: dict[str, str] | None = None) -> dict[str, str]:
        """The image's labels; an image of a remote registry that is missing here is pulled first."""
        try:
            return await self._image_labels(image)
        except KernelCreationFailed:
            if not is_registry_reference(image):
                raise
        await self._on_kernel_event(kid, "pulling")
        log.info("pulling %s for kernel %s", image, kid)
        last = ""
        try:
            async for progress in self.docker.images.pull(image, auth=auth, stream=True):
                if isinstance(progress, dict) and progress.get("error"):
                    raise KernelCreationFailed(
                        f"Pulling {image!r} failed: {progress['error']}", reason="failed-to-pull"
                    )
                status = f"{progress.get('id', '')} {progress.get('status', '')}".strip()
                if status != last:
                    log.debug("pull %s: %s", image, status)
                    last = status
        except DockerError as e:
            raise KernelCreationFailed(f"Pulling {image!r} failed: {e.message}", reason="failed-to-pull") from None
        labels = await self._image_labels(image)
        if "ai.backend.kernelspec" not in labels:
            raise KernelCreationFailed(
                f"{image!r} is not a kernel image (no ai.backend.kernelspec label).", reason="failed-to-pull"
            )
        return labels

    async def _fill_pool(self, image: str) -> None:
        """Start one spare container of ``image`` so that the next session of it starts at once."""
        pool_id = secrets.token_hex(8)
        scratch = self.scratch_root / f"pool-{pool_id}"
        try:
            labels = await self._image_labels(image)
            # A spare becomes the main kernel of a session of one kernel: it offers the image's apps.
            apps = _image_apps(labels, main=True)
            ipc = self._prepare_scratch(scratch)
            await self._make_scratch(scratch, image)
            apps = self._publish(scratch, apps)
            # Modest limits until the container is handed to a session, which sets its own.
            config = self._container_config(
                image, labels, Decimal("0.5"), 256 * 1024 * 1024, ipc, {}, {LABEL_POOL: image}, "main1", apps=apps
            )
            cid, runner, _ = await self._launch(config, f"bai-pool-{pool_id}", scratch)
        except Exception as e:  # noqa: BLE001 - a missing spare only makes the next start slower
            log.warning("could not pre-start a container of %s: %s", image, e)
            await asyncio.to_thread(self.scratch.remove, scratch)
            shutil.rmtree(scratch, ignore_errors=True)
            self._release_ports(scratch)
            return
        # Asked now, off the path of a session's start (the service definitions are the image's).
        apps = await fetch_app_info(runner.request, apps)
        self.pool.setdefault(image, []).append(KernelState("", cid, scratch, runner, apps=apps))

    def _schedule_refill(self, image: str) -> None:
        size = self.config.container.warm_pool_size
        if size <= 0 or image in self._refilling:
            return
        if len(self.pool.get(image, [])) >= size:
            return

        async def _refill() -> None:
            try:
                while len(self.pool.get(image, [])) < size:
                    await self._fill_pool(image)
            finally:
                self._refilling.pop(image, None)

        task = asyncio.create_task(_refill())
        self._refilling[image] = task

    async def _take_pooled(self, image: str) -> KernelState | None:
        if self.config.container.warm_pool_size <= 0:
            return None
        pending = self._refilling.get(image)
        if not self.pool.get(image) and pending is not None:
            # A spare is being started: waiting for it is never slower than starting another one.
            await asyncio.shield(pending)
        while self.pool.get(image):
            state = self.pool[image].pop(0)
            if state.runner is not None and not state.runner.closed:
                return state
            await self._remove(state.container_id, state.scratch)
        return None

    async def create_kernel(self, spec: KernelSpec) -> KernelCreated:
        """Take the kernel's accelerator devices (409 when they are not free), then start it."""
        kid = spec.kernel_id
        if kid in self.kernels or self.accelerators.holds(kid):
            raise InvalidAPIParameters(f"Kernel {kid} already exists on this agent.")
        self.accelerators.allocate(kid, dict(spec.slots))
        try:
            return await self._create_kernel(spec)
        except BaseException:
            self.accelerators.release(kid)
            raise

    async def _create_kernel(self, spec: KernelSpec) -> KernelCreated:
        """Start a kernel (from a pre-started spare when there is one) and report the phase timings."""
        kid = spec.kernel_id
        if kid in self.kernels:
            raise InvalidAPIParameters(f"Kernel {kid} already exists on this agent.")
        image = spec.image
        t = time.monotonic()
        auth = spec.registry_auth.model_dump() if spec.registry_auth is not None else None
        labels = await self._ensure_image(image, kid, auth)
        phases: dict[str, int | float | None] = {"image_check": round(time.monotonic() - t, 4)}
        cc = self.config.container
        cpu = Decimal(str(spec.slots.get("cpu", "1")))
        mem = int(Decimal(str(spec.slots.get("mem", 256 * 1024 * 1024))))
        environ = dict(spec.environ)
        cores = str(max(int(cpu), 1))
        for name in filter(None, (labels.get("ai.backend.envs.corecount") or "").split(",")):
            environ.setdefault(name.strip(), cores)
        environ.update(
            {
                "BACKENDAI_SESSION_ID": spec.session_id,
                "BACKENDAI_KERNEL_ID": kid,
                "BACKENDAI_SESSION_NAME": spec.session_name,
                **cluster_environ(spec),
            }
        )
        networking = endpoint_config(spec)
        if spec.cluster_network is not None and not await self.networks.exists(spec.cluster_network):
            raise KernelCreationFailed(
                f"The session's network {spec.cluster_network} does not exist on this agent's Docker engine; "
                "a multi-node session across hosts needs the agents' engines in one Docker swarm.",
                reason="cluster-network-unavailable",
            )
        accel_env, accel_host = self.accelerators.container_config(kid)
        environ.update(accel_env)
        kernel_labels = {LABEL_KERNEL: kid, LABEL_SESSION: spec.session_id, LABEL_OWNER: spec.access_key}
        binds = folder_binds(spec.mounts)
        apps = _image_apps(labels, main=spec.is_main)
        if spec.is_main:
            try:
                apps += preopen_service_ports(spec.preopen_ports, apps)
            except ValueError as e:
                raise InvalidAPIParameters(f"preopen_ports: {e}") from None
        t = time.monotonic()
        # A running spare cannot gain bind mounts, devices, another network or other published ports: such
        # sessions start a fresh one. (A spare is a main kernel with its image's apps.)
        fresh = (
            bool(binds)
            or self.accelerators.holds(kid)
            or networking is not None
            or bool(spec.preopen_ports)
            or not spec.is_main
        )
        state = None if fresh else await self._take_pooled(image)
        if state is not None:
            state.kernel_id = kid
            self.kernels[kid] = state
            try:
                container = self.docker.containers.container(state.container_id)
                limits = {
                    "Memory": mem,
                    "MemorySwap": mem,
                    "NanoCpus": int(cpu * Decimal(1_000_000_000)),
                    "PidsLimit": cc.pids_limit,
                }
                await self.docker._query_json(
                    f"containers/{state.container_id}/update",
                    method="POST",
                    data=json.dumps(limits),
                    headers={"Content-Type": "application/json"},
                )
                (state.scratch / "kernel.json").write_text(json.dumps({**kernel_labels}))
                assert state.runner is not None
                resp = await state.runner.request("restart", environ=environ)
                if "error" in resp:
                    raise KernelCreationFailed(f"The pre-started kernel refused its session: {resp['error']}")
                await container.rename(f"bai-kernel-{kid}")
            except (DockerError, RunnerConnectionError, KernelCreationFailed) as e:
                log.warning("pre-started container for %s unusable (%s); starting a fresh one", image, e)
                self.kernels.pop(kid, None)
                await self._remove(state.container_id, state.scratch)
                state = None
            else:
                phases["warm_handover"] = round(time.monotonic() - t, 4)
        if state is None:

            def build(ipc: Path, published: list[ServicePort]) -> dict[str, Any]:
                config = self._container_config(
                    image,
                    labels,
                    cpu,
                    mem,
                    ipc,
                    environ,
                    kernel_labels,
                    spec.cluster_hostname,
                    binds,
                    accel_host,
                    apps=published,
                )
                if networking is not None:
                    config["HostConfig"]["NetworkMode"] = spec.cluster_network
                    config["NetworkingConfig"] = networking
                return config

            cid, runner, launch_phases, apps = await self._start_fresh(kid, image, apps, build)
            phases.update(launch_phases)
            state = KernelState(kid, cid, scratch=self.scratch_root / kid, runner=runner, apps=apps)
            self.kernels[kid] = state
            ask_apps = True
        else:
            ask_apps = False  # the spare asked its runner when it started
        self._schedule_refill(image)
        try:
            if ask_apps and state.runner is not None:
                state.apps = await fetch_app_info(state.runner.request, state.apps)
            phases.update(await self._prepare_session(state, spec))
        except BaseException:
            await self.destroy_kernel(kid)
            raise
        return KernelCreated(
            container_id=state.container_id,
            service_ports=[a.to_record() for a in state.apps],
            kernel_host=cc.kernel_host,
            phases=phases,
        )

    async def _start_fresh(
        self,
        kid: str,
        image: str,
        apps: list[ServicePort],
        build: Callable[[Path, list[ServicePort]], dict[str, Any]],
    ) -> tuple[str, RunnerClient, dict[str, float], list[ServicePort]]:
        """Start a new container for kernel ``kid`` (``build``: its config for the IPC directory and the apps
        on their host ports); tried again on other host ports when one was taken between the check and the
        start (another agent or process of the host)."""
        scratch = self.scratch_root / kid
        for attempt in range(1, PORT_CONFLICT_TRIES + 1):
            published = self._publish(scratch, apps)
            try:
                ipc = self._prepare_scratch(scratch)
                await self._make_scratch(scratch, image)
            except BaseException:
                self._release_ports(scratch)
                raise
            try:
                cid, runner, phases = await self._launch(build(ipc, published), f"bai-kernel-{kid}", scratch)
            except KernelCreationFailed as e:
                # _launch removed what it made (ports given back, to the back of the queue).
                if e.extra.get("reason") != "host-port-busy" or attempt == PORT_CONFLICT_TRIES:
                    raise
                log.info("a host port of kernel %s was taken meanwhile (%s); trying other ports", kid, e.detail)
                continue
            return cid, runner, phases, published
        raise AssertionError("unreachable")

    async def _prepare_session(self, state: KernelState, spec: KernelSpec) -> dict[str, int | float | None]:
        """Place the user's dotfiles, run the bootstrap script and start a batch session's task."""
        phases: dict[str, int | float | None] = {}
        cc = self.config.container
        files = []
        for entry in spec.dotfiles:
            try:
                path = dotfile_path(entry.path)
            except ValueError as e:
                raise KernelCreationFailed(f"Bad dotfile: {e}") from None
            files.append((path, entry.data.encode(), parse_perm(entry.perm)))
        script = spec.bootstrap_script
        if script is not None and script.strip():
            files.append((PurePosixPath(BOOTSTRAP_PATH), script.encode(), 0o700))
        archives = [files_tar(files, cc.kernel_uid, cc.kernel_gid)] if files else []
        # The user's key goes to the main kernel (its sshd app), unless the user keeps a .ssh folder of their own.
        own_ssh = any(PurePosixPath(m.container_path) == SSH_DIR for m in spec.mounts)
        user_key = spec.ssh_keypair if spec.is_main and not own_ssh else None
        keys = ssh_keypair_tar(spec, cc.kernel_uid, cc.kernel_gid, user_key=user_key)
        if keys is not None:
            archives.insert(0, keys)
        if archives:
            t = time.monotonic()
            try:
                container = self.docker.containers.container(state.container_id)
                for archive in archives:
                    for where, part in self._archives_by_mount(archive):
                        await container.put_archive(where, part)
            except DockerError as e:
                raise KernelCreationFailed(f"Could not place the session's files: {e.message}") from None
            phases["dotfiles"] = round(time.monotonic() - t, 4)
        if script is not None and script.strip():
            t = time.monotonic()
            state.task_log.write("[bootstrap script]\n")
            shell = f"/bin/bash {BOOTSTRAP_PATH}"
            command = f"if [ -x /bin/bash ]; then exec {shell}; else exec /bin/sh {BOOTSTRAP_PATH}; fi"
            try:
                outcome = await drive_batch(
                    lambda op, **kw: self.runner_request(state.kernel_id, op, **kw),
                    {"exec": command, "timeout": BOOTSTRAP_TIMEOUT},
                    state.task_log.write,
                )
            except ProblemError as e:
                raise KernelCreationFailed(f"The bootstrap script could not run: {e.detail}") from None
            phases["bootstrap"] = round(time.monotonic() - t, 4)
            phases["bootstrap_exit_code"] = outcome.exit_code
            state.task_log.write(f"[bootstrap script exited with {outcome.exit_code}]\n")
        meta: dict[str, Any] = {LABEL_KERNEL: state.kernel_id, "service_ports": [a.to_record() for a in state.apps]}
        if self.accelerators.holds(state.kernel_id):
            meta["accelerators"] = self.accelerators.to_json(state.kernel_id)  # restored by _reattach
        startup = spec.batch_command
        if startup is not None:
            run_id = f"batch-{state.kernel_id}"
            opts: dict[str, Any] = {"exec": startup}
            timeout = spec.batch_timeout
            if timeout is not None and timeout > 0:
                opts["timeout"] = timeout
            meta["batch_run_id"] = run_id
            self._start_batch_task(state, opts, run_id, resume=False)
        (state.scratch / "kernel.json").write_text(json.dumps(meta))
        return phases

    def _archives_by_mount(self, archive: bytes) -> list[tuple[str, bytes]]:
        """Split a tar meant for ``/`` into one per writable directory: Docker refuses to extract into a
        read-only root file system, even below a bind mount."""
        if not self.scratch.enabled:
            return [("/", archive)]
        parts: dict[str, tuple[io.BytesIO, tarfile.TarFile]] = {}
        with tarfile.open(fileobj=io.BytesIO(archive)) as src:
            for m in src.getmembers():
                name = "/" + m.name.lstrip("/")
                target = next((t for t in WRITABLE.values() if name.startswith(t + "/")), None)
                if target is None:
                    if name.rstrip("/") in WRITABLE.values() or any(
                        t.startswith(name.rstrip("/") + "/") for t in WRITABLE.values()
                    ):
                        continue  # a writable directory or a parent of one (e.g. /home): it exists
                    raise KernelCreationFailed(
                        f"{name} is outside the kernel's writable directories ({', '.join(WRITABLE.values())})"
                    )
                if target not in parts:
                    buf = io.BytesIO()
                    parts[target] = (buf, tarfile.open(fileobj=buf, mode="w", format=tarfile.PAX_FORMAT))
                m.name = name[len(target) + 1 :]
                parts[target][1].addfile(m, src.extractfile(m) if m.isfile() else None)
        out = []
        for target, (buf, tar) in parts.items():
            tar.close()
            out.append((target, buf.getvalue()))
        return out

    def _start_batch_task(self, state: KernelState, opts: dict[str, Any], run_id: str, *, resume: bool) -> None:
        state.batch_task = asyncio.create_task(self._batch_task(state, opts, run_id, resume))

    async def _batch_task(self, state: KernelState, opts: dict[str, Any], run_id: str, resume: bool) -> None:
        """Run a batch session's startup command; when it ends, the session ends with its exit code."""
        kid = state.kernel_id

        async def call(op: str, **kw: Any) -> dict[str, Any]:
            if resume and kw.get("mode") == "batch":
                kw["mode"] = "continue"  # the runner still has the run started before the agent restarted
            return await self.runner_request(kid, op, **kw)

        try:
            outcome = await drive_batch(call, opts, state.task_log.write, run_id=run_id)
        except asyncio.CancelledError:
            raise
        except ProblemError as e:
            if state.destroying:
                return  # destroyed meanwhile
            log.warning("batch task of kernel %s lost: %s", kid, e.detail)
            await self._finish_kernel(state, "task-lost", None)
            return
        if state.destroying:
            return
        if outcome.timed_out:
            reason = "task-timeout"
        else:
            reason = "task-finished" if outcome.exit_code == 0 else "task-failed"
        await self._finish_kernel(state, reason, outcome.exit_code)

    async def _finish_kernel(self, state: KernelState, reason: str, exit_code: int | None) -> None:
        """End a kernel on the agent's own initiative and tell the manager why."""
        if state.destroying:
            return
        state.destroying = True
        stats = self._stats(state)
        if state.runner:
            await state.runner.close()
        self.kernels.pop(state.kernel_id, None)
        self.accelerators.release(state.kernel_id)
        await self._on_kernel_exit(state.kernel_id, reason, exit_code, stats=stats, task_log=state.task_log.text())
        await self._remove(state.container_id, state.scratch)

    def _stats(self, state: KernelState) -> dict[str, Any]:
        stats = container_stats(state.container_id)
        scratch = self.scratch.usage(state.scratch)
        if scratch is not None:
            stats["io_max_scratch_size"], stats["io_cur_scratch_size"] = scratch
        if state.pid:
            stats.update(network_stats(state.pid))
        return stats

    async def live_stats(self) -> dict[str, dict[str, Any]]:
        """The Container Stats Object of every live kernel (for the heartbeat)."""
        out: dict[str, dict[str, Any]] = {}
        for kid, state in list(self.kernels.items()):
            if state.destroying:
                continue
            if state.pid is None:
                try:
                    info = await self.docker.containers.container(state.container_id).show()
                    state.pid = int(info["State"].get("Pid") or 0) or None
                except (DockerError, KeyError, ValueError):
                    pass
            out[kid] = self._stats(state)
        return out

    async def _logs(self, container_id: str) -> str:
        try:
            container = self.docker.containers.container(container_id)
            # Bounded: what runs in the container may have written to it.
            lines = await container.log(stdout=True, stderr=True, tail=CONTAINER_LOG_LINES)
            return log_tail("".join(lines), CONTAINER_LOG_LIMIT)
        except DockerError:
            return ""

    def _get(self, kid: str) -> KernelState:
        state = self.kernels.get(kid)
        if state is None or state.destroying:
            raise NotFound(f"Kernel {kid} does not exist on this agent.")
        return state

    async def runner_request(self, kid: str, op: str, **fields: Any) -> dict[str, Any]:
        """Send a request to a kernel's runner over its long-lived socket connection (an error answer is a 400)."""
        resp = await self._runner_answer(kid, op, **fields)
        if "error" in resp:
            raise InvalidAPIParameters(f"The kernel refused the request: {resp['error']}")
        return resp

    async def _runner_answer(self, kid: str, op: str, **fields: Any) -> dict[str, Any]:
        """The runner's answer to a request, error answers included."""
        state = self._get(kid)
        if state.runner is None or state.runner.closed:
            async with state.runner_lock:
                if state.runner is None or state.runner.closed:
                    state.runner = RunnerClient()
                    try:
                        await state.runner.connect(str(state.scratch / "ipc" / "runner.sock"), timeout=5.0)
                    except (TimeoutError, RunnerConnectionError, OSError):
                        raise RunnerUnavailable(f"Cannot connect to the runner of kernel {kid}.") from None
        try:
            resp = await state.runner.request(op, **fields)
        except RunnerConnectionError as e:
            raise RunnerUnavailable(f"The runner of kernel {kid} went away: {e}.") from None
        resp.pop("id", None)
        return resp

    async def start_service(self, kid: str, name: str, options: ServiceOptions) -> dict[str, Any]:
        """Start the app ``name`` of kernel ``kid`` (if it is not running) through its runner; answers
        ``{"status", "host", "ports"}`` (see :mod:`...apps`)."""
        app = find_app(self._get(kid).apps, kid, name)
        check_options(app, options)
        answer = await self._runner_answer(
            kid,
            "start_service",
            name=app.name,
            ports=list(app.container_ports),
            protocol=app.protocol,
            options=options.model_dump(mode="json"),
        )
        return service_answer(app, answer, self.config.container.kernel_host)

    async def shutdown_service(self, kid: str, name: str) -> dict[str, Any]:
        """Stop the app ``name`` of kernel ``kid``; answers ``{"status": "stopped" | "not-running"}``."""
        app = find_app(self._get(kid).apps, kid, name)
        return shutdown_answer(app, await self._runner_answer(kid, "shutdown_service", name=app.name))

    async def logs(self, kid: str) -> str:
        state = self._get(kid)
        return await self._logs(state.container_id) + state.task_log.text()

    async def destroy_kernel(self, kid: str) -> dict[str, Any]:
        """Kill and remove a kernel's container; answers its last stats."""
        state = self.kernels.get(kid)
        if state is None:
            raise NotFound(f"Kernel {kid} does not exist on this agent.")
        state.destroying = True
        stats = self._stats(state)
        if state.batch_task is not None:
            state.batch_task.cancel()
        if state.runner:
            await state.runner.close()
        self.kernels.pop(kid, None)
        self.accelerators.release(kid)
        # Killing and removing take Docker a few hundred milliseconds; the caller need not wait for it.
        task = asyncio.create_task(self._remove(state.container_id, state.scratch))
        self._bg_tasks.add(task)
        task.add_done_callback(self._bg_tasks.discard)
        return stats

    async def _remove(self, container_id: str, scratch: Path) -> None:
        try:
            await self.docker.containers.container(container_id).delete(force=True, v=True)
        except DockerError as e:
            if e.status != 404:
                log.warning("removing container %s failed: %s", container_id[:12], e.message)
        finally:
            # Only now that Docker let go of them (a port a failed removal still holds is passed over).
            self._release_ports(scratch)
        await asyncio.to_thread(self.scratch.remove, scratch)  # before the rmtree deletes through the mount
        await asyncio.to_thread(shutil.rmtree, scratch, True)

    def _publish(self, scratch: Path, apps: list[ServicePort]) -> list[ServicePort]:
        """``apps`` on host ports taken for the container of ``scratch`` (given back by :meth:`_remove`)."""
        try:
            published = publish(apps, self.ports)
        except PortPoolExhausted as e:
            raise KernelCreationFailed(
                f"No host ports left for the kernel's apps: {e} ([container] port-range).", reason="no-free-ports"
            ) from None
        self._scratch_ports[scratch] = host_ports(published)
        return published

    def _release_ports(self, scratch: Path) -> None:
        """Give back the host ports of the container of ``scratch`` (after Docker let go of them)."""
        self.ports.release(self._scratch_ports.pop(scratch, ()))

    async def _report_exit(self, kid: str, info: dict[str, Any], state: KernelState | None = None) -> None:
        st = info.get("State", {})
        never_started = not st.get("StartedAt", "").startswith("2")  # Docker's zero time is year 0001
        if st.get("OOMKilled"):
            reason = "oom-killed"
        elif st.get("ExitCode") not in (0, None) and never_started:
            reason = "failed-to-start"
        else:
            reason = "self-terminated"
        extra: dict[str, Any] = {}
        if state is not None:
            extra["task_log"] = state.task_log.text()
            if state.batch_task is not None:
                state.batch_task.cancel()
        await self._on_kernel_exit(kid, reason, st.get("ExitCode"), **extra)

    async def _watch_events(self) -> None:
        """Report kernels whose containers die without being destroyed by us (crash, OOM, exit)."""
        while True:
            try:
                sub = self.docker.events.subscribe(
                    filters=json.dumps(
                        {
                            "type": ["container"],
                            "event": ["die"],
                            "label": [f"{LABEL_AGENT}={self.config.agent.id}"],
                        }
                    )
                )
                while True:
                    ev = await sub.get()
                    if ev is None:
                        break
                    cid = ev.get("Actor", {}).get("ID") or ev.get("id")
                    state = next((k for k in self.kernels.values() if k.container_id == cid), None)
                    if state is None:
                        for spares in self.pool.values():
                            dead = [k for k in spares if k.container_id == cid]
                            for k in dead:
                                spares.remove(k)
                                await self._remove(k.container_id, k.scratch)
                        continue
                    if state.destroying:
                        continue
                    kid = state.kernel_id
                    state.destroying = True
                    self.accelerators.release(kid)  # before the manager hears of the end and places another
                    try:
                        info = await self.docker.containers.container(state.container_id).show()
                    except DockerError:
                        info = {}
                    if state.runner:
                        await state.runner.close()
                    await self._report_exit(kid, info, state)
                    await self._remove(state.container_id, state.scratch)
                    self.kernels.pop(kid, None)
            except asyncio.CancelledError:
                raise
            except Exception:  # noqa: BLE001 - reconnect to the event stream
                log.exception("docker event watcher failed; retrying")
                await asyncio.sleep(1.0)
