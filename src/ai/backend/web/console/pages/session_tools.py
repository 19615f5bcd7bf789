"""Console pages: the code console (``/sessions/{id}/cell``) and the terminal (``/sessions/{id}/terminal``).

Both pages are thin: the handler checks that the session exists *for this login* (the manager's
``GET /session/{id}`` as the logged-in user, so another user's session is the manager's 404 and thus the
console's 404 page) and renders its name and status; the browser then talks to the manager's WebSocket
streams through the webserver's ``/func/`` proxy:

* the cell (``static/js/cell.js``) uses ``/stream/session/{id}/execute`` in query mode: one socket per run,
  every Execution Result Object arriving as it is produced (``continued`` segments included), the input of
  ``input()`` sent back on ``waiting-input``, and ``POST /session/{id}/interrupt`` to stop a run;
* the terminal (``static/js/terminal.js``) uses ``/stream/session/{id}/pty`` with xterm.js.

The session id goes to the scripts in ``data-*`` attributes (the CSP forbids inline scripts).
"""

from __future__ import annotations

from typing import Any
from urllib.parse import quote

from aiohttp import web

from ..base import ConsoleError, Login, api, page, render

__all__ = ["register"]

#: Statuses in which the main kernel answers: code can run and a terminal can open.
RUNNING = "RUNNING"
#: Statuses from which the session may still become RUNNING (the page says "wait", not "ended").
STARTING = frozenset({"PENDING", "SCHEDULED", "PREPARING", "PULLING", "RESTARTING"})
#: The longest session reference we pass on (names are far shorter; ids are UUIDs).
MAX_REF = 128


async def _session(request: web.Request, login: Login) -> dict[str, Any]:
    """The manager's info document of the session named in the path, as this login sees it.

    A session of another user (or none at all) is the manager's 404, which ``@page`` renders as the 404 page.
    """
    ref = request.match_info["id"]
    if not ref or len(ref) > MAX_REF or any(c.isspace() or not c.isprintable() for c in ref):
        raise ConsoleError(404, "Session not found", "There is no session with that id.")
    info = await api(request, login).get(f"/session/{quote(ref, safe='')}")
    if not isinstance(info, dict) or not info.get("sessionId"):
        raise ConsoleError(404, "Session not found", f"There is no session {ref!r}.")
    return info


def _context(info: dict[str, Any]) -> dict[str, Any]:
    """What both templates show about the session."""
    status = str(info.get("status") or "UNKNOWN")
    return {
        "session_id": str(info["sessionId"]),
        "session_name": str(info.get("sessionName") or info["sessionId"]),
        "session_status": status,
        "status_info": str(info.get("statusInfo") or ""),
        "image": str(info.get("image") or ""),
        "running": status == RUNNING,
        "starting": status in STARTING,
    }


@page()
async def cell_page(request: web.Request, login: Login) -> web.StreamResponse:
    """``GET /sessions/{id}/cell``: a code console for the session's main kernel (query mode)."""
    info = await _session(request, login)
    return render(request, login, "session_tools/cell.html", **_context(info))


@page()
async def terminal_page(request: web.Request, login: Login) -> web.StreamResponse:
    """``GET /sessions/{id}/terminal``: a terminal (login shell) in the session's main container."""
    info = await _session(request, login)
    return render(request, login, "session_tools/terminal.html", **_context(info))


def register(app: web.Application) -> None:
    """Add this area's routes to ``app``."""
    app.router.add_get("/sessions/{id}/cell", cell_page)
    app.router.add_get("/sessions/{id}/terminal", terminal_page)
