"""The admin pages' shared plumbing: the sub-navigation, rendering with the notice of a redirect, redirects
after a change, refused input as a status and message, GraphQL calls (a record or a 404), paging and search
filters."""

from __future__ import annotations

import math
import uuid
from collections.abc import Iterable, Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from typing import Any, NoReturn
from urllib.parse import urlencode

from aiohttp import web

from ...base import ConsoleError, Login, ManagerError, api, render

PAGE_SIZE = 20


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


def _notice(request: web.Request) -> str:
    template = NOTICES.get(request.query.get("done", ""))
    if template is None:
        return ""
    return template.format(name=request.query.get("name", "")[:200] or "It")


def redirect_done(path: str, done: str, name: str, **extra: str) -> NoReturn:
    """Redirect (303) after a change, to ``path`` saying what was done."""
    params = {**{k: v for k, v in extra.items() if v}, "done": done, "name": name}
    raise web.HTTPSeeOther(f"{path}?{urlencode(params)}")


def _sections(login: Login) -> list[Section]:
    return [s for s in SECTIONS if login.is_superadmin or not s.superadmin_only]


@dataclass
class Refusal:
    """Why a form was refused: the 4xx status and the message to show above the form again (false while unset)."""

    status: int = 0
    message: str = ""

    def __bool__(self) -> bool:
        return self.status != 0


def render_page(
    request: web.Request,
    login: Login,
    template: str,
    section: str,
    *,
    status: int = 200,
    refused: Refusal | None = None,
    **context: Any,
) -> web.Response:
    """An admin page: ``template`` with the sub-navigation, the notice of a redirect and ``context``; a form's
    ``refused`` gives the page its status and its ``error``."""
    if refused:
        status, context["error"] = refused.status, refused.message
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


def problem(e: Exception) -> tuple[int, str]:
    """The 4xx status and message of refused input (the console's or the manager's); others propagate."""
    if isinstance(e, ConsoleError):
        return e.status, e.detail or e.title
    if isinstance(e, ManagerError) and 400 <= e.status < 500:
        return e.status, e.detail or e.title
    raise e


@contextmanager
def refusal() -> Iterator[Refusal]:
    """Catch the refusal of a form: ``with refusal() as refused:`` read the form and call the manager; then
    ``if refused:`` render the form again with ``refused=refused`` (see :func:`problem`: a 5xx propagates)."""
    refused = Refusal()
    try:
        yield refused
    except (ConsoleError, ManagerError) as e:
        refused.status, refused.message = problem(e)


async def gql(request: web.Request, login: Login, doc: str, variables: dict[str, Any] | None = None) -> dict[str, Any]:
    """The ``data`` of a GraphQL query or mutation, called as the logged-in admin (errors as :class:`ManagerError`)."""
    return await api(request, login).graphql(doc, variables)


async def mutate(request: web.Request, login: Login, doc: str, variables: dict[str, Any], field: str) -> dict[str, Any]:
    """Run a mutation; its payload, or a 400 with the manager's message when it answers ``ok: false``."""
    data = await gql(request, login, doc, variables)
    payload = data.get(field) or {}
    if not payload.get("ok", False):
        raise ConsoleError(400, "Refused", str(payload.get("msg") or "The manager refused the change."))
    return dict(payload)


async def load_one(
    request: web.Request, login: Login, doc: str, variables: dict[str, Any], field: str, missing: tuple[str, str]
) -> dict[str, Any]:
    """The record the query ``doc`` answers as ``field``, or the 404 page (``missing``: its title and message)."""
    record = (await gql(request, login, doc, variables)).get(field)
    if not record:
        raise ConsoleError(404, *missing)
    return dict(record)


def uuid_or_404(value: str, what: str) -> str:
    """``value``, the id of a ``what`` in a URL; the 404 page if it is not a UUID."""
    try:
        uuid.UUID(value)
    except ValueError:
        raise ConsoleError(404, f"No such {what}", f"{value!r} is not a {what} id.") from None
    return value


def filter_literal(text: str) -> str:
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


def search_filter(q: str, fields: Iterable[str]) -> str | None:
    """A filter matching ``q`` anywhere in any of ``fields`` (case-insensitive)."""
    if not q:
        return None
    literal = filter_literal(f"%{q}%")
    return " | ".join(f"{f} ilike {literal}" for f in fields)


def page_number(request: web.Request) -> int:
    try:
        n = int(request.query.get("page", "1"))
    except ValueError:
        return 1
    return min(max(n, 1), 100_000)


def page_window(page_no: int) -> dict[str, int]:
    """The ``limit`` and ``offset`` of a paged list query, for page ``page_no``."""
    return {"limit": PAGE_SIZE, "offset": (page_no - 1) * PAGE_SIZE}


def pager(request: web.Request, page_no: int, total: int) -> dict[str, Any]:
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


async def domains_and_groups(request: web.Request, login: Login) -> tuple[list[str], list[dict[str, Any]]]:
    """The domains the login may pick (all for superadmins, its own otherwise) and the visible projects."""
    if login.is_superadmin:
        data = await gql(
            request, login, "query { domains { name is_active } groups { id name domain_name is_active } }"
        )
        domains = [d["name"] for d in data["domains"]]
    else:
        data = await gql(request, login, "query { domain { name } groups { id name domain_name is_active } }")
        domains = [data["domain"]["name"]] if data.get("domain") else []
    return domains, data["groups"]
