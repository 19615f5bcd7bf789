"""Cluster session helpers: the kernel layout, per-kernel slots, the "can never fit" check, the variables and
keypair files each kernel gets, and the network names an agent accepts."""

from __future__ import annotations

import io
import tarfile
import uuid
from decimal import Decimal

import pytest

from ai.backend.agent.backends.docker.networks import endpoint_config
from ai.backend.agent.cluster_kernels import check_network_name, cluster_environ, ssh_keypair_tar
from ai.backend.common.problems import InvalidAPIParameters
from ai.backend.common.types import ResourceSlot
from ai.backend.manager.sessions.cluster import (
    cluster_never_fits,
    cluster_spec,
    kernel_layout,
    new_ssh_keypair,
    per_kernel_slots,
)

G = 1024**3


def rs(cpu: int, mem_g: int) -> ResourceSlot:
    return ResourceSlot({"cpu": Decimal(cpu), "mem": Decimal(mem_g * G)})


def test_layout_and_environment_of_every_kernel() -> None:
    sid = uuid.uuid4()
    layout = kernel_layout(4)
    assert [(k.role, k.idx, k.hostname, k.local_rank) for k in layout] == [
        ("main", 1, "main1", 0),
        ("sub", 1, "sub1", 1),
        ("sub", 2, "sub2", 2),
        ("sub", 3, "sub3", 3),
    ]
    env = cluster_environ(cluster_spec(sid, "multi-node", 4, layout[2], None))
    assert env == {
        "BACKENDAI_CLUSTER_SIZE": "4",
        "BACKENDAI_CLUSTER_HOSTS": "main1,sub1,sub2,sub3",
        "BACKENDAI_CLUSTER_REPLICAS": "main:1,sub:3",
        "BACKENDAI_CLUSTER_HOST": "sub2",
        "BACKENDAI_CLUSTER_IDX": "2",
        "BACKENDAI_CLUSTER_ROLE": "sub",
        "BACKENDAI_CLUSTER_LOCAL_RANK": "2",
    }
    # A lone kernel: main1 of one, and no network of its own.
    single = cluster_spec(sid, "single-node", 1, kernel_layout(1)[0], None)
    assert cluster_environ(single)["BACKENDAI_CLUSTER_REPLICAS"] == "main:1" and endpoint_config(single) is None
    assert endpoint_config(cluster_spec(sid, "single-node", 2, layout[1], None)) == {
        "EndpointsConfig": {f"bai-cluster-{sid}": {"Aliases": ["sub1"]}}
    }


@pytest.mark.parametrize(
    "name",
    [
        "bridge",
        "host",
        "bai-cluster-x",
        "bai-cluster-../etc",
        None,
        3,
        f"bai-cluster-{uuid.uuid4()}/x",
        f"other-{uuid.uuid4()}",
    ],
)
def test_agents_touch_only_cluster_networks(name: object) -> None:
    with pytest.raises(InvalidAPIParameters):
        check_network_name(name)


@pytest.mark.parametrize(
    "spec",
    [
        {"cluster_hostname": "evil;rm"},
        {"cluster_hosts": ["main1", "../x"]},
        {"cluster_idx": -1},
        {"cluster_size": "3"},
        {"cluster_replicas": ["main"]},
    ],
)
def test_bad_cluster_specs_are_refused(spec: dict[str, object]) -> None:
    with pytest.raises(InvalidAPIParameters):
        cluster_environ(spec)


def test_keypair_files_are_private_to_the_kernel_user() -> None:
    private, public = new_ssh_keypair("s@backend.ai")
    assert private.startswith("-----BEGIN OPENSSH PRIVATE KEY-----") and public.startswith("ssh-ed25519 ")
    assert new_ssh_keypair("x")[1] != public  # fresh per session
    data = ssh_keypair_tar({"cluster_ssh": {"private_key": private, "public_key": public}}, 1000, 1000)
    assert data is not None
    with tarfile.open(fileobj=io.BytesIO(data)) as tar:
        members = {m.name.rstrip("/"): m for m in tar.getmembers()}
        assert members["home/config/ssh/id_cluster"].mode == 0o600
        assert members["home/work/.ssh/authorized_keys"].mode == 0o600
        assert all(m.uid == 1000 for m in members.values())
        key = tar.extractfile(members["home/work/.ssh/id_cluster"])
        assert key is not None and key.read().decode() == private
    assert ssh_keypair_tar({}, 1000, 1000) is None
    with pytest.raises(InvalidAPIParameters):
        ssh_keypair_tar({"cluster_ssh": {"private_key": private, "public_key": "not a key"}}, 1000, 1000)


def test_per_kernel_slots_and_fit_checks() -> None:
    assert per_kernel_slots(rs(6, 3), 3) == rs(2, 1)
    agents = [rs(4, 8), rs(4, 8)]
    assert cluster_never_fits("single-node", 2, rs(2, 1), agents) is None
    assert "single-node cluster of 3" in (cluster_never_fits("single-node", 3, rs(2, 1), agents) or "")
    assert cluster_never_fits("multi-node", 4, rs(2, 1), agents) is None
    assert "room for 4" in (cluster_never_fits("multi-node", 5, rs(2, 1), agents) or "")
