"""GraphQL agents: ``agent``, ``agents`` and ``agent_list`` for superadmins and monitors.

Agents report their capacity by heartbeat (id, address, scaling group, region, version,
architecture, ``available_slots``) and the host's utilisation (CPU %, per core too, memory in use),
which gives ``cpu_cur_pct`` and ``mem_cur_bytes``. The legacy ``*_slots`` fields are derived from
``available_slots``/``occupied_slots`` (``mem_slots`` in MiB).

``live_stat`` is upstream's agent stat object (``{"node": {metric: {...}}, "devices": {metric: {device:
{...}}}}``, what the 22.03 CLI formats) with this server's flat keys (``cpu_util_pct``, ``mem_used_bytes``,
``mem_total_bytes``) kept beside ``node``/``devices`` for older readers.
"""

from __future__ import annotations

from datetime import datetime
from decimal import Decimal
from typing import Any

import strawberry
from sqlalchemy import func, select
from strawberry.types import Info

from ...agents.status import AgentStatus
from ...models import AgentRow, KernelRow, SessionRow
from .context import GQLContext, context
from .filters import filter_clause
from .pagination import check_page, order_clauses
from .permissions import MONITOR, SUPERADMIN, require_roles
from .scalars import JSONString
from .sessions import KERNEL_STATUSES, ComputeContainer, container_to_gql, parse_statuses

AGENT_STATUSES = tuple(AgentStatus)
AGENT_COLUMNS: dict[str, Any] = {
    "id": AgentRow.id,
    "status": AgentRow.status,
    "status_changed": AgentRow.status_changed,
    "region": AgentRow.region,
    "scaling_group": AgentRow.scaling_group,
    "schedulable": AgentRow.schedulable,
    "addr": AgentRow.addr,
    "first_contact": AgentRow.first_contact,
    "lost_at": AgentRow.lost_at,
    "last_heartbeat": AgentRow.last_heartbeat,
    "version": AgentRow.version,
    "architecture": AgentRow.architecture,
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
    available_slots: JSONString
    occupied_slots: JSONString
    addr: str
    architecture: str
    first_contact: datetime | None
    lost_at: datetime | None
    last_heartbeat: datetime | None
    live_stat: JSONString | None
    hardware_metadata: JSONString | None
    version: str | None
    compute_plugins: JSONString
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
        conds: list[Any] = [KernelRow.agent == str(self.id)]
        statuses = parse_statuses(status, KERNEL_STATUSES, "container")
        if statuses is not None:
            conds.append(KernelRow.status.in_(statuses))
        async with ctx.db() as db:
            rows = (
                await db.execute(
                    select(KernelRow, SessionRow.resource_opts)
                    .join(SessionRow, SessionRow.id == KernelRow.session_id)
                    .where(*conds)
                    .order_by(KernelRow.created_at, KernelRow.id)
                )
            ).all()
        return [container_to_gql(k, opts, ctx.role == SUPERADMIN, ctx.state) for k, opts in rows]


@strawberry.type
class AgentList:
    items: list[Agent]
    total_count: int


def _metric(current: float | int | None, capacity: float | int | None, unit: str) -> dict[str, Any]:
    pct = None if current is None or not capacity else round(100.0 * float(current) / float(capacity), 2)
    return {
        "current": None if current is None else str(current),
        "capacity": None if capacity is None else str(capacity),
        "pct": None if pct is None else str(pct),
        "unit_hint": unit,
    }


def agent_live_stat(stats: dict[str, float], cores: dict[str, float]) -> dict[str, Any]:
    """Upstream's agent stat object (node and per-device metrics) plus the flat keys of ``stats``."""
    per_core = {c: _metric(p, 100, "percent") for c, p in sorted(cores.items(), key=lambda kv: int(kv[0]))}
    cpu_pct = stats.get("cpu_util_pct")
    node_cpu = _metric(
        None if cpu_pct is None else round(cpu_pct * max(len(cores), 1), 1), 100 * max(len(cores), 1), "percent"
    )
    node_cpu["pct"] = None if cpu_pct is None else str(cpu_pct)
    node: dict[str, Any] = {"cpu_util": node_cpu}
    devices: dict[str, Any] = {"cpu_util": per_core}
    if "mem_used_bytes" in stats and "mem_total_bytes" in stats:
        mem = _metric(int(stats["mem_used_bytes"]), int(stats["mem_total_bytes"]), "bytes")
        node["mem"] = mem
        devices["mem"] = {"root": mem}
    return {**stats, "node": node, "devices": devices}


def _hardware_metadata(avail: dict[str, Any], stats: dict[str, float], cores: dict[str, float]) -> dict[str, Any]:
    cpu_count = len(cores) or int(_slot(avail, "cpu"))
    mem_total = int(stats.get("mem_total_bytes") or _slot(avail, "mem"))
    return {
        "cpu": {"status": "healthy", "status_info": None, "metadata": {"num_cores": str(cpu_count)}},
        "mem": {"status": "healthy", "status_info": None, "metadata": {"total_bytes": str(mem_total)}},
    }


def to_gql(row: AgentRow, stats: dict[str, float] | None = None, cores: dict[str, float] | None = None) -> Agent:
    """An agent row as its GraphQL object, with the host utilisation of its latest heartbeat."""
    stats, cores = stats or {}, cores or {}
    avail, occ = row.available_slots or {}, row.occupied_slots or {}
    return Agent(
        id=strawberry.ID(row.id),
        status=row.status,
        status_changed=row.status_changed,
        region=row.region,
        scaling_group=row.scaling_group,
        schedulable=row.schedulable,
        available_slots=avail,
        occupied_slots=occ,
        addr=row.addr,
        architecture=row.architecture,
        first_contact=row.first_contact,
        lost_at=row.lost_at,
        last_heartbeat=row.last_heartbeat,
        live_stat=agent_live_stat(stats, cores),
        hardware_metadata=_hardware_metadata(avail, stats, cores),
        version=row.version,
        compute_plugins=row.compute_plugins or {},
        mem_slots=int(_slot(avail, "mem") // _MIB),
        cpu_slots=float(_slot(avail, "cpu")),
        gpu_slots=float(_slot(avail, "cuda.device", "cuda.shares")),
        tpu_slots=float(_slot(avail, "tpu.device")),
        used_mem_slots=int(_slot(occ, "mem") // _MIB),
        used_cpu_slots=float(_slot(occ, "cpu")),
        used_gpu_slots=float(_slot(occ, "cuda.device", "cuda.shares")),
        used_tpu_slots=float(_slot(occ, "tpu.device")),
        cpu_cur_pct=stats.get("cpu_util_pct"),
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


def _with_stats(ctx: GQLContext, row: AgentRow) -> Agent:
    store = ctx.state.agent_stats
    return to_gql(row, store.get(row.id), store.cores(row.id))


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
        return None if row is None else _with_stats(ctx, row)

    @strawberry.field(description="All agents, optionally by status (comma-separated) and scaling group.")
    async def agents(self, info: Info, status: str | None = None, scaling_group: str | None = None) -> list[Agent]:
        ctx = _allowed(info, "Listing agents")
        conds = _conds(status, scaling_group)
        async with ctx.db() as db:
            rows = (await db.execute(select(AgentRow).where(*conds).order_by(AgentRow.id))).scalars().all()
        return [_with_stats(ctx, r) for r in rows]

    @strawberry.field(description="One page of agents (superadmin and monitor only).")
    async def agent_list(
        self,
        info: Info,
        limit: int = 20,
        offset: int = 0,
        order_key: str | None = None,
        order_asc: bool | None = True,
        scaling_group: str | None = None,
        status: str | None = None,
        filter: str | None = None,
        order: str | None = None,
    ) -> AgentList:
        ctx = _allowed(info, "Listing agents")
        check_page(limit, offset)
        conds = _conds(status, scaling_group)
        extra = filter_clause(filter, AGENT_COLUMNS)
        if extra is not None:
            conds.append(extra)
        ordering = order_clauses(
            AGENT_COLUMNS, order_key=order_key, order_asc=order_asc, order=order, default=[AgentRow.id.asc()]
        )
        async with ctx.db() as db:
            total = (await db.execute(select(func.count()).select_from(AgentRow).where(*conds))).scalar_one()
            rows = (
                (
                    await db.execute(
                        select(AgentRow).where(*conds).order_by(*ordering, AgentRow.id).limit(limit).offset(offset)
                    )
                )
                .scalars()
                .all()
            )
        return AgentList(items=[_with_stats(ctx, r) for r in rows], total_count=total)
