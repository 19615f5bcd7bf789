"""GraphQL virtual folders: ``vfolder_list`` (paginated) and ``vfolders``.

Scoping: superadmins (and monitors) see every folder, narrowed by ``domain_name``; domain admins the folders
of their domain (user folders of its users, group folders of its groups); users the folders they reach (own,
shared with them, of their groups) and must not name another ``access_key``. ``access_key`` narrows to the
user folders of that keypair's owner, ``group_id`` to one group's folders. ``num_files`` and ``cur_size``
come from the storage proxy when asked for (null when it cannot be reached); ``max_size`` is the quota in MiB
(upstream's unit), ``quota`` the same in bytes.
"""

from __future__ import annotations

import logging
import uuid
from datetime import datetime
from typing import Any

import strawberry
from sqlalchemy import func, or_, select
from strawberry.types import Info

from ai.backend.common.problems import Forbidden, ProblemError

from ...models import KeyPairRow, ProjectRow, UserRow, VFolderPermissionRow, VFolderRow, group_members
from .context import GQLContext, context
from .filters import filter_clause
from .inputs import check_uuid
from .pagination import check_page, order_clauses
from .permissions import USER, scoped_domain
from .scalars import BigInt

log = logging.getLogger(__name__)

COLUMNS: dict[str, Any] = {
    "id": VFolderRow.id,
    "name": VFolderRow.name,
    "host": VFolderRow.host,
    "usage_mode": VFolderRow.usage_mode,
    "permission": VFolderRow.permission,
    "ownership_type": VFolderRow.ownership_type,
    "status": VFolderRow.status,
    "cloneable": VFolderRow.cloneable,
    "created_at": VFolderRow.created_at,
    "last_used": VFolderRow.last_used,
    "creator": VFolderRow.creator,
    "user": VFolderRow.user,
    "group": VFolderRow.group,
    "user_email": UserRow.email,
    "group_name": ProjectRow.name,
    "quota": VFolderRow.quota,
}


@strawberry.type(
    description="A virtual folder. `max_size` is its quota in MiB (null: unlimited), `quota` in "
    "bytes; `num_files`/`cur_size` come from its storage proxy."
)
class VirtualFolder:
    id: strawberry.ID
    host: str
    name: str
    user: strawberry.ID | None
    user_email: str | None
    group: strawberry.ID | None
    group_name: str | None
    creator: str | None
    unmanaged_path: str | None
    usage_mode: str
    permission: str
    ownership_type: str
    cloneable: bool
    status: str
    max_files: int
    max_size: int | None
    quota: BigInt | None
    created_at: datetime
    last_used: datetime | None

    async def _usage(self, info: Info) -> dict[str, Any]:
        try:
            return await context(info).state.storage.usage(self.host, uuid.UUID(str(self.id)))
        except ProblemError as e:
            log.info("no usage for folder %s: %s", self.id, e.detail)
            return {}

    @strawberry.field(description="Number of files (from the storage proxy).")
    async def num_files(self, info: Info) -> int | None:
        value = (await self._usage(info)).get("file_count")
        return int(value) if value is not None else None

    @strawberry.field(description="Bytes used (from the storage proxy).")
    async def cur_size(self, info: Info) -> BigInt | None:
        value = (await self._usage(info)).get("used_bytes")
        return int(value) if value is not None else None


@strawberry.type
class VirtualFolderList:
    items: list[VirtualFolder]
    total_count: int


def folder_to_gql(vf: VFolderRow, email: str | None, gname: str | None) -> VirtualFolder:
    """A row of :func:`folder_query` as its GraphQL object."""
    return VirtualFolder(
        id=strawberry.ID(str(vf.id)),
        host=vf.host,
        name=vf.name,
        user=strawberry.ID(str(vf.user)) if vf.user else None,
        user_email=email,
        group=strawberry.ID(str(vf.group)) if vf.group else None,
        group_name=gname,
        creator=vf.creator,
        unmanaged_path=vf.unmanaged_path,
        usage_mode=vf.usage_mode,
        permission=vf.permission,
        ownership_type=vf.ownership_type,
        cloneable=vf.cloneable,
        status=vf.status,
        max_files=0,
        max_size=(vf.quota // 2**20) if vf.quota else None,
        quota=vf.quota,
        created_at=vf.created_at,
        last_used=vf.last_used,
    )


def vfolder_scope(
    ctx: GQLContext,
    *,
    domain_name: str | None = None,
    group_id: uuid.UUID | str | None = None,
    access_key: str | None = None,
) -> list[Any]:
    """WHERE conditions limiting folders to what the caller may see, narrowed by the given filters."""
    conds: list[Any] = []
    domain = scoped_domain(ctx, domain_name, "Listing virtual folders")
    if ctx.role == USER:
        if access_key is not None and access_key != ctx.auth.access_key:
            raise Forbidden("Users may only look at their own virtual folders (leave access_key empty).")
        me = ctx.auth.user_uuid
        conds.append(
            or_(
                VFolderRow.user == me,
                VFolderRow.id.in_(select(VFolderPermissionRow.vfolder).where(VFolderPermissionRow.user == me)),
                VFolderRow.group.in_(select(group_members.c.group_id).where(group_members.c.user_id == me)),
            )
        )
    elif domain is not None:
        conds.append(or_(UserRow.domain_name == domain, ProjectRow.domain_name == domain))
    if access_key is not None and ctx.role != USER:
        conds.append(VFolderRow.user.in_(select(KeyPairRow.user).where(KeyPairRow.access_key == access_key)))
    elif access_key is not None:
        conds.append(VFolderRow.user == ctx.auth.user_uuid)
    if group_id is not None:
        conds.append(VFolderRow.group == check_uuid(group_id, "group_id"))
    return conds


def folder_query(conds: list[Any]) -> Any:
    """Folders matching ``conds``, each with its owner's email and its group's name."""
    return (
        select(VFolderRow, UserRow.email, ProjectRow.name)
        .join(UserRow, UserRow.uuid == VFolderRow.user, isouter=True)
        .join(ProjectRow, ProjectRow.id == VFolderRow.group, isouter=True)
        .where(*conds)
    )


@strawberry.type
class Query:
    @strawberry.field(description="One page of virtual folders within the caller's scope.")
    async def vfolder_list(
        self,
        info: Info,
        limit: int = 20,
        offset: int = 0,
        order_key: str | None = None,
        order_asc: bool | None = True,
        domain_name: str | None = None,
        group_id: uuid.UUID | None = None,
        access_key: str | None = None,
        filter: str | None = None,
        order: str | None = None,
    ) -> VirtualFolderList:
        ctx = context(info)
        check_page(limit, offset)
        conds = vfolder_scope(ctx, domain_name=domain_name, group_id=group_id, access_key=access_key)
        extra = filter_clause(filter, COLUMNS)
        if extra is not None:
            conds.append(extra)
        ordering = order_clauses(
            COLUMNS, order_key=order_key, order_asc=order_asc, order=order, default=[VFolderRow.created_at.desc()]
        )
        base = folder_query(conds)
        async with ctx.db() as db:
            total = (await db.execute(select(func.count()).select_from(base.subquery()))).scalar_one()
            rows = (await db.execute(base.order_by(*ordering, VFolderRow.id).limit(limit).offset(offset))).all()
        return VirtualFolderList(items=[folder_to_gql(*r) for r in rows], total_count=total)

    @strawberry.field(description="Every virtual folder within the caller's scope (admins: of the domain).")
    async def vfolders(
        self,
        info: Info,
        domain_name: str | None = None,
        group_id: uuid.UUID | None = None,
        access_key: str | None = None,
    ) -> list[VirtualFolder]:
        ctx = context(info)
        conds = vfolder_scope(ctx, domain_name=domain_name, group_id=group_id, access_key=access_key)
        async with ctx.db() as db:
            rows = (await db.execute(folder_query(conds).order_by(VFolderRow.created_at, VFolderRow.id))).all()
        return [folder_to_gql(*r) for r in rows]


__all__ = ["Query", "VirtualFolder", "VirtualFolderList", "folder_query", "folder_to_gql", "vfolder_scope"]
