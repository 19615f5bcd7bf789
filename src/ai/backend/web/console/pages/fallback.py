"""The console's 404 page for any other ``GET`` (API paths keep their problem+json answers)."""

from __future__ import annotations

from aiohttp import web

from ..base import get_login, render_error

__all__ = ["register"]


async def not_found(request: web.Request) -> web.StreamResponse:
    login = await get_login(request)
    return render_error(request, login, 404, "Page not found", f"There is no page at {request.path}.")


def register(app: web.Application) -> None:
    app.router.add_get("/{tail:(?!func/|func$|server/|static/).*}", not_found)
