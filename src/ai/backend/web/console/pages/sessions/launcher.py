"""The session launcher: what it offers (asked of the manager), the submitted form checked field by field into
the manager's ``POST /session`` body, and its handlers (``GET|POST /sessions/new``)."""

from __future__ import annotations

import asyncio
import math
import re
from collections.abc import Awaitable
from dataclasses import dataclass, field
from typing import Any
from urllib.parse import quote

from aiohttp import web
from multidict import MultiDictProxy

from ai.backend.common.types import BinarySize, SlotTypeError

from ...base import Login, ManagerError, api, form_str, page, read_form, render
from .common import NAME_RE

ENV_NAME_RE = re.compile(r"^[A-Za-z_][A-Za-z0-9_]*$")
MAX_ENV_VARS = 64

LAUNCHER_QUERY = """
{
  images(is_operation: false) { reference name humanized_name tag aliases installed }
  user { groups { id name } }
}
"""


@dataclass
class LauncherChoices:
    """What the launcher offers: images, presets, slot types, folders, projects and scaling groups."""

    images: list[dict[str, Any]] = field(default_factory=list)
    presets: list[dict[str, Any]] = field(default_factory=list)
    slot_types: dict[str, str] = field(default_factory=dict)
    folders: list[dict[str, Any]] = field(default_factory=list)
    groups: list[dict[str, Any]] = field(default_factory=list)
    scaling_groups: list[str] = field(default_factory=list)
    default_image: str = ""
    problems: list[str] = field(default_factory=list)  # what could not be listed, said on the form

    @property
    def accelerators(self) -> dict[str, str]:
        """Slot types other than cpu and mem (GPUs and other devices the cluster has)."""
        return {k: v for k, v in self.slot_types.items() if k not in ("cpu", "mem")}


async def _optional(call: Awaitable[Any], what: str, problems: list[str]) -> Any:
    """The answer of ``call``, or None with a note in ``problems`` when the manager refuses it (the launcher
    still works without presets, folders or resource groups; the manager then picks or refuses)."""
    try:
        return await call
    except ManagerError as e:
        if e.status == 401:
            raise
        problems.append(f"{what} could not be listed ({e.title}).")
        return None


async def _choices(request: web.Request, login: Login) -> LauncherChoices:
    """Everything the launcher offers, asked of the manager at once."""
    from ....server import CONFIG_KEY

    m = api(request, login)
    problems: list[str] = []
    gql, presets, slots, folders, sgroups = await asyncio.gather(
        m.graphql(LAUNCHER_QUERY),
        _optional(m.get("/resource/presets"), "Resource presets", problems),
        _optional(m.get("/config/resource-slots"), "Resource types", problems),
        _optional(m.get("/folders"), "Folders", problems),
        # Most users start sessions in the "default" project; asked now rather than after the groups.
        _optional(m.get("/scaling-groups", group="default"), "Resource groups", problems),
    )
    groups = [g for g in ((gql.get("user") or {}).get("groups")) or [] if isinstance(g, dict) and g.get("name")]
    names = [str(g["name"]) for g in groups]
    if names and "default" not in names:
        problems = [p for p in problems if not p.startswith("Resource groups")]
        sgroups = await _optional(m.get("/scaling-groups", group=names[0]), "Resource groups", problems)
    c = LauncherChoices(
        images=[i for i in gql.get("images") or [] if isinstance(i, dict)],
        presets=[p for p in (presets or {}).get("presets", []) if isinstance(p, dict)],
        slot_types={str(k): str(v) for k, v in (slots or {"cpu": "count", "mem": "bytes"}).items()},
        # Dot-folders are mounted into every session by themselves; folders being deleted or cloned cannot be.
        folders=[
            f
            for f in folders or []
            if isinstance(f, dict) and not str(f.get("name", "")).startswith(".") and f.get("status") == "ready"
        ],
        groups=groups,
        scaling_groups=[str(sg["name"]) for sg in (sgroups or {}).get("scaling_groups", []) if isinstance(sg, dict)],
        problems=problems,
    )
    wanted = request.app[CONFIG_KEY].ui.default_environment
    for img in c.images:
        if wanted == img.get("reference") or wanted in (img.get("aliases") or []):
            c.default_image = str(img["reference"])
            break
    else:
        c.default_image = str(c.images[0]["reference"]) if c.images else ""
    return c


def launcher_defaults(choices: LauncherChoices) -> dict[str, Any]:
    """The values of an empty launcher form (what ``launch_body`` reads)."""
    return {
        "name": "",
        "image": choices.default_image,
        "type": "interactive",
        "startup_command": "",
        "bootstrap_script": "",
        "preset": choices.presets[0]["name"] if choices.presets else "",
        "resource_mode": "preset" if choices.presets else "custom",
        "cpu": "1",
        "mem": "1g",
        "shmem": "",
        "accel": {},
        "mounts": [],
        "environ": "",
        "group": next((g["name"] for g in choices.groups if g.get("name") == "default"), ""),
        "scaling_group": "",
    }


def _form_values(form: MultiDictProxy[Any], choices: LauncherChoices) -> dict[str, Any]:
    """The submitted values as the form shows them again (strings, stripped)."""
    values = launcher_defaults(choices)
    for key in ("name", "image", "type", "preset", "resource_mode", "cpu", "mem", "shmem", "group", "scaling_group"):
        values[key] = form_str(form, key, max_len=256)
    values["startup_command"] = form_str(form, "startup_command", max_len=65536)
    values["bootstrap_script"] = form_str(form, "bootstrap_script", max_len=65536)
    values["environ"] = form_str(form, "environ", max_len=65536)
    values["mounts"] = [str(v) for v in form.getall("mounts", []) if isinstance(v, str)]
    values["accel"] = {k: form_str(form, f"accel.{k}", max_len=32) for k in choices.accelerators}
    return values


class InvalidLaunch(Exception):
    """A launcher field is wrong: which one and why."""

    def __init__(self, field_name: str, message: str) -> None:
        super().__init__(message)
        self.field_name, self.message = field_name, message


def _amount(field_name: str, label: str, raw: str, kind: str) -> str:
    """A resource amount checked as the manager would read it (``count``: a number, ``bytes``: 512m, 4g...)."""
    if kind == "bytes":
        try:
            if BinarySize.parse(raw) <= 0:
                raise SlotTypeError("zero")
        except SlotTypeError:
            raise InvalidLaunch(field_name, f"{label} must be a size such as 512m or 4g, got {raw!r}.") from None
        return raw
    try:
        number = float(raw)
    except ValueError:
        raise InvalidLaunch(field_name, f"{label} must be a number, got {raw!r}.") from None
    if not math.isfinite(number) or number < 0:
        raise InvalidLaunch(field_name, f"{label} must be a positive number, got {raw!r}.")
    return raw


def launch_body(values: dict[str, Any], choices: LauncherChoices) -> dict[str, Any]:
    """The ``POST /session`` body for the submitted launcher ``values``; :class:`InvalidLaunch` when one is wrong."""
    name = values["name"]
    if name and (not NAME_RE.match(name) or name == "from-template"):
        raise InvalidLaunch(
            "name",
            "The session name must be 4–64 letters, digits, '-', '_' or '.', starting and ending with a "
            "letter or digit (or empty for a generated one).",
        )
    image = values["image"]
    known = {str(i.get("reference")) for i in choices.images}
    if not image:
        raise InvalidLaunch("image", "Choose an image.")
    if image not in known:
        raise InvalidLaunch("image", f"The image {image!r} is not one you may use.")
    body: dict[str, Any] = {"image": image, "enqueueOnly": True, "reuseIfExists": False}
    if name:
        body["name"] = name
    if values["type"] not in ("interactive", "batch"):
        raise InvalidLaunch("type", "The session type must be interactive or batch.")
    body["type"] = values["type"]
    if values["type"] == "batch":
        if not values["startup_command"].strip():
            raise InvalidLaunch("startup_command", "A batch session needs a startup command (the task to run).")
        body["startupCommand"] = values["startup_command"]
    if values["bootstrap_script"]:
        body["bootstrap_script"] = values["bootstrap_script"]
    config: dict[str, Any] = {}
    resources: dict[str, str] = {}
    shmem = ""
    if values["resource_mode"] == "preset":
        preset = next((p for p in choices.presets if p.get("name") == values["preset"]), None)
        if preset is None:
            raise InvalidLaunch("preset", f"There is no resource preset {values['preset']!r}.")
        resources = {str(k): str(v) for k, v in (preset.get("resource_slots") or {}).items()}
        if preset.get("shared_memory"):
            shmem = str(preset["shared_memory"])
    elif values["resource_mode"] == "custom":
        resources["cpu"] = _amount("cpu", "CPU", values["cpu"], "count")
        if float(resources["cpu"]) <= 0:
            raise InvalidLaunch("cpu", "CPU must be more than 0.")
        resources["mem"] = _amount("mem", "Memory", values["mem"], "bytes")
        if values["shmem"]:
            shmem = _amount("shmem", "Shared memory", values["shmem"], "bytes")
            if BinarySize.parse(shmem) > BinarySize.parse(resources["mem"]):
                raise InvalidLaunch("shmem", "Shared memory cannot be more than the memory.")
        for slot, kind in choices.accelerators.items():
            raw = values["accel"].get(slot, "")
            if raw and raw != "0":
                resources[slot] = _amount(f"accel.{slot}", slot, raw, kind if kind == "bytes" else "count")
    else:
        raise InvalidLaunch("resource_mode", "Choose a resource preset or custom resources.")
    config["resources"] = resources
    if shmem:
        config["resource_opts"] = {"shmem": shmem}
    folders = {str(f["name"]) for f in choices.folders}
    unknown = [m for m in values["mounts"] if m not in folders]
    if unknown:
        raise InvalidLaunch("mounts", f"You have no folder named {unknown[0]!r}.")
    if values["mounts"]:
        config["mounts"] = list(dict.fromkeys(values["mounts"]))
    environ: dict[str, str] = {}
    for n, line in enumerate(values["environ"].splitlines(), 1):
        if not line.strip() or line.lstrip().startswith("#"):
            continue
        key, sep, val = line.partition("=")
        key = key.strip()
        if not sep or not ENV_NAME_RE.match(key):
            raise InvalidLaunch(
                "environ", f"Environment line {n} must be NAME=value with a name of letters, digits and '_': {line!r}."
            )
        environ[key] = val
    if len(environ) > MAX_ENV_VARS:
        raise InvalidLaunch("environ", f"At most {MAX_ENV_VARS} environment variables.")
    if environ:
        config["environ"] = environ
    if values["scaling_group"]:
        if values["scaling_group"] not in choices.scaling_groups:
            raise InvalidLaunch("scaling_group", f"You may not use the resource group {values['scaling_group']!r}.")
        config["scalingGroup"] = values["scaling_group"]
    if values["group"]:
        if values["group"] not in {str(g.get("name")) for g in choices.groups}:
            raise InvalidLaunch("group", f"You are not a member of the project {values['group']!r}.")
        body["group"] = values["group"]
    body["config"] = config
    return body


def _launcher(
    request: web.Request,
    login: Login,
    choices: LauncherChoices,
    values: dict[str, Any],
    *,
    status: int = 200,
    error: str = "",
    error_field: str = "",
) -> web.Response:
    return render(
        request,
        login,
        "sessions/new.html",
        status=status,
        c=choices,
        v=values,
        error=error,
        error_field=error_field,
    )


@page()
async def launcher(request: web.Request, login: Login) -> web.StreamResponse:
    """``GET /sessions/new``: the launcher form."""
    choices = await _choices(request, login)
    return _launcher(request, login, choices, launcher_defaults(choices))


@page()
async def launch(request: web.Request, login: Login) -> web.StreamResponse:
    """``POST /sessions/new``: check the form, create the session (queued) and go to its page."""
    form = await read_form(request, login)
    choices = await _choices(request, login)
    values = _form_values(form, choices)
    try:
        body = launch_body(values, choices)
    except InvalidLaunch as e:
        return _launcher(request, login, choices, values, status=400, error=e.message, error_field=e.field_name)
    try:
        answer = await api(request, login).post("/session", body)
    except ManagerError as e:
        if e.status >= 500:
            raise
        message = f"The manager refused the session: {e.title}" + (f" — {e.detail}" if e.detail else "")
        return _launcher(request, login, choices, values, status=e.status, error=message)
    sid = str((answer or {}).get("sessionId") or "")
    raise web.HTTPSeeOther(f"/sessions/{quote(sid)}" if sid else "/sessions")
