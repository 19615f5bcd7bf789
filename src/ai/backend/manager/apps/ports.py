"""A kernel's apps as stored (``kernels.service_ports``: :meth:`ai.backend.common.service_ports.ServicePort.to_record`,
filled by the agent) and as clients see them, and how a request names an app and one of its container ports.

Clients see ``{"name", "protocol", "ports": [container ports], "url_template"?, "allowed_arguments"?,
"allowed_envs"?}`` (the 22.03 shape of ``GET /stream/session/:id/apps`` and the creation's ``servicePorts``);
host ports are not shown there.
"""

from __future__ import annotations

from collections.abc import Iterable
from typing import Any

from ai.backend.common.problems import InvalidAPIParameters, NotFound
from ai.backend.common.service_ports import ServicePort

__all__ = [
    "AppNotFound",
    "ServicePort",
    "choose_container_port",
    "find_app",
    "host_port",
    "parse_port",
    "public_ports",
    "service_ports",
]

#: The container ports a request may name (``port``).
MIN_PORT, MAX_PORT = 1024, 65535


class AppNotFound(NotFound):
    slug, title = "app-not-found", "No such app in the session"


def service_ports(stored: Iterable[Any] | None) -> list[ServicePort]:
    """The well-formed entries of a kernel's stored service ports (an agent's malformed entry must not break
    the listing of the others)."""
    out = []
    for record in stored or ():
        if not isinstance(record, dict):
            continue
        try:
            app = ServicePort.from_record(record)
        except ValueError:
            continue
        if app.name and app.container_ports:
            out.append(app)
    return out


def public(app: ServicePort) -> dict[str, Any]:
    """What clients see of an app (no host ports)."""
    return {"name": app.name, "protocol": app.protocol, "ports": list(app.container_ports), **app.extras()}


def public_ports(stored: Iterable[Any] | None) -> list[dict[str, Any]]:
    """A kernel's apps as clients see them (``servicePorts``, ``/apps``)."""
    return [public(app) for app in service_ports(stored)]


def host_port(app: ServicePort, container_port: int) -> int:
    """The published host port of one of the app's container ports (0: none recorded)."""
    idx = app.container_ports.index(container_port)
    return app.host_ports[idx] if idx < len(app.host_ports) else 0


def find_app(stored: Iterable[Any] | None, name: str, session_name: str) -> ServicePort:
    """The app ``name`` of a kernel; a 404 ``app-not-found`` naming the session and the app otherwise."""
    for app in service_ports(stored):
        if app.name == name:
            return app
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
