"""``GET /internal/status``: readiness for operators and the all-in-one launcher (cluster secret)."""

from __future__ import annotations

from typing import Any

from fastapi import APIRouter, Request
from sqlalchemy import func, select

from ..agents.status import AgentStatus
from ..models import AgentRow, ImageAliasRow
from .deps import manager_context, require_cluster_secret

router = APIRouter(prefix="/internal")


@router.get("/status")
async def status(request: Request) -> dict[str, Any]:
    """How many agents are alive and which image aliases are known."""
    require_cluster_secret(request)
    async with manager_context(request).registry.db() as db:
        alive = (
            await db.execute(select(func.count()).select_from(AgentRow).where(AgentRow.status == AgentStatus.ALIVE))
        ).scalar_one()
        aliases = (await db.execute(select(ImageAliasRow.alias))).scalars().all()
    return {"agents_alive": alive, "image_aliases": sorted(aliases)}
