"""The console's pages, one module per area; each has ``register(app)`` adding its routes."""

from __future__ import annotations

from . import admin, auth, folders, session_tools, sessions, settings, usage

#: Registered in this order (the fallback 404 is added after all of them).
PAGE_MODULES = [auth, sessions, session_tools, folders, settings, usage, admin]
