"""The custom scalars of the admin GraphQL schema: ``JSONString`` and ``BigInt``.

At run time each is a ``NewType`` that ``SCALARS`` (given to ``StrawberryConfig.scalar_map``) maps to
its GraphQL definition; the type checker sees the Python values the fields hold instead.
"""

from __future__ import annotations

import json
from typing import TYPE_CHECKING, Any, NewType, TypeAlias

import strawberry
from strawberry.types.scalar import ScalarDefinition

JS_SAFE_INT = 2**53 - 1

if TYPE_CHECKING:
    JSONString: TypeAlias = object  # any JSON value
    BigInt: TypeAlias = int
else:
    JSONString = NewType("JSONString", object)
    BigInt = NewType("BigInt", int)


def _parse_json_string(value: Any) -> Any:
    if not isinstance(value, str):
        return value  # already-decoded JSON from the variables object
    try:
        return json.loads(value)
    except json.JSONDecodeError as e:
        raise ValueError(f"not a JSON document: {e}") from None
    except RecursionError:
        raise ValueError("the JSON document is nested too deeply") from None


def _parse_bigint(value: Any) -> int:
    if isinstance(value, bool):
        raise ValueError("BigInt must be an integer")
    try:
        n = int(value)
    except (TypeError, ValueError):
        raise ValueError(f"BigInt must be an integer, got {value!r}") from None
    if isinstance(value, float) and value != n:
        raise ValueError(f"BigInt must be an integer, got {value!r}")
    if abs(n) > JS_SAFE_INT:
        raise ValueError("BigInt is outside ±(2^53-1)")
    return n


SCALARS: dict[object, ScalarDefinition] = {
    JSONString: strawberry.scalar(
        name="JSONString",
        serialize=lambda v: json.dumps(v),
        parse_value=_parse_json_string,
        description="A JSON document encoded as a string.",
    ),
    BigInt: strawberry.scalar(
        name="BigInt",
        serialize=lambda v: int(v),
        parse_value=_parse_bigint,
        description="An integer within ±(2^53-1).",
    ),
}
