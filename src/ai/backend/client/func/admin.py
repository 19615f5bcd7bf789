"""``Admin``: GraphQL queries and mutations at ``POST /admin/graphql``."""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

from ..exceptions import BackendAPIError
from ..request import Request
from .base import BaseFunction, api_function

__all__ = ("Admin",)

_ENVELOPE_KEYS = frozenset({"data", "errors", "extensions"})


class Admin(BaseFunction):
    """GraphQL access; what can be seen depends on the privilege of the keypair."""

    @api_function
    @classmethod
    async def query(cls, query: str, variables: Mapping[str, Any] | None = None) -> Any:
        """Send a GraphQL query and return its ``data``.

        GraphQL errors raise :class:`BackendAPIError` (a ``graphql-error`` problem).
        """
        return await cls._query(query, variables)

    @classmethod
    async def _query(cls, query: str, variables: Mapping[str, Any] | None = None) -> Any:
        rqst = Request("POST", "/admin/graphql")
        rqst.set_json({"query": query, "variables": dict(variables) if variables else {}})
        async with rqst.fetch() as resp:
            body = await resp.json()
        if isinstance(body, dict) and body and set(body) <= _ENVELOPE_KEYS:
            errors = body.get("errors")
            if errors:
                raise BackendAPIError(
                    400,
                    "Bad Request",
                    {
                        "type": "https://api.backend.ai/probs/graphql-error",
                        "title": "GraphQL-generated error",
                        "data": errors,
                    },
                )
            return body.get("data")
        return body  # the legacy endpoint answers with the bare data object
