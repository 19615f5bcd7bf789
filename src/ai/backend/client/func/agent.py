"""``Agent``: the agents (compute nodes) of the cluster; superadmins only."""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

from ..types import PaginatedResult
from ._gql import paginated_query, query_field
from .base import BaseFunction, api_function

__all__ = ("AGENT_STATUSES", "Agent", "DEFAULT_FIELDS", "DETAIL_FIELDS", "JSON_FIELDS")

AGENT_STATUSES: tuple[str, ...] = ("ALIVE", "LOST", "RESTARTING", "TERMINATED")
"""The statuses an agent may have."""
DEFAULT_FIELDS: tuple[str, ...] = ("id", "status", "scaling_group", "available_slots", "occupied_slots")
"""The fields listed unless told otherwise."""
DETAIL_FIELDS: tuple[str, ...] = (
    "id",
    "status",
    "scaling_group",
    "addr",
    "region",
    "first_contact",
    "cpu_cur_pct",
    "mem_cur_bytes",
    "available_slots",
    "occupied_slots",
)
"""The fields :meth:`Agent.detail` fetches unless told otherwise."""
JSON_FIELDS: tuple[str, ...] = ("available_slots", "occupied_slots", "live_stat", "compute_plugins", "local_config")
"""The ``JSONString`` fields of an agent."""


class Agent(BaseFunction):
    """Agents; a shortcut of :meth:`Admin.query` for ``agent``/``agent_list``."""

    @api_function
    @classmethod
    async def paginated_list(
        cls,
        status: str | None = "ALIVE",
        scaling_group: str | None = None,
        *,
        fields: Sequence[str] = DEFAULT_FIELDS,
        page_offset: int = 0,
        page_size: int = 20,
        filter: str | None = None,
        order: str | None = None,
    ) -> PaginatedResult[dict[str, Any]]:
        """One page of ``agent_list`` (*status*: one status, or ``None`` for all)."""
        if status is not None and status.upper() not in AGENT_STATUSES:
            raise ValueError(f"Unknown agent status {status!r}: choose from {', '.join(AGENT_STATUSES)}")
        args = {"status": None if status is None else status.upper(), "scaling_group": scaling_group}
        return await paginated_query(
            "agent_list", args, fields, page_offset=page_offset, page_size=page_size, filter=filter, order=order
        )

    @api_function
    @classmethod
    async def detail(cls, agent_id: str, fields: Sequence[str] = DETAIL_FIELDS) -> dict[str, Any] | None:
        """One agent by ID; ``None`` if there is none."""
        return await query_field("agent", {"agent_id": agent_id}, fields)
