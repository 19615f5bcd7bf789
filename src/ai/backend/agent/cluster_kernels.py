"""The agent's side of cluster sessions: each kernel's ``BACKENDAI_CLUSTER_*`` variables, the shared SSH
keypair's files, and the per-session Docker network on which kernels find each other by hostname.

The manager sends, in each kernel's creation request, the kernel's place in the session
(``cluster_role``, ``cluster_idx``, ``cluster_hostname``, ``cluster_local_rank``, ``cluster_hosts``,
``cluster_replicas``), the name of the session's network (``cluster_network``, for sessions of more than
one kernel) and the keypair (``cluster_ssh``): see ``ClusterSpec`` in :mod:`ai.backend.common.contracts.agent`.
"""

from __future__ import annotations

import asyncio
import logging
import time
from collections.abc import Mapping
from typing import Any

import aiodocker
from aiodocker.exceptions import DockerError

from ai.backend.common.contracts import parse_wire
from ai.backend.common.contracts.agent import ClusterSpec, is_cluster_network
from ai.backend.common.problems import Conflict, InvalidAPIParameters

from .kernel_tasks import tar_archive

log = logging.getLogger(__name__)

LABEL_CLUSTER_NETWORK = "ai.backend.cluster-network"


def check_network_name(name: Any) -> str:
    """``name`` when it is a cluster network's name (``bai-cluster-<session uuid>``); a 400 otherwise."""
    if not is_cluster_network(name):
        raise InvalidAPIParameters(f"Not a cluster network name: {name!r}")
    return str(name)


def _cluster(spec: ClusterSpec | Mapping[str, Any]) -> ClusterSpec:
    # A KernelSpec is a ClusterSpec; a plain mapping (a test's, or a part of a spec) is checked here.
    return spec if isinstance(spec, ClusterSpec) else parse_wire(ClusterSpec, dict(spec), "kernel spec")


def cluster_environ(spec: ClusterSpec | Mapping[str, Any]) -> dict[str, str]:
    """The ``BACKENDAI_CLUSTER_*`` variables of the kernel ``spec`` describes (a lone ``main1`` by default)."""
    c = _cluster(spec)
    hosts = c.cluster_hosts or [c.cluster_hostname]
    replicas = c.cluster_replicas or {c.cluster_role or "main": 1}
    return {
        "BACKENDAI_CLUSTER_SIZE": str(c.cluster_size),
        "BACKENDAI_CLUSTER_HOSTS": ",".join(hosts),
        "BACKENDAI_CLUSTER_REPLICAS": ",".join(f"{role}:{n}" for role, n in replicas.items()),
        "BACKENDAI_CLUSTER_HOST": c.cluster_hostname,
        "BACKENDAI_CLUSTER_IDX": str(c.cluster_idx),
        "BACKENDAI_CLUSTER_ROLE": c.cluster_role or "main",
        "BACKENDAI_CLUSTER_LOCAL_RANK": str(c.cluster_local_rank),
    }


def ssh_keypair_tar(spec: ClusterSpec | Mapping[str, Any], uid: int, gid: int) -> bytes | None:
    """A tar (extracted at ``/``) placing the session's SSH keypair as ``/home/config/ssh/id_cluster{,.pub}``
    and ``~/.ssh/id_cluster{,.pub}`` with the public key authorized, owned by the kernel user; ``None``
    when the spec carries no keypair."""
    ssh = _cluster(spec).cluster_ssh
    if ssh is None:
        return None
    private, public = ssh.private_key.encode(), ssh.public_key.encode()
    files = []
    for d in ("home/config/ssh", "home/work/.ssh"):
        files += [(f"{d}/id_cluster", private, 0o600), (f"{d}/id_cluster.pub", public, 0o644)]
    files.append(("home/work/.ssh/authorized_keys", public, 0o600))
    return tar_archive(["home/config", "home/config/ssh", "home/work/.ssh"], files, uid, gid)


def hostname_of(spec: ClusterSpec | Mapping[str, Any]) -> str:
    """The kernel's hostname (``main1`` unless the spec says otherwise)."""
    return _cluster(spec).cluster_hostname


def endpoint_config(spec: ClusterSpec | Mapping[str, Any]) -> dict[str, Any] | None:
    """The ``NetworkingConfig`` that joins a cluster kernel to its session's network under its hostname."""
    c = _cluster(spec)
    if c.cluster_network is None:
        return None
    return {"EndpointsConfig": {c.cluster_network: {"Aliases": [c.cluster_hostname]}}}


class ClusterNetworks:
    """The per-session networks on this agent's Docker engine.

    ``single-node`` sessions get a bridge network of their own: the kernels of one session reach each other,
    and nothing else joins it. ``multi-node`` sessions need a network every agent's engine can attach to: an
    attachable overlay network when the engine is a Docker swarm manager; otherwise a bridge, which the
    other agents can join only when they share this engine (several agents on one host, as in tests)."""

    def __init__(self, docker: aiodocker.Docker, agent_id: str) -> None:
        self.docker = docker
        self.agent_id = agent_id

    async def _swarm_manager(self) -> bool:
        info = await self.docker.system.info()
        swarm = info.get("Swarm") or {}
        return swarm.get("LocalNodeState") == "active" and bool(swarm.get("ControlAvailable"))

    async def create(self, name: str, mode: str) -> dict[str, Any]:
        """Create the network ``name`` (idempotent); answers its driver."""
        check_network_name(name)
        if mode not in ("single-node", "multi-node"):
            raise InvalidAPIParameters(f"Unknown cluster mode {mode!r}")
        driver = "overlay" if mode == "multi-node" and await self._swarm_manager() else "bridge"
        config: dict[str, Any] = {
            "Name": name, "Driver": driver, "CheckDuplicate": True,
            "Labels": {"ai.backend.managed": "1", LABEL_CLUSTER_NETWORK: name, "ai.backend.agent-id": self.agent_id},
        }
        if driver == "overlay":
            config["Attachable"] = True
        try:
            await self.docker.networks.create(config)
        except DockerError as e:
            if e.status != 409:
                raise
        return {"name": name, "driver": driver}

    async def exists(self, name: str) -> bool:
        try:
            await self.docker.networks.get(name)
        except DockerError:
            return False
        return True

    async def remove(self, name: str, wait: float = 20.0) -> bool:
        """Remove the network ``name``; ``False`` when it was not there. Kernels are removed in the background
        after their destruction is answered, so this waits up to ``wait`` seconds for their endpoints to go."""
        check_network_name(name)
        deadline = time.monotonic() + wait
        while True:
            try:
                net = await self.docker.networks.get(name)
                await net.delete()
            except DockerError as e:
                if e.status == 404:
                    return False
                if e.status == 403 and "active endpoints" in str(e.message) and time.monotonic() < deadline:
                    await asyncio.sleep(0.2)
                    continue
                if e.status == 403:
                    raise Conflict(f"The network {name} still has containers attached: {e.message}") from None
                raise
            return True

    async def remove_unused(self) -> list[str]:
        """Remove the cluster networks this agent made that no container uses any more (left by a crash)."""
        removed = []
        for net in await self.docker.networks.list(filters={"label": [f"ai.backend.agent-id={self.agent_id}",
                                                                      LABEL_CLUSTER_NETWORK]}):
            try:
                detail = await self.docker.networks.get(net["Id"])
                info = await detail.show()
                if not info.get("Containers"):
                    await detail.delete()
                    removed.append(str(net.get("Name")))
            except DockerError as e:
                log.warning("could not inspect or remove network %s: %s", net.get("Name"), e.message)
        return removed

