"""Console pages: the login form, logging out, and ``/`` (to the sessions page or the login)."""

from __future__ import annotations

from urllib.parse import urlsplit

from aiohttp import web

from ..base import Login, get_login, page, read_form, render

__all__ = ["register", "safe_next"]


def safe_next(value: str | None, default: str = "/sessions") -> str:
    """A post-login target that stays on this site (a local absolute path), else ``default``."""
    if not value or not value.startswith("/") or value.startswith("//") or "\\" in value:
        return default
    parts = urlsplit(value)
    if parts.scheme or parts.netloc:
        return default
    return value


async def login_page(request: web.Request) -> web.StreamResponse:
    """``GET /login``: the form (already logged in: straight on)."""
    target = safe_next(request.query.get("next"))
    if await get_login(request) is not None:
        raise web.HTTPSeeOther(target)
    return render(
        request,
        None,
        "login.html",
        next=target,
        bye=bool(request.query.get("bye")),
        expired=bool(request.query.get("expired")),
    )


@page()
async def logout(request: web.Request, login: Login) -> web.StreamResponse:
    """``POST /logout`` (a form with the CSRF token): end the login and go to the login page."""
    from ...server import CONFIG_KEY, STORE_KEY

    await read_form(request, login)
    await request.app[STORE_KEY].delete_session(login.sid)
    resp = web.HTTPSeeOther("/login?bye=1")
    resp.del_cookie(request.app[CONFIG_KEY].session.cookie_name, path="/")
    raise resp


async def root(request: web.Request) -> web.StreamResponse:
    """``GET /``: the sessions page when logged in, else the login."""
    raise web.HTTPSeeOther("/sessions" if await get_login(request) is not None else "/login")


def register(app: web.Application) -> None:
    app.router.add_get("/", root)
    app.router.add_get("/login", login_page)
    app.router.add_post("/logout", logout)
