"""Admin pages ``/admin/policies``: keypair resource policies (list, create, edit, delete)."""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

from aiohttp import web

from ai.backend.common.types import BinarySize

from ...base import Login, page, read_form
from .common import Refusal, gql, load_one, mutate, redirect_done, refusal, render_page
from .forms import (
    form_choice,
    form_count,
    form_names,
    form_size,
    form_slots,
    form_slug,
    form_values,
    json_field,
    slot_fields,
    slot_types,
)

DEFAULT_FOR_UNSPECIFIED = ("UNLIMITED", "LIMITED")


POLICY_FIELDS = (
    "name created_at default_for_unspecified total_resource_slots max_session_lifetime max_concurrent_sessions "
    "max_containers_per_session idle_timeout max_vfolder_count max_vfolder_size allowed_vfolder_hosts"
)


POLICY_DEFAULTS = {
    "default_for_unspecified": "UNLIMITED",
    "max_concurrent_sessions": "30",
    "max_containers_per_session": "1",
    "idle_timeout": "1800",
    "max_session_lifetime": "0",
    "max_vfolder_count": "10",
    "max_vfolder_size": "0",
}


def _policy_row(p: dict[str, Any]) -> dict[str, Any]:
    return {**p, "total_resource_slots": json_field(p.get("total_resource_slots"))}


def _policy_props(values: Mapping[str, str], types: Mapping[str, str]) -> dict[str, Any]:
    return {
        "default_for_unspecified": form_choice(
            values, "default_for_unspecified", "Unlisted slots", DEFAULT_FOR_UNSPECIFIED
        ),
        "total_resource_slots": form_slots(values, types),
        "max_concurrent_sessions": form_count(values, "max_concurrent_sessions", "Concurrent sessions"),
        "max_containers_per_session": form_count(
            values, "max_containers_per_session", "Containers per session", minimum=1
        ),
        "idle_timeout": form_count(values, "idle_timeout", "Idle timeout"),
        "max_session_lifetime": form_count(values, "max_session_lifetime", "Session lifetime", default=0),
        "max_vfolder_count": form_count(values, "max_vfolder_count", "Folder count"),
        "max_vfolder_size": form_size(values, "max_vfolder_size", "Folder size"),
        "allowed_vfolder_hosts": form_names(values, "allowed_vfolder_hosts", "Storage hosts"),
    }


@page(admin=True)
async def policies(request: web.Request, login: Login) -> web.StreamResponse:
    """``GET /admin/policies``: keypair resource policies, and the create form."""
    return await _policies_page(request, login)


async def _policies_page(
    request: web.Request, login: Login, form: Mapping[str, str] | None = None, *, refused: Refusal | None = None
) -> web.Response:
    data = await gql(request, login, "query { keypair_resource_policies { " + POLICY_FIELDS + " } }")
    types = await slot_types(request, login)
    return render_page(
        request,
        login,
        "admin/policies.html",
        "policies",
        refused=refused,
        rows=[_policy_row(p) for p in data["keypair_resource_policies"]],
        form=form or POLICY_DEFAULTS,
        slot_fields=slot_fields(types, {}, form),
        choices=DEFAULT_FOR_UNSPECIFIED,
    )


@page(admin=True)
async def policy_create(request: web.Request, login: Login) -> web.StreamResponse:
    """``POST /admin/policies``: a new keypair resource policy."""
    form = await read_form(request, login)
    values = form_values(form)
    doc = (
        "mutation($name: String!, $props: CreateKeyPairResourcePolicyInput!) "
        "{ create_keypair_resource_policy(name: $name, props: $props) { ok msg } }"
    )
    with refusal() as refused:
        name = form_slug(values, "name", "Policy name", 256)
        props = _policy_props(values, await slot_types(request, login))
        await mutate(request, login, doc, {"name": name, "props": props}, "create_keypair_resource_policy")
    if refused:
        return await _policies_page(request, login, values, refused=refused)
    redirect_done("/admin/policies", "created", f"Policy {name}")


async def _load_policy(request: web.Request, login: Login) -> dict[str, Any]:
    name = request.match_info["name"]
    doc = "query($name: String) { keypair_resource_policy(name: $name) { " + POLICY_FIELDS + " } }"
    missing = ("No such policy", f"There is no resource policy named {name!r}.")
    return _policy_row(await load_one(request, login, doc, {"name": name}, "keypair_resource_policy", missing))


@page(admin=True)
async def policy_detail(request: web.Request, login: Login) -> web.StreamResponse:
    """``GET /admin/policies/{name}``: a policy's edit form."""
    return await _policy_page(request, login, await _load_policy(request, login))


async def _policy_page(
    request: web.Request,
    login: Login,
    policy: dict[str, Any],
    form: Mapping[str, str] | None = None,
    *,
    refused: Refusal | None = None,
) -> web.Response:
    slots = slot_fields(await slot_types(request, login), policy["total_resource_slots"], form)
    if form is None:
        form = {k: str(policy[k]) for k in POLICY_DEFAULTS}
        form["max_vfolder_size"] = str(BinarySize(int(policy["max_vfolder_size"] or 0)))
        form["allowed_vfolder_hosts"] = ", ".join(policy["allowed_vfolder_hosts"])
    return render_page(
        request,
        login,
        "admin/policy_detail.html",
        "policies",
        refused=refused,
        policy=policy,
        form=form,
        slot_fields=slots,
        choices=DEFAULT_FOR_UNSPECIFIED,
    )


@page(admin=True)
async def policy_update(request: web.Request, login: Login) -> web.StreamResponse:
    """``POST /admin/policies/{name}``: change a policy."""
    form = await read_form(request, login)
    policy = await _load_policy(request, login)
    values = form_values(form)
    doc = (
        "mutation($name: String!, $props: ModifyKeyPairResourcePolicyInput!) "
        "{ modify_keypair_resource_policy(name: $name, props: $props) { ok msg } }"
    )
    with refusal() as refused:
        props = _policy_props(values, await slot_types(request, login))
        await mutate(request, login, doc, {"name": policy["name"], "props": props}, "modify_keypair_resource_policy")
    if refused:
        return await _policy_page(request, login, policy, values, refused=refused)
    redirect_done("/admin/policies", "updated", f"Policy {policy['name']}")


@page(admin=True)
async def policy_delete(request: web.Request, login: Login) -> web.StreamResponse:
    """``POST /admin/policies/{name}/delete``: delete a policy no keypair uses."""
    await read_form(request, login)
    policy = await _load_policy(request, login)
    doc = "mutation($name: String!) { delete_keypair_resource_policy(name: $name) { ok msg } }"
    with refusal() as refused:
        await mutate(request, login, doc, {"name": policy["name"]}, "delete_keypair_resource_policy")
    if refused:
        return await _policy_page(request, login, policy, refused=refused)
    redirect_done("/admin/policies", "deleted", f"Policy {policy['name']}")
