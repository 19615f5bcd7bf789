"""``backend.ai vfolder ...``: virtual folders, their files, transfers and sharing.

Lists are tables (``--output json``: ``{"count", "total_count", "items"}``), details are
``Heading: value`` lines, status lines (``✔``/``✘``) and transfer progress go to stderr.
Bad arguments exit with 2 before anything is sent; refusals by the server exit with 1.
"""

from __future__ import annotations

import os
import sys
from collections.abc import Sequence
from datetime import UTC, datetime
from typing import Any

import click

from .admin._common import BYTE_SIZE, Column, emit_json, fail, print_item, print_items, run_api
from .core import LazyGroup, get_cli_context
from .pretty import print_done, print_info

__all__ = ("vfolder",)

PERMISSION = click.Choice(["ro", "rw", "wd"])
USAGE_MODE = click.Choice(["general", "data", "model"])

LIST_COLUMNS = (
    Column("name", "Name"),
    Column("id", "ID"),
    Column("host", "Host"),
    Column("usage_mode", "Usage Mode"),
    Column("permission", "Permission"),
    Column("is_owner", "Owner", "bool"),
    Column("ownership_type", "Type"),
    Column("group_name", "Group"),
    Column("cloneable", "Cloneable", "bool"),
)
INFO_COLUMNS = (
    Column("name", "Name"),
    Column("id", "ID"),
    Column("host", "Host"),
    Column("usage_mode", "Usage Mode"),
    Column("ownership_type", "Ownership Type"),
    Column("permission", "Permission"),
    Column("is_owner", "Owner", "bool"),
    Column("user_email", "User"),
    Column("group_name", "Group"),
    Column("num_files", "Number of Files"),
    Column("used_bytes", "Used", "bytes"),
    Column("max_size", "Quota", "bytes"),
    Column("status", "Status"),
    Column("cloneable", "Cloneable", "bool"),
    Column("created_at", "Created At"),
    Column("last_used", "Last Used"),
)
FILE_COLUMNS = (
    Column("filename", "File name"),
    Column("type", "Type"),
    Column("size", "Size"),
    Column("mode", "Mode"),
    Column("mtime", "Modified"),
)
INVITATION_COLUMNS = (
    Column("id", "ID"),
    Column("vfolder_name", "Folder"),
    Column("inviter", "Inviter"),
    Column("invitee", "Invitee"),
    Column("permission", "Permission"),
    Column("state", "State"),
)


def _emails(values: Sequence[str]) -> list[str]:
    out: list[str] = []
    for v in values:
        for e in v.split(","):
            e = e.strip()
            if not e:
                continue
            if "@" not in e or e.startswith("@") or e.endswith("@"):
                raise click.BadParameter(f"{e!r} is not an email address", param_hint="'EMAILS...'")
            if e not in out:
                out.append(e)
    if not out:
        raise click.BadParameter("give at least one email address", param_hint="'EMAILS...'")
    return out


def _address_map(values: Sequence[str]) -> dict[str, str]:
    """``--override-storage-proxy ORIGINAL=REPLACEMENT`` pairs (repeatable, or comma-separated)."""
    out: dict[str, str] = {}
    for value in values:
        for part in value.split(","):
            if not part.strip():
                continue
            k, sep, v = part.partition("=")
            if not sep or not k.strip() or not v.strip():
                raise click.BadParameter(
                    f"{part!r} is not ORIGINAL=REPLACEMENT", param_hint="'--override-storage-proxy'"
                )
            out[k.strip()] = v.strip()
    return out


def _done(message: str, data: Any) -> None:
    if get_cli_context().json_output:
        emit_json(data)
    else:
        print_done(message)


def _transfer_options(f: Any) -> Any:
    f = click.option(
        "--override-storage-proxy",
        "override",
        multiple=True,
        metavar="ORIGINAL=NEW",
        help="Reach a storage proxy at another address than the manager says (repeatable).",
    )(f)
    f = click.option(
        "--chunk-size",
        type=BYTE_SIZE,
        default="16m",
        show_default=True,
        help="The size of one upload request (e.g. 4m).",
    )(f)
    f = click.option(
        "-b",
        "--base-dir",
        "base_dir",
        type=click.Path(file_okay=False),
        default=None,
        help="The local directory the paths are relative to (default: the current directory).",
    )(f)
    return f


@click.group(cls=LazyGroup, aliases={"rm": ["delete-file"], "reject-invitation": ["delete-invitation"]})
def vfolder() -> None:
    """Virtual folder commands: storage that outlives sessions and can be shared.

    All uploads and downloads overwrite existing files, and all file operations are irreversible.
    """


# ---- folders ----


@vfolder.command(name="list")
@click.option("-a", "--list-all", "list_all", is_flag=True, help="List every user's folders (superadmins).")
@click.option("-g", "--group", default=None, help="Only the group folders of this group (ID or name).")
def list_(list_all: bool, group: str | None) -> None:
    """List your folders, those shared with you and your groups' folders."""
    items = run_api(lambda api: api.VFolder.list(list_all=list_all, group=group))
    print_items(items, LIST_COLUMNS, empty="There are no virtual folders.", what="folders")


@vfolder.command(name="list-hosts")
def list_hosts() -> None:
    """List the storage hosts where you may create folders."""
    result = run_api(lambda api: api.VFolder.list_hosts())
    if get_cli_context().json_output:
        emit_json(result)
        return
    click.echo(f"Default vfolder host: {result.get('default') or '-'}")
    click.echo(f"Usable hosts: {', '.join(result.get('allowed') or []) or '-'}")


@vfolder.command(name="list-all-hosts")
def list_all_hosts() -> None:
    """List every storage host (superadmins)."""
    result = run_api(lambda api: api.VFolder.list_all_hosts())
    if get_cli_context().json_output:
        emit_json(result)
        return
    click.echo(f"Default vfolder host: {result.get('default') or '-'}")
    click.echo(f"All hosts: {', '.join(result.get('allowed') or []) or '-'}")


@vfolder.command(name="list-allowed-types")
def list_allowed_types() -> None:
    """List the folder types (user, group) you may create."""
    result = run_api(lambda api: api.VFolder.list_allowed_types())
    if get_cli_context().json_output:
        emit_json(result)
        return
    click.echo(f"Allowed vfolder types: {', '.join(result) or '-'}")


@vfolder.command()
@click.argument("name")
@click.argument("host", required=False)
@click.option("-g", "--group", default=None, help="Make it a group folder of this group (ID or name).")
@click.option(
    "--unmanaged",
    "unmanaged_path",
    default=None,
    metavar="PATH",
    help="Use an existing host path (superadmins; not supported by this server).",
)
@click.option("-m", "--usage-mode", type=USAGE_MODE, default="general", show_default=True)
@click.option(
    "-p",
    "--permission",
    type=PERMISSION,
    default="rw",
    show_default=True,
    help="The permission of those it is shared with (owners always have wd).",
)
@click.option("-q", "--quota", type=BYTE_SIZE, default="0", show_default=True, help="Size limit (0: none).")
@click.option("--cloneable", "--allow-clone", "cloneable", is_flag=True, help="Allow others to clone it.")
def create(
    name: str,
    host: str | None,
    group: str | None,
    unmanaged_path: str | None,
    usage_mode: str,
    permission: str,
    quota: int,
    cloneable: bool,
) -> None:
    """Create the folder NAME on HOST (default: the default host)."""
    if not name.strip():
        raise click.BadParameter("the name is empty", param_hint="'NAME'")
    result = run_api(
        lambda api: api.VFolder.create(
            name,
            host,
            unmanaged_path=unmanaged_path,
            group=group,
            usage_mode=usage_mode,
            permission=permission,
            quota=str(quota),
            cloneable=cloneable,
        )
    )
    _done(f'Virtual folder "{result.get("name", name)}" is created.', result)


@vfolder.command()
@click.argument("name")
def delete(name: str) -> None:
    """Delete the folder NAME and all its files."""
    run_api(lambda api: api.VFolder(name).delete())
    _done(f'Virtual folder "{name}" is deleted.', {"name": name, "deleted": True})


@vfolder.command()
@click.argument("old_name")
@click.argument("new_name")
def rename(old_name: str, new_name: str) -> None:
    """Rename the folder OLD_NAME to NEW_NAME."""
    if not new_name.strip():
        raise click.BadParameter("the new name is empty", param_hint="'NEW_NAME'")
    run_api(lambda api: api.VFolder(old_name).rename(new_name))
    _done(f'Virtual folder "{old_name}" is renamed to "{new_name}".', {"name": new_name, "old_name": old_name})


@vfolder.command()
@click.argument("name")
def info(name: str) -> None:
    """Show the details of the folder NAME."""
    item = run_api(lambda api: api.VFolder(name).info())
    print_item(item, INFO_COLUMNS, not_found=f"No such virtual folder: {name}")


@vfolder.command(name="update-options")
@click.argument("name")
@click.option("-p", "--permission", type=PERMISSION, default=None, help="The default share permission.")
@click.option(
    "--set-cloneable",
    "cloneable",
    type=bool,
    default=None,
    metavar="BOOLEAN",
    help="Whether others may clone it (true/false).",
)
def update_options(name: str, permission: str | None, cloneable: bool | None) -> None:
    """Change the options of the folder NAME."""
    if permission is None and cloneable is None:
        raise click.UsageError("Nothing to update: give -p/--permission and/or --set-cloneable.")
    run_api(lambda api: api.VFolder(name).update_options(permission=permission, cloneable=cloneable))
    _done(f'Options of "{name}" are updated.', {"name": name, "permission": permission, "cloneable": cloneable})


@vfolder.command()
@click.argument("name")
@click.argument("target_name")
@click.argument("target_host", required=False)
@click.option("-m", "--usage-mode", type=USAGE_MODE, default="general", show_default=True)
@click.option("-p", "--permission", type=PERMISSION, default="rw", show_default=True)
@click.option("--cloneable", "--allow-clone", "cloneable", is_flag=True, help="Allow cloning the clone.")
@click.option("--no-wait", is_flag=True, help="Return once the copy has started.")
def clone(
    name: str,
    target_name: str,
    target_host: str | None,
    usage_mode: str,
    permission: str,
    cloneable: bool,
    no_wait: bool,
) -> None:
    """Copy the cloneable folder NAME into a new folder TARGET_NAME (on TARGET_HOST).

    The copy runs on the server; this waits for it to finish unless --no-wait is given.
    """

    async def _clone(api: Any) -> tuple[dict[str, Any], str, str]:
        result = await api.VFolder(name).clone(
            target_name, target_host, usage_mode=usage_mode, permission=permission, cloneable=cloneable
        )
        task_id = result.get("bgtask_id")
        if no_wait or not task_id:
            return result, "started" if task_id else "done", ""
        outcome, message = await _wait_task(api, str(task_id))
        return result, outcome, message

    result, outcome, message = run_api(_clone)
    new_name = result.get("name", target_name)
    if outcome not in ("done", "started"):
        fail(f'Cloning "{name}" into "{new_name}" {outcome}: {message or "the server gave no reason"}')
    if outcome == "started":
        _done(f'Cloning "{name}" into "{new_name}" (background task {result.get("bgtask_id")}).', result)
    else:
        _done(f'Virtual folder "{name}" is cloned to "{new_name}".', result)


async def _wait_task(api: Any, task_id: str) -> tuple[str, str]:
    """Wait for a background task to end; returns (``done``/``failed``/``was cancelled``, last message)."""
    outcome, message = "ended without a result", ""
    async with api.BackgroundTask(task_id).listen_events() as stream:
        async for msg in stream:
            data = msg.json() if msg.data else {}
            if isinstance(data, dict) and data.get("message"):
                message = str(data["message"])
            if msg.event in ("bgtask_done", "bgtask_failed", "bgtask_cancelled"):
                outcome = {"bgtask_done": "done", "bgtask_failed": "failed"}.get(msg.event, "was cancelled")
    return outcome, message


# ---- files ----


def _progress_enabled() -> bool:
    return not get_cli_context().json_output or sys.stderr.isatty()


@vfolder.command()
@click.argument("name")
@click.argument("files", nargs=-1, required=True, type=click.Path())
@_transfer_options
def upload(name: str, files: tuple[str, ...], base_dir: str | None, chunk_size: int, override: tuple[str, ...]) -> None:
    """Upload FILES (directories: all files below them) into the folder NAME.

    Paths inside the folder are those relative to the base directory; existing files are overwritten.
    An upload that broke resumes where it stopped when the same file is uploaded again.
    """
    if chunk_size <= 0:
        raise click.BadParameter("must be positive", param_hint="'--chunk-size'")
    amap = _address_map(override)
    results = run_api(
        lambda api: api.VFolder(name).upload(
            list(files), basedir=base_dir, chunk_size=chunk_size, address_map=amap, show_progress=_progress_enabled()
        )
    )
    total = sum(int(r["size"]) for r in results)
    from ..transfer import human_bytes

    _done(f"Uploaded {len(results)} file(s) ({human_bytes(total)}) to {name}.", results)


@vfolder.command()
@click.argument("name")
@click.argument("paths", nargs=-1, required=True)
@_transfer_options
@click.option("--no-resume", is_flag=True, help="Start over instead of resuming a partial download.")
def download(
    name: str, paths: tuple[str, ...], base_dir: str | None, chunk_size: int, override: tuple[str, ...], no_resume: bool
) -> None:
    """Download PATHS of the folder NAME (directories as a whole) into the current or base directory.

    Each path keeps its place relative to the folder root; existing local files are overwritten.
    """
    amap = _address_map(override)
    results = run_api(
        lambda api: api.VFolder(name).download(
            list(paths),
            basedir=base_dir,
            chunk_size=chunk_size,
            address_map=amap,
            show_progress=_progress_enabled(),
            resume=not no_resume,
        )
    )
    count = sum(len(r["files"]) for r in results)
    _done(f"Downloaded {count} file(s) from {name}.", results)


@vfolder.command(name="request-download")
@click.argument("name")
@click.argument("path")
@click.option("--archive", is_flag=True, help="A directory as a zip archive.")
def request_download(name: str, path: str, archive: bool) -> None:
    """Print a download link of PATH in the folder NAME (valid for a limited time)."""
    from ..transfer import apply_address_map, with_token

    result = run_api(lambda api: api.VFolder(name).request_download(path, archive=archive))
    amap = get_cli_context().get_config().storage_proxy_address_map
    url = with_token(apply_address_map(str(result["url"]), amap), str(result["token"]))
    if get_cli_context().json_output:
        emit_json({**result, "link": url})
        return
    click.echo(url)


@vfolder.command()
@click.argument("paths", nargs=-1, required=True)
def cp(paths: tuple[str, ...]) -> None:
    """Copy files between this machine and a folder, scp-style (FOLDER:PATH names a folder's side).

    \b
    backend.ai vfolder cp a.csv b.csv data:          upload into the root of folder "data"
    backend.ai vfolder cp data:a.csv data:dir ./out  download into ./out (paths kept)
    """
    if len(paths) < 2:
        raise click.UsageError("Give at least one source and a destination.")
    *sources, dest = paths

    def remote(p: str) -> tuple[str, str] | None:
        folder, sep, rel = p.partition(":")
        return (folder, rel) if sep and folder and "/" not in folder else None

    rdest = remote(dest)
    rsources = [remote(p) for p in sources]
    if rdest is not None and not any(rsources):
        if rdest[1].strip("/"):
            raise click.UsageError("Uploads go to the folder's root: write the destination as FOLDER: .")
        by_parent: dict[str, list[str]] = {}
        for src in sources:
            by_parent.setdefault(os.path.dirname(os.path.abspath(src)), []).append(src)
        target = rdest[0]

        async def _upload_all(api: Any) -> list[Any]:
            out: list[Any] = []
            for base, files in by_parent.items():
                out += await api.VFolder(target).upload(files, basedir=base, show_progress=_progress_enabled())
            return out

        results = run_api(_upload_all)
        _done(f"Uploaded {len(results)} file(s) to {target}.", results)
        return
    if rdest is None and all(rsources):
        folders = {r[0] for r in rsources if r is not None}
        if len(folders) != 1:
            raise click.UsageError("Download from one folder at a time.")
        folder = folders.pop()
        rels = [r[1] for r in rsources if r is not None]
        results = run_api(
            lambda api: api.VFolder(folder).download(rels, basedir=dest, show_progress=_progress_enabled())
        )
        _done(f"Downloaded {sum(len(r['files']) for r in results)} file(s) from {folder}.", results)
        return
    raise click.UsageError(
        "Either every source is a FOLDER:PATH and the destination a local directory, "
        "or every source is local and the destination is FOLDER: ."
    )


@vfolder.command()
@click.argument("name")
@click.argument("path")
@click.option("-p", "--parents", is_flag=True, help="Create missing parent directories too.")
@click.option("--exist-ok", is_flag=True, help="Do not fail if the directory exists.")
def mkdir(name: str, path: str, parents: bool, exist_ok: bool) -> None:
    """Create the directory PATH in the folder NAME."""
    run_api(lambda api: api.VFolder(name).mkdir(path, parents=parents, exist_ok=exist_ok))
    _done(f"Directory {path} is created in {name}.", {"name": name, "path": path})


@vfolder.command(name="rename-file")
@click.argument("name")
@click.argument("target_path")
@click.argument("new_name")
def rename_file(name: str, target_path: str, new_name: str) -> None:
    """Rename the file or directory TARGET_PATH of the folder NAME to NEW_NAME (in place)."""
    if not new_name.strip() or "/" in new_name:
        raise click.BadParameter("must be a name, not a path", param_hint="'NEW_NAME'")
    run_api(lambda api: api.VFolder(name).rename_file(target_path, new_name))
    _done(f"{target_path} is renamed to {new_name}.", {"name": name, "path": target_path, "new_name": new_name})


@vfolder.command()
@click.argument("name")
@click.argument("src")
@click.argument("dst")
def mv(name: str, src: str, dst: str) -> None:
    """Move (or rename) SRC to DST inside the folder NAME."""
    run_api(lambda api: api.VFolder(name).move_file(src, dst))
    _done(f"{src} is moved to {dst}.", {"name": name, "src": src, "dst": dst})


@vfolder.command()
@click.argument("name")
@click.argument("files", nargs=-1, required=True)
@click.option("-r", "--recursive", is_flag=True, help="Delete directories with their contents.")
def rm(name: str, files: tuple[str, ...], recursive: bool) -> None:
    """Delete FILES of the folder NAME (irreversible)."""
    run_api(lambda api: api.VFolder(name).delete_files(list(files), recursive=recursive))
    _done(f"Deleted {len(files)} path(s) from {name}.", {"name": name, "files": list(files)})


def _file_row(entry: dict[str, Any]) -> dict[str, Any]:
    """A listing entry in the shape of the table, whatever the server's spelling."""
    row = dict(entry)
    raw_stat = entry.get("stat")
    st: dict[str, Any] = raw_stat if isinstance(raw_stat, dict) else {}
    row.setdefault("filename", entry.get("name"))
    for key, alt in (("size", "size"), ("mode", "mode"), ("mtime", "modified")):
        if row.get(key) is None:
            row[key] = st.get(key) if st.get(key) is not None else st.get(alt)
    kind = str(row.get("type") or "").upper()
    mode = row.get("mode")
    if not kind:
        if isinstance(mode, str) and mode[:1] in ("d", "l", "-"):
            kind = {"d": "DIRECTORY", "l": "SYMLINK", "-": "FILE"}[mode[0]]
        elif isinstance(mode, int):
            import stat as stat_mod

            kind = "DIRECTORY" if stat_mod.S_ISDIR(mode) else ("SYMLINK" if stat_mod.S_ISLNK(mode) else "FILE")
    row["type"] = kind.lower() or "-"
    if isinstance(mode, int):
        import stat as stat_mod

        row["mode"] = stat_mod.filemode(mode)
    mtime = row.get("mtime")
    if isinstance(mtime, (int, float)) and not isinstance(mtime, bool):
        row["mtime"] = datetime.fromtimestamp(mtime, UTC).strftime("%Y-%m-%d %H:%M:%S")
    return row


@vfolder.command()
@click.argument("name")
@click.argument("path", default=".")
def ls(name: str, path: str) -> None:
    """List the files in PATH of the folder NAME."""
    result = run_api(lambda api: api.VFolder(name).list_files(path))
    files = [f for f in (result.get("files") or []) if isinstance(f, dict)]
    if get_cli_context().json_output:
        print_items(files, FILE_COLUMNS)
        return
    print_items([_file_row(f) for f in files], FILE_COLUMNS, empty=f"There are no files in {path}.", what="files")


# ---- sharing ----


@vfolder.command()
@click.argument("name")
@click.argument("emails", nargs=-1, required=True)
@click.option("-p", "--perm", "--permission", "perm", type=PERMISSION, default="rw", show_default=True)
def invite(name: str, emails: tuple[str, ...], perm: str) -> None:
    """Invite users (EMAILS) to the folder NAME."""
    addrs = _emails(emails)
    result = run_api(lambda api: api.VFolder(name).invite(perm, addrs))
    invited = result.get("invited_ids") or []
    if get_cli_context().json_output:
        emit_json(result)
        return
    if invited:
        print_done(f"Invited {', '.join(map(str, invited))} to {name} ({perm}).")
    else:
        print_info("Nobody new was invited (they were invited already).")


def _decide(inv_id: str, accept: bool) -> None:
    if accept:
        run_api(lambda api: api.VFolder.accept_invitation(inv_id))
        _done(f"Invitation {inv_id} is accepted.", {"id": inv_id, "accepted": True})
    else:
        run_api(lambda api: api.VFolder.delete_invitation(inv_id))
        _done(f"Invitation {inv_id} is rejected.", {"id": inv_id, "rejected": True})


def _interactive(items: list[dict[str, Any]]) -> None:
    """Ask which invitation to accept or reject (on a terminal only)."""
    for idx, inv in enumerate(items, 1):
        click.echo(f"[{idx}] {inv.get('vfolder_name')} from {inv.get('inviter')} ({inv.get('permission')})")
    choice = click.prompt("Invitation number (Enter to quit)", default="", show_default=False, err=True)
    if not str(choice).strip():
        return
    try:
        inv = items[int(choice) - 1]
        if int(choice) < 1:
            raise IndexError
    except (ValueError, IndexError):
        fail(f"There is no invitation number {choice}.")
    action = click.prompt("Accept or reject? (a/r)", type=click.Choice(["a", "r"]), err=True)
    _decide(str(inv["id"]), action == "a")


@vfolder.command()
@click.option("--accept", "accept_id", metavar="ID", default=None, help="Accept this invitation.")
@click.option("--reject", "reject_id", metavar="ID", default=None, help="Reject this invitation.")
@click.option("--sent", is_flag=True, help="List the invitations you sent instead.")
@click.option(
    "-i/-n", "--interactive/--no-interactive", default=None, help="Ask what to do with them (default: on a terminal)."
)
def invitations(accept_id: str | None, reject_id: str | None, sent: bool, interactive: bool | None) -> None:
    """List your pending invitations; accept or reject one (--accept/--reject ID, or interactively)."""
    if accept_id and reject_id:
        raise click.UsageError("Give only one of --accept and --reject.")
    if accept_id or reject_id:
        _decide(str(accept_id or reject_id), bool(accept_id))
        return
    items = run_api(lambda api: api.VFolder.sent_invitations() if sent else api.VFolder.invitations())
    ctx = get_cli_context()
    tty = sys.stdin.isatty() and sys.stdout.isatty()
    if items and not sent and not ctx.json_output and (interactive or (interactive is None and tty)):
        _interactive(items)
        return
    print_items(items, INVITATION_COLUMNS, empty="There are no pending invitations.", what="invitations")


@vfolder.command(name="accept-invitation")
@click.argument("inv_id")
def accept_invitation(inv_id: str) -> None:
    """Accept the invitation INV_ID."""
    _decide(inv_id, True)


@vfolder.command(name="reject-invitation")
@click.argument("inv_id")
def reject_invitation(inv_id: str) -> None:
    """Reject the invitation INV_ID."""
    _decide(inv_id, False)


@vfolder.command()
@click.argument("name")
@click.argument("emails", nargs=-1, required=True)
@click.option("-p", "--permission", "--perm", "perm", type=PERMISSION, default="rw", show_default=True)
def share(name: str, emails: tuple[str, ...], perm: str) -> None:
    """Share the group folder NAME with users (EMAILS) directly, with their own permission."""
    addrs = _emails(emails)
    result = run_api(lambda api: api.VFolder(name).share(perm, addrs))
    shared = result.get("shared_emails") or addrs
    _done(f"Shared {name} with {', '.join(map(str, shared))} ({perm}).", result)


@vfolder.command()
@click.argument("name")
@click.argument("emails", nargs=-1, required=True)
def unshare(name: str, emails: tuple[str, ...]) -> None:
    """Take back the direct share of the group folder NAME from users (EMAILS)."""
    addrs = _emails(emails)
    result = run_api(lambda api: api.VFolder(name).unshare(addrs))
    unshared = result.get("unshared_emails") or addrs
    _done(f"Unshared {name} from {', '.join(map(str, unshared))}.", result)


@vfolder.command()
@click.argument("name")
def leave(name: str) -> None:
    """Stop using the folder NAME that was shared with you."""
    run_api(lambda api: api.VFolder(name).leave())
    _done(f"You left {name}.", {"name": name, "left": True})
