"""A session's page: the page and its live fragment (status, resources, kernels, usage, apps), the container
log, and the actions on it (terminate, rename, open an app)."""

from __future__ import annotations

from typing import Any

from aiohttp import web

from ...base import ConsoleError, Login, ManagerError, api, form_str, page, read_form, read_json, render
from .common import DETAIL_QUERY, NAME_RE, gql_json, load_session, owner_params, safe_back, session_view

#: Apps opened in a browser tab through the app proxy (the others are TCP: sshd, vscode-desktop...).
HTTP_PROTOCOLS = frozenset({"http", "preopen"})


def _apps(item: dict[str, Any]) -> list[dict[str, Any]]:
    """The session's apps (service ports) as the page lists them: name, protocol, whether a browser opens it."""
    out = []
    for app in gql_json(item.get("service_ports")) or []:
        if not isinstance(app, dict) or not app.get("name"):
            continue
        protocol = str(app.get("protocol") or "tcp")
        out.append({"name": str(app["name"]), "protocol": protocol, "browser": protocol in HTTP_PROTOCOLS})
    return sorted(out, key=lambda a: a["name"])


def _usage(item: dict[str, Any]) -> list[tuple[str, str]]:
    """The main kernel's latest stats as (label, value) rows."""
    from ...filters import duration, human_bytes

    def n(key: str) -> int:
        try:
            return int(item.get(key) or 0)
        except (TypeError, ValueError):
            return 0

    rows = [
        ("CPU time", f"{n('cpu_used') / 1000:.1f}s" if n("cpu_used") < 60_000 else duration(n("cpu_used") / 1000)),
        ("Average CPU use", f"{float(item.get('cpu_using') or 0):.1f} % of one core"),
        ("Memory now", human_bytes(n("mem_cur_bytes"))),
        ("Memory peak", human_bytes(n("mem_max_bytes"))),
        ("Network received / sent", f"{human_bytes(n('net_rx_bytes'))} / {human_bytes(n('net_tx_bytes'))}"),
        ("Disk read / written", f"{human_bytes(n('io_read_bytes'))} / {human_bytes(n('io_write_bytes'))}"),
    ]
    if n("io_max_scratch_size"):
        rows.append(
            ("Scratch disk", f"{human_bytes(n('io_cur_scratch_size'))} of {human_bytes(n('io_max_scratch_size'))}")
        )
    return rows


async def _detail_context(request: web.Request, login: Login) -> dict[str, Any]:
    found = await load_session(request, login, request.match_info["id"], DETAIL_QUERY)
    s = session_view(found)
    history: dict[str, Any] = {}
    try:
        answer = await api(request, login).call(
            "GET", f"/session/{s['id']}/status-history", params=owner_params(login, s) or None
        )
        history = (answer or {}).get("result") or {}
    except ManagerError:
        history = {}  # the page shows what it has; the times are extras
    kernels = []
    for k in found.get("containers") or []:
        kernels.append({**k, "slots": gql_json(k.get("occupied_slots")) or {}})
    return {
        "s": s,
        "history": history,
        "started_at": history.get("RUNNING"),
        "kernels": kernels,
        "apps": _apps(found),
        "usage": _usage(found),
        "own": s.get("access_key") == login.access_key,
    }


@page()
async def detail(request: web.Request, login: Login) -> web.StreamResponse:
    """``GET /sessions/{id}``: the session's page."""
    return render(request, login, "sessions/detail.html", **await _detail_context(request, login))


@page()
async def detail_live(request: web.Request, login: Login) -> web.StreamResponse:
    """``GET /sessions/{id}/live``: the live part of the session's page (status, resources, usage, apps)."""
    return render(request, login, "sessions/_live.html", **await _detail_context(request, login))


@page()
async def logs(request: web.Request, login: Login) -> web.StreamResponse:
    """``GET /sessions/{id}/logs``: the container's log as a fragment."""
    s = await load_session(request, login, request.match_info["id"])
    try:
        answer = await api(request, login).call(
            "GET", f"/session/{s['id']}/logs", params=owner_params(login, s) or None
        )
        text = str(((answer or {}).get("result") or {}).get("logs") or "")
        problem = ""
    except ManagerError as e:
        if e.status >= 500 and e.status != 502:
            raise
        text, problem = "", f"{e.title}" + (f": {e.detail}" if e.detail else "")
    return render(request, login, "sessions/_logs.html", logs=text, problem=problem, s=s)


@page()
async def terminate(request: web.Request, login: Login) -> web.StreamResponse:
    """``POST /sessions/{id}/terminate``: end the session (a queued one is cancelled), then go back."""
    form = await read_form(request, login)
    s = await load_session(request, login, request.match_info["id"])
    await api(request, login).call("DELETE", f"/session/{s['id']}", params=owner_params(login, s) or None)
    raise web.HTTPSeeOther(safe_back(form_str(form, "back"), f"/sessions/{s['id']}"))


@page()
async def rename(request: web.Request, login: Login) -> web.StreamResponse:
    """``POST /sessions/{id}/rename``: give an active session a new name."""
    form = await read_form(request, login)
    s = await load_session(request, login, request.match_info["id"])
    name = form_str(form, "name", required=True, max_len=64)
    if not NAME_RE.match(name) or name == "from-template":
        raise ConsoleError(
            400,
            "Invalid session name",
            f"{name!r}: use 4–64 letters, digits, '-', '_' or '.', starting and ending with a letter or digit.",
        )
    params = owner_params(login, s)
    await api(request, login).call("POST", f"/session/{s['id']}/rename", {"name": name}, params=params or None)
    raise web.HTTPSeeOther(f"/sessions/{s['id']}")


@page()
async def open_app(request: web.Request, login: Login) -> web.StreamResponse:
    """``POST /sessions/{id}/apps/{app}``: start the app and answer ``{"url"}`` (the app proxy's one-use link)."""
    await read_json(request, login)
    s = await load_session(request, login, request.match_info["id"])
    app = request.match_info["app"]
    params = owner_params(login, s)
    try:
        answer = await api(request, login).call(
            "POST", f"/session/{s['id']}/start-service", {"app": app}, params=params or None, timeout=120
        )
    except ManagerError as e:
        status = e.status if 400 <= e.status < 500 else 502
        return web.json_response({"title": e.title, "detail": e.detail}, status=status)
    url = str((answer or {}).get("url") or "")
    if not url.startswith(("http://", "https://")):
        return web.json_response(
            {"title": "No app link", "detail": "The manager answered no app proxy link."}, status=502
        )
    return web.json_response({"url": url})
