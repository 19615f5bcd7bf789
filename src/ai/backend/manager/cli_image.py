"""``backend.ai mgr image ...``: build, list, alias and forget kernel images (operator commands).

* ``build NAME... | --all`` runs ``scripts/build-image.sh`` for the recipes under ``images/`` (or
  ``$BAI_IMAGE_RECIPES``), showing its progress lines.
* ``list`` shows the local Docker images that carry the kernel labels together with what the
  manager's database knows (registered images and their aliases).
* ``alias``, ``dealias`` and ``forget`` change the database the way the GraphQL mutations of the
  same names do (same checks, same helpers).  ``forget`` needs to know which alive agents still have
  the image; this command sees the images of the Docker engine it runs next to, so it checks agents
  on this host and refuses for agents on other hosts unless ``--force`` is given.

Errors are one line on stderr and a non-zero exit.
"""

from __future__ import annotations

import ipaddress
import json
import os
import socket
import subprocess
from pathlib import Path
from typing import Any
from urllib.parse import urlsplit

import click

REPO = Path(__file__).resolve().parents[4]
BUILD_SCRIPT = REPO / "scripts" / "build-image.sh"
KERNEL_LABEL = "ai.backend.kernelspec"


def recipes_dir() -> Path:
    """Where the image recipes are: ``$BAI_IMAGE_RECIPES`` or ``images/`` of the source tree."""
    return Path(os.environ.get("BAI_IMAGE_RECIPES") or REPO / "images")


def known_recipes() -> list[str]:
    """Names of the recipes (directories with a ``recipe.env``), sorted."""
    root = recipes_dir()
    if not root.is_dir():
        return []
    return sorted(p.parent.name for p in root.glob("*/recipe.env"))


def _docker(*args: str) -> str:
    try:
        out = subprocess.run(["docker", *args], capture_output=True, text=True, timeout=120)
    except FileNotFoundError:
        raise click.ClickException("docker is not installed on this host") from None
    except subprocess.TimeoutExpired:
        raise click.ClickException(f"docker {args[0]} did not answer in time") from None
    if out.returncode != 0:
        detail = (out.stderr.strip().splitlines() or ["failed"])[-1]
        raise click.ClickException(f"docker {' '.join(args[:2])}: {detail}")
    return out.stdout


def local_images() -> list[dict[str, Any]]:
    """Local images with the kernel label, one entry per tag, shaped like an agent's heartbeat report."""
    ids = sorted(set(_docker("image", "ls", "-q", "--no-trunc", "--filter", f"label={KERNEL_LABEL}").split()))
    if not ids:
        return []
    reports = []
    for info in json.loads(_docker("image", "inspect", *ids)):
        labels = (info.get("Config") or {}).get("Labels") or {}
        for ref in info.get("RepoTags") or []:
            reports.append({"ref": ref, "digest": info["Id"], "labels": labels, "size": int(info.get("Size") or 0)})
    return reports


# --------------------------------------------------------------------------------------
# Database helpers
# --------------------------------------------------------------------------------------


def _run_db(config_path: str | None, fn: Any) -> Any:
    """``cli._run_db`` (one transaction, problems as one-line errors) plus database errors as one line."""
    from sqlalchemy.exc import SQLAlchemyError

    from .cli import _run_db as run_db

    try:
        return run_db(config_path, fn)
    except SQLAlchemyError as e:
        orig = getattr(e, "orig", None)
        first = (str(orig if orig is not None else e).splitlines() or ["failed"])[0]
        raise click.ClickException(f"database error: {first}") from None


def _database_exists(config_path: str | None) -> bool:
    """False when the configured database is an SQLite file that does not exist (nothing to read)."""
    from .cli import _config

    url = _config(config_path).db_url()
    if url.startswith("sqlite"):
        path = url.split(":///", 1)[-1].split("?", 1)[0]
        return bool(path) and Path(path).exists()
    return True


def _local_addresses() -> set[str]:
    addrs = {"localhost", socket.gethostname(), socket.getfqdn()}
    try:
        addrs.update(socket.gethostbyname_ex(socket.gethostname())[2])
    except OSError:
        pass
    return addrs


def _is_local(addr: str) -> bool:
    host = urlsplit(addr if "//" in addr else f"//{addr}").hostname or ""
    try:
        if ipaddress.ip_address(host).is_loopback:
            return True
    except ValueError:
        pass
    return host in _local_addresses()


# --------------------------------------------------------------------------------------
# Commands
# --------------------------------------------------------------------------------------


@click.group()
def image() -> None:
    """Kernel images: build them from recipes, list, alias and forget them."""


@image.command("build")
@click.argument("names", nargs=-1)
@click.option("--all", "build_all", is_flag=True, help="Build every recipe.")
def build(names: tuple[str, ...], build_all: bool) -> None:
    """Build kernel images from their recipes (images/NAME/recipe.env); up-to-date images are skipped."""
    recipes = known_recipes()
    if build_all and names:
        raise click.ClickException("give recipe names or --all, not both")
    if not build_all and not names:
        raise click.ClickException(f"name the recipes to build or use --all (recipes: {', '.join(recipes) or 'none'})")
    if not BUILD_SCRIPT.is_file():
        raise click.ClickException(f"{BUILD_SCRIPT} is missing: building images needs the source tree")
    unknown = [n for n in names if n not in recipes]
    if unknown:
        raise click.ClickException(f"no such image recipe: {', '.join(unknown)} (recipes: {', '.join(recipes)})")
    targets = recipes if build_all else list(dict.fromkeys(names))
    if not targets:
        raise click.ClickException(f"no image recipes under {recipes_dir()}")
    # The script's progress lines go straight to the terminal.
    rc = subprocess.run(["bash", str(BUILD_SCRIPT), *targets]).returncode
    if rc != 0:
        raise click.ClickException(f"building {', '.join(targets)} failed (exit {rc}); see the lines above")
    click.echo(f"✔ Images are up to date: {', '.join(targets)}.", err=True)


@image.command("list")
@click.option("-o", "--output", type=click.Choice(["console", "json"]), default="console", show_default=True)
@click.pass_obj
def list_images(config_path: str | None, output: str) -> None:
    """List local kernel images and the images and aliases registered in the manager database."""
    from sqlalchemy import select

    from .models import ImageAliasRow, ImageRow

    local = local_images()
    registered: dict[str, dict[str, Any]] | None = None
    warning = None
    if _database_exists(config_path):

        async def _do(db: Any) -> dict[str, dict[str, Any]]:
            rows = (await db.execute(select(ImageRow).order_by(ImageRow.name))).scalars().all()
            aliases = (await db.execute(select(ImageAliasRow.alias, ImageAliasRow.image))).all()
            found = {
                r.name: {"digest": r.config_digest, "size": r.size_bytes, "labels": r.labels or {}, "aliases": []}
                for r in rows
            }
            for alias, target in aliases:
                if target in found:
                    found[target]["aliases"].append(alias)
            return found

        try:
            registered = _run_db(config_path, _do)
        except click.ClickException as exc:
            warning = f"the manager database is not readable: {exc.message}"
    else:
        warning = "no manager database here: showing local images only"

    by_ref: dict[str, dict[str, Any]] = {}
    by_digest: dict[str, list[str]] = {}
    for item in local:
        by_digest.setdefault(item["digest"], []).append(item["ref"])
    for item in local:
        tags = by_digest[item["digest"]]
        canon = [t for t in tags if not t.endswith(":latest")]
        if item["ref"] not in (canon or tags[:1]):
            continue  # a :latest tag of an image listed under its canonical tag
        by_ref[item["ref"]] = {
            "reference": item["ref"],
            "local": True,
            "registered": False,
            "tags": sorted(tags),
            "digest": item["digest"],
            "size_bytes": item["size"],
            "labels": item["labels"],
            "aliases": [],
        }
    for name, reg in (registered or {}).items():
        entry = by_ref.setdefault(
            name,
            {
                "reference": name,
                "local": False,
                "tags": [],
                "digest": reg["digest"],
                "size_bytes": reg["size"],
                "labels": reg["labels"],
            },
        )
        entry["registered"] = True
        entry["aliases"] = sorted(reg["aliases"])
    items = [by_ref[k] for k in sorted(by_ref)]
    for entry in items:
        labels = entry["labels"]
        entry["runtime_type"] = labels.get("ai.backend.runtime-type")
        entry["features"] = str(labels.get("ai.backend.features", "")).split()
        entry["recipe_aliases"] = str(labels.get("ai.backend.aliases", "")).split()
        if registered is None:
            entry["registered"] = None
    if warning:
        click.echo(f"warning: {warning}", err=True)
    if output == "json":
        click.echo(json.dumps({"count": len(items), "items": items}, indent=2))
        return
    rows = [("REFERENCE", "RUNTIME", "SIZE", "LOCAL", "REGISTERED", "ALIASES")]
    for it in items:
        reg_col = "?" if it["registered"] is None else ("yes" if it["registered"] else "no")
        rows.append(
            (
                it["reference"],
                it["runtime_type"] or "-",
                f"{it['size_bytes'] / 1e6:.0f} MB",
                "yes" if it["local"] else "no",
                reg_col,
                ", ".join(it["aliases"]) or "-",
            )
        )
    widths = [max(len(r[i]) for r in rows) for i in range(len(rows[0]))]
    for r in rows:
        click.echo("  ".join(c.ljust(w) for c, w in zip(r, widths, strict=True)).rstrip())


@image.command("alias")
@click.argument("alias")
@click.argument("target")
@click.pass_obj
def alias_image(config_path: str | None, alias: str, target: str) -> None:
    """Make ALIAS point to the registered image TARGET (a reference or another alias)."""
    from ai.backend.common.problems import Conflict

    from .images import check_alias, resolve_image
    from .models import ImageAliasRow, ImageRow

    async def _do(db: Any) -> str:
        check_alias(alias)
        row = await resolve_image(db, target)
        existing = await db.get(ImageAliasRow, alias)
        if existing is not None:
            raise Conflict(f"The alias {alias!r} already points to {existing.image!r}; remove it first.")
        if await db.get(ImageRow, alias) is not None:
            raise Conflict(f"{alias!r} is the name of an image; it cannot be an alias.")
        db.add(ImageAliasRow(alias=alias, image=row.name))
        name: str = row.name
        return name

    name = _run_db(config_path, _do)
    click.echo(f"✔ {alias} now points to {name}.", err=True)


@image.command("dealias")
@click.argument("alias")
@click.pass_obj
def dealias_image(config_path: str | None, alias: str) -> None:
    """Remove the image alias ALIAS."""
    from ai.backend.common.problems import NotFound

    from .models import ImageAliasRow

    async def _do(db: Any) -> str:
        row = await db.get(ImageAliasRow, alias)
        if row is None:
            raise NotFound(f"No such image alias: {alias!r}.")
        target: str = row.image
        await db.delete(row)
        return target

    target = _run_db(config_path, _do)
    click.echo(f"✔ Alias {alias} (of {target}) removed.", err=True)
    repo = target.rpartition(":")[0]
    if alias in (repo, f"{repo}:latest"):
        click.echo(
            f"note: agents that still have the {repo}:latest tag add this alias again at their next heartbeat.",
            err=True,
        )


@image.command("forget")
@click.argument("reference")
@click.option("--force", is_flag=True, help="Also when alive agents on other hosts may still have the image.")
@click.pass_obj
def forget_image(config_path: str | None, reference: str, force: bool) -> None:
    """Remove the registered image REFERENCE (and its aliases) from the manager database.

    Refused while an alive agent still has the image: its next heartbeat would register it again.
    """
    from sqlalchemy import delete, select

    from ai.backend.common.problems import Conflict

    from .images import ImageInventory, resolve_image
    from .models import AgentRow, ImageAliasRow

    async def _do(db: Any) -> str:
        row = await resolve_image(db, reference)
        alive = {a.id: a.addr for a in (await db.execute(select(AgentRow).where(AgentRow.status == "ALIVE"))).scalars()}
        here = {agent_id for agent_id, addr in alive.items() if _is_local(addr)}
        inventory = ImageInventory()
        if here:
            reports = local_images()
            for agent_id in here:
                inventory.update(agent_id, reports)
        having = inventory.agents_having(row.name, set(alive))
        if having:
            raise Conflict(
                f"Image {row.name!r} is still installed on {', '.join(having)}; it would be registered "
                "again by their next heartbeat. Remove it there first (docker rmi)."
            )
        elsewhere = sorted(set(alive) - here)
        if elsewhere and not force:
            raise Conflict(
                f"Cannot tell whether the alive agents {', '.join(elsewhere)} (on other hosts) still have "
                f"{row.name!r}; use the forget_image GraphQL mutation, or --force."
            )
        await db.execute(delete(ImageAliasRow).where(ImageAliasRow.image == row.name))
        await db.delete(row)
        name: str = row.name
        return name

    name = _run_db(config_path, _do)
    click.echo(f"✔ Image {name} forgotten.", err=True)


class _EchoProgress:
    """Rescan progress as lines on stderr."""

    async def update(
        self, increment: int = 0, *, current: int | None = None, total: int | None = None, message: str | None = None
    ) -> None:
        if message:
            click.echo(f"  {message}", err=True)


@image.command("rescan")
@click.argument("registry")
@click.pass_obj
def rescan_registry_images(config_path: str | None, registry: str) -> None:
    """Register the kernel images of REGISTRY, a Docker registry of [docker-registries] in manager.toml."""
    from .cli import _config
    from .docker_registry import rescan_registry

    registries = _config(config_path).docker_registries
    cfg = registries.get(registry)
    if cfg is None:
        known = ", ".join(sorted(registries)) or "none"
        hint = " (local images are learned from the agents' heartbeats)" if registry == "local" else ""
        raise click.ClickException(
            f"no such registry {registry!r} in [docker-registries] of the manager config; configured: {known}{hint}"
        )
    count = _run_db(config_path, lambda db: rescan_registry(db, registry, cfg, _EchoProgress()))
    click.echo(f"✔ {count} kernel image(s) of registry {registry} registered.", err=True)
