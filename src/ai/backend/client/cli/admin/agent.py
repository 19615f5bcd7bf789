"""``backend.ai admin agent info|list`` (superadmins), and the 19.09 spellings ``admin agent -i ID`` and
``admin agents [-s STATUS] [--all]`` (registered in :mod:`ai.backend.client.cli.admin`)."""

from __future__ import annotations

import json
from typing import TYPE_CHECKING, Any

import click

from ...func.agent import AGENT_STATUSES
from ..core import get_cli_context
from ._common import Column, fetch_pages, paging_options, print_item, print_items, run_api

if TYPE_CHECKING:
    from ...session import AsyncSession

__all__ = ("COLUMNS", "LIST_COLUMNS", "agent", "list_")

COLUMNS = (
    Column("id", "ID"),
    Column("status", "Status"),
    Column("scaling_group", "Scaling Group"),
    Column("addr", "Addr"),
    Column("region", "Region"),
    Column("first_contact", "First Contact"),
    Column("version", "Version"),
    Column("architecture", "Architecture"),
    Column("schedulable", "Schedulable?", "bool"),
    Column("last_heartbeat", "Last Heartbeat"),
    Column("cpu_cur_pct", "CPU Usage (%)"),
    Column("mem_cur_bytes", "Used Memory", "bytes"),
    Column("available_slots", "Available Slots", "slots"),
    Column("occupied_slots", "Occupied Slots", "slots"),
    Column("compute_plugins", "Compute Plugins", "list"),
)
FIELDS = tuple(c.field for c in COLUMNS)
LIST_COLUMNS = tuple(
    c for c in COLUMNS if c.key in ("id", "status", "scaling_group", "available_slots", "occupied_slots")
)
LIST_FIELDS = tuple(c.field for c in LIST_COLUMNS)
JSON_FIELDS = ("available_slots", "occupied_slots", "compute_plugins")


def show_agent(agent_id: str) -> None:
    """Print the agent AGENT_ID: every field (JSON), or ``Heading: value`` lines with the compute
    plugins as their names (console)."""
    item = run_api(lambda api: api.Agent.detail(agent_id, fields=FIELDS))
    if item is not None and not get_cli_context().json_output:
        plugins = item.get("compute_plugins")
        if isinstance(plugins, str):
            try:
                plugins = json.loads(plugins)
            except json.JSONDecodeError:
                pass
        if isinstance(plugins, dict):
            item = {**item, "compute_plugins": sorted(plugins)}
    print_item(item, COLUMNS, json_fields=JSON_FIELDS, not_found=f"No such agent: {agent_id}")


@click.group(invoke_without_command=True, no_args_is_help=True)
@click.option(
    "-i",
    "--id",
    "agent_id",
    default=None,
    metavar="ID",
    help='Show the agent ID (the 19.09 spelling of "agent info ID").',
)
@click.pass_context
def agent(ctx: click.Context, agent_id: str | None) -> None:
    """Agent (compute node) commands (superadmins)."""
    if agent_id is None:
        return
    if ctx.invoked_subcommand is not None:
        raise click.UsageError("-i/--id shows one agent and takes no subcommand.")
    show_agent(agent_id)


@agent.command()
@click.argument("agent_id")
def info(agent_id: str) -> None:
    """Show the agent AGENT_ID."""
    show_agent(agent_id)


@agent.command(name="list")
@click.option(
    "-s",
    "--status",
    type=click.Choice([*AGENT_STATUSES, "ALL"], case_sensitive=False),
    default="ALIVE",
    show_default=True,
    help="Only agents with this status.",
)
@click.option("--scaling-group", "--sgroup", "scaling_group", default=None, help="Only agents of this scaling group.")
@paging_options
def list_(
    status: str,
    scaling_group: str | None,
    filter_: str | None,
    order: str | None,
    offset: int,
    limit: int | None,
    all_: bool,
) -> None:
    """List agents."""
    status_arg = None if status.upper() == "ALL" else status.upper()

    async def _list(api: AsyncSession) -> tuple[list[dict[str, Any]], int]:
        return await fetch_pages(
            lambda off, size: api.Agent.paginated_list(
                status_arg,
                scaling_group,
                fields=LIST_FIELDS,
                page_offset=off,
                page_size=size,
                filter=filter_,
                order=order,
            ),
            offset=offset,
            limit=limit,
            all_=all_,
        )

    items, total = run_api(_list)
    print_items(
        items,
        LIST_COLUMNS,
        json_fields=JSON_FIELDS,
        total=total,
        offset=offset,
        empty="There are no matching agents.",
        what="agents",
    )
