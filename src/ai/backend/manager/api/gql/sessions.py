"""GraphQL compute sessions and their containers (kernels).

Queries: ``compute_session``, ``compute_session_list``, ``compute_container`` and
``compute_container_list``. Scoping follows the role matrix: superadmins and monitors see every
domain, domain admins their own domain (any group, other users), users only their own access key.
A ``domain_name`` outside the caller's scope is a 403; ``group_id``/``access_key`` filters narrow
the result within the scope. ``ComputeContainer.agent`` is shown to superadmins only.

The v4 (19.09) fields of ``ComputeSession`` (``sess_id``, ``sess_type``, ``role``, ``agent`` and the
Container Stats Object values such as ``cpu_used`` or ``mem_cur_bytes``) come from the main kernel: its
live stats while it runs, else its last sample; ``compute_session(sess_id:)`` finds a session by name.
"""

from __future__ import annotations

import uuid
from collections.abc import Sequence
from datetime import UTC, datetime
from typing import TYPE_CHECKING, Any, cast

import strawberry
from sqlalchemy import func, or_, select
from sqlalchemy.ext.asyncio import AsyncSession
from strawberry.types import Info

from ai.backend.common.problems import Forbidden, InvalidAPIParameters, NotFound

from ...images import registry_of
from ...models import KernelRow, ProjectRow, SessionRow, UserRow
from ...models.sessions import KERNEL_ORDER, MAIN_KERNEL_JOIN
from ...sessions.cluster import local_rank
from ...sessions.status import TERMINAL
from ...sessions.status import SessionStatus as S
from .context import GQLContext, context
from .filters import filter_clause
from .inputs import check_uuid
from .pagination import check_page, order_clauses
from .permissions import SUPERADMIN, USER, scoped_domain
from .scalars import BigInt, JSONString

if TYPE_CHECKING:
    from ...context import ManagerContext

# The statuses a status filter accepts: the ones this server uses plus those of the upstream enum that
# clients name in their filters (BUILDING, PREPARED, CREATING, RESIZING, SUSPENDED); those match nothing here.
SESSION_STATUSES = (
    "PENDING",
    "SCHEDULED",
    "PREPARING",
    "BUILDING",
    "PULLING",
    "PREPARED",
    "CREATING",
    "RUNNING",
    "RESTARTING",
    "RESIZING",
    "SUSPENDED",
    "RUNNING_DEGRADED",
    "TERMINATING",
    "TERMINATED",
    "ERROR",
    "CANCELLED",
)
KERNEL_STATUSES = SESSION_STATUSES
# The seed's legacy role names for cluster kernels map onto main/sub.
_ROLE_ALIASES = {"master": "main", "slave": "sub"}

SESSION_COLUMNS: dict[str, Any] = {
    "id": SessionRow.id,
    "session_id": SessionRow.id,
    "name": SessionRow.name,
    "type": SessionRow.session_type,
    "image": SessionRow.image,
    "tag": SessionRow.tag,
    "status": SessionRow.status,
    "status_info": SessionRow.status_info,
    "status_changed": SessionRow.status_changed,
    "created_at": SessionRow.created_at,
    "terminated_at": SessionRow.terminated_at,
    "starts_at": SessionRow.starts_at,
    "result": SessionRow.result,
    "access_key": SessionRow.access_key,
    "domain_name": SessionRow.domain_name,
    "group_id": SessionRow.group_id,
    "user_id": SessionRow.user_uuid,
    "scaling_group": SessionRow.scaling_group,
    "cluster_mode": SessionRow.cluster_mode,
    "cluster_size": SessionRow.cluster_size,
    "num_queries": SessionRow.num_queries,
    "group_name": ProjectRow.name,
    "user_email": UserRow.email,
}
CONTAINER_COLUMNS: dict[str, Any] = {
    "id": KernelRow.id,
    "role": KernelRow.cluster_role,
    "idx": KernelRow.cluster_idx,
    "hostname": KernelRow.cluster_hostname,
    "status": KernelRow.status,
    "status_changed": KernelRow.status_changed,
    "created_at": KernelRow.created_at,
    "terminated_at": KernelRow.terminated_at,
    "image": KernelRow.image,
}


@strawberry.type(
    description="One container (kernel) of a compute session. `agent` is shown to superadmins "
    "only; `live_stat` is the Container Stats Object of the agent's latest heartbeat."
)
class ComputeContainer:
    id: strawberry.ID
    idx: int
    role: str
    hostname: str
    cluster_idx: int
    cluster_role: str
    cluster_hostname: str
    local_rank: int  # zero-based over the whole session: main1 is 0, subN is N
    session_id: strawberry.ID
    image: str
    registry: str
    status: str
    status_changed: datetime | None
    status_info: str | None
    created_at: datetime
    terminated_at: datetime | None
    agent: str | None  # superadmins only; null for everyone else
    container_id: str | None
    resource_opts: JSONString
    occupied_slots: JSONString
    live_stat: JSONString | None
    last_stat: JSONString | None
    exit_code: int | None
    status_data: JSONString | None  # {"kernel": {"exit_code"}} once ended, else null


@strawberry.type
class ComputeContainerList:
    items: list[ComputeContainer]
    total_count: int


def _live_stat(k: KernelRow, state: ManagerContext | None) -> dict[str, int] | None:
    """A running kernel's Container Stats Object from its agent's latest heartbeat (kept in the manager's
    ``state``)."""
    return state.kernel_stats.get(str(k.id)) if state is not None and k.status == S.RUNNING else None


def container_to_gql(
    k: KernelRow, resource_opts: dict[str, Any] | None, show_agent: bool, state: ManagerContext | None = None
) -> ComputeContainer:
    """A kernel row as a :class:`ComputeContainer` (``agent`` hidden unless ``show_agent``)."""
    live = _live_stat(k, state)
    return ComputeContainer(
        id=strawberry.ID(str(k.id)),
        idx=k.cluster_idx,
        role=k.cluster_role,
        hostname=k.cluster_hostname,
        cluster_idx=k.cluster_idx,
        cluster_role=k.cluster_role,
        cluster_hostname=k.cluster_hostname,
        local_rank=local_rank(k.cluster_role, k.cluster_idx),
        session_id=strawberry.ID(str(k.session_id)),
        image=k.image,
        registry=registry_of(k.image),
        status=k.status,
        status_changed=k.status_changed,
        status_info=k.status_info,
        created_at=k.created_at,
        terminated_at=k.terminated_at,
        agent=k.agent if show_agent else None,
        container_id=k.container_id,
        resource_opts=resource_opts or {},
        occupied_slots=k.occupied_slots or {},
        live_stat=live,
        last_stat=k.last_stat or None,
        exit_code=k.exit_code,
        status_data={"kernel": {"exit_code": k.exit_code}} if k.exit_code is not None else None,
    )


def _kernel_stats(k: KernelRow | None, state: ManagerContext | None) -> dict[str, int]:
    """The main kernel's Container Stats Object: live while it runs, else its last sample (``{}``: none)."""
    if k is None:
        return {}
    return dict(_live_stat(k, state) or k.last_stat or {})


@strawberry.type
class ComputeSession:
    id: strawberry.ID
    session_id: strawberry.ID
    name: str
    type: str
    image: str
    registry: str
    tag: str | None
    cluster_template: str | None
    cluster_mode: str
    cluster_size: int
    domain_name: str
    group_id: strawberry.ID
    group_name: str | None
    user_id: strawberry.ID
    user_email: str | None
    access_key: str
    created_user_email: str | None
    created_user_uuid: strawberry.ID | None
    status: str
    status_info: str | None
    status_data: JSONString | None
    status_changed: datetime | None
    created_at: datetime
    terminated_at: datetime | None
    starts_at: datetime | None
    startup_command: str | None
    result: str
    scaling_group: str | None
    occupied_slots: JSONString
    occupying_slots: JSONString
    requested_slots: JSONString
    resource_opts: JSONString
    service_ports: JSONString
    mounts: list[str]
    num_queries: BigInt
    created_user_id: strawberry.ID | None  # 22.03 spelling of created_user_uuid
    # v4 (19.09) legacy fields; the stats are the main kernel's (0 when there is no sample yet).
    sess_id: str  # the session name
    sess_type: str
    role: str | None  # the main kernel's cluster_role
    agent: str | None  # the main kernel's agent (superadmins only)
    cpu_used: BigInt  # milliseconds
    cpu_using: float  # average CPU use in percent of one core since the session was created
    mem_cur_bytes: BigInt
    mem_max_bytes: BigInt
    net_rx_bytes: BigInt
    net_tx_bytes: BigInt
    io_read_bytes: BigInt
    io_write_bytes: BigInt
    io_max_scratch_size: BigInt
    io_cur_scratch_size: BigInt

    @strawberry.field(description="The session's containers (kernels), main first.")
    async def containers(self, info: Info) -> list[ComputeContainer]:
        ctx = context(info)
        async with ctx.db() as db:
            rows = (
                (
                    await db.execute(
                        select(KernelRow)
                        .where(KernelRow.session_id == uuid.UUID(str(self.id)))
                        .order_by(*KERNEL_ORDER, KernelRow.created_at)
                    )
                )
                .scalars()
                .all()
            )
        show = ctx.role == SUPERADMIN
        opts = cast(dict[str, Any], self.resource_opts)  # _to_gql set it from the row's dict
        return [container_to_gql(k, opts, show, ctx.state) for k in rows]

    @strawberry.field(description="Sessions this one depends on; always empty (no pipelines on this server).")
    def dependencies(self) -> list[ComputeSession]:
        return []


@strawberry.type
class ComputeSessionList:
    items: list[ComputeSession]
    total_count: int


def _cpu_using(cpu_used_ms: int, row: SessionRow) -> float:
    end = row.terminated_at or datetime.now(UTC)
    created = row.created_at if row.created_at.tzinfo else row.created_at.replace(tzinfo=UTC)
    end = end if end.tzinfo else end.replace(tzinfo=UTC)
    elapsed_ms = (end - created).total_seconds() * 1000
    return round(100.0 * cpu_used_ms / elapsed_ms, 1) if elapsed_ms > 0 else 0.0


def _to_gql(
    row: SessionRow, group_name: str | None, email: str | None, main: KernelRow | None, ctx: GQLContext
) -> ComputeSession:
    stats = _kernel_stats(main, ctx.state)
    ports = main.service_ports if main is not None else None
    return ComputeSession(
        id=strawberry.ID(str(row.id)),
        session_id=strawberry.ID(str(row.id)),
        name=row.name,
        type=row.session_type,
        image=row.image,
        registry=registry_of(row.image),
        tag=row.tag,
        cluster_template=None,
        cluster_mode=row.cluster_mode,
        cluster_size=row.cluster_size,
        domain_name=row.domain_name,
        group_id=strawberry.ID(str(row.group_id)),
        group_name=group_name,
        user_id=strawberry.ID(str(row.user_uuid)),
        user_email=email,
        access_key=row.access_key,
        created_user_email=email,
        created_user_uuid=strawberry.ID(str(row.user_uuid)),
        status=row.status,
        status_info=row.status_info,
        status_data=row.status_data,
        status_changed=row.status_changed,
        created_at=row.created_at,
        terminated_at=row.terminated_at,
        starts_at=row.starts_at,
        startup_command=row.startup_command,
        result=row.result,
        scaling_group=row.scaling_group,
        occupied_slots=row.occupying_slots or {},
        occupying_slots=row.occupying_slots or {},
        requested_slots=row.requested_slots or {},
        resource_opts=row.resource_opts or {},
        service_ports=ports or [],
        mounts=[],
        num_queries=row.num_queries,
        created_user_id=strawberry.ID(str(row.user_uuid)),
        sess_id=row.name,
        sess_type=row.session_type,
        role=main.cluster_role if main is not None else None,
        agent=main.agent if main is not None and ctx.role == SUPERADMIN else None,
        cpu_used=stats.get("cpu_used", 0),
        cpu_using=_cpu_using(stats.get("cpu_used", 0), row),
        **{k: stats.get(k, 0) for k in _LEGACY_STAT_KEYS},
    )


_LEGACY_STAT_KEYS = (
    "mem_cur_bytes",
    "mem_max_bytes",
    "net_rx_bytes",
    "net_tx_bytes",
    "io_read_bytes",
    "io_write_bytes",
    "io_max_scratch_size",
    "io_cur_scratch_size",
)


def parse_statuses(raw: str | None, allowed: Sequence[str], what: str) -> list[str] | None:
    """A comma-separated status list, upper-cased and checked; ``None`` when not given."""
    if raw is None or not raw.strip():
        return None
    out = [s.strip().upper() for s in raw.split(",") if s.strip()]
    bad = [s for s in out if s not in allowed]
    if bad:
        raise InvalidAPIParameters(f"Unknown {what} status {', '.join(bad)}; use one of: {', '.join(allowed)}.")
    return out


def session_scope(
    ctx: GQLContext,
    *,
    domain_name: str | None = None,
    group_id: str | None = None,
    access_key: str | None = None,
) -> list[Any]:
    """WHERE conditions limiting sessions to what the caller may see, narrowed by the given filters."""
    conds: list[Any] = []
    domain = scoped_domain(ctx, domain_name, "Listing compute sessions")
    if domain is not None:
        conds.append(SessionRow.domain_name == domain)
    if ctx.role == USER:
        if access_key is not None and access_key != ctx.auth.access_key:
            raise Forbidden("Users may only look at the sessions of their own access key.")
        conds.append(SessionRow.access_key == ctx.auth.access_key)
    elif access_key is not None:
        conds.append(SessionRow.access_key == access_key)
    if group_id is not None:
        conds.append(SessionRow.group_id == check_uuid(group_id, "group_id"))
    return conds


def _session_query(conds: Sequence[Any]) -> Any:
    return (
        select(SessionRow, ProjectRow.name, UserRow.email, KernelRow)
        .join(ProjectRow, ProjectRow.id == SessionRow.group_id, isouter=True)
        .join(UserRow, UserRow.uuid == SessionRow.user_uuid, isouter=True)
        .join(KernelRow, MAIN_KERNEL_JOIN, isouter=True)
        .where(*conds)
    )


async def _visible_session(db: AsyncSession, ctx: GQLContext, session_id: uuid.UUID) -> SessionRow | None:
    conds = session_scope(ctx)
    return (await db.execute(select(SessionRow).where(SessionRow.id == session_id, *conds))).scalar_one_or_none()


@strawberry.type
class Query:
    @strawberry.field(description="One page of compute sessions within the caller's scope.")
    async def compute_session_list(
        self,
        info: Info,
        limit: int = 20,
        offset: int = 0,
        order_key: str | None = None,
        order_asc: bool | None = True,
        domain_name: str | None = None,
        group_id: str | None = None,
        access_key: str | None = None,
        status: str | None = None,
        filter: str | None = None,
        order: str | None = None,
    ) -> ComputeSessionList:
        ctx = context(info)
        check_page(limit, offset)
        conds = session_scope(ctx, domain_name=domain_name, group_id=group_id, access_key=access_key)
        statuses = parse_statuses(status, SESSION_STATUSES, "session")
        if statuses is not None:
            conds.append(SessionRow.status.in_(statuses))
        extra = filter_clause(filter, SESSION_COLUMNS)
        if extra is not None:
            conds.append(extra)
        ordering = order_clauses(
            SESSION_COLUMNS,
            order_key=order_key,
            order_asc=order_asc,
            order=order,
            default=[SessionRow.created_at.desc()],
        )
        base = _session_query(conds)
        async with ctx.db() as db:
            total = (await db.execute(select(func.count()).select_from(base.subquery()))).scalar_one()
            rows = (await db.execute(base.order_by(*ordering, SessionRow.id).limit(limit).offset(offset))).all()
        return ComputeSessionList(items=[_to_gql(r[0], r[1], r[2], r[3], ctx) for r in rows], total_count=total)

    @strawberry.field(
        description="One compute session by ID, or by name or ID with the v4 `sess_id` (the "
        "caller's own and active sessions first); null when none is in scope."
    )
    async def compute_session(
        self,
        info: Info,
        id: uuid.UUID | None = None,
        sess_id: str | None = None,
    ) -> ComputeSession | None:
        ctx = context(info)
        conds = session_scope(ctx)
        if id is not None:
            conds.append(SessionRow.id == id)
        elif sess_id is not None:
            # A name may look like a UUID: the 19.09 client names sessions with uuid4().hex by default.
            try:
                conds.append(or_(SessionRow.id == uuid.UUID(sess_id), SessionRow.name == sess_id))
            except ValueError:
                conds.append(SessionRow.name == sess_id)
        else:
            raise InvalidAPIParameters("Give the session's 'id' (or the v4 'sess_id').")
        order = (
            SessionRow.access_key != ctx.auth.access_key,
            SessionRow.status.in_(tuple(TERMINAL)),
            SessionRow.created_at.desc(),
        )
        async with ctx.db() as db:
            row = (await db.execute(_session_query(conds).order_by(*order).limit(1))).first()
        return None if row is None else _to_gql(row[0], row[1], row[2], row[3], ctx)

    @strawberry.field(description="One container (kernel) by ID; null when it does not exist or is out of scope.")
    async def compute_container(self, info: Info, id: uuid.UUID) -> ComputeContainer | None:
        ctx = context(info)
        conds = session_scope(ctx)
        async with ctx.db() as db:
            row = (
                await db.execute(
                    select(KernelRow, SessionRow.resource_opts)
                    .join(SessionRow, SessionRow.id == KernelRow.session_id)
                    .where(KernelRow.id == id, *conds)
                )
            ).first()
        return None if row is None else container_to_gql(row[0], row[1], ctx.role == SUPERADMIN, ctx.state)

    @strawberry.field(description="One page of the containers of a session (404 if the session is not visible).")
    async def compute_container_list(
        self,
        info: Info,
        session_id: uuid.UUID,
        limit: int = 20,
        offset: int = 0,
        role: str | None = None,
    ) -> ComputeContainerList:
        ctx = context(info)
        check_page(limit, offset)
        sid = session_id
        conds: list[Any] = [KernelRow.session_id == sid]
        if role is not None:
            conds.append(KernelRow.cluster_role == _ROLE_ALIASES.get(role, role))
        async with ctx.db() as db:
            session = await _visible_session(db, ctx, sid)
            if session is None:
                raise NotFound(f"No compute session {str(sid)!r} that you may see.")
            total = (await db.execute(select(func.count()).select_from(KernelRow).where(*conds))).scalar_one()
            rows = (
                (
                    await db.execute(
                        select(KernelRow)
                        .where(*conds)
                        .order_by(*KERNEL_ORDER, KernelRow.created_at, KernelRow.id)
                        .limit(limit)
                        .offset(offset)
                    )
                )
                .scalars()
                .all()
            )
        show = ctx.role == SUPERADMIN
        return ComputeContainerList(
            items=[container_to_gql(k, session.resource_opts, show, ctx.state) for k in rows], total_count=total
        )


__all__ = [
    "CONTAINER_COLUMNS",
    "ComputeContainer",
    "ComputeContainerList",
    "ComputeSession",
    "ComputeSessionList",
    "KERNEL_STATUSES",
    "Query",
    "container_to_gql",
    "parse_statuses",
    "session_scope",
]
