"""GraphQL groups (projects): queries scoped by role, and mutations for superadmins and domain admins."""

from __future__ import annotations

import uuid
from collections import defaultdict
from collections.abc import Sequence
from datetime import datetime
from typing import Any

import strawberry
from sqlalchemy import delete, insert, select
from sqlalchemy.ext.asyncio import AsyncSession
from strawberry.types import Info

from ai.backend.common.problems import Conflict, Forbidden, InvalidAPIParameters, NotFound

from ...accounts import check_choice
from ...models import DomainRow, ProjectRow, UserRow, group_members, sgroups_for_groups
from .context import GQLContext, context
from .inputs import check_slug, check_str_list, check_uuid, parse_slots, updates_from
from .mutations import Payload, commit_or_conflict
from .permissions import ADMIN, MONITOR, SUPERADMIN, require_roles, scoped_domain
from .scalars import JSONString


@strawberry.type
class Group:
    id: strawberry.ID
    name: str
    description: str | None
    is_active: bool
    created_at: datetime
    modified_at: datetime | None
    domain_name: str
    total_resource_slots: JSONString
    allowed_vfolder_hosts: list[str]
    integration_id: str | None
    scaling_groups: list[str]


async def load_groups(db: AsyncSession, conds: Sequence[Any]) -> list[Group]:
    """Groups matching ``conds`` with their scaling groups, in two queries."""
    rows = (
        (await db.execute(select(ProjectRow).where(*conds).order_by(ProjectRow.domain_name, ProjectRow.name)))
        .scalars()
        .all()
    )
    sgroups: dict[uuid.UUID, list[str]] = defaultdict(list)
    if rows:
        for sg, gid in (
            await db.execute(
                select(sgroups_for_groups.c.scaling_group, sgroups_for_groups.c.group)
                .where(sgroups_for_groups.c.group.in_([r.id for r in rows]))
                .order_by(sgroups_for_groups.c.scaling_group)
            )
        ).all():
            sgroups[gid].append(sg)
    return [
        Group(
            id=strawberry.ID(str(r.id)),
            name=r.name,
            description=r.description,
            is_active=r.is_active,
            created_at=r.created_at,
            modified_at=r.modified_at,
            domain_name=r.domain_name,
            total_resource_slots=r.total_resource_slots or {},
            allowed_vfolder_hosts=list(r.allowed_vfolder_hosts or []),
            integration_id=r.integration_id,
            scaling_groups=sgroups[r.id],
        )
        for r in rows
    ]


def _visibility(ctx: GQLContext, domain_name: str | None, action: str) -> list[Any]:
    """Conditions limiting groups to what the caller may see."""
    if ctx.role in (SUPERADMIN, MONITOR, ADMIN):
        dom = scoped_domain(ctx, domain_name, action)
        return [] if dom is None else [ProjectRow.domain_name == dom]
    conds: list[Any] = [
        ProjectRow.id.in_(select(group_members.c.group_id).where(group_members.c.user_id == ctx.auth.user_uuid))
    ]
    if domain_name is not None:
        conds.append(ProjectRow.domain_name == domain_name)
    return conds


@strawberry.type
class Query:
    @strawberry.field(description="A group by id: any for superadmins, own domain for admins, own memberships else.")
    async def group(self, info: Info, id: uuid.UUID, domain_name: str | None = None) -> Group | None:
        ctx = context(info)
        gid = check_uuid(id, "Group id")
        async with ctx.db() as db:
            found = await load_groups(db, [ProjectRow.id == gid])
        if not found:
            return None
        g = found[0]
        if domain_name is not None and g.domain_name != domain_name:
            return None
        async with ctx.db() as db:
            visible = await load_groups(db, [ProjectRow.id == gid, *_visibility(ctx, None, "Reading a group")])
        if not visible:
            raise Forbidden("You may not look at this group.")
        return g

    @strawberry.field(description="Groups visible to the caller, optionally in one domain.")
    async def groups(self, info: Info, domain_name: str | None = None, is_active: bool | None = None) -> list[Group]:
        ctx = context(info)
        conds = _visibility(ctx, domain_name, "Listing groups")
        if is_active is not None:
            conds.append(ProjectRow.is_active == is_active)
        async with ctx.db() as db:
            return await load_groups(db, conds)

    @strawberry.field(description="Groups with the given name (names are unique per domain).")
    async def groups_by_name(self, info: Info, name: str, domain_name: str | None = None) -> list[Group]:
        ctx = context(info)
        conds = [*_visibility(ctx, domain_name, "Listing groups"), ProjectRow.name == name]
        async with ctx.db() as db:
            return await load_groups(db, conds)


@strawberry.input
class GroupInput:
    domain_name: str
    description: str | None = ""
    is_active: bool | None = True
    total_resource_slots: JSONString | None = strawberry.UNSET
    allowed_vfolder_hosts: list[str] | None = strawberry.UNSET
    integration_id: str | None = None


@strawberry.input
class ModifyGroupInput:
    name: str | None = strawberry.UNSET
    description: str | None = strawberry.UNSET
    is_active: bool | None = strawberry.UNSET
    domain_name: str | None = strawberry.UNSET
    total_resource_slots: JSONString | None = strawberry.UNSET
    user_update_mode: str | None = strawberry.UNSET
    user_uuids: list[str] | None = strawberry.UNSET
    allowed_vfolder_hosts: list[str] | None = strawberry.UNSET
    integration_id: str | None = strawberry.UNSET


@strawberry.type
class CreateGroup(Payload):
    group: Group | None = None


@strawberry.type
class ModifyGroup(Payload):
    group: Group | None = None


@strawberry.type
class DeleteGroup(Payload):
    pass


_FIELDS = (
    "name",
    "description",
    "is_active",
    "domain_name",
    "total_resource_slots",
    "allowed_vfolder_hosts",
    "integration_id",
)


def _check_domain_admin(ctx: GQLContext, domain_name: str, action: str) -> None:
    require_roles(ctx, (SUPERADMIN, ADMIN), action)
    if ctx.role == ADMIN and domain_name != ctx.auth.domain_name:
        raise Forbidden(f"{action}: domain admins may act only within their own domain ({ctx.auth.domain_name}).")


def _clean(values: dict[str, Any]) -> dict[str, Any]:
    if "name" in values:
        values["name"] = check_slug(str(values["name"]), "Group name")
    if "total_resource_slots" in values:
        values["total_resource_slots"] = parse_slots(values["total_resource_slots"])
    if "allowed_vfolder_hosts" in values:
        values["allowed_vfolder_hosts"] = check_str_list(values["allowed_vfolder_hosts"], "allowed_vfolder_hosts")
    return values


async def _find_group(
    db: AsyncSession, ctx: GQLContext, gid: uuid.UUID | None, name: str | None, domain_name: str | None
) -> ProjectRow:
    if gid:
        row = await db.get(ProjectRow, gid)
    elif name:
        dom = domain_name or ctx.auth.domain_name
        row = (
            await db.execute(select(ProjectRow).where(ProjectRow.name == name, ProjectRow.domain_name == dom))
        ).scalar_one_or_none()
    else:
        raise InvalidAPIParameters("Name the group with gid (its id) or name.")
    if row is None:
        raise NotFound(f"No such group: {gid or name!r}.")
    return row


@strawberry.type
class Mutation:
    @strawberry.mutation
    async def create_group(self, info: Info, name: str, props: GroupInput) -> CreateGroup:
        ctx = context(info)
        _check_domain_admin(ctx, props.domain_name, "Creating a group")
        values = _clean(updates_from(props, _FIELDS))
        values["name"] = check_slug(name, "Group name")
        async with ctx.db() as db:
            if await db.get(DomainRow, props.domain_name) is None:
                raise NotFound(f"No such domain: {props.domain_name!r}.")
            exists = (
                await db.execute(
                    select(ProjectRow.id).where(ProjectRow.name == name, ProjectRow.domain_name == props.domain_name)
                )
            ).first()
            if exists:
                raise Conflict(f"Domain {props.domain_name!r} already has a group named {name!r}.")
            row = ProjectRow(**values)
            db.add(row)
            await commit_or_conflict(db, f"Group {name!r}")
            created = await load_groups(db, [ProjectRow.id == row.id])
        return CreateGroup(ok=True, msg="success", group=created[0])

    @strawberry.mutation(description="Modify a group named by gid (or by name within props.domain_name).")
    async def modify_group(
        self, info: Info, props: ModifyGroupInput, gid: uuid.UUID | None = None, name: str | None = None
    ) -> ModifyGroup:
        ctx = context(info)
        require_roles(ctx, (SUPERADMIN, ADMIN), "Modifying a group")
        values = _clean(updates_from(props, _FIELDS))
        mode = updates_from(props, ("user_update_mode",)).get("user_update_mode")
        uuids = updates_from(props, ("user_uuids",)).get("user_uuids") or []
        async with ctx.db() as db:
            lookup_domain = props.domain_name if isinstance(props.domain_name, str) else None
            row = await _find_group(db, ctx, gid, name, lookup_domain)
            _check_domain_admin(ctx, row.domain_name, "Modifying a group")
            if "domain_name" in values and values["domain_name"] != row.domain_name:
                _check_domain_admin(ctx, values["domain_name"], "Moving a group")
                if await db.get(DomainRow, values["domain_name"]) is None:
                    raise NotFound(f"No such domain: {values['domain_name']!r}.")
            if uuids:
                if mode is None:
                    raise InvalidAPIParameters("user_update_mode ('add' or 'remove') is required with user_uuids.")
                check_choice(mode, ("add", "remove"), "user_update_mode")
            elif not values:
                raise InvalidAPIParameters("Nothing to update: give at least one property.")
            target_domain = values.get("domain_name", row.domain_name)
            new_name = values.get("name", row.name)
            if (new_name, target_domain) != (row.name, row.domain_name):
                clash = (
                    await db.execute(
                        select(ProjectRow.id).where(
                            ProjectRow.name == new_name,
                            ProjectRow.domain_name == target_domain,
                            ProjectRow.id != row.id,
                        )
                    )
                ).first()
                if clash:
                    raise Conflict(f"Domain {target_domain!r} already has a group named {new_name!r}.")
            for key, value in values.items():
                setattr(row, key, value)
            if uuids:
                await _update_members(db, row, mode or "", uuids)
            await commit_or_conflict(db, f"Group {row.name!r}")
            found = await load_groups(db, [ProjectRow.id == row.id])
        return ModifyGroup(ok=True, msg="success", group=found[0])

    @strawberry.mutation(description="Deactivate a group (a soft delete; memberships and data stay).")
    async def delete_group(
        self, info: Info, gid: uuid.UUID | None = None, name: str | None = None, domain_name: str | None = None
    ) -> DeleteGroup:
        ctx = context(info)
        require_roles(ctx, (SUPERADMIN, ADMIN), "Deleting a group")
        async with ctx.db() as db:
            row = await _find_group(db, ctx, gid, name, domain_name)
            _check_domain_admin(ctx, row.domain_name, "Deleting a group")
            row.is_active = False
            row.integration_id = None
            await commit_or_conflict(db, f"Group {row.name!r}")
        return DeleteGroup(ok=True, msg="success")


async def _update_members(db: AsyncSession, group: ProjectRow, mode: str, raw_uuids: list[str]) -> None:
    uuids = [check_uuid(u, "user uuid") for u in raw_uuids]
    users = (await db.execute(select(UserRow.uuid, UserRow.domain_name).where(UserRow.uuid.in_(uuids)))).all()
    known = {u for u, _ in users}
    missing = [str(u) for u in uuids if u not in known]
    if missing:
        raise NotFound(f"No such users: {', '.join(missing)}.")
    foreign = [str(u) for u, dom in users if dom != group.domain_name]
    if foreign:
        raise InvalidAPIParameters(
            f"Users outside domain {group.domain_name!r} cannot join this group: {', '.join(foreign)}."
        )
    if mode == "add":
        current = set(
            (await db.execute(select(group_members.c.user_id).where(group_members.c.group_id == group.id)))
            .scalars()
            .all()
        )
        new = [u for u in dict.fromkeys(uuids) if u not in current]
        if new:
            await db.execute(insert(group_members), [{"group_id": group.id, "user_id": u} for u in new])
    else:
        await db.execute(
            delete(group_members).where(group_members.c.group_id == group.id, group_members.c.user_id.in_(uuids))
        )
