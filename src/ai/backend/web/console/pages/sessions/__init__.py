"""Console pages: the sessions list, the session launcher and a session's page (ADR 0013).

Routes:

* ``GET /sessions``: one page (``?page=``, ``?size=``, at most 100) of the caller's sessions, on the tabs
  ``running`` (not ended) and ``finished``; admins may add ``?scope=all`` for every session they may see.
  One GraphQL request gives the rows and both tab counts. With ``HX-Request`` only the table fragment is
  answered (``sessions.js`` swaps it in when the event stream says a session appeared or ended).
* ``GET /sessions/{id}/row``: one table row (a status change of a listed session).
* ``GET|POST /sessions/new``: the launcher; the POST checks every field here (a 400 re-renders the form
  with the message, nothing is created), then asks the manager (``POST /session``, ``enqueueOnly``) and
  redirects to the new session's page; a refusal of the manager re-renders the form with its message and
  status.
* ``GET /sessions/{id}``: the session's page; ``/live`` (its status, resources, kernels, usage and apps),
  ``/logs`` (the container log) are its fragments, refreshed by ``sessions.js`` on the session's events or
  by their buttons.
* ``POST /sessions/{id}/terminate``, ``POST /sessions/{id}/rename``: forms with the CSRF token.
* ``POST /sessions/{id}/apps/{app}``: starts an app (``start-service``) and answers ``{"url"}`` for the
  browser to open (JSON with the ``X-CSRF-Token`` header).
* ``GET /sessions/{id}/ssh-key``: the session's SSH private key (``/home/work/id_container``) as a file.

A session the caller may not see is the manager's answer (GraphQL ``null``, REST 404): the 404 page.

The modules: ``common`` (queries and helpers every page uses), ``listing``, ``launcher``, ``detail`` (the
session's page, its fragments and actions) and ``ssh_key``.
"""

from __future__ import annotations

from aiohttp import web

from .detail import detail, detail_live, logs, open_app, rename, terminate
from .launcher import launch, launcher
from .listing import session_row, sessions
from .ssh_key import ssh_key

__all__ = ["register"]


def register(app: web.Application) -> None:
    """Add this area's routes to ``app`` (the fixed paths before ``/sessions/{id}``)."""
    app.router.add_get("/sessions", sessions)
    app.router.add_get("/sessions/new", launcher)
    app.router.add_post("/sessions/new", launch)
    app.router.add_get("/sessions/{id}", detail)
    app.router.add_get("/sessions/{id}/row", session_row)
    app.router.add_get("/sessions/{id}/live", detail_live)
    app.router.add_get("/sessions/{id}/logs", logs)
    app.router.add_get("/sessions/{id}/ssh-key", ssh_key)
    app.router.add_post("/sessions/{id}/terminate", terminate)
    app.router.add_post("/sessions/{id}/rename", rename)
    app.router.add_post("/sessions/{id}/apps/{app}", open_app)
