"""``backend.ai admin keypair-resource-policy info|list|add|update|delete``."""

from __future__ import annotations

from typing import Any

import click

from ...func.keypair_resource_policy import DEFAULT_FOR_UNSPECIFIED
from ..params import CommaSeparatedList
from ._common import (
    BYTE_SIZE,
    JSON_OBJECT,
    Column,
    join_lists,
    print_item,
    print_items,
    print_result,
    require_changes,
    run_api,
)

__all__ = ("COLUMNS", "keypair_resource_policy")

COLUMNS = (
    Column("name", "Name"),
    Column("created_at", "Created At"),
    Column("default_for_unspecified", "Default for Unspecified"),
    Column("total_resource_slots", "Total Resource Slots", "slots"),
    Column("max_concurrent_sessions", "Max Concurrent Sessions"),
    Column("max_containers_per_session", "Max Containers per Session"),
    Column("max_vfolder_count", "Max vfolders"),
    Column("max_vfolder_size", "Max vfolder Size", "bytes"),
    Column("idle_timeout", "Idle Timeout (s)"),
    Column("allowed_vfolder_hosts", "Allowed vfolder hosts", "list"),
)
FIELDS = tuple(c.field for c in COLUMNS)
LIST_COLUMNS = tuple(c for c in COLUMNS if c.key != "created_at")
JSON_FIELDS = ("total_resource_slots",)
_LIST = CommaSeparatedList()
_DFU = click.Choice(DEFAULT_FOR_UNSPECIFIED, case_sensitive=False)
_COUNT = click.IntRange(min=0)


@click.group(name="keypair-resource-policy")
def keypair_resource_policy() -> None:
    """Keypair resource policy commands (changes need a superadmin)."""


@keypair_resource_policy.command()
@click.argument("name", required=False)
def info(name: str | None) -> None:
    """Show a policy (the one of your keypair if NAME is omitted)."""
    item = run_api(lambda api: api.KeypairResourcePolicy().info(name, fields=FIELDS))
    print_item(item, COLUMNS, json_fields=JSON_FIELDS, not_found=f"No such keypair resource policy: {name or '-'}")


@keypair_resource_policy.command(name="list")
def list_() -> None:
    """List the keypair resource policies."""
    items = run_api(lambda api: api.KeypairResourcePolicy.list(fields=FIELDS))
    print_items(
        items, LIST_COLUMNS, json_fields=JSON_FIELDS, empty="There are no keypair resource policies.", what="policies"
    )


@keypair_resource_policy.command()
@click.argument("name")
@click.option(
    "--default-for-unspecified",
    type=_DFU,
    default="UNLIMITED",
    show_default=True,
    help="How slots missing from --total-resource-slots are limited.",
)
@click.option(
    "--total-resource-slots",
    type=JSON_OBJECT,
    default="{}",
    show_default=True,
    help='Slot limits, e.g. \'{"cpu": 8, "mem": "16g"}\'.',
)
@click.option("--max-concurrent-sessions", type=_COUNT, default=30, show_default=True)
@click.option("--max-containers-per-session", type=_COUNT, default=1, show_default=True)
@click.option("--max-vfolder-count", type=_COUNT, default=10, show_default=True)
@click.option("--max-vfolder-size", type=BYTE_SIZE, default="0", show_default=True, help="0: unlimited.")
@click.option("--idle-timeout", type=_COUNT, default=1800, show_default=True, help="Seconds.")
@click.option(
    "--allowed-vfolder-hosts",
    type=_LIST,
    multiple=True,
    default=[["local"]],
    show_default="local",
    help="Comma-separated storage hosts.",
)
def add(
    name: str,
    default_for_unspecified: str,
    total_resource_slots: dict[str, Any],
    max_concurrent_sessions: int,
    max_containers_per_session: int,
    max_vfolder_count: int,
    max_vfolder_size: int,
    idle_timeout: int,
    allowed_vfolder_hosts: tuple[list[str], ...],
) -> None:
    """Create a keypair resource policy called NAME."""
    result = run_api(
        lambda api: api.KeypairResourcePolicy.create(
            name,
            default_for_unspecified=default_for_unspecified.upper(),
            total_resource_slots=total_resource_slots,
            max_concurrent_sessions=max_concurrent_sessions,
            max_containers_per_session=max_containers_per_session,
            max_vfolder_count=max_vfolder_count,
            max_vfolder_size=max_vfolder_size,
            idle_timeout=idle_timeout,
            allowed_vfolder_hosts=join_lists(allowed_vfolder_hosts) or [],
        )
    )
    print_result(result, f"Keypair resource policy {name} is created.", failed=f"Policy {name} was not created")


@keypair_resource_policy.command()
@click.argument("name")
@click.option("--default-for-unspecified", type=_DFU, default=None)
@click.option("--total-resource-slots", type=JSON_OBJECT, default=None, help="e.g. '{\"cpu\": 8}'.")
@click.option("--max-concurrent-sessions", type=_COUNT, default=None)
@click.option("--max-containers-per-session", type=_COUNT, default=None)
@click.option("--max-vfolder-count", type=_COUNT, default=None)
@click.option("--max-vfolder-size", type=BYTE_SIZE, default=None, help="0: unlimited.")
@click.option("--idle-timeout", type=_COUNT, default=None, help="Seconds.")
@click.option("--allowed-vfolder-hosts", type=_LIST, multiple=True, help="Comma-separated storage hosts.")
def update(
    name: str,
    default_for_unspecified: str | None,
    total_resource_slots: dict[str, Any] | None,
    max_concurrent_sessions: int | None,
    max_containers_per_session: int | None,
    max_vfolder_count: int | None,
    max_vfolder_size: int | None,
    idle_timeout: int | None,
    allowed_vfolder_hosts: tuple[list[str], ...],
) -> None:
    """Change the keypair resource policy called NAME."""
    changes: dict[str, Any] = {
        "default_for_unspecified": default_for_unspecified.upper() if default_for_unspecified else None,
        "total_resource_slots": total_resource_slots,
        "max_concurrent_sessions": max_concurrent_sessions,
        "max_containers_per_session": max_containers_per_session,
        "max_vfolder_count": max_vfolder_count,
        "max_vfolder_size": max_vfolder_size,
        "idle_timeout": idle_timeout,
        "allowed_vfolder_hosts": join_lists(allowed_vfolder_hosts),
    }
    require_changes(changes)
    result = run_api(lambda api: api.KeypairResourcePolicy.update(name, **changes))
    print_result(result, f"Keypair resource policy {name} is updated.", failed=f"Policy {name} was not updated")


@keypair_resource_policy.command()
@click.argument("name")
def delete(name: str) -> None:
    """Delete the keypair resource policy called NAME."""
    result = run_api(lambda api: api.KeypairResourcePolicy.delete(name))
    print_result(result, f"Keypair resource policy {name} is deleted.", failed=f"Policy {name} was not deleted")
