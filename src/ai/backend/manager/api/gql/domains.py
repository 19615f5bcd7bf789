"""GraphQL domains: ``domain``, ``domains`` and the superadmin-only domain mutations."""

from __future__ import annotations

from collections import defaultdict
from collections.abc import Sequence
from datetime import datetime
from typing import Any

import strawberry
from sqlalchemy import select, update
from sqlalchemy.ext.asyncio import AsyncSession
from strawberry.types import Info

from ai.backend.common.problems import Conflict, Forbidden, InvalidAPIParameters, NotFound

from ...models import DomainRow, SessionRow, sgroups_for_domains
from .context import context
from .inputs import check_slug, check_str_list, parse_slots, updates_from
from .mutations import Payload, commit_or_conflict
from .permissions import MONITOR, SUPERADMIN, require_roles, require_superadmin
from .scalars import JSONString


@strawberry.type
class Domain:
    name: str
    description: str | None
    is_active: bool
    created_at: datetime
    modified_at: datetime | None
    total_resource_slots: JSONString
    allowed_vfolder_hosts: list[str]
    allowed_docker_registries: list[str]
    integration_id: str | None
    scaling_groups: list[str]


async def load_domains(db: AsyncSession, conds: Sequence[Any]) -> list[Domain]:
    """Domains matching ``conds`` with their scaling groups, in two queries."""
    rows = (await db.execute(select(DomainRow).where(*conds).order_by(DomainRow.name))).scalars().all()
    sgroups: dict[str, list[str]] = defaultdict(list)
    if rows:
        names = [r.name for r in rows]
        for sg, dom in (
            await db.execute(
                select(sgroups_for_domains.c.scaling_group, sgroups_for_domains.c.domain)
                .where(sgroups_for_domains.c.domain.in_(names))
                .order_by(sgroups_for_domains.c.scaling_group)
            )
        ).all():
            sgroups[dom].append(sg)
    return [
        Domain(
            name=r.name,
            description=r.description,
            is_active=r.is_active,
            created_at=r.created_at,
            modified_at=r.modified_at,
            total_resource_slots=r.total_resource_slots or {},
            allowed_vfolder_hosts=list(r.allowed_vfolder_hosts or []),
            allowed_docker_registries=list(r.allowed_docker_registries or []),
            integration_id=r.integration_id,
            scaling_groups=sgroups[r.name],
        )
        for r in rows
    ]


@strawberry.type
class Query:
    @strawberry.field(description="A domain by name; without a name, the caller's own domain.")
    async def domain(self, info: Info, name: str | None = None) -> Domain | None:
        ctx = context(info)
        target = name or ctx.auth.domain_name
        if target != ctx.auth.domain_name and ctx.role not in (SUPERADMIN, MONITOR):
            raise Forbidden("You may only look at your own domain.")
        async with ctx.db() as db:
            found = await load_domains(db, [DomainRow.name == target])
        return found[0] if found else None

    @strawberry.field(description="All domains (superadmin and monitor only).")
    async def domains(self, info: Info, is_active: bool | None = None) -> list[Domain]:
        ctx = context(info)
        require_roles(ctx, (SUPERADMIN, MONITOR), "Listing domains")
        conds = [] if is_active is None else [DomainRow.is_active == is_active]
        async with ctx.db() as db:
            return await load_domains(db, conds)


@strawberry.input
class DomainInput:
    description: str | None = ""
    is_active: bool | None = True
    total_resource_slots: JSONString | None = strawberry.UNSET
    allowed_vfolder_hosts: list[str] | None = strawberry.UNSET
    allowed_docker_registries: list[str] | None = strawberry.UNSET
    integration_id: str | None = None


@strawberry.input
class ModifyDomainInput:
    name: str | None = strawberry.UNSET
    description: str | None = strawberry.UNSET
    is_active: bool | None = strawberry.UNSET
    total_resource_slots: JSONString | None = strawberry.UNSET
    allowed_vfolder_hosts: list[str] | None = strawberry.UNSET
    allowed_docker_registries: list[str] | None = strawberry.UNSET
    integration_id: str | None = strawberry.UNSET


@strawberry.type
class CreateDomain(Payload):
    domain: Domain | None = None


@strawberry.type
class ModifyDomain(Payload):
    domain: Domain | None = None


@strawberry.type
class DeleteDomain(Payload):
    pass


_MODIFIABLE = (
    "name",
    "description",
    "is_active",
    "total_resource_slots",
    "allowed_vfolder_hosts",
    "allowed_docker_registries",
    "integration_id",
)


def _clean(values: dict[str, object]) -> dict[str, object]:
    out = dict(values)
    if "name" in out:
        out["name"] = check_slug(str(out["name"]), "Domain name")
    if "total_resource_slots" in out:
        out["total_resource_slots"] = parse_slots(out["total_resource_slots"])
    for key in ("allowed_vfolder_hosts", "allowed_docker_registries"):
        if key in out:
            out[key] = check_str_list(out[key], key)
    return out


@strawberry.type
class Mutation:
    @strawberry.mutation
    async def create_domain(self, info: Info, name: str, props: DomainInput) -> CreateDomain:
        ctx = context(info)
        require_superadmin(ctx, "Creating a domain")
        values = _clean(updates_from(props, _MODIFIABLE))
        values["name"] = check_slug(name, "Domain name")
        async with ctx.db() as db:
            if await db.get(DomainRow, name) is not None:
                raise Conflict(f"A domain named {name!r} already exists.")
            db.add(DomainRow(**values))
            await commit_or_conflict(db, f"Domain {name!r}")
            created = await load_domains(db, [DomainRow.name == name])
        return CreateDomain(ok=True, msg="success", domain=created[0])

    @strawberry.mutation
    async def modify_domain(self, info: Info, name: str, props: ModifyDomainInput) -> ModifyDomain:
        ctx = context(info)
        require_superadmin(ctx, "Modifying a domain")
        values = _clean(updates_from(props, _MODIFIABLE))
        if not values:
            raise InvalidAPIParameters("Nothing to update: give at least one property.")
        async with ctx.db() as db:
            row = await db.get(DomainRow, name)
            if row is None:
                raise NotFound(f"No such domain: {name!r}.")
            new_name = values.pop("name", name)
            if new_name != name:
                if await db.get(DomainRow, new_name) is not None:
                    raise Conflict(f"A domain named {new_name!r} already exists.")
                # Groups, users and associations follow by ON UPDATE CASCADE; sessions keep a plain copy.
                await db.execute(update(DomainRow).where(DomainRow.name == name).values(name=new_name))
                await db.execute(update(SessionRow).where(SessionRow.domain_name == name).values(domain_name=new_name))
            if values:
                await db.execute(update(DomainRow).where(DomainRow.name == new_name).values(**values))
            await commit_or_conflict(db, f"Domain {name!r}")
            db.expire_all()
            found = await load_domains(db, [DomainRow.name == new_name])
        return ModifyDomain(ok=True, msg="success", domain=found[0])

    @strawberry.mutation(description="Deactivate a domain (a soft delete; its data stays).")
    async def delete_domain(self, info: Info, name: str) -> DeleteDomain:
        ctx = context(info)
        require_superadmin(ctx, "Deleting a domain")
        if name == ctx.auth.domain_name:
            raise Forbidden("You cannot delete the domain your own account belongs to.")
        async with ctx.db() as db:
            row = await db.get(DomainRow, name)
            if row is None:
                raise NotFound(f"No such domain: {name!r}.")
            row.is_active = False
            await commit_or_conflict(db, f"Domain {name!r}")
        return DeleteDomain(ok=True, msg="success")
