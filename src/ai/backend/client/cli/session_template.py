"""``backend.ai session-template`` (alias ``sesstpl``) and ``backend.ai create-from-template``.

``session-template create|list|get|update|delete`` manage your templates (YAML or JSON text, from a file
or stdin); ``create-from-template TEMPLATE_ID`` (also ``start-from-template``, ``start-template`` and
``session create-from-template``) starts a session from one, options overriding the template's values.
"""

from __future__ import annotations

import sys
from collections.abc import Mapping
from typing import IO, Any

import click

from ..types import undefined
from .admin._common import Column, emit_json, fail, print_items, run_api
from .core import get_cli_context
from .params import (
    ENV_TYPE,
    RESOURCE_OPT_TYPE,
    RESOURCE_TYPE,
    MountType,
    SessionNameType,
    pairs_to_dict,
    prepare_mount_arg,
)
from .pretty import Spinner, print_done, print_fail, print_info, print_warn

__all__ = ("create_from_template_top", "session_template")

COLUMNS = (
    Column("name", "Name"),
    Column("id", "ID"),
    Column("created_at", "Created At"),
    Column("is_owner", "Owner", "bool"),
    Column("user_email", "User"),
    Column("group_name", "Group"),
)


def _read_template(path: str | None) -> str:
    """The template text from ``path``, or from stdin when no path is given."""
    if path is not None:
        try:
            with open(path, encoding="utf-8") as f:
                return f.read()
        except OSError as e:
            raise click.BadParameter(f"cannot read {path!r}: {e.strerror}", param_hint="'-f' / '--file'") from None
    if sys.stdin.isatty():
        print_info("Reading the template from stdin (end with Ctrl-D); use -f FILE to read a file.")
    text = sys.stdin.read()
    if not text.strip():
        raise click.UsageError("The template is empty: give -f FILE or pipe the template to stdin.")
    return text


@click.group()
def session_template() -> None:
    """Session template commands: store, read, update and delete your templates."""


@session_template.command()
@click.option(
    "-f",
    "--file",
    "template_path",
    metavar="PATH",
    default=None,
    help="The template file (YAML or JSON); stdin when not given.",
)
@click.option("-d", "--domain", metavar="DOMAIN_NAME", default=None, help="The domain of the template.")
@click.option("-g", "--group", metavar="GROUP_NAME", default=None, help="The project (group) of the template.")
@click.option(
    "-o",
    "--owner",
    "--owner-access-key",
    "owner",
    metavar="ACCESS_KEY",
    default=None,
    help="Create it for this access key's user (admins only).",
)
def create(template_path: str | None, domain: str | None, group: str | None, owner: str | None) -> None:
    """Store a session template; prints its ID."""
    text = _read_template(template_path)
    tpl = run_api(
        lambda api: api.SessionTemplate.create(text, domain_name=domain, group_name=group, owner_access_key=owner)
    )
    if get_cli_context().json_output:
        emit_json({"id": tpl.template_id})
        return
    click.echo(tpl.template_id)
    print_done(f"Session template {tpl.template_id} is created.")


@session_template.command(name="list")
@click.option("-a", "--list-all", is_flag=True, help="List every template in reach (admins only).")
def list_(list_all: bool) -> None:
    """List your session templates."""
    items = run_api(lambda api: api.SessionTemplate.list_templates(list_all))
    print_items(items, COLUMNS, empty="There are no session templates.", what="templates")


@session_template.command()
@click.argument("template_id", metavar="TEMPLATE_ID")
@click.option(
    "-f",
    "--format",
    "fmt",
    type=click.Choice(["yaml", "json"]),
    default="yaml",
    help="Print the template as YAML (default) or JSON.",
)
@click.option(
    "-o",
    "--owner",
    "--owner-access-key",
    "owner",
    metavar="ACCESS_KEY",
    default=None,
    help="The template's owner (admins only).",
)
def get(template_id: str, fmt: str, owner: str | None) -> None:
    """Print the session template TEMPLATE_ID."""
    if get_cli_context().json_output:
        fmt = "json"
    text = run_api(lambda api: api.SessionTemplate(template_id, owner_access_key=owner).get(fmt))
    click.echo(text.rstrip("\n"))


@session_template.command()
@click.argument("template_id", metavar="TEMPLATE_ID")
@click.option(
    "-f",
    "--file",
    "template_path",
    metavar="PATH",
    default=None,
    help="The new template file (YAML or JSON); stdin when not given.",
)
@click.option(
    "-o",
    "--owner",
    "--owner-access-key",
    "owner",
    metavar="ACCESS_KEY",
    default=None,
    help="The template's owner (admins only).",
)
def update(template_id: str, template_path: str | None, owner: str | None) -> None:
    """Replace the session template TEMPLATE_ID."""
    text = _read_template(template_path)
    result = run_api(lambda api: api.SessionTemplate(template_id, owner_access_key=owner).put(text))
    if get_cli_context().json_output:
        emit_json(result)
        return
    print_done(f"Session template {template_id} is updated.")


@session_template.command()
@click.argument("template_id", metavar="TEMPLATE_ID")
@click.option("-f", "--force", is_flag=True, help="Do not ask for confirmation.")
@click.option(
    "-o",
    "--owner",
    "--owner-access-key",
    "owner",
    metavar="ACCESS_KEY",
    default=None,
    help="The template's owner (admins only).",
)
def delete(template_id: str, force: bool, owner: str | None) -> None:
    """Delete the session template TEMPLATE_ID."""
    if not force:
        if not sys.stdin.isatty():
            fail("Not deleted: confirm on a terminal, or give -f/--force.")
        if not click.confirm(f"Delete the session template {template_id}?", err=True):
            fail("Not deleted.")
    result = run_api(lambda api: api.SessionTemplate(template_id, owner_access_key=owner).delete())
    if get_cli_context().json_output:
        emit_json(result)
        return
    print_done(f"Session template {template_id} is deleted.")


# ---- create-from-template ----


def _given(value: Any) -> Any:
    """``undefined`` (keep the template's value) for an option that was not given."""
    return undefined if value is None or value == () else value


def _override(pairs: tuple[Any, ...], clear: bool, convert: Any) -> Any:
    if pairs:
        return convert(pairs)
    return convert(()) if clear else undefined


@click.command()
@click.argument("template_id", metavar="TEMPLATE_ID")
@click.option("-t", "--name", "--client-token", "name", metavar="NAME", type=SessionNameType(), help="Session name.")
@click.option("-o", "--owner", "--owner-access-key", "owner", metavar="ACCESS_KEY", help="Owner (admins only).")
@click.option(
    "--type",
    "type_",
    type=click.Choice(["batch", "interactive"]),
    default=None,
    help="Session type (default: the template's).",
)
@click.option("--starts-at", "--starts_at", "starts_at", metavar="STARTS_AT", help="Start the session at this time.")
@click.option("-i", "--image", metavar="IMAGE", default=None, help="Use this image instead of the template's.")
@click.option("-c", "--startup-command", metavar="COMMAND", help="The command of a batch session.")
@click.option("--enqueue-only", is_flag=True, help="Only enqueue the session; do not wait for it.")
@click.option(
    "--max-wait",
    metavar="SECONDS",
    type=click.IntRange(min=0),
    default=None,
    help="Wait at most this long for the session to start.",
)
@click.option("--no-reuse", is_flag=True, help="Fail instead of reusing a session with the same name.")
@click.option("--depends", metavar="SESSION", multiple=True, help="Sessions that must finish first.")
@click.option("--callback-url", metavar="URL", help="URL called on session lifecycle events.")
@click.option(
    "-e",
    "--env",
    metavar="KEY=VAL",
    type=ENV_TYPE,
    multiple=True,
    help="Environment variable (replaces the template's whole environment).",
)
@click.option("--bootstrap-script", metavar="PATH", type=click.File("r"), help="A script to run on startup.")
@click.option("--tag", type=str, default=None, help="A user-defined tag of the session.")
@click.option(
    "-v",
    "--volume",
    "-m",
    "--mount",
    "mount",
    metavar="NAME[=PATH]",
    type=MountType(),
    multiple=True,
    help="Mount a folder (replaces the template's mounts).",
)
@click.option("--scaling-group", "--sgroup", type=str, default=None)
@click.option(
    "-r",
    "--resources",
    "--resource",
    "resources",
    metavar="KEY=VAL",
    type=RESOURCE_TYPE,
    multiple=True,
    help="Resource slot, e.g. -r cpu=2 -r mem=4g (replaces the template's resources).",
)
@click.option("--cluster-size", metavar="NUMBER", type=click.IntRange(min=1), default=None)
@click.option("--cluster-mode", type=click.Choice(["single-node", "multi-node"]), default=None)
@click.option("--resource-opts", metavar="KEY=VAL", type=RESOURCE_OPT_TYPE, multiple=True)
@click.option("-d", "--domain", metavar="DOMAIN_NAME", default=None)
@click.option("-g", "--group", metavar="GROUP_NAME", default=None)
@click.option("--no-mount", is_flag=True, help="Mount none of the template's folders.")
@click.option("--no-env", is_flag=True, help="Set none of the template's environment variables.")
@click.option("--no-resource", is_flag=True, help="Ignore the template's resources (use the defaults).")
def create_from_template_top(
    template_id: str,
    name: str | None,
    owner: str | None,
    type_: str | None,
    starts_at: str | None,
    image: str | None,
    startup_command: str | None,
    enqueue_only: bool,
    max_wait: int | None,
    no_reuse: bool,
    depends: tuple[str, ...],
    callback_url: str | None,
    env: tuple[tuple[str, str], ...],
    bootstrap_script: IO[str] | None,
    tag: str | None,
    mount: tuple[str, ...],
    scaling_group: str | None,
    resources: tuple[tuple[str, str], ...],
    cluster_size: int | None,
    cluster_mode: str | None,
    resource_opts: tuple[tuple[str, str], ...],
    domain: str | None,
    group: str | None,
    no_mount: bool,
    no_env: bool,
    no_resource: bool,
) -> None:
    """Create a compute session from the session template TEMPLATE_ID.

    Options that are given replace the template's values (-e, -m and -r replace the whole environment,
    mounts and resources); the others keep them.
    """
    mounts, mount_map = prepare_mount_arg(mount)
    script = bootstrap_script.read() if bootstrap_script is not None else None
    cli = get_cli_context()
    label = name or f"from template {template_id}"

    async def _create(api: Any) -> Any:
        async with Spinner(f"Preparing the session {label}...", enabled=not cli.json_output):
            return await api.ComputeSession.create_from_template(
                template_id,
                name=_given(name),
                type_=_given(type_),
                starts_at=starts_at,
                enqueue_only=enqueue_only or undefined,
                max_wait=_given(max_wait),
                dependencies=list(depends) or None,
                callback_url=_given(callback_url),
                no_reuse=no_reuse or undefined,
                image=_given(image),
                mounts=_override(tuple(mounts), no_mount, list),
                mount_map=mount_map if mount_map else ({} if no_mount else undefined),
                envs=_override(env, no_env, pairs_to_dict),
                startup_command=_given(startup_command),
                resources=_override(resources, no_resource, pairs_to_dict),
                resource_opts=_override(resource_opts, False, pairs_to_dict),
                cluster_size=_given(cluster_size),
                cluster_mode=_given(cluster_mode),
                domain_name=_given(domain),
                group_name=_given(group),
                bootstrap_script=_given(script),
                tag=_given(tag),
                scaling_group=_given(scaling_group),
                owner_access_key=_given(owner),
            )

    cs = run_api(_create)
    _report(cs, cli.json_output)


def _report(cs: Any, json_output: bool) -> None:
    """Say how the creation went; exit code 1 when the session failed."""
    failed = cs.status in ("ERROR", "CANCELLED", "TERMINATED")
    if json_output:
        emit_json(
            {
                "name": cs.name,
                "session_id": str(cs.id) if cs.id else None,
                "status": cs.status,
                "created": cs.created,
                "service_ports": cs.service_ports,
            }
        )
        sys.exit(1 if failed else 0)
    if cs.status == "PENDING":
        print_info(f"Session ID {cs.name} is enqueued for scheduling.")
    elif cs.status == "RUNNING":
        print_done(
            f"Session ID {cs.name} is created and ready."
            if cs.created
            else f"Session ID {cs.name} is already running and ready."
        )
        if cs.service_ports:
            apps = ", ".join(str(p.get("name")) for p in cs.service_ports if isinstance(p, Mapping))
            print_info(f"This session provides the following app services: {apps}")
    elif cs.status == "TIMEOUT":
        print_info(f"Session ID {cs.name} is still on the job queue.")
    elif cs.status == "TERMINATED":
        print_warn(f"Session ID {cs.name} is already terminated.")
    elif failed:
        print_fail(
            f"Session ID {cs.name} has an error during scheduling/startup or cancelled."
            + (f" ({cs.status_info})" if cs.status_info else "")
        )
    else:
        print_info(f"Session ID {cs.name} is {cs.status}.")
    sys.exit(1 if failed else 0)
