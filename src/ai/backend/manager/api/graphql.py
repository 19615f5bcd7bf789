"""Admin GraphQL (``/admin/gql`` and ``/admin/graphql``): compute session queries for now.

Field names are snake_case as upstream clients send them. Users see only their own sessions;
admins may filter by another access key (domain admins within their domain).
"""

from __future__ import annotations

import json
import logging
import uuid
from datetime import datetime
from typing import Any, NewType

import strawberry
from fastapi import APIRouter, Depends, Request
from fastapi.responses import JSONResponse
from graphql import GraphQLError
from sqlalchemy import func, select
from strawberry.schema.config import StrawberryConfig
from strawberry.types import Info

from ai.backend.common.problems import InvalidAPIParameters

from ..auth import AuthContext
from ..models import Group, KeyPair, SessionRow, User
from ..models.sessions import ACTIVE_STATUSES
from ..registry import SessionRegistry
from .deps import auth_required, json_body

log = logging.getLogger(__name__)

JSONString = strawberry.scalar(
    NewType("JSONString", object),
    serialize=lambda v: json.dumps(v),
    parse_value=lambda v: json.loads(v) if isinstance(v, str) else v,
    description="A JSON document encoded as a string.",
)

ORDERABLE = {"created_at", "status_changed", "name", "status", "terminated_at", "image"}


@strawberry.type
class ComputeSession:
    id: strawberry.ID
    session_id: strawberry.ID
    name: str
    type: str
    image: str
    registry: str
    tag: str | None
    cluster_mode: str
    cluster_size: int
    domain_name: str
    group_id: strawberry.ID
    group_name: str | None
    user_id: strawberry.ID
    user_email: str | None
    access_key: str
    status: str
    status_info: str | None
    status_data: JSONString | None  # type: ignore[valid-type]
    status_changed: datetime | None
    created_at: datetime
    terminated_at: datetime | None
    starts_at: datetime | None
    startup_command: str | None
    result: str
    scaling_group: str | None
    occupied_slots: JSONString  # type: ignore[valid-type]
    occupying_slots: JSONString  # type: ignore[valid-type]
    requested_slots: JSONString  # type: ignore[valid-type]
    resource_opts: JSONString  # type: ignore[valid-type]
    service_ports: JSONString  # type: ignore[valid-type]
    mounts: list[str]
    num_queries: int


@strawberry.type
class UserInfo:
    email: str | None
    full_name: str | None


@strawberry.type
class KeyPairType:
    user_id: str
    access_key: str
    secret_key: str
    is_active: bool
    is_admin: bool
    created_at: datetime
    modified_at: datetime | None
    last_used: datetime | None
    resource_policy: str
    rate_limit: int
    num_queries: int
    concurrency_used: int
    user_info: UserInfo
    ssh_public_key: str | None = None
    ssh_private_key: str | None = None
    dotfiles: str = "[]"
    bootstrap_script: str = ""


@strawberry.type
class ComputeSessionList:
    items: list[ComputeSession]
    total_count: int


def _to_gql(row: SessionRow, group_name: str | None, email: str | None) -> ComputeSession:
    return ComputeSession(
        id=strawberry.ID(str(row.id)), session_id=strawberry.ID(str(row.id)), name=row.name,
        type=row.session_type, image=row.image, registry="local", tag=row.tag, cluster_mode=row.cluster_mode,
        cluster_size=row.cluster_size, domain_name=row.domain_name, group_id=strawberry.ID(str(row.group_id)),
        group_name=group_name, user_id=strawberry.ID(str(row.user_uuid)), user_email=email,
        access_key=row.access_key, status=row.status, status_info=row.status_info, status_data=row.status_data,
        status_changed=row.status_changed, created_at=row.created_at, terminated_at=row.terminated_at,
        starts_at=row.starts_at, startup_command=row.startup_command, result=row.result,
        scaling_group=row.scaling_group, occupied_slots=row.occupying_slots, occupying_slots=row.occupying_slots,
        requested_slots=row.requested_slots, resource_opts=row.resource_opts, service_ports=[], mounts=[],
        num_queries=row.num_queries,
    )


async def _scope_conditions(ctx: AuthContext, reg: SessionRegistry, access_key: str | None) -> list[Any]:
    if access_key is None:
        if ctx.is_superadmin:
            return []
        if ctx.is_admin:
            return [SessionRow.domain_name == ctx.domain_name]
        return [SessionRow.access_key == ctx.access_key]
    owner = await reg.resolve_owner(ctx, access_key)
    return [SessionRow.access_key == owner]


def _base_query(conds: list[Any]) -> Any:
    return (
        select(SessionRow, Group.name, User.email)
        .join(Group, Group.id == SessionRow.group_id, isouter=True)
        .join(KeyPair, KeyPair.access_key == SessionRow.access_key, isouter=True)
        .join(User, User.uuid == KeyPair.user, isouter=True)
        .where(*conds)
    )


def _order(order: str | None) -> list[Any]:
    if not order:
        return [SessionRow.status_changed.desc()]
    out = []
    for part in order.split(","):
        part = part.strip()
        desc = part.startswith("-")
        key = part.lstrip("+-")
        if key not in ORDERABLE:
            raise GraphQLError(f"Cannot order by {key!r}; use one of {', '.join(sorted(ORDERABLE))}.")
        col = getattr(SessionRow, key)
        out.append(col.desc() if desc else col.asc())
    return out


@strawberry.type
class Query:
    @strawberry.field
    async def compute_session_list(
        self, info: Info, limit: int = 20, offset: int = 0, status: str | None = None,
        access_key: str | None = None, domain_name: str | None = None, group_id: str | None = None,
        filter: str | None = None, order: str | None = None,
    ) -> ComputeSessionList:
        ctx: AuthContext = info.context["auth"]
        reg: SessionRegistry = info.context["registry"]
        if not (0 < limit <= 100) or offset < 0:
            raise GraphQLError("limit must be 1..100 and offset ≥ 0.")
        if filter:
            raise GraphQLError("The filter argument is not supported yet by this server.")
        conds = await _scope_conditions(ctx, reg, access_key)
        if status:
            conds.append(SessionRow.status.in_([s.strip().upper() for s in status.split(",") if s.strip()]))
        if domain_name:
            conds.append(SessionRow.domain_name == domain_name)
        if group_id:
            try:
                conds.append(SessionRow.group_id == uuid.UUID(group_id))
            except ValueError:
                raise GraphQLError(f"group_id {group_id!r} is not a UUID.") from None
        async with reg.db() as db:
            total = (
                await db.execute(select(func.count()).select_from(SessionRow).where(*conds))
            ).scalar_one()
            rows = (
                await db.execute(_base_query(conds).order_by(*_order(order)).limit(limit).offset(offset))
            ).all()
        return ComputeSessionList(items=[_to_gql(r[0], r[1], r[2]) for r in rows], total_count=total)

    @strawberry.field
    async def keypair(self, info: Info, domain_name: str | None = None,
                      access_key: str | None = None) -> KeyPairType | None:
        """The caller's keypair, or another one for admins."""
        return await _keypair(info, access_key)

    @strawberry.field
    async def compute_session(self, info: Info, id: strawberry.ID) -> ComputeSession | None:
        ctx: AuthContext = info.context["auth"]
        reg: SessionRegistry = info.context["registry"]
        conds = await _scope_conditions(ctx, reg, None)
        try:
            conds.append(SessionRow.id == uuid.UUID(str(id)))
        except ValueError:
            raise GraphQLError(f"id {id!r} is not a UUID.") from None
        async with reg.db() as db:
            row = (await db.execute(_base_query(conds))).first()
        return None if row is None else _to_gql(row[0], row[1], row[2])


async def _keypair(info: Info, access_key: str | None) -> KeyPairType | None:
    ctx: AuthContext = info.context["auth"]
    reg: SessionRegistry = info.context["registry"]
    ak = await reg.resolve_owner(ctx, access_key)
    async with reg.db() as db:
        row = (
            await db.execute(
                select(KeyPair, User).join(User, User.uuid == KeyPair.user).where(KeyPair.access_key == ak)
            )
        ).first()
        if row is None:
            return None
        used = (
            await db.execute(
                select(func.count()).select_from(SessionRow).where(
                    SessionRow.access_key == ak, SessionRow.status.in_(ACTIVE_STATUSES)
                )
            )
        ).scalar_one()
    kp, user = row
    return KeyPairType(
        user_id=kp.user_id, access_key=kp.access_key, secret_key=kp.secret_key, is_active=kp.is_active,
        is_admin=kp.is_admin, created_at=kp.created_at, modified_at=kp.modified_at, last_used=kp.last_used,
        resource_policy=kp.resource_policy, rate_limit=kp.rate_limit, num_queries=kp.num_queries,
        concurrency_used=used, user_info=UserInfo(email=user.email, full_name=user.full_name),
    )


schema = strawberry.Schema(query=Query, config=StrawberryConfig(auto_camel_case=False))
router = APIRouter()


async def _run(request: Request, ctx: AuthContext) -> tuple[Any, list[dict[str, Any]]]:
    body = await json_body(request)
    query = body.get("query")
    if not isinstance(query, str) or not query.strip():
        raise InvalidAPIParameters("'query' must be a non-empty GraphQL document string.")
    variables = body.get("variables") or {}
    if not isinstance(variables, dict):
        raise InvalidAPIParameters("'variables' must be an object.")
    result = await schema.execute(
        query, variable_values=variables,
        context_value={"auth": ctx, "registry": request.app.state.registry},
    )
    errors: list[dict[str, Any]] = []
    for err in result.errors or []:
        orig = err.original_error
        if orig is not None and not isinstance(orig, GraphQLError) and not hasattr(orig, "status"):
            log.error("GraphQL resolver error", exc_info=orig)
            errors.append({"message": "Internal error while resolving this field.", "path": err.path})
        else:
            errors.append({"message": getattr(orig, "detail", None) or err.message, "path": err.path,
                           "locations": [loc._asdict() for loc in err.locations or []]})
    return result.data, errors


@router.post("/admin/gql")
async def gql(request: Request, ctx: AuthContext = Depends(auth_required)) -> JSONResponse:
    data, errors = await _run(request, ctx)
    payload: dict[str, Any] = {"data": data}
    if errors:
        payload["errors"] = errors
    return JSONResponse(payload)


@router.post("/admin/graphql")
async def graphql_legacy(request: Request, ctx: AuthContext = Depends(auth_required)) -> JSONResponse:
    data, errors = await _run(request, ctx)
    if errors:
        return JSONResponse(
            {"type": "https://api.backend.ai/probs/graphql-error", "title": "GraphQL-generated error",
             "detail": errors[0]["message"], "data": errors},
            status_code=400, media_type="application/problem+json",
        )
    return JSONResponse(data)
