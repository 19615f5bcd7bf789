"""Console pages: sessions (placeholder until the sessions pages are written)."""

from __future__ import annotations

from aiohttp import web

from ..base import Login, page, render


@page()
async def sessions(request: web.Request, login: Login) -> web.StreamResponse:
    return render(request, login, "sessions/list.html")


def register(app: web.Application) -> None:
    """Add this area's routes to ``app``."""
    app.router.add_get("/sessions", sessions)
