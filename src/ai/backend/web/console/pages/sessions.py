"""Console pages: the sessions list, the session launcher and a session's page (ADR 0013).

Routes:

* ``GET /sessions``: one page (``?page=``, ``?size=``, at most 100) of the caller's sessions, on the tabs
  ``running`` (not ended) and ``finished``; admins may add ``?scope=all`` for every session they may see.
  One GraphQL request gives the rows and both tab counts. With ``HX-Request`` only the table fragment is
  answered (``sessions.js`` swaps it in when the event stream says a session appeared or ended).
* ``GET /sessions/{id}/row``: one table row (a status change of a listed session).
* ``GET|POST /sessions/new``: the launcher; the POST checks every field here (a 400 re-renders the form
  with the message, nothing is created), then asks the manager (``POST /session``, ``enqueueOnly``) and
  redirects to the new session's page; a refusal of the manager re-renders the form with its message and
  status.
* ``GET /sessions/{id}``: the session's page; ``/live`` (its status, resources, kernels, usage and apps),
  ``/logs`` (the container log) are its fragments, refreshed by ``sessions.js`` on the session's events or
  by their buttons.
* ``POST /sessions/{id}/terminate``, ``POST /sessions/{id}/rename``: forms with the CSRF token.
* ``POST /sessions/{id}/apps/{app}``: starts an app (``start-service``) and answers ``{"url"}`` for the
  browser to open (JSON with the ``X-CSRF-Token`` header).
* ``GET /sessions/{id}/ssh-key``: the session's SSH private key (``/home/work/id_container``) as a file.

A session the caller may not see is the manager's answer (GraphQL ``null``, REST 404): the 404 page.
"""

from __future__ import annotations

import asyncio
import email.parser
import email.policy
import io
import json
import math
import re
import tarfile
import uuid
from collections.abc import Awaitable
from dataclasses import dataclass, field
from typing import Any
from urllib.parse import quote, urlencode, urlsplit

import aiohttp
from aiohttp import web
from multidict import MultiDictProxy
from yarl import URL

from ai.backend.common.auth import sign_request_headers
from ai.backend.common.types import BinarySize, SlotTypeError

from ...proxy import API_VERSION
from ..base import (
    ConsoleError,
    Login,
    ManagerAPI,
    ManagerError,
    api,
    form_str,
    is_fragment_request,
    page,
    read_form,
    read_json,
    render,
)

__all__ = ["register"]

PAGE_SIZE = 50
MAX_PAGE_SIZE = 100  # the manager's GraphQL limit
RUNNING = "PENDING,SCHEDULED,PREPARING,PULLING,RUNNING,RESTARTING,RUNNING_DEGRADED,TERMINATING"
FINISHED = "TERMINATED,CANCELLED,ERROR"
TABS = {"running": (RUNNING, FINISHED), "finished": (FINISHED, RUNNING)}
ENDED = frozenset(FINISHED.split(","))
#: What the session name may be (the manager's rule, checked here too so the form can say so at once).
NAME_RE = re.compile(r"^[A-Za-z0-9](?:[\w.-]{2,62})[A-Za-z0-9]$")
ENV_NAME_RE = re.compile(r"^[A-Za-z_][A-Za-z0-9_]*$")
MAX_ENV_VARS = 64
#: The session's private SSH key, relative to /home/work (ADR 0012).
SSH_KEY_FILE = "id_container"
SSH_KEY_MAX = 64 * 1024

SESSION_FIELDS = """
  id name type image status status_info status_data status_changed created_at terminated_at starts_at
  occupied_slots requested_slots access_key user_email group_name scaling_group
"""
#: What a row of the list shows (fewer fields: the page of 50 is resolved field by field).
ROW_FIELDS = """
  id name image status status_info status_data created_at occupied_slots requested_slots access_key user_email
"""
LIST_QUERY = f"""
query($limit: Int!, $offset: Int!, $status: String!, $other: String!, $ak: String) {{
  page: compute_session_list(limit: $limit, offset: $offset, status: $status, access_key: $ak) {{
    total_count items {{ {ROW_FIELDS} }}
  }}
  other: compute_session_list(limit: 1, offset: 0, status: $other, access_key: $ak) {{ total_count }}
}}
"""
ROW_QUERY = f"query($id: UUID!) {{ compute_session(id: $id) {{ {ROW_FIELDS} }} }}"
DETAIL_QUERY = f"""
query($id: UUID!) {{
  compute_session(id: $id) {{
    {SESSION_FIELDS} startup_command result cluster_mode cluster_size service_ports num_queries
    cpu_used cpu_using mem_cur_bytes mem_max_bytes net_rx_bytes net_tx_bytes io_read_bytes io_write_bytes
    io_cur_scratch_size io_max_scratch_size
    containers {{
      id role idx hostname status status_info created_at terminated_at occupied_slots agent container_id
      exit_code
    }}
  }}
}}
"""
LAUNCHER_QUERY = """
{
  images(is_operation: false) { reference name humanized_name tag aliases installed }
  user { groups { id name } }
}
"""
#: Apps opened in a browser tab through the app proxy (the others are TCP: sshd, vscode-desktop...).
HTTP_PROTOCOLS = frozenset({"http", "preopen"})


# ------------------------------------------------------------------------------------------- helpers


def _json(value: Any) -> Any:
    """A GraphQL ``JSONString`` field decoded (None or an empty string: None)."""
    if isinstance(value, str):
        if not value:
            return None
        try:
            return json.loads(value)
        except ValueError:
            return None
    return value


def session_uuid(ref: str) -> str:
    """``ref`` as a session id; anything else is the 404 page (the console links sessions by id)."""
    try:
        return str(uuid.UUID(ref))
    except ValueError:
        raise ConsoleError(404, "Session not found", f"There is no session {ref!r}.") from None


def status_reason(status: str, info: str | None, data: Any) -> str:
    """Why the session is where it is, in words (empty when nothing needs saying)."""
    info = (info or "").strip()
    data = data if isinstance(data, dict) else {}
    if status == "PENDING":
        sched = data.get("scheduler") if isinstance(data.get("scheduler"), dict) else {}
        why = info or "Waiting for the scheduler to place it."
        retries = sched.get("retries") if sched else None
        if retries:
            why += f" (tried {retries} time{'s' if retries != 1 else ''})"
        return why
    if status == "ERROR":
        error = data.get("error")
        detail = error.get("message") or error.get("detail") if isinstance(error, dict) else error
        if detail and info:
            return f"{info}: {detail}"
        return str(detail or info or "The session failed to start.")
    return info


def session_view(item: dict[str, Any]) -> dict[str, Any]:
    """A GraphQL session as the templates show it."""
    occupied = _json(item.get("occupied_slots")) or {}
    requested = _json(item.get("requested_slots")) or {}
    status = str(item.get("status") or "")
    return {
        **item,
        "status": status,
        "reason": status_reason(status, item.get("status_info"), _json(item.get("status_data"))),
        "slots": occupied or requested,
        "slots_requested": not occupied and bool(requested),
        "ended": status in ENDED,
    }


def owner_params(login: Login, session: dict[str, Any]) -> dict[str, str]:
    """``owner_access_key`` for an admin acting on another user's session (REST calls find sessions per owner)."""
    ak = session.get("access_key")
    return {"owner_access_key": str(ak)} if ak and ak != login.access_key else {}


def _int_param(request: web.Request, name: str, default: int, lo: int, hi: int) -> int:
    raw = request.query.get(name)
    if raw is None or raw == "":
        return default
    try:
        value = int(raw)
    except ValueError:
        raise ConsoleError(400, "Invalid address", f"'{name}' must be a whole number, got {raw!r}.") from None
    if not lo <= value <= hi:
        raise ConsoleError(400, "Invalid address", f"'{name}' must be between {lo} and {hi}, got {value}.")
    return value


def _safe_back(value: str, default: str) -> str:
    """A local path to go back to after a form (never another site)."""
    if not value.startswith("/") or value.startswith("//") or "\\" in value:
        return default
    parts = urlsplit(value)
    return default if parts.scheme or parts.netloc else value


async def load_session(request: web.Request, login: Login, ref: str, query: str = ROW_QUERY) -> dict[str, Any]:
    """The session ``ref`` as the caller may see it; the 404 page when it is not there or not theirs."""
    sid = session_uuid(ref)
    data = await api(request, login).graphql(query, {"id": sid})
    found = data.get("compute_session")
    if not isinstance(found, dict):
        raise ConsoleError(404, "Session not found", f"Session {sid} does not exist or is not yours.")
    return found


# ------------------------------------------------------------------------------------------ the list


@dataclass
class ListState:
    """Which page of which tab, for whom (the links of the page keep it)."""

    tab: str = "running"
    scope: str = "mine"
    page: int = 1
    size: int = PAGE_SIZE

    def url(self, **changes: Any) -> str:
        """This list's address with ``changes`` (defaults left out, so the plain list is ``/sessions``)."""
        values = {"tab": self.tab, "scope": self.scope, "page": self.page, "size": self.size, **changes}
        defaults = {"tab": "running", "scope": "mine", "page": 1, "size": PAGE_SIZE}
        query = {k: v for k, v in values.items() if v != defaults[k]}
        return "/sessions" + (f"?{urlencode(query)}" if query else "")


def _list_state(request: web.Request, login: Login) -> ListState:
    tab = request.query.get("tab") or "running"
    if tab not in TABS:
        raise ConsoleError(400, "Invalid address", f"'tab' must be running or finished, got {tab!r}.")
    scope = request.query.get("scope") or "mine"
    if scope not in ("mine", "all"):
        raise ConsoleError(400, "Invalid address", f"'scope' must be mine or all, got {scope!r}.")
    if scope == "all" and not login.is_admin:
        raise ConsoleError(403, "Administrators only", "Only administrators may list every user's sessions.")
    return ListState(
        tab=tab,
        scope=scope,
        page=_int_param(request, "page", 1, 1, 1_000_000),
        size=_int_param(request, "size", PAGE_SIZE, 1, MAX_PAGE_SIZE),
    )


def _page_links(current: int, pages: int) -> list[int | None]:
    """Page numbers to link: the first, the last and two around the current one (None: a gap)."""
    wanted = sorted({1, pages, *range(max(1, current - 2), min(pages, current + 2) + 1)})
    out: list[int | None] = []
    for n in wanted:
        if out and isinstance(out[-1], int) and n - out[-1] > 1:
            out.append(None)
        out.append(n)
    return out


@page()
async def sessions(request: web.Request, login: Login) -> web.StreamResponse:
    """``GET /sessions``: the list (or, for htmx, its table fragment)."""
    state = _list_state(request, login)
    statuses, other = TABS[state.tab]
    variables = {
        "limit": state.size,
        "offset": (state.page - 1) * state.size,
        "status": statuses,
        "other": other,
        # A plain user sees only their own sessions anyway; an admin's "mine" needs the filter.
        "ak": login.access_key if state.scope == "mine" else None,
    }
    data = await api(request, login).graphql(LIST_QUERY, variables)
    page_data = data.get("page") or {}
    total = int(page_data.get("total_count") or 0)
    other_total = int((data.get("other") or {}).get("total_count") or 0)
    pages = max(1, math.ceil(total / state.size))
    rows = [session_view(item) for item in page_data.get("items") or []]
    counts = {state.tab: total, next(t for t in TABS if t != state.tab): other_total}
    context: dict[str, Any] = {
        "rows": rows,
        "state": state,
        "total": total,
        "counts": counts,
        "pages": pages,
        "page_links": _page_links(min(state.page, pages), pages),
        "first_index": (state.page - 1) * state.size + 1 if rows else 0,
        "last_index": (state.page - 1) * state.size + len(rows),
        "back": state.url(),
    }
    template = "sessions/_table.html" if is_fragment_request(request) else "sessions/list.html"
    return render(request, login, template, **context)


@page()
async def session_row(request: web.Request, login: Login) -> web.StreamResponse:
    """``GET /sessions/{id}/row``: one row of the table (``?scope=all`` adds the owner column)."""
    found = await load_session(request, login, request.match_info["id"])
    scope = "all" if request.query.get("scope") == "all" and login.is_admin else "mine"
    back = _safe_back(request.query.get("back", ""), "/sessions")
    return render(request, login, "sessions/_row.html", s=session_view(found), state=ListState(scope=scope), back=back)


# -------------------------------------------------------------------------------------- the launcher


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
    from ...server import CONFIG_KEY

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


def _launcher_defaults(choices: LauncherChoices) -> dict[str, Any]:
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
    values = _launcher_defaults(choices)
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
    return _launcher(request, login, choices, _launcher_defaults(choices))


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


# ---------------------------------------------------------------------------------------- the detail


def _apps(item: dict[str, Any]) -> list[dict[str, Any]]:
    """The session's apps (service ports) as the page lists them: name, protocol, whether a browser opens it."""
    out = []
    for app in _json(item.get("service_ports")) or []:
        if not isinstance(app, dict) or not app.get("name"):
            continue
        protocol = str(app.get("protocol") or "tcp")
        out.append({"name": str(app["name"]), "protocol": protocol, "browser": protocol in HTTP_PROTOCOLS})
    return sorted(out, key=lambda a: a["name"])


def _usage(item: dict[str, Any]) -> list[tuple[str, str]]:
    """The main kernel's latest stats as (label, value) rows."""
    from ..filters import duration, human_bytes

    def n(key: str) -> int:
        try:
            return int(item.get(key) or 0)
        except (TypeError, ValueError):
            return 0

    rows = [
        ("CPU time", f"{n('cpu_used') / 1000:.1f}s" if n("cpu_used") < 60_000 else duration(n("cpu_used") / 1000)),
        ("Average CPU use", f"{float(item.get('cpu_using') or 0):.1f} % of one core"),
        ("Memory now", human_bytes(n("mem_cur_bytes"))),
        ("Memory peak", human_bytes(n("mem_max_bytes"))),
        ("Network received / sent", f"{human_bytes(n('net_rx_bytes'))} / {human_bytes(n('net_tx_bytes'))}"),
        ("Disk read / written", f"{human_bytes(n('io_read_bytes'))} / {human_bytes(n('io_write_bytes'))}"),
    ]
    if n("io_max_scratch_size"):
        rows.append(
            ("Scratch disk", f"{human_bytes(n('io_cur_scratch_size'))} of {human_bytes(n('io_max_scratch_size'))}")
        )
    return rows


async def _detail_context(request: web.Request, login: Login) -> dict[str, Any]:
    found = await load_session(request, login, request.match_info["id"], DETAIL_QUERY)
    s = session_view(found)
    history: dict[str, Any] = {}
    try:
        answer = await api(request, login).call(
            "GET", f"/session/{s['id']}/status-history", params=owner_params(login, s) or None
        )
        history = (answer or {}).get("result") or {}
    except ManagerError:
        history = {}  # the page shows what it has; the times are extras
    kernels = []
    for k in found.get("containers") or []:
        kernels.append({**k, "slots": _json(k.get("occupied_slots")) or {}})
    return {
        "s": s,
        "history": history,
        "started_at": history.get("RUNNING"),
        "kernels": kernels,
        "apps": _apps(found),
        "usage": _usage(found),
        "own": s.get("access_key") == login.access_key,
    }


@page()
async def detail(request: web.Request, login: Login) -> web.StreamResponse:
    """``GET /sessions/{id}``: the session's page."""
    return render(request, login, "sessions/detail.html", **await _detail_context(request, login))


@page()
async def detail_live(request: web.Request, login: Login) -> web.StreamResponse:
    """``GET /sessions/{id}/live``: the live part of the session's page (status, resources, usage, apps)."""
    return render(request, login, "sessions/_live.html", **await _detail_context(request, login))


@page()
async def logs(request: web.Request, login: Login) -> web.StreamResponse:
    """``GET /sessions/{id}/logs``: the container's log as a fragment."""
    s = await load_session(request, login, request.match_info["id"])
    try:
        answer = await api(request, login).call(
            "GET", f"/session/{s['id']}/logs", params=owner_params(login, s) or None
        )
        text = str(((answer or {}).get("result") or {}).get("logs") or "")
        problem = ""
    except ManagerError as e:
        if e.status >= 500 and e.status != 502:
            raise
        text, problem = "", f"{e.title}" + (f": {e.detail}" if e.detail else "")
    return render(request, login, "sessions/_logs.html", logs=text, problem=problem, s=s)


@page()
async def terminate(request: web.Request, login: Login) -> web.StreamResponse:
    """``POST /sessions/{id}/terminate``: end the session (a queued one is cancelled), then go back."""
    form = await read_form(request, login)
    s = await load_session(request, login, request.match_info["id"])
    await api(request, login).call("DELETE", f"/session/{s['id']}", params=owner_params(login, s) or None)
    raise web.HTTPSeeOther(_safe_back(form_str(form, "back"), f"/sessions/{s['id']}"))


@page()
async def rename(request: web.Request, login: Login) -> web.StreamResponse:
    """``POST /sessions/{id}/rename``: give an active session a new name."""
    form = await read_form(request, login)
    s = await load_session(request, login, request.match_info["id"])
    name = form_str(form, "name", required=True, max_len=64)
    if not NAME_RE.match(name) or name == "from-template":
        raise ConsoleError(
            400,
            "Invalid session name",
            f"{name!r}: use 4–64 letters, digits, '-', '_' or '.', starting and ending with a letter or digit.",
        )
    params = owner_params(login, s)
    await api(request, login).call("POST", f"/session/{s['id']}/rename", {"name": name}, params=params or None)
    raise web.HTTPSeeOther(f"/sessions/{s['id']}")


@page()
async def open_app(request: web.Request, login: Login) -> web.StreamResponse:
    """``POST /sessions/{id}/apps/{app}``: start the app and answer ``{"url"}`` (the app proxy's one-use link)."""
    await read_json(request, login)
    s = await load_session(request, login, request.match_info["id"])
    app = request.match_info["app"]
    params = owner_params(login, s)
    try:
        answer = await api(request, login).call(
            "POST", f"/session/{s['id']}/start-service", {"app": app}, params=params or None, timeout=120
        )
    except ManagerError as e:
        status = e.status if 400 <= e.status < 500 else 502
        return web.json_response({"title": e.title, "detail": e.detail}, status=status)
    url = str((answer or {}).get("url") or "")
    if not url.startswith(("http://", "https://")):
        return web.json_response(
            {"title": "No app link", "detail": "The manager answered no app proxy link."}, status=502
        )
    return web.json_response({"url": url})


async def _raw_get(m: ManagerAPI, path: str, params: dict[str, str]) -> tuple[int, str, bytes]:
    """A signed ``GET`` whose answer is kept as bytes (ManagerAPI decodes text), e.g. a file download."""
    endpoint = m.upstream.endpoints[0]
    parts = urlsplit(endpoint)
    path_with_query = parts.path.rstrip("/") + path + ("?" + urlencode(params) if params else "")
    headers = sign_request_headers(
        method="GET",
        path_with_query=path_with_query,
        host=parts.netloc,
        content_type="application/json",
        version=API_VERSION,
        access_key=m.login.access_key,
        secret_key=m.login.secret_key,
        body=b"",
        sign_body=False,
    )
    url = URL(f"{parts.scheme}://{parts.netloc}{path_with_query}", encoded=True)
    try:
        async with m.upstream.client.get(url, headers=headers, timeout=aiohttp.ClientTimeout(total=60)) as resp:
            return resp.status, resp.headers.get("Content-Type", ""), await resp.read()
    except (aiohttp.ClientError, TimeoutError) as e:
        raise ManagerError(502, "The manager cannot be reached", str(e) or type(e).__name__) from None


def _file_from_download(content_type: str, body: bytes, name: str) -> bytes | None:
    """The file ``name`` out of the manager's download answer (multipart of tar archives, or one tar)."""
    archives: list[bytes] = []
    if content_type.startswith("multipart/"):
        msg = email.parser.BytesParser(policy=email.policy.default).parsebytes(
            b"Content-Type: " + content_type.encode("latin-1") + b"\r\n\r\n" + body
        )
        for part in msg.iter_parts():
            payload = part.get_payload(decode=True)
            if isinstance(payload, bytes):
                archives.append(payload)
    else:
        archives.append(body)
    for archive in archives:
        try:
            with tarfile.open(fileobj=io.BytesIO(archive)) as tar:
                for member in tar.getmembers():
                    if member.isfile() and member.name.rsplit("/", 1)[-1] == name and member.size <= SSH_KEY_MAX:
                        extracted = tar.extractfile(member)
                        if extracted is not None:
                            return extracted.read()
        except tarfile.TarError:
            continue
    return None


@page()
async def ssh_key(request: web.Request, login: Login) -> web.StreamResponse:
    """``GET /sessions/{id}/ssh-key``: the session's SSH private key as a download (its owner's key)."""
    s = await load_session(request, login, request.match_info["id"])
    if s.get("status") != "RUNNING":
        raise ConsoleError(409, "Session not running", "The SSH key can be downloaded while the session runs.")
    m = api(request, login)
    status, content_type, body = await _raw_get(
        m, f"/session/{s['id']}/download", {"files": SSH_KEY_FILE, **owner_params(login, s)}
    )
    if status >= 400:
        try:
            doc = json.loads(body)
        except ValueError:
            doc = {}
        doc = doc if isinstance(doc, dict) else {}
        code = status if status < 500 else 502
        raise ConsoleError(code, str(doc.get("title") or "Download refused"), str(doc.get("detail") or ""))
    key = _file_from_download(content_type, body, SSH_KEY_FILE)
    if key is None:
        raise ConsoleError(404, "No SSH key", "The session has no SSH key (its image may not offer sshd).")
    return web.Response(
        body=key,
        content_type="application/octet-stream",
        headers={
            "Content-Disposition": f'attachment; filename="{SSH_KEY_FILE}"',
            "Cache-Control": "no-store",
        },
    )


def register(app: web.Application) -> None:
    """Add this area's routes to ``app`` (the fixed paths before ``/sessions/{id}``)."""
    app.router.add_get("/sessions", sessions)
    app.router.add_get("/sessions/new", launcher)
    app.router.add_post("/sessions/new", launch)
    app.router.add_get("/sessions/{id}", detail)
    app.router.add_get("/sessions/{id}/row", session_row)
    app.router.add_get("/sessions/{id}/live", detail_live)
    app.router.add_get("/sessions/{id}/logs", logs)
    app.router.add_get("/sessions/{id}/ssh-key", ssh_key)
    app.router.add_post("/sessions/{id}/terminate", terminate)
    app.router.add_post("/sessions/{id}/rename", rename)
    app.router.add_post("/sessions/{id}/apps/{app}", open_app)
