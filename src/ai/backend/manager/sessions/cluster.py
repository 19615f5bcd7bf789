"""Cluster sessions: the kernels of a multi-container session, their hostnames, network and SSH keypair.

A session of ``cluster_size`` N has one ``main`` kernel (``main1``) and N-1 ``sub`` kernels (``sub1`` …
``sub<N-1>``). ``single-node`` puts them all on one agent; ``multi-node`` lets the scheduler place each on
its own agent. Either way they share a private network named after the session, on which each kernel
is reachable by its hostname, and one SSH keypair, so that ``main1`` can log in to the others.
"""

from __future__ import annotations

import uuid
from dataclasses import dataclass
from decimal import Decimal
from typing import Any

from ai.backend.common.types import ResourceSlot


@dataclass(frozen=True)
class KernelSlot:
    """One kernel's place in its session: role, index within the role, hostname and global rank."""

    role: str
    idx: int
    hostname: str
    local_rank: int


def local_rank(role: str, idx: int) -> int:
    """A kernel's zero-based index over its whole session: ``main1`` is 0, ``subN`` is N."""
    return 0 if role == "main" else idx


def kernel_layout(size: int) -> list[KernelSlot]:
    """The kernels of a session of ``size`` containers, ``main1`` first."""
    out = [KernelSlot("main", 1, "main1", local_rank("main", 1))]
    out.extend(KernelSlot("sub", i, f"sub{i}", local_rank("sub", i)) for i in range(1, size))
    return out


def per_kernel_slots(total: ResourceSlot, size: int) -> ResourceSlot:
    """What one kernel holds of a session that asked for ``total`` over ``size`` identical kernels."""
    if size <= 1:
        return total
    return ResourceSlot({k: v / Decimal(size) for k, v in total.items()})


def network_name(session_id: uuid.UUID | str) -> str:
    """The private network of a cluster session's kernels."""
    return f"bai-cluster-{session_id}"


def cluster_spec(
    session_id: uuid.UUID, mode: str, size: int, me: KernelSlot, ssh: tuple[str, str] | None
) -> dict[str, Any]:
    """The cluster part of one kernel's creation request to its agent."""
    layout = kernel_layout(size)
    spec: dict[str, Any] = {
        "cluster_size": size,
        "cluster_mode": mode,
        "cluster_role": me.role,
        "cluster_idx": me.idx,
        "cluster_hostname": me.hostname,
        "cluster_local_rank": me.local_rank,
        "cluster_hosts": [k.hostname for k in layout],
        "cluster_replicas": {"main": 1, **({"sub": size - 1} if size > 1 else {})},
    }
    if size > 1:
        spec["cluster_network"] = network_name(session_id)
    if ssh is not None:
        spec["cluster_ssh"] = {"private_key": ssh[0], "public_key": ssh[1]}
    return spec


def new_ssh_keypair(comment: str) -> tuple[str, str]:
    """A fresh Ed25519 keypair: (private key in OpenSSH format, public key line)."""
    from cryptography.hazmat.primitives import serialization
    from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey

    key = Ed25519PrivateKey.generate()
    private = key.private_bytes(
        serialization.Encoding.PEM, serialization.PrivateFormat.OpenSSH, serialization.NoEncryption()
    ).decode()
    public = key.public_key().public_bytes(serialization.Encoding.OpenSSH, serialization.PublicFormat.OpenSSH).decode()
    return private, f"{public} {comment}\n"


def kernels_fitting(per_kernel: ResourceSlot, capacity: ResourceSlot) -> int:
    """How many kernels of ``per_kernel`` fit in ``capacity`` (a large number when nothing is asked)."""
    counts = [int(capacity.get(k, Decimal(0)) // v) for k, v in per_kernel.items() if v > 0]
    return min(counts, default=1 << 30)


def cluster_never_fits(mode: str, size: int, per_kernel: ResourceSlot, capacities: list[ResourceSlot]) -> str | None:
    """Why a session of ``size`` kernels of ``per_kernel`` can never be placed on agents of ``capacities``
    even when they are empty; ``None`` when it can."""
    total = ResourceSlot({k: v * size for k, v in per_kernel.items()})
    if mode == "multi-node" and size > 1:
        room = sum(kernels_fitting(per_kernel, c) for c in capacities)
        if room >= size:
            return None
        return (
            f"a multi-node cluster of {size} kernels of {per_kernel.to_json()} each needs room for "
            f"{size} kernels; all agents together have room for {room}."
        )
    if any(total.fits_in(c) for c in capacities):
        return None
    biggest = max(
        capacities, key=lambda c: (kernels_fitting(per_kernel, c), c.get("mem", Decimal(0))), default=ResourceSlot()
    )
    what = (
        f"asked {total.to_json()}"
        if size == 1
        else (f"a single-node cluster of {size} kernels needs {total.to_json()} on one agent")
    )
    return f"{what}; the largest agent has {biggest.to_json()}."
