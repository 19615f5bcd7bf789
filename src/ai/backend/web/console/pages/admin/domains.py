"""Admin pages ``/admin/domains``: list, create, edit and deactivate domains."""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any
from urllib.parse import quote

from aiohttp import web

from ...base import Login, page, read_form
from .common import Refusal, gql, load_one, mutate, redirect_done, refusal, render_page
from .forms import (
    form_checked,
    form_names,
    form_slots,
    form_slug,
    form_text,
    form_values,
    json_field,
    slot_fields,
    slot_types,
)

DOMAIN_FIELDS = (
    "name description is_active created_at total_resource_slots allowed_vfolder_hosts allowed_docker_registries "
    "scaling_groups"
)


def _domain_row(d: dict[str, Any]) -> dict[str, Any]:
    return {**d, "total_resource_slots": json_field(d.get("total_resource_slots"))}


@page(admin=True)
async def domains(request: web.Request, login: Login) -> web.StreamResponse:
    """``GET /admin/domains``: all domains (a domain admin: its own), and the create form."""
    return await _domains_page(request, login)


async def _domains_page(
    request: web.Request, login: Login, form: Mapping[str, str] | None = None, *, refused: Refusal | None = None
) -> web.Response:
    if login.is_superadmin:
        rows = (await gql(request, login, "query { domains { " + DOMAIN_FIELDS + " } }"))["domains"]
    else:
        own = (await gql(request, login, "query { domain { " + DOMAIN_FIELDS + " } }")).get("domain")
        rows = [own] if own else []
    types = await slot_types(request, login)
    return render_page(
        request,
        login,
        "admin/domains.html",
        "domains",
        refused=refused,
        rows=[_domain_row(d) for d in rows],
        form=form or {},
        slot_fields=slot_fields(types, {}, form),
    )


def _domain_props(values: Mapping[str, str], types: Mapping[str, str]) -> dict[str, Any]:
    return {
        "description": form_text(values, "description", "Description", max_len=500),
        "total_resource_slots": form_slots(values, types),
        "allowed_vfolder_hosts": form_names(values, "allowed_vfolder_hosts", "Storage hosts"),
        "allowed_docker_registries": form_names(values, "allowed_docker_registries", "Docker registries"),
    }


@page(admin=True)
async def domain_create(request: web.Request, login: Login) -> web.StreamResponse:
    """``POST /admin/domains``: a new domain (superadmins)."""
    form = await read_form(request, login)
    values = form_values(form)
    doc = "mutation($name: String!, $props: DomainInput!) { create_domain(name: $name, props: $props) { ok msg } }"
    with refusal() as refused:
        name = form_slug(values, "name", "Domain name")
        props = {**_domain_props(values, await slot_types(request, login)), "is_active": True}
        await mutate(request, login, doc, {"name": name, "props": props}, "create_domain")
    if refused:
        return await _domains_page(request, login, values, refused=refused)
    redirect_done(f"/admin/domains/{quote(name)}", "created", f"Domain {name}")


async def _load_domain(request: web.Request, login: Login) -> dict[str, Any]:
    name = request.match_info["name"]
    doc = "query($name: String) { domain(name: $name) { " + DOMAIN_FIELDS + " } }"
    missing = ("No such domain", f"There is no domain named {name!r}.")
    return _domain_row(await load_one(request, login, doc, {"name": name}, "domain", missing))


@page(admin=True)
async def domain_detail(request: web.Request, login: Login) -> web.StreamResponse:
    """``GET /admin/domains/{name}``: a domain's edit form."""
    return await _domain_page(request, login, await _load_domain(request, login))


async def _domain_page(
    request: web.Request,
    login: Login,
    domain: dict[str, Any],
    form: Mapping[str, str] | None = None,
    *,
    refused: Refusal | None = None,
) -> web.Response:
    slots = slot_fields(await slot_types(request, login), domain["total_resource_slots"], form)
    if form is None:
        form = {
            "name": domain["name"],
            "description": domain["description"] or "",
            "is_active": "on" if domain["is_active"] else "",
            "allowed_vfolder_hosts": ", ".join(domain["allowed_vfolder_hosts"]),
            "allowed_docker_registries": ", ".join(domain["allowed_docker_registries"]),
        }
    return render_page(
        request,
        login,
        "admin/domain_detail.html",
        "domains",
        refused=refused,
        domain=domain,
        form=form,
        slot_fields=slots,
    )


@page(admin=True)
async def domain_update(request: web.Request, login: Login) -> web.StreamResponse:
    """``POST /admin/domains/{name}``: rename a domain or change its limits, hosts, registries or status."""
    form = await read_form(request, login)
    domain = await _load_domain(request, login)
    values = form_values(form)
    doc = (
        "mutation($name: String!, $props: ModifyDomainInput!) { modify_domain(name: $name, props: $props) { ok msg } }"
    )
    with refusal() as refused:
        new_name = form_slug(values, "name", "Domain name")
        props = {
            **_domain_props(values, await slot_types(request, login)),
            "is_active": form_checked(values, "is_active"),
        }
        if new_name != domain["name"]:
            props["name"] = new_name
        await mutate(request, login, doc, {"name": domain["name"], "props": props}, "modify_domain")
    if refused:
        return await _domain_page(request, login, domain, values, refused=refused)
    redirect_done(f"/admin/domains/{quote(new_name)}", "updated", f"Domain {new_name}")


@page(admin=True)
async def domain_delete(request: web.Request, login: Login) -> web.StreamResponse:
    """``POST /admin/domains/{name}/delete``: deactivate a domain (the manager keeps its data)."""
    await read_form(request, login)
    domain = await _load_domain(request, login)
    doc = "mutation($name: String!) { delete_domain(name: $name) { ok msg } }"
    with refusal() as refused:
        await mutate(request, login, doc, {"name": domain["name"]}, "delete_domain")
    if refused:
        return await _domain_page(request, login, domain, refused=refused)
    redirect_done("/admin/domains", "deactivated", f"Domain {domain['name']}")
