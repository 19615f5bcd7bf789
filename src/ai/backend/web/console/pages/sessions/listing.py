"""The sessions list: ``GET /sessions`` (a page of one tab, or its table fragment) and one row of it."""

from __future__ import annotations

import math
from dataclasses import dataclass
from typing import Any
from urllib.parse import urlencode

from aiohttp import web

from ...base import ConsoleError, Login, api, is_fragment_request, page, render
from .common import LIST_QUERY, TABS, int_param, load_session, safe_back, session_view

PAGE_SIZE = 50
MAX_PAGE_SIZE = 100  # the manager's GraphQL limit


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
        page=int_param(request, "page", 1, 1, 1_000_000),
        size=int_param(request, "size", PAGE_SIZE, 1, MAX_PAGE_SIZE),
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
    back = safe_back(request.query.get("back", ""), "/sessions")
    return render(request, login, "sessions/_row.html", s=session_view(found), state=ListState(scope=scope), back=back)
