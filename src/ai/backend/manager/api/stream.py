"""Streaming execution over WebSocket: ``GET /stream/session/:id/execute``.

The client sends ``{"code", "mode", "options"}`` once; the server runs the execute loop itself
(continuing ``continued`` runs without the client asking) and sends every Execution Result
Object as a JSON text message. On ``waiting-input`` the next text message from the client is
the input. The socket closes after ``finished``.
"""

from __future__ import annotations

import json
import logging
from typing import Any

from fastapi import APIRouter, WebSocket, WebSocketDisconnect

from ai.backend.common.problems import ProblemError

from ..auth import authenticate
from ..ratelimit import enforce_keypair_limit
from ..registry import SessionRegistry

log = logging.getLogger(__name__)
router = APIRouter()


@router.websocket("/stream/session/{ref}/execute")
async def stream_execute(ws: WebSocket, ref: str) -> None:
    reg: SessionRegistry = ws.app.state.registry
    try:
        ctx = await authenticate(ws)
        ws.app.state.api_usage.count(ctx.access_key)
        await enforce_keypair_limit({}, ws.app.state.rate_limiter, ctx.access_key, ctx.rate_limit)
        owner = await reg.resolve_owner(ctx, ws.query_params.get("owner_access_key"))
        async with reg.db() as db:
            session = await reg.find_session(db, ref, owner)
    except ProblemError as e:
        # Refuse the handshake; the HTTP status of a refused upgrade is 403.
        log.info("stream execute refused: %s", e.detail)
        await ws.close(code=4000 + min(e.status, 999) % 1000, reason=(e.detail or e.title)[:120])
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
            if status == "finished":
                break
            if status == "waiting-input":
                code, mode, opts = await ws.receive_text(), "input", None
            else:
                code, mode, opts = "", "continue", None
        await ws.close()
    except WebSocketDisconnect:
        return
    except (ValueError, json.JSONDecodeError) as e:
        await ws.send_text(json.dumps({"status": "error", "error": str(e)}))
        await ws.close(code=1003)
    except ProblemError as e:
        await ws.send_text(json.dumps({"status": "error", "error": e.detail or e.title}))
        await ws.close(code=1011)
