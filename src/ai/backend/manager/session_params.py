"""Parsing and validation of the ``POST /session`` body, with every documented wire alias."""

from __future__ import annotations

import re
from collections.abc import Callable
from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta
from typing import Any

from dateutil.parser import isoparse

from ai.backend.common.problems import InvalidAPIParameters
from ai.backend.common.types import ResourceSlot, SlotTypeError

from .mount_paths import parse_mounts

NAME_RE = re.compile(r"^[A-Za-z0-9](?:[\w.-]{2,62})[A-Za-z0-9]$")
SESSION_TYPES = ("interactive", "batch")
CLUSTER_MODES = {"single-node": "single-node", "single_node": "single-node", "multi-node": "multi-node",
                 "multi_node": "multi-node"}


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


_DURATION_UNITS = {"w": 604800, "week": 604800, "weeks": 604800, "d": 86400, "day": 86400, "days": 86400,
                   "h": 3600, "hr": 3600, "hrs": 3600, "hour": 3600, "hours": 3600,
                   "m": 60, "min": 60, "mins": 60, "minute": 60, "minutes": 60,
                   "s": 1, "sec": 1, "secs": 1, "second": 1, "seconds": 1}
_DURATION_PART = re.compile(r"(\d+(?:\.\d+)?)\s*([a-z]+)")
MAX_START_DELAY = timedelta(days=366)


def parse_starts_at(value: str, now: datetime | None = None) -> datetime:
    """An ISO 8601 time (UTC when it has no offset) or, as upstream, a delay from now: ``30m``, ``1h``,
    ``+1d2h``, ``90s``, ``1 hour`` (at most a year ahead)."""
    text = value.strip()
    try:
        sa = isoparse(text)
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
            f"'starts_at' must be an ISO 8601 datetime or a delay such as '30m', '1h' or '1d2h', got {value!r}.")
    if seconds > MAX_START_DELAY.total_seconds():
        raise InvalidAPIParameters(f"'starts_at' may be at most {MAX_START_DELAY.days} days ahead, got {value!r}.")
    return (now or datetime.now(UTC)) + timedelta(seconds=seconds)


def check_session_name(name: Any) -> str:
    """``name`` if it is a valid session name, else a 400 saying what a name may be."""
    name = _str("name", name, max_len=64)
    if not NAME_RE.match(name) or name == "from-template":
        raise InvalidAPIParameters(
            f"Invalid session name {name!r}: use 4–64 letters, digits, '-', '_' or '.', "
            "starting and ending with a letter or digit."
        )
    return name


def parse_create_params(body: Any) -> CreateParams:
    """Validate a creation body, raising a 400 problem that names the offending field."""
    if not isinstance(body, dict):
        raise InvalidAPIParameters("The request body must be a JSON object.")
    image = _pick(body, "image", "lang")
    if image is None:
        raise InvalidAPIParameters("'image' is required (e.g. \"python\" or \"python:3.11-debian12\").")
    image = _str("image", image, max_len=256).strip()
    if not image:
        raise InvalidAPIParameters("'image' must not be empty.")
    name = _pick(body, "name", "session_name", "clientSessionToken", "sessId")
    if name is not None:
        name = check_session_name(name)
    p = CreateParams(image=image, name=name)
    stype = _pick(body, "type", "sessionType", "session_type", default="interactive")
    if not isinstance(stype, str) or stype.lower() not in SESSION_TYPES:
        raise InvalidAPIParameters(f"'type' must be one of {', '.join(SESSION_TYPES)}, got {stype!r}.")
    p.session_type = stype.lower()
    p.group = _str("group", _pick(body, "group", "groupName", "group_name", default="default"), max_len=64)
    p.domain = _str("domain", _pick(body, "domain", "domainName", "domain_name", default="default"), max_len=64)
    p.enqueue_only = parse_bool_value("enqueueOnly", _pick(body, "enqueueOnly", "enqueue_only", default=False))
    p.reuse = parse_bool_value("reuseIfExists", _pick(body, "reuseIfExists", "reuse_if_exists", default=True))
    max_wait = _pick(body, "maxWaitSeconds", "max_wait_seconds", default=0)
    if isinstance(max_wait, bool) or not isinstance(max_wait, int | float) or max_wait < 0:
        raise InvalidAPIParameters(f"'maxWaitSeconds' must be a non-negative number, got {max_wait!r}.")
    p.max_wait = float(max_wait)
    tag = _pick(body, "tag")
    p.tag = None if tag is None else _str("tag", tag, max_len=64)
    starts_at = _pick(body, "starts_at", "startsAt")
    if starts_at is not None:
        p.starts_at = parse_starts_at(_str("starts_at", starts_at, max_len=64))
    sc = _pick(body, "startupCommand", "startup_command")
    p.startup_command = None if sc is None else _str("startupCommand", sc, max_len=65536)
    bs = _pick(body, "bootstrap_script", "bootstrapScript")
    p.bootstrap_script = None if bs is None else _str("bootstrap_script", bs, max_len=65536)
    if p.session_type == "batch" and not (p.startup_command or "").strip():
        raise InvalidAPIParameters("A batch session needs a 'startupCommand' (the command of its task).")
    bt = _pick(body, "batchTimeout", "batch_timeout")
    if bt is not None:
        if isinstance(bt, bool) or not isinstance(bt, int | float) or bt <= 0:
            raise InvalidAPIParameters(f"'batchTimeout' must be a positive number of seconds, got {bt!r}.")
        p.batch_timeout = float(bt)
    oak = _pick(body, "owner_access_key", "ownerAccessKey")
    p.owner_access_key = None if oak is None else _str("owner_access_key", oak, max_len=20)
    config = _pick(body, "config", default={})
    if not isinstance(config, dict):
        raise InvalidAPIParameters("'config' must be an object.")
    cluster_size = _pick(body, "cluster_size", "clusterSize", default=_pick(config, "clusterSize", default=1))
    if isinstance(cluster_size, bool) or not isinstance(cluster_size, int) or cluster_size < 1:
        raise InvalidAPIParameters(f"'clusterSize' must be an integer ≥ 1, got {cluster_size!r}.")
    p.cluster_size = cluster_size
    mode = _pick(body, "cluster_mode", "clusterMode", default="single-node")
    if not isinstance(mode, str) or mode.lower() not in CLUSTER_MODES:
        raise InvalidAPIParameters(f"'clusterMode' must be single-node or multi-node, got {mode!r}.")
    p.cluster_mode = CLUSTER_MODES[mode.lower()]
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
    if not isinstance(environ, dict) or not all(
        isinstance(k, str) and isinstance(v, str) for k, v in environ.items()
    ):
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
    return p
