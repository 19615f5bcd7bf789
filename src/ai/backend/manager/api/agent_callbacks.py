"""The agent-facing API (``/internal/...``, cluster secret required): heartbeats and kernel events.

Handlers parse and hand over: heartbeats to :class:`~..agents.heartbeats.AgentHeartbeats`, kernel events to
the session registry."""

from __future__ import annotations

import uuid
from typing import Any

from fastapi import APIRouter, Request, Response
from sqlalchemy import select

from ai.backend.common.problems import InvalidAPIParameters

from ..models import KernelRow
from .deps import Ctx, json_body, require_cluster_secret

router = APIRouter(prefix="/internal")


@router.post("/heartbeat")
async def heartbeat(request: Request, ctx: Ctx) -> dict[str, Any]:
    """Register or refresh an agent: its address, capacity, scaling group and local images. The answer
    carries ``stale_kernels`` when it reconciles the agent's kernels."""
    require_cluster_secret(request)
    return await ctx.heartbeats.receive(await json_body(request))


@router.post("/kernel-events")
async def kernel_event(request: Request, ctx: Ctx) -> Response:
    """An agent reports that a kernel is pulling its image, or that its container ended by itself (exit,
    crash or OOM kill)."""
    require_cluster_secret(request)
    body = await json_body(request)
    try:
        kernel_id = uuid.UUID(str(body["kernel_id"]))
    except (KeyError, ValueError):
        raise InvalidAPIParameters("kernel_id is missing or not a UUID.") from None
    reg = ctx.registry
    event = body.get("event")
    if event is not None:
        if event != "pulling":
            raise InvalidAPIParameters(f"Unknown kernel event {event!r}.")
        await reg.mark_pulling(kernel_id)
        return Response(status_code=204)
    reason = str(body.get("reason") or "self-terminated")
    exit_code = body.get("exit_code")
    async with ctx.db() as db:
        kernel = (await db.execute(select(KernelRow).where(KernelRow.id == kernel_id))).scalar_one_or_none()
    if not isinstance(exit_code, int) or isinstance(exit_code, bool):
        exit_code = None
    stats = body.get("stats")
    task_log = body.get("task_log")
    if kernel is not None:
        await reg.mark_terminated(
            kernel.session_id,
            reason[:256],
            exit_code=exit_code,
            stats=stats if isinstance(stats, dict) else None,
            task_log=task_log if isinstance(task_log, str) else None,
            kernel_id=kernel.id,
        )
    return Response(status_code=204)
