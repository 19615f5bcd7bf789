"""Paging and ordering of the admin GraphQL list queries."""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from typing import Any

from ai.backend.common.problems import InvalidAPIParameters

from .filters import column

MAX_PAGE = 100


def check_page(limit: int, offset: int) -> None:
    """Refuse with 400 a page size outside 1..MAX_PAGE or a negative offset."""
    if not (0 < limit <= MAX_PAGE):
        raise InvalidAPIParameters(f"limit must be between 1 and {MAX_PAGE}, got {limit}.")
    if offset < 0:
        raise InvalidAPIParameters(f"offset must not be negative, got {offset}.")


def order_clauses(
    columns: Mapping[str, Any],
    *,
    order_key: str | None = None,
    order_asc: bool | None = True,
    order: str | None = None,
    default: Sequence[Any] = (),
) -> list[Any]:
    """ORDER BY clauses from ``order_key``/``order_asc`` (seed) or ``order`` ("-created_at,email")."""
    out: list[Any] = []
    if order_key:
        col = column(columns, order_key, "order_key")
        out.append(col.asc() if order_asc is not False else col.desc())
    if order:
        for part in order.split(","):
            part = part.strip()
            if not part:
                continue
            name = part.lstrip("+-")
            col = column(columns, name, "order")
            out.append(col.desc() if part.startswith("-") else col.asc())
    return out or list(default)
