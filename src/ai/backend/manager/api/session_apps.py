"""A session's apps for browsers (ADR 0012): ``POST /session/:id/start-service`` starts an app and answers a
token for the app proxy; ``POST /session/:id/shutdown-service`` stops one.

The CLI's way in, the ``tcpproxy``/``httpproxy`` streams and ``/stream/session/:id/apps``, is in
:mod:`.stream`; the work is in :mod:`..apps`.
"""

from __future__ import annotations

from typing import Any

from fastapi import APIRouter, Depends, Request, Response

from ai.backend.common.problems import InvalidAPIParameters

from ..apps.appproxy import NoAppProxy, app_token_answer, check_redirect
from ..apps.launch import shutdown_app
from ..apps.ports import find_app
from ..apps.request import AppRequest, app_session, check_running
from ..auth import AuthContext
from ..models import KernelRow, SessionRow
from ..registry import SessionRegistry
from .bodies import AliasChoices, DocumentedRoute, Field, LaterInt, LaterObject, LaterStr, RequestModel, body_of
from .deps import auth_required, manager_context, registry

router = APIRouter(route_class=DocumentedRoute)


class StartServiceBody(RequestModel):
    """``POST /session/{ref}/start-service``."""

    app: LaterStr = Field(None, validation_alias=AliasChoices("app", "service"), description="The app's name.")
    port: LaterInt = Field(None, description="One of the app's container ports (default: its first).")
    envs: LaterObject = Field(None, description="Environment variables: a JSON object or its text.")
    arguments: LaterObject = Field(
        None, description="Command-line arguments (flag → null|str|[str]): an object or text."
    )
    redirect: LaterStr = Field(None, description="The app's path to open (default /).")
    login_session_token: LaterStr = Field(None, description="Ignored (upstream's legacy field).")


class ShutdownServiceBody(RequestModel):
    """``POST /session/{ref}/shutdown-service``."""

    service_name: LaterStr = Field(None, validation_alias=AliasChoices("service_name", "app", "service"))


async def _session_and_kernel(
    reg: SessionRegistry, ctx: AuthContext, ref: str, request: Request
) -> tuple[SessionRow, KernelRow]:
    session, kernel = await app_session(reg, ctx, ref, request.query_params.get("owner_access_key"))
    check_running(session, kernel)
    return session, kernel


@router.post("/session/{ref}/start-service")
async def start_service(
    ref: str,
    request: Request,
    ctx: AuthContext = Depends(auth_required),
    reg: SessionRegistry = Depends(registry),
    body: StartServiceBody = Depends(body_of(StartServiceBody)),
) -> dict[str, Any]:
    """Start an app of a RUNNING session and answer ``{"token", "wsproxy_addr", "url"}``: opening ``url``
    (within 60 s, once) lets the browser into the app through the app proxy."""
    mgr = manager_context(request)
    if mgr.config.appproxy is None:
        raise NoAppProxy("This manager has no [appproxy] configured; use the CLI's `app` command instead.")
    session, kernel = await _session_and_kernel(reg, ctx, ref, request)
    wanted = AppRequest.parse(kernel, session, app=body.app, port=body.port, envs=body.envs, arguments=body.arguments)
    redirect = check_redirect(body.redirect)
    reg.activity.touch(session.id)
    endpoint = await wanted.start(reg.rpc, kernel)
    return app_token_answer(mgr.config.appproxy, ctx, session, kernel, endpoint, redirect)


@router.post("/session/{ref}/shutdown-service")
async def shutdown_service(
    ref: str,
    request: Request,
    ctx: AuthContext = Depends(auth_required),
    reg: SessionRegistry = Depends(registry),
    body: ShutdownServiceBody = Depends(body_of(ShutdownServiceBody)),
) -> Response:
    """Stop an app of a RUNNING session (its streams see the connection close)."""
    session, kernel = await _session_and_kernel(reg, ctx, ref, request)
    if not isinstance(body.service_name, str) or not body.service_name:
        raise InvalidAPIParameters("'service_name', the name of the app to stop, is required.")
    app = find_app(kernel.service_ports, body.service_name, session.name)
    reg.activity.touch(session.id)
    await shutdown_app(reg.rpc, kernel, app)
    return Response(status_code=204)
