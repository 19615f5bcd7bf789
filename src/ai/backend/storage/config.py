"""The storage proxy's configuration (``storage-proxy.toml``), validated with pydantic."""

from __future__ import annotations

import re
from typing import Any

from pydantic import BaseModel, ConfigDict, Field, field_validator, model_validator

from ai.backend.common.logs import LoggingSection
from ai.backend.common.metrics import MetricsSection
from ai.backend.common.types import BinarySize, SlotTypeError

_DURATION_RE = re.compile(r"^\s*(\d+(?:\.\d+)?)\s*(ms|s|m|h|d|w)?\s*$")
_DURATION_UNITS = {"ms": 0.001, "s": 1, "m": 60, "h": 3600, "d": 86400, "w": 604800, None: 1}


def parse_duration(value: Any) -> float:
    """Seconds from ``90``, ``"30s"``, ``"15m"``, ``"1h"``, ``"1d"`` (a bare number is seconds)."""
    if isinstance(value, bool):
        raise ValueError(f"not a duration: {value!r}")
    if isinstance(value, int | float):
        seconds = float(value)
    else:
        m = _DURATION_RE.match(str(value))
        if m is None:
            raise ValueError(f"invalid duration {value!r} (use e.g. 30s, 15m, 1h, 1d)")
        seconds = float(m.group(1)) * _DURATION_UNITS[m.group(2)]
    if seconds <= 0:
        raise ValueError("a duration must be positive")
    return seconds


class _Section(BaseModel):
    model_config = ConfigDict(extra="forbid", populate_by_name=True)


class ServiceAddr(_Section):
    host: str = "127.0.0.1"
    port: int = Field(ge=0, le=65535)


class ProxySection(_Section):
    node_id: str = Field("local", alias="node-id", pattern=r"^[A-Za-z0-9._-]+$")
    secret: str = Field("change-me-storage-proxy-token-secret", min_length=16)
    session_expire: float = Field(3600.0, alias="session-expire")
    max_upload_size: int = Field(100 * 1024**3, alias="max-upload-size", ge=0)
    scandir_limit: int = Field(1000, alias="scandir-limit", ge=1)
    user: int = Field(1000, ge=0)
    group: int = Field(1000, ge=0)
    # Accepted for compatibility with upstream sample configs; this proxy is one process on asyncio.
    num_proc: int = Field(1, alias="num-proc", ge=1)
    pid_file: str = Field("", alias="pid-file")
    event_loop: str = Field("asyncio", alias="event-loop")

    @field_validator("session_expire", mode="before")
    @classmethod
    def _duration(cls, v: Any) -> float:
        return parse_duration(v)

    @field_validator("max_upload_size", mode="before")
    @classmethod
    def _size(cls, v: Any) -> int:
        try:
            return int(BinarySize.parse(v))
        except SlotTypeError as e:
            raise ValueError(str(e)) from None


class ClientAPISection(_Section):
    service_addr: ServiceAddr = Field(default_factory=lambda: ServiceAddr(port=6021), alias="service-addr")
    ssl_enabled: bool = Field(False, alias="ssl-enabled")


class ManagerAPISection(_Section):
    service_addr: ServiceAddr = Field(default_factory=lambda: ServiceAddr(port=6022), alias="service-addr")
    ssl_enabled: bool = Field(False, alias="ssl-enabled")
    secret: str = Field("change-me-storage-proxy-manager-secret", min_length=8)


class APISection(_Section):
    client: ClientAPISection = Field(default_factory=ClientAPISection)  # type: ignore[arg-type]
    manager: ManagerAPISection = Field(default_factory=ManagerAPISection)  # type: ignore[arg-type]


class VolumeConfig(_Section):
    backend: str = "vfs"
    path: str
    options: dict[str, Any] = Field(default_factory=dict)


class StorageProxyConfig(BaseModel):
    """The whole ``storage-proxy.toml``; unknown top-level tables (``etcd``, ``debug``) are ignored."""

    model_config = ConfigDict(extra="ignore", populate_by_name=True)

    storage_proxy: ProxySection = Field(default_factory=ProxySection, alias="storage-proxy")  # type: ignore[arg-type]
    api: APISection = Field(default_factory=APISection)  # type: ignore[arg-type]
    logging: LoggingSection = Field(default_factory=LoggingSection)
    volume: dict[str, VolumeConfig] = Field(
        default_factory=lambda: {"volume1": VolumeConfig(path="./.backend.ai/vfroot/volume1")}
    )
    metrics: MetricsSection = Field(
        default_factory=MetricsSection
    )  # who may scrape GET /metrics (on the manager API's port)

    @field_validator("volume")
    @classmethod
    def _volume_names(cls, v: dict[str, VolumeConfig]) -> dict[str, VolumeConfig]:
        for name in v:
            if not re.fullmatch(r"[A-Za-z0-9._-]+", name) or name in (".", ".."):
                raise ValueError(f"invalid volume name {name!r}")
        return v

    @model_validator(mode="after")
    def _distinct_ports(self) -> StorageProxyConfig:
        c, m = self.api.client.service_addr, self.api.manager.service_addr
        # Requests are routed to the client or manager API by the local port they arrive on.
        if c.port and c.port == m.port:
            raise ValueError("[api.client] and [api.manager] must listen on different ports")
        if self.api.client.ssl_enabled or self.api.manager.ssl_enabled:
            raise ValueError("ssl-enabled is not supported: terminate TLS in a reverse proxy in front")
        return self
