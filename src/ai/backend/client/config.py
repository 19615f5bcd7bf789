"""Client configuration: :class:`APIConfig`, environment lookup and the process-wide config.

Every setting can come from a constructor argument or from a ``BACKEND_*`` environment
variable (with the legacy ``SORNA_*`` prefix as fallback).  Bad values raise
:class:`ValueError` with a message naming the variable, so that the CLI can print one
clear line instead of a traceback.
"""

from __future__ import annotations

import enum
import math
import os
import random
import re
from collections.abc import Callable, Iterable, Mapping, Sequence
from typing import TYPE_CHECKING, Any, TypeVar, cast
from urllib.parse import urlsplit

from ai.backend.common.auth import HMAC_HASHES

if TYPE_CHECKING:
    import httpx

__all__ = [
    "API_VERSION",
    "APIConfig",
    "DEFAULT_CHUNK_SIZE",
    "MIN_API_VERSION",
    "Undefined",
    "bool_env",
    "get_config",
    "get_env",
    "parse_api_version",
    "set_config",
    "undefined",
]


class Undefined(enum.Enum):
    """The type of :data:`undefined`, a placeholder distinct from ``None``."""

    token = object()


undefined = Undefined.token

API_VERSION: tuple[int, str] = (6, "20220615")
"""The newest API version this client speaks."""
MIN_API_VERSION: tuple[int, str] = (5, "20191215")
"""Servers older than this get an :class:`~ai.backend.client.exceptions.APIVersionWarning`."""
DEFAULT_CHUNK_SIZE = 16 * (2**20)

_API_VERSION_RE = re.compile(r"^v(?P<major>\d+)\.(?P<date>\d{8})$")
_TRUE_WORDS = frozenset({"y", "yes", "t", "true", "1"})
_FALSE_WORDS = frozenset({"n", "no", "f", "false", "0"})

T = TypeVar("T")


def parse_api_version(value: str) -> tuple[int, str]:
    """Parse ``"v6.20220615"`` into ``(6, "20220615")``; raise :class:`ValueError` if malformed."""
    m = _API_VERSION_RE.match(value.strip())
    if m is None:
        raise ValueError(f"Invalid API version {value!r}: expected the form 'v<major>.<YYYYMMDD>'.")
    return int(m.group("major")), m.group("date")


def format_api_version(version: tuple[int, str]) -> str:
    """Format ``(6, "20220615")`` as ``"v6.20220615"``."""
    return f"v{version[0]}.{version[1]}"


def _identity(value: Any) -> Any:
    return value


def get_env(
    key: str,
    default: str | Mapping[str, Any] | Undefined = undefined,
    *,
    clean: Callable[[Any], T] = _identity,
) -> T:
    """Read ``BACKEND_<KEY>`` (falling back to ``SORNA_<KEY>``) and return it cleaned.

    *clean* is applied to the found value and to *default* alike.  Raises
    :class:`KeyError` if the variable is unset and no default is given, and
    :class:`ValueError` naming the variable if *clean* rejects its value.
    """
    key = key.upper()
    for prefix in ("BACKEND_", "SORNA_"):
        raw = os.environ.get(prefix + key)
        if raw is not None:
            try:
                return clean(raw)
            except ValueError as e:
                raise ValueError(f"Invalid value of {prefix}{key} ({raw!r}): {e}") from None
    if default is undefined:
        raise KeyError(key)
    return clean(default)


def bool_env(value: str | bool) -> bool:
    """Parse y/yes/t/true/1 and n/no/f/false/0 (case-insensitive) into a bool."""
    if isinstance(value, bool):
        return value
    v = value.strip().lower()
    if v in _TRUE_WORDS:
        return True
    if v in _FALSE_WORDS:
        return False
    raise ValueError("expected one of yes/no, true/false, y/n, t/f, 1/0")


def _clean_timeout(value: str | float | int) -> float:
    try:
        result = float(value)
    except (TypeError, ValueError):
        raise ValueError("expected a number of seconds") from None
    if math.isnan(result) or result < 0:
        raise ValueError("expected a non-negative number of seconds")
    return result


def _clean_endpoints(value: Any) -> list[httpx.URL]:
    """Split a comma-separated list of absolute http(s) URLs into ``httpx.URL`` objects."""
    import httpx

    if isinstance(value, httpx.URL):
        entries = [str(value)]
    elif isinstance(value, str):
        entries = [e.strip() for e in value.split(",") if e.strip()]
    elif isinstance(value, Iterable):
        entries = [str(e).strip() for e in value]
    else:
        raise ValueError(f"expected a URL string, got {type(value).__name__}")
    if not entries:
        raise ValueError("no endpoint URL given")
    urls = []
    for entry in entries:
        parts = urlsplit(entry)
        if parts.scheme not in ("http", "https") or not parts.netloc:
            raise ValueError(f"{entry!r} is not an absolute http:// or https:// URL")
        try:
            urls.append(httpx.URL(entry))
        except httpx.InvalidURL as e:
            raise ValueError(f"{entry!r} is not a valid URL ({e})") from None
    return urls


def _clean_tokens(value: str | Iterable[str]) -> list[str]:
    if isinstance(value, str):
        return [t.strip() for t in value.split(",") if t.strip()]
    return [str(t) for t in value]


def _clean_address_map(value: str | Mapping[str, str]) -> dict[str, str]:
    if isinstance(value, Mapping):
        return {str(k): str(v) for k, v in value.items()}
    result: dict[str, str] = {}
    for assignment in value.split(","):
        if not assignment.strip():
            continue
        k, sep, v = assignment.partition("=")
        if not sep or not k.strip() or not v.strip():
            raise ValueError(f"{assignment!r} is not a KEY=VALUE pair")
        result[k.strip()] = v.strip()
    return result


def _clean_endpoint_type(value: str) -> str:
    v = value.strip().lower()
    if v not in ("api", "session"):
        raise ValueError("expected 'api' or 'session'")
    return v


class APIConfig:
    """A set of client settings; every argument is keyword-only and optional.

    Unset arguments are read from the environment (``BACKEND_ENDPOINT``,
    ``BACKEND_ENDPOINT_TYPE``, ``BACKEND_DOMAIN``, ``BACKEND_GROUP``,
    ``BACKEND_ACCESS_KEY``, ``BACKEND_SECRET_KEY``, ``BACKEND_VFOLDER_MOUNTS``,
    ``BACKEND_SKIP_SSLCERT_VALIDATION``, ``BACKEND_CONNECTION_TIMEOUT``,
    ``BACKEND_READ_TIMEOUT``, ``BACKEND_OVERRIDE_STORAGE_PROXY``, ``BACKEND_SIGN_BODY``) and then from
    :attr:`DEFAULTS`.  ``endpoint`` may hold several comma-separated URLs of one cluster:
    requests fail over between them.  An access key deliberately set to ``""`` makes
    requests anonymous (unsigned).
    """

    DEFAULTS: Mapping[str, str | Mapping[str, str]] = {
        "endpoint": "https://api.backend.ai",
        "endpoint_type": "api",
        "version": format_api_version(API_VERSION),
        "hash_type": "sha256",
        "domain": "default",
        "group": "default",
        "storage_proxy_address_map": {},
        "connection_timeout": "10.0",
        "read_timeout": "0",
    }
    """Defaults of the settings that the environment can override (keys excepted)."""

    def __init__(
        self,
        *,
        endpoint: str | httpx.URL | Iterable[str] | None = None,
        endpoint_type: str | None = None,
        domain: str | None = None,
        group: str | None = None,
        storage_proxy_address_map: Mapping[str, str] | None = None,
        version: str | None = None,
        user_agent: str | None = None,
        access_key: str | None = None,
        secret_key: str | None = None,
        hash_type: str | None = None,
        vfolder_mounts: Iterable[str] | None = None,
        skip_sslcert_validation: bool | None = None,
        connection_timeout: float | None = None,
        read_timeout: float | None = None,
        announcement_handler: Callable[[str], None] | None = None,
        sign_body: bool | None = None,
    ) -> None:
        d = self.DEFAULTS
        if endpoint:
            try:
                self._endpoints = _clean_endpoints(endpoint)
            except ValueError as e:
                raise ValueError(f"Invalid API endpoint: {e}") from None
        else:
            self._endpoints = get_env("ENDPOINT", d["endpoint"], clean=_clean_endpoints)
        random.shuffle(self._endpoints)
        if endpoint_type is not None:
            try:
                self._endpoint_type = _clean_endpoint_type(endpoint_type)
            except ValueError as e:
                raise ValueError(f"Invalid endpoint type {endpoint_type!r}: {e}") from None
        else:
            self._endpoint_type = get_env("ENDPOINT_TYPE", d["endpoint_type"], clean=_clean_endpoint_type)
        self._domain = domain if domain is not None else get_env("DOMAIN", d["domain"], clean=str)
        self._group = group if group is not None else get_env("GROUP", d["group"], clean=str)
        if storage_proxy_address_map is not None:
            self._storage_proxy_address_map = dict(storage_proxy_address_map)
        else:
            self._storage_proxy_address_map = get_env(
                "OVERRIDE_STORAGE_PROXY", d["storage_proxy_address_map"], clean=_clean_address_map
            )
        self._version = version if version is not None else cast(str, d["version"])
        parse_api_version(self._version)  # validate early
        if user_agent is None:
            from . import get_user_agent

            user_agent = get_user_agent()
        self._user_agent = user_agent
        if self._endpoint_type == "api":
            self._access_key = access_key if access_key is not None else get_env("ACCESS_KEY", "", clean=str)
            self._secret_key = secret_key if secret_key is not None else get_env("SECRET_KEY", "", clean=str)
        else:
            self._access_key = "dummy"
            self._secret_key = "dummy"
        self._hash_type = (hash_type if hash_type is not None else cast(str, d["hash_type"])).lower()
        if self._hash_type not in HMAC_HASHES:
            raise ValueError(f"Unsupported signature hash type: {self._hash_type!r}")
        # On by default: the signature then covers the body (replays with another body fail). Servers
        # other than this project's ignore the extra header but not the extra signed line: turn it off there.
        self._sign_body = bool(sign_body) if sign_body is not None else get_env("SIGN_BODY", "yes", clean=bool_env)
        mounts: list[str] = []
        for name in [*(vfolder_mounts or ()), *get_env("VFOLDER_MOUNTS", "", clean=_clean_tokens)]:
            if name not in mounts:
                mounts.append(name)
        self._vfolder_mounts = mounts
        if skip_sslcert_validation is not None:
            self._skip_sslcert_validation = bool(skip_sslcert_validation)
        else:
            self._skip_sslcert_validation = get_env("SKIP_SSLCERT_VALIDATION", "no", clean=bool_env)
        if connection_timeout is not None:
            self._connection_timeout = _clean_timeout(connection_timeout)
        else:
            self._connection_timeout = get_env("CONNECTION_TIMEOUT", d["connection_timeout"], clean=_clean_timeout)
        if read_timeout is not None:
            self._read_timeout = _clean_timeout(read_timeout)
        else:
            self._read_timeout = get_env("READ_TIMEOUT", d["read_timeout"], clean=_clean_timeout)
        self._announcement_handler = announcement_handler

    @property
    def is_anonymous(self) -> bool:
        """True when the access key is the empty string: requests are sent unsigned."""
        return self._access_key == ""

    @property
    def endpoint(self) -> httpx.URL:
        """The currently active endpoint (an ``httpx.URL``); changes on fail-over."""
        return self._endpoints[0]

    @property
    def endpoints(self) -> Sequence[httpx.URL]:
        """All configured endpoints."""
        return self._endpoints

    def rotate_endpoints(self) -> None:
        """Make the next endpoint the active one (used on connection failures)."""
        if len(self._endpoints) > 1:
            self._endpoints.append(self._endpoints.pop(0))

    def load_balance_endpoints(self) -> None:
        """Hook for client-side load balancing; endpoints are shuffled once at construction."""

    @property
    def endpoint_type(self) -> str:
        """``"api"`` (keypair-signed requests) or ``"session"`` (a console server)."""
        return self._endpoint_type

    @property
    def domain(self) -> str:
        """The domain name sent as ``X-BackendAI-Domain`` and used for new sessions."""
        return self._domain

    @property
    def group(self) -> str:
        """The group (project) name used for new sessions."""
        return self._group

    @property
    def storage_proxy_address_map(self) -> Mapping[str, str]:
        """Overrides of storage proxy addresses (``BACKEND_OVERRIDE_STORAGE_PROXY``)."""
        return self._storage_proxy_address_map

    @property
    def user_agent(self) -> str:
        """The ``User-Agent`` header value."""
        return self._user_agent

    @property
    def access_key(self) -> str:
        """The API access key."""
        return self._access_key

    @property
    def secret_key(self) -> str:
        """The API secret key."""
        return self._secret_key

    @property
    def version(self) -> str:
        """The configured (maximum) API version, e.g. ``"v6.20220615"``."""
        return self._version

    @property
    def hash_type(self) -> str:
        """The HMAC hash of request signatures."""
        return self._hash_type

    @property
    def vfolder_mounts(self) -> Sequence[str]:
        """Virtual folders mounted on every ``get_or_create()``."""
        return self._vfolder_mounts

    @property
    def skip_sslcert_validation(self) -> bool:
        """Whether TLS certificates of the endpoint are not verified."""
        return self._skip_sslcert_validation

    @property
    def sign_body(self) -> bool:
        """Whether requests carry the body's SHA-256 in the signed ``X-BackendAI-Body-SHA256`` header."""
        return self._sign_body

    @property
    def connection_timeout(self) -> float:
        """Seconds allowed to open a TCP connection."""
        return self._connection_timeout

    @property
    def read_timeout(self) -> float:
        """Seconds allowed to wait for response data; ``0`` means no limit."""
        return self._read_timeout

    @property
    def announcement_handler(self) -> Callable[[str], None] | None:
        """A callback that displays server-side announcements, if any."""
        return self._announcement_handler


_config: APIConfig | None = None


def get_config() -> APIConfig:
    """Return the process-wide config, creating it from the environment on first use."""
    global _config
    if _config is None:
        _config = APIConfig()
    return _config


def set_config(conf: APIConfig | None) -> None:
    """Set (or with ``None``, reset) the process-wide config."""
    global _config
    _config = conf
