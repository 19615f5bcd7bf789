"""Network namespaces as separate "hosts" for multi-host tests (Linux, root or CAP_NET_ADMIN).

:func:`network_namespaces` creates N namespaces, each joined to the host namespace by a veth pair on
its own ``/30`` of ``10.213.X.0/24`` (X picked among the subnets no interface of this machine uses):
the host end is ``10.213.X.(4i+1)``, the namespace end ``10.213.X.(4i+2)`` with the default route
through the host end, and the namespace's loopback is up.  A manager listening on a host-end address
is reachable from every namespace (through each namespace's default route), and an agent listening in
a namespace is reachable from the host only at its namespace address.  Everything is removed on exit,
also after a failure: the processes left in the namespaces (all started by the caller), the
namespaces and the veth pairs.

:func:`launch_netns_agent` starts ``python -m ai.backend.agent.server`` inside a namespace with
``ip netns exec``.
"""

from __future__ import annotations

import os
import random
import secrets
import shutil
import signal
import subprocess
import sys
import time
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path

__all__ = ("NetNS", "launch_netns_agent", "netns_unavailable", "network_namespaces")


def _ip(*args: str, check: bool = True) -> subprocess.CompletedProcess[str]:
    out = subprocess.run(["ip", *args], capture_output=True, text=True, timeout=30)
    if check and out.returncode != 0:
        raise RuntimeError(f"`ip {' '.join(args)}` failed ({out.returncode}): {out.stderr.strip()}")
    return out


def netns_unavailable() -> str | None:
    """Why network namespaces cannot be created here (``None`` when they can): no ``ip`` command (the
    Debian package ``iproute2``), or no permission (not root / no CAP_NET_ADMIN)."""
    if sys.platform != "linux":
        return "network namespaces need Linux"
    if shutil.which("ip") is None:
        return "the `ip` command is missing (install the Debian package iproute2: scripts/setup.sh)"
    probe = f"bai-probe-{secrets.token_hex(4)}"
    out = _ip("netns", "add", probe, check=False)
    if out.returncode != 0:
        return f"cannot create a network namespace (needs root or CAP_NET_ADMIN): {out.stderr.strip()}"
    try:
        veth = _ip("-n", probe, "link", "add", "probe0", "type", "veth", "peer", "name", "probe1", check=False)
        if veth.returncode != 0:
            return f"cannot create a veth pair (needs CAP_NET_ADMIN): {veth.stderr.strip()}"
    finally:
        _ip("netns", "del", probe, check=False)
    return None


@dataclass
class NetNS:
    """One namespace and its link to the host namespace."""

    name: str
    host_if: str  # the veth end in the host namespace
    ns_if: str  # the veth end inside the namespace
    host_ip: str
    ns_ip: str

    def prefix(self) -> list[str]:
        """The command prefix that runs a program inside this namespace."""
        return ["ip", "netns", "exec", self.name]

    def host_bytes(self) -> int:
        """Bytes received plus sent by the host end of the veth pair (all traffic of this namespace)."""
        base = Path("/sys/class/net") / self.host_if / "statistics"
        return int((base / "rx_bytes").read_text()) + int((base / "tx_bytes").read_text())

    def pids(self) -> list[int]:
        """The processes running in this namespace."""
        out = _ip("netns", "pids", self.name, check=False)
        return [int(p) for p in out.stdout.split() if p.isdigit()]


def _used_subnets() -> set[str]:
    out = _ip("-4", "-o", "addr", "show", check=False).stdout + _ip("-4", "route", "show", check=False).stdout
    return {f"10.213.{x}." for x in range(256) if f"10.213.{x}." in out}


def _remove(ns: NetNS) -> None:
    for pid in ns.pids():  # only processes of this run's namespaces: started by the caller
        try:
            os.kill(pid, signal.SIGKILL)
        except ProcessLookupError:
            pass
    deadline = time.monotonic() + 5
    while ns.pids() and time.monotonic() < deadline:
        time.sleep(0.05)
    _ip("netns", "del", ns.name, check=False)  # also removes the veth pair (its inner end goes away)
    if Path("/sys/class/net", ns.host_if).exists():
        _ip("link", "del", ns.host_if, check=False)


@contextmanager
def network_namespaces(count: int) -> Iterator[list[NetNS]]:
    """``count`` (at most 63) fresh namespaces with unique names, removed when the block ends."""
    if not 1 <= count <= 63:
        raise ValueError("count must be between 1 and 63")
    used = _used_subnets()
    free = [x for x in range(256) if f"10.213.{x}." not in used]
    if not free:
        raise RuntimeError("no free 10.213.X.0/24 subnet")
    x = random.choice(free)
    tag = secrets.token_hex(3)
    spaces: list[NetNS] = []
    try:
        for i in range(count):
            ns = NetNS(
                f"bai-mh-{tag}-{i}",
                f"bmh{tag}h{i}",
                f"bmh{tag}n{i}",
                f"10.213.{x}.{4 * i + 1}",
                f"10.213.{x}.{4 * i + 2}",
            )
            _ip("netns", "add", ns.name)
            spaces.append(ns)
            _ip("link", "add", ns.host_if, "type", "veth", "peer", "name", ns.ns_if)
            _ip("link", "set", ns.ns_if, "netns", ns.name)
            _ip("addr", "add", f"{ns.host_ip}/30", "dev", ns.host_if)
            _ip("link", "set", ns.host_if, "up")
            _ip("-n", ns.name, "addr", "add", f"{ns.ns_ip}/30", "dev", ns.ns_if)
            _ip("-n", ns.name, "link", "set", ns.ns_if, "up")
            _ip("-n", ns.name, "link", "set", "lo", "up")
            _ip("-n", ns.name, "route", "add", "default", "via", ns.host_ip)
        yield spaces
    finally:
        for ns in spaces:
            _remove(ns)


def launch_netns_agent(
    ns: NetNS,
    state: Path,
    *,
    agent_id: str,
    manager_url: str,
    secret: str,
    scaling_group: str = "default",
    port: int = 6001,
    cpu: float = 2,
    mem: str = "2g",
    backend: str = "docker",
    extra_toml: str = "",
) -> subprocess.Popen[bytes]:
    """Start an agent inside ``ns``: it listens on all of the namespace's addresses at ``port``, advertises
    ``http://<namespace address>:<port>`` to the manager at ``manager_url`` and joins ``scaling_group``.
    Its config and log are ``state/<agent_id>.toml`` and ``.log``; ``extra_toml`` is appended."""
    state.mkdir(parents=True, exist_ok=True)
    config = state / f"{agent_id}.toml"
    config.write_text(
        f'[agent]\nid = "{agent_id}"\nbackend = "{backend}"\nrpc-listen-host = "0.0.0.0"\n'
        f'rpc-listen-port = {port}\nadvertised-addr = "http://{ns.ns_ip}:{port}"\n'
        f'scaling-group = "{scaling_group}"\nmanager-url = "{manager_url}"\ncluster-secret = "{secret}"\n'
        f'heartbeat-interval = 1.0\n\n[container]\nscratch-root = "{state}/scratches-{agent_id}"\n\n'
        f'[resource]\ncpu = {cpu}\nmem = "{mem}"\n\n{extra_toml}\n'
    )
    log = open(state / f"{agent_id}.log", "ab")
    return subprocess.Popen(
        [*ns.prefix(), sys.executable, "-m", "ai.backend.agent.server", "-f", str(config)],
        stdout=log,
        stderr=log,
        start_new_session=True,
    )
