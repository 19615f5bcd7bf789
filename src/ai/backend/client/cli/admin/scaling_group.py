"""``backend.ai admin scaling-group ...``: scaling groups and their domain, group and keypair associations.

The 22.03 spelling is ``admin scaling-group info|list|add|...`` (also ``admin scaling ...``); the 19.09
spellings work too: ``admin scaling-group -n NAME`` (= ``info NAME``), ``admin scaling-groups`` (= ``list``,
with the same subcommands: ``admin scaling-groups add NAME`` ...) and ``admin list-scaling-groups GROUP``
(= ``get-available GROUP``).  They are registered in :mod:`ai.backend.client.cli.admin`.
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

import click

from ..core import LazyGroup, get_cli_context
from ._common import (
    JSON_OBJECT,
    Column,
    emit_json,
    print_item,
    print_items,
    print_result,
    require_changes,
    resolve_group_id,
    run_api,
)

if TYPE_CHECKING:
    from ...session import AsyncSession

__all__ = ("COLUMNS", "LIST_COLUMNS", "get_available", "scaling_group", "scaling_groups")

COLUMNS = (
    Column("name", "Name"),
    Column("description", "Description"),
    Column("is_active", "Active?", "bool"),
    Column("is_public", "Public?", "bool"),
    Column("created_at", "Created At"),
    Column("driver", "Driver"),
    Column("driver_opts", "Driver Options", "json"),
    Column("scheduler", "Scheduler"),
    Column("scheduler_opts", "Scheduler Options", "json"),
    Column("use_host_network", "Use Host Network?", "bool"),
    Column("wsproxy_addr", "WSProxy Address"),
    Column("wsproxy_api_token", "WSProxy API Token"),
)
FIELDS = tuple(c.field for c in COLUMNS)
LIST_COLUMNS = tuple(
    c for c in COLUMNS if c.key in ("name", "description", "is_active", "is_public", "driver", "scheduler")
)
LIST_FIELDS = tuple(c.field for c in LIST_COLUMNS)
JSON_FIELDS = ("driver_opts", "scheduler_opts")


_SUBCOMMAND_ALIASES = {
    "associate-scaling-group": ["associate-domain"],
    "dissociate-scaling-group": ["dissociate-domain"],
}


@click.group(
    name="scaling-group", cls=LazyGroup, aliases=_SUBCOMMAND_ALIASES, invoke_without_command=True, no_args_is_help=True
)
@click.option(
    "-n",
    "--name",
    "sgroup_name",
    default=None,
    metavar="NAME",
    help='Show the scaling group NAME (the 19.09 spelling of "info NAME").',
)
@click.pass_context
def scaling_group(ctx: click.Context, sgroup_name: str | None) -> None:
    """Scaling group administration commands (superadmins; get-available is for everyone)."""
    if sgroup_name is None:
        return
    if ctx.invoked_subcommand is not None:
        raise click.UsageError("-n/--name shows one scaling group and takes no subcommand.")
    ctx.invoke(info, name=sgroup_name)


@scaling_group.command(name="get-available")
@click.argument("group_name", metavar="GROUP")
def get_available(group_name: str) -> None:
    """List the scaling groups you may use for sessions in GROUP (a group name)."""
    items = run_api(lambda api: api.ScalingGroup.list_available(group_name))
    if get_cli_context().json_output:
        emit_json({"count": len(items), "total_count": len(items), "items": items})
        return
    if not items:
        click.echo(f"There are no scaling groups available for {group_name}.")
        return
    for item in items:
        click.echo(str(item.get("name")))


@scaling_group.command()
@click.argument("name")
def info(name: str) -> None:
    """Show the scaling group NAME."""
    item = run_api(lambda api: api.ScalingGroup.detail(name, fields=FIELDS))
    print_item(item, COLUMNS, json_fields=JSON_FIELDS, not_found=f"No such scaling group: {name}")


@scaling_group.command(name="list")
@click.option("--domain", default=None, help="Only those associated with this domain.")
@click.option("--group", "group_ref", metavar="GROUP", default=None, help="Only those associated with this group.")
@click.option("--access-key", "--keypair", "access_key", default=None, help="Only those associated with this keypair.")
@click.option("--group-domain", default=None, help="The domain to look up a --group name in.")
def list_(domain: str | None, group_ref: str | None, access_key: str | None, group_domain: str | None) -> None:
    """List the scaling groups (all, or those associated with a domain, a group or a keypair)."""
    if sum(x is not None for x in (domain, group_ref, access_key)) > 1:
        raise click.UsageError("Give at most one of --domain, --group and --access-key.")

    async def _list(api: AsyncSession) -> list[dict[str, Any]]:
        if domain is not None:
            return await api.ScalingGroup.list_for_domain(domain, fields=LIST_FIELDS)
        if group_ref is not None:
            gid = await resolve_group_id(api, group_ref, group_domain)
            return await api.ScalingGroup.list_for_group(gid, fields=LIST_FIELDS)
        if access_key is not None:
            return await api.ScalingGroup.list_for_keypair(access_key, fields=LIST_FIELDS)
        return await api.ScalingGroup.list(fields=LIST_FIELDS)

    items = run_api(_list)
    print_items(
        items,
        LIST_COLUMNS,
        json_fields=JSON_FIELDS,
        empty="There are no matching scaling groups.",
        what="scaling groups",
    )


@scaling_group.command()
@click.argument("name")
@click.option("-d", "--description", default="", help="A description of the scaling group.")
@click.option("-i", "--inactive", is_flag=True, help="Create the scaling group inactive.")
@click.option("--private", is_flag=True, help="Hide it from users (only for sessions created by admins).")
@click.option("--driver", default="static", show_default=True, help="The agent provisioning driver.")
@click.option("--driver-opts", "--driver_opts", "driver_opts", type=JSON_OBJECT, default="{}", help="JSON options.")
@click.option("--scheduler", default="fifo", show_default=True, help="The scheduler (fifo, lifo, drf).")
@click.option(
    "--scheduler-opts", "--scheduler_opts", "scheduler_opts", type=JSON_OBJECT, default="{}", help="JSON options."
)
@click.option("--use-host-network", is_flag=True, help="Run containers with the host network.")
@click.option("--wsproxy-addr", default=None, help="The app proxy address.")
@click.option("--wsproxy-api-token", default=None, help="The app proxy API token.")
def add(
    name: str,
    description: str,
    inactive: bool,
    private: bool,
    driver: str,
    driver_opts: dict[str, Any],
    scheduler: str,
    scheduler_opts: dict[str, Any],
    use_host_network: bool,
    wsproxy_addr: str | None,
    wsproxy_api_token: str | None,
) -> None:
    """Create a scaling group called NAME."""
    result = run_api(
        lambda api: api.ScalingGroup.create(
            name,
            description=description,
            is_active=not inactive,
            is_public=not private,
            driver=driver,
            driver_opts=driver_opts,
            scheduler=scheduler,
            scheduler_opts=scheduler_opts,
            use_host_network=use_host_network,
            wsproxy_addr=wsproxy_addr,
            wsproxy_api_token=wsproxy_api_token,
        )
    )
    print_result(result, f"Scaling group {name} is created.", failed=f"Scaling group {name} was not created")


@scaling_group.command()
@click.argument("name")
@click.option("-d", "--description", default=None, help="A new description.")
@click.option("--active/--inactive", " /-i", "is_active", default=None, help="Activate or deactivate it.")
@click.option("--public/--private", "is_public", default=None, help="Show it to users or hide it.")
@click.option("--driver", default=None, help="The agent provisioning driver.")
@click.option("--driver-opts", "--driver_opts", "driver_opts", type=JSON_OBJECT, default=None, help="JSON options.")
@click.option("--scheduler", default=None, help="The scheduler (fifo, lifo, drf).")
@click.option(
    "--scheduler-opts", "--scheduler_opts", "scheduler_opts", type=JSON_OBJECT, default=None, help="JSON options."
)
@click.option("--use-host-network/--no-use-host-network", default=None, help="Run containers with the host network.")
@click.option("--wsproxy-addr", default=None, help="The app proxy address.")
@click.option("--wsproxy-api-token", default=None, help="The app proxy API token.")
def update(
    name: str,
    description: str | None,
    is_active: bool | None,
    is_public: bool | None,
    driver: str | None,
    driver_opts: dict[str, Any] | None,
    scheduler: str | None,
    scheduler_opts: dict[str, Any] | None,
    use_host_network: bool | None,
    wsproxy_addr: str | None,
    wsproxy_api_token: str | None,
) -> None:
    """Change the scaling group NAME."""
    changes: dict[str, Any] = {
        "description": description,
        "is_active": is_active,
        "is_public": is_public,
        "driver": driver,
        "driver_opts": driver_opts,
        "scheduler": scheduler,
        "scheduler_opts": scheduler_opts,
        "use_host_network": use_host_network,
        "wsproxy_addr": wsproxy_addr,
        "wsproxy_api_token": wsproxy_api_token,
    }
    require_changes(changes)
    result = run_api(lambda api: api.ScalingGroup.update(name, **changes))
    print_result(result, f"Scaling group {name} is updated.", failed=f"Scaling group {name} was not updated")


@scaling_group.command()
@click.argument("name")
def delete(name: str) -> None:
    """Delete the scaling group NAME."""
    result = run_api(lambda api: api.ScalingGroup.delete(name))
    print_result(result, f"Scaling group {name} is deleted.", failed=f"Scaling group {name} was not deleted")


@scaling_group.command(name="associate-scaling-group")
@click.argument("sgroup", metavar="SCALING_GROUP")
@click.argument("domain", metavar="DOMAIN")
def associate_domain(sgroup: str, domain: str) -> None:
    """Let DOMAIN use SCALING_GROUP."""
    result = run_api(lambda api: api.ScalingGroup.associate_domain(sgroup, domain))
    print_result(result, f"Scaling group {sgroup} is associated with domain {domain}.", failed="Not associated")


@scaling_group.command(name="dissociate-scaling-group")
@click.argument("sgroup", metavar="SCALING_GROUP")
@click.argument("domain", metavar="DOMAIN")
def dissociate_domain(sgroup: str, domain: str) -> None:
    """Stop DOMAIN from using SCALING_GROUP."""
    result = run_api(lambda api: api.ScalingGroup.dissociate_domain(sgroup, domain))
    print_result(result, f"Scaling group {sgroup} is dissociated from domain {domain}.", failed="Not dissociated")


@scaling_group.command(name="dissociate-all-domain")
@click.argument("domain", metavar="DOMAIN")
def dissociate_all_domain(domain: str) -> None:
    """Remove every scaling group from DOMAIN."""
    result = run_api(lambda api: api.ScalingGroup.dissociate_all_domain(domain))
    print_result(result, f"All scaling groups are dissociated from domain {domain}.", failed="Not dissociated")


def _group_command(name: str, associate: bool) -> click.Command:
    @click.command(name=name)
    @click.argument("sgroup", metavar="SCALING_GROUP")
    @click.argument("group_ref", metavar="GROUP")
    @click.option("-d", "--domain", default=None, help="The domain to look up a GROUP name in.")
    def _cmd(sgroup: str, group_ref: str, domain: str | None) -> None:
        async def _run(api: AsyncSession) -> dict[str, Any]:
            gid = await resolve_group_id(api, group_ref, domain)
            if associate:
                return await api.ScalingGroup.associate_group(sgroup, gid)
            return await api.ScalingGroup.dissociate_group(sgroup, gid)

        if associate:
            done, failed = f"Scaling group {sgroup} is associated with group {group_ref}.", "Not associated"
        else:
            done, failed = f"Scaling group {sgroup} is dissociated from group {group_ref}.", "Not dissociated"
        print_result(run_api(_run), done, failed=failed)

    _cmd.help = (
        "Let GROUP (an ID or a name) use SCALING_GROUP."
        if associate
        else "Stop GROUP (an ID or a name) from using SCALING_GROUP."
    )
    return _cmd


def _keypair_command(name: str, associate: bool) -> click.Command:
    @click.command(name=name)
    @click.argument("sgroup", metavar="SCALING_GROUP")
    @click.argument("access_key", metavar="ACCESS_KEY")
    def _cmd(sgroup: str, access_key: str) -> None:
        if associate:
            result = run_api(lambda api: api.ScalingGroup.associate_keypair(sgroup, access_key))
            print_result(
                result, f"Scaling group {sgroup} is associated with keypair {access_key}.", failed="Not associated"
            )
        else:
            result = run_api(lambda api: api.ScalingGroup.dissociate_keypair(sgroup, access_key))
            print_result(
                result, f"Scaling group {sgroup} is dissociated from keypair {access_key}.", failed="Not dissociated"
            )

    _cmd.help = "Let ACCESS_KEY use SCALING_GROUP." if associate else "Stop ACCESS_KEY from using SCALING_GROUP."
    return _cmd


scaling_group.add_command(_group_command("associate-group", True))
scaling_group.add_command(_group_command("dissociate-group", False))
scaling_group.add_command(_keypair_command("associate-keypair", True))
scaling_group.add_command(_keypair_command("dissociate-keypair", False))


@scaling_group.command(name="dissociate-all-group")
@click.argument("group_ref", metavar="GROUP")
@click.option("-d", "--domain", default=None, help="The domain to look up a GROUP name in.")
def dissociate_all_group(group_ref: str, domain: str | None) -> None:
    """Remove every scaling group from GROUP (an ID or a name)."""

    async def _run(api: AsyncSession) -> dict[str, Any]:
        return await api.ScalingGroup.dissociate_all_group(await resolve_group_id(api, group_ref, domain))

    print_result(run_api(_run), f"All scaling groups are dissociated from group {group_ref}.", failed="Not dissociated")


@click.group(
    name="scaling-groups",
    cls=LazyGroup,
    aliases=_SUBCOMMAND_ALIASES,
    invoke_without_command=True,
    commands=scaling_group.commands,
)
@click.pass_context
def scaling_groups(ctx: click.Context) -> None:
    """Scaling groups (the 19.09 spelling): alone, list them all; the subcommands are those of scaling-group."""
    if ctx.invoked_subcommand is None:
        ctx.invoke(list_)
