"""GraphQL agents: ``agent``, ``agents`` and ``agent_list`` for superadmins and monitors.

Agents report their capacity by heartbeat (id, address, scaling group, region, version,
architecture, ``available_slots``) and the host's utilisation (``live_stat``: CPU %, memory in use),
which gives ``cpu_cur_pct`` and ``mem_cur_bytes``. The legacy ``*_slots`` fields are derived from
``available_slots``/``occupied_slots`` (``mem_slots`` in MiB).
"""

from __future__ import annotations

from datetime import datetime
from decimal import Decimal
from typing import Any

import strawberry
from sqlalchemy import func, select
from strawberry.types import Info

from ...live_stats import live_stats
from ...models import Agent as AgentRow
from ...models import Kernel, SessionRow
from .base import (
    MONITOR,
    SUPERADMIN,
    GQLContext,
    JSONString,
    check_page,
    context,
    filter_clause,
    order_clauses,
    require_roles,
)
from .sessions import KERNEL_STATUSES, ComputeContainer, container_to_gql, parse_statuses

AGENT_STATUSES = ("ALIVE", "LOST", "RESTARTING", "TERMINATED")
AGENT_COLUMNS: dict[str, Any] = {
    "id": AgentRow.id, "status": AgentRow.status, "status_changed": AgentRow.status_changed,
    "region": AgentRow.region, "scaling_group": AgentRow.scaling_group, "schedulable": AgentRow.schedulable,
    "addr": AgentRow.addr, "first_contact": AgentRow.first_contact, "lost_at": AgentRow.lost_at,
    "last_heartbeat": AgentRow.last_heartbeat, "version": AgentRow.version, "architecture": AgentRow.architecture,
}
_MIB = Decimal(2**20)


def _slot(slots: dict[str, Any] | None, *names: str) -> Decimal:
    for name in names:
        value = (slots or {}).get(name)
        if value is not None:
            try:
                return Decimal(str(value))
            except ArithmeticError:
                return Decimal(0)
    return Decimal(0)


@strawberry.type(description="An agent (compute node) with the host utilisation of its latest heartbeat.")
class Agent:
    id: strawberry.ID
    status: str
    status_changed: datetime | None
    region: str | None
    scaling_group: str
    schedulable: bool
    available_slots: JSONString  # type: ignore[valid-type]
    occupied_slots: JSONString  # type: ignore[valid-type]
    addr: str
    architecture: str
    first_contact: datetime | None
    lost_at: datetime | None
    last_heartbeat: datetime | None
    live_stat: JSONString | None  # type: ignore[valid-type]
    version: str | None
    compute_plugins: JSONString  # type: ignore[valid-type]
    mem_slots: int
    cpu_slots: float
    gpu_slots: float
    tpu_slots: float
    used_mem_slots: int
    used_cpu_slots: float
    used_gpu_slots: float
    used_tpu_slots: float
    cpu_cur_pct: float | None
    mem_cur_bytes: float | None

    @strawberry.field(description="The containers (kernels) placed on this agent, optionally by status.")
    async def compute_containers(self, info: Info, status: str | None = None) -> list[ComputeContainer]:
        ctx = context(info)
        conds: list[Any] = [Kernel.agent == str(self.id)]
        statuses = parse_statuses(status, KERNEL_STATUSES, "container")
        if statuses is not None:
            conds.append(Kernel.status.in_(statuses))
        async with ctx.db() as db:
            rows = (
                await db.execute(
                    select(Kernel, SessionRow.resource_opts).join(SessionRow, SessionRow.id == Kernel.session_id)
                    .where(*conds).order_by(Kernel.created_at, Kernel.id)
                )
            ).all()
        return [container_to_gql(k, opts, ctx.role == SUPERADMIN, ctx.state) for k, opts in rows]


@strawberry.type
class AgentList:
    items: list[Agent]
    total_count: int


def to_gql(row: AgentRow, stats: dict[str, float] | None = None) -> Agent:
    """An agent row as its GraphQL object, with the host utilisation of its latest heartbeat."""
    stats = stats or {}
    avail, occ = row.available_slots or {}, row.occupied_slots or {}
    return Agent(
        id=strawberry.ID(row.id), status=row.status, status_changed=row.status_changed, region=row.region,
        scaling_group=row.scaling_group, schedulable=row.schedulable, available_slots=avail, occupied_slots=occ,
        addr=row.addr, architecture=row.architecture, first_contact=row.first_contact, lost_at=row.lost_at,
        last_heartbeat=row.last_heartbeat, live_stat=stats or None, version=row.version,
        compute_plugins=row.compute_plugins or {},
        mem_slots=int(_slot(avail, "mem") // _MIB), cpu_slots=float(_slot(avail, "cpu")),
        gpu_slots=float(_slot(avail, "cuda.device", "cuda.shares")), tpu_slots=float(_slot(avail, "tpu.device")),
        used_mem_slots=int(_slot(occ, "mem") // _MIB), used_cpu_slots=float(_slot(occ, "cpu")),
        used_gpu_slots=float(_slot(occ, "cuda.device", "cuda.shares")),
        used_tpu_slots=float(_slot(occ, "tpu.device")), cpu_cur_pct=stats.get("cpu_util_pct"),
        mem_cur_bytes=stats.get("mem_used_bytes"),
    )


def _conds(status: str | None, scaling_group: str | None) -> list[Any]:
    conds: list[Any] = []
    statuses = parse_statuses(status, AGENT_STATUSES, "agent")
    if statuses is not None:
        conds.append(AgentRow.status.in_(statuses))
    if scaling_group is not None:
        conds.append(AgentRow.scaling_group == scaling_group)
    return conds


def _allowed(info: Info, action: str) -> GQLContext:
    ctx = context(info)
    require_roles(ctx, (SUPERADMIN, MONITOR), action)
    return ctx


@strawberry.type
class Query:
    @strawberry.field(description="One agent by ID; null if there is none (superadmin and monitor only).")
    async def agent(self, info: Info, agent_id: str) -> Agent | None:
        ctx = _allowed(info, "Looking at an agent")
        async with ctx.db() as db:
            row = await db.get(AgentRow, agent_id)
        return None if row is None else to_gql(row, live_stats(ctx.state).get(row.id))

    @strawberry.field(description="All agents, optionally by status (comma-separated) and scaling group.")
    async def agents(
        self, info: Info, status: str | None = None, scaling_group: str | None = None
    ) -> list[Agent]:
        ctx = _allowed(info, "Listing agents")
        conds = _conds(status, scaling_group)
        async with ctx.db() as db:
            rows = (await db.execute(select(AgentRow).where(*conds).order_by(AgentRow.id))).scalars().all()
        return [to_gql(r, live_stats(ctx.state).get(r.id)) for r in rows]

    @strawberry.field(description="One page of agents (superadmin and monitor only).")
    async def agent_list(
        self, info: Info, limit: int = 20, offset: int = 0, order_key: str | None = None,
        order_asc: bool | None = True, scaling_group: str | None = None, status: str | None = None,
        filter: str | None = None, order: str | None = None,
    ) -> AgentList:
        ctx = _allowed(info, "Listing agents")
        check_page(limit, offset)
        conds = _conds(status, scaling_group)
        extra = filter_clause(filter, AGENT_COLUMNS)
        if extra is not None:
            conds.append(extra)
        ordering = order_clauses(AGENT_COLUMNS, order_key=order_key, order_asc=order_asc, order=order,
                                 default=[AgentRow.id.asc()])
        async with ctx.db() as db:
            total = (await db.execute(select(func.count()).select_from(AgentRow).where(*conds))).scalar_one()
            rows = (
                await db.execute(select(AgentRow).where(*conds).order_by(*ordering, AgentRow.id)
                                 .limit(limit).offset(offset))
            ).scalars().all()
        return AgentList(items=[to_gql(r, live_stats(ctx.state).get(r.id)) for r in rows], total_count=total)
