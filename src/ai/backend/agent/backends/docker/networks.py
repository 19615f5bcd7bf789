"""The private Docker network of a cluster session (``bai-cluster-<session id>``), on which its kernels find
each other by hostname: created before the kernels, removed after them."""

from __future__ import annotations

import asyncio
import logging
import time
from collections.abc import Mapping
from typing import Any

import aiodocker
from aiodocker.exceptions import DockerError

from ai.backend.common.contracts.agent import ClusterSpec
from ai.backend.common.problems import Conflict, InvalidAPIParameters

from ...cluster_kernels import as_cluster_spec, check_network_name

log = logging.getLogger(__name__)

LABEL_CLUSTER_NETWORK = "ai.backend.cluster-network"


def endpoint_config(spec: ClusterSpec | Mapping[str, Any]) -> dict[str, Any] | None:
    """The ``NetworkingConfig`` that joins a cluster kernel to its session's network under its hostname."""
    c = as_cluster_spec(spec)
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
            "Name": name,
            "Driver": driver,
            "CheckDuplicate": True,
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
        for net in await self.docker.networks.list(
            filters={"label": [f"ai.backend.agent-id={self.agent_id}", LABEL_CLUSTER_NETWORK]}
        ):
            try:
                detail = await self.docker.networks.get(net["Id"])
                info = await detail.show()
                if not info.get("Containers"):
                    await detail.delete()
                    removed.append(str(net.get("Name")))
            except DockerError as e:
                log.warning("could not inspect or remove network %s: %s", net.get("Name"), e.message)
        return removed
