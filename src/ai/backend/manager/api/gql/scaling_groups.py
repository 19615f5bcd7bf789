"""GraphQL scaling groups (resource groups) and their associations with domains, groups and keypairs.

Everything here is superadmin-only (spec §2.14). ``driver`` must be ``static`` (agents join by
heartbeat; there is no auto-scaling driver) and ``scheduler`` one of ``fifo``, ``lifo`` and
``drf``, the orders the scheduler implements; ``scheduler_opts.agent_selection_strategy``, when given,
is ``dispersed`` or ``concentrated``. A scaling group that still has agents or active
sessions cannot be deleted (409).
"""

from __future__ import annotations

from collections.abc import Sequence
from datetime import datetime
from typing import Any

import strawberry
from sqlalchemy import delete, func, insert, select
from sqlalchemy.ext.asyncio import AsyncSession
from strawberry.types import Info

from ai.backend.common.problems import Conflict, InvalidAPIParameters, NotFound

from ...accounts import check_choice
from ...models import (
    AgentRow,
    DomainRow,
    KeyPairRow,
    ProjectRow,
    ScalingGroupRow,
    SessionRow,
    sgroups_for_domains,
    sgroups_for_groups,
)
from ...models import sgroups_for_keypairs as sgroups_for_keypairs_table
from ...scheduler import POLICIES as SCHEDULERS
from ...scheduler import scheduler_opts_error
from ...sessions.status import ACTIVE
from .context import GQLContext, context
from .inputs import check_slug, check_uuid, parse_json_object, updates_from
from .mutations import Payload, commit_or_conflict
from .permissions import require_superadmin
from .scalars import JSONString

DRIVERS = ("static",)


@strawberry.type(description="A scaling group (resource group): a partition of agents with its scheduling policy.")
class ScalingGroup:
    name: str
    description: str | None
    is_active: bool
    is_public: bool
    created_at: datetime
    driver: str
    driver_opts: JSONString
    scheduler: str
    scheduler_opts: JSONString
    use_host_network: bool
    wsproxy_addr: str | None
    wsproxy_api_token: str | None


def to_gql(row: ScalingGroupRow) -> ScalingGroup:
    """A scaling-group row as its GraphQL object."""
    return ScalingGroup(
        name=row.name,
        description=row.description,
        is_active=row.is_active,
        is_public=row.is_public,
        created_at=row.created_at,
        driver=row.driver,
        driver_opts=row.driver_opts or {},
        scheduler=row.scheduler,
        scheduler_opts=row.scheduler_opts or {},
        use_host_network=row.use_host_network,
        wsproxy_addr=row.wsproxy_addr,
        wsproxy_api_token=row.wsproxy_api_token,
    )


async def _list(db: AsyncSession, conds: Sequence[Any], is_active: bool | None) -> list[ScalingGroup]:
    q = select(ScalingGroupRow).where(*conds)
    if is_active is not None:
        q = q.where(ScalingGroupRow.is_active == is_active)
    rows = (await db.execute(q.order_by(ScalingGroupRow.name))).scalars().all()
    return [to_gql(r) for r in rows]


# --- lookups that refuse unknown references with 404 ------------------------------------------------


async def get_sgroup(db: AsyncSession, name: str) -> ScalingGroupRow:
    row = await db.get(ScalingGroupRow, name)
    if row is None:
        raise NotFound(f"No such scaling group: {name!r}.")
    return row


async def _get_domain(db: AsyncSession, name: str) -> DomainRow:
    row = await db.get(DomainRow, name)
    if row is None:
        raise NotFound(f"No such domain: {name!r}.")
    return row


async def _get_group(db: AsyncSession, group_id: str) -> ProjectRow:
    row = await db.get(ProjectRow, check_uuid(group_id, "user_group"))
    if row is None:
        raise NotFound(f"No such group (project): {group_id!r}.")
    return row


async def _get_keypair(db: AsyncSession, access_key: str) -> KeyPairRow:
    row = await db.get(KeyPairRow, access_key)
    if row is None:
        raise NotFound(f"No such keypair: {access_key!r}.")
    return row


# --- validation -------------------------------------------------------------------------------------


def _clean(values: dict[str, Any]) -> dict[str, Any]:
    """Validate given properties; ``null`` leaves a property unchanged, ``""`` clears the wsproxy fields."""
    out: dict[str, Any] = {}
    for key, value in values.items():
        if key == "driver":
            value = check_choice(value, DRIVERS, "driver")
        elif key == "scheduler":
            value = check_choice(value, SCHEDULERS, "scheduler")
        elif key in ("driver_opts", "scheduler_opts"):
            value = parse_json_object(value, key)
            problem = scheduler_opts_error(value) if key == "scheduler_opts" else None
            if problem:
                raise InvalidAPIParameters(problem)
        elif key == "wsproxy_addr":
            if value == "":
                value = None
            elif len(value) > 1024 or not value.startswith(("http://", "https://")):
                raise InvalidAPIParameters(
                    "wsproxy_addr must be an http:// or https:// URL of at most 1024 characters."
                )
        elif key == "wsproxy_api_token":
            if value == "":
                value = None
            elif len(value) > 256:
                raise InvalidAPIParameters("wsproxy_api_token must be at most 256 characters.")
        out[key] = value
    return out


_FIELDS = (
    "description",
    "is_active",
    "is_public",
    "driver",
    "driver_opts",
    "scheduler",
    "scheduler_opts",
    "use_host_network",
    "wsproxy_addr",
    "wsproxy_api_token",
)


@strawberry.input
class ScalingGroupInput:
    driver: str
    scheduler: str
    description: str | None = ""
    is_active: bool | None = True
    is_public: bool | None = True
    driver_opts: JSONString | None = strawberry.UNSET
    scheduler_opts: JSONString | None = strawberry.UNSET
    use_host_network: bool | None = False
    wsproxy_addr: str | None = None
    wsproxy_api_token: str | None = None


@strawberry.input
class ModifyScalingGroupInput:
    description: str | None = strawberry.UNSET
    is_active: bool | None = strawberry.UNSET
    is_public: bool | None = strawberry.UNSET
    driver: str | None = strawberry.UNSET
    driver_opts: JSONString | None = strawberry.UNSET
    scheduler: str | None = strawberry.UNSET
    scheduler_opts: JSONString | None = strawberry.UNSET
    use_host_network: bool | None = strawberry.UNSET
    wsproxy_addr: str | None = strawberry.UNSET
    wsproxy_api_token: str | None = strawberry.UNSET


@strawberry.type
class CreateScalingGroup(Payload):
    scaling_group: ScalingGroup | None = None


@strawberry.type
class ModifyScalingGroup(Payload):
    pass


@strawberry.type
class DeleteScalingGroup(Payload):
    pass


@strawberry.type
class AssociateScalingGroupWithDomain(Payload):
    pass


@strawberry.type
class AssociateScalingGroupWithUserGroup(Payload):
    pass


@strawberry.type
class AssociateScalingGroupWithKeyPair(Payload):
    pass


@strawberry.type
class DisassociateScalingGroupWithDomain(Payload):
    pass


@strawberry.type
class DisassociateScalingGroupWithUserGroup(Payload):
    pass


@strawberry.type
class DisassociateScalingGroupWithKeyPair(Payload):
    pass


@strawberry.type
class DisassociateAllScalingGroupsWithDomain(Payload):
    pass


@strawberry.type
class DisassociateAllScalingGroupsWithGroup(Payload):
    pass


def _superadmin(info: Info, action: str) -> GQLContext:
    ctx = context(info)
    require_superadmin(ctx, action)
    return ctx


@strawberry.type
class Query:
    @strawberry.field(description="One scaling group by name (superadmin only); null if there is none.")
    async def scaling_group(self, info: Info, name: str | None = None) -> ScalingGroup | None:
        ctx = _superadmin(info, "Looking at a scaling group")
        if name is None:
            raise InvalidAPIParameters("scaling_group needs the name argument.")
        async with ctx.db() as db:
            row = await db.get(ScalingGroupRow, name)
        return None if row is None else to_gql(row)

    @strawberry.field(description="All scaling groups, or the one called name (superadmin only).")
    async def scaling_groups(
        self, info: Info, name: str | None = None, is_active: bool | None = None
    ) -> list[ScalingGroup]:
        ctx = _superadmin(info, "Listing scaling groups")
        conds = [] if name is None else [ScalingGroupRow.name == name]
        async with ctx.db() as db:
            return await _list(db, conds, is_active)

    @strawberry.field(description="The scaling groups associated with a domain (superadmin only).")
    async def scaling_groups_for_domain(
        self, info: Info, domain: str, is_active: bool | None = None
    ) -> list[ScalingGroup]:
        ctx = _superadmin(info, "Listing the scaling groups of a domain")
        async with ctx.db() as db:
            await _get_domain(db, domain)
            names = select(sgroups_for_domains.c.scaling_group).where(sgroups_for_domains.c.domain == domain)
            return await _list(db, [ScalingGroupRow.name.in_(names)], is_active)

    @strawberry.field(description="The scaling groups associated with a group, by group ID (superadmin only).")
    async def scaling_groups_for_user_group(
        self, info: Info, user_group: str, is_active: bool | None = None
    ) -> list[ScalingGroup]:
        ctx = _superadmin(info, "Listing the scaling groups of a group")
        async with ctx.db() as db:
            group = await _get_group(db, user_group)
            names = select(sgroups_for_groups.c.scaling_group).where(sgroups_for_groups.c.group == group.id)
            return await _list(db, [ScalingGroupRow.name.in_(names)], is_active)

    @strawberry.field(description="The scaling groups associated with a keypair (superadmin only).")
    async def scaling_groups_for_keypair(
        self, info: Info, access_key: str, is_active: bool | None = None
    ) -> list[ScalingGroup]:
        ctx = _superadmin(info, "Listing the scaling groups of a keypair")
        t = sgroups_for_keypairs_table
        async with ctx.db() as db:
            await _get_keypair(db, access_key)
            names = select(t.c.scaling_group).where(t.c.access_key == access_key)
            return await _list(db, [ScalingGroupRow.name.in_(names)], is_active)


async def _associate(db: AsyncSession, table: Any, values: dict[str, Any], what: str) -> None:
    conds = [table.c[k] == v for k, v in values.items()]
    exists = (await db.execute(select(func.count()).select_from(table).where(*conds))).scalar_one()
    if exists:
        raise Conflict(f"{what} is already associated.")
    await db.execute(insert(table).values(**values))
    await commit_or_conflict(db, what)


async def _disassociate(db: AsyncSession, table: Any, values: dict[str, Any], what: str) -> None:
    conds = [table.c[k] == v for k, v in values.items()]
    result = await db.execute(delete(table).where(*conds))
    if getattr(result, "rowcount", 0) == 0:
        raise NotFound(f"{what} is not associated.")
    await commit_or_conflict(db, what)


@strawberry.type
class Mutation:
    @strawberry.mutation(description="Create a scaling group (superadmin only).")
    async def create_scaling_group(self, info: Info, name: str, props: ScalingGroupInput) -> CreateScalingGroup:
        ctx = _superadmin(info, "Creating a scaling group")
        check_slug(name, "Scaling group name")
        values = _clean(updates_from(props, _FIELDS))
        for key in ("driver", "scheduler"):
            if key not in values:
                raise InvalidAPIParameters(f"A scaling group needs a {key}.")
        async with ctx.db() as db:
            if await db.get(ScalingGroupRow, name) is not None:
                raise Conflict(f"A scaling group named {name!r} already exists.")
            row = ScalingGroupRow(name=name, **values)
            db.add(row)
            await commit_or_conflict(db, f"Scaling group {name!r}")
            await db.refresh(row)
            created = to_gql(row)
        return CreateScalingGroup(ok=True, msg="success", scaling_group=created)

    @strawberry.mutation(description="Change a scaling group's properties (superadmin only).")
    async def modify_scaling_group(self, info: Info, name: str, props: ModifyScalingGroupInput) -> ModifyScalingGroup:
        ctx = _superadmin(info, "Modifying a scaling group")
        values = _clean(updates_from(props, _FIELDS))
        async with ctx.db() as db:
            row = await get_sgroup(db, name)
            for key, value in values.items():
                setattr(row, key, value)
            await commit_or_conflict(db, f"Scaling group {name!r}")
        return ModifyScalingGroup(ok=True, msg="success")

    @strawberry.mutation(description="Delete a scaling group that has no agents and no active sessions.")
    async def delete_scaling_group(self, info: Info, name: str) -> DeleteScalingGroup:
        ctx = _superadmin(info, "Deleting a scaling group")
        async with ctx.db() as db:
            row = await get_sgroup(db, name)
            agents = (
                (await db.execute(select(AgentRow.id).where(AgentRow.scaling_group == name).order_by(AgentRow.id)))
                .scalars()
                .all()
            )
            if agents:
                raise Conflict(
                    f"Scaling group {name!r} still has agents ({', '.join(agents)}); move or remove them first."
                )
            active = (
                await db.execute(
                    select(func.count())
                    .select_from(SessionRow)
                    .where(SessionRow.scaling_group == name, SessionRow.status.in_(ACTIVE))
                )
            ).scalar_one()
            if active:
                raise Conflict(f"Scaling group {name!r} still has {active} active session(s).")
            for table in (sgroups_for_domains, sgroups_for_groups, sgroups_for_keypairs_table):
                await db.execute(delete(table).where(table.c.scaling_group == name))
            await db.delete(row)
            await commit_or_conflict(db, f"Scaling group {name!r}")
        return DeleteScalingGroup(ok=True, msg="success")

    @strawberry.mutation
    async def associate_scaling_group_with_domain(
        self, info: Info, domain: str, scaling_group: str
    ) -> AssociateScalingGroupWithDomain:
        ctx = _superadmin(info, "Associating a scaling group with a domain")
        async with ctx.db() as db:
            await get_sgroup(db, scaling_group)
            await _get_domain(db, domain)
            await _associate(
                db,
                sgroups_for_domains,
                {"scaling_group": scaling_group, "domain": domain},
                f"Scaling group {scaling_group!r} with domain {domain!r}",
            )
        return AssociateScalingGroupWithDomain(ok=True, msg="success")

    @strawberry.mutation
    async def associate_scaling_group_with_user_group(
        self, info: Info, scaling_group: str, user_group: str
    ) -> AssociateScalingGroupWithUserGroup:
        ctx = _superadmin(info, "Associating a scaling group with a group")
        async with ctx.db() as db:
            await get_sgroup(db, scaling_group)
            group = await _get_group(db, user_group)
            await _associate(
                db,
                sgroups_for_groups,
                {"scaling_group": scaling_group, "group": group.id},
                f"Scaling group {scaling_group!r} with group {user_group!r}",
            )
        return AssociateScalingGroupWithUserGroup(ok=True, msg="success")

    @strawberry.mutation
    async def associate_scaling_group_with_keypair(
        self, info: Info, access_key: str, scaling_group: str
    ) -> AssociateScalingGroupWithKeyPair:
        ctx = _superadmin(info, "Associating a scaling group with a keypair")
        async with ctx.db() as db:
            await get_sgroup(db, scaling_group)
            await _get_keypair(db, access_key)
            await _associate(
                db,
                sgroups_for_keypairs_table,
                {"scaling_group": scaling_group, "access_key": access_key},
                f"Scaling group {scaling_group!r} with keypair {access_key!r}",
            )
        return AssociateScalingGroupWithKeyPair(ok=True, msg="success")

    @strawberry.mutation
    async def disassociate_scaling_group_with_domain(
        self, info: Info, domain: str, scaling_group: str
    ) -> DisassociateScalingGroupWithDomain:
        ctx = _superadmin(info, "Disassociating a scaling group from a domain")
        async with ctx.db() as db:
            await get_sgroup(db, scaling_group)
            await _get_domain(db, domain)
            await _disassociate(
                db,
                sgroups_for_domains,
                {"scaling_group": scaling_group, "domain": domain},
                f"Scaling group {scaling_group!r} with domain {domain!r}",
            )
        return DisassociateScalingGroupWithDomain(ok=True, msg="success")

    @strawberry.mutation
    async def disassociate_scaling_group_with_user_group(
        self, info: Info, scaling_group: str, user_group: str
    ) -> DisassociateScalingGroupWithUserGroup:
        ctx = _superadmin(info, "Disassociating a scaling group from a group")
        async with ctx.db() as db:
            await get_sgroup(db, scaling_group)
            group = await _get_group(db, user_group)
            await _disassociate(
                db,
                sgroups_for_groups,
                {"scaling_group": scaling_group, "group": group.id},
                f"Scaling group {scaling_group!r} with group {user_group!r}",
            )
        return DisassociateScalingGroupWithUserGroup(ok=True, msg="success")

    @strawberry.mutation
    async def disassociate_scaling_group_with_keypair(
        self, info: Info, access_key: str, scaling_group: str
    ) -> DisassociateScalingGroupWithKeyPair:
        ctx = _superadmin(info, "Disassociating a scaling group from a keypair")
        async with ctx.db() as db:
            await get_sgroup(db, scaling_group)
            await _get_keypair(db, access_key)
            await _disassociate(
                db,
                sgroups_for_keypairs_table,
                {"scaling_group": scaling_group, "access_key": access_key},
                f"Scaling group {scaling_group!r} with keypair {access_key!r}",
            )
        return DisassociateScalingGroupWithKeyPair(ok=True, msg="success")

    @strawberry.mutation
    async def disassociate_all_scaling_groups_with_domain(
        self, info: Info, domain: str
    ) -> DisassociateAllScalingGroupsWithDomain:
        ctx = _superadmin(info, "Disassociating all scaling groups from a domain")
        async with ctx.db() as db:
            await _get_domain(db, domain)
            await db.execute(delete(sgroups_for_domains).where(sgroups_for_domains.c.domain == domain))
            await commit_or_conflict(db, f"Scaling groups of domain {domain!r}")
        return DisassociateAllScalingGroupsWithDomain(ok=True, msg="success")

    @strawberry.mutation
    async def disassociate_all_scaling_groups_with_group(
        self, info: Info, user_group: str
    ) -> DisassociateAllScalingGroupsWithGroup:
        ctx = _superadmin(info, "Disassociating all scaling groups from a group")
        async with ctx.db() as db:
            group = await _get_group(db, user_group)
            await db.execute(delete(sgroups_for_groups).where(sgroups_for_groups.c.group == group.id))
            await commit_or_conflict(db, f"Scaling groups of group {user_group!r}")
        return DisassociateAllScalingGroupsWithGroup(ok=True, msg="success")
