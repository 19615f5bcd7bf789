"""Admin pages ``/admin/projects``: list, create and edit projects (limits, storage hosts) and their members."""

from __future__ import annotations

import uuid
from collections.abc import Mapping
from typing import Any

from aiohttp import web

from ...base import ConsoleError, Login, page, read_form
from .common import (
    Refusal,
    domains_and_groups,
    gql,
    load_one,
    mutate,
    redirect_done,
    refusal,
    render_page,
    uuid_or_404,
)
from .forms import (
    EMAIL_RE,
    form_checked,
    form_choice,
    form_names,
    form_slots,
    form_slug,
    form_text,
    form_values,
    json_field,
    slot_fields,
    slot_types,
)

#: At most this many e-mail addresses are added to a project in one form.
MAX_NEW_MEMBERS = 20


GROUP_FIELDS = (
    "id name description is_active domain_name created_at total_resource_slots allowed_vfolder_hosts scaling_groups"
)


#: A project's change: its fields, or its members (``user_update_mode`` and ``user_uuids``).
MODIFY_GROUP = "mutation($gid: UUID!, $props: ModifyGroupInput!) { modify_group(gid: $gid, props: $props) { ok msg } }"


def _group_row(g: dict[str, Any]) -> dict[str, Any]:
    return {**g, "total_resource_slots": json_field(g.get("total_resource_slots"))}


@page(admin=True)
async def projects(request: web.Request, login: Login) -> web.StreamResponse:
    """``GET /admin/projects?domain=``: projects, and the create form."""
    return await _projects_page(request, login)


async def _projects_page(
    request: web.Request, login: Login, form: Mapping[str, str] | None = None, *, refused: Refusal | None = None
) -> web.Response:
    domain = request.query.get("domain", "").strip()[:64] or None
    domains, _ = await domains_and_groups(request, login)
    data = await gql(
        request,
        login,
        "query($domain: String) { groups(domain_name: $domain) { " + GROUP_FIELDS + " } }",
        {"domain": domain},
    )
    types = await slot_types(request, login)
    return render_page(
        request,
        login,
        "admin/projects.html",
        "projects",
        refused=refused,
        rows=[_group_row(g) for g in data["groups"]],
        domains=domains,
        domain=domain or "",
        form=form or {"domain": domain or (domains[0] if domains else "")},
        slot_fields=slot_fields(types, {}, form),
    )


@page(admin=True)
async def project_create(request: web.Request, login: Login) -> web.StreamResponse:
    """``POST /admin/projects``: a new project in a domain."""
    form = await read_form(request, login)
    values = form_values(form)
    doc = (
        "mutation($name: String!, $props: GroupInput!) { create_group(name: $name, props: $props) "
        "{ ok msg group { id } } }"
    )
    with refusal() as refused:
        name = form_slug(values, "name", "Project name")
        types = await slot_types(request, login)
        props = {
            "domain_name": form_text(values, "domain", "Domain", required=True, max_len=64),
            "description": form_text(values, "description", "Description", max_len=500),
            "is_active": True,
            "total_resource_slots": form_slots(values, types),
            "allowed_vfolder_hosts": form_names(values, "allowed_vfolder_hosts", "Storage hosts"),
        }
        payload = await mutate(request, login, doc, {"name": name, "props": props}, "create_group")
    if refused:
        return await _projects_page(request, login, values, refused=refused)
    redirect_done(f"/admin/projects/{payload['group']['id']}", "created", f"Project {name}")


async def _load_project(request: web.Request, login: Login) -> dict[str, Any]:
    gid = uuid_or_404(request.match_info["gid"], "project")
    doc = "query($id: UUID!) { group(id: $id) { " + GROUP_FIELDS + " } }"
    missing = ("No such project", f"There is no project with id {gid}.")
    return _group_row(await load_one(request, login, doc, {"id": gid}, "group", missing))


@page(admin=True)
async def project_detail(request: web.Request, login: Login) -> web.StreamResponse:
    """``GET /admin/projects/{gid}``: the project's edit form and its members."""
    return await _project_page(request, login, await _load_project(request, login))


async def _project_page(
    request: web.Request,
    login: Login,
    group: dict[str, Any],
    form: Mapping[str, str] | None = None,
    *,
    refused: Refusal | None = None,
) -> web.Response:
    data = await gql(
        request,
        login,
        'query($id: UUID) { users(group_id: $id, status: "active,inactive,before-verification") '
        "{ id email username full_name role status } }",
        {"id": group["id"]},
    )
    slots = slot_fields(await slot_types(request, login), group["total_resource_slots"], form)
    if form is None:
        form = {
            "name": group["name"],
            "description": group["description"] or "",
            "is_active": "on" if group["is_active"] else "",
            "allowed_vfolder_hosts": ", ".join(group["allowed_vfolder_hosts"]),
        }
    return render_page(
        request,
        login,
        "admin/project_detail.html",
        "projects",
        refused=refused,
        group=group,
        members=data["users"],
        form=form,
        slot_fields=slots,
    )


@page(admin=True)
async def project_update(request: web.Request, login: Login) -> web.StreamResponse:
    """``POST /admin/projects/{gid}``: change a project's name, description, limits or status."""
    form = await read_form(request, login)
    group = await _load_project(request, login)
    values = form_values(form)
    with refusal() as refused:
        types = await slot_types(request, login)
        props = {
            "name": form_slug(values, "name", "Project name"),
            "description": form_text(values, "description", "Description", max_len=500),
            "is_active": form_checked(values, "is_active"),
            "total_resource_slots": form_slots(values, types),
            "allowed_vfolder_hosts": form_names(values, "allowed_vfolder_hosts", "Storage hosts"),
        }
        await mutate(request, login, MODIFY_GROUP, {"gid": group["id"], "props": props}, "modify_group")
    if refused:
        return await _project_page(request, login, group, values, refused=refused)
    redirect_done(f"/admin/projects/{group['id']}", "updated", f"Project {props['name']}")


@page(admin=True)
async def project_members(request: web.Request, login: Login) -> web.StreamResponse:
    """``POST /admin/projects/{gid}/members``: add users (by e-mail) to a project, or remove one."""
    form = await read_form(request, login)
    group = await _load_project(request, login)
    with refusal() as refused:
        mode = form_choice(form, "mode", "Action", ("add", "remove"))
        if mode == "add":
            emails = form_names(form, "emails", "E-mail addresses")
            if not emails:
                raise ConsoleError(400, "Invalid form", "Give the e-mail address of at least one user.")
            if len(emails) > MAX_NEW_MEMBERS:
                raise ConsoleError(400, "Invalid form", f"Add at most {MAX_NEW_MEMBERS} users at once.")
            uuids = await _user_ids(request, login, emails)
        else:
            uid = form_text(form, "user", "User", required=True, max_len=64)
            try:
                uuid.UUID(uid)
            except ValueError:
                raise ConsoleError(400, "Invalid form", f"{uid!r} is not a user id.") from None
            uuids = [uid]
        props = {"user_update_mode": mode, "user_uuids": uuids}
        await mutate(request, login, MODIFY_GROUP, {"gid": group["id"], "props": props}, "modify_group")
    if refused:
        return await _project_page(request, login, group, refused=refused)
    redirect_done(f"/admin/projects/{group['id']}", "members", f"project {group['name']}")


async def _user_ids(request: web.Request, login: Login, emails: list[str]) -> list[str]:
    """The user ids of ``emails`` (one query), or a 404 naming the addresses no user has."""
    for e in emails:
        if not EMAIL_RE.match(e) or len(e) > 64:
            raise ConsoleError(400, "Invalid form", f"{e!r} is not a valid e-mail address.")
    decls = ", ".join(f"$e{i}: String" for i in range(len(emails)))
    fields = " ".join(f"u{i}: user(email: $e{i}) {{ id email }}" for i in range(len(emails)))
    data = await gql(request, login, f"query({decls}) {{ {fields} }}", {f"e{i}": e for i, e in enumerate(emails)})
    missing = [e for i, e in enumerate(emails) if not data.get(f"u{i}")]
    if missing:
        raise ConsoleError(404, "No such user", f"No user has the e-mail address {', '.join(missing)}.")
    return [str(data[f"u{i}"]["id"]) for i in range(len(emails))]


@page(admin=True)
async def project_delete(request: web.Request, login: Login) -> web.StreamResponse:
    """``POST /admin/projects/{gid}/delete``: deactivate a project (the manager keeps its data)."""
    await read_form(request, login)
    group = await _load_project(request, login)
    doc = "mutation($gid: UUID!) { delete_group(gid: $gid) { ok msg } }"
    with refusal() as refused:
        await mutate(request, login, doc, {"gid": group["id"]}, "delete_group")
    if refused:
        return await _project_page(request, login, group, refused=refused)
    redirect_done("/admin/projects", "deactivated", f"Project {group['name']}")
