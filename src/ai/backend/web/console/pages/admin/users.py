"""Admin pages ``/admin/users``: list, create and edit users, (de)activate and delete them."""

from __future__ import annotations

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
    page_number,
    page_window,
    pager,
    redirect_done,
    refusal,
    render_page,
    search_filter,
    uuid_or_404,
)
from .forms import form_checked, form_choice, form_email, form_text, form_values

ROLES = ("user", "admin", "superadmin", "monitor")


USER_STATUSES = ("active", "inactive", "before-verification", "deleted")


MIN_PASSWORD = 8


USER_FIELDS = (
    "id email username full_name description role status status_info domain_name need_password_change "
    "created_at groups { id name }"
)


#: A user's change (of the edit form, or of the list's (de)activate buttons).
MODIFY_USER = (
    "mutation($email: String!, $props: ModifyUserInput!) { modify_user(email: $email, props: $props) { ok msg } }"
)


USER_STATUS_FILTERS = {
    "": "active,inactive,before-verification",
    "active": "active",
    "inactive": "inactive",
    "before-verification": "before-verification",
    "deleted": "deleted",
    "all": "active,inactive,before-verification,deleted",
}


@page(admin=True)
async def users(request: web.Request, login: Login) -> web.StreamResponse:
    """``GET /admin/users?q=&status=&page=``: users, searched and paginated."""
    return await _users_page(request, login)


async def _users_page(request: web.Request, login: Login, *, refused: Refusal | None = None) -> web.Response:
    q = request.query.get("q", "").strip()[:100]
    state = request.query.get("status", "")
    if state not in USER_STATUS_FILTERS:
        state = ""
    page_no = page_number(request)
    data = await gql(
        request,
        login,
        """query($limit: Int!, $offset: Int!, $filter: String, $status: String) {
          user_list(limit: $limit, offset: $offset, filter: $filter, status: $status, order: "email") {
            total_count items { """
        + USER_FIELDS
        + " } } }",
        {
            **page_window(page_no),
            "filter": search_filter(q, ("email", "username", "full_name")),
            "status": USER_STATUS_FILTERS[state],
        },
    )
    listing = data["user_list"]
    return render_page(
        request,
        login,
        "admin/users.html",
        "users",
        refused=refused,
        rows=listing["items"],
        q=q,
        state=state,
        states=list(USER_STATUS_FILTERS),
        pager=pager(request, page_no, listing["total_count"]),
    )


@page(admin=True)
async def user_new(request: web.Request, login: Login) -> web.StreamResponse:
    """``GET /admin/users/new``: the form for a new user."""
    return await _user_new_page(request, login, {"role": "user", "status": "active", "domain": "default"}, None)


async def _user_new_page(
    request: web.Request,
    login: Login,
    form: Mapping[str, str],
    selected: list[str] | None,
    *,
    refused: Refusal | None = None,
) -> web.Response:
    domains, groups = await domains_and_groups(request, login)
    if selected is None:  # a new form: the domain's default project, as the manager's fixtures have it
        selected = [g["id"] for g in groups if g["name"] == "default" and g["domain_name"] == form.get("domain")]
    return render_page(
        request,
        login,
        "admin/user_new.html",
        "users",
        refused=refused,
        form=form,
        selected=selected,
        domains=domains,
        groups=groups,
        roles=ROLES,
        statuses=USER_STATUSES[:3],
    )


@page(admin=True)
async def user_create(request: web.Request, login: Login) -> web.StreamResponse:
    """``POST /admin/users``: create a user (and its main keypair)."""
    form = await read_form(request, login)
    values = form_values(form)
    chosen = [g for g in form.getall("group_ids", []) if isinstance(g, str)]
    doc = "mutation($email: String!, $props: UserInput!) { create_user(email: $email, props: $props) { ok msg } }"
    with refusal() as refused:
        email = form_email(values)
        password = values.get("password", "")
        if len(password) < MIN_PASSWORD:
            raise ConsoleError(400, "Invalid form", f"The password must have at least {MIN_PASSWORD} characters.")
        props = {
            "username": form_text(values, "username", "User name", max_len=64) or None,
            "password": password,
            "need_password_change": form_checked(values, "need_password_change"),
            "full_name": form_text(values, "full_name", "Full name", max_len=64) or None,
            "description": form_text(values, "description", "Description", max_len=500) or None,
            "role": form_choice(values, "role", "Role", ROLES),
            "status": form_choice(values, "status", "Status", USER_STATUSES[:3]),
            "domain_name": form_text(values, "domain", "Domain", required=True, max_len=64),
            "group_ids": chosen,
        }
        await mutate(request, login, doc, {"email": email, "props": props}, "create_user")
    if refused:
        values.pop("password", None)  # never sent back to the browser
        return await _user_new_page(request, login, values, chosen, refused=refused)
    redirect_done("/admin/users", "created", f"User {email}", q=email)


async def _load_user(request: web.Request, login: Login, uid: str) -> dict[str, Any]:
    uuid_or_404(uid, "user")
    doc = "query($id: String) { user_from_uuid(user_id: $id) { " + USER_FIELDS + " } }"
    missing = ("No such user", f"There is no user with id {uid}.")
    return await load_one(request, login, doc, {"id": uid}, "user_from_uuid", missing)


@page(admin=True)
async def user_detail(request: web.Request, login: Login) -> web.StreamResponse:
    """``GET /admin/users/{uid}``: a user's details, the edit form and its keypairs."""
    user = await _load_user(request, login, request.match_info["uid"])
    return await _user_page(request, login, user)


async def _user_page(
    request: web.Request,
    login: Login,
    user: dict[str, Any],
    form: Mapping[str, str] | None = None,
    selected: list[str] | None = None,
    *,
    refused: Refusal | None = None,
) -> web.Response:
    data = await gql(
        request,
        login,
        """query($email: String, $domain: String) {
          keypairs(email: $email) { access_key is_active is_admin is_main resource_policy created_at last_used }
          groups(domain_name: $domain) { id name is_active }
        }""",
        {"email": user["email"], "domain": user["domain_name"]},
    )
    if form is None:
        form = {
            "username": user["username"] or "",
            "full_name": user["full_name"] or "",
            "description": user["description"] or "",
            "role": user["role"],
            "status": user["status"],
            "need_password_change": "on" if user["need_password_change"] else "",
        }
    return render_page(
        request,
        login,
        "admin/user_detail.html",
        "users",
        refused=refused,
        user=user,
        form=form,
        selected=selected if selected is not None else [g["id"] for g in user["groups"]],
        keypairs=data["keypairs"],
        groups=data["groups"],
        roles=ROLES,
        statuses=USER_STATUSES,
    )


@page(admin=True)
async def user_update(request: web.Request, login: Login) -> web.StreamResponse:
    """``POST /admin/users/{uid}``: change a user's name, role, status, projects or password."""
    form = await read_form(request, login)
    user = await _load_user(request, login, request.match_info["uid"])
    values = form_values(form)
    chosen = [g for g in form.getall("group_ids", []) if isinstance(g, str)]
    with refusal() as refused:
        props: dict[str, Any] = {
            "username": form_text(values, "username", "User name", required=True, max_len=64),
            "full_name": form_text(values, "full_name", "Full name", max_len=64),
            "description": form_text(values, "description", "Description", max_len=500),
            "role": form_choice(values, "role", "Role", ROLES),
            "status": form_choice(values, "status", "Status", USER_STATUSES),
            "need_password_change": form_checked(values, "need_password_change"),
            "group_ids": chosen,
        }
        password = values.get("password", "")
        if password:
            if len(password) < MIN_PASSWORD:
                raise ConsoleError(
                    400, "Invalid form", f"The new password must have at least {MIN_PASSWORD} characters."
                )
            props["password"] = password
        await mutate(request, login, MODIFY_USER, {"email": user["email"], "props": props}, "modify_user")
    if refused:
        values.pop("password", None)
        return await _user_page(request, login, user, values, chosen, refused=refused)
    redirect_done(f"/admin/users/{user['id']}", "updated", f"User {user['email']}")


@page(admin=True)
async def user_set_status(request: web.Request, login: Login) -> web.StreamResponse:
    """``POST /admin/users/{uid}/status``: activate or deactivate a user (buttons of the list)."""
    form = await read_form(request, login)
    user = await _load_user(request, login, request.match_info["uid"])
    with refusal() as refused:
        state = form_choice(form, "status", "Status", ("active", "inactive"))
        await mutate(request, login, MODIFY_USER, {"email": user["email"], "props": {"status": state}}, "modify_user")
    if refused:
        return await _users_page(request, login, refused=refused)
    redirect_done("/admin/users", "activated" if state == "active" else "deactivated", f"User {user['email']}")


@page(admin=True)
async def user_delete(request: web.Request, login: Login) -> web.StreamResponse:
    """``POST /admin/users/{uid}/delete``: the manager's soft delete (status ``deleted``, keypairs off)."""
    await read_form(request, login)
    user = await _load_user(request, login, request.match_info["uid"])
    doc = "mutation($email: String!) { delete_user(email: $email) { ok msg } }"
    with refusal() as refused:
        await mutate(request, login, doc, {"email": user["email"]}, "delete_user")
    if refused:
        return await _user_page(request, login, user, refused=refused)
    redirect_done("/admin/users", "deleted", f"User {user['email']}")
