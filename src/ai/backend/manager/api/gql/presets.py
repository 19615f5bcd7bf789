"""GraphQL resource presets: named resource-slot bundles users can pick when creating sessions.

``resource_preset``/``resource_presets`` are open to every authenticated user; the mutations are
superadmin-only. ``shared_memory`` is written as a size string (``"1g"``, ``"64m"``, ``"1048576"``;
``""`` clears it) and read back as a byte count; it may not exceed the preset's ``mem``.
"""

from __future__ import annotations

from decimal import Decimal
from typing import Any

import strawberry
from sqlalchemy import select
from strawberry.types import Info

from ai.backend.common.problems import Conflict, InvalidAPIParameters, NotFound

from ...models import ResourcePresetRow
from .context import context
from .inputs import check_slug, parse_size, parse_slots, updates_from
from .mutations import Payload, commit_or_conflict
from .permissions import require_superadmin
from .scalars import BigInt, JSONString


@strawberry.type(description="A named bundle of resource slots (and shared memory) for new sessions.")
class ResourcePreset:
    name: str
    resource_slots: JSONString
    shared_memory: BigInt | None


def to_gql(row: ResourcePresetRow) -> ResourcePreset:
    """A preset row as its GraphQL object."""
    return ResourcePreset(name=row.name, resource_slots=row.resource_slots or {}, shared_memory=row.shared_memory)


@strawberry.input
class CreateResourcePresetInput:
    resource_slots: JSONString
    shared_memory: str | None = None


@strawberry.input
class ModifyResourcePresetInput:
    resource_slots: JSONString | None = strawberry.UNSET
    shared_memory: str | None = strawberry.UNSET


@strawberry.type
class CreateResourcePreset(Payload):
    resource_preset: ResourcePreset | None = None


@strawberry.type
class ModifyResourcePreset(Payload):
    pass


@strawberry.type
class DeleteResourcePreset(Payload):
    pass


def _slots(value: Any) -> dict[str, str]:
    slots = parse_slots(value, "resource_slots")
    if not slots:
        raise InvalidAPIParameters('resource_slots must name at least one slot, e.g. {"cpu": "1", "mem": "1g"}.')
    infinite = [k for k, v in slots.items() if v == "Infinity"]
    if infinite:
        raise InvalidAPIParameters(f"resource_slots must be finite amounts; {', '.join(infinite)} is Infinity.")
    return slots


def _shared_memory(value: str) -> int | None:
    return None if value.strip() == "" else parse_size(value, "shared_memory")


def _check_shmem(slots: dict[str, Any], shmem: int | None) -> None:
    if shmem is not None and "mem" in slots and Decimal(str(slots["mem"])) < shmem:
        raise InvalidAPIParameters(
            f"shared_memory ({shmem} bytes) cannot exceed the preset's mem ({slots['mem']} bytes)."
        )


@strawberry.type
class Query:
    @strawberry.field(description="One resource preset by name; null if there is none.")
    async def resource_preset(self, info: Info, name: str) -> ResourcePreset | None:
        ctx = context(info)
        async with ctx.db() as db:
            row = await db.get(ResourcePresetRow, name)
        return None if row is None else to_gql(row)

    @strawberry.field(description="All resource presets, by name.")
    async def resource_presets(self, info: Info) -> list[ResourcePreset]:
        ctx = context(info)
        async with ctx.db() as db:
            rows = (await db.execute(select(ResourcePresetRow).order_by(ResourcePresetRow.name))).scalars().all()
        return [to_gql(r) for r in rows]


@strawberry.type
class Mutation:
    @strawberry.mutation(description="Create a resource preset (superadmin only).")
    async def create_resource_preset(
        self, info: Info, name: str, props: CreateResourcePresetInput
    ) -> CreateResourcePreset:
        ctx = context(info)
        require_superadmin(ctx, "Creating a resource preset")
        check_slug(name, "Preset name", max_len=256)
        slots = _slots(props.resource_slots)
        shmem = None if props.shared_memory is None else _shared_memory(props.shared_memory)
        _check_shmem(slots, shmem)
        async with ctx.db() as db:
            if await db.get(ResourcePresetRow, name) is not None:
                raise Conflict(f"A resource preset named {name!r} already exists.")
            row = ResourcePresetRow(name=name, resource_slots=slots, shared_memory=shmem)
            db.add(row)
            await commit_or_conflict(db, f"Resource preset {name!r}")
            created = to_gql(row)
        return CreateResourcePreset(ok=True, msg="success", resource_preset=created)

    @strawberry.mutation(description="Change a resource preset (superadmin only); null leaves a field unchanged.")
    async def modify_resource_preset(
        self, info: Info, name: str, props: ModifyResourcePresetInput
    ) -> ModifyResourcePreset:
        ctx = context(info)
        require_superadmin(ctx, "Modifying a resource preset")
        given = updates_from(props, ("resource_slots", "shared_memory"))
        slots = _slots(given["resource_slots"]) if "resource_slots" in given else None
        async with ctx.db() as db:
            row = await db.get(ResourcePresetRow, name)
            if row is None:
                raise NotFound(f"No such resource preset: {name!r}.")
            new_slots = slots if slots is not None else dict(row.resource_slots or {})
            shmem = _shared_memory(given["shared_memory"]) if "shared_memory" in given else row.shared_memory
            _check_shmem(new_slots, shmem)
            row.resource_slots = new_slots
            row.shared_memory = shmem
            await commit_or_conflict(db, f"Resource preset {name!r}")
        return ModifyResourcePreset(ok=True, msg="success")

    @strawberry.mutation(description="Delete a resource preset (superadmin only).")
    async def delete_resource_preset(self, info: Info, name: str) -> DeleteResourcePreset:
        ctx = context(info)
        require_superadmin(ctx, "Deleting a resource preset")
        async with ctx.db() as db:
            row = await db.get(ResourcePresetRow, name)
            if row is None:
                raise NotFound(f"No such resource preset: {name!r}.")
            await db.delete(row)
            await commit_or_conflict(db, f"Resource preset {name!r}")
        return DeleteResourcePreset(ok=True, msg="success")
