"""GraphQL users: scoped queries, a paginated ``user_list`` and superadmin-only mutations.

Creating a user also creates its main keypair; deleting one is a soft delete that deactivates
its keypairs. Passwords are stored as bcrypt hashes and never returned.
"""

from __future__ import annotations

import uuid
from collections import defaultdict
from collections.abc import Sequence
from datetime import datetime
from typing import Any

import strawberry
from sqlalchemy import delete, func, insert, select, update
from sqlalchemy.ext.asyncio import AsyncSession
from strawberry.types import Info

from ai.backend.common.problems import Conflict, Forbidden, InvalidAPIParameters, NotFound

from ...accounts import ROLES, STATUSES, add_user, check_choice, check_password, resolve_groups
from ...models import DomainRow, KeyPairRow, ProjectRow, UserRow, group_members
from ...passwords import hash_password
from .context import GQLContext, context
from .filters import filter_clause
from .inputs import check_uuid, updates_from
from .mutations import Payload, commit_or_conflict
from .pagination import check_page, order_clauses
from .permissions import ADMIN, MONITOR, SUPERADMIN, USER, require_roles, require_superadmin, scoped_domain


@strawberry.type
class UserGroup:
    id: strawberry.ID
    name: str


@strawberry.type
class User:
    id: strawberry.ID
    uuid: strawberry.ID
    username: str
    email: str
    need_password_change: bool
    full_name: str | None
    description: str | None
    is_active: bool
    status: str
    status_info: str | None
    created_at: datetime
    modified_at: datetime | None
    domain_name: str
    role: str
    groups: list[UserGroup]


@strawberry.type
class UserList:
    items: list[User]
    total_count: int


_ORDERABLE = {
    "email": UserRow.email,
    "username": UserRow.username,
    "full_name": UserRow.full_name,
    "created_at": UserRow.created_at,
    "modified_at": UserRow.modified_at,
    "status": UserRow.status,
    "role": UserRow.role,
    "domain_name": UserRow.domain_name,
}
_FILTERABLE = {**_ORDERABLE, "uuid": UserRow.uuid, "description": UserRow.description}


async def load_users(
    db: AsyncSession, conds: Sequence[Any], order: Sequence[Any] = (), limit: int | None = None, offset: int = 0
) -> list[User]:
    """Users matching ``conds`` with their groups, in two queries."""
    q = select(UserRow).where(*conds).order_by(*(order or (UserRow.created_at, UserRow.email)))
    if limit is not None:
        q = q.limit(limit).offset(offset)
    rows = (await db.execute(q)).scalars().all()
    groups: dict[uuid.UUID, list[UserGroup]] = defaultdict(list)
    if rows:
        for uid, gid, gname in (
            await db.execute(
                select(group_members.c.user_id, ProjectRow.id, ProjectRow.name)
                .join(ProjectRow, ProjectRow.id == group_members.c.group_id)
                .where(group_members.c.user_id.in_([r.uuid for r in rows]))
                .order_by(ProjectRow.name)
            )
        ).all():
            groups[uid].append(UserGroup(id=strawberry.ID(str(gid)), name=gname))
    return [
        User(
            id=strawberry.ID(str(r.uuid)),
            uuid=strawberry.ID(str(r.uuid)),
            username=r.username,
            email=r.email,
            need_password_change=r.need_password_change,
            full_name=r.full_name,
            description=r.description,
            is_active=r.status == "active",
            status=r.status,
            status_info=r.status_info,
            created_at=r.created_at,
            modified_at=r.modified_at,
            domain_name=r.domain_name,
            role=r.role,
            groups=groups[r.uuid],
        )
        for r in rows
    ]


def _list_conds(
    ctx: GQLContext, domain_name: str | None, group_id: uuid.UUID | None, is_active: bool | None, status: str | None
) -> list[Any]:
    require_roles(ctx, (SUPERADMIN, ADMIN, MONITOR), "Listing users")
    conds: list[Any] = []
    dom = scoped_domain(ctx, domain_name, "Listing users")
    if dom is not None:
        conds.append(UserRow.domain_name == dom)
    if group_id is not None:
        conds.append(UserRow.uuid.in_(select(group_members.c.user_id).where(group_members.c.group_id == group_id)))
    if status is not None:  # status wins over the legacy is_active flag
        conds.append(UserRow.status.in_([check_choice(s.strip(), STATUSES, "status") for s in status.split(",")]))
    elif is_active is not None:
        conds.append(UserRow.status == "active" if is_active else UserRow.status != "active")
    return conds


async def _one_user(ctx: GQLContext, cond: Any, is_self: bool, domain_name: str | None) -> User | None:
    if not is_self:
        require_roles(ctx, (SUPERADMIN, ADMIN, MONITOR), "Reading another user")
    async with ctx.db() as db:
        found = await load_users(db, [cond])
    if not found:
        return None
    user = found[0]
    if domain_name is not None and user.domain_name != domain_name:
        return None
    if ctx.role == ADMIN and user.domain_name != ctx.auth.domain_name:
        raise Forbidden("Domain admins may only read users of their own domain.")
    return user


@strawberry.type
class Query:
    @strawberry.field(description="A user by e-mail; without one, the caller.")
    async def user(self, info: Info, domain_name: str | None = None, email: str | None = None) -> User | None:
        ctx = context(info)
        target = email or ctx.auth.email
        return await _one_user(ctx, UserRow.email == target, target == ctx.auth.email, domain_name)

    @strawberry.field(description="A user by UUID; without one, the caller.")
    async def user_from_uuid(
        self, info: Info, domain_name: str | None = None, user_id: str | None = None
    ) -> User | None:
        ctx = context(info)
        uid = check_uuid(user_id, "user_id") if user_id else ctx.auth.user_uuid
        return await _one_user(ctx, UserRow.uuid == uid, uid == ctx.auth.user_uuid, domain_name)

    @strawberry.field(description="Users (admins: their domain; superadmins: all).")
    async def users(
        self,
        info: Info,
        domain_name: str | None = None,
        group_id: uuid.UUID | None = None,
        is_active: bool | None = None,
        status: str | None = None,
    ) -> list[User]:
        ctx = context(info)
        conds = _list_conds(ctx, domain_name, group_id, is_active, status)
        async with ctx.db() as db:
            return await load_users(db, conds)

    @strawberry.field(description="One page of users.")
    async def user_list(
        self,
        info: Info,
        limit: int,
        offset: int,
        order_key: str | None = None,
        order_asc: bool | None = True,
        filter: str | None = None,
        order: str | None = None,
        domain_name: str | None = None,
        group_id: uuid.UUID | None = None,
        is_active: bool | None = None,
        status: str | None = None,
    ) -> UserList:
        ctx = context(info)
        check_page(limit, offset)
        conds = _list_conds(ctx, domain_name, group_id, is_active, status)
        extra = filter_clause(filter, _FILTERABLE)
        if extra is not None:
            conds.append(extra)
        ordering = order_clauses(_ORDERABLE, order_key=order_key, order_asc=order_asc, order=order)
        async with ctx.db() as db:
            total = (await db.execute(select(func.count()).select_from(UserRow).where(*conds))).scalar_one()
            items = await load_users(db, conds, ordering, limit, offset)
        return UserList(items=items, total_count=total)


@strawberry.input
class UserInput:
    username: str | None = None
    password: str
    need_password_change: bool = False
    full_name: str | None = None
    description: str | None = None
    is_active: bool | None = strawberry.UNSET
    status: str | None = strawberry.UNSET
    domain_name: str = "default"
    role: str | None = USER
    group_ids: list[str] | None = None


@strawberry.input
class ModifyUserInput:
    username: str | None = strawberry.UNSET
    password: str | None = strawberry.UNSET
    need_password_change: bool | None = strawberry.UNSET
    full_name: str | None = strawberry.UNSET
    description: str | None = strawberry.UNSET
    is_active: bool | None = strawberry.UNSET
    status: str | None = strawberry.UNSET
    domain_name: str | None = strawberry.UNSET
    role: str | None = strawberry.UNSET
    group_ids: list[str] | None = strawberry.UNSET


@strawberry.type
class CreateUser(Payload):
    user: User | None = None


@strawberry.type
class ModifyUser(Payload):
    user: User | None = None


@strawberry.type
class DeleteUser(Payload):
    pass


def _status_of(values: dict[str, Any]) -> str | None:
    status = values.pop("status", None)
    is_active = values.pop("is_active", None)
    if status is not None:
        return check_choice(status, STATUSES, "status")
    if is_active is not None:
        return "active" if is_active else "inactive"
    return None


@strawberry.type
class Mutation:
    @strawberry.mutation(description="Create a user and its main keypair (superadmin only).")
    async def create_user(self, info: Info, email: str, props: UserInput) -> CreateUser:
        ctx = context(info)
        require_superadmin(ctx, "Creating a user")
        status = _status_of(updates_from(props, ("status", "is_active"))) or "active"
        async with ctx.db() as db:
            row, _ = await add_user(
                db,
                email=email,
                password=props.password,
                domain_name=props.domain_name,
                role=props.role or USER,
                status=status,
                username=props.username,
                full_name=props.full_name,
                description=props.description,
                need_password_change=props.need_password_change,
                group_ids=props.group_ids or [],
            )
            await commit_or_conflict(db, f"User {email!r}")
            created = await load_users(db, [UserRow.uuid == row.uuid])
        return CreateUser(ok=True, msg="success", user=created[0])

    @strawberry.mutation(description="Modify a user (superadmin only).")
    async def modify_user(self, info: Info, email: str, props: ModifyUserInput) -> ModifyUser:
        ctx = context(info)
        require_superadmin(ctx, "Modifying a user")
        values = updates_from(
            props,
            (
                "username",
                "password",
                "need_password_change",
                "full_name",
                "description",
                "is_active",
                "status",
                "domain_name",
                "role",
                "group_ids",
            ),
        )
        if not values:
            raise InvalidAPIParameters("Nothing to update: give at least one property.")
        status = _status_of(values)
        group_ids = values.pop("group_ids", None)
        if "password" in values:
            values["password"] = hash_password(check_password(values["password"]))
        if "role" in values:
            check_choice(values["role"], ROLES, "role")
        async with ctx.db() as db:
            row = (await db.execute(select(UserRow).where(UserRow.email == email))).scalar_one_or_none()
            if row is None:
                raise NotFound(f"No such user: {email!r}.")
            if row.uuid == ctx.auth.user_uuid and (
                values.get("role", SUPERADMIN) != SUPERADMIN or status not in (None, "active")
            ):
                raise Forbidden("You cannot demote or deactivate your own account.")
            new_domain = values.get("domain_name", row.domain_name)
            if new_domain != row.domain_name and await db.get(DomainRow, new_domain) is None:
                raise NotFound(f"No such domain: {new_domain!r}.")
            if "username" in values and values["username"] != row.username:
                taken = (await db.execute(select(UserRow.uuid).where(UserRow.username == values["username"]))).first()
                if taken:
                    raise Conflict(f"The username {values['username']!r} is taken.")
            gids = await resolve_groups(db, group_ids, new_domain) if group_ids is not None else None
            if status is not None:
                values["status"] = status
                values["status_info"] = "admin-requested"
            domain_changed = new_domain != row.domain_name
            for key, value in values.items():
                setattr(row, key, value)
            if "role" in values:
                await db.execute(
                    update(KeyPairRow)
                    .where(KeyPairRow.user == row.uuid)
                    .values(is_admin=values["role"] in (SUPERADMIN, ADMIN))
                )
            if gids is not None or domain_changed:
                await db.execute(delete(group_members).where(group_members.c.user_id == row.uuid))
                if gids:
                    await db.execute(insert(group_members), [{"group_id": g, "user_id": row.uuid} for g in gids])
            await commit_or_conflict(db, f"User {email!r}")
            found = await load_users(db, [UserRow.uuid == row.uuid])
        return ModifyUser(ok=True, msg="success", user=found[0])

    @strawberry.mutation(description="Soft-delete a user: status 'deleted' and all its keypairs deactivated.")
    async def delete_user(self, info: Info, email: str) -> DeleteUser:
        ctx = context(info)
        require_superadmin(ctx, "Deleting a user")
        if email == ctx.auth.email:
            raise Forbidden("You cannot delete your own account.")
        async with ctx.db() as db:
            row = (await db.execute(select(UserRow).where(UserRow.email == email))).scalar_one_or_none()
            if row is None:
                raise NotFound(f"No such user: {email!r}.")
            row.status = "deleted"
            row.status_info = "admin-requested"
            await db.execute(update(KeyPairRow).where(KeyPairRow.user == row.uuid).values(is_active=False))
            await commit_or_conflict(db, f"User {email!r}")
        return DeleteUser(ok=True, msg="success")
