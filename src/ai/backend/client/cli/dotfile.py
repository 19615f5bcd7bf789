"""``backend.ai dotfile create|list|get|update|delete``: files placed in ``/home/work`` of your new sessions."""

from __future__ import annotations

import sys

import click

from .admin._common import Column, emit_json, fail, print_item, print_items, run_api
from .core import get_cli_context
from .pretty import print_done, print_info

__all__ = ("dotfile",)

COLUMNS = (
    Column("path", "Path"),
    Column("permission", "Permission"),
    Column("data", "Data"),
)
_PREVIEW = 60


def _content(data: str | None, path: str | None) -> str:
    """The dotfile content from --data, from a file, or from stdin."""
    if data is not None and path is not None:
        raise click.UsageError("Give only one of --data and -f/--file.")
    if data is not None:
        return data
    if path is not None:
        try:
            with open(path, encoding="utf-8") as f:
                return f.read()
        except (OSError, UnicodeDecodeError) as e:
            raise click.BadParameter(f"cannot read {path!r}: {e}", param_hint="'-f' / '--file'") from None
    if sys.stdin.isatty():
        print_info("Reading the content from stdin (end with Ctrl-D); use --data or -f FILE instead.")
    return sys.stdin.read()


def _permission(value: str) -> str:
    if not (len(value) in (3, 4) and all(c in "01234567" for c in value)):
        raise click.BadParameter(f"{value!r} is not an octal mode such as 644 or 755", param_hint="'-m' / '--perm'")
    return value[-3:]


def _options(f: click.decorators.FC) -> click.decorators.FC:
    f = click.option(
        "-o",
        "--owner",
        "--owner-access-key",
        "owner",
        metavar="ACCESS_KEY",
        default=None,
        help="Act for this access key's user (admins only).",
    )(f)
    f = click.option(
        "-m",
        "--perm",
        "--permission",
        "permission",
        metavar="MODE",
        default="755",
        show_default=True,
        help="The file mode (octal).",
    )(f)
    f = click.option("-f", "--file", "file_path", metavar="FILE", default=None, help="Read the content from FILE.")(f)
    f = click.option("--data", metavar="TEXT", default=None, help="The content.")(f)
    return f


@click.group()
def dotfile() -> None:
    """Dotfile commands: files written into /home/work of each new session, with their mode."""


@dotfile.command()
@click.argument("path")
@_options
def create(path: str, data: str | None, file_path: str | None, permission: str, owner: str | None) -> None:
    """Add the dotfile PATH (relative to /home/work)."""
    content = _content(data, file_path)
    perm = _permission(permission)
    run_api(lambda api: api.Dotfile.create(content, path, perm, owner_access_key=owner))
    if get_cli_context().json_output:
        emit_json({"path": path, "permission": perm})
        return
    print_done(f"Dotfile {path} is created.")


@dotfile.command(name="list")
@click.option(
    "-o",
    "--owner",
    "--owner-access-key",
    "owner",
    metavar="ACCESS_KEY",
    default=None,
    help="List this access key's user's dotfiles (admins only).",
)
def list_(owner: str | None) -> None:
    """List your dotfiles."""
    items = run_api(lambda api: api.Dotfile.list_dotfiles(owner_access_key=owner))
    if not get_cli_context().json_output:
        for item in items:
            text = str(item.get("data", ""))
            item["data"] = (
                text if len(text) <= _PREVIEW and "\n" not in text else (text.replace("\n", "⏎")[:_PREVIEW] + "…")
            )
    print_items(items, COLUMNS, empty="There are no dotfiles.", what="dotfiles")


@dotfile.command()
@click.argument("path")
@click.option(
    "-o",
    "--owner",
    "--owner-access-key",
    "owner",
    metavar="ACCESS_KEY",
    default=None,
    help="The dotfile's owner (admins only).",
)
def get(path: str, owner: str | None) -> None:
    """Show the dotfile PATH."""
    item = run_api(lambda api: api.Dotfile(path, owner_access_key=owner).get())
    item.pop("perm", None)
    print_item(item, COLUMNS, not_found=f"No such dotfile: {path}")


@dotfile.command()
@click.argument("path")
@_options
def update(path: str, data: str | None, file_path: str | None, permission: str, owner: str | None) -> None:
    """Replace the content and mode of the dotfile PATH."""
    content = _content(data, file_path)
    perm = _permission(permission)
    run_api(lambda api: api.Dotfile(path, owner_access_key=owner).update(content, perm))
    if get_cli_context().json_output:
        emit_json({"path": path, "permission": perm})
        return
    print_done(f"Dotfile {path} is updated.")


@dotfile.command()
@click.argument("path")
@click.option("-f", "--force", is_flag=True, help="Do not ask for confirmation.")
@click.option(
    "-o",
    "--owner",
    "--owner-access-key",
    "owner",
    metavar="ACCESS_KEY",
    default=None,
    help="The dotfile's owner (admins only).",
)
def delete(path: str, force: bool, owner: str | None) -> None:
    """Remove the dotfile PATH."""
    if not force:
        if not sys.stdin.isatty():
            fail("Not deleted: confirm on a terminal, or give -f/--force.")
        if not click.confirm(f"Delete the dotfile {path}?", err=True):
            fail("Not deleted.")
    run_api(lambda api: api.Dotfile(path, owner_access_key=owner).delete())
    if get_cli_context().json_output:
        emit_json({"path": path, "deleted": True})
        return
    print_done(f"Dotfile {path} is deleted.")
