"""Shared FastAPI dependencies: the manager context, authentication and reading JSON bodies leniently.

Every dependency is ``async`` on purpose: FastAPI runs plain ``def`` dependencies in a worker thread, a
thread hop on every request.
"""

from __future__ import annotations

import hmac
import json
from typing import Annotated, Any

from fastapi import Depends, Request
from starlette.requests import HTTPConnection

from ai.backend.common.auth import CLUSTER_SECRET_HEADER
from ai.backend.common.problems import AuthorizationFailed, InvalidAPIParameters

from ..auth import AuthContext, authenticate
from ..context import ManagerContext
from ..ratelimit import enforce_keypair_limit
from ..registry import SessionRegistry


def manager_context(conn: HTTPConnection) -> ManagerContext:
    """The manager's shared services (set once by the server's lifespan)."""
    mgr: ManagerContext = conn.app.state.ctx
    return mgr


async def _context(request: Request) -> ManagerContext:
    return manager_context(request)


async def auth_required(request: Request) -> AuthContext:
    """Dependency: the verified caller, or a 401/400 problem."""
    ctx: AuthContext | None = getattr(request.state, "auth", None)
    if ctx is None:
        mgr = manager_context(request)
        ctx = await authenticate(request, mgr)
        request.state.auth = ctx
        mgr.api_usage.count(ctx.access_key)
        await enforce_keypair_limit(
            request.scope.setdefault("state", {}), mgr.rate_limiter, ctx.access_key, ctx.rate_limit
        )
    return ctx


def require_cluster_secret(request: Request) -> None:
    """Refuse a call on the agent-facing API that lacks the cluster secret."""
    given = request.headers.get(CLUSTER_SECRET_HEADER, "")
    if not hmac.compare_digest(given, manager_context(request).config.manager.cluster_secret):
        raise AuthorizationFailed("Bad or missing cluster secret.")


async def registry(request: Request) -> SessionRegistry:
    """Dependency: the session registry."""
    return manager_context(request).registry


async def json_body(request: Request) -> dict[str, Any]:
    """The JSON object body (empty for none); query-string parameters fill in for GET-style calls."""
    raw = await request.body()
    data: Any = {}
    if raw.strip():
        try:
            data = json.loads(raw)
        except (UnicodeDecodeError, json.JSONDecodeError) as e:
            raise InvalidAPIParameters(f"The request body is not valid JSON: {e}.") from None
        except RecursionError:
            raise InvalidAPIParameters("The request body is nested too deeply.") from None
    if not isinstance(data, dict):
        raise InvalidAPIParameters("The request body must be a JSON object.")
    for k, v in request.query_params.items():
        data.setdefault(k, v)
    return data


# The context as a typed dependency for handler signatures: ``async def h(request: Request, ctx: Ctx)``.
Ctx = Annotated[ManagerContext, Depends(_context)]
