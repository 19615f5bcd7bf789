"""``backend.ai admin domain info|list|add|update|delete``."""

from __future__ import annotations

from typing import Any

import click

from ..params import CommaSeparatedList
from ._common import JSON_OBJECT, Column, join_lists, print_item, print_items, print_result, require_changes, run_api

__all__ = ("COLUMNS", "LIST_COLUMNS", "domain")

COLUMNS = (
    Column("name", "Name"),
    Column("description", "Description"),
    Column("is_active", "Active?", "bool"),
    Column("created_at", "Created At"),
    Column("modified_at", "Modified At"),
    Column("total_resource_slots", "Total Resource Slots", "slots"),
    Column("allowed_vfolder_hosts", "Allowed vfolder hosts", "list"),
    Column("allowed_docker_registries", "Allowed docker registries", "list"),
    Column("integration_id", "Integration ID"),
    Column("scaling_groups", "Scaling Groups", "list"),
)
LIST_COLUMNS = tuple(c for c in COLUMNS if c.key in ("name", "description", "is_active", "total_resource_slots"))
FIELDS = tuple(c.field for c in COLUMNS)
JSON_FIELDS = ("total_resource_slots",)


@click.group()
def domain() -> None:
    """Domain administration commands (superadmins; others may see their own domain)."""


@domain.command()
@click.argument("name", required=False)
def info(name: str | None) -> None:
    """Show a domain (your own domain if NAME is omitted)."""
    item = run_api(lambda api: api.Domain.detail(name, fields=FIELDS))
    print_item(item, COLUMNS, json_fields=JSON_FIELDS, not_found=f"No such domain: {name or '(your domain)'}")


@domain.command(name="list")
@click.option("--active/--inactive", "is_active", default=None, help="Only active (or inactive) domains.")
def list_(is_active: bool | None) -> None:
    """List the domains."""
    items = run_api(lambda api: api.Domain.list(fields=FIELDS, is_active=is_active))
    print_items(items, LIST_COLUMNS, json_fields=JSON_FIELDS, empty="There are no domains.", what="domains")


_LIST = CommaSeparatedList()


@domain.command()
@click.argument("name")
@click.option("-d", "--description", default="", help="A description of the domain.")
@click.option("-i", "--inactive", is_flag=True, help="Create the domain inactive.")
@click.option("--total-resource-slots", type=JSON_OBJECT, default=None, help="Limits, e.g. '{\"cpu\": 8}'.")
@click.option("--allowed-vfolder-hosts", type=_LIST, multiple=True, help="Comma-separated storage hosts.")
@click.option("--allowed-docker-registries", type=_LIST, multiple=True, help="Comma-separated registries.")
@click.option("--integration-id", default=None, help="An ID in an external system.")
def add(
    name: str,
    description: str,
    inactive: bool,
    total_resource_slots: dict[str, Any] | None,
    allowed_vfolder_hosts: tuple[list[str], ...],
    allowed_docker_registries: tuple[list[str], ...],
    integration_id: str | None,
) -> None:
    """Create a domain called NAME."""
    result = run_api(
        lambda api: api.Domain.create(
            name,
            description=description,
            is_active=not inactive,
            total_resource_slots=total_resource_slots,
            allowed_vfolder_hosts=join_lists(allowed_vfolder_hosts),
            allowed_docker_registries=join_lists(allowed_docker_registries),
            integration_id=integration_id,
            fields=("name", "is_active"),
        )
    )
    print_result(result, f"Domain {name} is created.", failed=f"Domain {name} was not created")


@domain.command()
@click.argument("name")
@click.option("--new-name", default=None, help="Rename the domain.")
@click.option("-d", "--description", default=None, help="A new description.")
@click.option("--active/--inactive", "is_active", default=None, help="Activate or deactivate the domain.")
@click.option("--total-resource-slots", type=JSON_OBJECT, default=None, help="Limits, e.g. '{\"cpu\": 8}'.")
@click.option("--allowed-vfolder-hosts", type=_LIST, multiple=True, help="Comma-separated storage hosts.")
@click.option("--allowed-docker-registries", type=_LIST, multiple=True, help="Comma-separated registries.")
@click.option("--integration-id", default=None, help="An ID in an external system.")
def update(
    name: str,
    new_name: str | None,
    description: str | None,
    is_active: bool | None,
    total_resource_slots: dict[str, Any] | None,
    allowed_vfolder_hosts: tuple[list[str], ...],
    allowed_docker_registries: tuple[list[str], ...],
    integration_id: str | None,
) -> None:
    """Change the domain called NAME."""
    changes: dict[str, Any] = {
        "new_name": new_name,
        "description": description,
        "is_active": is_active,
        "total_resource_slots": total_resource_slots,
        "allowed_vfolder_hosts": join_lists(allowed_vfolder_hosts),
        "allowed_docker_registries": join_lists(allowed_docker_registries),
        "integration_id": integration_id,
    }
    require_changes(changes)
    result = run_api(lambda api: api.Domain.update(name, **changes))
    print_result(result, f"Domain {name} is updated.", failed=f"Domain {name} was not updated")


@domain.command()
@click.argument("name")
def delete(name: str) -> None:
    """Delete the domain called NAME."""
    result = run_api(lambda api: api.Domain.delete(name))
    print_result(result, f"Domain {name} is deleted.", failed=f"Domain {name} was not deleted")
