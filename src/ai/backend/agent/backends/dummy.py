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
  directory; terminals and file transfers are refused (there is no container).
"""

from __future__ import annotations

import asyncio
import random
import time
from dataclasses import dataclass, field
from typing import Any

from ai.backend.common.contracts.agent import KernelCreated, KernelSpec
from ai.backend.common.problems import InvalidAPIParameters, NotFound

from ..accelerators import AcceleratorManager
from ..config import AgentConfig, Delay
from .base import KernelEventCallback, KernelExitCallback


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
        self._images = [
            {"ref": i.ref, "digest": i.digest or f"sha256:dummy-{i.ref}", "labels": dict(i.labels), "size": i.size}
            for i in config.dummy.images
        ]

    async def start(self) -> None:
        """Nothing to prepare."""

    async def close(self) -> None:
        for task in list(self._tasks):
            task.cancel()
        for k in self.kernels.values():
            if k.task is not None:
                k.task.cancel()

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
        if not any(i["ref"] == spec.image for i in self._images):
            raise InvalidAPIParameters(f"Image {spec.image} is not available on this dummy agent.")
        slots = dict(spec.slots)
        self.accelerators.allocate(kid, slots)
        # Reserve the id first so a concurrent duplicate is refused while this one waits.
        kernel = DummyKernel(kid, f"dummy-{kid}", slots)
        self.kernels[kid] = kernel
        delay = pick_delay(self.config.dummy.create_delay)
        try:
            if delay > 0:
                await asyncio.sleep(delay)
        except BaseException:
            self.kernels.pop(kid, None)
            self.accelerators.release(kid)
            raise
        if spec.batch_command is not None:
            kernel.task = asyncio.create_task(self._finish_batch(kernel))
        return KernelCreated(
            container_id=kernel.container_id,
            service_ports=[],
            phases={"image_check": 0.0, "container_start": round(delay, 4)},
        )

    async def _finish_batch(self, kernel: DummyKernel) -> None:
        """A dummy batch task succeeds at once; the kernel ends like a real one whose task finished."""
        await asyncio.sleep(0)
        if kernel.destroying:
            return
        kernel.destroying = True
        self.kernels.pop(kernel.kernel_id, None)
        self.accelerators.release(kernel.kernel_id)
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
        delay = pick_delay(self.config.dummy.destroy_delay)
        if delay > 0:
            await asyncio.sleep(delay)
        self.kernels.pop(kid, None)
        self.accelerators.release(kid)
        return self._stats(kernel)
