"""ASGI middleware of the manager's API: the legacy URL spellings mapped onto the current routes.

(The body size limit is ``body_limit.py``, the rate limiter ``ratelimit.py``.)"""

from __future__ import annotations

import re

from starlette.types import ASGIApp, Message, Receive, Scope, Send

from ai.backend.common.web import problem_response

_VERSION_PREFIX = re.compile(r"^/v(\d+)(?=/|$)")
SUPPORTED_MAJORS = range(1, 9)


class CompatPathMiddleware:
    """Maps the legacy URL spellings onto the current routes without touching ``raw_path``, and adds
    ``Content-Language: en`` to every response (a plain ASGI wrapper: cheaper than an HTTP middleware).

    ``/vN/...`` prefixes (404 for unsupported majors), ``/kernel/...`` for ``/session/...``,
    ``/kernel/create``, ``/stream/kernel/_/events`` and ``X-Method-Override``. Signatures are checked against
    ``raw_path``.
    """

    def __init__(self, app: ASGIApp) -> None:
        self.app = app

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] in ("http", "websocket"):
            path: str = scope["path"]
            m = _VERSION_PREFIX.match(path)
            if m is not None:
                if int(m.group(1)) not in SUPPORTED_MAJORS and scope["type"] == "http":
                    await problem_response(
                        404, "not-found", "Not found", f"API major version v{m.group(1)} is not supported."
                    )(scope, receive, send)
                    return
                path = path[m.end() :] or "/"
            if path == "/kernel" or path.startswith("/kernel/"):
                path = "/session" + path[len("/kernel") :]
            elif path == "/stream/kernel/_/events":  # the v4 client's session events
                path = "/stream/session/_/events"
            if path != scope["path"]:
                scope = dict(scope, path=path)
            for name, value in scope.get("headers", []):
                if name == b"x-method-override":
                    scope = dict(scope, method=value.decode("latin-1").upper())
                    break
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return

        async def send_with_language(message: Message) -> None:
            if message["type"] == "http.response.start":
                headers = list(message.get("headers", []))
                if not any(k == b"content-language" for k, _ in headers):
                    headers.append((b"content-language", b"en"))
                message = dict(message, headers=headers)
            await send(message)

        await self.app(scope, receive, send_with_language)
