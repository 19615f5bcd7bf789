"""Compute session commands: ``session create|destroy|restart|info|list|upload|download|ls|logs|rename``
(and ``session app|apps|ssh|scp`` from :mod:`.app` and :mod:`.ssh`).

The same command objects are exposed at the top level (``create``/``start``,
``destroy``/``rm``/``kill``/``terminate``, ``restart``, ``info``, ``ps``, ...).
"""

from __future__ import annotations

import json
import sys
from collections.abc import Awaitable, Callable, Mapping, Sequence
from typing import IO, TYPE_CHECKING, Any, TypeVar

import click

from .core import LazyGroup, get_cli_context
from .main import COMMANDS, CommandSpec
from .params import (
    ENV_TYPE,
    RESOURCE_OPT_TYPE,
    RESOURCE_TYPE,
    CommaSeparatedList,
    MountType,
    PortList,
    SessionNameType,
    pairs_to_dict,
    prepare_mount_arg,
)
from .pretty import print_done, print_fail, print_info, print_wait, print_warn, with_request_id

if TYPE_CHECKING:
    from ..session import AsyncSession

__all__ = (
    "ACTIVE_STATUSES",
    "SESSION_FIELDS",
    "create",
    "destroy",
    "info",
    "list_sessions",
    "resolve_list_fields",
    "resolve_status_filter",
    "restart",
    "session",
)

T = TypeVar("T")

ACTIVE_STATUSES = (
    "PENDING",
    "SCHEDULED",
    "PREPARING",
    "PULLING",
    "RUNNING",
    "RESTARTING",
    "TERMINATING",
    "RESIZING",
    "SUSPENDED",
    "ERROR",
)
RUNNING_STATUSES = ("PREPARING", "PULLING", "RUNNING")
DEAD_STATUSES = ("CANCELLED", "TERMINATED")
ALL_STATUSES = (*ACTIVE_STATUSES, "RUNNING_DEGRADED", "BUILDING", "CANCELLED", "TERMINATED")

SESSION_FIELDS: dict[str, tuple[str, str]] = {
    # format option → (GraphQL field, column heading)
    "name": ("name", "Name"),
    "session_id": ("session_id", "Session ID"),
    "id": ("id", "ID"),
    "main_kernel_id": ("main_kernel_id", "Main Kernel ID"),
    "tag": ("tag", "Tag"),
    "type": ("type", "Type"),
    "image": ("image", "Image"),
    "registry": ("registry", "Registry"),
    "cluster_template": ("cluster_template", "Cluster Template"),
    "cluster_mode": ("cluster_mode", "Cluster Mode"),
    "cluster_size": ("cluster_size", "Cluster Size"),
    "domain_name": ("domain_name", "Domain"),
    "group_name": ("group_name", "Project/Group"),
    "group_id": ("group_id", "Group ID"),
    "user_email": ("user_email", "User Email"),
    "user_id": ("user_id", "User ID"),
    "access_key": ("access_key", "Owner Access Key"),
    "status": ("status", "Status"),
    "status_info": ("status_info", "Status Info"),
    "status_changed": ("status_changed", "Last Updated"),
    "last_updated": ("status_changed", "Last Updated"),
    "created_at": ("created_at", "Created At"),
    "terminated_at": ("terminated_at", "Terminated At"),
    "starts_at": ("starts_at", "Starts At"),
    "startup_command": ("startup_command", "Startup Command"),
    "result": ("result", "Result"),
    "resource_opts": ("resource_opts", "Resource Opts"),
    "scaling_group": ("scaling_group", "Scaling Group"),
    "service_ports": ("service_ports", "Service Ports"),
    "mounts": ("mounts", "Mounts"),
    "occupied_slots": ("occupied_slots", "Occupied Slots"),
    "occupying_slots": ("occupied_slots", "Occupied Slots"),
    "num_queries": ("num_queries", "Num Queries"),
}
DEFAULT_FIELDS = ("name", "session_id", "image", "type", "status", "status_info", "status_changed", "result")
DETAIL_FIELDS = ("tag", "created_at", "occupied_slots")
PAGE_SIZE = 100
DEFAULT_LIMIT = 10


def _run_async(factory: Callable[[AsyncSession], Awaitable[T]]) -> T:
    """Open an :class:`AsyncSession`, await ``factory(session)`` and return the result."""
    import asyncio

    from ..session import AsyncSession

    get_cli_context().get_config()

    async def _main() -> T:
        async with AsyncSession() as api_sess:
            return await factory(api_sess)

    return asyncio.run(_main())


def _emit_json(data: Any) -> None:
    click.echo(json.dumps(data, indent=2, ensure_ascii=False, default=str))


# ---- create ----


@click.command()
@click.argument("image")
@click.option("-t", "--name", "--client-token", "name", metavar="NAME", type=SessionNameType(), help="Session name.")
@click.option("-o", "--owner", "--owner-access-key", "owner", metavar="ACCESS_KEY", help="Owner (admins only).")
@click.option("--type", "type_", type=click.Choice(["batch", "interactive"]), default="interactive")
@click.option("--starts-at", metavar="STARTS_AT", help="Start the session at this (or a relative) time.")
@click.option("-c", "--startup-command", metavar="COMMAND", help="The command of a batch session.")
@click.option("--enqueue-only", is_flag=True, help="Only enqueue the session; do not wait for it.")
@click.option(
    "--max-wait",
    metavar="SECONDS",
    type=click.IntRange(min=0),
    default=0,
    help="Give up waiting for the session to start after this long (exit 1; the session stays queued).",
)
@click.option("--no-reuse", is_flag=True, help="Fail instead of reusing a session with the same name.")
@click.option("--depends", metavar="SESSION", multiple=True, help="Sessions that must finish first.")
@click.option("--callback-url", metavar="URL", help="URL called on session lifecycle events.")
@click.option("-e", "--env", metavar="KEY=VAL", type=ENV_TYPE, multiple=True, help="Environment variable.")
@click.option("--bootstrap-script", metavar="PATH", type=click.File("r"), help="A script to run on startup.")
@click.option("--tag", type=str, default=None, help="A user-defined tag of the session.")
@click.option("-v", "--volume", "-m", "--mount", "mount", metavar="NAME[=PATH]", type=MountType(), multiple=True)
@click.option("--scaling-group", "--sgroup", type=str, default=None)
@click.option(
    "-r",
    "--resources",
    "--resource",
    "resources",
    metavar="KEY=VAL",
    type=RESOURCE_TYPE,
    multiple=True,
    help="Resource slot, e.g. -r cpu=2 -r mem=4g.",
)
@click.option("--cluster-size", metavar="NUMBER", type=click.IntRange(min=1), default=1)
@click.option("--cluster-mode", type=click.Choice(["single-node", "multi-node"]), default="single-node")
@click.option("--resource-opts", metavar="KEY=VAL", type=RESOURCE_OPT_TYPE, multiple=True)
@click.option("--preopen", type=PortList(), default=None, help="Ports to pre-open, e.g. 8000,8001.")
@click.option("--assign-agent", type=CommaSeparatedList(), default=None, help="Agents to use (admins).")
@click.option("-d", "--domain", metavar="DOMAIN_NAME", default=None)
@click.option("-g", "--group", metavar="GROUP_NAME", default=None)
def create(
    image: str,
    name: str | None,
    owner: str | None,
    type_: str,
    starts_at: str | None,
    startup_command: str | None,
    enqueue_only: bool,
    max_wait: int,
    no_reuse: bool,
    depends: tuple[str, ...],
    callback_url: str | None,
    env: tuple[tuple[str, str], ...],
    bootstrap_script: IO[str] | None,
    tag: str | None,
    mount: tuple[str, ...],
    scaling_group: str | None,
    resources: tuple[tuple[str, str], ...],
    cluster_size: int,
    cluster_mode: str,
    resource_opts: tuple[tuple[str, str], ...],
    preopen: list[int] | None,
    assign_agent: list[str] | None,
    domain: str | None,
    group: str | None,
) -> None:
    """Create a compute session without running code.

    \b
    IMAGE: the kernel image (name[:tag]) or its alias.
    """
    mounts, mount_map = prepare_mount_arg(mount)
    if name is None:
        import secrets

        name = f"pysdk-{secrets.token_hex(5)}"
    script = bootstrap_script.read() if bootstrap_script is not None else None
    cli = get_cli_context()
    from .waiting import WaitProgress, create_with_progress, format_max_wait_message, state_after_timeout

    progress = WaitProgress(name, enabled=not cli.json_output and not enqueue_only)

    async def _create(api_sess: AsyncSession) -> tuple[Any, tuple[str | None, str | None] | None]:
        cs = await create_with_progress(
            lambda: api_sess.ComputeSession.get_or_create(
                image,
                name=name,
                type_=type_,
                starts_at=starts_at,
                enqueue_only=enqueue_only,
                max_wait=max_wait,
                no_reuse=no_reuse,
                dependencies=list(depends) or None,
                callback_url=callback_url,
                mounts=mounts,
                mount_map=mount_map,
                envs=pairs_to_dict(env),
                startup_command=startup_command,
                resources=pairs_to_dict(resources),
                resource_opts=pairs_to_dict(resource_opts),
                cluster_size=cluster_size,
                cluster_mode="multi-node" if cluster_mode == "multi-node" else "single-node",
                domain_name=domain,
                group_name=group,
                bootstrap_script=script,
                tag=tag,
                scaling_group=scaling_group,
                owner_access_key=owner,
                preopen_ports=preopen,
                assign_agent=assign_agent,
            ),
            api_sess.ComputeSession(name, owner).get_info,
            progress,
        )
        last = await state_after_timeout(cs, progress) if cs.status == "TIMEOUT" else None
        return cs, last

    cs, last = _run_async(_create)
    failed = cs.status in ("ERROR", "CANCELLED", "TERMINATED", "TIMEOUT")
    if cs.status == "TIMEOUT":  # --max-wait passed: one line on stderr, the session stays queued
        print_fail(format_max_wait_message(str(cs.name), max_wait, *(last or (None, None)), destroyed=False))
    if cli.json_output:
        _emit_json(
            {
                "name": cs.name,
                "session_id": str(cs.id) if cs.id else None,
                "status": cs.status,
                "status_info": last[1] if last else cs.status_info,
                "created": cs.created,
                "service_ports": cs.service_ports,
            }
        )
        sys.exit(1 if failed else 0)
    if cs.status == "PENDING":
        print_info(f"Session ID {cs.name} is enqueued for scheduling.")
    elif cs.status == "SCHEDULED":
        print_info(f"Session ID {cs.name} is scheduled and about to be started.")
    elif cs.status == "RUNNING":
        if cs.created:
            print_done(f"Session ID {cs.name} is created and ready.")
        else:
            print_done(f"Session ID {cs.name} is already running and ready.")
        if cs.service_ports:
            apps = ", ".join(str(p.get("name")) for p in cs.service_ports if isinstance(p, Mapping))
            print_info(f"This session provides the following app services: {apps}")
    elif cs.status == "TERMINATED":
        print_warn(f"Session ID {cs.name} is already terminated.\nThis may be an error in the kernel image.")
    elif cs.status in ("ERROR", "CANCELLED"):
        print_fail(
            f"Session ID {cs.name} has an error during scheduling/startup or cancelled."
            + (f" ({cs.status_info})" if cs.status_info else "")
        )
    elif cs.status != "TIMEOUT":
        print_info(f"Session ID {cs.name} is {cs.status}.")
    sys.exit(1 if failed else 0)


# ---- destroy / restart ----


@click.command()
@click.argument("names", metavar="SESSION...", nargs=-1, required=True)
@click.option("-f", "--forced", is_flag=True, help="Force-terminate errored sessions (admins only).")
@click.option("-o", "--owner", "--owner-access-key", "owner", metavar="ACCESS_KEY", help="Owner (admins only).")
@click.option("-s", "--stats", is_flag=True, help="Show resource usage statistics after termination.")
def destroy(names: tuple[str, ...], forced: bool, owner: str | None, stats: bool) -> None:
    """Terminate and destroy compute sessions.

    \b
    SESSION: session names (or IDs).
    """
    from ..exceptions import BackendError
    from .run import format_stats

    cli = get_cli_context()
    print_wait("Terminating the session(s)...")

    async def _destroy(api_sess: AsyncSession) -> list[dict[str, Any]]:
        results: list[dict[str, Any]] = []
        for name in names:
            try:
                ret = await api_sess.ComputeSession(name, owner).destroy(forced=forced)
            except BackendError as e:
                failure: dict[str, Any] = {"name": name, "ok": False, "error": str(e)}
                rid = getattr(e, "request_id", None)
                if rid:
                    failure["request_id"] = rid
                results.append(failure)
            else:
                results.append({"name": name, "ok": True, "stats": (ret or {}).get("stats")})
        return results

    results = _run_async(_destroy)
    failed = [r for r in results if not r["ok"]]
    if cli.json_output:
        _emit_json(results)
        sys.exit(1 if failed else 0)
    for r in results:
        if not r["ok"]:
            print_fail(r["error"] + (f" [request id: {r['request_id']}]" if r.get("request_id") else ""))
        elif stats:
            if r["stats"]:
                print_info(f"Statistics of {r['name']}:\n{format_stats(r['stats'])}")
            else:
                print_warn(f"Statistics of {r['name']}: unavailable.")
    if failed:
        sys.exit(1)
    print_done("Done.")


@click.command()
@click.argument("names", metavar="SESSION...", nargs=-1, required=True)
@click.option("-o", "--owner", "--owner-access-key", "owner", metavar="ACCESS_KEY", help="Owner (admins only).")
def restart(names: tuple[str, ...], owner: str | None) -> None:
    """Restart compute sessions (their containers are recreated, files kept).

    \b
    SESSION: session names (or IDs).
    """
    from ..exceptions import BackendError

    print_wait("Restarting the session(s)...")

    async def _restart(api_sess: AsyncSession) -> list[str]:
        errors: list[str] = []
        for name in names:
            try:
                await api_sess.ComputeSession(name, owner).restart()
            except BackendError as e:
                errors.append(with_request_id(str(e), e))
        return errors

    errors = _run_async(_restart)
    for e in errors:
        print_fail(e)
    if errors:
        sys.exit(1)
    print_done("Done.")


# ---- info ----


def _print_mapping(data: Mapping[str, Any]) -> None:
    width = max((len(str(k)) for k in data), default=0)
    for key, value in data.items():
        if value is None:
            text = "-"
        elif isinstance(value, str):
            text = value
        else:
            text = json.dumps(value, ensure_ascii=False, default=str)
        click.echo(f"{str(key).ljust(width)}  {text}")


@click.command()
@click.argument("name", metavar="SESSION")
@click.option("-o", "--owner", "--owner-access-key", "owner", metavar="ACCESS_KEY", help="Owner (admins only).")
@click.option("-s", "--stats", "stats_only", is_flag=True, help="Show only the resource usage statistics.")
def info(name: str, owner: str | None, stats_only: bool) -> None:
    """Show information about a compute session and its resource usage.

    \b
    SESSION: the session name (or ID).
    """
    from .run import format_stats

    cli = get_cli_context()

    async def _info(api_sess: AsyncSession) -> dict[str, Any]:
        cs = api_sess.ComputeSession(name, owner)
        doc = await cs.get_info()
        if doc.get("status") == "RUNNING" and not stats_only:
            # The session document carries no apps (as upstream's); they come from the apps list.
            try:
                doc["apps"] = await cs.stream_app_info()
            except Exception:  # noqa: BLE001 - an older server without apps: show the rest
                pass
        return doc

    data = _run_async(_info)
    stats = data.get("stats")
    if cli.json_output:
        _emit_json({"stats": stats} if stats_only else data)
        return
    if not stats_only:
        apps = data.pop("apps", None)
        _print_mapping({k: v for k, v in data.items() if k != "stats"})
        if apps:
            listed = ", ".join(f"{a['name']} ({a.get('protocol', '?')})" for a in apps)
            click.echo(f"Apps: {listed}  (open one with `backend.ai app {name} APP`)")
        click.echo("")
    live = data.get("status") == "RUNNING"
    if isinstance(stats, Mapping) and stats:
        click.echo("Resource usage" + (" (live, refreshed every few seconds):" if live else " (when it ended):"))
        click.echo(format_stats(stats))
    else:
        click.echo("Resource usage: not reported yet.")


# ---- list ----


def resolve_status_filter(status: str | None, running: bool, dead: bool) -> tuple[str, str]:
    """Return the comma-joined status list to query and the word for the empty message."""
    if running and dead:
        raise click.UsageError("Give only one of --running and --dead.")
    if running:
        return ",".join(RUNNING_STATUSES), "running"
    if dead:
        return ",".join(DEAD_STATUSES), "dead"
    if status is None:
        return ",".join(ACTIVE_STATUSES), "active"
    statuses = [s.strip().upper() for s in status.split(",") if s.strip()]
    if not statuses:
        raise click.BadParameter("no status given", param_hint="'-s' / '--status'")
    if "ALL" in statuses:
        return ",".join(ALL_STATUSES), "in any status"
    unknown = [s for s in statuses if s not in ALL_STATUSES]
    if unknown:
        raise click.BadParameter(
            f"unknown status {unknown[0]!r} (choose from {', '.join(ALL_STATUSES)}, ALL)",
            param_hint="'-s' / '--status'",
        )
    return ",".join(statuses), ", ".join(s.lower() for s in statuses)


def resolve_list_fields(fmt: str | None, detail: bool, name_only: bool) -> list[tuple[str, str, str]]:
    """Return ``(key, GraphQL field, heading)`` for the columns to show."""
    if name_only:
        keys: Sequence[str] = ["name"]
    elif fmt is not None:
        keys = [k.strip() for k in fmt.split(",") if k.strip()]
        if not keys:
            raise click.BadParameter("no field given", param_hint="'-f' / '--format'")
        for k in keys:
            if k not in SESSION_FIELDS:
                raise click.BadParameter(
                    f"There is no such format option: {k} (choose from {', '.join(sorted(SESSION_FIELDS))})",
                    param_hint="'-f' / '--format'",
                )
    else:
        keys = [*DEFAULT_FIELDS, *(DETAIL_FIELDS if detail else ())]
    return [(k, *SESSION_FIELDS[k]) for k in keys]


def _human_bytes(n: float) -> str:
    for unit in ("B", "KiB", "MiB", "GiB", "TiB"):
        if abs(n) < 1024 or unit == "TiB":
            return f"{n:.0f} {unit}" if unit == "B" else f"{n:.1f} {unit}"
        n /= 1024
    return f"{n:.1f} TiB"


def format_cell(gql_field: str, value: Any) -> str:
    """Format a field value for the console table."""
    if value is None:
        return "-"
    if gql_field in ("occupied_slots", "resource_opts", "service_ports") and isinstance(value, str):
        try:
            value = json.loads(value)
        except json.JSONDecodeError:
            return value
    if gql_field == "occupied_slots" and isinstance(value, Mapping):
        parts = []
        for k, v in value.items():
            if k == "mem":
                try:
                    v = _human_bytes(float(v))
                except (TypeError, ValueError):
                    pass
            parts.append(f"{k}={v}")
        return " ".join(parts) or "-"
    if isinstance(value, (dict, list)):
        return json.dumps(value, ensure_ascii=False)
    return str(value)


JSON_STRING_FIELDS = frozenset({"occupied_slots", "resource_opts", "service_ports", "status_data"})


def json_value(gql_field: str, value: Any) -> Any:
    """Decode GraphQL ``JSONString`` fields for the JSON output."""
    if gql_field in JSON_STRING_FIELDS and isinstance(value, str):
        try:
            return json.loads(value)
        except json.JSONDecodeError:
            return value
    return value


def _print_table(rows: Sequence[Mapping[str, Any]], columns: Sequence[tuple[str, str, str]], plain: bool) -> None:
    from rich import box
    from rich.console import Console
    from rich.table import Table

    table = Table(
        box=None if plain else box.SIMPLE_HEAD,
        show_header=not plain,
        pad_edge=False,
        show_edge=False,
        header_style="bold",
    )
    for _key, _gql, heading in columns:
        table.add_column(heading, overflow="fold")
    for row in rows:
        table.add_row(*(format_cell(gql, row.get(gql)) for _k, gql, _h in columns))
    tty = sys.stdout.isatty()
    console = Console(file=sys.stdout, width=None if tty else 100_000, soft_wrap=not tty)
    with console.capture() as capture:
        console.print(table)
    for line in capture.get().splitlines():
        click.echo(line.rstrip(), color=tty)


@click.command(name="list")
@click.option("-s", "--status", default=None, help="Only these statuses (comma-separated, or ALL).")
@click.option("--access-key", type=str, default=None, help="Sessions of this access key (admins only).")
@click.option("--name-only", is_flag=True, help="Print only the session names, one per line.")
@click.option("--dead", is_flag=True, help="Only CANCELLED and TERMINATED sessions.")
@click.option("--running", is_flag=True, help="Only PREPARING, PULLING and RUNNING sessions.")
@click.option("--detail", is_flag=True, help="Show more columns.")
@click.option("-f", "--format", "fmt", default=None, help="Columns to show, e.g. name,status,occupied_slots.")
@click.option("--plain", is_flag=True, help="No header and no decorations.")
@click.option("--filter", "filter_", default=None, help="A query filter expression (server-side).")
@click.option("--order", default=None, help="A query ordering expression (server-side).")
@click.option("--offset", type=click.IntRange(min=0), default=0, help="Skip this many sessions.")
@click.option(
    "--limit",
    type=click.IntRange(1, PAGE_SIZE),
    default=None,
    help=f"Show at most this many (default {DEFAULT_LIMIT}).",
)
@click.option("-a", "--all", "all_", is_flag=True, help="Show all matching sessions (page through them).")
def list_sessions(
    status: str | None,
    access_key: str | None,
    name_only: bool,
    dead: bool,
    running: bool,
    detail: bool,
    fmt: str | None,
    plain: bool,
    filter_: str | None,
    order: str | None,
    offset: int,
    limit: int | None,
    all_: bool,
) -> None:
    """List compute sessions, most recently changed first (active ones by default)."""
    status_filter, no_match_word = resolve_status_filter(status, running, dead)
    columns = resolve_list_fields(fmt, detail, name_only)
    if all_ and limit is not None:
        raise click.UsageError("Give only one of --all and --limit.")
    cli = get_cli_context()
    gql_fields = list(dict.fromkeys(gql for _k, gql, _h in columns))

    async def _fetch(api_sess: AsyncSession) -> tuple[list[dict[str, Any]], int]:
        items: list[dict[str, Any]] = []
        cur = offset
        while True:
            page_size = PAGE_SIZE if all_ else (limit or DEFAULT_LIMIT)
            page = await api_sess.ComputeSession.paginated_list(
                status_filter,
                access_key,
                fields=gql_fields,
                page_offset=cur,
                page_size=page_size,
                filter=filter_,
                order=order,
            )
            items.extend(page.items)
            cur += len(page.items)
            if not all_ or not page.items or cur >= page.total_count:
                return items, page.total_count

    items, total = _run_async(_fetch)
    if cli.json_output:
        _emit_json(
            {
                "count": len(items),
                "total_count": total,
                "items": [{key: json_value(gql, item.get(gql)) for key, gql, _h in columns} for item in items],
            }
        )
        return
    if not items:
        message = f"There are no compute sessions currently {no_match_word}."
        if name_only:
            print_info(message)
        else:
            click.echo(message)
        return
    if name_only:
        for item in items:
            click.echo(str(item.get("name")))
    else:
        _print_table(items, columns, plain)
    if not all_ and offset + len(items) < total:
        print_info(f"Showing {len(items)} of {total} sessions; use -a/--all or --offset/--limit to see more.")


# ---- files, logs, rename ----


@click.command()
@click.argument("name", metavar="SESSION")
@click.argument("files", type=click.Path(exists=True, dir_okay=False), nargs=-1, required=True)
@click.option("--basedir", type=click.Path(file_okay=False), default=None, help="Base of the uploaded paths.")
def upload(name: str, files: tuple[str, ...], basedir: str | None) -> None:
    """Upload files into a compute session's /home/work.

    \b
    SESSION: the session name (or ID).
    FILES: local files (their paths relative to --basedir are kept).
    """

    async def _upload(api_sess: AsyncSession) -> None:
        print_wait("Uploading files...")
        await api_sess.ComputeSession(name).upload(list(files), basedir=basedir, show_progress=True)

    _run_async(_upload)
    print_done("Uploaded.")


@click.command()
@click.argument("name", metavar="SESSION")
@click.argument("files", nargs=-1, required=True)
@click.option("--dest", type=click.Path(file_okay=False), default=".", help="Local destination directory.")
def download(name: str, files: tuple[str, ...], dest: str) -> None:
    """Download files from a compute session.

    \b
    SESSION: the session name (or ID).
    FILES: paths inside the session (relative to /home/work).
    """

    async def _download(api_sess: AsyncSession) -> dict[str, list[str]]:
        print_wait(f"Downloading file(s) from {name}...")
        return await api_sess.ComputeSession(name).download(list(files), dest, show_progress=True)

    result = _run_async(_download)
    if get_cli_context().json_output:
        _emit_json(result)
        return
    print_done(f"Downloaded {len(result['file_names'])} file(s) to {dest}.")


@click.command()
@click.argument("name", metavar="SESSION")
@click.argument("path", default=".")
def ls(name: str, path: str) -> None:
    """List files in a directory of a compute session.

    \b
    SESSION: the session name (or ID).
    PATH: a directory inside the session (default: /home/work).
    """
    from datetime import datetime

    async def _ls(api_sess: AsyncSession) -> dict[str, Any]:
        return await api_sess.ComputeSession(name).list_files(path)

    result = _run_async(_ls)
    if result.get("errors"):
        print_fail(str(result["errors"]))
        sys.exit(1)
    files = result.get("files", [])
    if isinstance(files, str):
        files = json.loads(files) if files else []
    if get_cli_context().json_output:
        _emit_json({**result, "files": files})
        return
    rows = []
    for f in files:
        mtime = f.get("mtime")
        try:
            mtime_str = datetime.fromtimestamp(float(mtime)).strftime("%b %d %Y %H:%M:%S")
        except (TypeError, ValueError):
            mtime_str = str(mtime)
        rows.append({"filename": f.get("filename"), "size": f.get("size"), "mtime": mtime_str, "mode": f.get("mode")})
    columns = [
        ("filename", "filename", "File name"),
        ("size", "size", "Size"),
        ("mtime", "mtime", "Modified"),
        ("mode", "mode", "Mode"),
    ]
    _print_table(rows, columns, plain=False)


@click.command()
@click.argument("name", metavar="SESSION")
def logs(name: str) -> None:
    """Show the console log of a compute session's main container.

    \b
    SESSION: the session name (or ID).
    """

    async def _logs(api_sess: AsyncSession) -> dict[str, Any]:
        return await api_sess.ComputeSession(name).get_logs()

    data = _run_async(_logs)
    result = data.get("result", data)
    text = result.get("logs", "") if isinstance(result, Mapping) else str(result)
    click.echo(text, nl=not str(text).endswith("\n"))


@click.command()
@click.argument("name", metavar="SESSION")
@click.argument("new_name", metavar="NEW_NAME", type=SessionNameType())
def rename(name: str, new_name: str) -> None:
    """Rename a compute session."""

    async def _rename(api_sess: AsyncSession) -> None:
        await api_sess.ComputeSession(name).rename(new_name)

    _run_async(_rename)
    print_done(f"Session renamed to {new_name}.")


@click.group(
    cls=LazyGroup,
    aliases={"destroy": ("rm", "kill", "terminate"), "create": ("start",)},
    lazy_commands={
        "create-from-template": CommandSpec(
            "ai.backend.client.cli.session_template:create_from_template_top",
            "Create a compute session from a session template.",
            ["start-from-template"],
        ),
        "events": CommandSpec("ai.backend.client.cli.events:events", "Show session lifecycle events live."),
        **{name: COMMANDS[name] for name in ("app", "apps", "ssh", "scp")},
    },
)
def session() -> None:
    """Compute session commands."""


for _cmd in (create, destroy, restart, info, list_sessions, upload, download, ls, logs, rename):
    session.add_command(_cmd)

# The top-level aliases reuse the same command objects.
create_top = create
destroy_top = destroy
restart_top = restart
info_top = info
list_top = list_sessions
upload_top = upload
download_top = download
ls_top = ls
logs_top = logs
