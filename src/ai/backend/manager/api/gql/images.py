"""GraphQL images: ``image``, ``images`` and the superadmin-only image mutations.

Images of the ``local`` registry are built and imported on each agent host and learned from the
agents' heartbeats (see :mod:`ai.backend.manager.images`); images of the Docker registries configured
in ``[docker-registries]`` are registered by ``rescan_images(registry: "<name>")`` (a background
task, see :mod:`ai.backend.manager.docker_registry`) and pulled by agents on first use. Hence

* ``installed``/``installed_agents`` come from the latest heartbeat of each alive agent
  (``installed_agents`` is shown to superadmins only, null for everyone else);
* ``rescan_images`` re-registers what the alive agents reported last (restoring labels and the
  automatic aliases) in a background task and answers its ``task_id`` (progress: one step per agent,
  see ``GET /events/background-task``);
* ``preload_image``/``unload_image`` are refused with a 400: the manager cannot pull or remove
  images on agents;
* ``forget_image`` removes an image that no alive agent has any more (409 otherwise);
* aliases derived from an agent's tags (the bare repository name, ``:latest``) come back with the
  agent's next heartbeat after ``dealias_image`` while the agent still reports those tags.
"""

from __future__ import annotations

from collections import defaultdict
from collections.abc import Sequence

import strawberry
from sqlalchemy import delete, select
from sqlalchemy.ext.asyncio import AsyncSession
from strawberry.types import Info

from ai.backend.common.problems import Conflict, ImageNotFound, InvalidAPIParameters, NotFound
from ai.backend.common.types import ResourceSlot, SlotTypeError

from ...bgtask import ProgressReporter
from ...docker_registry import rescan_registry
from ...images import LABEL_MAX_PREFIX, check_alias, image_min_slots, register_images, resolve_image
from ...models import AgentRow, ImageAliasRow, ImageRow
from .context import GQLContext, context
from .mutations import Payload, commit_or_conflict
from .permissions import SUPERADMIN, require_superadmin
from .scalars import BigInt

REGISTRY = "local"


@strawberry.type
class KVPair:
    key: str
    value: str


@strawberry.type(description="The range one resource slot may take for sessions of an image.")
class ResourceLimit:
    key: str
    min: str
    max: str


@strawberry.type(description="A kernel image known to the manager.")
class Image:
    name: str
    humanized_name: str
    tag: str
    registry: str
    reference: str
    architecture: str
    digest: str
    labels: list[KVPair]
    aliases: list[str]
    size_bytes: BigInt
    resource_limits: list[ResourceLimit]
    supported_accelerators: list[str]
    installed: bool
    installed_agents: list[str] | None  # superadmins only


def _resource_limits(row: ImageRow) -> list[ResourceLimit]:
    mins = image_min_slots(row).to_json()
    maxes: dict[str, str] = {}
    raw = {k[len(LABEL_MAX_PREFIX) :]: v for k, v in (row.labels or {}).items() if k.startswith(LABEL_MAX_PREFIX)}
    try:
        maxes = ResourceSlot.from_user_input(raw).to_json()
    except SlotTypeError:
        maxes = {}
    return [
        ResourceLimit(key=k, min=mins.get(k, "0"), max=maxes.get(k, "Infinity")) for k in sorted(set(mins) | set(maxes))
    ]


def _is_operation(row: ImageRow) -> bool:
    return "operation" in str((row.labels or {}).get("ai.backend.features", "")).split()


def _to_gql(row: ImageRow, aliases: list[str], agents: list[str], show_agents: bool) -> Image:
    labels = row.labels or {}
    repo = row.name.rpartition(":")[0] or row.name
    if row.registry_name not in (None, "", REGISTRY) and repo.startswith(f"{row.registry_name}/"):
        repo = repo[len(row.registry_name) + 1 :]  # the name within its registry, as upstream shows it
    accel = str(labels.get("ai.backend.accelerators", ""))
    return Image(
        name=repo,
        humanized_name=str(labels.get("ai.backend.humanized-name", repo)),
        tag=row.tag,
        registry=row.registry_name or REGISTRY,
        reference=row.name,
        architecture=row.architecture,
        digest=row.config_digest,
        labels=[KVPair(key=k, value=str(v)) for k, v in sorted(labels.items())],
        aliases=sorted(aliases),
        size_bytes=row.size_bytes or 0,
        resource_limits=_resource_limits(row),
        supported_accelerators=[a.strip() for a in accel.split(",") if a.strip()],
        installed=bool(agents),
        installed_agents=agents if show_agents else None,
    )


async def _alive_agents(db: AsyncSession) -> set[str]:
    return set((await db.execute(select(AgentRow.id).where(AgentRow.status == "ALIVE"))).scalars().all())


async def _load(ctx: GQLContext, db: AsyncSession, rows: Sequence[ImageRow]) -> list[Image]:
    aliases: dict[str, list[str]] = defaultdict(list)
    if rows:
        q = select(ImageAliasRow.alias, ImageAliasRow.image).where(ImageAliasRow.image.in_([r.name for r in rows]))
        for alias, target in (await db.execute(q)).all():
            aliases[target].append(alias)
    alive = await _alive_agents(db)
    inv = ctx.state.images
    show = ctx.role == SUPERADMIN
    return [_to_gql(r, aliases[r.name], inv.agents_having(r.name, alive), show) for r in rows]


@strawberry.type
class RescanImages(Payload):
    task_id: str | None = None


@strawberry.type
class PreloadImage(Payload):
    task_id: str | None = None


@strawberry.type
class UnloadImage(Payload):
    task_id: str | None = None


@strawberry.type
class ForgetImage(Payload):
    pass


@strawberry.type
class AliasImage(Payload):
    pass


@strawberry.type
class DealiasImage(Payload):
    pass


async def _rescan_docker_registry(ctx: GQLContext, name: str) -> RescanImages:
    """Start a background task that registers the kernel images of the configured registry ``name``."""
    cfg = ctx.state.config.docker_registries.get(name)
    if cfg is None:
        known = ", ".join([REGISTRY, *sorted(ctx.state.config.docker_registries)])
        raise NotFound(
            f"No such registry: {name!r}; configured registries: {known} (see [docker-registries] in manager.toml)."
        )

    async def _rescan(progress: ProgressReporter) -> str:
        async with ctx.db() as db:
            count = await rescan_registry(db, name, cfg, progress)
            await db.commit()
        return f"registered {count} kernel image(s) of registry {name!r}"

    task_id = await ctx.state.bgtasks.start(
        _rescan, name="rescan_images", owner_access_key=ctx.auth.access_key, owner_user=str(ctx.auth.user_uuid)
    )
    return RescanImages(
        ok=True, task_id=task_id, msg=f"started: scanning registry {name!r} ({cfg.url}) in background task {task_id}."
    )


@strawberry.type
class Query:
    @strawberry.field(description="One image by canonical reference (name:tag) or alias; null if unknown.")
    async def image(self, info: Info, reference: str) -> Image | None:
        ctx = context(info)
        async with ctx.db() as db:
            try:
                row = await resolve_image(db, reference)
            except ImageNotFound:
                return None
            found = await _load(ctx, db, [row])
        return found[0]

    @strawberry.field(description="All images (local and registry ones), optionally filtered.")
    async def images(
        self,
        info: Info,
        is_installed: bool | None = None,
        is_operation: bool | None = None,
    ) -> list[Image]:
        ctx = context(info)
        async with ctx.db() as db:
            rows = (await db.execute(select(ImageRow).order_by(ImageRow.name))).scalars().all()
            if is_operation is not None:
                rows = [r for r in rows if _is_operation(r) == is_operation]
            items = await _load(ctx, db, rows)
        if is_installed is not None:
            items = [i for i in items if i.installed == is_installed]
        return items


@strawberry.type
class Mutation:
    @strawberry.mutation(description="Make alias point to the image target (superadmin only).")
    async def alias_image(self, info: Info, alias: str, target: str) -> AliasImage:
        ctx = context(info)
        require_superadmin(ctx, "Aliasing an image")
        check_alias(alias)
        async with ctx.db() as db:
            image = await resolve_image(db, target)
            existing = await db.get(ImageAliasRow, alias)
            if existing is not None:
                raise Conflict(f"The alias {alias!r} already points to {existing.image!r}; remove it first.")
            if await db.get(ImageRow, alias) is not None:
                raise Conflict(f"{alias!r} is the name of an image; it cannot be an alias.")
            db.add(ImageAliasRow(alias=alias, image=image.name))
            await commit_or_conflict(db, f"Alias {alias!r}")
        return AliasImage(ok=True, msg="success")

    @strawberry.mutation(description="Remove an image alias (superadmin only).")
    async def dealias_image(self, info: Info, alias: str) -> DealiasImage:
        ctx = context(info)
        require_superadmin(ctx, "Removing an image alias")
        async with ctx.db() as db:
            row = await db.get(ImageAliasRow, alias)
            if row is None:
                raise NotFound(f"No such image alias: {alias!r}.")
            await db.delete(row)
            await db.commit()
        return DealiasImage(ok=True, msg="success")

    @strawberry.mutation(description="Re-register the images the alive agents reported last (a background task).")
    async def rescan_images(self, info: Info, registry: str | None = None) -> RescanImages:
        ctx = context(info)
        require_superadmin(ctx, "Rescanning images")
        if registry not in (None, "", REGISTRY):
            return await _rescan_docker_registry(ctx, str(registry))
        async with ctx.db() as db:
            reports = ctx.state.images.reports(await _alive_agents(db))

        async def _rescan(progress: ProgressReporter) -> str:
            seen: set[str] = set()
            await progress.update(total=len(reports), message=f"{len(reports)} alive agent(s) to rescan")
            for agent_id, items in sorted(reports.items()):
                async with ctx.db() as db:
                    await register_images(db, items)
                    await db.commit()
                seen.update(str(i["ref"]) for i in items if "ai.backend.kernelspec" in (i.get("labels") or {}))
                await progress.update(1, message=f"agent {agent_id}: {len(items)} image(s)")
            return f"re-registered {len(seen)} image reference(s) reported by {len(reports)} alive agent(s)"

        task_id = await ctx.state.bgtasks.start(
            _rescan, name="rescan_images", owner_access_key=ctx.auth.access_key, owner_user=str(ctx.auth.user_uuid)
        )
        return RescanImages(
            ok=True,
            task_id=task_id,
            msg=f"started: re-registering the images reported by {len(reports)} alive agent(s) in background task "
            f"{task_id}; images are learned from agent heartbeats.",
        )

    @strawberry.mutation(description="Not supported: images are imported on each agent host.")
    async def preload_image(self, info: Info, reference: str, target_agents: str) -> PreloadImage:
        require_superadmin(context(info), "Preloading an image")
        raise InvalidAPIParameters(
            "preload_image is not supported by this server: there is no image registry to "
            "pull from; build or import the image on the agent host instead."
        )

    @strawberry.mutation(description="Not supported: images are removed on each agent host.")
    async def unload_image(self, info: Info, reference: str, target_agents: str) -> UnloadImage:
        require_superadmin(context(info), "Unloading an image")
        raise InvalidAPIParameters(
            "unload_image is not supported by this server: remove the image on the agent host (docker rmi) instead."
        )

    @strawberry.mutation(description="Forget an image that no alive agent has any more (superadmin only).")
    async def forget_image(self, info: Info, reference: str) -> ForgetImage:
        ctx = context(info)
        require_superadmin(ctx, "Forgetting an image")
        async with ctx.db() as db:
            row = await resolve_image(db, reference)
            agents = ctx.state.images.agents_having(row.name, await _alive_agents(db))
            if agents:
                raise Conflict(
                    f"Image {row.name!r} is still installed on {', '.join(agents)}; it would be "
                    "registered again by their next heartbeat. Remove it there first."
                )
            await db.execute(delete(ImageAliasRow).where(ImageAliasRow.image == row.name))
            await db.delete(row)
            await db.commit()
        return ForgetImage(ok=True, msg="success")


__all__ = ["Image", "KVPair", "Mutation", "Query", "ResourceLimit"]
