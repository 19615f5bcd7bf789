"""GraphQL keypairs: scoped queries, ``keypair_list`` and superadmin-only mutations.

Secret keys are shown only to their owner and to superadmins. A deactivated keypair fails
authentication on its next request (authentication reads the keypair row every time).
"""

from __future__ import annotations

import uuid
from collections.abc import Sequence
from datetime import datetime
from typing import Any

import strawberry
from sqlalchemy import func, select
from sqlalchemy.ext.asyncio import AsyncSession
from strawberry.types import Info

from ai.backend.common.problems import Conflict, Forbidden, InvalidAPIParameters, NotFound

from ...accounts import DEFAULT_RATE_LIMIT, add_keypair
from ...models import KeyPairResourcePolicyRow, KeyPairRow, SessionRow, UserRow
from ...models.vfolders import VFolderRow
from ...sessions.status import ACTIVE
from .context import GQLContext, context
from .filters import filter_clause
from .inputs import check_nonneg, updates_from
from .mutations import Payload, commit_or_conflict
from .pagination import check_page, order_clauses
from .permissions import ADMIN, MONITOR, SUPERADMIN, require_roles, require_superadmin, scoped_domain
from .vfolders import VirtualFolder, folder_query, folder_to_gql


@strawberry.type
class UserInfo:
    email: str | None
    full_name: str | None


@strawberry.type
class KeyPair:
    user_id: str
    access_key: str
    secret_key: str | None
    is_active: bool
    is_admin: bool
    is_main: bool
    resource_policy: str
    created_at: datetime
    modified_at: datetime | None
    last_used: datetime | None
    concurrency_used: int
    concurrency_limit: int | None  # the resource policy's max_concurrent_sessions (a v4 field)
    rate_limit: int
    num_queries: int
    user: strawberry.ID
    domain_name: str
    ssh_public_key: str | None
    user_info: UserInfo

    @strawberry.field(description="The virtual folders the keypair's user owns.")
    async def vfolders(self, info: Info) -> list[VirtualFolder]:
        ctx = context(info)
        async with ctx.db() as db:
            rows = (
                await db.execute(
                    folder_query([VFolderRow.user == uuid.UUID(str(self.user))]).order_by(VFolderRow.created_at)
                )
            ).all()
        return [folder_to_gql(vf, email, gname) for vf, email, gname in rows]


@strawberry.type
class KeyPairList:
    items: list[KeyPair]
    total_count: int


_ORDERABLE = {
    "access_key": KeyPairRow.access_key,
    "user_id": KeyPairRow.user_id,
    "email": KeyPairRow.user_id,
    "created_at": KeyPairRow.created_at,
    "last_used": KeyPairRow.last_used,
    "is_active": KeyPairRow.is_active,
    "is_admin": KeyPairRow.is_admin,
    "resource_policy": KeyPairRow.resource_policy,
    "rate_limit": KeyPairRow.rate_limit,
    "num_queries": KeyPairRow.num_queries,
}


def _query(conds: Sequence[Any]) -> Any:
    return select(KeyPairRow, UserRow).join(UserRow, UserRow.uuid == KeyPairRow.user).where(*conds)


async def load_keypairs(
    db: AsyncSession,
    ctx: GQLContext,
    conds: Sequence[Any],
    order: Sequence[Any] = (),
    limit: int | None = None,
    offset: int = 0,
    *,
    reveal: str | None = None,
) -> list[KeyPair]:
    """Keypairs matching ``conds`` with their live session counts. ``reveal`` shows that one's secret."""
    q = _query(conds).order_by(*(order or (KeyPairRow.created_at, KeyPairRow.access_key)))
    if limit is not None:
        q = q.limit(limit).offset(offset)
    rows = (await db.execute(q)).all()
    used: dict[str, int] = {}
    if rows:
        used = dict(
            (
                await db.execute(
                    select(SessionRow.access_key, func.count())
                    .where(SessionRow.access_key.in_([kp.access_key for kp, _ in rows]), SessionRow.status.in_(ACTIVE))
                    .group_by(SessionRow.access_key)
                )
            )
            .tuples()
            .all()
        )
    limits: dict[str, int] = {}
    if rows:
        limits = dict(
            (
                await db.execute(
                    select(KeyPairResourcePolicyRow.name, KeyPairResourcePolicyRow.max_concurrent_sessions).where(
                        KeyPairResourcePolicyRow.name.in_({kp.resource_policy for kp, _ in rows})
                    )
                )
            )
            .tuples()
            .all()
        )
    usage = ctx.state.api_usage
    out = []
    for kp, user in rows:
        mine = kp.user == ctx.auth.user_uuid
        show_secret = mine or ctx.role == SUPERADMIN or kp.access_key == reveal
        out.append(
            KeyPair(
                user_id=kp.user_id,
                access_key=kp.access_key,
                secret_key=kp.secret_key if show_secret else None,
                is_active=kp.is_active,
                is_admin=kp.is_admin,
                is_main=kp.is_main,
                resource_policy=kp.resource_policy,
                created_at=kp.created_at,
                modified_at=kp.modified_at,
                last_used=kp.last_used,
                concurrency_used=used.get(kp.access_key, 0),
                concurrency_limit=limits.get(kp.resource_policy),
                rate_limit=kp.rate_limit,
                num_queries=kp.num_queries + (usage.pending(kp.access_key) if usage else 0),
                user=strawberry.ID(str(kp.user)),
                domain_name=user.domain_name,
                ssh_public_key=kp.ssh_public_key,
                user_info=UserInfo(email=user.email, full_name=user.full_name),
            )
        )
    return out


def _list_conds(ctx: GQLContext, domain_name: str | None, email: str | None, is_active: bool | None) -> list[Any]:
    conds: list[Any] = []
    if ctx.role in (SUPERADMIN, ADMIN, MONITOR):
        dom = scoped_domain(ctx, domain_name, "Listing keypairs")
        if dom is not None:
            conds.append(UserRow.domain_name == dom)
        if email is not None:
            conds.append(KeyPairRow.user_id == email)
    else:
        if email is not None and email != ctx.auth.email:
            raise Forbidden("You may only list your own keypairs.")
        conds.append(KeyPairRow.user == ctx.auth.user_uuid)
    if is_active is not None:
        conds.append(KeyPairRow.is_active == is_active)
    return conds


@strawberry.type
class Query:
    @strawberry.field(description="A keypair by access key; without one, the caller's.")
    async def keypair(
        self, info: Info, domain_name: str | None = None, access_key: str | None = None
    ) -> KeyPair | None:
        ctx = context(info)
        ak = access_key or ctx.auth.access_key
        async with ctx.db() as db:
            found = await load_keypairs(db, ctx, [KeyPairRow.access_key == ak])
        if not found:
            return None
        kp = found[0]
        if kp.user != str(ctx.auth.user_uuid):
            require_roles(ctx, (SUPERADMIN, ADMIN, MONITOR), "Reading another user's keypair")
            if ctx.role == ADMIN and kp.domain_name != ctx.auth.domain_name:
                raise Forbidden("Domain admins may only read keypairs of their own domain.")
        if domain_name is not None and kp.domain_name != domain_name:
            return None
        return kp

    @strawberry.field(description="Keypairs: a user's own; admins' domain; superadmins' all.")
    async def keypairs(
        self, info: Info, domain_name: str | None = None, email: str | None = None, is_active: bool | None = None
    ) -> list[KeyPair]:
        ctx = context(info)
        conds = _list_conds(ctx, domain_name, email, is_active)
        async with ctx.db() as db:
            return await load_keypairs(db, ctx, conds)

    @strawberry.field(description="One page of keypairs.")
    async def keypair_list(
        self,
        info: Info,
        limit: int,
        offset: int,
        order_key: str | None = None,
        order_asc: bool | None = True,
        filter: str | None = None,
        order: str | None = None,
        domain_name: str | None = None,
        email: str | None = None,
        user_id: str | None = None,
        is_active: bool | None = None,
    ) -> KeyPairList:
        ctx = context(info)
        check_page(limit, offset)
        conds = _list_conds(ctx, domain_name, email or user_id, is_active)
        extra = filter_clause(filter, _ORDERABLE)
        if extra is not None:
            conds.append(extra)
        ordering = order_clauses(_ORDERABLE, order_key=order_key, order_asc=order_asc, order=order)
        async with ctx.db() as db:
            total = (
                await db.execute(
                    select(func.count())
                    .select_from(KeyPairRow)
                    .join(UserRow, UserRow.uuid == KeyPairRow.user)
                    .where(*conds)
                )
            ).scalar_one()
            items = await load_keypairs(db, ctx, conds, ordering, limit, offset)
        return KeyPairList(items=items, total_count=total)


@strawberry.input
class KeyPairInput:
    is_active: bool | None = True
    is_admin: bool | None = False
    resource_policy: str | None = "default"
    concurrency_limit: int | None = None  # accepted for old clients; limits live in the resource policy
    rate_limit: int | None = DEFAULT_RATE_LIMIT


@strawberry.input
class ModifyKeyPairInput:
    is_active: bool | None = strawberry.UNSET
    is_admin: bool | None = strawberry.UNSET
    resource_policy: str | None = strawberry.UNSET
    concurrency_limit: int | None = strawberry.UNSET
    rate_limit: int | None = strawberry.UNSET


@strawberry.type
class CreateKeyPair(Payload):
    keypair: KeyPair | None = None


@strawberry.type
class ModifyKeyPair(Payload):
    keypair: KeyPair | None = None


@strawberry.type
class DeleteKeyPair(Payload):
    pass


async def _check_policy(db: AsyncSession, name: str) -> str:
    if await db.get(KeyPairResourcePolicyRow, name) is None:
        raise NotFound(f"No such keypair resource policy: {name!r}.")
    return name


@strawberry.type
class Mutation:
    @strawberry.mutation(description="Create a keypair for the user with e-mail user_id (superadmin only).")
    async def create_keypair(self, info: Info, user_id: str, props: KeyPairInput) -> CreateKeyPair:
        ctx = context(info)
        require_superadmin(ctx, "Creating a keypair")
        async with ctx.db() as db:
            user = (await db.execute(select(UserRow).where(UserRow.email == user_id))).scalar_one_or_none()
            if user is None:
                raise NotFound(f"No such user: {user_id!r}.")
            kp = await add_keypair(
                db,
                user,
                is_active=True if props.is_active is None else props.is_active,
                is_admin=bool(props.is_admin),
                resource_policy=props.resource_policy or "default",
                rate_limit=DEFAULT_RATE_LIMIT if props.rate_limit is None else props.rate_limit,
            )
            ak = kp.access_key
            await commit_or_conflict(db, "The new keypair")
            created = await load_keypairs(db, ctx, [KeyPairRow.access_key == ak], reveal=ak)
        return CreateKeyPair(ok=True, msg="success", keypair=created[0])

    @strawberry.mutation(description="Modify a keypair (superadmin only); deactivation applies at once.")
    async def modify_keypair(self, info: Info, access_key: str, props: ModifyKeyPairInput) -> ModifyKeyPair:
        ctx = context(info)
        require_superadmin(ctx, "Modifying a keypair")
        values = updates_from(props, ("is_active", "is_admin", "resource_policy", "rate_limit"))
        if not values and updates_from(props, ("concurrency_limit",)) == {}:
            raise InvalidAPIParameters("Nothing to update: give at least one property.")
        if "rate_limit" in values:
            check_nonneg(values["rate_limit"], "rate_limit")
        if access_key == ctx.auth.access_key and (values.get("is_active") is False or values.get("is_admin") is False):
            raise Forbidden("You cannot deactivate or demote the keypair you are using.")
        async with ctx.db() as db:
            row = await db.get(KeyPairRow, access_key)
            if row is None:
                raise NotFound(f"No such keypair: {access_key!r}.")
            if "resource_policy" in values:
                await _check_policy(db, values["resource_policy"])
            for key, value in values.items():
                setattr(row, key, value)
            await commit_or_conflict(db, f"Keypair {access_key!r}")
            found = await load_keypairs(db, ctx, [KeyPairRow.access_key == access_key])
        return ModifyKeyPair(ok=True, msg="success", keypair=found[0])

    @strawberry.mutation(description="Delete a keypair that has never run sessions (superadmin only).")
    async def delete_keypair(self, info: Info, access_key: str) -> DeleteKeyPair:
        ctx = context(info)
        require_superadmin(ctx, "Deleting a keypair")
        if access_key == ctx.auth.access_key:
            raise Forbidden("You cannot delete the keypair you are using.")
        async with ctx.db() as db:
            row = await db.get(KeyPairRow, access_key)
            if row is None:
                raise NotFound(f"No such keypair: {access_key!r}.")
            sessions = (
                await db.execute(
                    select(func.count()).select_from(SessionRow).where(SessionRow.access_key == access_key)
                )
            ).scalar_one()
            if sessions:
                raise Conflict(
                    f"Keypair {access_key!r} owns {sessions} session record(s) kept for accounting; "
                    "deactivate it instead."
                )
            await db.delete(row)
            await commit_or_conflict(db, f"Keypair {access_key!r}")
        return DeleteKeyPair(ok=True, msg="success")
