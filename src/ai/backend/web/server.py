"""The webserver process: ``python -m ai.backend.web.server [-f web.toml]``.

Routes (upstream 22.03's, see ``docs/operator-guide.md``):

* ``POST /server/login`` ``{"username", "password"}`` (email or username), ``POST /server/logout``,
  ``GET|POST /server/login-check``;
* ``GET /func/`` (the manager's version answer, anonymous) and ``/func/<path>``: the manager's API, re-signed
  with the logged-in user's keypair (:mod:`.proxy`).
"""

from __future__ import annotations

import logging
import secrets
import ssl
import time
from typing import Any
from urllib.parse import urlsplit

from aiohttp import web

from ai.backend.common.config import server_setup
from ai.backend.common.logs import install_request_ids
from ai.backend.common.problems import (
    AuthorizationFailed,
    BadGateway,
    Forbidden,
    InvalidAPIParameters,
    ProblemError,
    TooManyRequests,
)

from .config import WebConfig
from .metrics import METRICS_KEY, install_metrics
from .proxy import Upstream, proxy_func, proxy_root
from .store import Store, make_store

__all__ = ["create_app", "main"]

log = logging.getLogger("ai.backend.web")

CONFIG_KEY = web.AppKey("config", WebConfig)
STORE_KEY = web.AppKey("store", Store)
UPSTREAM_KEY = web.AppKey("upstream", Upstream)

SAFE_METHODS = frozenset({"GET", "HEAD", "OPTIONS"})
#: Headers a cross-site HTML form cannot send and a cross-site script can send only after a CORS preflight,
#: which this server never grants: one of them on a state-changing call proves it is not a forged one.
CSRF_HEADERS = ("X-BackendAI-Version", "X-Requested-With", "X-BackendAI-SessionID")
MAX_LOGIN_BODY = 64 * 1024


def problem_response(exc: ProblemError, headers: dict[str, str] | None = None) -> web.Response:
    """A problem document as an ``application/problem+json`` response."""
    return web.json_response(exc.body(), status=exc.status, content_type="application/problem+json", headers=headers)


@web.middleware
async def problem_middleware(request: web.Request, handler: Any) -> web.StreamResponse:
    """Answer :class:`ProblemError` as problem documents, and aiohttp's own 404/405 likewise."""
    try:
        resp: web.StreamResponse = await handler(request)
        return resp
    except ProblemError as e:
        return problem_response(e)
    except web.HTTPNotFound:
        return problem_response(
            _NotFoundHere(
                f"No route for {request.method} {request.path}; the API is under /func/ and the login under /server/."
            )
        )
    except web.HTTPMethodNotAllowed as e:
        return problem_response(
            _MethodNotAllowed(f"{request.method} is not allowed here; use {', '.join(sorted(e.allowed_methods))}.")
        )


class _NotFoundHere(ProblemError):
    status, slug, title = 404, "not-found", "Not found"


class _MethodNotAllowed(ProblemError):
    status, slug, title = 405, "method-not-allowed", "Method not allowed"


class LoginRequired(AuthorizationFailed):
    """No valid login session: missing, expired or forged cookie."""


# ---------------------------------------------------------------------------------------------- CSRF


def _origin_allowed(origin: str, request: web.Request) -> bool:
    if origin in request.app[CONFIG_KEY].security.allowed_origins:
        return True
    parts = urlsplit(origin)
    return bool(parts.netloc) and parts.netloc.lower() == (request.host or "").lower()


def check_cross_site(request: web.Request) -> None:
    """Refuse requests a browser marks as coming from another site (any method, WebSockets included)."""
    origin = request.headers.get("Origin")
    if origin is not None and not _origin_allowed(origin, request):
        raise Forbidden(
            f"Cross-site request refused: origin {origin!r} is not this server "
            "(add it to [security] allowed-origins to allow it)."
        )
    if request.headers.get("Sec-Fetch-Site") == "cross-site" and origin is None:
        raise Forbidden("Cross-site request refused.")


def check_csrf(request: web.Request) -> None:
    """Refuse forged state-changing calls: they must come from this site and carry a custom header."""
    check_cross_site(request)
    if request.method in SAFE_METHODS:
        return
    if not any(h in request.headers for h in CSRF_HEADERS):
        raise Forbidden(
            f"State-changing calls must carry one of the headers {', '.join(CSRF_HEADERS)} "
            "(protection against cross-site request forgery)."
        )


# ------------------------------------------------------------------------------------ login sessions


def _cookie_kwargs(request: web.Request) -> dict[str, Any]:
    conf = request.app[CONFIG_KEY].session
    return {
        "path": "/",
        "httponly": True,
        "samesite": conf.cookie_samesite,
        "secure": conf.cookie_secure or request.secure,
    }


async def current_session(request: web.Request) -> tuple[str, dict[str, Any]] | None:
    """The request's login session id and data, or None without a valid one."""
    sid = request.cookies.get(request.app[CONFIG_KEY].session.cookie_name)
    if not sid:
        return None
    data = await request.app[STORE_KEY].get_session(sid)
    if data is None or not data.get("authenticated") or data.get("expires", 0) < time.time():
        return None
    return sid, data


async def require_login(request: web.Request) -> dict[str, Any]:
    """The login session's data, or a 401 that says why there is none."""
    found = await current_session(request)
    if found is not None:
        return found[1]
    if request.cookies.get(request.app[CONFIG_KEY].session.cookie_name):
        raise LoginRequired(
            "Your login session has expired or is not valid; log in again (POST /server/login, or `backend.ai login`)."
        )
    raise LoginRequired("You are not logged in; log in first (POST /server/login, or `backend.ai login`).")


def _public_data(data: dict[str, Any]) -> dict[str, Any]:
    """What the browser may see of a login: never the keypair (neither half)."""
    token = data.get("token", {})
    return {
        "username": data.get("username"),
        "role": token.get("role"),
        "status": token.get("status"),
        "need_password_change": token.get("need_password_change", False),
    }


def _client_ip(request: web.Request) -> str:
    return request.remote or "unknown"


async def login(request: web.Request) -> web.StreamResponse:
    """``POST /server/login``: check the password with the manager and open a login session."""
    check_csrf(request)
    app = request.app
    conf = app[CONFIG_KEY]
    if await current_session(request) is not None:
        raise InvalidAPIParameters("You have already logged in; log out first to log in as someone else.")
    if request.content_length is not None and request.content_length > MAX_LOGIN_BODY:
        raise InvalidAPIParameters("The login request is too large.")
    try:
        body = await request.json()
    except ValueError:
        raise InvalidAPIParameters('The login request must be a JSON object {"username", "password"}.') from None
    if not isinstance(body, dict):
        raise InvalidAPIParameters('The login request must be a JSON object {"username", "password"}.')
    username, password = body.get("username"), body.get("password")
    if not isinstance(username, str) or not username.strip() or not isinstance(password, str) or not password:
        raise InvalidAPIParameters("'username' (an email or user name) and 'password' are required.")
    username = username.strip()
    store = app[STORE_KEY]
    sconf = conf.session
    account_key, ip_key = f"account:{conf.api.domain}:{username.lower()}", f"ip:{_client_ip(request)}"
    account_fails, ip_fails = await store.failures(account_key), await store.failures(ip_key)
    if account_fails >= sconf.login_allowed_fail_count or ip_fails >= sconf.login_allowed_fail_count_per_ip:
        # A refused attempt restarts the block: guessing on keeps the account (or address) locked.
        if account_fails >= sconf.login_allowed_fail_count:
            await store.touch_failures(account_key, sconf.login_block_time)
        if ip_fails >= sconf.login_allowed_fail_count_per_ip:
            await store.touch_failures(ip_key, sconf.login_block_time)
        app[METRICS_KEY].login_blocked.inc()
        minutes = max(1, sconf.login_block_time // 60)
        raise TooManyRequests(
            f"Too many failed login attempts; this account or address is blocked for "
            f"{minutes} minutes after the last attempt."
        )
    status, answer = await app[UPSTREAM_KEY].authorize(conf.api.domain, username, password, _client_ip(request))
    if status == 401:
        await store.add_failure(account_key, sconf.login_block_time)
        await store.add_failure(ip_key, sconf.login_block_time)
    if status != 200:
        app[METRICS_KEY].login_failed.inc()
        # The manager's problem document (wrong password, inactive account, its own rate limit) goes back as
        # is, with the upstream-style "authenticated": false for consoles that look at that field.
        doc = answer if isinstance(answer, dict) else {"title": "Login failed", "status": status}
        doc = {**doc, "authenticated": False}
        return web.json_response(
            doc, status=status if 400 <= status < 500 else 502, content_type="application/problem+json"
        )
    data = answer.get("data") if isinstance(answer, dict) else None
    if not isinstance(data, dict) or not data.get("access_key") or not data.get("secret_key"):
        raise BadGateway("The manager answered the login with no keypair.")
    await store.clear_failures(account_key)
    sid = secrets.token_urlsafe(32)  # a new id at every login: a planted cookie never becomes a login
    session = {
        "authenticated": True,
        "username": username,
        "token": {
            "type": "keypair",
            "access_key": data["access_key"],
            "secret_key": data["secret_key"],
            "role": data.get("role"),
            "status": data.get("status"),
            "need_password_change": bool(data.get("need_password_change", False)),
        },
        "created": time.time(),
        "expires": time.time() + sconf.max_age,
    }
    await store.put_session(sid, session, sconf.max_age)
    app[METRICS_KEY].login_ok.inc()
    resp = web.json_response({"authenticated": True, "data": _public_data(session)})
    resp.set_cookie(sconf.cookie_name, sid, max_age=sconf.max_age, **_cookie_kwargs(request))
    log.info("login of %s from %s", username, _client_ip(request))
    return resp


async def logout(request: web.Request) -> web.StreamResponse:
    """``POST /server/logout``: end the login session (201, no body, as upstream)."""
    check_csrf(request)
    conf = request.app[CONFIG_KEY].session
    sid = request.cookies.get(conf.cookie_name)
    if sid:
        await request.app[STORE_KEY].delete_session(sid)
    resp = web.Response(status=201)
    resp.del_cookie(conf.cookie_name, **{k: v for k, v in _cookie_kwargs(request).items() if k == "path"})
    return resp


async def login_check(request: web.Request) -> web.StreamResponse:
    """``GET|POST /server/login-check``: whether the cookie is a valid login (the keypair is not shown)."""
    check_csrf(request)
    found = await current_session(request)
    if found is None:
        return web.json_response({"authenticated": False, "data": None})
    return web.json_response({"authenticated": True, "data": _public_data(found[1])})


async def func(request: web.Request) -> web.StreamResponse:
    """``/func/<path>``: the manager's API as the logged-in user."""
    tail = request.match_info.get("tail", "")
    if tail == "" and request.method in ("GET", "HEAD"):
        return await proxy_root(request, request.app[UPSTREAM_KEY])  # the anonymous version probe
    if request.method == "OPTIONS":
        # No CORS: a preflight gets no Access-Control-* headers, so other sites' scripts cannot call.
        return web.Response(status=204, headers={"Allow": "GET, HEAD, POST, PUT, PATCH, DELETE"})
    is_ws = request.headers.get("Upgrade", "").lower() == "websocket"
    if is_ws:
        check_cross_site(request)  # browsers cannot add custom headers to a WebSocket; Origin tells
    else:
        check_csrf(request)
    session = await require_login(request)
    (request.app[METRICS_KEY].func_websocket if is_ws else request.app[METRICS_KEY].func_http).inc()
    token = session["token"]
    return await proxy_func(
        request, request.app[UPSTREAM_KEY], tail, token["access_key"], token["secret_key"], websocket=is_ws
    )


# ------------------------------------------------------------------------------------------- the app


def create_app(config: WebConfig) -> web.Application:
    """The aiohttp application (the store and the manager connection are made at start-up)."""
    app = web.Application(middlewares=[problem_middleware], client_max_size=1024**4)
    app[CONFIG_KEY] = config
    install_request_ids(app)  # forwarded to the manager by the Upstream client: one id for both logs
    install_metrics(app, config)  # its middleware goes first (outermost)

    async def on_startup(app: web.Application) -> None:
        store = make_store(config.session.redis_url)
        if config.session.flush_on_startup:
            await store.flush()
        app[STORE_KEY] = store
        app[UPSTREAM_KEY] = Upstream(config.api)

    async def on_cleanup(app: web.Application) -> None:
        await app[UPSTREAM_KEY].close()
        await app[STORE_KEY].close()

    app.on_startup.append(on_startup)
    app.on_cleanup.append(on_cleanup)
    app.router.add_post("/server/login", login)
    app.router.add_post("/server/logout", logout)
    app.router.add_route("GET", "/server/login-check", login_check)
    app.router.add_post("/server/login-check", login_check)
    app.router.add_route("*", "/func", func)
    app.router.add_route("*", "/func/{tail:.*}", func)
    if config.ui.enabled:
        from .console import setup_console

        setup_console(app)
    return app


def main(argv: list[str] | None = None) -> None:
    """Run the webserver until SIGINT/SIGTERM."""
    config, debug = server_setup(WebConfig, "web", "webserver", argv)
    ssl_ctx = None
    if config.service.ssl_cert:
        ssl_ctx = ssl.create_default_context(ssl.Purpose.CLIENT_AUTH)
        ssl_ctx.load_cert_chain(config.service.ssl_cert, config.service.ssl_key)
    try:
        import uvloop

        uvloop.install()
    except ImportError:  # pragma: no cover - uvloop comes with uvicorn[standard]
        pass
    log.info("webserver for %s on %s:%d", ", ".join(config.api.endpoint), config.service.host, config.service.port)
    web.run_app(
        create_app(config),
        host=config.service.host,
        port=config.service.port,
        ssl_context=ssl_ctx,
        access_log=log if debug else None,
        print=None,
        shutdown_timeout=5,
    )


if __name__ == "__main__":
    # Run the imported module's main, not this __main__ copy's: the console imports
    # ai.backend.web.server, and its app keys must be the ones the application was built with.
    from ai.backend.web.server import main as _main

    _main()
