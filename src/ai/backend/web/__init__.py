"""The webserver: browser-style cookie logins and the ``/func/`` proxy that re-signs calls for the manager.

A process of its own (``python -m ai.backend.web.server -f web.toml``). A user logs in with a password
(``POST /server/login``, checked by the manager's ``POST /auth/authorize``); the keypair the manager hands
back stays in the server-side login session, and every ``/func/<path>`` call (REST, GraphQL, SSE,
WebSocket) is signed with it for the manager's own URL. See ``docs/adr/0010-webserver.md``.
"""
