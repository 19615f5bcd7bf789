"""What every console page shares: the login, the manager API as that login, templates, CSRF and errors.

A page handler is written as::

    @page()                       # or @page(admin=True)
    async def sessions(request: web.Request, login: Login) -> web.StreamResponse:
        rows = await api(request, login).graphql(QUERY, {...})
        return render(request, login, "sessions/list.html", rows=rows)

Without a login a page redirects to ``/login?next=<path>``; a non-admin on an admin page gets the 403 page;
a :class:`ManagerError` (the manager's 4xx, e.g. another user's session as 404) becomes the error page with
the manager's status and message, never a 500. State-changing handlers read their form with
:func:`read_form`, which refuses forged requests (403).
"""

from __future__ import annotations

import functools
import hashlib
import hmac
import json
import logging
import time
from collections.abc import Awaitable, Callable
from dataclasses import dataclass
from typing import Any
from urllib.parse import quote

import aiohttp
import jinja2
from aiohttp import web
from multidict import MultiDictProxy

from ai.backend.common.auth import sign_request_headers

from ..proxy import API_VERSION, Upstream, manager_url

__all__ = [
    "ConsoleError",
    "Login",
    "ManagerAPI",
    "ManagerError",
    "api",
    "csrf_token",
    "get_login",
    "is_fragment_request",
    "page",
    "read_form",
    "read_json",
    "form_str",
    "render",
    "render_error",
]

log = logging.getLogger("ai.backend.web.console")

TEMPLATES_KEY = web.AppKey("console_templates", jinja2.Environment)
ADMIN_ROLES = frozenset({"admin", "superadmin"})
#: The largest console form (uploads go to the storage proxy, never through a console form).
MAX_FORM = 1024 * 1024


# ----------------------------------------------------------------------------------------------- login


@dataclass(frozen=True)
class Login:
    """The browser's login: who it is, and the keypair the console calls the manager with (server-side only)."""

    sid: str
    username: str
    role: str
    status: str
    access_key: str
    secret_key: str
    need_password_change: bool = False

    @property
    def is_admin(self) -> bool:
        """Domain admins and superadmins."""
        return self.role in ADMIN_ROLES

    @property
    def is_superadmin(self) -> bool:
        return self.role == "superadmin"

    @property
    def csrf(self) -> str:
        """This login's CSRF token: derived from the (HttpOnly) cookie value, which it does not reveal."""
        return csrf_token(self.sid)


def csrf_token(sid: str) -> str:
    """The CSRF token of login session ``sid`` (an HMAC of it: the page shows it, the cookie stays secret)."""
    return hmac.new(sid.encode("utf-8"), b"backend.ai console csrf", hashlib.sha256).hexdigest()


async def get_login(request: web.Request) -> Login | None:
    """The request's login, or None without a valid one."""
    from ..server import current_session  # the server module owns the cookie; imported late (no cycle)

    found = await current_session(request)
    if found is None:
        return None
    sid, data = found
    token = data.get("token", {})
    return Login(
        sid=sid,
        username=str(data.get("username", "")),
        role=str(token.get("role") or "user"),
        status=str(token.get("status") or "active"),
        access_key=str(token["access_key"]),
        secret_key=str(token["secret_key"]),
        need_password_change=bool(token.get("need_password_change", False)),
    )


# -------------------------------------------------------------------------------------- manager calls


class ManagerError(Exception):
    """A manager answer of 400 or more: its status and its problem document's title and detail."""

    def __init__(self, status: int, title: str, detail: str = "", body: Any = None) -> None:
        super().__init__(f"{status} {title}: {detail}")
        self.status, self.title, self.detail, self.body = status, title, detail, body


class ManagerAPI:
    """The manager's REST and GraphQL API, signed with one login's keypair (the console's server side)."""

    def __init__(self, upstream: Upstream, login: Login, client_ip: str = "") -> None:
        self.upstream, self.login, self.client_ip = upstream, login, client_ip

    async def call_raw(
        self,
        method: str,
        path: str,
        body: Any = None,
        *,
        params: dict[str, Any] | None = None,
        timeout: float = 60,
    ) -> tuple[int, str, bytes]:
        """``method path`` with a JSON ``body``, signed; the answer as it came: status, content type and bytes.

        For answers that are not JSON (a file download). ``path`` and ``params`` as for :meth:`call`; raises
        :class:`ManagerError` (502) only for an unreachable manager, whatever the status.
        """
        query = ""
        if params:
            query = "&".join(f"{quote(str(k), safe='')}={quote(str(v), safe='')}" for k, v in params.items())
        url, path_with_query, host = manager_url(self.upstream.endpoints[0], path.lstrip("/"), query)
        data = b"" if body is None else json.dumps(body).encode("utf-8")
        headers = sign_request_headers(
            method=method,
            path_with_query=path_with_query,
            host=host,
            content_type="application/json",
            version=API_VERSION,
            access_key=self.login.access_key,
            secret_key=self.login.secret_key,
            body=data,
            sign_body=bool(data) or method not in ("GET", "HEAD"),
        )
        if self.client_ip:
            headers["X-Forwarded-For"] = self.client_ip
        try:
            async with self.upstream.client.request(
                method, url, data=data or None, headers=headers, timeout=aiohttp.ClientTimeout(total=timeout)
            ) as resp:
                return resp.status, resp.headers.get("Content-Type", ""), await resp.read()
        except (aiohttp.ClientError, TimeoutError) as e:
            raise ManagerError(502, "The manager cannot be reached", str(e) or type(e).__name__) from None

    async def call(
        self,
        method: str,
        path: str,
        body: Any = None,
        *,
        params: dict[str, Any] | None = None,
        timeout: float = 60,
    ) -> Any:
        """``method path`` with a JSON ``body``; the decoded JSON answer (None for an empty one).

        ``path`` starts with ``/`` and is sent as given (percent-encode names yourself: :func:`quote`).
        Raises :class:`ManagerError` for answers of 400 or more and for an unreachable manager (502).
        """
        status, _, raw = await self.call_raw(method, path, body, params=params, timeout=timeout)
        answer: Any = None
        if raw:
            try:
                answer = json.loads(raw)
            except ValueError:
                answer = raw.decode("utf-8", "replace")
        if status >= 400:
            doc = answer if isinstance(answer, dict) else {}
            raise ManagerError(
                status,
                str(doc.get("title") or f"Error {status}"),
                str(doc.get("detail") or doc.get("msg") or (answer if isinstance(answer, str) else "")),
                answer,
            )
        return answer

    async def get(self, path: str, /, **params: Any) -> Any:
        """``GET path?params`` (``path`` is positional-only, so a query parameter may be called ``path``)."""
        return await self.call("GET", path, params=params or None)

    async def post(self, path: str, body: Any = None) -> Any:
        return await self.call("POST", path, body if body is not None else {})

    async def patch(self, path: str, body: Any = None) -> Any:
        return await self.call("PATCH", path, body if body is not None else {})

    async def delete(self, path: str, body: Any = None) -> Any:
        return await self.call("DELETE", path, body)

    async def graphql(self, query: str, variables: dict[str, Any] | None = None) -> dict[str, Any]:
        """The ``data`` of a GraphQL query or mutation; its first error as a :class:`ManagerError` (400)."""
        answer = await self.call("POST", "/admin/gql", {"query": query, "variables": variables or {}})
        if not isinstance(answer, dict):
            raise ManagerError(502, "Unexpected GraphQL answer", repr(answer)[:200])
        errors = answer.get("errors")
        if errors:
            first = errors[0] if isinstance(errors, list) and errors else {}
            message = first.get("message", str(first)) if isinstance(first, dict) else str(first)
            raise ManagerError(400, "The request was refused", str(message), answer)
        data = answer.get("data")
        return data if isinstance(data, dict) else {}


def api(request: web.Request, login: Login) -> ManagerAPI:
    """The manager's API as ``login``."""
    from ..server import UPSTREAM_KEY

    return ManagerAPI(request.app[UPSTREAM_KEY], login, request.remote or "")


# --------------------------------------------------------------------------------------------- errors


class ConsoleError(Exception):
    """Bad input or a refused action on a page: shown to the user with a 4xx status, nothing changed."""

    def __init__(self, status: int, title: str, detail: str = "") -> None:
        super().__init__(f"{status} {title}: {detail}")
        self.status, self.title, self.detail = status, title, detail


def is_fragment_request(request: web.Request) -> bool:
    """Whether htmx asked (it swaps a fragment in; a full page is not wanted)."""
    return request.headers.get("HX-Request") == "true"


# ------------------------------------------------------------------------------------------ rendering


def render(
    request: web.Request,
    login: Login | None,
    template: str,
    *,
    status: int = 200,
    headers: dict[str, str] | None = None,
    **context: Any,
) -> web.Response:
    """``template`` rendered with ``context`` plus ``login``, ``csrf``, ``path`` and ``is_admin``."""
    env = request.app[TEMPLATES_KEY]
    html = env.get_template(template).render(
        login=login,
        csrf=login.csrf if login else "",
        path=request.path,
        is_admin=bool(login and login.is_admin),
        now=time.time(),
        **context,
    )
    out = {"Cache-Control": "no-store"}
    out.update(headers or {})
    return web.Response(text=html, status=status, content_type="text/html", headers=out)


def render_error(request: web.Request, login: Login | None, status: int, title: str, detail: str = "") -> web.Response:
    """The error page (or, for htmx, an alert fragment) with ``status``."""
    if is_fragment_request(request):
        # htmx swaps nothing on a 4xx by default; common.js shows this fragment in the page's alert region.
        return render(request, login, "_alert.html", status=status, code=status, title=title, detail=detail)
    return render(request, login, "error.html", status=status, code=status, title=title, detail=detail)


# ------------------------------------------------------------------------------------------ decorator

PageHandler = Callable[[web.Request, Login], Awaitable[web.StreamResponse]]


def page(*, admin: bool = False) -> Callable[[PageHandler], Callable[[web.Request], Awaitable[web.StreamResponse]]]:
    """Make ``handler(request, login)`` a console route: login required, ``admin`` role if asked, errors as pages."""

    def wrap(handler: PageHandler) -> Callable[[web.Request], Awaitable[web.StreamResponse]]:
        @functools.wraps(handler)
        async def route(request: web.Request) -> web.StreamResponse:
            login = await get_login(request)
            if login is None:
                if is_fragment_request(request) or request.method not in ("GET", "HEAD"):
                    return render_error(request, None, 401, "Not logged in", "Your login has expired; log in again.")
                target = request.path_qs
                from ..server import CONFIG_KEY

                # A cookie that is no longer a login (expired, logged out elsewhere, server restarted) is
                # said so on the login page, rather than a bare login form.
                stale = bool(request.cookies.get(request.app[CONFIG_KEY].session.cookie_name))
                raise web.HTTPSeeOther(f"/login?next={quote(target, safe='')}" + ("&expired=1" if stale else ""))
            if admin and not login.is_admin:
                return render_error(request, login, 403, "Administrators only", "This page is for administrators.")
            try:
                return await handler(request, login)
            except ConsoleError as e:
                return render_error(request, login, e.status, e.title, e.detail)
            except ManagerError as e:
                status = e.status if 400 <= e.status < 500 else 502
                return render_error(request, login, status, e.title, e.detail)

        return route

    return wrap


# ------------------------------------------------------------------------------------------ form input


def _check_origin(request: web.Request) -> None:
    from ..server import _origin_allowed

    origin = request.headers.get("Origin")
    if origin is not None and not _origin_allowed(origin, request):
        raise ConsoleError(403, "Request refused", f"The request came from another site ({origin}).")
    if origin is None and request.headers.get("Sec-Fetch-Site") == "cross-site":
        raise ConsoleError(403, "Request refused", "The request came from another site.")


def check_csrf(request: web.Request, login: Login, submitted: str | None) -> None:
    """Refuse a state-changing request that does not carry this login's CSRF token (403)."""
    _check_origin(request)
    token = request.headers.get("X-CSRF-Token") or submitted or ""
    if not token or not hmac.compare_digest(token, login.csrf):
        raise ConsoleError(
            403,
            "Request refused",
            "The form's security token is missing or wrong (a stale page or a forged request); reload the page "
            "and try again.",
        )


async def read_form(request: web.Request, login: Login) -> MultiDictProxy[Any]:
    """The POSTed form, after the CSRF check (field ``_csrf`` or header ``X-CSRF-Token``)."""
    if request.content_length is not None and request.content_length > MAX_FORM:
        raise ConsoleError(413, "Form too large", f"A console form may hold at most {MAX_FORM // 1024} KiB.")
    form = await request.post()
    raw = form.get("_csrf")
    check_csrf(request, login, raw if isinstance(raw, str) else None)
    return form


async def read_json(request: web.Request, login: Login) -> Any:
    """A POSTed JSON body, after the CSRF check (header ``X-CSRF-Token``)."""
    check_csrf(request, login, None)
    if request.content_length is not None and request.content_length > MAX_FORM:
        raise ConsoleError(413, "Request too large", f"At most {MAX_FORM // 1024} KiB.")
    try:
        return await request.json()
    except ValueError:
        raise ConsoleError(400, "Bad request", "The body must be JSON.") from None


def form_str(form: MultiDictProxy[Any], name: str, *, required: bool = False, max_len: int = 1024) -> str:
    """A text field, stripped; a 400 :class:`ConsoleError` naming it when required and empty or too long."""
    value = form.get(name, "")
    if not isinstance(value, str):
        raise ConsoleError(400, "Invalid form", f"'{name}' must be text.")
    value = value.strip()
    if required and not value:
        raise ConsoleError(400, "Invalid form", f"'{name}' is required.")
    if len(value) > max_len:
        raise ConsoleError(400, "Invalid form", f"'{name}' is longer than {max_len} characters.")
    return value
