"""The agent's side of cluster sessions, whatever the backend: each kernel's ``BACKENDAI_CLUSTER_*`` variables
and the shared SSH keypair's files (the Docker network of a session: ``backends/docker/networks.py``).

The manager sends, in each kernel's creation request, the kernel's place in the session
(``cluster_role``, ``cluster_idx``, ``cluster_hostname``, ``cluster_local_rank``, ``cluster_hosts``,
``cluster_replicas``), the name of the session's network (``cluster_network``, for sessions of more than
one kernel) and the keypair (``cluster_ssh``): see ``ClusterSpec`` in :mod:`ai.backend.common.contracts.agent`.
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

from ai.backend.common.contracts import parse_wire
from ai.backend.common.contracts.agent import ClusterSpec, SSHKeypair, is_cluster_network
from ai.backend.common.problems import InvalidAPIParameters

from .kernel_tasks import tar_archive


def check_network_name(name: Any) -> str:
    """``name`` when it is a cluster network's name (``bai-cluster-<session uuid>``); a 400 otherwise."""
    if not is_cluster_network(name):
        raise InvalidAPIParameters(f"Not a cluster network name: {name!r}")
    return str(name)


def as_cluster_spec(spec: ClusterSpec | Mapping[str, Any]) -> ClusterSpec:
    """``spec`` as a :class:`ClusterSpec`: a ``KernelSpec`` is one, a plain mapping is checked (a 400)."""
    return spec if isinstance(spec, ClusterSpec) else parse_wire(ClusterSpec, dict(spec), "kernel spec")


def cluster_environ(spec: ClusterSpec | Mapping[str, Any]) -> dict[str, str]:
    """The ``BACKENDAI_CLUSTER_*`` variables of the kernel ``spec`` describes (a lone ``main1`` by default)."""
    c = as_cluster_spec(spec)
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


def ssh_keypair_tar(
    spec: ClusterSpec | Mapping[str, Any], uid: int, gid: int, *, user_key: SSHKeypair | None = None
) -> bytes | None:
    """A tar (extracted at ``/``) of the kernel's SSH files, owned by the kernel user; ``None`` when there are
    none:

    * the session's cluster keypair (``cluster_ssh``) as ``/home/config/ssh/id_cluster{,.pub}`` and
      ``~/.ssh/id_cluster{,.pub}``;
    * ``user_key`` (the user's keypair SSH key, for the main kernel's ``sshd`` app): the private key as
      ``/home/work/id_container``;
    * ``~/.ssh/authorized_keys`` authorizing both public keys (one line each).

    Private keys and ``authorized_keys`` are 0600, ``~/.ssh`` 0700.
    """
    ssh = as_cluster_spec(spec).cluster_ssh
    if ssh is None and user_key is None:
        return None
    dirs: list[str | tuple[str, int]] = [("home/work/.ssh", 0o700)]
    files: list[tuple[str, bytes, int]] = []
    authorized: list[str] = []
    if user_key is not None:
        files.append(("home/work/id_container", user_key.private_key.encode(), 0o600))
        authorized.append(user_key.public_key.strip())
    if ssh is not None:
        private, public = ssh.private_key.encode(), ssh.public_key.encode()
        dirs[:0] = ["home/config", "home/config/ssh"]
        for d in ("home/config/ssh", "home/work/.ssh"):
            files += [(f"{d}/id_cluster", private, 0o600), (f"{d}/id_cluster.pub", public, 0o644)]
        authorized.append(ssh.public_key.strip())
    files.append(("home/work/.ssh/authorized_keys", "".join(f"{k}\n" for k in authorized).encode(), 0o600))
    return tar_archive(dirs, files, uid, gid)


def hostname_of(spec: ClusterSpec | Mapping[str, Any]) -> str:
    """The kernel's hostname (``main1`` unless the spec says otherwise)."""
    return as_cluster_spec(spec).cluster_hostname
