"""Admin pages ``/admin/keypairs``: list keypairs (never their secret keys), create one (its secret key shown
once), (de)activate, grant or revoke admin, change the resource policy, delete."""

from __future__ import annotations

import re
from collections.abc import Mapping
from typing import Any

from aiohttp import web

from ...base import ConsoleError, Login, page, read_form
from .common import (
    Refusal,
    gql,
    mutate,
    page_number,
    page_window,
    pager,
    redirect_done,
    refusal,
    render_page,
    search_filter,
)
from .forms import form_checked, form_choice, form_count, form_email, form_text, form_values

KEYPAIR_FIELDS = (
    "access_key user_id is_active is_admin is_main resource_policy rate_limit num_queries concurrency_used "
    "concurrency_limit created_at last_used domain_name user_info { full_name }"
)


KEYPAIR_ACTIONS = ("activate", "deactivate", "grant-admin", "revoke-admin", "policy")


@page(admin=True)
async def keypairs(request: web.Request, login: Login) -> web.StreamResponse:
    """``GET /admin/keypairs?q=&active=&page=``: keypairs (never their secret keys), and the create form."""
    return await _keypairs_page(request, login)


async def _keypairs_page(
    request: web.Request, login: Login, form: Mapping[str, str] | None = None, *, refused: Refusal | None = None
) -> web.Response:
    q = request.query.get("q", "").strip()[:100]
    active = request.query.get("active", "")
    page_no = page_number(request)
    data = await gql(
        request,
        login,
        """query($limit: Int!, $offset: Int!, $filter: String, $active: Boolean) {
          keypair_list(limit: $limit, offset: $offset, filter: $filter, is_active: $active, order: "-created_at") {
            total_count items { """
        + KEYPAIR_FIELDS
        + """ } }
          keypair_resource_policies { name }
        }""",
        {
            **page_window(page_no),
            "filter": search_filter(q, ("user_id", "access_key")),
            "active": {"yes": True, "no": False}.get(active),
        },
    )
    listing = data["keypair_list"]
    return render_page(
        request,
        login,
        "admin/keypairs.html",
        "keypairs",
        refused=refused,
        rows=listing["items"],
        policies=[p["name"] for p in data["keypair_resource_policies"]],
        q=q,
        active=active,
        form=form or {"resource_policy": "default", "email": request.query.get("email", "")},
        pager=pager(request, page_no, listing["total_count"]),
    )


@page(admin=True)
async def keypair_create(request: web.Request, login: Login) -> web.StreamResponse:
    """``POST /admin/keypairs``: a new keypair for a user; the answer shows its secret key, once."""
    form = await read_form(request, login)
    values = form_values(form)
    doc = """mutation($email: String!, $props: KeyPairInput!) {
      create_keypair(user_id: $email, props: $props) {
        ok msg keypair { access_key secret_key user_id resource_policy is_admin }
      }
    }"""
    with refusal() as refused:
        email = form_email(values)
        props = {
            "is_active": True,
            "is_admin": form_checked(values, "is_admin"),
            "resource_policy": form_text(values, "resource_policy", "Resource policy", required=True, max_len=256),
            "rate_limit": form_count(values, "rate_limit", "Rate limit", default=10000),
        }
        payload = await mutate(request, login, doc, {"email": email, "props": props}, "create_keypair")
    if refused:
        return await _keypairs_page(request, login, values, refused=refused)
    # Rendered, not redirected: the secret key must not go into a URL or come back on reload.
    return render_page(request, login, "admin/keypair_created.html", "keypairs", status=201, keypair=payload["keypair"])


def _access_key(request: web.Request) -> str:
    ak = request.match_info["ak"]
    if not re.fullmatch(r"[A-Za-z0-9]{1,64}", ak):
        raise ConsoleError(404, "No such keypair", f"{ak!r} is not an access key.")
    return ak


@page(admin=True)
async def keypair_update(request: web.Request, login: Login) -> web.StreamResponse:
    """``POST /admin/keypairs/{ak}``: (de)activate, grant or revoke admin, or change the resource policy."""
    form = await read_form(request, login)
    ak = _access_key(request)
    doc = (
        "mutation($ak: String!, $props: ModifyKeyPairInput!) { modify_keypair(access_key: $ak, props: $props) "
        "{ ok msg } }"
    )
    with refusal() as refused:
        action = form_choice(form, "action", "Action", KEYPAIR_ACTIONS)
        props: dict[str, Any] = {
            "activate": {"is_active": True},
            "deactivate": {"is_active": False},
            "grant-admin": {"is_admin": True},
            "revoke-admin": {"is_admin": False},
            "policy": {},
        }[action]
        if action == "policy":
            props["resource_policy"] = form_text(form, "resource_policy", "Resource policy", required=True, max_len=256)
        await mutate(request, login, doc, {"ak": ak, "props": props}, "modify_keypair")
    if refused:
        return await _keypairs_page(request, login, refused=refused)
    verb = {"activate": "activated", "deactivate": "deactivated"}.get(action, "updated")
    redirect_done("/admin/keypairs", verb, f"Keypair {ak}")


@page(admin=True)
async def keypair_delete(request: web.Request, login: Login) -> web.StreamResponse:
    """``POST /admin/keypairs/{ak}/delete``: delete a keypair that never ran sessions (else deactivate it)."""
    await read_form(request, login)
    ak = _access_key(request)
    doc = "mutation($ak: String!) { delete_keypair(access_key: $ak) { ok msg } }"
    with refusal() as refused:
        await mutate(request, login, doc, {"ak": ak}, "delete_keypair")
    if refused:
        return await _keypairs_page(request, login, refused=refused)
    redirect_done("/admin/keypairs", "deleted", f"Keypair {ak}")
