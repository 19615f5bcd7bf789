"""A kernel's service ports as stored (``kernels.service_ports``, filled by the agent) and as clients see
them, and how a request names an app and one of its container ports.

Stored: ``{"name", "protocol", "container_ports": [int], "host_ports": [int], "url_template"?,
"allowed_arguments"?, "allowed_envs"?}`` (ADR 0012). Answered by ``GET /stream/session/:id/apps`` and the
session creation's ``servicePorts``: ``{"name", "protocol", "ports": [container ports], "url_template"?,
"allowed_arguments"?, "allowed_envs"?}`` (the 22.03 shape); host ports are not shown there.
"""

from __future__ import annotations

from collections.abc import Iterable
from dataclasses import dataclass
from typing import Any

from ai.backend.common.problems import InvalidAPIParameters, NotFound

__all__ = [
    "AppNotFound",
    "ServicePort",
    "choose_container_port",
    "find_app",
    "parse_port",
    "public_ports",
    "service_ports",
]

#: The container ports a request may name (``port``): those an image may declare.
MIN_PORT, MAX_PORT = 1024, 65535


class AppNotFound(NotFound):
    slug, title = "app-not-found", "No such app in the session"


def _ints(value: Any) -> tuple[int, ...] | None:
    if not isinstance(value, list | tuple):
        return None
    out = []
    for v in value:
        if isinstance(v, bool) or not isinstance(v, int):
            return None
        out.append(v)
    return tuple(out)


def _names(value: Any) -> tuple[str, ...] | None:
    if not isinstance(value, list | tuple) or not all(isinstance(v, str) for v in value):
        return None
    return tuple(value)


@dataclass(frozen=True)
class ServicePort:
    """One app of a kernel, read from its stored entry."""

    name: str
    protocol: str
    container_ports: tuple[int, ...]
    # Aligned with container_ports; 0 where the agent published none.
    host_ports: tuple[int, ...]
    url_template: str | None = None
    allowed_arguments: tuple[str, ...] | None = None
    allowed_envs: tuple[str, ...] | None = None

    @classmethod
    def from_stored(cls, doc: Any) -> ServicePort | None:
        """The entry as a :class:`ServicePort`; ``None`` for an entry without a name, protocol or ports (an
        agent's bug must not break the listing of the others)."""
        if not isinstance(doc, dict):
            return None
        name, protocol = doc.get("name"), doc.get("protocol")
        cports = _ints(doc.get("container_ports"))
        if not isinstance(name, str) or not name or not isinstance(protocol, str) or not cports:
            return None
        raw_hosts = doc.get("host_ports")
        hosts = [h if isinstance(h, int) and not isinstance(h, bool) else 0 for h in (raw_hosts or [])]
        hosts = (hosts + [0] * len(cports))[: len(cports)]
        template = doc.get("url_template")
        return cls(
            name=name,
            protocol=protocol,
            container_ports=cports,
            host_ports=tuple(hosts),
            url_template=template if isinstance(template, str) and template else None,
            allowed_arguments=_names(doc.get("allowed_arguments")),
            allowed_envs=_names(doc.get("allowed_envs")),
        )

    def public(self) -> dict[str, Any]:
        """What clients see of the app (no host ports)."""
        out: dict[str, Any] = {"name": self.name, "protocol": self.protocol, "ports": list(self.container_ports)}
        if self.url_template is not None:
            out["url_template"] = self.url_template
        if self.allowed_arguments is not None:
            out["allowed_arguments"] = list(self.allowed_arguments)
        if self.allowed_envs is not None:
            out["allowed_envs"] = list(self.allowed_envs)
        return out

    def host_port(self, container_port: int) -> int:
        """The published host port of one of the app's container ports (0: none recorded)."""
        return self.host_ports[self.container_ports.index(container_port)]


def service_ports(stored: Iterable[Any] | None) -> list[ServicePort]:
    """The well-formed entries of a kernel's stored service ports."""
    return [sp for sp in (ServicePort.from_stored(d) for d in (stored or [])) if sp is not None]


def public_ports(stored: Iterable[Any] | None) -> list[dict[str, Any]]:
    """A kernel's apps as clients see them (``servicePorts``, ``/apps``)."""
    return [sp.public() for sp in service_ports(stored)]


def find_app(stored: Iterable[Any] | None, name: str, session_name: str) -> ServicePort:
    """The app ``name`` of a kernel; a 404 ``app-not-found`` naming the session and the app otherwise."""
    for sp in service_ports(stored):
        if sp.name == name:
            return sp
    raise AppNotFound(f"{session_name}:{name}: the session has no app named {name!r}.")


def parse_port(raw: Any) -> int | None:
    """The optional ``port`` of a request (a query-string or JSON value): an integer in 1024..65535."""
    if raw is None or raw == "":
        return None
    if isinstance(raw, int) and not isinstance(raw, bool):
        port = raw
    elif isinstance(raw, str) and raw.isascii() and raw.isdigit() and len(raw) <= 5:
        port = int(raw)
    else:
        raise InvalidAPIParameters(f"'port' must be an integer port number, got {raw!r}.")
    if not MIN_PORT <= port <= MAX_PORT:
        raise InvalidAPIParameters(f"'port' must be between {MIN_PORT} and {MAX_PORT}, got {port}.")
    return port


def choose_container_port(app: ServicePort, port: int | None) -> int:
    """The container port a request reaches: the app's first unless ``port`` names another of its own."""
    if port is None:
        return app.container_ports[0]
    if port not in app.container_ports:
        raise InvalidAPIParameters(f"Service {app.name} does not open the port number {port}.")
    return port
