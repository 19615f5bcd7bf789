"""``backend.ai admin resource query-slots|check-presets|presets`` and ``admin resource-preset ...``."""

from __future__ import annotations

import json
from typing import Any

import click

from ..core import get_cli_context
from ._common import (
    BYTE_SIZE,
    JSON_OBJECT,
    Column,
    decode_item,
    emit_json,
    format_value,
    print_item,
    print_items,
    print_result,
    require_changes,
    run_api,
)

__all__ = ("PRESET_COLUMNS", "resource", "resource_preset")

PRESET_COLUMNS = (
    Column("name", "Name"),
    Column("resource_slots", "Resource Slots", "slots"),
    Column("shared_memory", "Shared Memory", "bytes"),
)
PRESET_FIELDS = tuple(c.field for c in PRESET_COLUMNS)
PRESET_JSON_FIELDS = ("resource_slots",)


@click.group()
def resource() -> None:
    """Resource slot and preset queries (for every user)."""


@resource.command(name="query-slots")
def query_slots() -> None:
    """List the resource slot types the cluster knows, and their units."""
    slots = run_api(lambda api: api.Resource.get_resource_slots())
    items = [{"slot": k, "type": v} for k, v in slots.items()]
    if get_cli_context().json_output:
        emit_json(slots)
        return
    print_items(items, (Column("slot", "Slot"), Column("type", "Type")), empty="There are no resource slots.")


@resource.command(name="docker-registries")
def docker_registries() -> None:
    """List the Docker registries the manager knows (superadmins)."""
    regs = run_api(lambda api: api.Resource.get_docker_registries())
    if get_cli_context().json_output:
        emit_json(regs)
        return
    items = [{"name": k, "url": v} for k, v in regs.items()]
    print_items(items, (Column("name", "Registry"), Column("url", "URL")), empty="There are no Docker registries.")


@resource.command()
def presets() -> None:
    """List the resource presets (REST)."""
    items = run_api(lambda api: api.Resource.list())
    print_items(
        items, PRESET_COLUMNS, json_fields=PRESET_JSON_FIELDS, empty="There are no resource presets.", what="presets"
    )


@resource.command(name="check-presets")
@click.option("--scaling-group", "--sgroup", "scaling_group", default=None, help="Check within this scaling group.")
@click.option("-g", "--group", default=None, help="The group (name) that sessions would belong to.")
def check_presets(scaling_group: str | None, group: str | None) -> None:
    """Show your remaining resources and which presets you can allocate now."""
    result = run_api(lambda api: api.Resource.check_presets(scaling_group=scaling_group, group=group))
    if get_cli_context().json_output:
        emit_json(result)
        return
    for key, heading in (
        ("keypair_limits", "Keypair limits"),
        ("keypair_using", "Keypair using"),
        ("keypair_remaining", "Keypair remaining"),
    ):
        click.echo(f"{heading + ':':25} {format_value('slots', result.get(key))}")
    remaining = result.get("scaling_group_remaining")
    if remaining is not None:
        click.echo(f"{'Scaling group remaining:':25} {format_value('slots', remaining)}")
    groups = result.get("scaling_groups")
    if isinstance(groups, dict):
        for name, info in groups.items():
            if isinstance(info, dict):
                details = ", ".join(f"{k}: {format_value('slots', v)}" for k, v in info.items())
            else:
                details = json.dumps(info)
            click.echo(f"Scaling group {name}: {details}")
    items = [decode_item(p, PRESET_JSON_FIELDS) for p in result.get("presets") or []]
    columns = (*PRESET_COLUMNS, Column("allocatable", "Allocatable?", "bool"))
    click.echo()
    print_items(items, columns, empty="There are no resource presets.", what="presets")


@click.group(name="resource-preset")
def resource_preset() -> None:
    """Resource preset administration commands (changes need a superadmin)."""


@resource_preset.command(name="list")
def list_() -> None:
    """List the resource presets."""
    items = run_api(lambda api: api.Resource.list_presets(fields=PRESET_FIELDS))
    print_items(
        items, PRESET_COLUMNS, json_fields=PRESET_JSON_FIELDS, empty="There are no resource presets.", what="presets"
    )


@resource_preset.command()
@click.argument("name")
def info(name: str) -> None:
    """Show the resource preset NAME."""
    item = run_api(lambda api: api.Resource.preset_info(name, fields=PRESET_FIELDS))
    print_item(item, PRESET_COLUMNS, json_fields=PRESET_JSON_FIELDS, not_found=f"No such resource preset: {name}")


@resource_preset.command()
@click.argument("name")
@click.option(
    "--resource-slots",
    type=JSON_OBJECT,
    required=True,
    help='The slots, e.g. \'{"cpu": 1, "mem": "1g"}\' or cpu=1,mem=1g.',
)
@click.option("--shared-memory", type=BYTE_SIZE, default=None, help="Shared memory size, e.g. 64m.")
def add(name: str, resource_slots: dict[str, Any], shared_memory: int | None) -> None:
    """Create a resource preset called NAME."""
    if not resource_slots:
        raise click.BadParameter("give at least one slot", param_hint="'--resource-slots'")
    result = run_api(lambda api: api.Resource.create_preset(name, resource_slots, shared_memory))
    print_result(result, f"Resource preset {name} is created.", failed=f"Resource preset {name} was not created")


@resource_preset.command()
@click.argument("name")
@click.option("--resource-slots", type=JSON_OBJECT, default=None, help="The slots, e.g. '{\"cpu\": 2}'.")
@click.option("--shared-memory", type=BYTE_SIZE, default=None, help="Shared memory size, e.g. 64m.")
def update(name: str, resource_slots: dict[str, Any] | None, shared_memory: int | None) -> None:
    """Change the resource preset NAME."""
    require_changes({"resource_slots": resource_slots, "shared_memory": shared_memory})
    result = run_api(lambda api: api.Resource.update_preset(name, resource_slots, shared_memory))
    print_result(result, f"Resource preset {name} is updated.", failed=f"Resource preset {name} was not updated")


@resource_preset.command()
@click.argument("name")
def delete(name: str) -> None:
    """Delete the resource preset NAME."""
    result = run_api(lambda api: api.Resource.delete_preset(name))
    print_result(result, f"Resource preset {name} is deleted.", failed=f"Resource preset {name} was not deleted")
