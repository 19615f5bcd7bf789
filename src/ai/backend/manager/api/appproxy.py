"""The app-proxy-facing API (``/internal/appproxy/...``, the ``[appproxy]`` shared secret required).

``POST /internal/appproxy/alive`` ``{"session_ids": [...], "active": [...]}`` → ``{"alive": [...]}``: which of
the proxy's circuits' sessions still have their containers (RUNNING, RESTARTING or RUNNING_DEGRADED). The proxy
asks every few seconds and closes the others' circuits, so a missed ``DELETE /v2/sessions/{id}`` cannot leave a
circuit open onto a port a later kernel reuses (ADR 0012). ``active`` (optional) names the sessions whose apps
were used since the previous call: browser traffic bypasses the manager, so this is how it counts as activity
for the idle timeout.
"""

from __future__ import annotations

import uuid
from typing import Any

from fastapi import APIRouter, Request
from sqlalchemy import select

from ai.backend.common.app_tokens import APPPROXY_SECRET_HEADER
from ai.backend.common.problems import InvalidAPIParameters

from ..apps.appproxy import check_proxy_secret
from ..models import SessionRow
from ..sessions.status import ON_AGENT
from .deps import Ctx, json_body

router = APIRouter(prefix="/internal/appproxy")

#: Session ids one call may ask about (a proxy has at most a few thousand circuits).
MAX_IDS = 10_000
_CHUNK = 500  # ids per IN (...) query


@router.post("/alive")
async def alive(request: Request, ctx: Ctx) -> dict[str, Any]:
    """The given sessions that still run, as the proxy spelled their ids; ids that are not UUIDs never run."""
    check_proxy_secret(ctx.config.appproxy, request.headers.get(APPPROXY_SECRET_HEADER))
    ids = (await json_body(request)).get("session_ids")
    if not isinstance(ids, list) or not all(isinstance(i, str) for i in ids):
        raise InvalidAPIParameters("'session_ids' must be a list of session ids (strings).")
    if len(ids) > MAX_IDS:
        raise InvalidAPIParameters(f"'session_ids' may list at most {MAX_IDS} sessions.")
    asked: dict[uuid.UUID, list[str]] = {}
    for raw in ids:
        try:
            asked.setdefault(uuid.UUID(raw), []).append(raw)
        except ValueError:
            pass
    keys = list(asked)
    running: set[uuid.UUID] = set()
    async with ctx.db() as db:
        for i in range(0, len(keys), _CHUNK):
            q = select(SessionRow.id).where(SessionRow.id.in_(keys[i : i + _CHUNK]), SessionRow.status.in_(ON_AGENT))
            running.update((await db.execute(q)).scalars())
    active = (await json_body(request)).get("active") or []
    if not isinstance(active, list) or not all(isinstance(i, str) for i in active) or len(active) > MAX_IDS:
        raise InvalidAPIParameters("'active' must be a list of session ids (strings).")
    for raw in active:
        try:
            sid = uuid.UUID(raw)
        except ValueError:
            continue
        if sid in running:
            ctx.registry.activity.touch(sid)
    return {"alive": [raw for sid in keys if sid in running for raw in asked[sid]]}
