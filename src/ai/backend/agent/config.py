"""The agent's configuration (``agent.toml``), validated with pydantic."""

from __future__ import annotations

import socket
from typing import Any, Literal

from pydantic import AliasChoices, BaseModel, ConfigDict, Field, field_validator

from ai.backend.common.logs import LoggingSection
from ai.backend.common.metrics import MetricsSection


class _Section(BaseModel):
    model_config = ConfigDict(extra="forbid", populate_by_name=True)


class AgentSection(_Section):
    id: str = Field(default_factory=lambda: f"i-{socket.gethostname()}")
    rpc_listen_host: str = Field("127.0.0.1", alias="rpc-listen-host")
    rpc_listen_port: int = Field(6001, alias="rpc-listen-port", ge=1, le=65535)
    # The address the manager uses to reach this agent (defaults to the listen address).
    advertised_addr: str = Field("", alias="advertised-addr")
    scaling_group: str = Field("default", alias="scaling-group")
    # The manager, or several (a list, or "a,b"): heartbeats and kernel events go to one and move on to the next
    # when it cannot be reached (ADR 0014).
    manager_url: str = Field("http://127.0.0.1:8081", alias="manager-url")
    cluster_secret: str = Field("change-me-cluster-secret", alias="cluster-secret", min_length=8)
    heartbeat_interval: float = Field(3.0, alias="heartbeat-interval", gt=0)
    region: str = "local"
    # "docker" runs real containers; "dummy" simulates kernels in memory (see backends/dummy.py and [dummy]).
    backend: Literal["docker", "dummy"] = "docker"
    # Compute plugins to load (see accelerators/); the mock-accelerator doc spells it "allowed-compute-plugins".
    allow_compute_plugins: list[str] = Field(
        default_factory=list,
        validation_alias=AliasChoices("allow-compute-plugins", "allowed-compute-plugins"),
    )

    @field_validator("manager_url", mode="before")
    @classmethod
    def _manager_urls(cls, v: Any) -> Any:
        items = v.split(",") if isinstance(v, str) else v
        if not isinstance(items, list) or not all(isinstance(u, str) for u in items):
            return v  # pydantic names the type error
        urls = [u.strip().rstrip("/") for u in items if u.strip()]
        bad = [u for u in urls if not u.startswith(("http://", "https://"))]
        if not urls or bad:
            raise ValueError(f"must be one or more http(s):// URLs of managers, got {v!r}")
        return ",".join(urls)

    @property
    def manager_urls(self) -> list[str]:
        """The managers, in the order they are tried."""
        return self.manager_url.split(",")

    @field_validator("allow_compute_plugins")
    @classmethod
    def _known_plugins(cls, names: list[str]) -> list[str]:
        from .accelerators import KNOWN_PLUGINS

        unknown = [n for n in names if n not in KNOWN_PLUGINS]
        if unknown:
            raise ValueError(f"unknown compute plugin(s) {', '.join(unknown)} (known: {', '.join(KNOWN_PLUGINS)})")
        return names


class ContainerSection(_Section):
    kernel_uid: int = Field(1000, alias="kernel-uid", ge=1)
    kernel_gid: int = Field(1000, alias="kernel-gid", ge=1)
    scratch_root: str = Field("./.backend.ai/scratches", alias="scratch-root")
    network: str = "bai-kernels"
    pids_limit: int = Field(1024, alias="pids-limit", ge=16)
    shm_size: str = Field("64m", alias="shm-size")
    # Each kernel's writable space (/home/work, /home/config, /tmp, /var/tmp on one loop-mounted ext4 image;
    # the rest of its root file system is read-only). "0": the unbounded container layer, as before.
    scratch_size: str = Field("2g", alias="scratch-size")
    flush_timeout: float = Field(1.0, alias="flush-timeout", gt=0)
    # Spare containers kept started per recently used image, so new sessions skip the container start.
    warm_pool_size: int = Field(1, alias="warm-pool-size", ge=0, le=8)
    # Host ports for publishing the kernels' app ports (both ends included; ADR 0012), bound to bind-host
    # only; the manager is told to reach them at advertised-host (default: bind-host).
    port_range: tuple[int, int] = Field((30000, 31000), alias="port-range")
    bind_host: str = Field("127.0.0.1", alias="bind-host")
    advertised_host: str = Field("", alias="advertised-host")

    @property
    def kernel_host(self) -> str:
        """The address the manager and the app proxy use to reach the published app ports."""
        return self.advertised_host or self.bind_host

    @field_validator("port_range")
    @classmethod
    def _port_range(cls, value: tuple[int, int]) -> tuple[int, int]:
        low, high = value
        if not 1024 < low <= high <= 65535:
            raise ValueError("port-range must be [low, high] with 1024 < low <= high <= 65535")
        return value

    @field_validator("bind_host")
    @classmethod
    def _bind_host(cls, value: str) -> str:
        import ipaddress

        try:
            ipaddress.ip_address(value)
        except ValueError:
            raise ValueError("bind-host must be an IP address (Docker binds published ports to an address)") from None
        return value

    @field_validator("scratch_size")
    @classmethod
    def _scratch_size(cls, value: str) -> str:
        from ai.backend.common.types import BinarySize, SlotTypeError

        try:
            size = int(BinarySize.parse(value))
        except SlotTypeError as e:
            raise ValueError(str(e)) from None
        if 0 < size < 16 * 1024 * 1024:
            raise ValueError("scratch-size must be 0 (no limit) or at least 16m")
        return value


class ResourceSection(_Section):
    # Capacity offered to the scheduler; 0 means "detect from the host".
    cpu: float = Field(0, ge=0)
    mem: str = "0"
    reserved_mem: str = Field("512m", alias="reserved-mem")


class MockPluginSection(_Section):
    # The mock accelerator TOML (upstream's mock-accelerator.toml format); relative to the working directory.
    config: str = "mock-accelerator.toml"


class CudaPluginSection(_Section):
    library: str = "libnvidia-ml.so.1"


class PluginsSection(_Section):
    mock: MockPluginSection = Field(default_factory=MockPluginSection)  # type: ignore[arg-type]
    cuda: CudaPluginSection = Field(default_factory=CudaPluginSection)  # type: ignore[arg-type]


Delay = float | tuple[float, float]

# The kernel image a dummy agent reports by default, with the labels of the real python image.
DUMMY_DEFAULT_IMAGES: list[dict[str, Any]] = [
    {
        "ref": "python:3.11-debian12",
        "labels": {
            "ai.backend.kernelspec": "1",
            "ai.backend.aliases": "python python3 python3.11",
            "ai.backend.base-distro": "debian12",
            "ai.backend.features": "batch query uid-match user-input",
            "ai.backend.resource.min.cpu": "1",
            "ai.backend.resource.min.mem": "128m",
            "ai.backend.runtime-path": "/usr/bin/python3",
            "ai.backend.runtime-type": "python",
            "ai.backend.service-ports": "jupyter:http:8090,jupyterlab:http:8091",
        },
    }
]


class DummyImage(_Section):
    ref: str = Field(min_length=1)
    labels: dict[str, str] = Field(default_factory=lambda: {"ai.backend.kernelspec": "1"})
    digest: str = ""
    size: int = Field(0, ge=0)


class DummySection(_Section):
    """The simulated kernels of ``backend = "dummy"``: delays are seconds, a number or ``[min, max]``
    (uniformly random)."""

    create_delay: Delay = Field(0.0, alias="create-delay")
    destroy_delay: Delay = Field(0.0, alias="destroy-delay")
    images: list[DummyImage] = Field(default_factory=lambda: [DummyImage(**i) for i in DUMMY_DEFAULT_IMAGES])
    # "empty": every execution finishes with empty stdout; "echo": the code comes back as stdout.
    execute: Literal["empty", "echo"] = "empty"

    @field_validator("create_delay", "destroy_delay")
    @classmethod
    def _delay(cls, value: Delay) -> Delay:
        lo, hi = value if isinstance(value, tuple) else (value, value)
        if lo < 0 or hi < lo:
            raise ValueError("a delay is a number >= 0 or [min, max] with 0 <= min <= max")
        return value


class AgentConfig(_Section):
    agent: AgentSection = Field(default_factory=AgentSection)  # type: ignore[arg-type]
    container: ContainerSection = Field(default_factory=ContainerSection)  # type: ignore[arg-type]
    resource: ResourceSection = Field(default_factory=ResourceSection)  # type: ignore[arg-type]
    plugins: PluginsSection = Field(default_factory=PluginsSection)  # type: ignore[arg-type]
    dummy: DummySection = Field(default_factory=DummySection)  # type: ignore[arg-type]
    logging: LoggingSection = Field(default_factory=LoggingSection)
    metrics: MetricsSection = Field(default_factory=MetricsSection)  # who may scrape GET /metrics

    def rpc_addr(self) -> str:
        if self.agent.advertised_addr:
            return self.agent.advertised_addr
        return f"http://{self.agent.rpc_listen_host}:{self.agent.rpc_listen_port}"
