"""``System``: the server's version information (``GET /``)."""

from __future__ import annotations

from typing import Any

from ..request import Request
from .base import BaseFunction, api_function

__all__ = ("System",)


class System(BaseFunction):
    """Queries about the API server itself."""

    @api_function
    @classmethod
    async def get_versions(cls) -> dict[str, Any]:
        """Return the server's version object, e.g. ``{"version": "v6.20220615", "manager": ...}``."""
        async with Request("GET", "/").fetch() as resp:
            data = await resp.json()
            return dict(data) if isinstance(data, dict) else {"version": data}

    @api_function
    @classmethod
    async def get_manager_version(cls) -> str:
        """Return the manager's release version."""
        async with Request("GET", "/").fetch() as resp:
            return str((await resp.json()).get("manager", ""))

    @api_function
    @classmethod
    async def get_api_version(cls) -> str:
        """Return the server's API version string."""
        async with Request("GET", "/").fetch() as resp:
            return str((await resp.json())["version"])

    @api_function
    @classmethod
    async def get_cluster_status(cls) -> dict[str, Any]:
        """Return the cluster as the managers see it (``GET /admin/cluster``, superadmins): managers and leader,
        agents, queue depth, storage volumes and versions."""
        async with Request("GET", "/admin/cluster").fetch() as resp:
            data = await resp.json()
            return dict(data) if isinstance(data, dict) else {}
