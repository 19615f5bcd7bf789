"""What the agent's RPC server and heartbeat need from a kernel backend (Docker or dummy)."""

from __future__ import annotations

from collections.abc import Awaitable, Callable, Mapping
from typing import Any, Protocol

from ai.backend.common.contracts.agent import KernelCreated, KernelSpec, ServiceOptions

# ``on_kernel_exit(kernel_id, reason, exit_code, *, stats=None, task_log=None)``: a kernel ended by itself.
KernelExitCallback = Callable[..., Awaitable[None]]
# ``on_kernel_event(kernel_id, event)``: a step of a kernel's creation (``pulling``).
KernelEventCallback = Callable[[str, str], Awaitable[None]]


class KernelBackend(Protocol):
    """Runs the kernels of one agent."""

    @property
    def kernels(self) -> Mapping[str, Any]:
        """The live kernels by id."""
        ...

    async def start(self) -> None: ...

    async def close(self) -> None: ...

    async def list_images(self) -> list[dict[str, Any]]:
        """The kernel images for the heartbeat: ``ref``, ``digest``, ``labels``, ``size``."""
        ...

    async def create_kernel(self, spec: KernelSpec) -> KernelCreated:
        """Start a kernel; answers its ``container_id``, ``service_ports`` (its apps on host ports of
        ``kernel_host``) and the ``phases`` timings."""
        ...

    async def start_service(self, kid: str, name: str, options: ServiceOptions) -> dict[str, Any]:
        """Start a kernel's app unless it runs: ``{"status": "started" | "running", "host", "ports"}`` (404 for
        an unknown kernel or app, 400 for refused options, 502 ``app-start-failed``)."""
        ...

    async def shutdown_service(self, kid: str, name: str) -> dict[str, Any]:
        """Stop a kernel's app: ``{"status": "stopped" | "not-running"}``."""
        ...

    async def destroy_kernel(self, kid: str) -> dict[str, Any]:
        """Remove a kernel; answers its last stats."""
        ...

    async def create_network(self, name: str, mode: str) -> dict[str, Any]:
        """Create the private network of a cluster session (idempotent); answers ``name`` and ``driver``."""
        ...

    async def remove_network(self, name: str) -> bool:
        """Remove a cluster session's network; ``False`` when it was not there."""
        ...

    async def runner_request(self, kid: str, op: str, **fields: Any) -> dict[str, Any]:
        """One request to the kernel's runner (execute, interrupt, complete, restart, list_files, pty_open)."""
        ...

    async def logs(self, kid: str) -> str: ...

    async def live_stats(self) -> dict[str, dict[str, Any]]:
        """The Container Stats Object of every live kernel."""
        ...
