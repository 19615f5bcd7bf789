"""The manager's configuration (``manager.toml``), validated with pydantic."""

from __future__ import annotations

from pydantic import BaseModel, ConfigDict, Field


class _Section(BaseModel):
    model_config = ConfigDict(extra="forbid", populate_by_name=True)


class ManagerSection(_Section):
    service_addr_host: str = Field("127.0.0.1", alias="service-addr-host")
    service_addr_port: int = Field(8081, alias="service-addr-port", ge=1, le=65535)
    # Shared secret that agents present on the internal API and that the manager presents to agents.
    cluster_secret: str = Field("change-me-cluster-secret", alias="cluster-secret", min_length=8)
    state_dir: str = Field("./.backend.ai", alias="state-dir")
    heartbeat_timeout: float = Field(30.0, alias="heartbeat-timeout", gt=0)
    allowed_date_skew: int = Field(900, alias="allowed-date-skew", gt=0)
    # Calls per rate-limit window allowed from one client IP without credentials (0: unlimited).
    anonymous_rate_limit: int = Field(3000, alias="anonymous-rate-limit", ge=0)
    rate_limit_window: int = Field(900, alias="rate-limit-window", gt=0)
    allow_graphql_introspection: bool = Field(False, alias="allow-graphql-introspection")


class DBSection(_Section):
    # sqlite+aiosqlite:///path/to/manager.db (embedded default) or postgresql+asyncpg://user:pw@host/db
    url: str = ""


class RedisSection(_Section):
    # redis://host:port/db; empty keeps rate-limit counters in the manager's memory (one manager only).
    url: str = ""


class ManagerConfig(_Section):
    manager: ManagerSection = Field(default_factory=ManagerSection)  # type: ignore[arg-type]
    db: DBSection = Field(default_factory=DBSection)
    redis: RedisSection = Field(default_factory=RedisSection)

    def db_url(self) -> str:
        """The database URL, defaulting to an SQLite file in the state directory."""
        if self.db.url:
            return self.db.url
        return f"sqlite+aiosqlite:///{self.manager.state_dir}/manager.db"
