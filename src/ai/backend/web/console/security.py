"""Security headers on everything the webserver answers outside ``/func/`` (the console's pages and files)."""

from __future__ import annotations

from aiohttp import web
from aiohttp.typedefs import Handler

__all__ = ["CONTENT_SECURITY_POLICY", "security_headers"]

#: No inline scripts and no eval: every script is a file under /static/. connect-src stays open to any
#: http(s)/ws(s) origin because uploads go straight to the storage proxy's own origin (tus), which the
#: webserver does not know in advance.
CONTENT_SECURITY_POLICY = (
    "default-src 'self'; script-src 'self'; style-src 'self' 'unsafe-inline'; img-src 'self' data: blob:; "
    "connect-src 'self' http: https: ws: wss:; frame-ancestors 'none'; base-uri 'none'; form-action 'self'; "
    "object-src 'none'"
)


@web.middleware
async def security_headers(request: web.Request, handler: Handler) -> web.StreamResponse:
    resp = await handler(request)
    if not request.path.startswith("/func") and not resp.prepared:
        resp.headers.setdefault("Content-Security-Policy", CONTENT_SECURITY_POLICY)
        resp.headers.setdefault("X-Content-Type-Options", "nosniff")
        resp.headers.setdefault("X-Frame-Options", "DENY")
        resp.headers.setdefault("Referrer-Policy", "same-origin")
    return resp
