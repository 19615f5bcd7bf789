"""Publishing a kernel's app ports on host ports (ADR 0012): the Docker container configuration for it, and
reading the bindings back from a container (a kernel taken back after an agent restart)."""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

from ai.backend.common.service_ports import ServicePort

__all__ = ["bound_host_ports", "is_port_conflict", "port_config"]

# What Docker says when a host port it was told to bind is taken (by another container, or by another process).
_CONFLICTS = ("port is already allocated", "address already in use")


def port_config(apps: Sequence[ServicePort], bind_host: str) -> tuple[dict[str, Any], dict[str, Any]]:
    """``ExposedPorts`` (of the container config) and ``PortBindings`` (of its ``HostConfig``): each container
    port of ``apps`` on its host port, bound to ``bind_host`` only."""
    exposed: dict[str, Any] = {}
    bindings: dict[str, Any] = {}
    for app in apps:
        for container_port, host_port in zip(app.container_ports, app.host_ports, strict=True):
            key = f"{container_port}/tcp"
            exposed[key] = {}
            bindings[key] = [{"HostIp": bind_host, "HostPort": str(host_port)}]
    return exposed, bindings


def bound_host_ports(info: dict[str, Any]) -> list[int]:
    """The host ports a container was created to bind (``docker inspect``'s ``HostConfig.PortBindings``)."""
    out = []
    for bindings in ((info.get("HostConfig") or {}).get("PortBindings") or {}).values():
        for b in bindings or ():
            try:
                out.append(int(b.get("HostPort") or 0))
            except (TypeError, ValueError):
                continue
    return [p for p in out if p > 0]


def is_port_conflict(message: str) -> bool:
    """Whether Docker refused to start a container because one of its host ports was taken meanwhile."""
    return any(c in message for c in _CONFLICTS)
