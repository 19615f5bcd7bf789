"""Service ports: the apps a kernel offers (ADR 0012).

An image declares its apps in the label ``ai.backend.service-ports``: comma-separated entries
``<name>:<protocol>:<port>`` or ``<name>:<protocol>:[<port>,<port>,...]`` (one app may own several container
ports). The protocols are ``tcp``, ``http`` and ``preopen``; ``pty`` entries are skipped (a legacy of images
that declared their REPL). Every container port is above 1024 and below 65535, unique across the entries, and
never one of the ports the platform keeps for itself (:data:`RESERVED_PORTS`).

A main kernel also offers the intrinsic apps (:data:`INTRINSIC_APPS`: ``sshd`` and ``ttyd``), and any
``preopen`` port the user asked for at session creation (an app named after its port that the platform never
starts: the user's own process listens there).

The agent gives each container port a host port and stores the result as the kernel's ``service_ports``
(:meth:`ServicePort.to_record`), merged with what the kernel runner's ``get_apps`` says about each app.
"""

from __future__ import annotations

import re
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass, replace
from typing import Any, Literal, cast

__all__ = [
    "INTRINSIC_APPS",
    "LABEL",
    "PROTOCOLS",
    "RESERVED_PORTS",
    "ServicePort",
    "kernel_service_ports",
    "merge_app_info",
    "parse_service_ports",
    "preopen_service_ports",
]

LABEL = "ai.backend.service-ports"
Protocol = Literal["tcp", "http", "preopen"]
PROTOCOLS: tuple[Protocol, ...] = ("tcp", "http", "preopen")
#: Ports no app may declare: 2000-2003 (the legacy query and PTY channels), 2200 (sshd), 7681 (ttyd).
RESERVED_PORTS = frozenset({2000, 2001, 2002, 2003, 2200, 7681})
MIN_PORT, MAX_PORT = 1025, 65534

# One entry at the start of what is left of the label; it ends at a comma or at the end.
_ENTRY = re.compile(r"(?P<name>[\w-]+):(?P<proto>\w+):(?P<ports>\[\d+(?:,\d+)*\]|\d+)(?:,|$)", re.ASCII)


@dataclass(frozen=True)
class ServicePort:
    """One app of a kernel: its container ports and, once published, the host ports in the same order."""

    name: str
    protocol: Protocol
    container_ports: tuple[int, ...]
    host_ports: tuple[int, ...] = ()
    # What the kernel runner's ``get_apps`` says (None: not said).
    url_template: str | None = None
    allowed_arguments: tuple[str, ...] | None = None
    allowed_envs: tuple[str, ...] | None = None

    def extras(self) -> dict[str, Any]:
        """What the runner said of the app (``url_template``, ``allowed_arguments``, ``allowed_envs``), where set."""
        out: dict[str, Any] = {}
        if self.url_template is not None:
            out["url_template"] = self.url_template
        if self.allowed_arguments is not None:
            out["allowed_arguments"] = list(self.allowed_arguments)
        if self.allowed_envs is not None:
            out["allowed_envs"] = list(self.allowed_envs)
        return out

    def to_record(self) -> dict[str, Any]:
        """The stored shape (kernel row ``service_ports``, ``KernelCreated.service_ports``)."""
        return {
            "name": self.name,
            "protocol": self.protocol,
            "container_ports": list(self.container_ports),
            "host_ports": list(self.host_ports),
            **self.extras(),
        }

    @classmethod
    def from_record(cls, record: Mapping[str, Any]) -> ServicePort:
        """The inverse of :meth:`to_record` (a ``ValueError`` for a malformed record)."""
        try:
            name, protocol = record["name"], record["protocol"]
            container = tuple(int(p) for p in record["container_ports"])
            host = tuple(int(p) for p in record.get("host_ports") or ())
        except (KeyError, TypeError, ValueError) as e:
            raise ValueError(f"malformed service port record: {record!r}") from e
        if not isinstance(name, str) or protocol not in PROTOCOLS:
            raise ValueError(f"malformed service port record: {record!r}")
        port = cls(name, cast(Protocol, protocol), container, host)
        return merge_app_info([port], [dict(record)])[0]


def _check_port(port: int, entry: str) -> None:
    if not MIN_PORT <= port <= MAX_PORT:
        raise ValueError(f"port {port} of {entry!r} is out of range (it must be between {MIN_PORT} and {MAX_PORT})")
    if port in RESERVED_PORTS:
        reserved = ", ".join(str(p) for p in sorted(RESERVED_PORTS))
        raise ValueError(f"port {port} of {entry!r} is reserved (the reserved ports are {reserved})")


def parse_service_ports(label: str | None) -> list[ServicePort]:
    """The apps an image declares in its ``ai.backend.service-ports`` label (``None`` or empty: none).

    A malformed label raises ``ValueError`` with a message naming the offending entry.
    """
    text = (label or "").strip()
    out: list[ServicePort] = []
    names: set[str] = set()
    used: dict[int, str] = {}
    pos = 0
    while pos < len(text):
        while pos < len(text) and text[pos] in " \t":
            pos += 1  # tolerate "a:http:1, b:http:2"
        m = _ENTRY.match(text, pos)
        if m is None:
            rest = text[pos:].split(",", 1)[0]
            raise ValueError(
                f"malformed entry {rest!r} in {LABEL} (expected name:protocol:port or name:protocol:[port,...])"
            )
        pos = m.end()
        entry = m.group(0).rstrip(",")
        name, proto = m.group("name"), m.group("proto")
        if proto == "pty":
            continue
        if proto not in PROTOCOLS:
            raise ValueError(f"unknown protocol {proto!r} in {entry!r} (expected one of {', '.join(PROTOCOLS)})")
        if name in names:
            raise ValueError(f"the app name {name!r} appears twice in {LABEL}")
        ports = tuple(int(p) for p in m.group("ports").strip("[]").split(","))
        for port in ports:
            _check_port(port, entry)
            if port in used:
                raise ValueError(f"port {port} of {entry!r} is already taken by the app {used[port]!r}")
            used[port] = name
        names.add(name)
        out.append(ServicePort(name, cast(Protocol, proto), ports))
    return out


#: The apps of every main kernel, whatever its image: an SSH server and a web terminal.
INTRINSIC_APPS: tuple[ServicePort, ...] = (
    ServicePort("sshd", "tcp", (2200,)),
    ServicePort("ttyd", "http", (7681,)),
)


def preopen_service_ports(ports: Iterable[int], taken: Iterable[ServicePort] = ()) -> list[ServicePort]:
    """The ``preopen`` apps of the ports a user asked for (each named after its port); a ``ValueError`` for a
    port out of range, reserved, repeated or already an app's."""
    used = {p: s.name for s in taken for p in s.container_ports}
    out = []
    for port in ports:
        entry = f"{port}:preopen:{port}"
        _check_port(port, entry)
        if port in used:
            raise ValueError(f"the preopen port {port} is already taken by the app {used[port]!r}")
        used[port] = str(port)
        out.append(ServicePort(str(port), "preopen", (port,)))
    return out


def kernel_service_ports(label: str | None, *, main: bool, preopen: Sequence[int] = ()) -> list[ServicePort]:
    """Every app of a kernel: its image's (``label``), plus the intrinsic apps and the preopen ports for the
    main kernel of a session (other kernels offer none: nobody reaches them from outside)."""
    if not main:
        return []
    apps = parse_service_ports(label)
    for app in apps:
        if any(app.name == i.name for i in INTRINSIC_APPS):
            raise ValueError(f"the app name {app.name!r} in {LABEL} is reserved for an intrinsic app")
    apps += INTRINSIC_APPS
    return apps + preopen_service_ports(preopen, apps)


def _strings(value: Any) -> tuple[str, ...] | None:
    if isinstance(value, list | tuple) and all(isinstance(v, str) for v in value):
        return tuple(value)
    return None


def merge_app_info(ports: Sequence[ServicePort], apps: Iterable[Any]) -> list[ServicePort]:
    """``ports`` with what the runner's ``get_apps`` answered (``[{"name", "url_template"?, "allowed_arguments"?,
    "allowed_envs"?}]``) merged in by name. The answer comes from the kernel, so a malformed item or field is
    ignored rather than trusted."""
    info: dict[str, Mapping[str, Any]] = {}
    for app in apps:
        if isinstance(app, Mapping) and isinstance(app.get("name"), str):
            info[app["name"]] = app
    out = []
    for port in ports:
        app = info.get(port.name)
        if app is None:
            out.append(port)
            continue
        template = app.get("url_template")
        arguments, envs = _strings(app.get("allowed_arguments")), _strings(app.get("allowed_envs"))
        out.append(
            replace(
                port,
                url_template=template if isinstance(template, str) else port.url_template,
                allowed_arguments=arguments if arguments is not None else port.allowed_arguments,
                allowed_envs=envs if envs is not None else port.allowed_envs,
            )
        )
    return out
