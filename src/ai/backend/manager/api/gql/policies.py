"""GraphQL keypair resource policies: queries for everyone (users see their own), superadmin mutations."""

from __future__ import annotations

from collections.abc import Sequence
from datetime import datetime
from typing import Any

import strawberry
from sqlalchemy import func, select
from sqlalchemy.ext.asyncio import AsyncSession
from strawberry.types import Info

from ai.backend.common.problems import Conflict, Forbidden, InvalidAPIParameters, NotFound

from ...accounts import check_choice
from ...models import KeyPairResourcePolicyRow as PolicyRow
from ...models import KeyPairRow
from .context import GQLContext, context
from .inputs import check_nonneg, check_slug, check_str_list, parse_slots, updates_from
from .mutations import Payload, commit_or_conflict
from .permissions import ADMIN, MONITOR, SUPERADMIN, require_superadmin
from .scalars import BigInt, JSONString

DEFAULT_FOR_UNSPECIFIED = ("LIMITED", "UNLIMITED")


@strawberry.type
class KeyPairResourcePolicy:
    name: str
    created_at: datetime
    default_for_unspecified: str
    total_resource_slots: JSONString
    max_session_lifetime: int
    max_concurrent_sessions: int
    max_containers_per_session: int
    idle_timeout: BigInt
    max_vfolder_count: int
    max_vfolder_size: BigInt
    allowed_vfolder_hosts: list[str]


def _to_gql(r: PolicyRow) -> KeyPairResourcePolicy:
    return KeyPairResourcePolicy(
        name=r.name,
        created_at=r.created_at,
        default_for_unspecified=r.default_for_unspecified,
        total_resource_slots=r.total_resource_slots or {},
        max_session_lifetime=r.max_session_lifetime,
        max_concurrent_sessions=r.max_concurrent_sessions,
        max_containers_per_session=r.max_containers_per_session,
        idle_timeout=r.idle_timeout,
        max_vfolder_count=r.max_vfolder_count,
        max_vfolder_size=r.max_vfolder_size,
        allowed_vfolder_hosts=list(r.allowed_vfolder_hosts or []),
    )


async def _load(db: AsyncSession, conds: Sequence[Any]) -> list[KeyPairResourcePolicy]:
    rows = (await db.execute(select(PolicyRow).where(*conds).order_by(PolicyRow.name))).scalars().all()
    return [_to_gql(r) for r in rows]


def _own_policies(ctx: GQLContext) -> Any:
    return select(KeyPairRow.resource_policy).where(KeyPairRow.user == ctx.auth.user_uuid)


@strawberry.type
class Query:
    @strawberry.field(description="A policy by name; without one, the policy of the caller's keypair.")
    async def keypair_resource_policy(self, info: Info, name: str | None = None) -> KeyPairResourcePolicy | None:
        ctx = context(info)
        target = name or ctx.auth.resource_policy
        conds: list[Any] = [PolicyRow.name == target]
        async with ctx.db() as db:
            found = await _load(db, conds)
            if found and ctx.role not in (SUPERADMIN, ADMIN, MONITOR) and target != ctx.auth.resource_policy:
                if not await _load(db, [*conds, PolicyRow.name.in_(_own_policies(ctx))]):
                    raise Forbidden("You may only read the resource policies of your own keypairs.")
        return found[0] if found else None

    @strawberry.field(description="All policies for admins; the policies of the caller's keypairs otherwise.")
    async def keypair_resource_policies(self, info: Info) -> list[KeyPairResourcePolicy]:
        ctx = context(info)
        conds: list[Any] = []
        if ctx.role not in (SUPERADMIN, ADMIN, MONITOR):
            conds.append(PolicyRow.name.in_(_own_policies(ctx)))
        async with ctx.db() as db:
            return await _load(db, conds)


@strawberry.input
class CreateKeyPairResourcePolicyInput:
    default_for_unspecified: str
    total_resource_slots: JSONString
    max_concurrent_sessions: int
    max_containers_per_session: int
    idle_timeout: BigInt
    max_vfolder_count: int
    max_vfolder_size: BigInt
    allowed_vfolder_hosts: list[str] | None = None
    max_session_lifetime: int | None = 0


@strawberry.input
class ModifyKeyPairResourcePolicyInput:
    default_for_unspecified: str | None = strawberry.UNSET
    total_resource_slots: JSONString | None = strawberry.UNSET
    max_concurrent_sessions: int | None = strawberry.UNSET
    max_containers_per_session: int | None = strawberry.UNSET
    idle_timeout: BigInt | None = strawberry.UNSET
    max_vfolder_count: int | None = strawberry.UNSET
    max_vfolder_size: BigInt | None = strawberry.UNSET
    allowed_vfolder_hosts: list[str] | None = strawberry.UNSET
    max_session_lifetime: int | None = strawberry.UNSET


@strawberry.type
class CreateKeyPairResourcePolicy(Payload):
    resource_policy: KeyPairResourcePolicy | None = None


@strawberry.type
class ModifyKeyPairResourcePolicy(Payload):
    resource_policy: KeyPairResourcePolicy | None = None


@strawberry.type
class DeleteKeyPairResourcePolicy(Payload):
    pass


_FIELDS = (
    "default_for_unspecified",
    "total_resource_slots",
    "max_concurrent_sessions",
    "max_containers_per_session",
    "idle_timeout",
    "max_vfolder_count",
    "max_vfolder_size",
    "allowed_vfolder_hosts",
    "max_session_lifetime",
)
_COUNTS = (
    "max_concurrent_sessions",
    "max_containers_per_session",
    "idle_timeout",
    "max_vfolder_count",
    "max_vfolder_size",
    "max_session_lifetime",
)


def _clean(values: dict[str, Any]) -> dict[str, Any]:
    out = dict(values)
    if "default_for_unspecified" in out:
        out["default_for_unspecified"] = check_choice(
            str(out["default_for_unspecified"]).upper(), DEFAULT_FOR_UNSPECIFIED, "default_for_unspecified"
        )
    if "total_resource_slots" in out:
        out["total_resource_slots"] = parse_slots(out["total_resource_slots"])
    if "allowed_vfolder_hosts" in out:
        out["allowed_vfolder_hosts"] = check_str_list(out["allowed_vfolder_hosts"], "allowed_vfolder_hosts")
    for key in _COUNTS:
        if key in out:
            check_nonneg(int(out[key]), key)
    if out.get("max_containers_per_session") == 0:
        raise InvalidAPIParameters("max_containers_per_session must be at least 1.")
    return out


@strawberry.type
class Mutation:
    @strawberry.mutation
    async def create_keypair_resource_policy(
        self,
        info: Info,
        name: str,
        props: CreateKeyPairResourcePolicyInput,
    ) -> CreateKeyPairResourcePolicy:
        ctx = context(info)
        require_superadmin(ctx, "Creating a keypair resource policy")
        check_slug(name, "Policy name", 256)
        values = _clean(updates_from(props, _FIELDS))
        async with ctx.db() as db:
            if await db.get(PolicyRow, name) is not None:
                raise Conflict(f"A keypair resource policy named {name!r} already exists.")
            row = PolicyRow(name=name, **values)
            db.add(row)
            await commit_or_conflict(db, f"Policy {name!r}")
            created = _to_gql(row)
        return CreateKeyPairResourcePolicy(ok=True, msg="success", resource_policy=created)

    @strawberry.mutation
    async def modify_keypair_resource_policy(
        self,
        info: Info,
        name: str,
        props: ModifyKeyPairResourcePolicyInput,
    ) -> ModifyKeyPairResourcePolicy:
        ctx = context(info)
        require_superadmin(ctx, "Modifying a keypair resource policy")
        values = _clean(updates_from(props, _FIELDS))
        if not values:
            raise InvalidAPIParameters("Nothing to update: give at least one property.")
        async with ctx.db() as db:
            row = await db.get(PolicyRow, name)
            if row is None:
                raise NotFound(f"No such keypair resource policy: {name!r}.")
            for key, value in values.items():
                setattr(row, key, value)
            await commit_or_conflict(db, f"Policy {name!r}")
            modified = _to_gql(row)
        return ModifyKeyPairResourcePolicy(ok=True, msg="success", resource_policy=modified)

    @strawberry.mutation(description="Delete a policy that no keypair uses (superadmin only).")
    async def delete_keypair_resource_policy(self, info: Info, name: str) -> DeleteKeyPairResourcePolicy:
        ctx = context(info)
        require_superadmin(ctx, "Deleting a keypair resource policy")
        async with ctx.db() as db:
            row = await db.get(PolicyRow, name)
            if row is None:
                raise NotFound(f"No such keypair resource policy: {name!r}.")
            users = (
                await db.execute(select(func.count()).select_from(KeyPairRow).where(KeyPairRow.resource_policy == name))
            ).scalar_one()
            if users:
                raise Conflict(f"Policy {name!r} is used by {users} keypair(s); move them to another policy first.")
            await db.delete(row)
            await commit_or_conflict(db, f"Policy {name!r}")
        return DeleteKeyPairResourcePolicy(ok=True, msg="success")
