"""SQL expressions that change one key of a JSON column in place, on SQLite and PostgreSQL.

A scheduling pass marks thousands of sessions SCHEDULED at once; with these it is one UPDATE per chunk of
sessions instead of each row's documents read, changed in Python and written back. The columns are
expected to hold JSON objects (NULL counts as an empty one).
"""

from __future__ import annotations

from typing import Any

from sqlalchemy import JSON, String, cast, func, literal
from sqlalchemy.dialects.postgresql import JSONB
from sqlalchemy.sql.elements import ColumnElement


def _jsonb(column: Any) -> ColumnElement[Any]:
    return func.coalesce(cast(column, JSONB), cast(literal("{}", String), JSONB))


def json_with_key(column: Any, key: str, value: str, dialect: str) -> ColumnElement[Any]:
    """``column`` with ``key`` set to the string ``value`` (``dialect``: the engine's dialect name)."""
    if dialect == "postgresql":
        return cast(
            _jsonb(column).op("||")(func.jsonb_build_object(literal(key, String), literal(value, String))), JSON
        )
    return func.json_set(
        func.coalesce(column, literal("{}", String)), literal(f"$.{key}", String), literal(value, String)
    )


def json_without_key(column: Any, key: str, dialect: str) -> ColumnElement[Any]:
    """``column`` without ``key``."""
    if dialect == "postgresql":
        return cast(_jsonb(column).op("-")(literal(key, String)), JSON)
    return func.json_remove(func.coalesce(column, literal("{}", String)), literal(f"$.{key}", String))
