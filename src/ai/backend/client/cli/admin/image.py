"""``backend.ai admin image list|info|alias|dealias|rescan``."""

from __future__ import annotations

import click

from ._common import Column, print_item, print_items, print_result, run_api

__all__ = ("COLUMNS", "image")

COLUMNS = (
    Column("name", "Name"),
    Column("registry", "Registry"),
    Column("tag", "Tag"),
    Column("digest", "Digest"),
    Column("size_bytes", "Size", "bytes"),
    Column("aliases", "Aliases", "list"),
)
FIELDS = tuple(c.field for c in COLUMNS)


@click.group()
def image() -> None:
    """Image administration commands (listing is for everyone; changes need a superadmin)."""


@image.command(name="list")
@click.option("--operation", is_flag=True, help="List the operation images instead.")
def list_(operation: bool) -> None:
    """List the images you can use."""
    items = run_api(lambda api: api.Image.list(operation=operation, fields=FIELDS))
    print_items(items, COLUMNS, empty="There are no images.", what="images")


@image.command()
@click.argument("reference")
def info(reference: str) -> None:
    """Show the image REFERENCE (name[:tag], registry/name:tag or an alias)."""
    item = run_api(lambda api: api.Image.detail(reference, fields=FIELDS))
    print_item(item, COLUMNS, not_found=f"No such image: {reference}")


@image.command()
@click.argument("alias")
@click.argument("target")
def alias(alias: str, target: str) -> None:
    """Make ALIAS refer to the image TARGET."""
    result = run_api(lambda api: api.Image.alias_image(alias, target))
    print_result(result, f"An alias {alias} is created for {target}.", failed=f"The alias {alias} was not created")


@image.command()
@click.argument("alias")
def dealias(alias: str) -> None:
    """Remove the image alias ALIAS."""
    result = run_api(lambda api: api.Image.dealias_image(alias))
    print_result(result, f"The alias {alias} is removed.", failed=f"The alias {alias} was not removed")


@image.command()
@click.option("-r", "--registry", default=None, help="Rescan only this registry (default: all).")
def rescan(registry: str | None) -> None:
    """Rescan the image registries and update the image metadata."""
    result = run_api(lambda api: api.Image.rescan_images(registry))

    def _show(res: object) -> None:
        task_id = res.get("task_id") if isinstance(res, dict) else None
        if task_id:
            click.echo(f"Background task ID: {task_id}")

    print_result(result, "Rescan started." if result.get("task_id") else "Images rescanned.",
                 failed="The rescan failed", extra=_show)
