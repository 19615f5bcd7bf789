"""``backend.ai admin image list|info|alias|dealias|rescan``."""

from __future__ import annotations

from typing import Any

import click

from ..core import get_cli_context
from ..pretty import print_done
from ._common import Column, fail, print_item, print_items, print_result, run_api

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
    task_id = result.get("task_id")
    if not result.get("ok") or not task_id or get_cli_context().json_output:
        # Scripts get the task id at once (follow it with `backend.ai` SSE tooling or the SDK).
        print_result(result, "Images rescanned.", failed="The rescan failed")
        return
    click.echo(f"Background task ID: {task_id}")
    outcome, message = run_api(lambda api: _follow_task(api, str(task_id)))
    if outcome != "done":
        fail(f"The rescan {outcome}: {message or 'the server gave no reason'}")
    print_done(f"Images rescanned. {message}".strip() if message else "Images rescanned.")


async def _follow_task(api: Any, task_id: str) -> tuple[str, str]:
    """Show a background task's progress on stderr until it ends; returns (outcome, last message)."""
    outcome, message = "ended without a result", ""
    async with api.BackgroundTask(task_id).listen_events() as stream:
        async for msg in stream:
            data = msg.json() if msg.data else {}
            message = str(data.get("message") or message) if isinstance(data, dict) else message
            if msg.event == "bgtask_updated" and isinstance(data, dict):
                total = data.get("total_progress") or 0
                if total:
                    click.echo(f"  {data.get('current_progress', 0)}/{total} {message}".rstrip(), err=True)
            elif msg.event in ("bgtask_done", "bgtask_failed", "bgtask_cancelled"):
                outcome = {"bgtask_done": "done", "bgtask_failed": "failed"}.get(msg.event, "was cancelled")
    return outcome, message
