"""The webserver's configuration (``web.toml``), validated with pydantic."""

from __future__ import annotations

from urllib.parse import urlsplit

from pydantic import BaseModel, ConfigDict, Field, field_validator, model_validator

from ai.backend.common.config import check_tls_files
from ai.backend.common.logs import LoggingSection
from ai.backend.common.metrics import MetricsSection


class _Section(BaseModel):
    model_config = ConfigDict(extra="forbid", populate_by_name=True)


class ServiceSection(_Section):
    host: str = "127.0.0.1"
    port: int = Field(8090, ge=1, le=65535)
    # Serve HTTPS with this PEM certificate (chain) and private key; both or neither.
    ssl_cert: str = Field("", alias="ssl-cert")
    ssl_key: str = Field("", alias="ssl-key")

    @model_validator(mode="after")
    def _tls_pair(self) -> ServiceSection:
        check_tls_files(self.ssl_cert, self.ssl_key)
        return self


class APISection(_Section):
    # The manager(s); several (a list, or one comma-separated string) are tried in order when one
    # cannot be reached.
    endpoint: list[str] = Field(default_factory=lambda: ["http://127.0.0.1:8091"])
    # The domain users log in to (the manager's POST /auth/authorize is per domain).
    domain: str = "default"
    ssl_verify: bool = Field(True, alias="ssl-verify")
    # Seconds to wait for the manager to accept a connection (streams themselves have no time limit).
    connect_timeout: float = Field(10.0, alias="connect-timeout", gt=0)

    @field_validator("endpoint", mode="before")
    @classmethod
    def _split(cls, v: object) -> object:
        if isinstance(v, str):
            return [e.strip() for e in v.split(",") if e.strip()]
        return v

    @field_validator("endpoint")
    @classmethod
    def _urls(cls, v: list[str]) -> list[str]:
        if not v:
            raise ValueError("at least one manager endpoint is needed")
        for url in v:
            parts = urlsplit(url)
            if parts.scheme not in ("http", "https") or not parts.netloc:
                raise ValueError(f"{url!r} is not an http(s):// URL")
        return [u.rstrip("/") for u in v]


class SessionSection(_Section):
    # Login sessions (and the failed-login counters) live here when set, e.g. "redis://127.0.0.1:6379/1";
    # otherwise in this process's memory (lost on restart; enough for one webserver).
    redis_url: str = Field("", alias="redis-url")
    # A login lasts this long (seconds) from the moment it was made.
    max_age: int = Field(604800, alias="max-age", gt=0)
    cookie_name: str = Field("AIOHTTP_SESSION", alias="cookie-name", pattern=r"^[A-Za-z0-9_.-]+$")
    # Send the cookie over HTTPS only (always on when this server itself serves HTTPS).
    cookie_secure: bool = Field(False, alias="cookie-secure")
    cookie_samesite: str = Field("Lax", alias="cookie-samesite")
    # Failed logins: after this many failures within login-block-time seconds an account (or a client
    # address) is refused with 429 until login-block-time passes without attempts.
    login_block_time: int = Field(1200, alias="login-block-time", gt=0)
    login_allowed_fail_count: int = Field(10, alias="login-allowed-fail-count", ge=1)
    login_allowed_fail_count_per_ip: int = Field(50, alias="login-allowed-fail-count-per-ip", ge=1)
    # Forget every login session when the server starts.
    flush_on_startup: bool = Field(False, alias="flush-on-startup")

    @field_validator("cookie_samesite")
    @classmethod
    def _samesite(cls, v: str) -> str:
        # "None" would send the cookie on cross-site requests, which the CSRF defence relies on not happening.
        if v.capitalize() not in ("Lax", "Strict"):
            raise ValueError("must be Lax or Strict")
        return v.capitalize()

    @field_validator("redis_url")
    @classmethod
    def _redis(cls, v: str) -> str:
        if v and urlsplit(v).scheme not in ("redis", "rediss", "unix"):
            raise ValueError(f"{v!r} is not a redis:// URL")
        return v


class SecuritySection(_Section):
    # Origins (scheme://host[:port]) besides the webserver's own that may make state-changing calls, e.g.
    # a console served from another host.
    allowed_origins: list[str] = Field(default_factory=list, alias="allowed-origins")


class UISection(_Section):
    """The web console (``ai.backend.web.console``)."""

    enabled: bool = True
    # Shown in the page titles and the top bar.
    brand: str = "Backend.AI"
    # The image preselected in the session launcher.
    default_environment: str = Field("python", alias="default-environment")


class WebConfig(_Section):
    service: ServiceSection = Field(default_factory=ServiceSection)  # type: ignore[arg-type]
    api: APISection = Field(default_factory=APISection)  # type: ignore[arg-type]
    session: SessionSection = Field(default_factory=SessionSection)  # type: ignore[arg-type]
    security: SecuritySection = Field(default_factory=SecuritySection)
    ui: UISection = Field(default_factory=UISection)  # type: ignore[arg-type]
    logging: LoggingSection = Field(default_factory=LoggingSection)
    metrics: MetricsSection = Field(default_factory=MetricsSection)  # who may scrape GET /metrics
