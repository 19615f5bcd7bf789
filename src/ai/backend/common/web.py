"""HTTP plumbing shared by the servers (manager, agent, storage proxy): RFC 7807 problem answers, the error
handlers of a FastAPI app, the shared-secret check between components, and the uvicorn start-up.
"""

from __future__ import annotations

import contextlib
import hmac
import logging
import socket
import sys
from collections.abc import Callable, Sequence
from typing import Any

from fastapi import FastAPI, Request
from fastapi.exceptions import RequestValidationError
from fastapi.responses import JSONResponse
from starlette.exceptions import HTTPException as StarletteHTTPException
from starlette.types import ASGIApp, Receive, Scope, Send

from .logs import REQUEST_ID_HEADER, request_id_var
from .problems import ProblemError, problem_document

__all__ = ["PROBLEM_JSON", "SharedSecretMiddleware", "install_problem_handlers", "problem_response", "serve"]

log = logging.getLogger(__name__)

PROBLEM_JSON = "application/problem+json"
_HTTP_ERRORS = {404: ("not-found", "Not found"), 405: ("method-not-allowed", "Method not allowed")}


def problem_response(
    status: int, slug: str, title: str, detail: str | None = None, headers: dict[str, str] | None = None
) -> JSONResponse:
    """An ``application/problem+json`` response (see :func:`~ai.backend.common.problems.problem_document`)."""
    return JSONResponse(
        problem_document(status, slug, title, detail), status_code=status, media_type=PROBLEM_JSON, headers=headers
    )


def error_response(exc: ProblemError) -> JSONResponse:
    """The answer for a raised problem; one may carry response headers in a ``headers`` attribute (tus)."""
    return JSONResponse(
        exc.body(), status_code=exc.status, media_type=PROBLEM_JSON, headers=getattr(exc, "headers", None)
    )


def _internal_detail(_: Exception) -> str:
    return "The server failed to handle this request; the error was logged."


def install_problem_handlers(
    app: FastAPI,
    *,
    internal_slug: str = "internal-error",
    internal_title: str = "Internal server error",
    internal_detail: Callable[[Exception], str] = _internal_detail,
    logger: logging.Logger = log,
) -> None:
    """Answer every error of ``app`` as a problem: a raised :class:`ProblemError` with its own status; a request
    that fails FastAPI's parameter validation with 400 ``invalid-api-params``; an unknown route or method with
    404 ``not-found`` / 405 ``method-not-allowed``; anything else with a 500 (``internal_*``; logged to
    ``logger`` with its traceback). The defaults are the manager's answers.

    Each problem answered is logged to ``logger`` with the request's context (its request id): a raised 5xx
    problem (a peer's failure, no capacity) at ``warning``, the others at ``debug``, so a 4xx costs nothing
    unless ``[logging] level = "debug"``.
    """

    def logged(request: Request, status: int, slug: str, detail: str | None) -> None:
        level = logging.WARNING if status >= 500 else logging.DEBUG
        if logger.isEnabledFor(level):
            logger.log(level, "%s %s: %d %s: %s", request.method, request.url.path, status, slug, detail or "")

    @app.exception_handler(ProblemError)
    async def _problem(request: Request, exc: ProblemError) -> JSONResponse:
        logged(request, exc.status, exc.slug, exc.detail)
        return error_response(exc)

    @app.exception_handler(RequestValidationError)
    async def _validation(request: Request, exc: RequestValidationError) -> JSONResponse:
        first = exc.errors()[0] if exc.errors() else {}
        loc = ".".join(str(p) for p in first.get("loc", ()))
        detail = f"{loc}: {first.get('msg', 'invalid value')}"
        logged(request, 400, "invalid-api-params", detail)
        return problem_response(400, "invalid-api-params", "Invalid API parameters", detail)

    @app.exception_handler(StarletteHTTPException)
    async def _http(request: Request, exc: StarletteHTTPException) -> JSONResponse:
        slug, title = _HTTP_ERRORS.get(exc.status_code, ("http-error", "HTTP error"))
        logged(request, exc.status_code, slug, str(exc.detail))
        return problem_response(exc.status_code, slug, title, str(exc.detail))

    @app.exception_handler(Exception)
    async def _internal(request: Request, exc: Exception) -> JSONResponse:
        logger.exception("unhandled error on %s %s", request.method, request.url.path)
        # Answered from outside every middleware (Starlette's error middleware): the request id header is
        # added here, the id itself is still set (RequestIdMiddleware leaves it when the app raises).
        rid = request_id_var.get()
        headers = {REQUEST_ID_HEADER: rid} if rid is not None else None
        return problem_response(500, internal_slug, internal_title, internal_detail(exc), headers)


class SharedSecretMiddleware:
    """Refuses HTTP requests whose ``header`` is not ``secret`` with the ``refusal`` problem, comparing in
    constant time. A plain ASGI wrapper: about half the cost of an ``@app.middleware("http")`` function, which
    matters on the agent's execute path. WebSocket connections pass through: their routes check the header
    themselves (a refused WebSocket is closed, not answered).
    """

    def __init__(self, app: ASGIApp, *, header: str, secret: str, refusal: ProblemError) -> None:
        self.app = app
        self.header = header.lower().encode()
        self.secret = secret.encode()
        self.refusal = refusal

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] == "http":
            given = next((v for k, v in scope.get("headers", []) if k == self.header), b"")
            if not hmac.compare_digest(given, self.secret):
                await error_response(self.refusal)(scope, receive, send)
                return
        await self.app(scope, receive, send)


def serve(
    app: ASGIApp,
    host: str | None = None,
    port: int | None = None,
    *,
    debug: bool = False,
    sockets: Sequence[socket.socket] | None = None,
    **options: Any,
) -> None:
    """Run ``app`` under uvicorn until it is stopped: on ``host:port``, or on already bound ``sockets``.

    Logs at ``warning`` (``debug``: at ``debug`` with the access log) through the root logger's handler (see
    :func:`~ai.backend.common.logs.setup_logging`: JSON lines stay JSON); ``options`` are passed to
    ``uvicorn.Config`` (``timeout_keep_alive``, ``loop``, ``ssl_certfile``…).
    """
    import uvicorn  # the servers' mains only: importing this module must not need uvicorn loaded

    if host is not None:
        options["host"] = host
    if port is not None:
        options["port"] = port
    options.setdefault("log_config", None)  # no handlers of uvicorn's own: its records go to the root logger
    config = uvicorn.Config(app, log_level="debug" if debug else "warning", access_log=debug, **options)
    server = uvicorn.Server(config)
    with contextlib.suppress(KeyboardInterrupt):
        server.run(sockets=list(sockets) if sockets is not None else None)
    if not server.started:
        sys.exit(3)  # as uvicorn.run does: the app's start-up failed (or the port was taken)
