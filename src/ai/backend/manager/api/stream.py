"""WebSocket streams: ``GET /stream/session/:id/execute``, the terminal ``GET /stream/session/:id/pty`` and the
app streams ``GET /stream/session/:id/tcpproxy|httpproxy``, plus the apps list ``GET /stream/session/:id/apps``.

Execute: the client sends ``{"code", "mode", "options"}`` once; the server runs the execute loop itself
(continuing ``continued`` runs without the client asking) and sends every Execution Result
Object as a JSON text message. On ``waiting-input`` the next text message from the client is
the input. The socket closes after ``finished``.

Terminal (rest-api.md §6.5): JSON text messages only. The client sends ``stdin`` (base64 ``chars``),
``resize`` (``rows``/``cols``), ``ping`` and ``restart``; the server sends ``out`` (base64 ``data``)
and ``error`` (a message; the terminal stays usable). The manager relays to the agent's
``/v1/kernels/{kid}/pty`` WebSocket (raw bytes there, see ``ai.backend.agent.pty_relay``); it never talks to
containers itself. Closing either end closes the other and ends the shell.

App streams (spec §2.1, ADR 0012): ``?app=`` (or ``service``), ``port``, ``envs`` and ``arguments`` (JSON
object texts). The app is started through the agent, then one WebSocket carries one TCP connection to it in
BINARY frames (:mod:`..apps.relay`); ``tcpproxy`` and ``httpproxy`` are the same relay.

A refused handshake (bad signature, unknown or foreign session, session not running) is answered
before the upgrade with the problem's HTTP status and an ``application/problem+json`` body.
The legacy ``/stream/kernel/:id/...`` spellings are accepted too.
"""

from __future__ import annotations

import asyncio
import base64
import binascii
import contextlib
import json
import logging
from typing import Any

from fastapi import APIRouter, Request, WebSocket, WebSocketDisconnect
from fastapi.responses import JSONResponse
from websockets.asyncio.client import ClientConnection
from websockets.asyncio.client import connect as ws_connect
from websockets.exceptions import InvalidStatus, WebSocketException

from ai.backend.common.auth import CLUSTER_SECRET_HEADER
from ai.backend.common.problems import ProblemError, SessionNotFound

from ..apps.ports import public_ports
from ..apps.relay import relay
from ..apps.request import AppRequest, app_session, check_running
from ..auth import AuthContext, authenticate
from ..models import KernelRow, SessionRow
from ..ratelimit import enforce_keypair_limit
from ..registry import SessionNotRunning, SessionRegistry
from ..sessions.status import SessionStatus as S
from .deps import manager_context

log = logging.getLogger(__name__)
router = APIRouter()


async def _caller(conn: WebSocket | Request) -> AuthContext:
    """Authenticate a stream handshake like any API call (signature, usage, rate limit)."""
    mgr = manager_context(conn)
    ctx = await authenticate(conn, mgr)
    mgr.api_usage.count(ctx.access_key)
    await enforce_keypair_limit({}, mgr.rate_limiter, ctx.access_key, ctx.rate_limit)
    return ctx


async def _caller_session(ws: WebSocket, reg: SessionRegistry, ref: str) -> tuple[SessionRow, KernelRow]:
    """Authenticate a stream handshake and find the session it names (owner delegation with
    ``owner_access_key``) with its main kernel; refusals are problems."""
    ctx = await _caller(ws)
    owner = await reg.resolve_owner(ctx, ws.query_params.get("owner_access_key"))
    async with reg.db() as db:
        return await reg.find_session_and_kernel(db, ref, owner)


async def _caller_app_session(
    conn: WebSocket | Request, reg: SessionRegistry, ref: str
) -> tuple[SessionRow, KernelRow]:
    """Authenticate a handshake or call on a session's apps and find the session (see
    :func:`..apps.request.app_session`: admins may also name a session of their domain by its id)."""
    ctx = await _caller(conn)
    return await app_session(reg, ctx, ref, conn.query_params.get("owner_access_key"))


async def _refuse(ws: WebSocket, e: ProblemError) -> None:
    """Refuse the handshake with the problem's status and body (a 403 close where the server cannot)."""
    log.info("stream refused (%s): %s", e.status, e.detail or e.title)
    try:
        await ws.send_denial_response(
            JSONResponse(e.body(), status_code=e.status, media_type="application/problem+json")
        )
    except RuntimeError:  # no websocket.http.response extension in this ASGI server
        await ws.close(code=4000 + min(e.status, 999) % 1000, reason=(e.detail or e.title)[:120])


@router.websocket("/stream/session/{ref}/execute")
@router.websocket("/stream/kernel/{ref}/execute")
async def stream_execute(ws: WebSocket, ref: str) -> None:
    reg: SessionRegistry = manager_context(ws).registry
    try:
        session, _ = await _caller_session(ws, reg, ref)
    except ProblemError as e:
        await _refuse(ws, e)
        return
    await ws.accept()
    try:
        first = json.loads(await ws.receive_text())
        if not isinstance(first, dict):
            raise ValueError("the first message must be a JSON object")
        code = str(first.get("code") or "")
        mode = str(first.get("mode") or "query")
        opts: Any = first.get("options") or None
        if mode not in ("query", "batch"):
            raise ValueError(f"mode must be query or batch, got {mode!r}")
        run_id: str | None = None
        while True:
            reg.count_query(session)
            result = await reg.kernel_call(
                session, "POST", "/execute", json={"mode": mode, "code": code, "run_id": run_id, "opts": opts}
            )
            result.pop("killed", None)
            run_id = result.get("runId")
            await ws.send_text(json.dumps(result))
            status = result.get("status")
            if status in ("finished", "exec-timeout"):
                break
            if status == "waiting-input":
                code, mode, opts = await ws.receive_text(), "input", None
            else:
                code, mode, opts = "", "continue", None
        await ws.close()
    except WebSocketDisconnect:
        return
    except RecursionError:
        await ws.send_text(json.dumps({"status": "error", "error": "the message is nested too deeply"}))
        await ws.close(code=1003)
    except (ValueError, json.JSONDecodeError) as e:
        await ws.send_text(json.dumps({"status": "error", "error": str(e)}))
        await ws.close(code=1003)
    except ProblemError as e:
        await ws.send_text(json.dumps({"status": "error", "error": e.detail or e.title}))
        await ws.close(code=1011)


# ---- terminal -------------------------------------------------------------------------------------

#: ``app`` values that name the terminal (absent, the upstream ttyd service, plain names).
TERMINAL_APPS = frozenset({"", "ttyd", "terminal", "pty", "shell"})
#: Decoded bytes of one ``stdin`` message; a paste larger than this must be split by the client.
MAX_STDIN_BYTES = 1 << 20
MAX_TERMINAL_SIZE = 1000
AGENT_CONNECT_TIMEOUT = 30.0


def parse_pty_message(text: str) -> tuple[str, Any]:
    """Validate one client message of the terminal protocol; returns ``(type, payload)``.

    ``stdin`` → the decoded bytes, ``resize`` → ``(rows, cols)``, ``ping``/``restart`` → ``None``.
    Raises ``ValueError`` with a message for the client.
    """
    try:
        msg = json.loads(text)
    except json.JSONDecodeError as e:
        raise ValueError(f"the message is not valid JSON ({e.msg}).") from None
    except RecursionError:
        raise ValueError("the message is nested too deeply.") from None
    if not isinstance(msg, dict):
        raise ValueError("a message must be a JSON object with a 'type'.")
    kind = msg.get("type")
    if kind == "stdin":
        chars = msg.get("chars")
        if not isinstance(chars, str):
            raise ValueError("'stdin' needs 'chars', a base64 string.")
        if len(chars) > (MAX_STDIN_BYTES + 2) // 3 * 4:
            raise ValueError(f"'stdin' carries more than {MAX_STDIN_BYTES} bytes; split the input.")
        try:
            return kind, base64.b64decode(chars, validate=True)
        except (binascii.Error, ValueError):
            raise ValueError("'chars' of 'stdin' is not valid base64.") from None
    if kind == "resize":
        size = []
        for name in ("rows", "cols"):
            v = msg.get(name)
            if isinstance(v, bool) or not isinstance(v, int) or not 1 <= v <= MAX_TERMINAL_SIZE:
                raise ValueError(f"'resize' needs '{name}', an integer in 1..{MAX_TERMINAL_SIZE}.")
            size.append(v)
        return kind, (size[0], size[1])
    if kind in ("ping", "restart"):
        return kind, None
    raise ValueError(f"unknown message type {kind!r}; expected stdin, resize, ping or restart.")


async def _send_error(ws: WebSocket, message: str) -> None:
    await ws.send_text(json.dumps({"type": "error", "data": message}))


async def _client_to_agent(ws: WebSocket, agent: ClientConnection, reg: SessionRegistry, session: SessionRow) -> None:
    while True:
        msg = await ws.receive()
        if msg["type"] == "websocket.disconnect":
            return
        text = msg.get("text")
        if text is None:
            await _send_error(ws, "Only JSON text messages are accepted (binary frame ignored).")
            continue
        try:
            kind, payload = parse_pty_message(text)
        except ValueError as e:
            await _send_error(ws, str(e))
            continue
        reg.activity.touch(session.id)  # typing and pings keep the session from the idle timeout
        if kind == "stdin":
            if payload:
                await agent.send(payload)
        elif kind == "resize":
            await agent.send(json.dumps({"type": "resize", "rows": payload[0], "cols": payload[1]}))
        elif kind == "restart":
            await agent.send(json.dumps({"type": "restart"}))


async def _agent_to_client(ws: WebSocket, agent: ClientConnection) -> None:
    async for msg in agent:
        if isinstance(msg, bytes):
            await ws.send_text(json.dumps({"type": "out", "data": base64.b64encode(msg).decode("ascii")}))
            continue
        try:
            doc = json.loads(msg)
            message = str(doc.get("data")) if isinstance(doc, dict) else str(doc)
        except json.JSONDecodeError:
            message = msg
        await _send_error(ws, message)


async def _connect_agent(ws: WebSocket, addr: str, kernel_id: str) -> ClientConnection:
    """The agent's terminal WebSocket for a kernel; raises ``ValueError`` with a message for the client."""
    base = addr.rstrip("/")
    if base.startswith("https://"):
        url = "wss://" + base[len("https://") :]
    elif base.startswith("http://"):
        url = "ws://" + base[len("http://") :]
    else:
        url = "ws://" + base
    secret: str = manager_context(ws).config.manager.cluster_secret
    try:
        return await ws_connect(
            f"{url}/v1/kernels/{kernel_id}/pty",
            additional_headers={CLUSTER_SECRET_HEADER: secret},
            proxy=None,
            open_timeout=AGENT_CONNECT_TIMEOUT,
            max_size=16 << 20,
        )
    except InvalidStatus as e:
        try:
            body = json.loads(e.response.body or b"{}")
            detail = body.get("detail") or body.get("title") if isinstance(body, dict) else None
        except (ValueError, UnicodeDecodeError):
            detail = None
        raise ValueError(f"The agent could not open a terminal: {detail or e.response.status_code}.") from None
    except (OSError, TimeoutError, WebSocketException) as e:
        raise ValueError(f"Cannot reach the agent of the session: {type(e).__name__}.") from None


@router.websocket("/stream/session/{ref}/pty")
@router.websocket("/stream/kernel/{ref}/pty")
async def stream_pty(ws: WebSocket, ref: str) -> None:
    """A terminal (login shell) in the session's main container; the caller must own the RUNNING session."""
    reg: SessionRegistry = manager_context(ws).registry
    try:
        session, kernel = await _caller_session(ws, reg, ref)
        if session.status != S.RUNNING:
            raise SessionNotRunning(f"Session {session.name!r} is {session.status}, not RUNNING; no terminal.")
        if not kernel.agent_addr:
            raise SessionNotFound(f"Session {session.name!r} has no running kernel.")
    except ProblemError as e:
        await _refuse(ws, e)
        return
    await ws.accept()
    app = ws.query_params.get("app") or ""
    if app not in TERMINAL_APPS:
        await _send_error(ws, f"Unknown app {app!r}: this endpoint serves the terminal (app=ttyd or none).")
        await ws.close(code=1008)
        return
    try:
        agent = await _connect_agent(ws, kernel.agent_addr, str(kernel.id))
    except ValueError as e:
        with contextlib.suppress(WebSocketDisconnect, RuntimeError):
            await _send_error(ws, str(e))
            await ws.close(code=1011)
        return
    reg.activity.touch(session.id)
    tasks = [
        asyncio.ensure_future(_client_to_agent(ws, agent, reg, session)),
        asyncio.ensure_future(_agent_to_client(ws, agent)),
    ]
    try:
        done, _ = await asyncio.wait(tasks, return_when=asyncio.FIRST_COMPLETED)
        for task in done:
            exc = task.exception()
            if exc is not None and not isinstance(exc, (WebSocketDisconnect, WebSocketException, OSError)):
                log.warning("terminal relay of session %s failed: %r", session.name, exc)
    finally:
        for task in tasks:
            task.cancel()
        await asyncio.gather(*tasks, return_exceptions=True)
        await agent.close()  # the agent closes the terminal, which kills the shell
        with contextlib.suppress(WebSocketDisconnect, RuntimeError, OSError):
            await ws.close()


# ---- apps -----------------------------------------------------------------------------------------------


@router.get("/stream/session/{ref}/apps")
@router.get("/stream/kernel/{ref}/apps")
async def stream_apps(request: Request, ref: str) -> JSONResponse:
    """The apps of the session's main kernel: ``[{"name", "protocol", "ports", "url_template"?,
    "allowed_arguments"?, "allowed_envs"?}]`` (empty until the session runs)."""
    reg: SessionRegistry = manager_context(request).registry
    _, kernel = await _caller_app_session(request, reg, ref)
    return JSONResponse(public_ports(kernel.service_ports))


@router.websocket("/stream/session/{ref}/tcpproxy")
@router.websocket("/stream/session/{ref}/httpproxy")
@router.websocket("/stream/kernel/{ref}/tcpproxy")
@router.websocket("/stream/kernel/{ref}/httpproxy")
async def stream_app(ws: WebSocket, ref: str) -> None:
    """One TCP connection to an app of the caller's RUNNING session, over this WebSocket."""
    mgr = manager_context(ws)
    reg: SessionRegistry = mgr.registry
    q = ws.query_params
    try:
        session, kernel = await _caller_app_session(ws, reg, ref)
        check_running(session, kernel)
        wanted = AppRequest.parse(
            kernel,
            session,
            app=q.get("app") or q.get("service"),
            port=q.get("port"),
            envs=q.get("envs"),
            arguments=q.get("arguments"),
        )
        reg.activity.touch(session.id)
        endpoint = await wanted.start(reg.rpc, kernel)
    except ProblemError as e:
        await _refuse(ws, e)
        return
    try:
        await ws.accept()
    except (WebSocketDisconnect, RuntimeError, OSError):  # the client gave up while the app was starting
        return
    await relay(
        ws, endpoint, circuits=mgr.circuits, session_id=session.id, on_packet=lambda: reg.activity.touch(session.id)
    )
