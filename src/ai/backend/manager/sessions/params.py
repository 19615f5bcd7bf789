"""Parsing and validation of the ``POST /session`` body, with every documented wire alias."""

from __future__ import annotations

import re
from collections.abc import Callable
from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta
from typing import Annotated, Any, TypeVar, cast

from dateutil.parser import isoparse
from pydantic import (
    AliasChoices,
    BaseModel,
    ConfigDict,
    Field,
    PrivateAttr,
    ValidationInfo,
    WithJsonSchema,
    field_validator,
    model_validator,
)

from ai.backend.common.problems import InvalidAPIParameters
from ai.backend.common.service_ports import preopen_service_ports
from ai.backend.common.types import ResourceSlot, SlotTypeError

from ..api.bodies import RequestModel, validate_body
from .mount_paths import parse_mounts

NAME_RE = re.compile(r"^[A-Za-z0-9](?:[\w.-]{2,62})[A-Za-z0-9]$")
SESSION_TYPES = ("interactive", "batch")
CLUSTER_MODES = {
    "single-node": "single-node",
    "single_node": "single-node",
    "multi-node": "multi-node",
    "multi_node": "multi-node",
}


#: Preopen ports one session may ask for (upstream's webserver default).
MAX_PREOPEN_PORTS = 10


@dataclass
class CreateParams:
    """A validated session creation request."""

    image: str
    name: str | None
    session_type: str = "interactive"
    group: str = "default"
    domain: str = "default"
    enqueue_only: bool = False
    max_wait: float = 0
    reuse: bool = True
    tag: str | None = None
    starts_at: datetime | None = None
    startup_command: str | None = None
    bootstrap_script: str | None = None
    batch_timeout: float | None = None
    cluster_size: int = 1
    cluster_mode: str = "single-node"
    owner_access_key: str | None = None
    resources: ResourceSlot = field(default_factory=ResourceSlot)
    environ: dict[str, str] = field(default_factory=dict)
    mounts: list[str] = field(default_factory=list)
    mount_paths: dict[str, str] = field(default_factory=dict)  # folder name -> absolute container path
    mount_perms: dict[str, str] = field(default_factory=dict)  # folder name -> ro/rw/wd asked for
    scaling_group: str | None = None
    resource_opts: dict[str, Any] = field(default_factory=dict)
    preopen_ports: list[int] = field(default_factory=list)


def _pick(body: dict[str, Any], *names: str, default: Any = None) -> Any:
    for n in names:
        if n in body and body[n] is not None:
            return body[n]
    return default


def parse_bool_value(name: str, value: Any) -> bool:
    """A boolean parameter as JSON or query strings give it (``true``/``false``, ``1``/``0``, ``yes``/``no``)."""
    if isinstance(value, bool):
        return value
    if isinstance(value, str) and value.lower() in ("true", "false", "1", "0", "yes", "no"):
        return value.lower() in ("true", "1", "yes")
    if isinstance(value, int) and value in (0, 1):
        return bool(value)
    raise InvalidAPIParameters(f"'{name}' must be a boolean, got {value!r}.")


def _str(name: str, value: Any, *, max_len: int = 4096) -> str:
    if not isinstance(value, str):
        raise InvalidAPIParameters(f"'{name}' must be a string, got {type(value).__name__}.")
    if len(value) > max_len:
        raise InvalidAPIParameters(f"'{name}' is longer than {max_len} characters.")
    return value


_DURATION_UNITS = {
    "w": 604800,
    "week": 604800,
    "weeks": 604800,
    "d": 86400,
    "day": 86400,
    "days": 86400,
    "h": 3600,
    "hr": 3600,
    "hrs": 3600,
    "hour": 3600,
    "hours": 3600,
    "m": 60,
    "min": 60,
    "mins": 60,
    "minute": 60,
    "minutes": 60,
    "s": 1,
    "sec": 1,
    "secs": 1,
    "second": 1,
    "seconds": 1,
}
_DURATION_PART = re.compile(r"(\d+(?:\.\d+)?)\s*([a-z]+)")
MAX_START_DELAY = timedelta(days=366)


def parse_starts_at(value: str, now: datetime | None = None) -> datetime:
    """An ISO 8601 time (UTC when it has no offset) or, as upstream, a delay from now: ``30m``, ``1h``,
    ``+1d2h``, ``90s``, ``1 hour`` (at most a year ahead)."""
    text = value.strip()
    try:
        sa: datetime = isoparse(text)
    except ValueError:
        pass
    else:
        return sa if sa.tzinfo else sa.replace(tzinfo=UTC)
    rel = text.lower().removeprefix("+").strip()
    seconds: float | None = None
    if rel and re.fullmatch(r"(?:\d+(?:\.\d+)?\s*[a-z]+\s*)+", rel):
        parts = _DURATION_PART.findall(rel)
        if all(unit in _DURATION_UNITS for _, unit in parts):
            seconds = sum(float(n) * _DURATION_UNITS[unit] for n, unit in parts)
    if seconds is None:
        raise InvalidAPIParameters(
            f"'starts_at' must be an ISO 8601 datetime or a delay such as '30m', '1h' or '1d2h', got {value!r}."
        )
    if seconds > MAX_START_DELAY.total_seconds():
        raise InvalidAPIParameters(f"'starts_at' may be at most {MAX_START_DELAY.days} days ahead, got {value!r}.")
    return (now or datetime.now(UTC)) + timedelta(seconds=seconds)


def check_session_name(name: Any) -> str:
    """``name`` if it is a valid session name, else a 400 saying what a name may be."""
    checked = _str("name", name, max_len=64)
    if not NAME_RE.match(checked) or checked == "from-template":
        raise InvalidAPIParameters(
            f"Invalid session name {checked!r}: use 4–64 letters, digits, '-', '_' or '.', "
            "starting and ending with a letter or digit."
        )
    return checked


class SessionConfig(BaseModel):
    """The ``config`` object of a creation request (documentation only: it is checked by
    :class:`CreateSessionBody` in the order the fields depend on each other)."""

    model_config = ConfigDict(extra="allow")
    resources: dict[str, str | int | float] = Field(
        default_factory=dict, description='Slot name to amount, e.g. {"cpu": 1, "mem": "1g"}.'
    )
    instanceMemory: int | None = Field(None, description="Legacy: memory in MiB (when resources lacks mem).")
    instanceCores: int | None = Field(None, description="Legacy: CPU cores (when resources lacks cpu).")
    clusterSize: int | None = Field(None, ge=1, description="Kernels of the session (the top-level field wins).")
    environ: dict[str, str] = Field(default_factory=dict)
    mounts: list[str] = Field(default_factory=list, description="Names of virtual folders to mount.")
    mount_map: dict[str, str] = Field(
        default_factory=dict,
        description="Folder name to path in the container.",
        validation_alias=AliasChoices("mount_map", "mountMap"),
    )
    mount_options: dict[str, Any] = Field(default_factory=dict, description='Folder name to {"permission": ...}.')
    scalingGroup: str | None = Field(None, validation_alias=AliasChoices("scalingGroup", "scaling_group"))
    resource_opts: dict[str, Any] = Field(
        default_factory=dict, validation_alias=AliasChoices("resource_opts", "resourceOpts")
    )
    preopen_ports: list[int] = Field(
        default_factory=list,
        description=f"Container ports (1025-65534, at most {MAX_PREOPEN_PORTS}) that the session's own processes "
        "serve; each becomes an app named after its port.",
        validation_alias=AliasChoices("preopen_ports", "preopenPorts"),
    )


def _aliases(*names: str) -> Any:
    return Field(None, validation_alias=AliasChoices(*names))


_F = TypeVar("_F")


def _before(*fields: str) -> Callable[[_F], _F]:
    """A "before" field validator of ``fields`` (typed, unlike pydantic's overloads seen through a wrapper)."""
    return cast(Callable[[_F], _F], field_validator(*fields, mode="before"))


class CreateSessionBody(RequestModel):
    """The ``POST /session`` body with every documented wire alias. Fields are checked in the order below
    (later ones depend on earlier ones); a bad one is a 400 problem that names it."""

    image: str = Field(
        validation_alias=AliasChoices("image", "lang"),
        max_length=256,
        description='The image or an alias, e.g. "python" or "python:3.11-debian12".',
    )
    name: str | None = _aliases("name", "session_name", "clientSessionToken", "sessId")
    type: str = Field(
        "interactive",
        validation_alias=AliasChoices("type", "sessionType", "session_type"),
        json_schema_extra={"enum": [*SESSION_TYPES]},
    )
    group: str = Field("default", validation_alias=AliasChoices("group", "groupName", "group_name"), max_length=64)
    domain: str = Field("default", validation_alias=AliasChoices("domain", "domainName", "domain_name"), max_length=64)
    enqueueOnly: bool = Field(False, validation_alias=AliasChoices("enqueueOnly", "enqueue_only"))
    reuseIfExists: bool = Field(True, validation_alias=AliasChoices("reuseIfExists", "reuse_if_exists"))
    maxWaitSeconds: float = Field(0.0, validation_alias=AliasChoices("maxWaitSeconds", "max_wait_seconds"), ge=0)
    tag: str | None = Field(None, max_length=64)
    starts_at: Annotated[datetime | None, WithJsonSchema({"type": "string"})] = Field(
        None,
        validation_alias=AliasChoices("starts_at", "startsAt"),
        description="An ISO 8601 time or a delay such as 30m, 1h, 1d2h.",
    )
    startupCommand: str | None = Field(
        None, validation_alias=AliasChoices("startupCommand", "startup_command"), max_length=65536
    )
    bootstrap_script: str | None = Field(
        None, validation_alias=AliasChoices("bootstrap_script", "bootstrapScript"), max_length=65536
    )
    batchTimeout: float | None = Field(
        None, validation_alias=AliasChoices("batchTimeout", "batch_timeout"), gt=0, validate_default=True
    )
    owner_access_key: str | None = Field(
        None, validation_alias=AliasChoices("owner_access_key", "ownerAccessKey"), max_length=20
    )
    config: Annotated[dict[str, Any], WithJsonSchema(SessionConfig.model_json_schema(by_alias=True))] = Field(
        default_factory=dict
    )
    cluster_size: int = Field(
        None, validation_alias=AliasChoices("cluster_size", "clusterSize"), ge=1, validate_default=True
    )
    cluster_mode: str = Field(
        "single-node",
        validation_alias=AliasChoices("cluster_mode", "clusterMode"),
        json_schema_extra={"enum": [*sorted(CLUSTER_MODES)]},
    )
    _parsed: CreateParams | None = PrivateAttr(None)  # filled from ``config`` by the model validator

    @model_validator(mode="before")
    @classmethod
    def _require_image(cls, data: Any) -> Any:
        if not isinstance(data, dict):
            raise InvalidAPIParameters("The request body must be a JSON object.")
        if _pick(data, "image", "lang") is None:
            raise InvalidAPIParameters('\'image\' is required (e.g. "python" or "python:3.11-debian12").')
        return data

    @_before("image")
    @classmethod
    def _image(cls, v: Any) -> str:
        image = _str("image", v, max_len=256).strip()
        if not image:
            raise InvalidAPIParameters("'image' must not be empty.")
        return image

    @_before("name")
    @classmethod
    def _name(cls, v: Any) -> str:
        return check_session_name(v)

    @_before("type")
    @classmethod
    def _type(cls, v: Any) -> str:
        if not isinstance(v, str) or v.lower() not in SESSION_TYPES:
            raise InvalidAPIParameters(f"'type' must be one of {', '.join(SESSION_TYPES)}, got {v!r}.")
        return v.lower()

    @_before("group", "domain")
    @classmethod
    def _names(cls, v: Any, info: ValidationInfo) -> str:
        return _str(str(info.field_name), v, max_len=64)

    @_before("enqueueOnly", "reuseIfExists")
    @classmethod
    def _bools(cls, v: Any, info: ValidationInfo) -> bool:
        return parse_bool_value(str(info.field_name), v)

    @_before("maxWaitSeconds")
    @classmethod
    def _max_wait(cls, v: Any) -> float:
        if isinstance(v, bool) or not isinstance(v, int | float) or v < 0:
            raise InvalidAPIParameters(f"'maxWaitSeconds' must be a non-negative number, got {v!r}.")
        return float(v)

    @_before("tag")
    @classmethod
    def _tag(cls, v: Any) -> str:
        return _str("tag", v, max_len=64)

    @_before("starts_at")
    @classmethod
    def _starts_at(cls, v: Any) -> datetime:
        return parse_starts_at(_str("starts_at", v, max_len=64))

    @_before("startupCommand", "bootstrap_script")
    @classmethod
    def _scripts(cls, v: Any, info: ValidationInfo) -> str:
        return _str(str(info.field_name), v, max_len=65536)

    @_before("batchTimeout")
    @classmethod
    def _batch_timeout(cls, v: Any, info: ValidationInfo) -> float | None:
        # Checked here, after the type and the startup command and before the batch timeout, as always.
        if info.data.get("type") == "batch" and not (info.data.get("startupCommand") or "").strip():
            raise InvalidAPIParameters("A batch session needs a 'startupCommand' (the command of its task).")
        if v is None:
            return None
        if isinstance(v, bool) or not isinstance(v, int | float) or v <= 0:
            raise InvalidAPIParameters(f"'batchTimeout' must be a positive number of seconds, got {v!r}.")
        return float(v)

    @_before("owner_access_key")
    @classmethod
    def _owner(cls, v: Any) -> str:
        return _str("owner_access_key", v, max_len=20)

    @_before("config")
    @classmethod
    def _config(cls, v: Any) -> dict[str, Any]:
        if not isinstance(v, dict):
            raise InvalidAPIParameters("'config' must be an object.")
        return v

    @_before("cluster_size")
    @classmethod
    def _cluster_size(cls, v: Any, info: ValidationInfo) -> int:
        if v is None:
            v = _pick(info.data.get("config") or {}, "clusterSize", default=1)
        if isinstance(v, bool) or not isinstance(v, int) or v < 1:
            raise InvalidAPIParameters(f"'clusterSize' must be an integer ≥ 1, got {v!r}.")
        return v

    @_before("cluster_mode")
    @classmethod
    def _cluster_mode(cls, v: Any) -> str:
        if not isinstance(v, str) or v.lower() not in CLUSTER_MODES:
            raise InvalidAPIParameters(f"'clusterMode' must be single-node or multi-node, got {v!r}.")
        return CLUSTER_MODES[v.lower()]

    @model_validator(mode="after")
    def _parse_config(self) -> CreateSessionBody:
        self._parsed = _with_config(self)
        return self

    def to_params(self) -> CreateParams:
        """The validated request as the registry takes it."""
        assert self._parsed is not None
        return self._parsed


def _with_config(b: CreateSessionBody) -> CreateParams:
    """The parameters of ``b``, with the parts of ``config`` that need more than a type checked."""
    p = CreateParams(
        image=b.image,
        name=b.name,
        session_type=b.type,
        group=b.group,
        domain=b.domain,
        enqueue_only=b.enqueueOnly,
        max_wait=b.maxWaitSeconds,
        reuse=b.reuseIfExists,
        tag=b.tag,
        starts_at=b.starts_at,
        startup_command=b.startupCommand,
        bootstrap_script=b.bootstrap_script,
        batch_timeout=b.batchTimeout,
        cluster_size=b.cluster_size,
        cluster_mode=b.cluster_mode,
        owner_access_key=b.owner_access_key,
    )
    config = b.config
    try:
        p.resources = ResourceSlot.from_user_input(_pick(config, "resources", default={}))
    except SlotTypeError as e:
        raise InvalidAPIParameters(f"Malformed 'config.resources': {e}.") from None
    legacy: dict[str, tuple[str, Callable[[Any], str]]] = {
        "instanceMemory": ("mem", lambda v: f"{int(v)}m"),
        "instanceCores": ("cpu", str),
    }
    for key, (slot, conv) in legacy.items():
        if key in config and slot not in p.resources:
            try:
                p.resources = p.resources.filled(ResourceSlot.from_user_input({slot: conv(config[key])}))
            except (SlotTypeError, ValueError, TypeError):
                raise InvalidAPIParameters(f"Malformed 'config.{key}': {config[key]!r}.") from None
    environ = _pick(config, "environ", default={})
    if not isinstance(environ, dict) or not all(isinstance(k, str) and isinstance(v, str) for k, v in environ.items()):
        raise InvalidAPIParameters("'config.environ' must map names to string values.")
    for k in environ:
        if not re.match(r"^[A-Za-z_][A-Za-z0-9_]*$", k):
            raise InvalidAPIParameters(f"Invalid environment variable name {k!r}.")
    p.environ = environ
    p.mounts, p.mount_paths, p.mount_perms = parse_mounts(config)
    sg = _pick(config, "scalingGroup", "scaling_group")
    p.scaling_group = None if sg is None else _str("scalingGroup", sg, max_len=64)
    ro = _pick(config, "resource_opts", "resourceOpts", default={})
    if not isinstance(ro, dict):
        raise InvalidAPIParameters("'config.resource_opts' must be an object.")
    p.resource_opts = ro
    p.preopen_ports = parse_preopen_ports(_pick(config, "preopen_ports", "preopenPorts", default=[]))
    return p


def parse_preopen_ports(value: Any) -> list[int]:
    """``config.preopen_ports``: distinct container ports that are not reserved; a 400 naming the bad one."""
    # The 22.03 CLI sends its --preopen list as strings ("8080,8081" -> ["8080", "8081"]).
    if isinstance(value, list):
        value = [int(v) if isinstance(v, str) and v.strip().isdigit() and len(v) < 6 else v for v in value]
    if not isinstance(value, list) or not all(isinstance(v, int) and not isinstance(v, bool) for v in value):
        raise InvalidAPIParameters("'config.preopen_ports' must be a list of port numbers.")
    if len(value) > MAX_PREOPEN_PORTS:
        raise InvalidAPIParameters(f"'config.preopen_ports' may list at most {MAX_PREOPEN_PORTS} ports.")
    try:
        preopen_service_ports(value)
    except ValueError as e:
        raise InvalidAPIParameters(f"'config.preopen_ports': {e}.") from None
    return list(value)


def parse_create_params(body: Any) -> CreateParams:
    """Validate a creation body, raising a 400 problem that names the offending field."""
    return validate_body(CreateSessionBody, body).to_params()
