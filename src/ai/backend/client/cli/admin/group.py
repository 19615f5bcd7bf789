"""``backend.ai admin group info|list|add|update|delete|add-users|remove-users``.

A GROUP argument is a group ID or a group name; a name is looked up in ``-d/--domain``
(or in every domain you can see, which must then hold only one group of that name).
USER arguments are user UUIDs or emails.
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

import click

from ..params import CommaSeparatedList
from ._common import (
    JSON_OBJECT,
    Column,
    join_lists,
    print_item,
    print_items,
    print_result,
    require_changes,
    resolve_group_id,
    resolve_user_uuids,
    run_api,
)

if TYPE_CHECKING:
    from ...session import AsyncSession

__all__ = ("COLUMNS", "LIST_COLUMNS", "group")

COLUMNS = (
    Column("id", "ID"),
    Column("name", "Name"),
    Column("description", "Description"),
    Column("is_active", "Active?", "bool"),
    Column("created_at", "Created At"),
    Column("domain_name", "Domain"),
    Column("total_resource_slots", "Total Resource Slots", "slots"),
    Column("allowed_vfolder_hosts", "Allowed vfolder hosts", "list"),
    Column("integration_id", "Integration ID"),
    Column("scaling_groups", "Scaling Groups", "list"),
)
LIST_COLUMNS = tuple(c for c in COLUMNS if c.key in ("id", "name", "description", "is_active", "domain_name"))
FIELDS = tuple(c.field for c in COLUMNS)
JSON_FIELDS = ("total_resource_slots",)
_LIST = CommaSeparatedList()
_DOMAIN_OPT = click.option(
    "-d", "--domain", "domain", metavar="DOMAIN", default=None, help="The domain to look up a group name in."
)


@click.group()
def group() -> None:
    """Group (project) administration commands."""


@group.command()
@click.argument("group_ref", metavar="GROUP")
@_DOMAIN_OPT
def info(group_ref: str, domain: str | None) -> None:
    """Show a group."""

    async def _info(api: AsyncSession) -> dict[str, Any] | None:
        gid = await resolve_group_id(api, group_ref, domain)
        return await api.Group.detail(gid, fields=FIELDS)

    item = run_api(_info)
    print_item(item, COLUMNS, json_fields=JSON_FIELDS, not_found=f"No such group: {group_ref}")


@group.command(name="list")
@click.option("-d", "--domain", "domain", metavar="DOMAIN", default=None, help="Only the groups of this domain.")
@click.option("--active/--inactive", "is_active", default=None, help="Only active (or inactive) groups.")
def list_(domain: str | None, is_active: bool | None) -> None:
    """List the groups you can see."""
    items = run_api(lambda api: api.Group.list(domain, fields=FIELDS, is_active=is_active))
    print_items(items, LIST_COLUMNS, json_fields=JSON_FIELDS, empty="There are no groups.", what="groups")


@group.command()
@click.argument("domain_name", metavar="DOMAIN")
@click.argument("name")
@click.option("-d", "--description", default="", help="A description of the group.")
@click.option("-i", "--inactive", is_flag=True, help="Create the group inactive.")
@click.option("--total-resource-slots", type=JSON_OBJECT, default=None, help="Limits, e.g. '{\"cpu\": 8}'.")
@click.option("--allowed-vfolder-hosts", type=_LIST, multiple=True, help="Comma-separated storage hosts.")
@click.option("--integration-id", default=None, help="An ID in an external system.")
def add(
    domain_name: str,
    name: str,
    description: str,
    inactive: bool,
    total_resource_slots: dict[str, Any] | None,
    allowed_vfolder_hosts: tuple[list[str], ...],
    integration_id: str | None,
) -> None:
    """Create a group called NAME in DOMAIN; prints its ID."""
    result = run_api(
        lambda api: api.Group.create(
            domain_name,
            name,
            description=description,
            is_active=not inactive,
            total_resource_slots=total_resource_slots,
            allowed_vfolder_hosts=join_lists(allowed_vfolder_hosts),
            integration_id=integration_id,
            fields=("id", "name", "domain_name"),
        )
    )

    def _show(res: Any) -> None:
        created = res.get("group") or {}
        if created.get("id"):
            click.echo(f"Group ID: {created['id']}")

    print_result(
        result, f"Group {name} is created in {domain_name}.", failed=f"Group {name} was not created", extra=_show
    )


@group.command()
@click.argument("group_ref", metavar="GROUP")
@_DOMAIN_OPT
@click.option("-n", "--name", default=None, help="Rename the group.")
@click.option("--description", default=None, help="A new description.")
@click.option("--active/--inactive", "is_active", default=None, help="Activate or deactivate the group.")
@click.option("--total-resource-slots", type=JSON_OBJECT, default=None, help="Limits, e.g. '{\"cpu\": 8}'.")
@click.option("--allowed-vfolder-hosts", type=_LIST, multiple=True, help="Comma-separated storage hosts.")
@click.option("--integration-id", default=None, help="An ID in an external system.")
def update(
    group_ref: str,
    domain: str | None,
    name: str | None,
    description: str | None,
    is_active: bool | None,
    total_resource_slots: dict[str, Any] | None,
    allowed_vfolder_hosts: tuple[list[str], ...],
    integration_id: str | None,
) -> None:
    """Change a group."""
    changes: dict[str, Any] = {
        "name": name,
        "description": description,
        "is_active": is_active,
        "total_resource_slots": total_resource_slots,
        "allowed_vfolder_hosts": join_lists(allowed_vfolder_hosts),
        "integration_id": integration_id,
    }
    require_changes(changes)

    async def _update(api: AsyncSession) -> dict[str, Any]:
        gid = await resolve_group_id(api, group_ref, domain)
        return await api.Group.update(gid, **changes)

    print_result(run_api(_update), f"Group {group_ref} is updated.", failed=f"Group {group_ref} was not updated")


@group.command()
@click.argument("group_ref", metavar="GROUP")
@_DOMAIN_OPT
def delete(group_ref: str, domain: str | None) -> None:
    """Delete (deactivate) a group."""

    async def _delete(api: AsyncSession) -> dict[str, Any]:
        return await api.Group.delete(await resolve_group_id(api, group_ref, domain))

    print_result(run_api(_delete), f"Group {group_ref} is deleted.", failed=f"Group {group_ref} was not deleted")


def _members_command(name: str, add: bool) -> click.Command:
    verb = "Add" if add else "Remove"

    @click.command(name=name)
    @click.argument("group_ref", metavar="GROUP")
    @click.argument("users", metavar="USER...", nargs=-1, required=True)
    @_DOMAIN_OPT
    def _cmd(group_ref: str, users: tuple[str, ...], domain: str | None) -> None:
        async def _run(api: AsyncSession) -> dict[str, Any]:
            gid = await resolve_group_id(api, group_ref, domain)
            uuids = await resolve_user_uuids(api, users)
            if add:
                return await api.Group.add_users(gid, uuids)
            return await api.Group.remove_users(gid, uuids)

        done = f"{len(users)} user(s) {'added to' if add else 'removed from'} group {group_ref}."
        print_result(run_api(_run), done, failed=f"Could not {verb.lower()} the users")

    _cmd.help = f"{verb} users (UUIDs or emails) {'to' if add else 'from'} a group."
    return _cmd


group.add_command(_members_command("add-users", True))
group.add_command(_members_command("remove-users", False))
