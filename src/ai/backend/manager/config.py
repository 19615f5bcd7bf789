"""The manager's configuration (``manager.toml``), validated with pydantic."""

from __future__ import annotations

import ipaddress
import re

from pydantic import BaseModel, ConfigDict, Field, field_validator, model_validator

from ai.backend.common.config import check_tls_files
from ai.backend.common.logs import LoggingSection
from ai.backend.common.metrics import MetricsSection


class _Section(BaseModel):
    model_config = ConfigDict(extra="forbid", populate_by_name=True)


class ManagerSection(_Section):
    service_addr_host: str = Field("127.0.0.1", alias="service-addr-host")
    service_addr_port: int = Field(8081, alias="service-addr-port", ge=1, le=65535)
    # Shared secret that agents present on the internal API and that the manager presents to agents.
    cluster_secret: str = Field("change-me-cluster-secret", alias="cluster-secret", min_length=8)
    state_dir: str = Field("./.backend.ai", alias="state-dir")
    heartbeat_timeout: float = Field(30.0, alias="heartbeat-timeout", gt=0)
    # How often each agent's containers are checked against the sessions (an answer to one of its
    # heartbeats; at once for an agent that just started and after a manager restart), and how long a
    # kernel must have been RUNNING before its missing container ends its session (see architecture.md).
    reconcile_interval: float = Field(10.0, alias="reconcile-interval", gt=0)
    reconcile_grace: float = Field(30.0, alias="reconcile-grace", gt=0)
    allowed_date_skew: int = Field(900, alias="allowed-date-skew", gt=0)
    # Calls per rate-limit window allowed from one client IP without credentials (0: unlimited).
    anonymous_rate_limit: int = Field(3000, alias="anonymous-rate-limit", ge=0)
    rate_limit_window: int = Field(900, alias="rate-limit-window", gt=0)
    # How often idle timeouts and maximum session lifetimes of the keypair resource policies are checked.
    session_limit_check_interval: float = Field(5.0, alias="session-limit-check-interval", gt=0)
    # Largest request body accepted (uploads are at most 20 files of 1 MiB each).
    max_request_body: str = Field("32m", alias="max-request-body", pattern=r"^[0-9]+[kmgKMG]?$")
    allow_graphql_introspection: bool = Field(False, alias="allow-graphql-introspection")
    # A GraphQL query (not a mutation) running longer is stopped with a 503; GraphQL documents one access
    # key may have running at once (the others wait their turn), so no tenant can take the whole pool.
    graphql_timeout: float = Field(30.0, alias="graphql-timeout", gt=0)
    graphql_concurrency: int = Field(8, alias="graphql-concurrency", ge=1)
    # The storage host ("<proxy>:<volume>") of new virtual folders when the request names none.
    default_vfolder_host: str = Field("local:volume1", alias="default-vfolder-host")
    # Addresses or networks (CIDR) of the reverse proxies (e.g. the webserver) whose X-Forwarded-URL is
    # trusted for signature checks; from anyone else that header is ignored (a captured signature would
    # otherwise be valid on any path).
    trusted_proxies: list[str] = Field(default_factory=list, alias="trusted-proxies")
    # Serve HTTPS with this PEM certificate (chain) and private key; both or neither.
    ssl_cert: str = Field("", alias="ssl-cert")
    ssl_key: str = Field("", alias="ssl-key")

    @model_validator(mode="after")
    def _tls_pair(self) -> ManagerSection:
        check_tls_files(self.ssl_cert, self.ssl_key)
        return self

    @field_validator("trusted_proxies")
    @classmethod
    def _networks(cls, v: list[str]) -> list[str]:
        for item in v:
            try:
                ipaddress.ip_network(item, strict=False)
            except ValueError:
                raise ValueError(f"{item!r} is not an IP address or network") from None
        return v

    def public_address(self) -> str:
        """Where this manager answers, as other hosts see it (shown in ``admin cluster status``)."""
        host = self.service_addr_host
        if host in ("0.0.0.0", "::", ""):
            import socket

            host = socket.gethostname()
        elif ":" in host:
            host = f"[{host}]"
        return f"{'https' if self.ssl_cert else 'http'}://{host}:{self.service_addr_port}"

    def is_trusted_proxy(self, host: str | None) -> bool:
        """Whether a request from ``host`` (the direct peer's address) may set X-Forwarded-URL."""
        if not self.trusted_proxies or not host:
            return False
        try:
            addr = ipaddress.ip_address(host)
        except ValueError:
            return False
        return any(addr in ipaddress.ip_network(n, strict=False) for n in self.trusted_proxies)


class DBSection(_Section):
    # sqlite+aiosqlite:///path/to/manager.db (embedded default) or postgresql+asyncpg://user:pw@host/db
    url: str = ""


class RedisSection(_Section):
    # redis://host:port/db; empty keeps rate-limit counters in the manager's memory (one manager only).
    url: str = ""


# host, host.domain or host:port (IPv6 in brackets): what a Docker engine accepts before the first "/".
_REGISTRY_NAME = re.compile(r"^(\[[0-9a-fA-F:.]+\]|[A-Za-z0-9]([A-Za-z0-9.-]*[A-Za-z0-9])?)(:[0-9]{1,5})?$")


class DockerRegistrySection(_Section):
    """One ``[docker-registries."<name>"]`` table: where the manager scans for kernel images."""

    url: str  # http(s)://host[:port] of the registry's v2 API
    username: str = ""
    password: str = ""
    # Repository prefixes to scan (e.g. ["stable", "community"]); empty: the whole catalog.
    project: list[str] = Field(default_factory=list)

    @field_validator("url")
    @classmethod
    def _http_url(cls, v: str) -> str:
        if not re.match(r"^https?://[^/\s]+", v):
            raise ValueError("must be an http:// or https:// URL of the registry")
        return v.rstrip("/")

    @field_validator("project", mode="before")
    @classmethod
    def _one_or_many(cls, v: object) -> object:
        return [v] if isinstance(v, str) else v


class StorageProxySection(_Section):
    """One ``[storage-proxies.<name>]`` table: a storage proxy, whose volumes are the hosts ``<name>:<volume>``."""

    client_api: str = Field(alias="client-api")  # the URL clients upload to and download from
    manager_api: str = Field(alias="manager-api")  # the URL of its manager-facing API
    secret: str = Field(min_length=1)  # = [api.manager].secret of the proxy

    @field_validator("client_api", "manager_api")
    @classmethod
    def _proxy_url(cls, v: str) -> str:
        if not re.match(r"^https?://[^/\s]+", v):
            raise ValueError("must be an http:// or https:// URL of the storage proxy")
        return v.rstrip("/")


class AppProxySection(_Section):
    """``[appproxy]``: the browser-facing app proxy (``python -m ai.backend.appproxy``, ADR 0012). Without this
    table apps are reached only through the manager's ``tcpproxy``/``httpproxy`` streams (the CLI way)."""

    url: str  # what browsers open (its public URL, e.g. http://127.0.0.1:10200)
    api_url: str = Field("", alias="api-url")  # where the manager calls it; default: url
    secret: str = Field(min_length=16)  # = the app proxy's secret: signs app tokens and authenticates both ways

    @field_validator("url", "api_url")
    @classmethod
    def _proxy_url(cls, v: str) -> str:
        if v and not re.match(r"^https?://[^/\s]+", v):
            raise ValueError("must be an http:// or https:// URL of the app proxy")
        return v.rstrip("/")

    @property
    def manager_url(self) -> str:
        """The URL the manager calls the proxy at."""
        return self.api_url or self.url


class ManagerConfig(_Section):
    manager: ManagerSection = Field(default_factory=ManagerSection)  # type: ignore[arg-type]
    db: DBSection = Field(default_factory=DBSection)
    redis: RedisSection = Field(default_factory=RedisSection)
    # Registry name (the host[:port] agents pull from, e.g. "cr.example.com") -> its settings.
    docker_registries: dict[str, DockerRegistrySection] = Field(default_factory=dict, alias="docker-registries")
    # Storage proxy name (the part of vfolder hosts before ":") -> how to reach it.
    storage_proxies: dict[str, StorageProxySection] = Field(default_factory=dict, alias="storage-proxies")
    appproxy: AppProxySection | None = None
    logging: LoggingSection = Field(default_factory=LoggingSection)
    metrics: MetricsSection = Field(default_factory=MetricsSection)  # who may scrape GET /metrics

    @field_validator("storage_proxies")
    @classmethod
    def _proxy_names(cls, v: dict[str, StorageProxySection]) -> dict[str, StorageProxySection]:
        for name in v:
            if not re.match(r"^[A-Za-z0-9][A-Za-z0-9._-]{0,63}$", name):
                raise ValueError(f"storage proxy name {name!r} must be 1-64 letters, digits, '.', '_' or '-'")
        return v

    @field_validator("docker_registries")
    @classmethod
    def _registry_names(cls, v: dict[str, DockerRegistrySection]) -> dict[str, DockerRegistrySection]:
        for name in v:
            host = name.split(":")[0] if not name.startswith("[") else name
            # Docker pulls "<name>/<repo>:<tag>" from a registry only when <name> has a dot or a port, or is localhost.
            if not _REGISTRY_NAME.match(name) or not ("." in host or ":" in name or host == "localhost"):
                raise ValueError(
                    f"registry name {name!r} must be host.domain, host:port or localhost[:port] (what agents pull from)"
                )
        return v

    def db_url(self) -> str:
        """The database URL, defaulting to an SQLite file in the state directory."""
        if self.db.url:
            return self.db.url
        return f"sqlite+aiosqlite:///{self.manager.state_dir}/manager.db"
