"""Console pages: the user's usage at ``/usage``.

Bar charts of the sessions started and the CPU-, memory- and accelerator-hours held per day over the last
30 days (``?view=week``: per week over the last 12 weeks), from the manager's ``GET /resource/usage-stats``,
and the keypair's current allocation against its limits from ``POST /resource/check-presets``.

The charts are SVG drawn here (ADR 0013: no chart library): each bar carries a ``<title>`` with its value,
and a table under "Show as table" holds the same numbers for screen readers and copying.
"""

from __future__ import annotations

import asyncio
import math
from dataclasses import dataclass
from decimal import Decimal, InvalidOperation
from typing import Any

from aiohttp import web

from ..base import ConsoleError, Login, ManagerAPI, ManagerError, api, page, render

__all__ = ["chart", "nice_ceiling", "register"]

#: ``?view=`` → (bin width asked of the manager, days covered, what the page calls it).
VIEWS = {
    "day": ("day", 30, "Daily, last 30 days"),
    "week": ("week", 84, "Weekly, last 12 weeks"),
}
#: The charts: (key in a bin of the manager's answer, title, unit for one and for many).
SERIES = (
    ("sessions", "Sessions started", "session", "sessions"),
    ("cpu_hours", "CPU-hours", "CPU-hour", "CPU-hours"),
    ("mem_gib_hours", "Memory GiB-hours", "GiB-hour", "GiB-hours"),
    ("accelerator_hours", "Accelerator-hours", "accelerator-hour", "accelerator-hours"),
)

# The SVG's coordinate system (it scales to the card's width).
WIDTH, HEIGHT = 640, 200
LEFT, RIGHT, TOP, BOTTOM = 52, 8, 10, 26
MAX_X_LABELS = 7

GROUPS_QUERY = "query { user { groups { name } } }"


def num(value: Any) -> str:
    """A number as the page shows it: at most 4 decimals, no trailing zeros (``4.0`` → ``4``)."""
    try:
        v = float(value)
    except (TypeError, ValueError):
        return "–"
    text = f"{v:.4f}".rstrip("0").rstrip(".")
    return "0" if text in ("-0", "") else text


def nice_ceiling(value: float) -> float:
    """The smallest of 1, 2, 2.5, 5 times a power of ten that is at least ``value`` (1 for nothing)."""
    if not value > 0 or math.isinf(value):
        return 1.0
    power = 10 ** math.floor(math.log10(value))
    for step in (1, 2, 2.5, 5, 10):
        if step * power >= value * (1 - 1e-9):
            return float(step * power)
    return float(10 * power)


@dataclass(frozen=True)
class Bar:
    x: float
    y: float
    width: float
    height: float
    title: str


def _bin_label(start: str, width: str) -> str:
    """``2026-12-07`` for a day; ``week of 2026-11-30`` for a week."""
    day = start[:10]
    return day if width == "day" else f"week of {day}"


def chart(bins: list[dict[str, Any]], key: str, one: str, many: str, width: str) -> dict[str, Any]:
    """The geometry of one bar chart of ``key`` over ``bins`` (the manager's), ready for the template."""
    values = [float(b.get(key) or 0) for b in bins]
    top = nice_ceiling(max(values, default=0.0))
    plot_w, plot_h = WIDTH - LEFT - RIGHT, HEIGHT - TOP - BOTTOM
    slot = plot_w / max(len(bins), 1)
    bars = []
    for i, (b, v) in enumerate(zip(bins, values, strict=True)):
        h = plot_h * v / top
        unit = one if num(v) == "1" else many
        bars.append(
            Bar(
                x=round(LEFT + i * slot + slot * 0.1, 2),
                y=round(TOP + plot_h - h, 2),
                width=round(slot * 0.8, 2),
                height=round(h, 2),
                title=f"{_bin_label(str(b.get('start', '')), width)}: {num(v)} {unit}",
            )
        )
    # Every few bins counted back from the last, so that today (or this week) is always labelled.
    every = max(1, math.ceil(len(bins) / MAX_X_LABELS))
    x_labels = [
        {"x": round(LEFT + i * slot + slot / 2, 2), "text": str(b.get("start", ""))[5:10]}
        for i, b in enumerate(bins)
        if (len(bins) - 1 - i) % every == 0
    ]
    y_ticks = [{"y": round(TOP + plot_h - plot_h * f, 2), "text": num(top * f)} for f in (0, 0.5, 1)]
    return {
        "bars": bars,
        "x_labels": x_labels,
        "y_ticks": y_ticks,
        "width": WIDTH,
        "height": HEIGHT,
        "left": LEFT,
        "right": WIDTH - RIGHT,
        "base": TOP + plot_h,
        "total": num(sum(values)),
        "unit_total": one if num(sum(values)) == "1" else many,
    }


def _amount(value: Any) -> dict[str, Any]:
    """A slot amount of check-presets as ``{"value": Decimal | None, "infinite": bool}``."""
    try:
        d = Decimal(str(value))
    except (InvalidOperation, ValueError):
        return {"value": None, "infinite": False, "raw": str(value)}
    return {"value": d, "infinite": d.is_infinite(), "raw": str(value)}


def allocation_rows(answer: dict[str, Any]) -> list[dict[str, Any]]:
    """One row per slot: the keypair's limit, what it uses, what remains and the scaling groups' free room."""
    limits = answer.get("keypair_limits") or {}
    using = answer.get("keypair_using") or {}
    remaining = answer.get("keypair_remaining") or {}
    free = answer.get("scaling_group_remaining") or {}
    rows = []
    for name in limits:
        limit, used = _amount(limits.get(name)), _amount(using.get(name, 0))
        percent = None
        if limit["value"] is not None and not limit["infinite"] and limit["value"] > 0 and used["value"] is not None:
            percent = min(100, int(used["value"] * 100 / limit["value"]))
        rows.append(
            {
                "slot": name,
                "limit": limit,
                "using": used,
                "remaining": _amount(remaining.get(name, 0)),
                "free": _amount(free.get(name, 0)),
                "percent": percent,
            }
        )
    return rows


async def _allocation(m: ManagerAPI, wanted: str | None) -> dict[str, Any]:
    """The allocation summary for one of the user's projects (the asked one, else ``default`` or the first)."""
    data = await m.graphql(GROUPS_QUERY)
    groups = [str(g.get("name", "")) for g in (data.get("user") or {}).get("groups") or []]
    if not groups:
        return {"groups": [], "group": None, "rows": [], "error": "You are not a member of any project."}
    if wanted is not None and wanted not in groups:
        raise ConsoleError(400, "Unknown project", f"You are not a member of a project named {wanted!r}.")
    group = wanted or ("default" if "default" in groups else groups[0])
    try:
        answer = await m.post("/resource/check-presets", {"group": group})
    except ManagerError as e:
        if e.status >= 500:
            raise
        # The charts are still worth showing when the allocation cannot be read.
        return {"groups": groups, "group": group, "rows": [], "error": e.detail or e.title}
    return {"groups": groups, "group": group, "rows": allocation_rows(answer or {}), "error": ""}


@page()
async def usage_page(request: web.Request, login: Login) -> web.StreamResponse:
    """``GET /usage[?view=day|week][&group=<project>]``: charts, their table and the allocation summary."""
    view = request.query.get("view", "day")
    if view not in VIEWS:
        raise ConsoleError(400, "Unknown view", "The view must be 'day' or 'week'.")
    width, days, view_title = VIEWS[view]
    group = request.query.get("group") or None
    m = api(request, login)
    stats, allocation = await asyncio.gather(
        m.get("/resource/usage-stats", days=days, bin=width), _allocation(m, group)
    )
    bins = list((stats or {}).get("bins") or [])
    charts = [{"key": key, "title": title, **chart(bins, key, one, many, width)} for key, title, one, many in SERIES]
    return render(
        request,
        login,
        "usage/index.html",
        view=view,
        views=VIEWS,
        view_title=view_title,
        stats=stats,
        bins=bins,
        bin_width=width,
        charts=charts,
        series=SERIES,
        allocation=allocation,
        num=num,
    )


def register(app: web.Application) -> None:
    """Add this area's routes to ``app``."""
    app.router.add_get("/usage", usage_page)
