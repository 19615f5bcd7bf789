"""The app proxy process: ``python -m ai.backend.appproxy.server [-f|--config appproxy.toml] [--debug]``.

API port (``api-port``):

* ``GET /v2/proxy/auth?token=T`` (the browser, with the manager's app token): opens or reuses the circuit
  and sends the browser (302) to the circuit's ``/__bai/setup?token=...``, which sets the permit cookie and
  sends it on to the app's start page. ``Accept: application/json`` gets ``{"url", "circuit"}`` instead.
* ``DELETE /v2/sessions/{session_id}`` (the manager, with the shared secret): closes that session's
  circuits, ``{"closed": n}``.
* ``GET /v2/status``: ``{"api_version": "v2", "circuits": n}``.
"""

from __future__ import annotations

import asyncio
import contextlib
import hmac
import logging
import math
import sys
import time
from typing import Any
from urllib.parse import quote

import aiohttp
from aiohttp import web

from ai.backend.common.app_tokens import APPPROXY_SECRET_HEADER, BadAppToken, verify
from ai.backend.common.config import server_setup
from ai.backend.common.logs import install_request_ids
from ai.backend.common.problems import ProblemError

from .circuits import SETUP_PATH, CircuitTable
from .config import AppProxyConfig, AppProxySection
from .errors import AppTokenRefused, BadRequest, MissingSecret, WrongSecret, refusal
from .liveness import AliveChecker, liveness_loop
from .metrics import install_metrics
from .permits import NonceBook, issue_ticket, safe_redirect

__all__ = ["API_VERSION", "create_app", "main"]

log = logging.getLogger("ai.backend.appproxy")

API_VERSION = "v2"
#: App protocols a browser can use through a circuit (upstream serves ``preopen`` ports as HTTP too).
HTTP_PROTOCOLS = frozenset({"http", "preopen"})

CONF_KEY = web.AppKey("conf", AppProxySection)
TABLE_KEY = web.AppKey("table", CircuitTable)
TASK_KEY = web.AppKey("liveness", asyncio.Task[None])
CLIENT_KEY = web.AppKey("manager_client", aiohttp.ClientSession)


class _NotFound(ProblemError):
    status, slug, title = 404, "not-found", "Not found"


class _MethodNotAllowed(ProblemError):
    status, slug, title = 405, "method-not-allowed", "Method not allowed"


@web.middleware
async def problem_middleware(request: web.Request, handler: Any) -> web.StreamResponse:
    """Problems (and aiohttp's own 404/405) as problem documents, or pages for browsers."""
    try:
        resp: web.StreamResponse = await handler(request)
        return resp
    except ProblemError as e:
        return refusal(request, e)
    except web.HTTPNotFound:
        return refusal(request, _NotFound(f"No route for {request.method} {request.path}."), open_again=False)
    except web.HTTPMethodNotAllowed as e:
        allowed = ", ".join(sorted(e.allowed_methods))
        return refusal(request, _MethodNotAllowed(f"{request.method} is not allowed here; use {allowed}."))


def _wants_json(request: web.Request) -> bool:
    accept = request.headers.get("Accept", "")
    return "application/json" in accept and "text/html" not in accept


async def proxy_auth(request: web.Request) -> web.StreamResponse:
    """``GET /v2/proxy/auth?token=T``: a one-use app token becomes a circuit and a setup link."""
    conf = request.app[CONF_KEY]
    token = request.query.get("token", "")
    if not token:
        raise BadRequest("The query parameter 'token' (the app token from start-service) is required.")
    try:
        # The clock is checked below: an expired token is told apart from a forged one.
        grant = verify(token, conf.secret, now=-math.inf)
    except BadAppToken as e:
        raise AppTokenRefused(str(e), status=403) from None
    if grant.expires < time.time():
        raise AppTokenRefused("The app token has expired; open the app again.")
    if not request.app[TABLE_KEY].nonces.spend(grant.nonce, grant.expires):
        raise AppTokenRefused("The app token was already used; open the app again.")
    if grant.protocol not in HTTP_PROTOCOLS:
        raise BadRequest(
            f"The app {grant.app!r} speaks {grant.protocol}, not HTTP: a browser cannot use it; "
            f"use `backend.ai app <session> {grant.app}` instead."
        )
    circuit, reused = await request.app[TABLE_KEY].open(grant)
    ticket = issue_ticket(conf.secret, circuit.id, grant.user, safe_redirect(grant.redirect))
    url = f"{circuit.origin}{SETUP_PATH}?token={quote(ticket, safe='')}"
    log.info(
        "user %s opens %s of session %s (circuit %s%s)",
        grant.user,
        grant.app,
        grant.session_id,
        circuit.id,
        ", reused" if reused else "",
    )
    headers = {"Cache-Control": "no-store", "Referrer-Policy": "no-referrer"}
    if _wants_json(request):
        return web.json_response({"url": url, "circuit": circuit.id}, headers=headers)
    return web.Response(status=302, headers={**headers, "Location": url})


def _check_secret(request: web.Request) -> None:
    given = request.headers.get(APPPROXY_SECRET_HEADER)
    if given is None:
        raise MissingSecret(f"The {APPPROXY_SECRET_HEADER} header is required.")
    if not hmac.compare_digest(given.encode(), request.app[CONF_KEY].secret.encode()):
        raise WrongSecret(f"The {APPPROXY_SECRET_HEADER} header is wrong.")


async def close_session(request: web.Request) -> web.StreamResponse:
    """``DELETE /v2/sessions/{session_id}`` (the manager): close the session's circuits."""
    _check_secret(request)
    session_id = request.match_info["session_id"]
    closed = await request.app[TABLE_KEY].close_session(session_id, "the manager ended the session")
    return web.json_response({"closed": closed})


async def status(request: web.Request) -> web.StreamResponse:
    """``GET /v2/status``: the protocol version and how many circuits are open."""
    return web.json_response({"api_version": API_VERSION, "circuits": len(request.app[TABLE_KEY])})


def create_app(config: AppProxyConfig) -> web.Application:
    """The API application; circuits and the liveness loop start with it and stop with it."""
    conf = config.appproxy
    app = web.Application(middlewares=[problem_middleware])
    app[CONF_KEY] = conf
    install_request_ids(app)
    app[TABLE_KEY] = CircuitTable(conf, NonceBook())
    app[TABLE_KEY].watch(install_metrics(app, config))

    async def on_startup(app: web.Application) -> None:
        client = aiohttp.ClientSession(timeout=aiohttp.ClientTimeout(total=max(10.0, conf.alive_interval)))
        app[CLIENT_KEY] = client
        app[TASK_KEY] = asyncio.ensure_future(liveness_loop(AliveChecker(conf, app[TABLE_KEY], client)))

    async def on_shutdown(app: web.Application) -> None:
        app[TASK_KEY].cancel()
        with contextlib.suppress(asyncio.CancelledError):
            await app[TASK_KEY]
        await app[TABLE_KEY].close_all()
        await app[CLIENT_KEY].close()

    app.on_startup.append(on_startup)
    app.on_shutdown.append(on_shutdown)
    app.router.add_get("/v2/proxy/auth", proxy_auth)
    app.router.add_delete("/v2/sessions/{session_id}", close_session)
    app.router.add_get("/v2/status", status)
    return app


def main(argv: list[str] | None = None) -> None:
    """Run the app proxy until SIGINT/SIGTERM."""
    config, debug = server_setup(AppProxyConfig, "appproxy", "appproxy", argv)
    conf = config.appproxy
    log.info(
        "app proxy on %s:%d, circuits on ports %d-%d advertised as %s, manager %s",
        conf.bind_host,
        conf.api_port,
        *conf.port_range,
        conf.advertised_host,
        conf.manager_url,
    )
    try:
        web.run_app(
            create_app(config),
            host=conf.bind_host,
            port=conf.api_port,
            access_log=log if debug else None,
            print=None,
            shutdown_timeout=5,
        )
    except OSError as e:
        print(f"appproxy: cannot listen on {conf.bind_host}:{conf.api_port}: {e.strerror or e}", file=sys.stderr)
        sys.exit(1)


if __name__ == "__main__":
    main()
