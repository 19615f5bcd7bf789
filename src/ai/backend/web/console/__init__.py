"""The web console: server-rendered pages (Jinja2, htmx) served by the webserver (ADR 0013).

:func:`setup_console` adds the console's routes to the webserver's application: the login page, the pages
of each area (one module per area under :mod:`.pages`), the static files (ours and the vendored npm
libraries fetched by ``scripts/fetch-console-assets.py``) and an HTML 404 for unknown pages.
"""

from __future__ import annotations

from pathlib import Path

import jinja2
from aiohttp import web

from .assets import add_static_routes
from .base import TEMPLATES_KEY
from .pages import PAGE_MODULES
from .security import security_headers

__all__ = ["setup_console"]

HERE = Path(__file__).parent


def make_templates() -> jinja2.Environment:
    """The console's Jinja2 environment (autoescaped; undefined names are errors, not empty strings)."""
    env = jinja2.Environment(
        loader=jinja2.FileSystemLoader(HERE / "templates"),
        autoescape=True,
        undefined=jinja2.StrictUndefined,
        trim_blocks=True,
        lstrip_blocks=True,
    )
    from . import filters

    filters.install(env)
    return env


def setup_console(app: web.Application) -> None:
    """Serve the console from ``app`` (call after the ``/server`` and ``/func`` routes are added)."""
    app[TEMPLATES_KEY] = make_templates()
    app.middlewares.append(security_headers)
    add_static_routes(app)
    for module in PAGE_MODULES:
        module.register(app)
    from .pages import fallback

    fallback.register(app)  # last: the HTML 404 for any other GET
