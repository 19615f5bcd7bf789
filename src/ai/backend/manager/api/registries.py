"""``GET /config/docker-registries``: the Docker registries the manager scans for kernel images.

Superadmins only; the answer is ``{"<registry name>": "<url>"}`` from ``[docker-registries]`` in
``manager.toml`` (credentials are never shown). The ``local`` registry (images imported on the agent
hosts) is not listed: it has no URL.
"""

from __future__ import annotations

from fastapi import APIRouter, Depends, Request

from ai.backend.common.problems import Forbidden

from ..auth import AuthContext
from ..docker_registry import registry_summary
from .deps import auth_required, manager_context

router = APIRouter()


@router.get("/config/docker-registries")
async def docker_registries(request: Request, ctx: AuthContext = Depends(auth_required)) -> dict[str, str]:
    """Registry name -> URL of every configured registry (superadmin only)."""
    if not ctx.is_superadmin:
        raise Forbidden("Only superadmins may list the configured Docker registries.")
    return registry_summary(manager_context(request).config.docker_registries)
