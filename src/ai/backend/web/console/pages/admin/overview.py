"""Admin page ``/admin``: counts of what there is, with links to each section."""

from __future__ import annotations

from typing import Any

from aiohttp import web

from ...base import Login, page
from .common import gql, render_page


@page(admin=True)
async def overview(request: web.Request, login: Login) -> web.StreamResponse:
    """``GET /admin``: counts of what there is, with links."""
    parts = [
        'users: user_list(limit: 1, offset: 0, status: "active,inactive,before-verification") { total_count }',
        'inactive_users: user_list(limit: 1, offset: 0, status: "inactive") { total_count }',
        "keypairs: keypair_list(limit: 1, offset: 0) { total_count }",
        "groups { id is_active }",
        "keypair_resource_policies { name }",
        "resource_presets { name }",
        "images { reference installed }",
    ]
    if login.is_superadmin:
        parts += ["domains { name is_active }", "agents { id status }", "scaling_groups { name is_active }"]
    data = await gql(request, login, "query { " + " ".join(parts) + " }")
    users, inactive = data["users"]["total_count"], data["inactive_users"]["total_count"]
    cards = [
        _card("Users", users, "/admin/users", f"{inactive} inactive"),
        _card("Keypairs", data["keypairs"]["total_count"], "/admin/keypairs"),
        _card("Projects", len(data["groups"]), "/admin/projects", f"{_count(data['groups'], 'is_active')} active"),
    ]
    if login.is_superadmin:
        domains = data["domains"]
        cards.append(_card("Domains", len(domains), "/admin/domains", f"{_count(domains, 'is_active')} active"))
    cards += [
        _card("Resource policies", len(data["keypair_resource_policies"]), "/admin/policies"),
        _card("Resource presets", len(data["resource_presets"]), "/admin/presets"),
    ]
    if login.is_superadmin:
        alive = sum(1 for a in data["agents"] if a["status"] == "ALIVE")
        cards.append(_card("Agents", alive, "/admin/agents", f"alive, {len(data['agents']) - alive} not"))
    images = data["images"]
    cards.append(_card("Images", len(images), "/admin/images", f"{_count(images, 'installed')} installed"))
    if login.is_superadmin:
        sgroups = data["scaling_groups"]
        cards.append(
            _card("Scaling groups", len(sgroups), "/admin/scaling-groups", f"{_count(sgroups, 'is_active')} active")
        )
    return render_page(request, login, "admin/overview.html", "overview", cards=cards)


def _card(label: str, count: int, path: str, detail: str = "") -> dict[str, Any]:
    """One card of the overview: what, how many, a detail line and the section's page."""
    return {"label": label, "count": count, "detail": detail, "path": path}


def _count(rows: list[dict[str, Any]], flag: str) -> int:
    """How many of ``rows`` have ``flag`` set."""
    return sum(1 for r in rows if r[flag])
