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
    cards: list[dict[str, Any]] = [
        {
            "label": "Users",
            "count": data["users"]["total_count"],
            "detail": f"{data['inactive_users']['total_count']} inactive",
            "path": "/admin/users",
        },
        {"label": "Keypairs", "count": data["keypairs"]["total_count"], "detail": "", "path": "/admin/keypairs"},
        {
            "label": "Projects",
            "count": len(data["groups"]),
            "detail": f"{sum(1 for g in data['groups'] if g['is_active'])} active",
            "path": "/admin/projects",
        },
    ]
    if login.is_superadmin:
        cards.append(
            {
                "label": "Domains",
                "count": len(data["domains"]),
                "detail": f"{sum(1 for d in data['domains'] if d['is_active'])} active",
                "path": "/admin/domains",
            }
        )
    cards += [
        {
            "label": "Resource policies",
            "count": len(data["keypair_resource_policies"]),
            "detail": "",
            "path": "/admin/policies",
        },
        {"label": "Resource presets", "count": len(data["resource_presets"]), "detail": "", "path": "/admin/presets"},
    ]
    if login.is_superadmin:
        agents = data["agents"]
        cards.append(
            {
                "label": "Agents",
                "count": sum(1 for a in agents if a["status"] == "ALIVE"),
                "detail": f"alive, {sum(1 for a in agents if a['status'] != 'ALIVE')} not",
                "path": "/admin/agents",
            }
        )
    cards.append(
        {
            "label": "Images",
            "count": len(data["images"]),
            "detail": f"{sum(1 for i in data['images'] if i['installed'])} installed",
            "path": "/admin/images",
        }
    )
    if login.is_superadmin:
        cards.append(
            {
                "label": "Scaling groups",
                "count": len(data["scaling_groups"]),
                "detail": f"{sum(1 for s in data['scaling_groups'] if s['is_active'])} active",
                "path": "/admin/scaling-groups",
            }
        )
    return render_page(request, login, "admin/overview.html", "overview", cards=cards)
