"""Console pages: the user's settings at ``/settings``.

One page with a section each for the account (e-mail, role, access key: never the secret key), the
password, the SSH keypair of the user's sessions, dotfiles and the bootstrap script. Every change is a
CSRF-checked form posted to ``/settings/<section>/...``: htmx swaps the re-rendered section in place (its
errors go to the page's alert region with the 4xx status); without JavaScript the whole page comes back
with the section's notice. The manager checks everything that matters (password policy, key formats,
dotfile paths and sizes); the console checks only what it can say more clearly itself (a missing field,
two new passwords that differ, an unconfirmed key replacement) and passes the manager's refusals on.
"""

from __future__ import annotations

import asyncio
import base64
from typing import Any

from aiohttp import web

from ..base import (
    ConsoleError,
    Login,
    ManagerAPI,
    ManagerError,
    api,
    form_str,
    is_fragment_request,
    page,
    read_form,
    render,
)

__all__ = ["register"]

SECTIONS = ("account", "password", "ssh", "dotfiles", "bootstrap")
#: The manager allows 64 KiB of dotfiles and of bootstrap script; the console lets a bit more through so that
#: the manager's own message (naming its limit) is what the user sees.
MAX_TEXT = 256 * 1024
MAX_KEY = 32 * 1024

ACCOUNT_QUERY = """
query { user { email username full_name role domain_name groups { name } }
        keypair { access_key resource_policy } }
"""


async def _account(m: ManagerAPI) -> dict[str, Any]:
    data = await m.graphql(ACCOUNT_QUERY)
    user = data.get("user") or {}
    keypair = data.get("keypair") or {}
    # Only these keys reach the template: the keypair's secret half is never asked for nor shown.
    return {
        "email": user.get("email", ""),
        "username": user.get("username", ""),
        "full_name": user.get("full_name") or "",
        "role": user.get("role", ""),
        "domain": user.get("domain_name", ""),
        "groups": [g.get("name", "") for g in user.get("groups") or []],
        "access_key": keypair.get("access_key", ""),
        "resource_policy": keypair.get("resource_policy", ""),
    }


async def _ssh(m: ManagerAPI) -> dict[str, Any]:
    answer = await m.get("/auth/ssh-keypair")
    return {"ssh_public_key": str((answer or {}).get("ssh_public_key", ""))}


async def _dotfiles(m: ManagerAPI) -> dict[str, Any]:
    answer = await m.get("/user-config/dotfiles")
    rows = answer if isinstance(answer, list) else []
    files = [
        {
            "path": str(r.get("path", "")),
            "permission": str(r.get("permission", "")),
            "size": len(str(r.get("data", "")).encode("utf-8")),
        }
        for r in rows
        if isinstance(r, dict)
    ]
    return {"dotfiles": files}


async def _bootstrap(m: ManagerAPI) -> dict[str, Any]:
    answer = await m.get("/user-config/bootstrap-script")
    return {"bootstrap_script": answer if isinstance(answer, str) else ""}


LOADERS = {"account": _account, "ssh": _ssh, "dotfiles": _dotfiles, "bootstrap": _bootstrap}


def _defaults() -> dict[str, Any]:
    """Template variables every section may read (those a partial load did not fill)."""
    return {
        "account": {},
        "ssh_public_key": "",
        "new_private_key": None,
        "dotfiles": [],
        "bootstrap_script": "",
        "editing": None,
        "notices": {},
    }


async def _respond(
    request: web.Request, login: Login, section: str, notice: str = "", **extra: Any
) -> web.StreamResponse:
    """After a change: the re-rendered section for htmx, else the whole page, with ``notice`` in the section."""
    m = api(request, login)
    ctx = _defaults()
    ctx["notices"] = {section: notice} if notice else {}
    if is_fragment_request(request):
        loader = LOADERS.get(section)
        if loader is not None:
            ctx.update(await loader(m))
        ctx.update(extra)
        return render(request, login, f"settings/_{section}.html", **ctx)
    ctx.update(await _load_all(m))
    ctx.update(extra)
    return render(request, login, "settings/index.html", **ctx)


async def _load_all(m: ManagerAPI) -> dict[str, Any]:
    account, ssh, dotfiles, bootstrap = await asyncio.gather(_account(m), _ssh(m), _dotfiles(m), _bootstrap(m))
    return {"account": account, **ssh, **dotfiles, **bootstrap}


def _refused(title: str, e: ManagerError) -> ConsoleError:
    """The manager's refusal of a change as the console's (its status when a 4xx, its message)."""
    status = e.status if 400 <= e.status < 500 else 502
    return ConsoleError(status, title, e.detail or e.title)


def _text(form: Any, name: str, max_len: int) -> str:
    """A text field as typed (not stripped: spaces count in passwords and files); a 400 when not text or too long."""
    value = form.get(name, "")
    if not isinstance(value, str):
        raise ConsoleError(400, "Invalid form", f"'{name}' must be text.")
    if len(value) > max_len:
        raise ConsoleError(400, "Invalid form", f"'{name}' is longer than {max_len} characters.")
    return value


# ------------------------------------------------------------------------------------------------- page


@page()
async def settings_page(request: web.Request, login: Login) -> web.StreamResponse:
    """``GET /settings``: every section."""
    ctx = _defaults()
    ctx.update(await _load_all(api(request, login)))
    return render(request, login, "settings/index.html", **ctx)


# --------------------------------------------------------------------------------------------- password


@page()
async def change_password(request: web.Request, login: Login) -> web.StreamResponse:
    """``POST /settings/password``: the current password and the new one twice."""
    form = await read_form(request, login)
    current, new, repeat = (_text(form, name, 1024) for name in ("current_password", "new_password", "new_password2"))
    if not current:
        raise ConsoleError(400, "Password not changed", "Enter your current password.")
    if not new:
        raise ConsoleError(400, "Password not changed", "Enter a new password.")
    if new != repeat:
        raise ConsoleError(400, "Password not changed", "The new password and its repetition differ.")
    try:
        await api(request, login).post(
            "/auth/update-password", {"old_password": current, "new_password": new, "new_password2": repeat}
        )
    except ManagerError as e:
        if e.status == 401:
            # The manager's 401 here means the current password, not the login: the console's login stays valid.
            raise ConsoleError(400, "Password not changed", "The current password is wrong.") from None
        raise _refused("Password not changed", e) from None
    return await _respond(request, login, "password", "Your password has been changed.")


# ------------------------------------------------------------------------------------------ SSH keypair


@page()
async def regenerate_ssh(request: web.Request, login: Login) -> web.StreamResponse:
    """``POST /settings/ssh/regenerate`` (confirmed by a checkbox): a fresh pair; the private half is shown once."""
    form = await read_form(request, login)
    if form.get("confirm") != "yes":
        raise ConsoleError(
            400, "SSH keypair not replaced", "Tick the box to confirm that the current keypair should be replaced."
        )
    try:
        answer = await api(request, login).patch("/auth/ssh-keypair")
    except ManagerError as e:
        raise _refused("SSH keypair not replaced", e) from None
    private = str((answer or {}).get("ssh_private_key", ""))
    new_private = None
    if private:
        # Offered once, as a download link carrying the key itself: the console keeps no copy anywhere.
        new_private = {"text": private, "href": "data:application/octet-stream;base64," + _b64(private)}
    return await _respond(
        request,
        login,
        "ssh",
        "A new SSH keypair was made for your sessions started from now on.",
        new_private_key=new_private,
    )


@page()
async def upload_ssh(request: web.Request, login: Login) -> web.StreamResponse:
    """``POST /settings/ssh/upload``: a pair of the user's own (both halves, OpenSSH formats)."""
    form = await read_form(request, login)
    public = form_str(form, "pubkey", max_len=MAX_KEY)
    private = form_str(form, "privkey", max_len=MAX_KEY)
    if not public or not private:
        raise ConsoleError(400, "SSH keypair not stored", "Paste both the public and the private key.")
    try:
        await api(request, login).post("/auth/ssh-keypair", {"pubkey": public, "privkey": private})
    except ManagerError as e:
        raise _refused("SSH keypair not stored", e) from None
    return await _respond(request, login, "ssh", "Your SSH keypair was stored; new sessions will use it.")


def _b64(text: str) -> str:
    return base64.b64encode(text.encode("utf-8")).decode("ascii")


# --------------------------------------------------------------------------------------------- dotfiles


def _dotfile_fields(form: Any) -> tuple[str, str, str]:
    path = form_str(form, "path", max_len=1024)
    permission = form_str(form, "permission", max_len=8) or "644"
    data = _text(form, "data", MAX_TEXT)
    if not path:
        raise ConsoleError(400, "Dotfile not saved", "Enter the file's path (relative to /home/work).")
    # Browsers send textarea line breaks as CRLF; files in sessions want LF.
    return path, permission, data.replace("\r\n", "\n")


@page()
async def create_dotfile(request: web.Request, login: Login) -> web.StreamResponse:
    """``POST /settings/dotfiles``: a new dotfile."""
    path, permission, data = _dotfile_fields(await read_form(request, login))
    try:
        await api(request, login).post("/user-config/dotfiles", {"path": path, "permission": permission, "data": data})
    except ManagerError as e:
        raise _refused("Dotfile not created", e) from None
    return await _respond(request, login, "dotfiles", f"Created {path}.")


@page()
async def edit_dotfile(request: web.Request, login: Login) -> web.StreamResponse:
    """``GET /settings/dotfiles/edit?path=``: the section with an edit form for that file."""
    path = request.query.get("path", "")
    if not path:
        raise ConsoleError(400, "Which dotfile?", "The 'path' parameter is missing.")
    one = await api(request, login).get("/user-config/dotfiles", path=path)
    editing = {
        "path": str(one.get("path", path)),
        "permission": str(one.get("permission", "644")),
        "data": str(one.get("data", "")),
    }
    return await _respond(request, login, "dotfiles", editing=editing)


@page()
async def update_dotfile(request: web.Request, login: Login) -> web.StreamResponse:
    """``POST /settings/dotfiles/update``: new content and mode for an existing dotfile."""
    path, permission, data = _dotfile_fields(await read_form(request, login))
    try:
        await api(request, login).patch("/user-config/dotfiles", {"path": path, "permission": permission, "data": data})
    except ManagerError as e:
        raise _refused("Dotfile not saved", e) from None
    return await _respond(request, login, "dotfiles", f"Saved {path}.")


@page()
async def delete_dotfile(request: web.Request, login: Login) -> web.StreamResponse:
    """``POST /settings/dotfiles/delete``: remove one dotfile."""
    form = await read_form(request, login)
    path = form_str(form, "path", required=True)
    try:
        await api(request, login).call("DELETE", "/user-config/dotfiles", params={"path": path})
    except ManagerError as e:
        raise _refused("Dotfile not deleted", e) from None
    return await _respond(request, login, "dotfiles", f"Deleted {path}.")


# ------------------------------------------------------------------------------------- bootstrap script


@page()
async def save_bootstrap(request: web.Request, login: Login) -> web.StreamResponse:
    """``POST /settings/bootstrap``: the script run in each new session ("" clears it)."""
    form = await read_form(request, login)
    script = _text(form, "script", MAX_TEXT).replace("\r\n", "\n")
    try:
        await api(request, login).post("/user-config/bootstrap-script", {"script": script})
    except ManagerError as e:
        raise _refused("Bootstrap script not saved", e) from None
    notice = "Saved: new sessions will run this script." if script.strip() else "Cleared: no bootstrap script."
    return await _respond(request, login, "bootstrap", notice)


def register(app: web.Application) -> None:
    """Add this area's routes to ``app``."""
    app.router.add_get("/settings", settings_page)
    app.router.add_post("/settings/password", change_password)
    app.router.add_post("/settings/ssh/regenerate", regenerate_ssh)
    app.router.add_post("/settings/ssh/upload", upload_ssh)
    app.router.add_post("/settings/dotfiles", create_dotfile)
    app.router.add_get("/settings/dotfiles/edit", edit_dotfile)
    app.router.add_post("/settings/dotfiles/update", update_dotfile)
    app.router.add_post("/settings/dotfiles/delete", delete_dotfile)
    app.router.add_post("/settings/bootstrap", save_bootstrap)
