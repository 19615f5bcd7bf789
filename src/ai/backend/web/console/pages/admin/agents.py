"""Admin page ``/admin/agents``: agents with their slots, use and state."""

from __future__ import annotations

from typing import Any

from aiohttp import web

from ...base import Login, page
from .common import gql, render_page
from .forms import json_field, slot_order

AGENT_TABS = {"active": "ALIVE,LOST,RESTARTING", "terminated": "TERMINATED"}


@page(admin=True)
async def agents(request: web.Request, login: Login) -> web.StreamResponse:
    """``GET /admin/agents?tab=active|terminated``: agents with their slots, use and state."""
    tab = request.query.get("tab", "active")
    if tab not in AGENT_TABS:
        tab = "active"
    data = await gql(
        request,
        login,
        """query($status: String) {
          agents(status: $status) {
            id status status_changed region scaling_group schedulable available_slots occupied_slots addr
            architecture first_contact lost_at last_heartbeat version cpu_cur_pct mem_cur_bytes
          }
        }""",
        {"status": AGENT_TABS[tab]},
    )
    rows = []
    keys: set[str] = set()
    for a in data["agents"]:
        avail, occ = json_field(a["available_slots"]), json_field(a["occupied_slots"])
        keys.update(avail)
        rows.append({**a, "available": avail, "occupied": occ})
    for row in rows:
        row["slots"] = [_slot_use(k, row["occupied"].get(k, "0"), row["available"].get(k)) for k in slot_order(keys)]
    return render_page(request, login, "admin/agents.html", "agents", rows=rows, slot_names=slot_order(keys), tab=tab)


def _slot_use(name: str, used: Any, capacity: Any) -> dict[str, Any]:
    """One slot of an agent: amounts and the used share (for a ``<meter>``)."""
    try:
        u, c = float(used or 0), float(capacity) if capacity is not None else 0.0
    except (TypeError, ValueError):
        u, c = 0.0, 0.0
    return {"name": name, "used": used or "0", "capacity": capacity, "max": c if c > 0 else 1.0, "value": min(u, c)}
