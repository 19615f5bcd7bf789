"""The app proxy's configuration (``appproxy.toml``, section ``[appproxy]``), validated with pydantic."""

from __future__ import annotations

from urllib.parse import urlsplit

from pydantic import BaseModel, ConfigDict, Field, field_validator, model_validator

from ai.backend.common.logs import LoggingSection
from ai.backend.common.metrics import MetricsSection

__all__ = ["AppProxyConfig", "AppProxySection"]

_WILDCARDS = frozenset({"0.0.0.0", "::", ""})


class _Section(BaseModel):
    model_config = ConfigDict(extra="forbid", populate_by_name=True)


class AppProxySection(_Section):
    # Where the API port and every circuit port listen.
    bind_host: str = Field("127.0.0.1", alias="bind-host")
    api_port: int = Field(10200, alias="api-port", ge=1, le=65535)
    # The host name browsers use to reach this proxy (in the URLs it hands out); default: bind-host.
    advertised_host: str = Field("", alias="advertised-host")
    # The circuit ports, both ends included; each circuit takes the lowest free one.
    port_range: tuple[int, int] = Field((10205, 10300), alias="port-range")
    # Shared with the manager ([appproxy] secret there): signs app tokens, permits and the manager's calls.
    secret: str = Field(min_length=16)
    # The manager, asked every alive-interval seconds which sessions still run; several (a list, or "a,b") are
    # asked in turn until one answers (ADR 0014).
    manager_url: str = Field("http://127.0.0.1:8091", alias="manager-url")
    alive_interval: float = Field(5.0, alias="alive-interval", gt=0, le=3600)
    # A circuit with no open connection for this many seconds is closed.
    idle_timeout: float = Field(3600.0, alias="idle-timeout", gt=0)

    @field_validator("port_range")
    @classmethod
    def _range(cls, v: tuple[int, int]) -> tuple[int, int]:
        lo, hi = v
        if not 1 <= lo <= hi <= 65535:
            raise ValueError("must be [first, last] with 1 <= first <= last <= 65535")
        return v

    @field_validator("manager_url", mode="before")
    @classmethod
    def _url(cls, v: object) -> object:
        items = v.split(",") if isinstance(v, str) else v
        if not isinstance(items, list) or not all(isinstance(u, str) for u in items):
            return v  # pydantic names the type error
        urls = [u.strip().rstrip("/") for u in items if u.strip()]
        for u in urls or [""]:
            parts = urlsplit(u)
            if parts.scheme not in ("http", "https") or not parts.netloc:
                raise ValueError(f"{u!r} is not an http(s):// URL")
        return ",".join(urls)

    @property
    def manager_urls(self) -> list[str]:
        """The managers, in the order they are first asked."""
        return self.manager_url.split(",")

    @model_validator(mode="after")
    def _consistent(self) -> AppProxySection:
        lo, hi = self.port_range
        if lo <= self.api_port <= hi:
            raise ValueError(f"api-port {self.api_port} lies inside port-range [{lo}, {hi}]")
        if not self.advertised_host:
            if self.bind_host in _WILDCARDS:
                raise ValueError(f"bind-host {self.bind_host!r} listens everywhere: set advertised-host")
            self.advertised_host = self.bind_host
        return self

    @property
    def public_scheme(self) -> str:
        """The scheme of the URLs handed to browsers (no TLS here; a TLS front would be a later option)."""
        return "http"


class AppProxyConfig(_Section):
    appproxy: AppProxySection
    logging: LoggingSection = Field(default_factory=LoggingSection)
    metrics: MetricsSection = Field(default_factory=MetricsSection)  # who may scrape GET /metrics
