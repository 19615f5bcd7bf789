"""The manager ↔ agent contract: the agent's RPC paths, the kernel spec and the agent's answer, the agent's
heartbeat and kernel events, and the header carrying the cluster secret both ways.

The manager calls the agent at the ``*_PATH`` templates below (``{kid}``, ``{name}``: see :func:`path`); the
agent calls the manager at :data:`HEARTBEAT_PATH` and :data:`KERNEL_EVENTS_PATH`. Every request carries
:data:`CLUSTER_SECRET_HEADER`.
"""

from __future__ import annotations

import re
from typing import Annotated, Any, Literal

from pydantic import Field, StrictInt, StrictStr, field_validator, model_validator

# The header of the shared cluster secret (manager → agents and back) is defined with the other auth headers in
# common.auth, which the client SDK imports without loading pydantic; it is re-exported here.
from ..auth import CLUSTER_SECRET_HEADER
from ._base import WireModel

__all__ = [
    "CLUSTER_NETWORK_PREFIX",
    "CLUSTER_SECRET_HEADER",
    "HEARTBEAT_PATH",
    "KERNEL_EVENTS_PATH",
    "ClusterSSH",
    "ClusterSpec",
    "Dotfile",
    "FolderMount",
    "Heartbeat",
    "HeartbeatAnswer",
    "KernelCreated",
    "KernelEvent",
    "KernelSpec",
    "NetworkCreated",
    "NetworkSpec",
    "RegistryAuth",
    "SSHKeypair",
    "ServiceOptions",
    "ServiceShutdown",
    "ServiceStart",
    "ServiceStarted",
    "is_cluster_network",
    "path",
]


# --- the agent's RPC API (called by the manager) ------------------------------------------------------------
HEALTH_PATH = "/v1/health"
KERNELS_PATH = "/v1/kernels"  # POST a KernelSpec → KernelCreated
KERNEL_PATH = "/v1/kernels/{kid}"  # DELETE → {"stats": ...}
EXECUTE_PATH = "/v1/kernels/{kid}/execute"
INTERRUPT_PATH = "/v1/kernels/{kid}/interrupt"
COMPLETE_PATH = "/v1/kernels/{kid}/complete"
RESTART_PATH = "/v1/kernels/{kid}/restart"
PTY_PATH = "/v1/kernels/{kid}/pty"  # WebSocket
LOGS_PATH = "/v1/kernels/{kid}/logs"
FILES_PATH = "/v1/kernels/{kid}/files"  # PUT a tar
ARCHIVE_PATH = "/v1/kernels/{kid}/archive"  # GET ?path=&max_bytes= → a tar
LIST_FILES_PATH = "/v1/kernels/{kid}/list-files"
SERVICE_START_PATH = "/v1/kernels/{kid}/services/start"  # POST a ServiceStart → ServiceStarted
SERVICE_SHUTDOWN_PATH = "/v1/kernels/{kid}/services/shutdown"  # POST a ServiceShutdown → {"status"}
NETWORKS_PATH = "/v1/networks"  # POST a NetworkSpec → NetworkCreated
NETWORK_PATH = "/v1/networks/{name}"  # DELETE → {"removed": bool}

# --- the manager's agent-facing API (called by the agents) --------------------------------------------------
HEARTBEAT_PATH = "/internal/heartbeat"  # POST a Heartbeat → HeartbeatAnswer
KERNEL_EVENTS_PATH = "/internal/kernel-events"  # POST a KernelEvent → 204


def path(template: str, **params: str) -> str:
    """A path template of this module with its ``{kid}`` / ``{name}`` filled in."""
    return template.format(**params)


CLUSTER_NETWORK_PREFIX = "bai-cluster-"
_NETWORK_NAME = re.compile(
    rf"^{CLUSTER_NETWORK_PREFIX}[0-9a-f]{{8}}-[0-9a-f]{{4}}-[0-9a-f]{{4}}-[0-9a-f]{{4}}-[0-9a-f]{{12}}$"
)
#: A kernel's hostname in its cluster session: ``main1``, ``sub1`` … ``sub9999``.
HOSTNAME_PATTERN = r"^(main|sub)[1-9][0-9]{0,3}$"
Hostname = Annotated[str, Field(pattern=HOSTNAME_PATTERN)]
Count = Annotated[StrictInt, Field(ge=0)]


def is_cluster_network(name: object) -> bool:
    """Whether ``name`` is a cluster session's network name (``bai-cluster-<session uuid>``): the only
    networks an agent creates or removes."""
    return isinstance(name, str) and _NETWORK_NAME.match(name) is not None


class _NoneIsDefault(WireModel):
    """A ``null`` on the wire means "not given": the receivers always read ``spec.get(key) or default``."""

    @model_validator(mode="before")
    @classmethod
    def _drop_nulls(cls, data: Any) -> Any:
        if isinstance(data, dict):
            return {k: v for k, v in data.items() if v is not None}
        return data


class ClusterSSH(WireModel):
    """The keypair shared by the kernels of a cluster session."""

    private_key: StrictStr
    public_key: StrictStr

    @field_validator("public_key")
    @classmethod
    def _is_public_key(cls, v: str) -> str:
        if not v.startswith("ssh-"):
            raise ValueError("must be an OpenSSH public key line")
        return v


class ClusterSpec(_NoneIsDefault):
    """A kernel's place in its session (a lone ``main1`` of one kernel by default)."""

    cluster_size: Count = 1
    cluster_mode: StrictStr = "single-node"
    cluster_role: StrictStr = "main"
    cluster_idx: Count = 1
    cluster_hostname: Hostname = "main1"
    cluster_local_rank: Count = 0
    #: Every kernel's hostname (defaults to this one's alone).
    cluster_hosts: list[Hostname] | None = None
    #: Kernels per role (defaults to this kernel's role: 1).
    cluster_replicas: dict[str, StrictInt] | None = None
    #: The session's private network (sessions of more than one kernel).
    cluster_network: StrictStr | None = None
    cluster_ssh: ClusterSSH | None = None

    @field_validator("cluster_network")
    @classmethod
    def _is_network(cls, v: str | None) -> str | None:
        if v is not None and not is_cluster_network(v):
            raise ValueError("not a cluster network name")
        return v


class FolderMount(WireModel):
    """A virtual folder bind-mounted into the kernel (paths checked by the agent before use)."""

    host_path: StrictStr
    container_path: StrictStr
    mode: Literal["ro", "rw"] = "ro"


class Dotfile(WireModel):
    """A file of the user's placed under /home/work (``perm``: three octal digits)."""

    path: StrictStr
    perm: StrictStr | StrictInt | None = None
    data: StrictStr = ""


class RegistryAuth(WireModel):
    """Pull credentials for a private registry (Docker's ``X-Registry-Auth`` fields)."""

    username: StrictStr
    password: StrictStr
    serveraddress: StrictStr


class SSHKeypair(WireModel):
    """The user's keypair SSH key (``/auth/ssh-keypair``): the main kernel authorizes the public key for the
    intrinsic ``sshd`` app and keeps the private key at ``/home/work/id_container`` for the user to download."""

    public_key: StrictStr
    private_key: StrictStr

    @field_validator("public_key")
    @classmethod
    def _one_line(cls, v: str) -> str:
        v = v.strip()
        # One authorized_keys line: a newline would authorize whatever follows it.
        if not v or "\n" in v or "\r" in v:
            raise ValueError("must be one OpenSSH public key line")
        return v

    @field_validator("private_key")
    @classmethod
    def _not_empty(cls, v: str) -> str:
        if not v.strip():
            raise ValueError("must not be empty")
        return v


class KernelSpec(ClusterSpec):
    """The manager's request to create one kernel (``POST /v1/kernels``). Only ``main1`` of a batch session
    runs its ``startup_command``."""

    kernel_id: StrictStr
    session_id: StrictStr
    image: StrictStr
    session_name: StrictStr = ""
    access_key: StrictStr = ""
    #: Resource slots of this kernel (the JSON of a ``ResourceSlot``: amounts as strings).
    slots: dict[str, StrictStr | StrictInt | float] = Field(default_factory=dict)
    environ: dict[str, StrictStr] = Field(default_factory=dict)
    session_type: StrictStr = "interactive"
    startup_command: StrictStr | None = None
    #: Seconds a batch task may run (``None``: no limit).
    batch_timeout: StrictInt | float | None = None
    bootstrap_script: StrictStr | None = None
    dotfiles: list[Dotfile] = Field(default_factory=list)
    mounts: list[FolderMount] = Field(default_factory=list)
    registry_auth: RegistryAuth | None = None
    #: The user's SSH keypair (placed in the main kernel; see :class:`SSHKeypair`).
    ssh_keypair: SSHKeypair | None = None
    #: Container ports the user's own processes will listen on, published as ``preopen`` apps of the main
    #: kernel (1025-65534, not reserved; see ``ai.backend.common.service_ports``).
    preopen_ports: list[StrictInt] = Field(default_factory=list)

    @property
    def is_main(self) -> bool:
        """Whether this is its session's main kernel (the one that offers the session's apps)."""
        return self.cluster_role == "main"

    @property
    def batch_command(self) -> str | None:
        """The command this kernel runs as its session's batch task, if it runs one."""
        cmd = self.startup_command
        return cmd if self.session_type == "batch" and cmd is not None and cmd.strip() else None


class KernelCreated(WireModel):
    """The agent's answer to a kernel creation.

    ``service_ports`` are the kernel's apps in their stored shape (ADR 0012): ``{"name", "protocol",
    "container_ports", "host_ports", "url_template"?, "allowed_arguments"?, "allowed_envs"?}``, the host ports
    reachable at ``kernel_host`` (empty from an agent older than apps).
    """

    container_id: StrictStr
    service_ports: list[dict[str, Any]] = Field(default_factory=list)
    kernel_host: StrictStr = ""
    #: Seconds spent in each phase of the creation (plus ``bootstrap_exit_code``).
    phases: dict[str, int | float | None] = Field(default_factory=dict)


ArgumentValue = StrictStr | list[StrictStr] | None


class ServiceOptions(WireModel):
    """How to start an app: extra environment variables and command-line arguments (``flag`` → ``null`` for a
    bare flag, a value, or a list of values), each allowed only if the app's service definition allows it."""

    envs: dict[StrictStr, StrictStr] = Field(default_factory=dict)
    arguments: dict[StrictStr, ArgumentValue] = Field(default_factory=dict)


class ServiceStart(WireModel):
    """``POST /v1/kernels/{kid}/services/start``: start an app of the kernel (if it is not running)."""

    name: StrictStr = Field(min_length=1)
    options: ServiceOptions = Field(default_factory=ServiceOptions)

    @field_validator("options", mode="before")
    @classmethod
    def _null_is_none(cls, v: Any) -> Any:
        return {} if v is None else v


class ServiceStarted(WireModel):
    """The answer: ``started`` or ``running`` (it was up already), and where the app's ports are published."""

    status: Literal["started", "running"]
    host: StrictStr
    ports: list[StrictInt]


class ServiceShutdown(WireModel):
    """``POST /v1/kernels/{kid}/services/shutdown``: stop an app (answers ``{"status": "stopped" |
    "not-running"}``)."""

    name: StrictStr = Field(min_length=1)


class NetworkSpec(_NoneIsDefault):
    """The manager's request to create a cluster session's network (``POST /v1/networks``)."""

    name: StrictStr
    mode: StrictStr = "single-node"


class NetworkCreated(WireModel):
    name: StrictStr
    driver: StrictStr


class Heartbeat(_NoneIsDefault):
    """What an agent tells the manager every ``heartbeat-interval`` seconds (``POST /internal/heartbeat``).

    The types are as lenient as the manager's checks are (slots, plugins and images are checked by the
    manager's own rules, not here), so that a model-validated heartbeat is refused exactly when today's is.
    """

    id: StrictStr
    addr: StrictStr
    scaling_group: StrictStr = "default"
    region: StrictStr | None = None
    version: StrictStr | None = None
    architecture: StrictStr = "x86_64"
    #: Capacity (a ``ResourceSlot``'s JSON).
    available_slots: dict[str, Any]
    slot_types: dict[str, Any] | None = None
    compute_plugins: dict[str, Any] | None = None
    #: The agent's kernel images (``ref``, ``digest``, ``labels``, ``size``); absent: not reported.
    images: list[dict[str, Any]] | None = None
    #: The ids of the agent's kernels (for reconciliation).
    kernels: list[str] | None = None
    #: Node statistics and the Container Stats Object of each kernel.
    live_stat: dict[str, Any] | None = None
    kernel_stats: dict[str, Any] | None = None
    #: Asks for reconciliation now (a restarted agent); sent only when true.
    reconcile: Literal[True] | None = None


class HeartbeatAnswer(WireModel):
    """The manager's answer: ``stale_kernels`` (present when it reconciled) are to be removed by the agent."""

    ok: bool = True
    stale_kernels: list[str] | None = None


class KernelEvent(WireModel):
    """An agent's report about one kernel (``POST /internal/kernel-events``), one of two kinds:

    * a step of its creation: ``event`` (only ``"pulling"`` today);
    * its end by itself (exit, crash, OOM kill, batch task done): ``reason``, ``exit_code`` and optionally its
      last ``stats`` and a batch session's ``task_log``.
    """

    kernel_id: StrictStr
    event: StrictStr | None = None
    reason: StrictStr | None = None
    exit_code: int | None = None
    stats: dict[str, Any] | None = None
    task_log: StrictStr | None = None
