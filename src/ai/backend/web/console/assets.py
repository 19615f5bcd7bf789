"""The console's static files: our CSS and JS under ``/static/``, the vendored npm libraries under
``/static/vendor/`` (fetched by ``scripts/fetch-console-assets.py``; see ``assets.json``)."""

from __future__ import annotations

import json
from pathlib import Path

from aiohttp import web
from aiohttp.typedefs import Handler

__all__ = ["STATIC_DIR", "VENDOR_DIR", "add_static_routes", "missing_vendor_files", "vendor_files"]

HERE = Path(__file__).parent
STATIC_DIR = HERE / "static"
VENDOR_DIR = STATIC_DIR / "vendor"
MANIFEST = HERE / "assets.json"


def vendor_files() -> list[str]:
    """The file names ``assets.json`` puts under ``static/vendor/``."""
    manifest = json.loads(MANIFEST.read_text())
    return [name for pkg in manifest["packages"] for name in pkg["files"].values()]


def missing_vendor_files() -> list[str]:
    """Vendored files not fetched yet (the console then says how to fetch them)."""
    return [name for name in vendor_files() if not (VENDOR_DIR / name).is_file()]


@web.middleware
async def _static_cache(request: web.Request, handler: Handler) -> web.StreamResponse:
    resp = await handler(request)
    if request.path.startswith("/static/") and resp.status == 200:
        # Revalidated each day: an upgrade changes our files, and their names stay the same.
        resp.headers["Cache-Control"] = "public, max-age=86400, must-revalidate"
    return resp


def add_static_routes(app: web.Application) -> None:
    """Serve ``static/`` at ``/static/`` (no directory listings, no symlinks out of it)."""
    app.router.add_static("/static/", STATIC_DIR, show_index=False, follow_symlinks=False)
    app.middlewares.append(_static_cache)
