"""Image catalogue: learning images reported by agents and resolving names and aliases.

The catalogue (``images``/``image_aliases`` tables) is the union of what agents ever reported.
Which agent has which image *now* is kept in memory by :class:`ImageInventory`, refreshed by every
heartbeat (like upstream's Redis-held inventory): after a manager restart it is complete again
within one heartbeat interval.
"""

from __future__ import annotations

from collections.abc import Iterable
from decimal import Decimal
from typing import Any

from sqlalchemy import select
from sqlalchemy.ext.asyncio import AsyncSession

from ai.backend.common.problems import ImageNotFound, InvalidAPIParameters
from ai.backend.common.types import ResourceSlot, SlotTypeError

from .models import ImageAliasRow, ImageRow

LABEL_MIN_PREFIX = "ai.backend.resource.min."
LABEL_MAX_PREFIX = "ai.backend.resource.max."


class ImageInventory:
    """The images each agent reported in its latest heartbeat (in memory)."""

    def __init__(self) -> None:
        self._reports: dict[str, list[dict[str, Any]]] = {}

    def update(self, agent_id: str, reported: list[dict[str, Any]]) -> None:
        """Replace what ``agent_id`` has with its latest report."""
        self._reports[agent_id] = [r for r in reported if isinstance(r, dict) and isinstance(r.get("ref"), str)]

    def agents_having(self, image_name: str, alive: set[str]) -> list[str]:
        """The agents among ``alive`` whose latest report lists ``image_name``, sorted."""
        return sorted(
            a for a, items in self._reports.items() if a in alive and any(r["ref"] == image_name for r in items)
        )

    def reports(self, alive: set[str]) -> dict[str, list[dict[str, Any]]]:
        """The latest reports of the agents in ``alive``."""
        return {a: items for a, items in self._reports.items() if a in alive}


def image_min_slots(image: ImageRow) -> ResourceSlot:
    """The minimum resource slots an image declares with ``ai.backend.resource.min.*`` labels."""
    mins: dict[str, Any] = {}
    for key, value in (image.labels or {}).items():
        if key.startswith(LABEL_MIN_PREFIX):
            mins[key[len(LABEL_MIN_PREFIX) :]] = value
    try:
        slots = ResourceSlot.from_user_input(mins)
    except SlotTypeError:
        slots = ResourceSlot()
    return slots.filled({"cpu": Decimal(1), "mem": Decimal(256 * 1024 * 1024)})


async def upsert_image(
    db: AsyncSession,
    ref: str,
    digest: str,
    labels: dict[str, Any],
    *,
    size: int = 0,
    architecture: str = "x86_64",
    registry_name: str | None = None,
) -> ImageRow:
    """Create or update the catalogue row whose canonical name is ``ref``.

    ``registry_name`` (a registry rescan) also sets the row's registry; ``None`` (an agent heartbeat)
    keeps the registry of an existing row and makes new rows ``local``, so an agent reporting an
    image it pulled from a registry updates that registry's row instead of renaming it.
    """
    row = await db.get(ImageRow, ref)
    if row is None:
        row = ImageRow(
            name=ref, tag=ref.rpartition(":")[2], registry_name=registry_name or "local", config_digest=digest
        )
        db.add(row)
    elif registry_name is not None:
        row.registry_name = registry_name
    row.config_digest = digest
    row.labels = labels
    row.size_bytes = size
    row.architecture = architecture
    return row


async def add_default_aliases(db: AsyncSession, canonical: str, latest_refs: Iterable[str] = ()) -> None:
    """Make the bare repository name of ``canonical`` and ``latest_refs`` (and any extra names given there)
    aliases of it, unless taken."""
    for alias in sorted({canonical.rpartition(":")[0], *latest_refs} - {canonical}):
        if await db.get(ImageAliasRow, alias) is None and await db.get(ImageRow, alias) is None:
            db.add(ImageAliasRow(alias=alias, image=canonical))
            await db.flush()


async def register_images(db: AsyncSession, reported: list[dict[str, Any]]) -> None:
    """Upsert images an agent reported (``{"ref", "digest", "labels", "size"}``) and their aliases.

    ``repo:latest`` becomes an alias of the newest other tag of the same image in the same repository,
    and the bare repository name (``python``) an alias of that same image, unless an operator set it
    already.
    """
    # Keyed by repository too: one image tagged in several repositories (say a local one and a
    # registry one) must not lend the aliases of one repository to the other.
    by_image: dict[tuple[str, str], list[str]] = {}
    label_aliases: dict[tuple[str, str], set[str]] = {}
    for item in reported:
        labels = item.get("labels") or {}
        if "ai.backend.kernelspec" not in labels:
            continue
        ref: str = item["ref"]
        repo, _, tag = ref.rpartition(":")
        by_image.setdefault((item["digest"], repo), []).append(ref)
        # Extra names a recipe asks for (`ai.backend.aliases`, space-separated, e.g. "lua5 lua5.3").
        label_aliases.setdefault((item["digest"], repo), set()).update(
            a for a in str(labels.get("ai.backend.aliases", "")).split() if a
        )
        if tag == "latest":
            continue
        await upsert_image(
            db,
            ref,
            item["digest"],
            labels,
            size=int(item.get("size") or 0),
            architecture=item.get("architecture") or "x86_64",
        )
    await db.flush()
    for key, refs in by_image.items():
        canon = next((r for r in refs if not r.endswith(":latest")), None)
        if canon is not None:
            extra = sorted(label_aliases.get(key, ()))
            await add_default_aliases(db, canon, [r for r in refs if r.endswith(":latest")] + extra)
    await db.flush()


async def resolve_image(db: AsyncSession, ref: str) -> ImageRow:
    """Find an image by canonical name or alias, raising a 404 problem naming what was asked for."""
    row = await db.get(ImageRow, ref)
    if row is None:
        alias = await db.get(ImageAliasRow, ref)
        if alias is not None:
            row = await db.get(ImageRow, alias.image)
    if row is None and ":" not in ref:
        row = (await db.execute(select(ImageRow).where(ImageRow.name.like(f"{ref}:%")).limit(1))).scalar_one_or_none()
    if row is None:
        known = (await db.execute(select(ImageAliasRow.alias))).scalars().all()
        hint = f" Known aliases: {', '.join(sorted(known))}." if known else " No images are registered yet."
        raise ImageNotFound(f"Unknown image {ref!r}.{hint}")
    return row


def check_alias(alias: str) -> str:
    """An image alias: 1–256 characters without spaces, or a 400."""
    if not alias or len(alias) > 256 or any(c.isspace() for c in alias):
        raise InvalidAPIParameters(f"Alias {alias!r} is not valid: use 1–256 characters without spaces.")
    return alias


def registry_of(reference: str) -> str:
    """The registry an image reference comes from: its host part, or ``local`` for locally built images."""
    host, sep, _ = reference.partition("/")
    return host if sep and ("." in host or ":" in host or host == "localhost") else "local"
