"""Starting and stopping a kernel's app through its agent (``POST /v1/kernels/{kid}/services/start`` and
``.../services/shutdown``), and where the started app is reached from the manager.

The agent starts the app lazily and waits until it listens (up to 30 s, 120 s for Jupyter), answering
``{"status": "started"|"running"|"failed", "host", "ports"}``: ``host`` is where its ports are published and
``ports`` are the app's host ports in the order of its container ports. A refusal of the agent (unknown
kernel or app: 404; refused options: 400) is passed on; any other failure is a 502 ``app-start-failed``
with the reason.
"""

from __future__ import annotations

import logging
from dataclasses import dataclass
from typing import Any
from urllib.parse import urlsplit

from ai.backend.common.contracts.agent import (
    SERVICE_SHUTDOWN_PATH,
    SERVICE_START_PATH,
    ServiceOptions,
    ServiceShutdown,
    ServiceStart,
    path,
)
from ai.backend.common.problems import ProblemError

from ..agent_client import AgentRPC
from ..models import KernelRow
from .ports import ServicePort, host_port

__all__ = ["AppEndpoint", "AppStartFailed", "AppStopFailed", "kernel_host", "shutdown_app", "start_app"]

log = logging.getLogger(__name__)

#: Seconds the agent may take to start an app: its own wait (120 s at most) and some slack.
START_TIMEOUT = 150.0
SHUTDOWN_TIMEOUT = 30.0


class AppStartFailed(ProblemError):
    status, slug, title = 502, "app-start-failed", "Failed to launch the app service"


class AppStopFailed(ProblemError):
    status, slug, title = 502, "app-stop-failed", "Failed to stop the app service"


@dataclass(frozen=True)
class AppEndpoint:
    """A started app's container port and where the manager reaches it."""

    app: ServicePort
    container_port: int
    host: str
    host_port: int
    status: str


def kernel_host(kernel: KernelRow) -> str:
    """Where the kernel's published ports are: the host the agent advertised, else its RPC address's host."""
    if kernel.kernel_host:
        return kernel.kernel_host
    return urlsplit(kernel.agent_addr or "").hostname or ""


def _host_port(app: ServicePort, container_port: int, answered: Any) -> int:
    """The host port of ``container_port``: from the agent's answer when it gives one per container port,
    else the one recorded at the kernel's creation (0: none)."""
    idx = app.container_ports.index(container_port)
    if isinstance(answered, list) and len(answered) == len(app.container_ports):
        value = answered[idx]
        if isinstance(value, int) and not isinstance(value, bool) and 0 < value < 65536:
            return value
    return host_port(app, container_port)


async def start_app(
    rpc: AgentRPC, kernel: KernelRow, app: ServicePort, container_port: int, options: ServiceOptions
) -> AppEndpoint:
    """Have the kernel's agent start ``app`` (a no-op when it runs already) and say where to reach it."""
    assert kernel.agent_addr is not None
    body = ServiceStart(name=app.name, options=options).to_wire()
    try:
        answer = await rpc.call(
            kernel.agent_addr, "POST", path(SERVICE_START_PATH, kid=str(kernel.id)), json=body, timeout=START_TIMEOUT
        )
    except ProblemError as e:
        if 400 <= e.status < 500:
            raise
        raise AppStartFailed(f"The app {app.name!r} could not be started: {e.detail or e.title}") from None
    if not isinstance(answer, dict):
        raise AppStartFailed(f"The agent answered the start of {app.name!r} with {type(answer).__name__}.")
    status = str(answer.get("status") or "")
    if status not in ("started", "running"):
        why = answer.get("error") or answer.get("detail") or f"status {status or 'missing'}"
        raise AppStartFailed(f"The app {app.name!r} could not be started: {why}")
    host = answer.get("host") if isinstance(answer.get("host"), str) and answer.get("host") else kernel_host(kernel)
    host_port = _host_port(app, container_port, answer.get("ports"))
    if not host or not host_port:
        raise AppStartFailed(f"The agent did not say where the port {container_port} of {app.name!r} is published.")
    return AppEndpoint(app, container_port, str(host), host_port, status)


async def shutdown_app(rpc: AgentRPC, kernel: KernelRow, app: ServicePort) -> str:
    """Have the kernel's agent stop ``app``; its answer's status (``stopped`` or ``not-running``)."""
    assert kernel.agent_addr is not None
    try:
        answer = await rpc.call(
            kernel.agent_addr,
            "POST",
            path(SERVICE_SHUTDOWN_PATH, kid=str(kernel.id)),
            json=ServiceShutdown(name=app.name).to_wire(),
            timeout=SHUTDOWN_TIMEOUT,
        )
    except ProblemError as e:
        if 400 <= e.status < 500:
            raise
        raise AppStopFailed(f"The app {app.name!r} could not be stopped: {e.detail or e.title}") from None
    status = answer.get("status") if isinstance(answer, dict) else None
    return status if isinstance(status, str) and status else "stopped"
