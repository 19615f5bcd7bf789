"""The ``dummy`` kernel backend: kernels simulated in memory, with no Docker at all.

It stands in for a host, not for the agent: the agent around it is the real one (heartbeats, RPC,
capacity from ``[resource]``), so the manager schedules, starts and destroys dummy kernels exactly like
real ones. Many dummy agents fit on one machine (see :mod:`.fleet`), for tests and scheduler benchmarks.

Behaviour (``[dummy]`` in agent.toml):

* creating a kernel waits ``create-delay`` seconds (a number, or ``[min, max]`` picked uniformly), then
  answers phases ``image_check`` and ``container_start``; destroying waits ``destroy-delay``;
* the images reported are ``[[dummy.images]]`` (by default ``python:3.11-debian12`` with the real
  kernelspec labels), so the manager registers them as usual;
* ``execute`` finishes at once: with empty stdout (``execute = "empty"``) or the code as stdout
  (``execute = "echo"``); batch sessions finish with exit code 0 right after their start;
* ``interrupt``/``restart`` succeed, ``complete`` offers nothing, ``list_files`` lists an empty
  directory; terminals and file transfers are refused (there is no container);
* a main kernel has the apps of its image's ``ai.backend.service-ports`` label plus the intrinsic ones, on
  host ports of ``[container] port-range``; starting an app starts a tiny real server on its host ports at
  ``[container] bind-host`` (see :mod:`.dummy_apps`), stopping the app or destroying the kernel stops it.
"""

from __future__ import annotations

import asyncio
import random
import time
from dataclasses import dataclass, field
from typing import Any

from ai.backend.common.contracts.agent import KernelCreated, KernelSpec, ServiceOptions
from ai.backend.common.problems import InvalidAPIParameters, NotFound, ProblemError
from ai.backend.common.service_ports import LABEL as SERVICE_PORTS_LABEL
from ai.backend.common.service_ports import ServicePort, kernel_service_ports, preopen_service_ports

from ..accelerators import AcceleratorManager
from ..apps import AppStartFailed, check_options, find_app, host_ports, publish, service_answer
from ..config import AgentConfig, Delay
from ..port_pool import PortPool, PortPoolExhausted, port_is_free
from .base import KernelEventCallback, KernelExitCallback
from .dummy_apps import AppServer, serve_app


@dataclass
class DummyKernel:
    """A simulated kernel."""

    kernel_id: str
    container_id: str
    slots: dict[str, Any]
    started: float = field(default_factory=time.monotonic)
    destroying: bool = False
    executions: int = 0
    task: asyncio.Task[None] | None = None
    apps: list[ServicePort] = field(default_factory=list)
    # The servers of the started apps by app name.
    servers: dict[str, list[AppServer]] = field(default_factory=dict)
    apps_lock: asyncio.Lock = field(default_factory=asyncio.Lock)


class NoFreeHostPorts(ProblemError):
    status, slug, title = 500, "kernel-creation-failed", "The kernel could not be started"


def pick_delay(delay: Delay) -> float:
    """A delay setting as seconds: the number itself, or uniformly random in ``[min, max]``."""
    if isinstance(delay, tuple):
        return random.uniform(*delay)
    return float(delay)


class DummyBackend:
    """Keeps this agent's simulated kernels."""

    def __init__(
        self,
        config: AgentConfig,
        on_kernel_exit: KernelExitCallback,
        on_kernel_event: KernelEventCallback | None = None,
        accelerators: AcceleratorManager | None = None,
    ) -> None:
        self.config = config
        self.accelerators = accelerators if accelerators is not None else AcceleratorManager()
        self.kernels: dict[str, DummyKernel] = {}
        self.networks: set[str] = set()  # cluster networks "created" here
        self._on_kernel_exit = on_kernel_exit
        self._tasks: set[asyncio.Task[None]] = set()
        self._images: list[dict[str, Any]] = [
            {"ref": i.ref, "digest": i.digest or f"sha256:dummy-{i.ref}", "labels": dict(i.labels), "size": i.size}
            for i in config.dummy.images
        ]
        cc = config.container
        self.ports = PortPool(*cc.port_range, usable=port_is_free(cc.bind_host))

    async def start(self) -> None:
        """Nothing to prepare."""

    async def close(self) -> None:
        for task in list(self._tasks):
            task.cancel()
        for k in self.kernels.values():
            if k.task is not None:
                k.task.cancel()
            await self._stop_apps(k)

    async def list_images(self) -> list[dict[str, Any]]:
        return self._images

    async def create_network(self, name: str, mode: str) -> dict[str, Any]:
        """Simulated: kernels of a simulated cluster need no real network."""
        self.networks.add(name)
        return {"name": name, "driver": "dummy"}

    async def remove_network(self, name: str) -> bool:
        if name not in self.networks:
            return False
        self.networks.discard(name)
        return True

    async def create_kernel(self, spec: KernelSpec) -> KernelCreated:
        """Wait the configured creation delay and keep the kernel (409-like 400 when it exists)."""
        kid = spec.kernel_id
        if kid in self.kernels or self.accelerators.holds(kid):
            raise InvalidAPIParameters(f"Kernel {kid} already exists on this agent.")
        image = next((i for i in self._images if i["ref"] == spec.image), None)
        if image is None:
            raise InvalidAPIParameters(f"Image {spec.image} is not available on this dummy agent.")
        apps = self._apps(image["labels"], spec)
        try:
            apps = publish(apps, self.ports)
        except PortPoolExhausted as e:
            raise NoFreeHostPorts(f"No host ports left for the kernel's apps: {e} ([container] port-range).") from None
        slots = dict(spec.slots)
        try:
            self.accelerators.allocate(kid, slots)
        except BaseException:
            self.ports.release(host_ports(apps))
            raise
        # Reserve the id first so a concurrent duplicate is refused while this one waits.
        kernel = DummyKernel(kid, f"dummy-{kid}", slots, apps=apps)
        self.kernels[kid] = kernel
        delay = pick_delay(self.config.dummy.create_delay)
        try:
            if delay > 0:
                await asyncio.sleep(delay)
        except BaseException:
            self._forget(kernel)
            raise
        if spec.batch_command is not None:
            kernel.task = asyncio.create_task(self._finish_batch(kernel))
        return KernelCreated(
            container_id=kernel.container_id,
            service_ports=[a.to_record() for a in apps],
            kernel_host=self.config.container.kernel_host,
            phases={"image_check": 0.0, "container_start": round(delay, 4)},
        )

    @staticmethod
    def _apps(labels: dict[str, str], spec: KernelSpec) -> list[ServicePort]:
        """The kernel's apps: its image's and the intrinsic ones, plus the preopen ports (main kernels)."""
        try:
            apps = kernel_service_ports(labels.get(SERVICE_PORTS_LABEL), main=spec.is_main)
        except ValueError as e:
            raise InvalidAPIParameters(f"The image's {SERVICE_PORTS_LABEL} label is invalid: {e}") from None
        if not spec.is_main:
            return apps
        try:
            return apps + preopen_service_ports(spec.preopen_ports, apps)
        except ValueError as e:
            raise InvalidAPIParameters(f"preopen_ports: {e}") from None

    def _forget(self, kernel: DummyKernel) -> None:
        """Drop a kernel: its slots and its host ports are free again (its app servers stopped before)."""
        self.kernels.pop(kernel.kernel_id, None)
        self.accelerators.release(kernel.kernel_id)
        self.ports.release(host_ports(kernel.apps))
        kernel.apps = []

    async def _stop_apps(self, kernel: DummyKernel) -> None:
        servers = [s for group in kernel.servers.values() for s in group]
        kernel.servers.clear()
        for server in servers:
            await server.close()

    async def start_service(self, kid: str, name: str, options: ServiceOptions) -> dict[str, Any]:
        """Start the app's servers on its host ports (``preopen`` apps start nothing, as in a real kernel)."""
        kernel = self._get(kid)
        app = find_app(kernel.apps, kid, name)
        check_options(app, options)
        host = self.config.container.kernel_host
        async with kernel.apps_lock:
            if kernel.destroying:
                raise NotFound(f"Kernel {kid} does not exist on this agent.")
            if app.name in kernel.servers:
                return service_answer(app, {"status": "running"}, host)
            if app.protocol == "preopen":
                return service_answer(app, {"status": "started"}, host)
            servers: list[AppServer] = []
            bind = self.config.container.bind_host
            try:
                for container_port, port in zip(app.container_ports, app.host_ports, strict=True):
                    servers.append(
                        await serve_app(
                            app.protocol, bind, port, app=app.name, kernel_id=kid, container_port=container_port
                        )
                    )
            except OSError as e:
                for server in servers:
                    await server.close()
                raise AppStartFailed(f"The dummy app {app.name!r} cannot listen on {bind}: {e}") from None
            kernel.servers[app.name] = servers
        return service_answer(app, {"status": "started"}, host)

    async def shutdown_service(self, kid: str, name: str) -> dict[str, Any]:
        kernel = self._get(kid)
        app = find_app(kernel.apps, kid, name)
        async with kernel.apps_lock:
            servers = kernel.servers.pop(app.name, None)
            for server in servers or ():
                await server.close()
        return {"status": "stopped" if servers is not None else "not-running"}

    async def _finish_batch(self, kernel: DummyKernel) -> None:
        """A dummy batch task succeeds at once; the kernel ends like a real one whose task finished."""
        await asyncio.sleep(0)
        if kernel.destroying:
            return
        kernel.destroying = True
        await self._stop_apps(kernel)
        self._forget(kernel)
        await self._on_kernel_exit(kernel.kernel_id, "task-finished", 0, stats=self._stats(kernel), task_log="")

    def _get(self, kid: str) -> DummyKernel:
        kernel = self.kernels.get(kid)
        if kernel is None or kernel.destroying:
            raise NotFound(f"Kernel {kid} does not exist on this agent.")
        return kernel

    def _stats(self, kernel: DummyKernel) -> dict[str, Any]:
        return {
            "cpu_used": {"current": "0", "capacity": None},
            "mem": {"current": "0", "capacity": str(kernel.slots.get("mem", "0"))},
        }

    async def live_stats(self) -> dict[str, dict[str, Any]]:
        return {kid: self._stats(k) for kid, k in self.kernels.items() if not k.destroying}

    async def runner_request(self, kid: str, op: str, **fields: Any) -> dict[str, Any]:
        """Answer like a runner whose code always finishes at once."""
        kernel = self._get(kid)
        if op == "execute":
            kernel.executions += 1
            out = str(fields.get("code") or "") if self.config.dummy.execute == "echo" else ""
            return {"status": "finished", "console": [["stdout", out]], "exitCode": 0, "options": None, "files": []}
        if op in ("interrupt", "restart"):
            return {"status": "ok"}
        if op == "complete":
            return {"status": "finished", "completions": []}
        if op == "list_files":
            return {"files": [], "abspath": "/home/work/" + str(fields.get("path") or "")}
        raise InvalidAPIParameters(f"The dummy backend does not support {op!r} (no container behind the kernel).")

    async def logs(self, kid: str) -> str:
        kernel = self._get(kid)
        return f"dummy kernel {kid}: {kernel.executions} execution(s)\n"

    async def destroy_kernel(self, kid: str) -> dict[str, Any]:
        """Forget a kernel after the configured destruction delay; answers its last stats."""
        kernel = self.kernels.get(kid)
        if kernel is None:
            raise NotFound(f"Kernel {kid} does not exist on this agent.")
        kernel.destroying = True
        if kernel.task is not None:
            kernel.task.cancel()
        async with kernel.apps_lock:
            await self._stop_apps(kernel)
        delay = pick_delay(self.config.dummy.destroy_delay)
        if delay > 0:
            await asyncio.sleep(delay)
        self._forget(kernel)
        return self._stats(kernel)
