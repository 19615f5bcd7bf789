"""Console pages: virtual folders, their files, sharing and invitations (ADR 0013, area "Folders").

Routes (all as the logged-in user; the manager decides who may do what, and its refusals are shown):

* ``GET /folders``: the user's folders with their sizes, the create form and the invitations to the user.
* ``POST /folders``: create a folder. ``POST /folders/{name}/delete`` and ``/leave``.
* ``POST /folders/invitations/{id}/accept`` and ``/reject``.
* ``GET /folders/{name}?path=``: the file browser (an htmx/``HX-Request`` GET answers only the listing, which
  ``folders.js`` fetches after uploads). ``{name}`` may also be the folder's id (for duplicate names).
* ``POST /folders/{name}/mkdir``, ``/rename-file``, ``/delete-files``; ``GET /folders/{name}/download?path=``
  (a redirect to the storage proxy's download URL with a fresh token).
* ``POST /folders/{name}/invite``, ``/shares`` (change or remove a user's permission),
  ``/invitations/{id}/cancel``.

Uploads do not pass through the webserver: ``folders.js`` asks the manager for a token (``request-upload``
through ``/func``) and sends the bytes to the storage proxy with tus-js-client.

Actions are plain POST forms answered with a redirect back (``?done=`` picks a fixed success message, so a
link cannot make the page say anything else); a refused action re-renders the same page with the reason
and a 4xx status, nothing changed.
"""

from __future__ import annotations

import asyncio
import json
import logging
from collections.abc import Awaitable, Callable, Mapping
from typing import Any
from urllib.parse import quote, urlencode

from aiohttp import web
from multidict import MultiDictProxy

from ..base import ConsoleError, Login, ManagerAPI, ManagerError, api, form_str, page, read_form, render

__all__ = ["clean_path", "register"]

log = logging.getLogger("ai.backend.web.console.folders")

PERMISSIONS = {"ro": "Read only", "rw": "Read & write", "wd": "Read, write & delete"}
USAGE_MODES = ("general", "model", "data")
#: Folder sizes are one storage-proxy call each; past this many folders the list shows none.
SIZE_LOOKUPS_MAX = 50
#: Upload chunk size for tus (bytes): each PATCH carries at most this much, so progress and resumption
#: points come at least this often. The storage proxy keeps partial bodies too, so this is not a limit.
UPLOAD_CHUNK = 16 * 1024 * 1024

#: Fixed success messages for ``?done=`` after a redirect.
DONE = {
    "created": "The folder was created.",
    "deleted": "The folder was deleted.",
    "left": "You left the folder.",
    "accepted": "Invitation accepted: the folder is now in your list.",
    "rejected": "Invitation rejected.",
    "mkdir": "The directory was created.",
    "renamed": "Renamed.",
    "removed": "Deleted.",
    "invited": "Invitation sent.",
    "already": "Nobody new was invited: they already share the folder or have a pending invitation.",
    "shared": "Sharing updated.",
    "canceled": "Invitation canceled.",
}


# ------------------------------------------------------------------------------------------- helpers


def clean_path(raw: str | None, what: str = "path") -> str:
    """A path inside a folder as ``a/b`` (``""``: the root); ``..`` is refused (400), whatever the manager says.

    Leading and repeated slashes and ``.`` are dropped, so ``/a//./b`` is ``a/b``.
    """
    if not raw:
        return ""
    if "\x00" in raw:
        raise ConsoleError(400, "Invalid path", f"The {what} contains a NUL character.")
    parts = [p for p in raw.split("/") if p not in ("", ".")]
    if ".." in parts:
        raise ConsoleError(
            400, "Invalid path", f"The {what} {raw!r} leaves the folder: '..' is not allowed in folder paths."
        )
    return "/".join(parts)


def _join(base: str, name: str) -> str:
    return f"{base}/{name}" if base else name


def _entry_name(raw: str, what: str) -> str:
    """One name inside a directory (no ``/``, not ``.``/``..``): a 400 otherwise."""
    if not raw:
        raise ConsoleError(400, "Invalid name", f"The {what} is required.")
    if "/" in raw or raw in (".", "..") or "\x00" in raw:
        raise ConsoleError(400, "Invalid name", f"The {what} {raw!r} must be a single name: no '/', not '.' or '..'.")
    return raw


def _ref(name: str) -> str:
    """A folder reference in a manager path."""
    return quote(name, safe="")


def _url(name: str, subpath: str = "", **query: str) -> str:
    """The console URL of folder ``name`` at ``subpath``."""
    params = {"path": subpath} if subpath else {}
    params.update({k: v for k, v in query.items() if v})
    return f"/folders/{_ref(name)}" + (f"?{urlencode(params)}" if params else "")


def _decode_files(raw: Any) -> list[dict[str, Any]]:
    if isinstance(raw, str):
        try:
            raw = json.loads(raw)
        except ValueError:
            raise ManagerError(502, "Unexpected file list", "The manager's file list is not JSON.") from None
    return [f for f in raw if isinstance(f, dict)] if isinstance(raw, list) else []


def _done(request: web.Request) -> str:
    return DONE.get(request.query.get("done", ""), "")


def _folder_name(request: web.Request) -> str:
    name = request.match_info["name"]
    if not name or "/" in name:
        raise ConsoleError(404, "No such folder", f"There is no folder {name!r}.")
    return name


def _status_of(e: ManagerError | ConsoleError) -> int:
    return e.status if 400 <= e.status < 500 else 502


# --------------------------------------------------------------------------------------- folder list


async def _usage(m: ManagerAPI, folder_id: str) -> int | None:
    try:
        info = await m.get(f"/folders/{_ref(folder_id)}")
    except ManagerError:
        return None  # a proxy that is down: the list still shows, without this size
    used = info.get("used_bytes") if isinstance(info, dict) else None
    return int(used) if isinstance(used, int | float) else None


async def _list_context(request: web.Request, login: Login) -> dict[str, Any]:
    """What the folder list page shows."""
    m = api(request, login)
    folders, hosts, invitations = await asyncio.gather(
        m.get("/folders"), m.get("/folders/_/hosts"), m.get("/folders/invitations/list")
    )
    folders = [f for f in folders if isinstance(f, dict)] if isinstance(folders, list) else []
    ready = [f for f in folders if f.get("status") == "ready"]
    if len(ready) <= SIZE_LOOKUPS_MAX:
        sizes = await asyncio.gather(*(_usage(m, str(f["id"])) for f in ready))
        for f, size in zip(ready, sizes, strict=True):
            f["used_bytes"] = size
    # Names are unique per owner only (a group folder may share a name with one's own): link such folders by id.
    counts: dict[str, int] = {}
    for f in folders:
        counts[f["name"]] = counts.get(f["name"], 0) + 1
    for f in folders:
        f["ref"] = f["name"] if counts[f["name"]] == 1 else f["id"]
    groups: list[dict[str, Any]] = []
    if login.is_admin:
        data = await m.graphql("query { groups(is_active: true) { id name domain_name } }")
        groups = [g for g in data.get("groups") or [] if isinstance(g, dict)]
    return {
        "folders": folders,
        "hosts": hosts.get("allowed", []) if isinstance(hosts, dict) else [],
        "default_host": hosts.get("default") if isinstance(hosts, dict) else None,
        "invitations": (invitations or {}).get("invitations", []) if isinstance(invitations, dict) else [],
        "groups": groups,
        "permissions": PERMISSIONS,
        "usage_modes": USAGE_MODES,
    }


@page()
async def folders_page(request: web.Request, login: Login) -> web.StreamResponse:
    """``GET /folders``."""
    return await _render_list(request, login)


async def _render_list(
    request: web.Request,
    login: Login,
    *,
    status: int = 200,
    error: str | None = None,
    action_error: str | None = None,
    form: dict[str, str] | None = None,
) -> web.Response:
    """The list page; ``error`` belongs to the create form, ``action_error`` to an action on a listed folder."""
    ctx = await _list_context(request, login)
    return render(
        request,
        login,
        "folders/list.html",
        status=status,
        done="" if status != 200 else _done(request),
        error=error,
        action_error=action_error,
        form=form or {},
        **ctx,
    )


async def _list_act(
    request: web.Request, login: Login, done: str, action: Callable[[ManagerAPI], Awaitable[Any]]
) -> web.StreamResponse:
    """Run ``action(api)`` for a form of the list page; then the list with ``done``, or the list again with the
    refusal and its 4xx status (a folder still mounted by a session, an invitation already answered...)."""
    await read_form(request, login)
    try:
        await action(api(request, login))
    except (ConsoleError, ManagerError) as e:
        if e.status >= 500:
            raise
        return await _render_list(request, login, status=e.status, action_error=_message(e))
    raise web.HTTPSeeOther(f"/folders?done={done}")


def _message(e: ConsoleError | ManagerError) -> str:
    return f"{e.title}: {e.detail}" if e.detail else e.title


def _create_body(form: MultiDictProxy[Any], login: Login) -> dict[str, Any]:
    name = form_str(form, "name", max_len=256)
    if not name:
        raise ConsoleError(400, "Invalid folder name", "Enter a name for the folder.")
    body: dict[str, Any] = {
        "name": name,
        "usage_mode": form_str(form, "usage_mode") or "general",
        "permission": form_str(form, "permission") or "rw",
        "cloneable": form.get("cloneable") == "on",
    }
    if host := form_str(form, "host"):
        body["host"] = host
    if quota := form_str(form, "quota", max_len=32):
        body["quota"] = quota
    if form_str(form, "type") == "project":
        if not login.is_admin:
            raise ConsoleError(403, "Not allowed", "Only administrators create project folders.")
        group = form_str(form, "group")
        if not group:
            raise ConsoleError(400, "Project required", "Choose the project that owns the folder.")
        body["group_id"] = group
    return body


@page()
async def create_folder(request: web.Request, login: Login) -> web.StreamResponse:
    """``POST /folders``: create a folder; a refusal re-renders the list with the reason (4xx)."""
    form = await read_form(request, login)
    try:
        body = _create_body(form, login)
        await api(request, login).post("/folders", body)
    except (ConsoleError, ManagerError) as e:
        # The form comes back as it was typed (cut short: it is only shown again).
        keys = ("name", "host", "usage_mode", "permission", "quota", "type", "group", "cloneable")
        fields = {k: v[:256] for k in keys if isinstance(v := form.get(k, ""), str)}
        return await _render_list(request, login, status=_status_of(e), error=_message(e), form=fields)
    raise web.HTTPSeeOther("/folders?done=created")


@page()
async def delete_folder(request: web.Request, login: Login) -> web.StreamResponse:
    """``POST /folders/{name}/delete``."""
    name = _folder_name(request)
    return await _list_act(request, login, "deleted", lambda m: m.delete(f"/folders/{_ref(name)}"))


@page()
async def leave_folder(request: web.Request, login: Login) -> web.StreamResponse:
    """``POST /folders/{name}/leave``: stop sharing a folder someone shared with this user."""
    name = _folder_name(request)
    return await _list_act(request, login, "left", lambda m: m.post(f"/folders/{_ref(name)}/leave"))


@page()
async def answer_invitation(request: web.Request, login: Login) -> web.StreamResponse:
    """``POST /folders/invitations/{id}/accept`` or ``/reject``."""
    inv_id, accept = request.match_info["inv_id"], request.match_info["action"] == "accept"
    path = "/folders/invitations/accept" if accept else "/folders/invitations/delete"
    return await _list_act(
        request, login, "accepted" if accept else "rejected", lambda m: m.post(path, {"inv_id": inv_id})
    )


# --------------------------------------------------------------------------------------- file browser


async def _browse_context(request: web.Request, login: Login, name: str, subpath: str) -> dict[str, Any]:
    """The folder ``name`` (its info answer: a 404 for another user's folder) and its entries at ``subpath``."""
    m = api(request, login)
    info = await m.get(f"/folders/{_ref(name)}")
    if not isinstance(info, dict):
        raise ManagerError(502, "Unexpected answer", "The manager's folder information is not an object.")
    fid = str(info["id"])
    listing = await m.call("GET", f"/folders/{_ref(fid)}/files", params={"path": subpath} if subpath else None)
    entries = _decode_files(listing.get("files") if isinstance(listing, dict) else None)
    entries.sort(key=lambda e: (e.get("type") != "DIRECTORY", str(e.get("filename", "")).lower()))
    for e in entries:
        e["relpath"] = _join(subpath, str(e.get("filename", "")))
    crumbs = []
    parts = subpath.split("/") if subpath else []
    for i, part in enumerate(parts):
        crumbs.append({"name": part, "url": _url(name, "/".join(parts[: i + 1]))})
    shares: list[dict[str, Any]] = []
    sent: list[dict[str, Any]] = []
    manages = bool(info.get("is_owner")) or (info.get("type") == "group" and login.is_admin)
    if manages:
        try:
            found, out = await asyncio.gather(
                m.get("/folders/_/shared", vfolder_id=fid), m.get("/folders/invitations/list-sent")
            )
        except ManagerError as e:
            log.info("folder %s: sharing details unavailable: %s", fid, e)
            found, out = [], {}
        shares = [s for s in found if isinstance(s, dict)] if isinstance(found, list) else []
        invs = out.get("invitations", []) if isinstance(out, dict) else []
        sent = [i for i in invs if isinstance(i, dict) and i.get("vfolder_id") == fid]
    return {
        "folder": info,
        "name": name,
        "folder_url": _url(name),
        "action_base": f"/folders/{_ref(name)}",
        "cwd": subpath,
        "parent_url": _url(name, "/".join(parts[:-1])) if parts else None,
        "crumbs": crumbs,
        "entries": entries,
        "truncated": bool(listing.get("truncated")) if isinstance(listing, dict) else False,
        "manages": manages,
        "writable": info.get("permission") in ("rw", "wd"),
        "shares": shares,
        "sent": sent,
        "permissions": PERMISSIONS,
        "chunk_size": UPLOAD_CHUNK,
        "listing_url": _url(name, subpath),
    }


def _download_url(name: str, relpath: str, archive: bool = False) -> str:
    q = {"path": relpath} | ({"archive": "1"} if archive else {})
    return f"/folders/{_ref(name)}/download?{urlencode(q)}"


async def _render_browser(
    request: web.Request, login: Login, name: str, subpath: str, *, status: int = 200, error: str | None = None
) -> web.Response:
    ctx = await _browse_context(request, login, name, subpath)
    if request.headers.get("HX-Request") == "true" and status == 200:
        return render(request, login, "folders/_listing.html", download_url=_download_url, **ctx)
    return render(
        request,
        login,
        "folders/browse.html",
        status=status,
        error=error,
        done="" if error else _done(request),
        download_url=_download_url,
        **ctx,
    )


@page()
async def browse(request: web.Request, login: Login) -> web.StreamResponse:
    """``GET /folders/{name}?path=``: the file browser."""
    return await _render_browser(request, login, _folder_name(request), clean_path(request.query.get("path")))


async def _act(
    request: web.Request,
    login: Login,
    form: MultiDictProxy[Any],
    done: str,
    action: Callable[[ManagerAPI, str, str], Awaitable[str | None]],
) -> web.StreamResponse:
    """Run ``action(api, name, cwd)``; then back to the browser at ``cwd`` with ``done``, or the page again with
    the refusal and its 4xx status."""
    name = _folder_name(request)
    cwd = clean_path(form_str(form, "cwd", max_len=4096), "current directory")
    try:
        result = await action(api(request, login), name, cwd)
    except (ConsoleError, ManagerError) as e:
        if e.status >= 500:
            raise  # the manager or a storage proxy is down: the error page (502)
        return await _render_browser(request, login, name, cwd, status=_status_of(e), error=_message(e))
    raise web.HTTPSeeOther(_url(name, cwd, done=result or done))


@page()
async def make_directory(request: web.Request, login: Login) -> web.StreamResponse:
    """``POST /folders/{name}/mkdir``: ``dirname`` inside ``cwd``."""
    form = await read_form(request, login)

    async def run(m: ManagerAPI, name: str, cwd: str) -> None:
        dirname = _entry_name(form_str(form, "dirname", max_len=255), "directory name")
        await m.post(f"/folders/{_ref(name)}/mkdir", {"path": _join(cwd, dirname), "parents": False})

    return await _act(request, login, form, "mkdir", run)


@page()
async def rename_file(request: web.Request, login: Login) -> web.StreamResponse:
    """``POST /folders/{name}/rename-file``: ``target`` (a name in ``cwd``) to ``new_name``."""
    form = await read_form(request, login)

    async def run(m: ManagerAPI, name: str, cwd: str) -> None:
        target = _entry_name(form_str(form, "target", max_len=255), "entry to rename")
        new_name = _entry_name(form_str(form, "new_name", max_len=255), "new name")
        await m.post(f"/folders/{_ref(name)}/rename-file", {"target_path": _join(cwd, target), "new_name": new_name})

    return await _act(request, login, form, "renamed", run)


@page()
async def delete_files(request: web.Request, login: Login) -> web.StreamResponse:
    """``POST /folders/{name}/delete-files``: the checked ``names`` in ``cwd``, or the one row's ``only``."""
    form = await read_form(request, login)

    async def run(m: ManagerAPI, name: str, cwd: str) -> None:
        only = form_str(form, "only", max_len=255)
        raw = [only] if only else [v for v in form.getall("names", []) if isinstance(v, str)]
        names = [_entry_name(n, "entry to delete") for n in raw]
        if not names:
            raise ConsoleError(400, "Nothing selected", "Select the files or directories to delete.")
        files = [_join(cwd, n) for n in names]
        await m.post(f"/folders/{_ref(name)}/delete-files", {"files": files, "recursive": True})

    return await _act(request, login, form, "removed", run)


@page()
async def download(request: web.Request, login: Login) -> web.StreamResponse:
    """``GET /folders/{name}/download?path=[&archive=1]``: to the storage proxy with a fresh download token."""
    name = _folder_name(request)
    relpath = clean_path(request.query.get("path"))
    if not relpath and not request.query.get("archive"):
        raise ConsoleError(400, "Nothing to download", "Name a file (?path=) to download.")
    answer = await api(request, login).post(
        f"/folders/{_ref(name)}/request-download", {"path": relpath, "archive": bool(request.query.get("archive"))}
    )
    if not isinstance(answer, dict) or not answer.get("url") or not answer.get("token"):
        raise ManagerError(502, "Unexpected answer", "The manager gave no download URL.")
    url = str(answer["url"])
    raise web.HTTPSeeOther(f"{url}{'&' if '?' in url else '?'}token={quote(str(answer['token']), safe='')}")


# -------------------------------------------------------------------------------------------- sharing


def _emails(raw: str) -> list[str]:
    emails = [e for e in raw.replace(",", " ").replace(";", " ").split() if e]
    if not emails:
        raise ConsoleError(400, "Invalid invitation", "Enter the e-mail address of at least one user.")
    bad = [e for e in emails if "@" not in e]
    if bad:
        raise ConsoleError(400, "Invalid invitation", f"Not e-mail addresses: {', '.join(bad)}.")
    return emails


def _permission(form: MultiDictProxy[Any], field: str = "perm") -> str:
    perm = form_str(form, field)
    if perm not in PERMISSIONS:
        raise ConsoleError(400, "Invalid permission", f"The permission must be one of {', '.join(PERMISSIONS)}.")
    return perm


@page()
async def invite(request: web.Request, login: Login) -> web.StreamResponse:
    """``POST /folders/{name}/invite``: invite users (a user folder) or share it with members (a project's)."""
    form = await read_form(request, login)

    async def run(m: ManagerAPI, name: str, cwd: str) -> str:
        emails = _emails(form_str(form, "emails", max_len=4096))
        perm = _permission(form)
        info = await m.get(f"/folders/{_ref(name)}")
        if isinstance(info, Mapping) and info.get("type") == "group":
            await m.post(f"/folders/{_ref(name)}/share", {"emails": emails, "permission": perm})
            return "shared"
        answer = await m.post(f"/folders/{_ref(name)}/invite", {"emails": emails, "perm": perm})
        return "invited" if isinstance(answer, dict) and answer.get("invited_ids") else "already"

    return await _act(request, login, form, "invited", run)


@page()
async def update_share(request: web.Request, login: Login) -> web.StreamResponse:
    """``POST /folders/{name}/shares``: change (``perm``) or end (``remove``) one user's share."""
    form = await read_form(request, login)

    async def run(m: ManagerAPI, name: str, cwd: str) -> None:
        user = form_str(form, "user", max_len=64)
        if not user:
            raise ConsoleError(400, "Invalid form", "'user' is required.")
        perm = None if form.get("remove") else _permission(form)
        info = await m.get(f"/folders/{_ref(name)}")
        fid = str(info["id"]) if isinstance(info, Mapping) else name
        await m.post("/folders/_/shared", {"vfolder": fid, "user": user, "perm": perm})

    return await _act(request, login, form, "shared", run)


@page()
async def cancel_invitation(request: web.Request, login: Login) -> web.StreamResponse:
    """``POST /folders/{name}/invitations/{inv_id}/cancel``: withdraw an invitation this user sent."""
    form = await read_form(request, login)
    cancel = {"inv_id": request.match_info["inv_id"]}
    return await _act(request, login, form, "canceled", lambda m, *_: m.post("/folders/invitations/delete", cancel))


def register(app: web.Application) -> None:
    """Add this area's routes to ``app``."""
    r = app.router
    r.add_get("/folders", folders_page)
    r.add_post("/folders", create_folder)
    r.add_post("/folders/invitations/{inv_id}/{action:accept|reject}", answer_invitation)
    r.add_get("/folders/{name}", browse)
    r.add_get("/folders/{name}/download", download)
    r.add_post("/folders/{name}/delete", delete_folder)
    r.add_post("/folders/{name}/leave", leave_folder)
    r.add_post("/folders/{name}/mkdir", make_directory)
    r.add_post("/folders/{name}/rename-file", rename_file)
    r.add_post("/folders/{name}/delete-files", delete_files)
    r.add_post("/folders/{name}/invite", invite)
    r.add_post("/folders/{name}/shares", update_share)
    r.add_post("/folders/{name}/invitations/{inv_id}/cancel", cancel_invitation)
