"""Console pages: administration under ``/admin`` (users, keypairs, projects, domains, resource policies,
resource presets, agents, images and scaling groups), for domain admins and superadmins only.

Every route is ``@page(admin=True)``: anyone else gets the 403 page, forms included. Beyond that the
manager decides: its GraphQL API (``/admin/gql``, called as the logged-in admin) lets superadmins change
everything and domain admins read their domain's users and keypairs and manage its projects; what it
refuses is shown with its message and 4xx status.

Forms are plain HTML forms posted to the console (``read_form`` checks the CSRF token). A change that
works redirects (303) to a page that names it; bad input renders the form again, filled in, with the
reason and a 4xx status, and changes nothing (the console checks what it can before calling the
manager, and each manager mutation is one transaction). Destructive buttons ask for confirmation
(``data-confirm``, handled by ``static/js/admin.js``). A new keypair's secret key is shown once, on the
answer to the form that created it, and never listed.
"""

from __future__ import annotations

import json
import math
import re
import uuid
from collections.abc import Iterable, Mapping
from dataclasses import dataclass
from typing import Any, NoReturn
from urllib.parse import quote, urlencode

from aiohttp import web
from multidict import MultiDictProxy

from ai.backend.common.types import BinarySize, ResourceSlot, SlotTypeError

from ..base import ConsoleError, Login, ManagerError, api, page, read_form, render

__all__ = ["SECTIONS", "register"]

PAGE_SIZE = 20
ROLES = ("user", "admin", "superadmin", "monitor")
USER_STATUSES = ("active", "inactive", "before-verification", "deleted")
#: The scheduler orders and agent-selection strategies the manager implements (it checks them again).
SCHEDULERS = ("fifo", "lifo", "drf")
STRATEGIES = ("dispersed", "concentrated")
STRATEGY_KEY = "agent_selection_strategy"
DEFAULT_FOR_UNSPECIFIED = ("UNLIMITED", "LIMITED")
#: The same e-mail rule as the manager's (so the console's message comes first, not a different verdict).
EMAIL_RE = re.compile(r"^[^@\s]+@[^@\s]+$")
SLUG_RE = re.compile(r"^[A-Za-z0-9](?:[A-Za-z0-9._-]*[A-Za-z0-9])?$")
MIN_PASSWORD = 8
#: At most this many e-mail addresses are added to a project in one form.
MAX_NEW_MEMBERS = 20


@dataclass(frozen=True)
class Section:
    """One entry of the admin sub-navigation."""

    key: str
    path: str
    label: str
    superadmin_only: bool = False


SECTIONS: tuple[Section, ...] = (
    Section("overview", "/admin", "Overview"),
    Section("users", "/admin/users", "Users"),
    Section("keypairs", "/admin/keypairs", "Keypairs"),
    Section("projects", "/admin/projects", "Projects"),
    Section("domains", "/admin/domains", "Domains"),
    Section("policies", "/admin/policies", "Resource policies"),
    Section("presets", "/admin/presets", "Resource presets"),
    Section("agents", "/admin/agents", "Agents", superadmin_only=True),
    Section("images", "/admin/images", "Images"),
    Section("scaling-groups", "/admin/scaling-groups", "Scaling groups", superadmin_only=True),
)

#: What a redirect after a change may say (``?done=<key>&name=<what>``); anything else says nothing.
NOTICES = {
    "created": "{name} was created.",
    "updated": "{name} was saved.",
    "deleted": "{name} was deleted.",
    "deactivated": "{name} was deactivated.",
    "activated": "{name} was activated.",
    "aliased": "The alias {name} was added.",
    "dealiased": "The alias {name} was removed.",
    "associated": "Association added: {name}.",
    "disassociated": "Association removed: {name}.",
    "members": "The members of {name} were updated.",
    "rescan": "An image rescan was started ({name}).",
    "forgotten": "The image {name} was forgotten.",
}


# ------------------------------------------------------------------------------------------- helpers


def _notice(request: web.Request) -> str:
    template = NOTICES.get(request.query.get("done", ""))
    if template is None:
        return ""
    return template.format(name=request.query.get("name", "")[:200] or "It")


def _done(path: str, done: str, name: str, **extra: str) -> NoReturn:
    """Redirect (303) after a change, to ``path`` saying what was done."""
    params = {**{k: v for k, v in extra.items() if v}, "done": done, "name": name}
    raise web.HTTPSeeOther(f"{path}?{urlencode(params)}")


def _sections(login: Login) -> list[Section]:
    return [s for s in SECTIONS if login.is_superadmin or not s.superadmin_only]


def _render(
    request: web.Request, login: Login, template: str, section: str, *, status: int = 200, **context: Any
) -> web.Response:
    """An admin page: ``template`` with the sub-navigation, the notice of a redirect and ``context``."""
    context.setdefault("error", "")
    return render(
        request,
        login,
        template,
        status=status,
        sections=_sections(login),
        section=section,
        superadmin=login.is_superadmin,
        notice=_notice(request),
        **context,
    )


def _problem(e: Exception) -> tuple[int, str]:
    """The 4xx status and message of refused input (the console's or the manager's); others propagate."""
    if isinstance(e, ConsoleError):
        return e.status, e.detail or e.title
    if isinstance(e, ManagerError) and 400 <= e.status < 500:
        return e.status, e.detail or e.title
    raise e


async def _gql(request: web.Request, login: Login, doc: str, variables: dict[str, Any] | None = None) -> dict[str, Any]:
    return await api(request, login).graphql(doc, variables)


async def _mutate(
    request: web.Request, login: Login, doc: str, variables: dict[str, Any], field: str
) -> dict[str, Any]:
    """Run a mutation; its payload, or a 400 with the manager's message when it answers ``ok: false``."""
    data = await _gql(request, login, doc, variables)
    payload = data.get(field) or {}
    if not payload.get("ok", False):
        raise ConsoleError(400, "Refused", str(payload.get("msg") or "The manager refused the change."))
    return dict(payload)


def _json(value: Any) -> Any:
    """A ``JSONString`` field's value (the manager sends it as JSON text)."""
    if isinstance(value, str):
        try:
            return json.loads(value)
        except ValueError:
            return {}
    return value if value is not None else {}


def _values(form: MultiDictProxy[Any]) -> dict[str, str]:
    """The form's text fields (the last value of each), to fill the form in again."""
    return {k: v for k, v in form.items() if isinstance(v, str) and k != "_csrf"}


def _text(form: Mapping[str, Any], name: str, label: str, *, required: bool = False, max_len: int = 512) -> str:
    value = form.get(name, "")
    value = value.strip() if isinstance(value, str) else ""
    if required and not value:
        raise ConsoleError(400, "Invalid form", f"{label} is required.")
    if len(value) > max_len:
        raise ConsoleError(400, "Invalid form", f"{label} must be at most {max_len} characters.")
    return value


def _checked(form: Mapping[str, Any], name: str) -> bool:
    return form.get(name) in ("on", "true", "1", "yes")


def _choice(form: Mapping[str, Any], name: str, label: str, choices: Iterable[str]) -> str:
    value = _text(form, name, label, required=True)
    options = list(choices)
    if value not in options:
        raise ConsoleError(400, "Invalid form", f"{label} must be one of {', '.join(options)}.")
    return value


def _count(form: Mapping[str, Any], name: str, label: str, *, minimum: int = 0, default: int | None = None) -> int:
    raw = _text(form, name, label, required=default is None, max_len=20)
    if not raw and default is not None:
        return default
    try:
        n = int(raw)
    except ValueError:
        raise ConsoleError(400, "Invalid form", f"{label} must be a whole number, not {raw!r}.") from None
    if n < minimum:
        raise ConsoleError(400, "Invalid form", f"{label} must be at least {minimum}.")
    if n > 2**53 - 1:
        raise ConsoleError(400, "Invalid form", f"{label} is too large.")
    return n


def _size(form: Mapping[str, Any], name: str, label: str, *, default: int = 0) -> int:
    raw = _text(form, name, label, max_len=32)
    if not raw:
        return default
    try:
        n = int(BinarySize.parse(raw))
    except SlotTypeError:
        raise ConsoleError(
            400, "Invalid form", f"{label}: {raw!r} is not a size (e.g. 512m, 10g, 1073741824)."
        ) from None
    if n > 2**53 - 1:
        raise ConsoleError(400, "Invalid form", f"{label} is too large.")
    return n


def _names(form: Mapping[str, Any], name: str, label: str) -> list[str]:
    """A comma- or space-separated list of names."""
    raw = _text(form, name, label, max_len=4096)
    return [part for part in re.split(r"[\s,]+", raw) if part]


def _slug(form: Mapping[str, Any], name: str, label: str, max_len: int = 64) -> str:
    value = _text(form, name, label, required=True, max_len=max_len)
    if not SLUG_RE.match(value):
        raise ConsoleError(
            400,
            "Invalid form",
            f"{label} {value!r} is not valid: use letters, digits, '-', '_' or '.', starting and ending with a "
            "letter or digit.",
        )
    return value


def _email(form: Mapping[str, Any], name: str = "email") -> str:
    value = _text(form, name, "E-mail", required=True, max_len=64)
    if not EMAIL_RE.match(value):
        raise ConsoleError(400, "Invalid form", f"{value!r} is not a valid e-mail address.")
    return value


def _filter_literal(text: str) -> str:
    """``text`` as a double-quoted string of the manager's filter language (non-ASCII as ``\\u`` escapes:
    the manager decodes the literal with ``unicode_escape``)."""
    out = []
    for ch in text:
        code = ord(ch)
        if ch in '\\"':
            out.append("\\" + ch)
        elif 0x20 <= code < 0x7F:
            out.append(ch)
        elif code <= 0xFFFF:
            out.append(f"\\u{code:04x}")
        else:
            out.append(f"\\U{code:08x}")
    return '"' + "".join(out) + '"'


def _search_filter(q: str, fields: Iterable[str]) -> str | None:
    """A filter matching ``q`` anywhere in any of ``fields`` (case-insensitive)."""
    if not q:
        return None
    literal = _filter_literal(f"%{q}%")
    return " | ".join(f"{f} ilike {literal}" for f in fields)


def _page_number(request: web.Request) -> int:
    try:
        n = int(request.query.get("page", "1"))
    except ValueError:
        return 1
    return min(max(n, 1), 100_000)


def _pager(request: web.Request, page_no: int, total: int) -> dict[str, Any]:
    """Links to the previous and next page (keeping the other query parameters)."""
    pages = max(1, math.ceil(total / PAGE_SIZE))
    keep = {k: v for k, v in request.query.items() if k not in ("page", "done", "name")}

    def link(n: int) -> str:
        return request.path + "?" + urlencode({**keep, "page": str(n)})

    return {
        "page": page_no,
        "pages": pages,
        "total": total,
        "prev": link(page_no - 1) if page_no > 1 else "",
        "next": link(page_no + 1) if page_no < pages else "",
    }


# ---------------------------------------------------------------------------------- resource slots


async def _slot_types(request: web.Request, login: Login) -> dict[str, str]:
    """The cluster's slot types and their kinds (``count`` or ``bytes``)."""
    answer = await api(request, login).get("/config/resource-slots")
    return {str(k): str(v) for k, v in (answer or {}).items()} if isinstance(answer, dict) else {}


def _slot_fields(
    types: Mapping[str, str], current: Mapping[str, Any], form: Mapping[str, str] | None
) -> list[dict[str, str]]:
    """The slot inputs of a form: one per known slot type (and per slot the record already has)."""
    names = list(types) + [k for k in current if k not in types]
    out = []
    for name in names:
        kind = types.get(name, "bytes" if name.endswith(".mem") else "count")
        if form is not None:
            value = form.get(f"slot.{name}", "")
        else:
            raw = current.get(name)
            value = "" if raw is None else str(raw)
            if raw is not None and kind == "bytes" and str(raw).isdigit():
                value = str(BinarySize(int(str(raw))))
        out.append({"name": name, "kind": kind, "value": value})
    return out


def _slots(form: Mapping[str, Any], types: Mapping[str, str], *, allow_infinite: bool = True) -> dict[str, str]:
    """The ``slot.<name>`` inputs as resource slots (empty inputs left out), or a 400 naming the bad one."""
    raw: dict[str, str] = {}
    for key, value in form.items():
        if isinstance(key, str) and key.startswith("slot.") and isinstance(value, str) and value.strip():
            raw[key[5:]] = value.strip()
    try:
        slots = ResourceSlot.from_user_input(raw).to_json()
    except SlotTypeError as e:
        raise ConsoleError(400, "Invalid form", f"Resource slots: {e}.") from None
    if not allow_infinite:
        infinite = [k for k, v in slots.items() if v == "Infinity"]
        if infinite:
            raise ConsoleError(400, "Invalid form", f"Resource slots must be finite: {', '.join(infinite)}.")
    return slots


def _slot_order(keys: Iterable[str]) -> list[str]:
    """cpu, mem, then the other slots (accelerators) by name."""
    found = set(keys)
    head = [k for k in ("cpu", "mem") if k in found]
    return head + sorted(found - set(head))


# ------------------------------------------------------------------------------------------ overview


@page(admin=True)
async def overview(request: web.Request, login: Login) -> web.StreamResponse:
    """``GET /admin``: counts of what there is, with links."""
    parts = [
        'users: user_list(limit: 1, offset: 0, status: "active,inactive,before-verification") { total_count }',
        'inactive_users: user_list(limit: 1, offset: 0, status: "inactive") { total_count }',
        "keypairs: keypair_list(limit: 1, offset: 0) { total_count }",
        "groups { id is_active }",
        "keypair_resource_policies { name }",
        "resource_presets { name }",
        "images { reference installed }",
    ]
    if login.is_superadmin:
        parts += ["domains { name is_active }", "agents { id status }", "scaling_groups { name is_active }"]
    data = await _gql(request, login, "query { " + " ".join(parts) + " }")
    cards: list[dict[str, Any]] = [
        {
            "label": "Users",
            "count": data["users"]["total_count"],
            "detail": f"{data['inactive_users']['total_count']} inactive",
            "path": "/admin/users",
        },
        {"label": "Keypairs", "count": data["keypairs"]["total_count"], "detail": "", "path": "/admin/keypairs"},
        {
            "label": "Projects",
            "count": len(data["groups"]),
            "detail": f"{sum(1 for g in data['groups'] if g['is_active'])} active",
            "path": "/admin/projects",
        },
    ]
    if login.is_superadmin:
        cards.append(
            {
                "label": "Domains",
                "count": len(data["domains"]),
                "detail": f"{sum(1 for d in data['domains'] if d['is_active'])} active",
                "path": "/admin/domains",
            }
        )
    cards += [
        {
            "label": "Resource policies",
            "count": len(data["keypair_resource_policies"]),
            "detail": "",
            "path": "/admin/policies",
        },
        {"label": "Resource presets", "count": len(data["resource_presets"]), "detail": "", "path": "/admin/presets"},
    ]
    if login.is_superadmin:
        agents = data["agents"]
        cards.append(
            {
                "label": "Agents",
                "count": sum(1 for a in agents if a["status"] == "ALIVE"),
                "detail": f"alive, {sum(1 for a in agents if a['status'] != 'ALIVE')} not",
                "path": "/admin/agents",
            }
        )
    cards.append(
        {
            "label": "Images",
            "count": len(data["images"]),
            "detail": f"{sum(1 for i in data['images'] if i['installed'])} installed",
            "path": "/admin/images",
        }
    )
    if login.is_superadmin:
        cards.append(
            {
                "label": "Scaling groups",
                "count": len(data["scaling_groups"]),
                "detail": f"{sum(1 for s in data['scaling_groups'] if s['is_active'])} active",
                "path": "/admin/scaling-groups",
            }
        )
    return _render(request, login, "admin/overview.html", "overview", cards=cards)


# --------------------------------------------------------------------------------------------- users

USER_FIELDS = (
    "id email username full_name description role status status_info domain_name need_password_change "
    "created_at groups { id name }"
)
USER_STATUS_FILTERS = {
    "": "active,inactive,before-verification",
    "active": "active",
    "inactive": "inactive",
    "before-verification": "before-verification",
    "deleted": "deleted",
    "all": "active,inactive,before-verification,deleted",
}


@page(admin=True)
async def users(request: web.Request, login: Login) -> web.StreamResponse:
    """``GET /admin/users?q=&status=&page=``: users, searched and paginated."""
    return await _users_page(request, login)


async def _users_page(request: web.Request, login: Login, *, error: str = "", status: int = 200) -> web.Response:
    q = request.query.get("q", "").strip()[:100]
    state = request.query.get("status", "")
    if state not in USER_STATUS_FILTERS:
        state = ""
    page_no = _page_number(request)
    data = await _gql(
        request,
        login,
        """query($limit: Int!, $offset: Int!, $filter: String, $status: String) {
          user_list(limit: $limit, offset: $offset, filter: $filter, status: $status, order: "email") {
            total_count items { """
        + USER_FIELDS
        + " } } }",
        {
            "limit": PAGE_SIZE,
            "offset": (page_no - 1) * PAGE_SIZE,
            "filter": _search_filter(q, ("email", "username", "full_name")),
            "status": USER_STATUS_FILTERS[state],
        },
    )
    listing = data["user_list"]
    return _render(
        request,
        login,
        "admin/users.html",
        "users",
        status=status,
        error=error,
        rows=listing["items"],
        q=q,
        state=state,
        states=list(USER_STATUS_FILTERS),
        pager=_pager(request, page_no, listing["total_count"]),
    )


async def _domains_and_groups(request: web.Request, login: Login) -> tuple[list[str], list[dict[str, Any]]]:
    """The domains the login may pick (all for superadmins, its own otherwise) and the visible projects."""
    if login.is_superadmin:
        data = await _gql(
            request, login, "query { domains { name is_active } groups { id name domain_name is_active } }"
        )
        domains = [d["name"] for d in data["domains"]]
    else:
        data = await _gql(request, login, "query { domain { name } groups { id name domain_name is_active } }")
        domains = [data["domain"]["name"]] if data.get("domain") else []
    return domains, data["groups"]


@page(admin=True)
async def user_new(request: web.Request, login: Login) -> web.StreamResponse:
    """``GET /admin/users/new``: the form for a new user."""
    return await _user_new_page(request, login, {"role": "user", "status": "active", "domain": "default"}, None)


async def _user_new_page(
    request: web.Request,
    login: Login,
    form: Mapping[str, str],
    selected: list[str] | None,
    *,
    error: str = "",
    status: int = 200,
) -> web.Response:
    domains, groups = await _domains_and_groups(request, login)
    if selected is None:  # a new form: the domain's default project, as the manager's fixtures have it
        selected = [g["id"] for g in groups if g["name"] == "default" and g["domain_name"] == form.get("domain")]
    return _render(
        request,
        login,
        "admin/user_new.html",
        "users",
        status=status,
        error=error,
        form=form,
        selected=selected,
        domains=domains,
        groups=groups,
        roles=ROLES,
        statuses=USER_STATUSES[:3],
    )


@page(admin=True)
async def user_create(request: web.Request, login: Login) -> web.StreamResponse:
    """``POST /admin/users``: create a user (and its main keypair)."""
    form = await read_form(request, login)
    values = _values(form)
    chosen = [g for g in form.getall("group_ids", []) if isinstance(g, str)]
    try:
        email = _email(values)
        password = values.get("password", "")
        if len(password) < MIN_PASSWORD:
            raise ConsoleError(400, "Invalid form", f"The password must have at least {MIN_PASSWORD} characters.")
        props = {
            "username": _text(values, "username", "User name", max_len=64) or None,
            "password": password,
            "need_password_change": _checked(values, "need_password_change"),
            "full_name": _text(values, "full_name", "Full name", max_len=64) or None,
            "description": _text(values, "description", "Description", max_len=500) or None,
            "role": _choice(values, "role", "Role", ROLES),
            "status": _choice(values, "status", "Status", USER_STATUSES[:3]),
            "domain_name": _text(values, "domain", "Domain", required=True, max_len=64),
            "group_ids": chosen,
        }
        await _mutate(
            request,
            login,
            "mutation($email: String!, $props: UserInput!) { create_user(email: $email, props: $props) { ok msg } }",
            {"email": email, "props": props},
            "create_user",
        )
    except (ConsoleError, ManagerError) as e:
        code, message = _problem(e)
        values.pop("password", None)  # never sent back to the browser
        return await _user_new_page(request, login, values, chosen, error=message, status=code)
    _done("/admin/users", "created", f"User {email}", q=email)


async def _load_user(request: web.Request, login: Login, uid: str) -> dict[str, Any]:
    try:
        uuid.UUID(uid)
    except ValueError:
        raise ConsoleError(404, "No such user", f"{uid!r} is not a user id.") from None
    data = await _gql(
        request,
        login,
        "query($id: String) { user_from_uuid(user_id: $id) { " + USER_FIELDS + " } }",
        {"id": uid},
    )
    user = data.get("user_from_uuid")
    if not user:
        raise ConsoleError(404, "No such user", f"There is no user with id {uid}.")
    return dict(user)


@page(admin=True)
async def user_detail(request: web.Request, login: Login) -> web.StreamResponse:
    """``GET /admin/users/{uid}``: a user's details, the edit form and its keypairs."""
    user = await _load_user(request, login, request.match_info["uid"])
    return await _user_page(request, login, user)


async def _user_page(
    request: web.Request,
    login: Login,
    user: dict[str, Any],
    form: Mapping[str, str] | None = None,
    selected: list[str] | None = None,
    *,
    error: str = "",
    status: int = 200,
) -> web.Response:
    data = await _gql(
        request,
        login,
        """query($email: String, $domain: String) {
          keypairs(email: $email) { access_key is_active is_admin is_main resource_policy created_at last_used }
          groups(domain_name: $domain) { id name is_active }
        }""",
        {"email": user["email"], "domain": user["domain_name"]},
    )
    if form is None:
        form = {
            "username": user["username"] or "",
            "full_name": user["full_name"] or "",
            "description": user["description"] or "",
            "role": user["role"],
            "status": user["status"],
            "need_password_change": "on" if user["need_password_change"] else "",
        }
    return _render(
        request,
        login,
        "admin/user_detail.html",
        "users",
        status=status,
        error=error,
        user=user,
        form=form,
        selected=selected if selected is not None else [g["id"] for g in user["groups"]],
        keypairs=data["keypairs"],
        groups=data["groups"],
        roles=ROLES,
        statuses=USER_STATUSES,
    )


@page(admin=True)
async def user_update(request: web.Request, login: Login) -> web.StreamResponse:
    """``POST /admin/users/{uid}``: change a user's name, role, status, projects or password."""
    form = await read_form(request, login)
    user = await _load_user(request, login, request.match_info["uid"])
    values = _values(form)
    chosen = [g for g in form.getall("group_ids", []) if isinstance(g, str)]
    try:
        props: dict[str, Any] = {
            "username": _text(values, "username", "User name", required=True, max_len=64),
            "full_name": _text(values, "full_name", "Full name", max_len=64),
            "description": _text(values, "description", "Description", max_len=500),
            "role": _choice(values, "role", "Role", ROLES),
            "status": _choice(values, "status", "Status", USER_STATUSES),
            "need_password_change": _checked(values, "need_password_change"),
            "group_ids": chosen,
        }
        password = values.get("password", "")
        if password:
            if len(password) < MIN_PASSWORD:
                raise ConsoleError(
                    400, "Invalid form", f"The new password must have at least {MIN_PASSWORD} characters."
                )
            props["password"] = password
        await _mutate(
            request,
            login,
            "mutation($email: String!, $props: ModifyUserInput!) { modify_user(email: $email, props: $props) "
            "{ ok msg } }",
            {"email": user["email"], "props": props},
            "modify_user",
        )
    except (ConsoleError, ManagerError) as e:
        code, message = _problem(e)
        values.pop("password", None)
        return await _user_page(request, login, user, values, chosen, error=message, status=code)
    _done(f"/admin/users/{user['id']}", "updated", f"User {user['email']}")


@page(admin=True)
async def user_set_status(request: web.Request, login: Login) -> web.StreamResponse:
    """``POST /admin/users/{uid}/status``: activate or deactivate a user (buttons of the list)."""
    form = await read_form(request, login)
    user = await _load_user(request, login, request.match_info["uid"])
    try:
        state = _choice(form, "status", "Status", ("active", "inactive"))
        await _mutate(
            request,
            login,
            "mutation($email: String!, $props: ModifyUserInput!) { modify_user(email: $email, props: $props) "
            "{ ok msg } }",
            {"email": user["email"], "props": {"status": state}},
            "modify_user",
        )
    except (ConsoleError, ManagerError) as e:
        code, message = _problem(e)
        return await _users_page(request, login, error=message, status=code)
    _done("/admin/users", "activated" if state == "active" else "deactivated", f"User {user['email']}")


@page(admin=True)
async def user_delete(request: web.Request, login: Login) -> web.StreamResponse:
    """``POST /admin/users/{uid}/delete``: the manager's soft delete (status ``deleted``, keypairs off)."""
    await read_form(request, login)
    user = await _load_user(request, login, request.match_info["uid"])
    try:
        await _mutate(
            request,
            login,
            "mutation($email: String!) { delete_user(email: $email) { ok msg } }",
            {"email": user["email"]},
            "delete_user",
        )
    except (ConsoleError, ManagerError) as e:
        code, message = _problem(e)
        return await _user_page(request, login, user, error=message, status=code)
    _done("/admin/users", "deleted", f"User {user['email']}")


# ------------------------------------------------------------------------------------------ keypairs

KEYPAIR_FIELDS = (
    "access_key user_id is_active is_admin is_main resource_policy rate_limit num_queries concurrency_used "
    "concurrency_limit created_at last_used domain_name user_info { full_name }"
)
KEYPAIR_ACTIONS = ("activate", "deactivate", "grant-admin", "revoke-admin", "policy")


@page(admin=True)
async def keypairs(request: web.Request, login: Login) -> web.StreamResponse:
    """``GET /admin/keypairs?q=&active=&page=``: keypairs (never their secret keys), and the create form."""
    return await _keypairs_page(request, login)


async def _keypairs_page(
    request: web.Request,
    login: Login,
    form: Mapping[str, str] | None = None,
    *,
    error: str = "",
    status: int = 200,
) -> web.Response:
    q = request.query.get("q", "").strip()[:100]
    active = request.query.get("active", "")
    page_no = _page_number(request)
    data = await _gql(
        request,
        login,
        """query($limit: Int!, $offset: Int!, $filter: String, $active: Boolean) {
          keypair_list(limit: $limit, offset: $offset, filter: $filter, is_active: $active, order: "-created_at") {
            total_count items { """
        + KEYPAIR_FIELDS
        + """ } }
          keypair_resource_policies { name }
        }""",
        {
            "limit": PAGE_SIZE,
            "offset": (page_no - 1) * PAGE_SIZE,
            "filter": _search_filter(q, ("user_id", "access_key")),
            "active": {"yes": True, "no": False}.get(active),
        },
    )
    listing = data["keypair_list"]
    return _render(
        request,
        login,
        "admin/keypairs.html",
        "keypairs",
        status=status,
        error=error,
        rows=listing["items"],
        policies=[p["name"] for p in data["keypair_resource_policies"]],
        q=q,
        active=active,
        form=form or {"resource_policy": "default", "email": request.query.get("email", "")},
        pager=_pager(request, page_no, listing["total_count"]),
    )


@page(admin=True)
async def keypair_create(request: web.Request, login: Login) -> web.StreamResponse:
    """``POST /admin/keypairs``: a new keypair for a user; the answer shows its secret key, once."""
    form = await read_form(request, login)
    values = _values(form)
    try:
        email = _email(values)
        props = {
            "is_active": True,
            "is_admin": _checked(values, "is_admin"),
            "resource_policy": _text(values, "resource_policy", "Resource policy", required=True, max_len=256),
            "rate_limit": _count(values, "rate_limit", "Rate limit", default=10000),
        }
        payload = await _mutate(
            request,
            login,
            """mutation($email: String!, $props: KeyPairInput!) {
              create_keypair(user_id: $email, props: $props) {
                ok msg keypair { access_key secret_key user_id resource_policy is_admin }
              }
            }""",
            {"email": email, "props": props},
            "create_keypair",
        )
    except (ConsoleError, ManagerError) as e:
        code, message = _problem(e)
        return await _keypairs_page(request, login, values, error=message, status=code)
    # Rendered, not redirected: the secret key must not go into a URL or come back on reload.
    return _render(request, login, "admin/keypair_created.html", "keypairs", status=201, keypair=payload["keypair"])


def _access_key(request: web.Request) -> str:
    ak = request.match_info["ak"]
    if not re.fullmatch(r"[A-Za-z0-9]{1,64}", ak):
        raise ConsoleError(404, "No such keypair", f"{ak!r} is not an access key.")
    return ak


@page(admin=True)
async def keypair_update(request: web.Request, login: Login) -> web.StreamResponse:
    """``POST /admin/keypairs/{ak}``: (de)activate, grant or revoke admin, or change the resource policy."""
    form = await read_form(request, login)
    ak = _access_key(request)
    try:
        action = _choice(form, "action", "Action", KEYPAIR_ACTIONS)
        props: dict[str, Any] = {
            "activate": {"is_active": True},
            "deactivate": {"is_active": False},
            "grant-admin": {"is_admin": True},
            "revoke-admin": {"is_admin": False},
            "policy": {},
        }[action]
        if action == "policy":
            props["resource_policy"] = _text(form, "resource_policy", "Resource policy", required=True, max_len=256)
        await _mutate(
            request,
            login,
            "mutation($ak: String!, $props: ModifyKeyPairInput!) { modify_keypair(access_key: $ak, props: $props) "
            "{ ok msg } }",
            {"ak": ak, "props": props},
            "modify_keypair",
        )
    except (ConsoleError, ManagerError) as e:
        code, message = _problem(e)
        return await _keypairs_page(request, login, error=message, status=code)
    verb = {"activate": "activated", "deactivate": "deactivated"}.get(action, "updated")
    _done("/admin/keypairs", verb, f"Keypair {ak}")


@page(admin=True)
async def keypair_delete(request: web.Request, login: Login) -> web.StreamResponse:
    """``POST /admin/keypairs/{ak}/delete``: delete a keypair that never ran sessions (else deactivate it)."""
    await read_form(request, login)
    ak = _access_key(request)
    try:
        await _mutate(
            request,
            login,
            "mutation($ak: String!) { delete_keypair(access_key: $ak) { ok msg } }",
            {"ak": ak},
            "delete_keypair",
        )
    except (ConsoleError, ManagerError) as e:
        code, message = _problem(e)
        return await _keypairs_page(request, login, error=message, status=code)
    _done("/admin/keypairs", "deleted", f"Keypair {ak}")


# ------------------------------------------------------------------------------------------ projects

GROUP_FIELDS = (
    "id name description is_active domain_name created_at total_resource_slots allowed_vfolder_hosts scaling_groups"
)


def _group_row(g: dict[str, Any]) -> dict[str, Any]:
    return {**g, "total_resource_slots": _json(g.get("total_resource_slots"))}


@page(admin=True)
async def projects(request: web.Request, login: Login) -> web.StreamResponse:
    """``GET /admin/projects?domain=``: projects, and the create form."""
    return await _projects_page(request, login)


async def _projects_page(
    request: web.Request,
    login: Login,
    form: Mapping[str, str] | None = None,
    *,
    error: str = "",
    status: int = 200,
) -> web.Response:
    domain = request.query.get("domain", "").strip()[:64] or None
    domains, _ = await _domains_and_groups(request, login)
    data = await _gql(
        request,
        login,
        "query($domain: String) { groups(domain_name: $domain) { " + GROUP_FIELDS + " } }",
        {"domain": domain},
    )
    types = await _slot_types(request, login)
    return _render(
        request,
        login,
        "admin/projects.html",
        "projects",
        status=status,
        error=error,
        rows=[_group_row(g) for g in data["groups"]],
        domains=domains,
        domain=domain or "",
        form=form or {"domain": domain or (domains[0] if domains else "")},
        slot_fields=_slot_fields(types, {}, form),
    )


@page(admin=True)
async def project_create(request: web.Request, login: Login) -> web.StreamResponse:
    """``POST /admin/projects``: a new project in a domain."""
    form = await read_form(request, login)
    values = _values(form)
    try:
        name = _slug(values, "name", "Project name")
        types = await _slot_types(request, login)
        props = {
            "domain_name": _text(values, "domain", "Domain", required=True, max_len=64),
            "description": _text(values, "description", "Description", max_len=500),
            "is_active": True,
            "total_resource_slots": _slots(values, types),
            "allowed_vfolder_hosts": _names(values, "allowed_vfolder_hosts", "Storage hosts"),
        }
        payload = await _mutate(
            request,
            login,
            "mutation($name: String!, $props: GroupInput!) { create_group(name: $name, props: $props) "
            "{ ok msg group { id } } }",
            {"name": name, "props": props},
            "create_group",
        )
    except (ConsoleError, ManagerError) as e:
        code, message = _problem(e)
        return await _projects_page(request, login, values, error=message, status=code)
    _done(f"/admin/projects/{payload['group']['id']}", "created", f"Project {name}")


async def _load_project(request: web.Request, login: Login) -> dict[str, Any]:
    gid = request.match_info["gid"]
    try:
        uuid.UUID(gid)
    except ValueError:
        raise ConsoleError(404, "No such project", f"{gid!r} is not a project id.") from None
    data = await _gql(request, login, "query($id: UUID!) { group(id: $id) { " + GROUP_FIELDS + " } }", {"id": gid})
    if not data.get("group"):
        raise ConsoleError(404, "No such project", f"There is no project with id {gid}.")
    return _group_row(data["group"])


@page(admin=True)
async def project_detail(request: web.Request, login: Login) -> web.StreamResponse:
    """``GET /admin/projects/{gid}``: the project's edit form and its members."""
    return await _project_page(request, login, await _load_project(request, login))


async def _project_page(
    request: web.Request,
    login: Login,
    group: dict[str, Any],
    form: Mapping[str, str] | None = None,
    *,
    error: str = "",
    status: int = 200,
) -> web.Response:
    data = await _gql(
        request,
        login,
        'query($id: UUID) { users(group_id: $id, status: "active,inactive,before-verification") '
        "{ id email username full_name role status } }",
        {"id": group["id"]},
    )
    types = await _slot_types(request, login)
    if form is None:
        form = {
            "name": group["name"],
            "description": group["description"] or "",
            "is_active": "on" if group["is_active"] else "",
            "allowed_vfolder_hosts": ", ".join(group["allowed_vfolder_hosts"]),
        }
        slot_form = None
    else:
        slot_form = form
    return _render(
        request,
        login,
        "admin/project_detail.html",
        "projects",
        status=status,
        error=error,
        group=group,
        members=data["users"],
        form=form,
        slot_fields=_slot_fields(types, group["total_resource_slots"], slot_form),
    )


@page(admin=True)
async def project_update(request: web.Request, login: Login) -> web.StreamResponse:
    """``POST /admin/projects/{gid}``: change a project's name, description, limits or status."""
    form = await read_form(request, login)
    group = await _load_project(request, login)
    values = _values(form)
    try:
        types = await _slot_types(request, login)
        props = {
            "name": _slug(values, "name", "Project name"),
            "description": _text(values, "description", "Description", max_len=500),
            "is_active": _checked(values, "is_active"),
            "total_resource_slots": _slots(values, types),
            "allowed_vfolder_hosts": _names(values, "allowed_vfolder_hosts", "Storage hosts"),
        }
        await _mutate(
            request,
            login,
            "mutation($gid: UUID!, $props: ModifyGroupInput!) { modify_group(gid: $gid, props: $props) { ok msg } }",
            {"gid": group["id"], "props": props},
            "modify_group",
        )
    except (ConsoleError, ManagerError) as e:
        code, message = _problem(e)
        return await _project_page(request, login, group, values, error=message, status=code)
    _done(f"/admin/projects/{group['id']}", "updated", f"Project {props['name']}")


@page(admin=True)
async def project_members(request: web.Request, login: Login) -> web.StreamResponse:
    """``POST /admin/projects/{gid}/members``: add users (by e-mail) to a project, or remove one."""
    form = await read_form(request, login)
    group = await _load_project(request, login)
    try:
        mode = _choice(form, "mode", "Action", ("add", "remove"))
        if mode == "add":
            emails = _names(form, "emails", "E-mail addresses")
            if not emails:
                raise ConsoleError(400, "Invalid form", "Give the e-mail address of at least one user.")
            if len(emails) > MAX_NEW_MEMBERS:
                raise ConsoleError(400, "Invalid form", f"Add at most {MAX_NEW_MEMBERS} users at once.")
            uuids = await _user_ids(request, login, emails)
        else:
            uid = _text(form, "user", "User", required=True, max_len=64)
            try:
                uuid.UUID(uid)
            except ValueError:
                raise ConsoleError(400, "Invalid form", f"{uid!r} is not a user id.") from None
            uuids = [uid]
        await _mutate(
            request,
            login,
            "mutation($gid: UUID!, $props: ModifyGroupInput!) { modify_group(gid: $gid, props: $props) { ok msg } }",
            {"gid": group["id"], "props": {"user_update_mode": mode, "user_uuids": uuids}},
            "modify_group",
        )
    except (ConsoleError, ManagerError) as e:
        code, message = _problem(e)
        return await _project_page(request, login, group, error=message, status=code)
    _done(f"/admin/projects/{group['id']}", "members", f"project {group['name']}")


async def _user_ids(request: web.Request, login: Login, emails: list[str]) -> list[str]:
    """The user ids of ``emails`` (one query), or a 404 naming the addresses no user has."""
    for e in emails:
        if not EMAIL_RE.match(e) or len(e) > 64:
            raise ConsoleError(400, "Invalid form", f"{e!r} is not a valid e-mail address.")
    decls = ", ".join(f"$e{i}: String" for i in range(len(emails)))
    fields = " ".join(f"u{i}: user(email: $e{i}) {{ id email }}" for i in range(len(emails)))
    data = await _gql(request, login, f"query({decls}) {{ {fields} }}", {f"e{i}": e for i, e in enumerate(emails)})
    missing = [e for i, e in enumerate(emails) if not data.get(f"u{i}")]
    if missing:
        raise ConsoleError(404, "No such user", f"No user has the e-mail address {', '.join(missing)}.")
    return [str(data[f"u{i}"]["id"]) for i in range(len(emails))]


@page(admin=True)
async def project_delete(request: web.Request, login: Login) -> web.StreamResponse:
    """``POST /admin/projects/{gid}/delete``: deactivate a project (the manager keeps its data)."""
    await read_form(request, login)
    group = await _load_project(request, login)
    try:
        await _mutate(
            request,
            login,
            "mutation($gid: UUID!) { delete_group(gid: $gid) { ok msg } }",
            {"gid": group["id"]},
            "delete_group",
        )
    except (ConsoleError, ManagerError) as e:
        code, message = _problem(e)
        return await _project_page(request, login, group, error=message, status=code)
    _done("/admin/projects", "deactivated", f"Project {group['name']}")


# ------------------------------------------------------------------------------------------- domains

DOMAIN_FIELDS = (
    "name description is_active created_at total_resource_slots allowed_vfolder_hosts allowed_docker_registries "
    "scaling_groups"
)


def _domain_row(d: dict[str, Any]) -> dict[str, Any]:
    return {**d, "total_resource_slots": _json(d.get("total_resource_slots"))}


@page(admin=True)
async def domains(request: web.Request, login: Login) -> web.StreamResponse:
    """``GET /admin/domains``: all domains (a domain admin: its own), and the create form."""
    return await _domains_page(request, login)


async def _domains_page(
    request: web.Request,
    login: Login,
    form: Mapping[str, str] | None = None,
    *,
    error: str = "",
    status: int = 200,
) -> web.Response:
    if login.is_superadmin:
        rows = (await _gql(request, login, "query { domains { " + DOMAIN_FIELDS + " } }"))["domains"]
    else:
        own = (await _gql(request, login, "query { domain { " + DOMAIN_FIELDS + " } }")).get("domain")
        rows = [own] if own else []
    types = await _slot_types(request, login)
    return _render(
        request,
        login,
        "admin/domains.html",
        "domains",
        status=status,
        error=error,
        rows=[_domain_row(d) for d in rows],
        form=form or {},
        slot_fields=_slot_fields(types, {}, form),
    )


def _domain_props(values: Mapping[str, str], types: Mapping[str, str]) -> dict[str, Any]:
    return {
        "description": _text(values, "description", "Description", max_len=500),
        "total_resource_slots": _slots(values, types),
        "allowed_vfolder_hosts": _names(values, "allowed_vfolder_hosts", "Storage hosts"),
        "allowed_docker_registries": _names(values, "allowed_docker_registries", "Docker registries"),
    }


@page(admin=True)
async def domain_create(request: web.Request, login: Login) -> web.StreamResponse:
    """``POST /admin/domains``: a new domain (superadmins)."""
    form = await read_form(request, login)
    values = _values(form)
    try:
        name = _slug(values, "name", "Domain name")
        props = {**_domain_props(values, await _slot_types(request, login)), "is_active": True}
        await _mutate(
            request,
            login,
            "mutation($name: String!, $props: DomainInput!) { create_domain(name: $name, props: $props) { ok msg } }",
            {"name": name, "props": props},
            "create_domain",
        )
    except (ConsoleError, ManagerError) as e:
        code, message = _problem(e)
        return await _domains_page(request, login, values, error=message, status=code)
    _done(f"/admin/domains/{quote(name)}", "created", f"Domain {name}")


async def _load_domain(request: web.Request, login: Login) -> dict[str, Any]:
    name = request.match_info["name"]
    data = await _gql(
        request, login, "query($name: String) { domain(name: $name) { " + DOMAIN_FIELDS + " } }", {"name": name}
    )
    if not data.get("domain"):
        raise ConsoleError(404, "No such domain", f"There is no domain named {name!r}.")
    return _domain_row(data["domain"])


@page(admin=True)
async def domain_detail(request: web.Request, login: Login) -> web.StreamResponse:
    """``GET /admin/domains/{name}``: a domain's edit form."""
    return await _domain_page(request, login, await _load_domain(request, login))


async def _domain_page(
    request: web.Request,
    login: Login,
    domain: dict[str, Any],
    form: Mapping[str, str] | None = None,
    *,
    error: str = "",
    status: int = 200,
) -> web.Response:
    types = await _slot_types(request, login)
    slot_form = form
    if form is None:
        form = {
            "name": domain["name"],
            "description": domain["description"] or "",
            "is_active": "on" if domain["is_active"] else "",
            "allowed_vfolder_hosts": ", ".join(domain["allowed_vfolder_hosts"]),
            "allowed_docker_registries": ", ".join(domain["allowed_docker_registries"]),
        }
    return _render(
        request,
        login,
        "admin/domain_detail.html",
        "domains",
        status=status,
        error=error,
        domain=domain,
        form=form,
        slot_fields=_slot_fields(types, domain["total_resource_slots"], slot_form),
    )


@page(admin=True)
async def domain_update(request: web.Request, login: Login) -> web.StreamResponse:
    """``POST /admin/domains/{name}``: rename a domain or change its limits, hosts, registries or status."""
    form = await read_form(request, login)
    domain = await _load_domain(request, login)
    values = _values(form)
    try:
        new_name = _slug(values, "name", "Domain name")
        props = {
            **_domain_props(values, await _slot_types(request, login)),
            "is_active": _checked(values, "is_active"),
        }
        if new_name != domain["name"]:
            props["name"] = new_name
        await _mutate(
            request,
            login,
            "mutation($name: String!, $props: ModifyDomainInput!) { modify_domain(name: $name, props: $props) "
            "{ ok msg } }",
            {"name": domain["name"], "props": props},
            "modify_domain",
        )
    except (ConsoleError, ManagerError) as e:
        code, message = _problem(e)
        return await _domain_page(request, login, domain, values, error=message, status=code)
    _done(f"/admin/domains/{quote(new_name)}", "updated", f"Domain {new_name}")


@page(admin=True)
async def domain_delete(request: web.Request, login: Login) -> web.StreamResponse:
    """``POST /admin/domains/{name}/delete``: deactivate a domain (the manager keeps its data)."""
    await read_form(request, login)
    domain = await _load_domain(request, login)
    try:
        await _mutate(
            request,
            login,
            "mutation($name: String!) { delete_domain(name: $name) { ok msg } }",
            {"name": domain["name"]},
            "delete_domain",
        )
    except (ConsoleError, ManagerError) as e:
        code, message = _problem(e)
        return await _domain_page(request, login, domain, error=message, status=code)
    _done("/admin/domains", "deactivated", f"Domain {domain['name']}")


# ------------------------------------------------------------------------- keypair resource policies

POLICY_FIELDS = (
    "name created_at default_for_unspecified total_resource_slots max_session_lifetime max_concurrent_sessions "
    "max_containers_per_session idle_timeout max_vfolder_count max_vfolder_size allowed_vfolder_hosts"
)
POLICY_DEFAULTS = {
    "default_for_unspecified": "UNLIMITED",
    "max_concurrent_sessions": "30",
    "max_containers_per_session": "1",
    "idle_timeout": "1800",
    "max_session_lifetime": "0",
    "max_vfolder_count": "10",
    "max_vfolder_size": "0",
}


def _policy_row(p: dict[str, Any]) -> dict[str, Any]:
    return {**p, "total_resource_slots": _json(p.get("total_resource_slots"))}


def _policy_props(values: Mapping[str, str], types: Mapping[str, str]) -> dict[str, Any]:
    return {
        "default_for_unspecified": _choice(
            values, "default_for_unspecified", "Unlisted slots", DEFAULT_FOR_UNSPECIFIED
        ),
        "total_resource_slots": _slots(values, types),
        "max_concurrent_sessions": _count(values, "max_concurrent_sessions", "Concurrent sessions"),
        "max_containers_per_session": _count(values, "max_containers_per_session", "Containers per session", minimum=1),
        "idle_timeout": _count(values, "idle_timeout", "Idle timeout"),
        "max_session_lifetime": _count(values, "max_session_lifetime", "Session lifetime", default=0),
        "max_vfolder_count": _count(values, "max_vfolder_count", "Folder count"),
        "max_vfolder_size": _size(values, "max_vfolder_size", "Folder size"),
        "allowed_vfolder_hosts": _names(values, "allowed_vfolder_hosts", "Storage hosts"),
    }


@page(admin=True)
async def policies(request: web.Request, login: Login) -> web.StreamResponse:
    """``GET /admin/policies``: keypair resource policies, and the create form."""
    return await _policies_page(request, login)


async def _policies_page(
    request: web.Request,
    login: Login,
    form: Mapping[str, str] | None = None,
    *,
    error: str = "",
    status: int = 200,
) -> web.Response:
    data = await _gql(request, login, "query { keypair_resource_policies { " + POLICY_FIELDS + " } }")
    types = await _slot_types(request, login)
    return _render(
        request,
        login,
        "admin/policies.html",
        "policies",
        status=status,
        error=error,
        rows=[_policy_row(p) for p in data["keypair_resource_policies"]],
        form=form or POLICY_DEFAULTS,
        slot_fields=_slot_fields(types, {}, form),
        choices=DEFAULT_FOR_UNSPECIFIED,
    )


@page(admin=True)
async def policy_create(request: web.Request, login: Login) -> web.StreamResponse:
    """``POST /admin/policies``: a new keypair resource policy."""
    form = await read_form(request, login)
    values = _values(form)
    try:
        name = _slug(values, "name", "Policy name", 256)
        props = _policy_props(values, await _slot_types(request, login))
        await _mutate(
            request,
            login,
            "mutation($name: String!, $props: CreateKeyPairResourcePolicyInput!) "
            "{ create_keypair_resource_policy(name: $name, props: $props) { ok msg } }",
            {"name": name, "props": props},
            "create_keypair_resource_policy",
        )
    except (ConsoleError, ManagerError) as e:
        code, message = _problem(e)
        return await _policies_page(request, login, values, error=message, status=code)
    _done("/admin/policies", "created", f"Policy {name}")


async def _load_policy(request: web.Request, login: Login) -> dict[str, Any]:
    name = request.match_info["name"]
    data = await _gql(
        request,
        login,
        "query($name: String) { keypair_resource_policy(name: $name) { " + POLICY_FIELDS + " } }",
        {"name": name},
    )
    if not data.get("keypair_resource_policy"):
        raise ConsoleError(404, "No such policy", f"There is no resource policy named {name!r}.")
    return _policy_row(data["keypair_resource_policy"])


@page(admin=True)
async def policy_detail(request: web.Request, login: Login) -> web.StreamResponse:
    """``GET /admin/policies/{name}``: a policy's edit form."""
    return await _policy_page(request, login, await _load_policy(request, login))


async def _policy_page(
    request: web.Request,
    login: Login,
    policy: dict[str, Any],
    form: Mapping[str, str] | None = None,
    *,
    error: str = "",
    status: int = 200,
) -> web.Response:
    types = await _slot_types(request, login)
    slot_form = form
    if form is None:
        form = {k: str(policy[k]) for k in POLICY_DEFAULTS}
        form["max_vfolder_size"] = str(BinarySize(int(policy["max_vfolder_size"] or 0)))
        form["allowed_vfolder_hosts"] = ", ".join(policy["allowed_vfolder_hosts"])
    return _render(
        request,
        login,
        "admin/policy_detail.html",
        "policies",
        status=status,
        error=error,
        policy=policy,
        form=form,
        slot_fields=_slot_fields(types, policy["total_resource_slots"], slot_form),
        choices=DEFAULT_FOR_UNSPECIFIED,
    )


@page(admin=True)
async def policy_update(request: web.Request, login: Login) -> web.StreamResponse:
    """``POST /admin/policies/{name}``: change a policy."""
    form = await read_form(request, login)
    policy = await _load_policy(request, login)
    values = _values(form)
    try:
        props = _policy_props(values, await _slot_types(request, login))
        await _mutate(
            request,
            login,
            "mutation($name: String!, $props: ModifyKeyPairResourcePolicyInput!) "
            "{ modify_keypair_resource_policy(name: $name, props: $props) { ok msg } }",
            {"name": policy["name"], "props": props},
            "modify_keypair_resource_policy",
        )
    except (ConsoleError, ManagerError) as e:
        code, message = _problem(e)
        return await _policy_page(request, login, policy, values, error=message, status=code)
    _done("/admin/policies", "updated", f"Policy {policy['name']}")


@page(admin=True)
async def policy_delete(request: web.Request, login: Login) -> web.StreamResponse:
    """``POST /admin/policies/{name}/delete``: delete a policy no keypair uses."""
    await read_form(request, login)
    policy = await _load_policy(request, login)
    try:
        await _mutate(
            request,
            login,
            "mutation($name: String!) { delete_keypair_resource_policy(name: $name) { ok msg } }",
            {"name": policy["name"]},
            "delete_keypair_resource_policy",
        )
    except (ConsoleError, ManagerError) as e:
        code, message = _problem(e)
        return await _policy_page(request, login, policy, error=message, status=code)
    _done("/admin/policies", "deleted", f"Policy {policy['name']}")


# ----------------------------------------------------------------------------------- resource presets


def _preset_row(p: dict[str, Any]) -> dict[str, Any]:
    return {**p, "resource_slots": _json(p.get("resource_slots"))}


@page(admin=True)
async def presets(request: web.Request, login: Login) -> web.StreamResponse:
    """``GET /admin/presets``: resource presets, and the create form."""
    return await _presets_page(request, login)


async def _presets_page(
    request: web.Request,
    login: Login,
    form: Mapping[str, str] | None = None,
    *,
    error: str = "",
    status: int = 200,
) -> web.Response:
    data = await _gql(request, login, "query { resource_presets { name resource_slots shared_memory } }")
    types = await _slot_types(request, login)
    return _render(
        request,
        login,
        "admin/presets.html",
        "presets",
        status=status,
        error=error,
        rows=[_preset_row(p) for p in data["resource_presets"]],
        form=form or {},
        slot_fields=_slot_fields(types, {}, form),
    )


def _shared_memory(values: Mapping[str, str]) -> str:
    raw = _text(values, "shared_memory", "Shared memory", max_len=32)
    if raw:
        try:
            BinarySize.parse(raw)
        except SlotTypeError:
            raise ConsoleError(400, "Invalid form", f"Shared memory: {raw!r} is not a size (e.g. 64m, 1g).") from None
    return raw


def _preset_slots(values: Mapping[str, str], types: Mapping[str, str]) -> dict[str, str]:
    slots = _slots(values, types, allow_infinite=False)
    if not slots:
        raise ConsoleError(400, "Invalid form", "A preset needs at least one resource amount (e.g. cpu 1, mem 1g).")
    return slots


@page(admin=True)
async def preset_create(request: web.Request, login: Login) -> web.StreamResponse:
    """``POST /admin/presets``: a new resource preset."""
    form = await read_form(request, login)
    values = _values(form)
    try:
        name = _slug(values, "name", "Preset name", 256)
        props = {
            "resource_slots": _preset_slots(values, await _slot_types(request, login)),
            "shared_memory": _shared_memory(values) or None,
        }
        await _mutate(
            request,
            login,
            "mutation($name: String!, $props: CreateResourcePresetInput!) "
            "{ create_resource_preset(name: $name, props: $props) { ok msg } }",
            {"name": name, "props": props},
            "create_resource_preset",
        )
    except (ConsoleError, ManagerError) as e:
        code, message = _problem(e)
        return await _presets_page(request, login, values, error=message, status=code)
    _done("/admin/presets", "created", f"Preset {name}")


async def _load_preset(request: web.Request, login: Login) -> dict[str, Any]:
    name = request.match_info["name"]
    data = await _gql(
        request,
        login,
        "query($name: String!) { resource_preset(name: $name) { name resource_slots shared_memory } }",
        {"name": name},
    )
    if not data.get("resource_preset"):
        raise ConsoleError(404, "No such preset", f"There is no resource preset named {name!r}.")
    return _preset_row(data["resource_preset"])


@page(admin=True)
async def preset_detail(request: web.Request, login: Login) -> web.StreamResponse:
    """``GET /admin/presets/{name}``: a preset's edit form."""
    return await _preset_page(request, login, await _load_preset(request, login))


async def _preset_page(
    request: web.Request,
    login: Login,
    preset: dict[str, Any],
    form: Mapping[str, str] | None = None,
    *,
    error: str = "",
    status: int = 200,
) -> web.Response:
    types = await _slot_types(request, login)
    slot_form = form
    if form is None:
        shm = preset["shared_memory"]
        form = {"shared_memory": "" if shm is None else str(BinarySize(int(shm)))}
    return _render(
        request,
        login,
        "admin/preset_detail.html",
        "presets",
        status=status,
        error=error,
        preset=preset,
        form=form,
        slot_fields=_slot_fields(types, preset["resource_slots"], slot_form),
    )


@page(admin=True)
async def preset_update(request: web.Request, login: Login) -> web.StreamResponse:
    """``POST /admin/presets/{name}``: change a preset's amounts or shared memory."""
    form = await read_form(request, login)
    preset = await _load_preset(request, login)
    values = _values(form)
    try:
        props = {
            "resource_slots": _preset_slots(values, await _slot_types(request, login)),
            "shared_memory": _shared_memory(values),  # "" clears it
        }
        await _mutate(
            request,
            login,
            "mutation($name: String!, $props: ModifyResourcePresetInput!) "
            "{ modify_resource_preset(name: $name, props: $props) { ok msg } }",
            {"name": preset["name"], "props": props},
            "modify_resource_preset",
        )
    except (ConsoleError, ManagerError) as e:
        code, message = _problem(e)
        return await _preset_page(request, login, preset, values, error=message, status=code)
    _done("/admin/presets", "updated", f"Preset {preset['name']}")


@page(admin=True)
async def preset_delete(request: web.Request, login: Login) -> web.StreamResponse:
    """``POST /admin/presets/{name}/delete``: delete a preset."""
    await read_form(request, login)
    preset = await _load_preset(request, login)
    try:
        await _mutate(
            request,
            login,
            "mutation($name: String!) { delete_resource_preset(name: $name) { ok msg } }",
            {"name": preset["name"]},
            "delete_resource_preset",
        )
    except (ConsoleError, ManagerError) as e:
        code, message = _problem(e)
        return await _presets_page(request, login, error=message, status=code)
    _done("/admin/presets", "deleted", f"Preset {preset['name']}")


# -------------------------------------------------------------------------------------------- agents

AGENT_TABS = {"active": "ALIVE,LOST,RESTARTING", "terminated": "TERMINATED"}


@page(admin=True)
async def agents(request: web.Request, login: Login) -> web.StreamResponse:
    """``GET /admin/agents?tab=active|terminated``: agents with their slots, use and state."""
    tab = request.query.get("tab", "active")
    if tab not in AGENT_TABS:
        tab = "active"
    data = await _gql(
        request,
        login,
        """query($status: String) {
          agents(status: $status) {
            id status status_changed region scaling_group schedulable available_slots occupied_slots addr
            architecture first_contact lost_at last_heartbeat version cpu_cur_pct mem_cur_bytes
          }
        }""",
        {"status": AGENT_TABS[tab]},
    )
    rows = []
    keys: set[str] = set()
    for a in data["agents"]:
        avail, occ = _json(a["available_slots"]), _json(a["occupied_slots"])
        keys.update(avail)
        rows.append({**a, "available": avail, "occupied": occ})
    for row in rows:
        row["slots"] = [_slot_use(k, row["occupied"].get(k, "0"), row["available"].get(k)) for k in _slot_order(keys)]
    return _render(request, login, "admin/agents.html", "agents", rows=rows, slot_names=_slot_order(keys), tab=tab)


def _slot_use(name: str, used: Any, capacity: Any) -> dict[str, Any]:
    """One slot of an agent: amounts and the used share (for a ``<meter>``)."""
    try:
        u, c = float(used or 0), float(capacity) if capacity is not None else 0.0
    except (TypeError, ValueError):
        u, c = 0.0, 0.0
    return {"name": name, "used": used or "0", "capacity": capacity, "max": c if c > 0 else 1.0, "value": min(u, c)}


# -------------------------------------------------------------------------------------------- images


@page(admin=True)
async def images(request: web.Request, login: Login) -> web.StreamResponse:
    """``GET /admin/images``: kernel images with their minimum resources and aliases."""
    return await _images_page(request, login)


async def _images_page(
    request: web.Request, login: Login, form: Mapping[str, str] | None = None, *, error: str = "", status: int = 200
) -> web.Response:
    data = await _gql(
        request,
        login,
        """query { images {
          name humanized_name tag registry reference architecture aliases installed size_bytes
          supported_accelerators resource_limits { key min max }
        } }""",
    )
    rows = sorted(data["images"], key=lambda i: (i["name"], i["tag"], i["architecture"]))
    return _render(
        request,
        login,
        "admin/images.html",
        "images",
        status=status,
        error=error,
        rows=rows,
        form=form or {},
        references=sorted({i["reference"] for i in rows}),
    )


@page(admin=True)
async def image_alias(request: web.Request, login: Login) -> web.StreamResponse:
    """``POST /admin/images/alias``: make an alias point to an image."""
    form = await read_form(request, login)
    values = _values(form)
    try:
        alias = _text(values, "alias", "Alias", required=True, max_len=256)
        target = _text(values, "target", "Image", required=True, max_len=512)
        await _mutate(
            request,
            login,
            "mutation($alias: String!, $target: String!) { alias_image(alias: $alias, target: $target) { ok msg } }",
            {"alias": alias, "target": target},
            "alias_image",
        )
    except (ConsoleError, ManagerError) as e:
        code, message = _problem(e)
        return await _images_page(request, login, values, error=message, status=code)
    _done("/admin/images", "aliased", f"{alias} → {target}")


@page(admin=True)
async def image_dealias(request: web.Request, login: Login) -> web.StreamResponse:
    """``POST /admin/images/dealias``: remove an alias."""
    form = await read_form(request, login)
    try:
        alias = _text(form, "alias", "Alias", required=True, max_len=256)
        await _mutate(
            request,
            login,
            "mutation($alias: String!) { dealias_image(alias: $alias) { ok msg } }",
            {"alias": alias},
            "dealias_image",
        )
    except (ConsoleError, ManagerError) as e:
        code, message = _problem(e)
        return await _images_page(request, login, error=message, status=code)
    _done("/admin/images", "dealiased", alias)


@page(admin=True)
async def image_rescan(request: web.Request, login: Login) -> web.StreamResponse:
    """``POST /admin/images/rescan``: re-register the images the agents report (a background task)."""
    await read_form(request, login)
    try:
        payload = await _mutate(request, login, "mutation { rescan_images { ok msg task_id } }", {}, "rescan_images")
    except (ConsoleError, ManagerError) as e:
        code, message = _problem(e)
        return await _images_page(request, login, error=message, status=code)
    _done("/admin/images", "rescan", f"task {payload.get('task_id') or '?'}")


@page(admin=True)
async def image_forget(request: web.Request, login: Login) -> web.StreamResponse:
    """``POST /admin/images/forget``: forget an image no alive agent has any more."""
    form = await read_form(request, login)
    try:
        reference = _text(form, "reference", "Image", required=True, max_len=512)
        await _mutate(
            request,
            login,
            "mutation($ref: String!) { forget_image(reference: $ref) { ok msg } }",
            {"ref": reference},
            "forget_image",
        )
    except (ConsoleError, ManagerError) as e:
        code, message = _problem(e)
        return await _images_page(request, login, error=message, status=code)
    _done("/admin/images", "forgotten", reference)


# ------------------------------------------------------------------------------------ scaling groups

SGROUP_FIELDS = (
    "name description is_active is_public created_at driver scheduler scheduler_opts use_host_network "
    "wsproxy_addr wsproxy_api_token"
)


def _sgroup_row(s: dict[str, Any]) -> dict[str, Any]:
    opts = _json(s.get("scheduler_opts"))
    token = s.pop("wsproxy_api_token", None)  # a credential: the pages only say whether one is set
    return {**s, "scheduler_opts": opts, "strategy": opts.get(STRATEGY_KEY, "dispersed"), "has_token": bool(token)}


@page(admin=True)
async def sgroups(request: web.Request, login: Login) -> web.StreamResponse:
    """``GET /admin/scaling-groups``: scaling groups with their domains, projects and agents."""
    return await _sgroups_page(request, login)


async def _sgroups_page(
    request: web.Request,
    login: Login,
    form: Mapping[str, str] | None = None,
    *,
    error: str = "",
    status: int = 200,
) -> web.Response:
    data = await _gql(
        request,
        login,
        "query { scaling_groups { " + SGROUP_FIELDS + " } domains { name scaling_groups } "
        'groups { id name domain_name scaling_groups } agents(status: "ALIVE") { id scaling_group } }',
    )
    rows = []
    for s in data["scaling_groups"]:
        row = _sgroup_row(dict(s))
        row["domains"] = [d["name"] for d in data["domains"] if s["name"] in d["scaling_groups"]]
        row["projects"] = [g for g in data["groups"] if s["name"] in g["scaling_groups"]]
        row["agents"] = [a["id"] for a in data["agents"] if a["scaling_group"] == s["name"]]
        rows.append(row)
    return _render(
        request,
        login,
        "admin/sgroups.html",
        "scaling-groups",
        status=status,
        error=error,
        rows=rows,
        form=form or {"scheduler": "fifo", "strategy": "dispersed", "is_active": "on", "is_public": "on"},
        schedulers=SCHEDULERS,
        strategies=STRATEGIES,
    )


def _sgroup_props(values: Mapping[str, str], opts: Mapping[str, Any]) -> dict[str, Any]:
    props: dict[str, Any] = {
        "description": _text(values, "description", "Description", max_len=500),
        "scheduler": _choice(values, "scheduler", "Scheduler", SCHEDULERS),
        "scheduler_opts": {**opts, STRATEGY_KEY: _choice(values, "strategy", "Agent selection", STRATEGIES)},
        "is_active": _checked(values, "is_active"),
        "is_public": _checked(values, "is_public"),
        "use_host_network": _checked(values, "use_host_network"),
        "wsproxy_addr": _text(values, "wsproxy_addr", "App proxy address", max_len=1024),
    }
    if props["wsproxy_addr"] and not props["wsproxy_addr"].startswith(("http://", "https://")):
        raise ConsoleError(400, "Invalid form", "The app proxy address must be an http:// or https:// URL.")
    token = _text(values, "wsproxy_api_token", "App proxy token", max_len=256)
    if token:
        props["wsproxy_api_token"] = token
    elif _checked(values, "clear_token"):
        props["wsproxy_api_token"] = ""
    return props


@page(admin=True)
async def sgroup_create(request: web.Request, login: Login) -> web.StreamResponse:
    """``POST /admin/scaling-groups``: a new scaling group (static driver: agents join by heartbeat)."""
    form = await read_form(request, login)
    values = _values(form)
    try:
        name = _slug(values, "name", "Scaling group name")
        props = {**_sgroup_props(values, {}), "driver": "static"}
        if not props["wsproxy_addr"]:
            props["wsproxy_addr"] = None
        await _mutate(
            request,
            login,
            "mutation($name: String!, $props: ScalingGroupInput!) { create_scaling_group(name: $name, props: $props) "
            "{ ok msg } }",
            {"name": name, "props": props},
            "create_scaling_group",
        )
    except (ConsoleError, ManagerError) as e:
        code, message = _problem(e)
        values.pop("wsproxy_api_token", None)
        return await _sgroups_page(request, login, values, error=message, status=code)
    _done(f"/admin/scaling-groups/{quote(name)}", "created", f"Scaling group {name}")


async def _load_sgroup(request: web.Request, login: Login) -> dict[str, Any]:
    name = request.match_info["name"]
    data = await _gql(
        request, login, "query($name: String) { scaling_group(name: $name) { " + SGROUP_FIELDS + " } }", {"name": name}
    )
    if not data.get("scaling_group"):
        raise ConsoleError(404, "No such scaling group", f"There is no scaling group named {name!r}.")
    return _sgroup_row(dict(data["scaling_group"]))


@page(admin=True)
async def sgroup_detail(request: web.Request, login: Login) -> web.StreamResponse:
    """``GET /admin/scaling-groups/{name}``: the edit form and the domain and project associations."""
    return await _sgroup_page(request, login, await _load_sgroup(request, login))


async def _sgroup_page(
    request: web.Request,
    login: Login,
    sgroup: dict[str, Any],
    form: Mapping[str, str] | None = None,
    *,
    error: str = "",
    status: int = 200,
) -> web.Response:
    data = await _gql(
        request,
        login,
        "query { domains { name is_active scaling_groups } groups { id name domain_name is_active scaling_groups } }",
    )
    if form is None:
        form = {
            "description": sgroup["description"] or "",
            "scheduler": sgroup["scheduler"],
            "strategy": sgroup["strategy"],
            "is_active": "on" if sgroup["is_active"] else "",
            "is_public": "on" if sgroup["is_public"] else "",
            "use_host_network": "on" if sgroup["use_host_network"] else "",
            "wsproxy_addr": sgroup["wsproxy_addr"] or "",
        }
    return _render(
        request,
        login,
        "admin/sgroup_detail.html",
        "scaling-groups",
        status=status,
        error=error,
        sgroup=sgroup,
        form=form,
        domains=data["domains"],
        groups=data["groups"],
        schedulers=SCHEDULERS,
        strategies=STRATEGIES,
    )


@page(admin=True)
async def sgroup_update(request: web.Request, login: Login) -> web.StreamResponse:
    """``POST /admin/scaling-groups/{name}``: change a scaling group's scheduling and app proxy."""
    form = await read_form(request, login)
    sgroup = await _load_sgroup(request, login)
    values = _values(form)
    try:
        props = _sgroup_props(values, sgroup["scheduler_opts"])
        await _mutate(
            request,
            login,
            "mutation($name: String!, $props: ModifyScalingGroupInput!) "
            "{ modify_scaling_group(name: $name, props: $props) { ok msg } }",
            {"name": sgroup["name"], "props": props},
            "modify_scaling_group",
        )
    except (ConsoleError, ManagerError) as e:
        code, message = _problem(e)
        values.pop("wsproxy_api_token", None)
        return await _sgroup_page(request, login, sgroup, values, error=message, status=code)
    _done(f"/admin/scaling-groups/{quote(sgroup['name'])}", "updated", f"Scaling group {sgroup['name']}")


@page(admin=True)
async def sgroup_associate(request: web.Request, login: Login) -> web.StreamResponse:
    """``POST /admin/scaling-groups/{name}/associations``: associate with (or remove from) a domain or project."""
    form = await read_form(request, login)
    sgroup = await _load_sgroup(request, login)
    try:
        kind = _choice(form, "kind", "Kind", ("domain", "project"))
        op = _choice(form, "op", "Action", ("add", "remove"))
        target = _text(form, "target", "Domain or project", required=True, max_len=64)
        verb = "associate" if op == "add" else "disassociate"
        if kind == "domain":
            field = f"{verb}_scaling_group_with_domain"
            doc = f"mutation($sg: String!, $t: String!) {{ {field}(scaling_group: $sg, domain: $t) {{ ok msg }} }}"
        else:
            field = f"{verb}_scaling_group_with_user_group"
            doc = f"mutation($sg: String!, $t: String!) {{ {field}(scaling_group: $sg, user_group: $t) {{ ok msg }} }}"
        await _mutate(request, login, doc, {"sg": sgroup["name"], "t": target}, field)
    except (ConsoleError, ManagerError) as e:
        code, message = _problem(e)
        return await _sgroup_page(request, login, sgroup, error=message, status=code)
    label = _text(form, "label", "Label", max_len=200) or target
    _done(
        f"/admin/scaling-groups/{quote(sgroup['name'])}",
        "associated" if op == "add" else "disassociated",
        f"{sgroup['name']} and {kind} {label}",
    )


@page(admin=True)
async def sgroup_delete(request: web.Request, login: Login) -> web.StreamResponse:
    """``POST /admin/scaling-groups/{name}/delete``: delete a scaling group without agents or sessions."""
    await read_form(request, login)
    sgroup = await _load_sgroup(request, login)
    try:
        await _mutate(
            request,
            login,
            "mutation($name: String!) { delete_scaling_group(name: $name) { ok msg } }",
            {"name": sgroup["name"]},
            "delete_scaling_group",
        )
    except (ConsoleError, ManagerError) as e:
        code, message = _problem(e)
        return await _sgroup_page(request, login, sgroup, error=message, status=code)
    _done("/admin/scaling-groups", "deleted", f"Scaling group {sgroup['name']}")


# ------------------------------------------------------------------------------------------- routes

_UUID = "{%s:[0-9a-fA-F-]{36}}"


def register(app: web.Application) -> None:
    """Add this area's routes to ``app``."""
    r = app.router
    r.add_get("/admin", overview)
    r.add_get("/admin/users", users)
    r.add_post("/admin/users", user_create)
    r.add_get("/admin/users/new", user_new)
    r.add_get("/admin/users/" + _UUID % "uid", user_detail)
    r.add_post("/admin/users/" + _UUID % "uid", user_update)
    r.add_post("/admin/users/" + _UUID % "uid" + "/status", user_set_status)
    r.add_post("/admin/users/" + _UUID % "uid" + "/delete", user_delete)
    r.add_get("/admin/keypairs", keypairs)
    r.add_post("/admin/keypairs", keypair_create)
    r.add_post("/admin/keypairs/{ak}", keypair_update)
    r.add_post("/admin/keypairs/{ak}/delete", keypair_delete)
    r.add_get("/admin/projects", projects)
    r.add_post("/admin/projects", project_create)
    r.add_get("/admin/projects/" + _UUID % "gid", project_detail)
    r.add_post("/admin/projects/" + _UUID % "gid", project_update)
    r.add_post("/admin/projects/" + _UUID % "gid" + "/members", project_members)
    r.add_post("/admin/projects/" + _UUID % "gid" + "/delete", project_delete)
    r.add_get("/admin/domains", domains)
    r.add_post("/admin/domains", domain_create)
    r.add_get("/admin/domains/{name}", domain_detail)
    r.add_post("/admin/domains/{name}", domain_update)
    r.add_post("/admin/domains/{name}/delete", domain_delete)
    r.add_get("/admin/policies", policies)
    r.add_post("/admin/policies", policy_create)
    r.add_get("/admin/policies/{name}", policy_detail)
    r.add_post("/admin/policies/{name}", policy_update)
    r.add_post("/admin/policies/{name}/delete", policy_delete)
    r.add_get("/admin/presets", presets)
    r.add_post("/admin/presets", preset_create)
    r.add_get("/admin/presets/{name}", preset_detail)
    r.add_post("/admin/presets/{name}", preset_update)
    r.add_post("/admin/presets/{name}/delete", preset_delete)
    r.add_get("/admin/agents", agents)
    r.add_get("/admin/images", images)
    r.add_post("/admin/images/alias", image_alias)
    r.add_post("/admin/images/dealias", image_dealias)
    r.add_post("/admin/images/rescan", image_rescan)
    r.add_post("/admin/images/forget", image_forget)
    r.add_get("/admin/scaling-groups", sgroups)
    r.add_post("/admin/scaling-groups", sgroup_create)
    r.add_get("/admin/scaling-groups/{name}", sgroup_detail)
    r.add_post("/admin/scaling-groups/{name}", sgroup_update)
    r.add_post("/admin/scaling-groups/{name}/associations", sgroup_associate)
    r.add_post("/admin/scaling-groups/{name}/delete", sgroup_delete)
