"""The agent's side of cluster sessions: each kernel's ``BACKENDAI_CLUSTER_*`` variables, the shared SSH
keypair's files, and the per-session Docker network on which kernels find each other by hostname.

The manager sends, in each kernel's creation request, the kernel's place in the session
(``cluster_role``, ``cluster_idx``, ``cluster_hostname``, ``cluster_local_rank``, ``cluster_hosts``,
``cluster_replicas``), the name of the session's network (``cluster_network``, for sessions of more than
one kernel) and the keypair (``cluster_ssh``).
"""

from __future__ import annotations

import asyncio
import logging
import re
import time
from typing import Any

import aiodocker
from aiodocker.exceptions import DockerError

from ai.backend.common.problems import Conflict, InvalidAPIParameters

from .kernel_tasks import tar_archive

log = logging.getLogger(__name__)

NETWORK_PREFIX = "bai-cluster-"
LABEL_CLUSTER_NETWORK = "ai.backend.cluster-network"
_NETWORK_NAME = re.compile(rf"^{NETWORK_PREFIX}[0-9a-f]{{8}}-[0-9a-f]{{4}}-[0-9a-f]{{4}}-[0-9a-f]{{4}}-[0-9a-f]{{12}}$")
_HOSTNAME = re.compile(r"^(main|sub)[1-9][0-9]{0,3}$")


def check_network_name(name: Any) -> str:
    """``name`` when it is a cluster network's name (``bai-cluster-<session uuid>``); a 400 otherwise."""
    if not isinstance(name, str) or not _NETWORK_NAME.match(name):
        raise InvalidAPIParameters(f"Not a cluster network name: {name!r}")
    return name


def _int(spec: dict[str, Any], key: str, default: int) -> int:
    value = spec.get(key, default)
    if isinstance(value, bool) or not isinstance(value, int) or value < 0:
        raise InvalidAPIParameters(f"'{key}' must be a non-negative integer")
    return value


def cluster_environ(spec: dict[str, Any]) -> dict[str, str]:
    """The ``BACKENDAI_CLUSTER_*`` variables of the kernel ``spec`` describes (a lone ``main1`` by default)."""
    hostname = hostname_of(spec)
    if not _HOSTNAME.match(hostname):
        raise InvalidAPIParameters(f"Bad cluster hostname {hostname!r}")
    hosts = spec.get("cluster_hosts") or [hostname]
    replicas = spec.get("cluster_replicas") or {str(spec.get("cluster_role") or "main"): 1}
    if not (isinstance(hosts, list) and all(isinstance(h, str) and _HOSTNAME.match(h) for h in hosts)):
        raise InvalidAPIParameters("'cluster_hosts' must be a list of kernel hostnames")
    if not (isinstance(replicas, dict) and all(isinstance(v, int) for v in replicas.values())):
        raise InvalidAPIParameters("'cluster_replicas' must map roles to counts")
    return {
        "BACKENDAI_CLUSTER_SIZE": str(_int(spec, "cluster_size", 1)),
        "BACKENDAI_CLUSTER_HOSTS": ",".join(hosts),
        "BACKENDAI_CLUSTER_REPLICAS": ",".join(f"{role}:{n}" for role, n in replicas.items()),
        "BACKENDAI_CLUSTER_HOST": hostname,
        "BACKENDAI_CLUSTER_IDX": str(_int(spec, "cluster_idx", 1)),
        "BACKENDAI_CLUSTER_ROLE": str(spec.get("cluster_role") or "main"),
        "BACKENDAI_CLUSTER_LOCAL_RANK": str(_int(spec, "cluster_local_rank", 0)),
    }


def ssh_keypair_tar(spec: dict[str, Any], uid: int, gid: int) -> bytes | None:
    """A tar (extracted at ``/``) placing the session's SSH keypair as ``/home/config/ssh/id_cluster{,.pub}``
    and ``~/.ssh/id_cluster{,.pub}`` with the public key authorized, owned by the kernel user; ``None``
    when the spec carries no keypair."""
    ssh = spec.get("cluster_ssh")
    if ssh is None:
        return None
    private, public = (ssh.get("private_key"), ssh.get("public_key")) if isinstance(ssh, dict) else (None, None)
    if not (isinstance(private, str) and isinstance(public, str) and public.startswith("ssh-")):
        raise InvalidAPIParameters("'cluster_ssh' must hold private_key and public_key")
    files = []
    for d in ("home/config/ssh", "home/work/.ssh"):
        files += [(f"{d}/id_cluster", private.encode(), 0o600), (f"{d}/id_cluster.pub", public.encode(), 0o644)]
    files.append(("home/work/.ssh/authorized_keys", public.encode(), 0o600))
    return tar_archive(["home/config", "home/config/ssh", "home/work/.ssh"], files, uid, gid)


def hostname_of(spec: dict[str, Any]) -> str:
    """The kernel's hostname (``main1`` unless the spec says otherwise)."""
    return str(spec.get("cluster_hostname") or "main1")


def endpoint_config(spec: dict[str, Any]) -> dict[str, Any] | None:
    """The ``NetworkingConfig`` that joins a cluster kernel to its session's network under its hostname."""
    network = spec.get("cluster_network")
    if network is None:
        return None
    name = check_network_name(network)
    return {"EndpointsConfig": {name: {"Aliases": [hostname_of(spec)]}}}


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

