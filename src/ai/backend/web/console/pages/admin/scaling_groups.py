"""Admin pages ``/admin/scaling-groups``: scaling groups (scheduler, app proxy) and their associations with
domains and projects."""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any
from urllib.parse import quote

from aiohttp import web

from ...base import ConsoleError, Login, page, read_form
from .common import Refusal, gql, load_one, mutate, redirect_done, refusal, render_page
from .forms import form_checked, form_choice, form_slug, form_text, form_values, json_field

#: The scheduler orders and agent-selection strategies the manager implements (it checks them again).
SCHEDULERS = ("fifo", "lifo", "drf")


STRATEGIES = ("dispersed", "concentrated")


STRATEGY_KEY = "agent_selection_strategy"


SGROUP_FIELDS = (
    "name description is_active is_public created_at driver scheduler scheduler_opts use_host_network "
    "wsproxy_addr wsproxy_api_token"
)


def _sgroup_row(s: dict[str, Any]) -> dict[str, Any]:
    opts = json_field(s.get("scheduler_opts"))
    token = s.pop("wsproxy_api_token", None)  # a credential: the pages only say whether one is set
    return {**s, "scheduler_opts": opts, "strategy": opts.get(STRATEGY_KEY, "dispersed"), "has_token": bool(token)}


@page(admin=True)
async def sgroups(request: web.Request, login: Login) -> web.StreamResponse:
    """``GET /admin/scaling-groups``: scaling groups with their domains, projects and agents."""
    return await _sgroups_page(request, login)


async def _sgroups_page(
    request: web.Request, login: Login, form: Mapping[str, str] | None = None, *, refused: Refusal | None = None
) -> web.Response:
    data = await gql(
        request,
        login,
        "query { scaling_groups { " + SGROUP_FIELDS + " } domains { name scaling_groups } "
        'groups { id name domain_name scaling_groups } agents(status: "ALIVE") { id scaling_group } }',
    )
    rows = []
    for s in data["scaling_groups"]:
        row = _sgroup_row(dict(s))
        row["domains"] = [d["name"] for d in data["domains"] if s["name"] in d["scaling_groups"]]
        row["projects"] = [g for g in data["groups"] if s["name"] in g["scaling_groups"]]
        row["agents"] = [a["id"] for a in data["agents"] if a["scaling_group"] == s["name"]]
        rows.append(row)
    return render_page(
        request,
        login,
        "admin/sgroups.html",
        "scaling-groups",
        refused=refused,
        rows=rows,
        form=form or {"scheduler": "fifo", "strategy": "dispersed", "is_active": "on", "is_public": "on"},
        schedulers=SCHEDULERS,
        strategies=STRATEGIES,
    )


def _sgroup_props(values: Mapping[str, str], opts: Mapping[str, Any]) -> dict[str, Any]:
    props: dict[str, Any] = {
        "description": form_text(values, "description", "Description", max_len=500),
        "scheduler": form_choice(values, "scheduler", "Scheduler", SCHEDULERS),
        "scheduler_opts": {**opts, STRATEGY_KEY: form_choice(values, "strategy", "Agent selection", STRATEGIES)},
        "is_active": form_checked(values, "is_active"),
        "is_public": form_checked(values, "is_public"),
        "use_host_network": form_checked(values, "use_host_network"),
        "wsproxy_addr": form_text(values, "wsproxy_addr", "App proxy address", max_len=1024),
    }
    if props["wsproxy_addr"] and not props["wsproxy_addr"].startswith(("http://", "https://")):
        raise ConsoleError(400, "Invalid form", "The app proxy address must be an http:// or https:// URL.")
    token = form_text(values, "wsproxy_api_token", "App proxy token", max_len=256)
    if token:
        props["wsproxy_api_token"] = token
    elif form_checked(values, "clear_token"):
        props["wsproxy_api_token"] = ""
    return props


@page(admin=True)
async def sgroup_create(request: web.Request, login: Login) -> web.StreamResponse:
    """``POST /admin/scaling-groups``: a new scaling group (static driver: agents join by heartbeat)."""
    form = await read_form(request, login)
    values = form_values(form)
    doc = (
        "mutation($name: String!, $props: ScalingGroupInput!) { create_scaling_group(name: $name, props: $props) "
        "{ ok msg } }"
    )
    with refusal() as refused:
        name = form_slug(values, "name", "Scaling group name")
        props = {**_sgroup_props(values, {}), "driver": "static"}
        if not props["wsproxy_addr"]:
            props["wsproxy_addr"] = None
        await mutate(request, login, doc, {"name": name, "props": props}, "create_scaling_group")
    if refused:
        values.pop("wsproxy_api_token", None)
        return await _sgroups_page(request, login, values, refused=refused)
    redirect_done(f"/admin/scaling-groups/{quote(name)}", "created", f"Scaling group {name}")


async def _load_sgroup(request: web.Request, login: Login) -> dict[str, Any]:
    name = request.match_info["name"]
    doc = "query($name: String) { scaling_group(name: $name) { " + SGROUP_FIELDS + " } }"
    missing = ("No such scaling group", f"There is no scaling group named {name!r}.")
    return _sgroup_row(await load_one(request, login, doc, {"name": name}, "scaling_group", missing))


@page(admin=True)
async def sgroup_detail(request: web.Request, login: Login) -> web.StreamResponse:
    """``GET /admin/scaling-groups/{name}``: the edit form and the domain and project associations."""
    return await _sgroup_page(request, login, await _load_sgroup(request, login))


async def _sgroup_page(
    request: web.Request,
    login: Login,
    sgroup: dict[str, Any],
    form: Mapping[str, str] | None = None,
    *,
    refused: Refusal | None = None,
) -> web.Response:
    data = await gql(
        request,
        login,
        "query { domains { name is_active scaling_groups } groups { id name domain_name is_active scaling_groups } }",
    )
    if form is None:
        form = {
            "description": sgroup["description"] or "",
            "scheduler": sgroup["scheduler"],
            "strategy": sgroup["strategy"],
            "is_active": "on" if sgroup["is_active"] else "",
            "is_public": "on" if sgroup["is_public"] else "",
            "use_host_network": "on" if sgroup["use_host_network"] else "",
            "wsproxy_addr": sgroup["wsproxy_addr"] or "",
        }
    return render_page(
        request,
        login,
        "admin/sgroup_detail.html",
        "scaling-groups",
        refused=refused,
        sgroup=sgroup,
        form=form,
        domains=data["domains"],
        groups=data["groups"],
        schedulers=SCHEDULERS,
        strategies=STRATEGIES,
    )


@page(admin=True)
async def sgroup_update(request: web.Request, login: Login) -> web.StreamResponse:
    """``POST /admin/scaling-groups/{name}``: change a scaling group's scheduling and app proxy."""
    form = await read_form(request, login)
    sgroup = await _load_sgroup(request, login)
    values = form_values(form)
    doc = (
        "mutation($name: String!, $props: ModifyScalingGroupInput!) "
        "{ modify_scaling_group(name: $name, props: $props) { ok msg } }"
    )
    with refusal() as refused:
        props = _sgroup_props(values, sgroup["scheduler_opts"])
        await mutate(request, login, doc, {"name": sgroup["name"], "props": props}, "modify_scaling_group")
    if refused:
        values.pop("wsproxy_api_token", None)
        return await _sgroup_page(request, login, sgroup, values, refused=refused)
    redirect_done(f"/admin/scaling-groups/{quote(sgroup['name'])}", "updated", f"Scaling group {sgroup['name']}")


@page(admin=True)
async def sgroup_associate(request: web.Request, login: Login) -> web.StreamResponse:
    """``POST /admin/scaling-groups/{name}/associations``: associate with (or remove from) a domain or project."""
    form = await read_form(request, login)
    sgroup = await _load_sgroup(request, login)
    with refusal() as refused:
        kind = form_choice(form, "kind", "Kind", ("domain", "project"))
        op = form_choice(form, "op", "Action", ("add", "remove"))
        target = form_text(form, "target", "Domain or project", required=True, max_len=64)
        verb = "associate" if op == "add" else "disassociate"
        if kind == "domain":
            field = f"{verb}_scaling_group_with_domain"
            doc = f"mutation($sg: String!, $t: String!) {{ {field}(scaling_group: $sg, domain: $t) {{ ok msg }} }}"
        else:
            field = f"{verb}_scaling_group_with_user_group"
            doc = f"mutation($sg: String!, $t: String!) {{ {field}(scaling_group: $sg, user_group: $t) {{ ok msg }} }}"
        await mutate(request, login, doc, {"sg": sgroup["name"], "t": target}, field)
    if refused:
        return await _sgroup_page(request, login, sgroup, refused=refused)
    label = form_text(form, "label", "Label", max_len=200) or target
    redirect_done(
        f"/admin/scaling-groups/{quote(sgroup['name'])}",
        "associated" if op == "add" else "disassociated",
        f"{sgroup['name']} and {kind} {label}",
    )


@page(admin=True)
async def sgroup_delete(request: web.Request, login: Login) -> web.StreamResponse:
    """``POST /admin/scaling-groups/{name}/delete``: delete a scaling group without agents or sessions."""
    await read_form(request, login)
    sgroup = await _load_sgroup(request, login)
    doc = "mutation($name: String!) { delete_scaling_group(name: $name) { ok msg } }"
    with refusal() as refused:
        await mutate(request, login, doc, {"name": sgroup["name"]}, "delete_scaling_group")
    if refused:
        return await _sgroup_page(request, login, sgroup, refused=refused)
    redirect_done("/admin/scaling-groups", "deleted", f"Scaling group {sgroup['name']}")
