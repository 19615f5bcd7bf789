"""``GET /admin/cluster``: the operator's view of the whole cluster (superadmins; ADR 0014).

One answer from any manager: the managers (alive or recently gone, which one leads), the agents by status, the
queue (sessions by status, pending ones per scaling group), the storage volumes and the versions. Everything
comes from the shared database, the locks of PostgreSQL and the storage proxies, so every manager answers the
same. ``backend.ai admin cluster status`` prints it.
"""

from __future__ import annotations

from collections import Counter
from typing import Any

from fastapi import APIRouter, Depends, Request
from sqlalchemy import func, select

from ai.backend.common.problems import Forbidden, ProblemError

from ..auth import AuthContext
from ..models import AgentRow, ManagerRow, SessionRow
from ..sessions.status import ACTIVE
from ..sessions.status import SessionStatus as S
from .deps import auth_required, manager_context
from .root import API_VERSION, MANAGER_VERSION

router = APIRouter()


def _iso(value: Any) -> str | None:
    return value.isoformat() if value is not None else None


@router.get("/admin/cluster")
async def cluster_status(request: Request, ctx: AuthContext = Depends(auth_required)) -> dict[str, Any]:
    """Managers, leader, agents, queue depth, storage volumes and versions (superadmin only)."""
    if not ctx.is_superadmin:
        raise Forbidden("Only superadmins may see the cluster status.")
    mgr = manager_context(request)
    presence = mgr.presence
    alive = await presence.alive()
    leader = await presence.leader_id()
    async with mgr.db() as db:
        managers = (await db.execute(select(ManagerRow).order_by(ManagerRow.started_at))).scalars().all()
        agents = (
            await db.execute(
                select(
                    AgentRow.id,
                    AgentRow.status,
                    AgentRow.scaling_group,
                    AgentRow.addr,
                    AgentRow.version,
                    AgentRow.last_heartbeat,
                ).order_by(AgentRow.id)
            )
        ).all()
        by_status = dict(
            (
                await db.execute(
                    select(SessionRow.status, func.count())
                    .where(SessionRow.status.in_(ACTIVE))
                    .group_by(SessionRow.status)
                )
            ).all()
        )
        pending = dict(
            (
                await db.execute(
                    select(SessionRow.scaling_group, func.count())
                    .where(SessionRow.status == S.PENDING)
                    .group_by(SessionRow.scaling_group)
                )
            ).all()
        )
    volumes: list[dict[str, Any]] = []
    for proxy in sorted(mgr.storage.proxies):
        try:
            for v in await mgr.storage.volumes(proxy):
                volumes.append({"host": f"{proxy}:{v['name']}", "proxy": proxy, "backend": v.get("backend")})
        except ProblemError as e:
            volumes.append({"host": None, "proxy": proxy, "backend": None, "error": e.detail or e.title})
    manager_items = [
        {
            "id": m.id,
            "address": m.address,
            "version": m.version,
            "started_at": _iso(m.started_at),
            "last_seen": _iso(m.last_seen),
            "alive": m.id in alive,
            "leader": m.id == leader,
            "this": m.id == presence.manager_id,
        }
        for m in managers
    ]
    return {
        "shape": "several" if presence.shared else "single",
        "database": mgr.engine.dialect.name,
        "redis": bool(mgr.config.redis.url),
        "this_manager": presence.manager_id,
        "leader": leader,
        "managers": manager_items,
        "agents": {
            "total": len(agents),
            "by_status": dict(Counter(a.status for a in agents)),
            "items": [
                {
                    "id": a.id,
                    "status": a.status,
                    "scaling_group": a.scaling_group,
                    "addr": a.addr,
                    "version": a.version,
                    "last_heartbeat": _iso(a.last_heartbeat),
                }
                for a in agents
            ],
        },
        "queue": {
            "pending": sum(pending.values()),
            "pending_by_scaling_group": pending,
            "by_status": by_status,
        },
        "volumes": volumes,
        "versions": {
            "api": API_VERSION,
            "manager": MANAGER_VERSION,
            "managers": dict(Counter(m["version"] for m in manager_items if m["alive"])),
            "agents": dict(Counter(a.version or "unknown" for a in agents)),
        },
    }
