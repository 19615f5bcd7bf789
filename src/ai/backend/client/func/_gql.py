"""Shared helpers of the GraphQL-backed function classes (``Domain``, ``Group``, ``User``, ...).

The documents are built with the argument values written inline as GraphQL literals
(strings JSON-escaped, ``None``/:data:`undefined` arguments left out), so they do not
depend on the server's names for input and scalar types.  Field selections are checked
against a strict grammar (names and nested ``{ ... }`` blocks only) before they are sent.
"""

from __future__ import annotations

import json
import math
import re
from collections.abc import Iterable, Mapping, Sequence
from typing import Any

from ..config import Undefined
from ..exceptions import BackendClientError
from ..types import PaginatedResult

__all__ = (
    "MAX_PAGE_SIZE",
    "decode_json_fields",
    "encode_json_string",
    "gql_arguments",
    "gql_literal",
    "is_given",
    "mutate",
    "mutation_document",
    "paginated_query",
    "parse_page",
    "pick_field",
    "query_document",
    "query_field",
    "selection",
)

MAX_PAGE_SIZE = 100
_NAME_RE = re.compile(r"[A-Za-z_][A-Za-z0-9_]*")
_TOKEN_RE = re.compile(r"\s*(?:([A-Za-z_][A-Za-z0-9_]*)|(\{)|(\}))")


def is_given(value: Any) -> bool:
    """Whether an optional argument was given: neither ``None`` nor :data:`undefined`."""
    return value is not None and not isinstance(value, Undefined)


def gql_literal(value: Any) -> str:
    """Write *value* as a GraphQL input literal (``null``, booleans, numbers, strings, lists, objects)."""
    if value is None or isinstance(value, Undefined):
        return "null"
    if isinstance(value, bool):
        return "true" if value else "false"
    if isinstance(value, int):
        return str(int(value))
    if isinstance(value, float):
        if not math.isfinite(value):
            raise ValueError(f"{value!r} cannot be sent in a GraphQL document")
        return repr(value)
    if isinstance(value, str):
        return json.dumps(value)  # JSON string escapes are valid GraphQL string escapes
    if isinstance(value, Mapping):
        parts = []
        for key, item in value.items():
            if not isinstance(key, str) or not _NAME_RE.fullmatch(key):
                raise ValueError(f"{key!r} is not a valid GraphQL field name")
            if isinstance(item, Undefined):
                continue
            parts.append(f"{key}: {gql_literal(item)}")
        return "{" + ", ".join(parts) + "}"
    if isinstance(value, (list, tuple, set, frozenset)):
        return "[" + ", ".join(gql_literal(v) for v in value) + "]"
    # UUIDs, Decimals and other str()-able scalars
    return json.dumps(str(value))


def gql_arguments(args: Mapping[str, Any]) -> str:
    """``(a: 1, b: "x")`` for the given arguments; ``None``/:data:`undefined` ones are left out."""
    given = {k: v for k, v in args.items() if is_given(v)}
    if not given:
        return ""
    for key in given:
        if not _NAME_RE.fullmatch(key):
            raise ValueError(f"{key!r} is not a valid GraphQL argument name")
    return "(" + ", ".join(f"{k}: {gql_literal(v)}" for k, v in given.items()) + ")"


def selection(fields: Iterable[str]) -> str:
    """Join and validate a field selection such as ``["uuid", "email", "groups { id name }"]``."""
    items = [str(f).strip() for f in fields]
    if not items or not all(items):
        raise ValueError("At least one field must be requested.")
    for item in items:
        _check_field(item)
    return " ".join(items)


def _check_field(text: str) -> None:
    """Accept exactly one field: ``NAME`` or ``NAME { FIELD ... }`` (nested), nothing else."""
    tokens: list[str] = []
    pos = 0
    while pos < len(text):
        m = _TOKEN_RE.match(text, pos)
        if m is None:
            if text[pos:].strip():
                raise ValueError(f"{text!r} is not a valid GraphQL field selection")
            break
        tokens.append(m.group(1) or m.group(2) or m.group(3))
        pos = m.end()

    def field(i: int) -> int:
        if i >= len(tokens) or not _NAME_RE.fullmatch(tokens[i]):
            raise ValueError(f"{text!r} is not a valid GraphQL field selection")
        i += 1
        if i < len(tokens) and tokens[i] == "{":
            i += 1
            i = field(i)
            while i < len(tokens) and tokens[i] != "}":
                i = field(i)
            if i >= len(tokens):
                raise ValueError(f"{text!r} has unbalanced braces")
            i += 1
        return i

    if field(0) != len(tokens):
        raise ValueError(f"{text!r} is not one GraphQL field; pass each field as a separate item")


def query_document(field: str, args: Mapping[str, Any], fields: Iterable[str]) -> str:
    """``query { field(args) { fields } }``."""
    return f"query {{ {field}{gql_arguments(args)} {{ {selection(fields)} }} }}"


def mutation_document(field: str, args: Mapping[str, Any], result_fields: Iterable[str] = ("ok", "msg")) -> str:
    """``mutation { field(args) { ok msg ... } }``."""
    return f"mutation {{ {field}{gql_arguments(args)} {{ {selection(result_fields)} }} }}"


def pick_field(data: Any, field: str) -> Any:
    """The value of *field* in a GraphQL answer's ``data``; :class:`BackendClientError` if it is missing."""
    if not isinstance(data, Mapping) or field not in data:
        raise BackendClientError(f"Unexpected GraphQL response: no {field!r} in {str(data)[:200]}")
    return data[field]


async def query_field(field: str, args: Mapping[str, Any], fields: Iterable[str]) -> Any:
    """Run a one-field query and return the value of that field."""
    from .admin import Admin

    return pick_field(await Admin._query(query_document(field, args, fields)), field)


async def mutate(field: str, args: Mapping[str, Any], result_fields: Iterable[str] = ("ok", "msg")) -> dict[str, Any]:
    """Run a mutation and return its result object (``{"ok", "msg", ...}``)."""
    from .admin import Admin

    result = pick_field(await Admin._query(mutation_document(field, args, result_fields)), field)
    if not isinstance(result, Mapping):
        raise BackendClientError(f"Unexpected GraphQL response: {field!r} is {result!r}")
    return dict(result)


def check_page(page_offset: int, page_size: int) -> None:
    """Reject page sizes outside 1..100 and negative offsets."""
    if not 1 <= page_size <= MAX_PAGE_SIZE:
        raise ValueError(f"The page size must be between 1 and {MAX_PAGE_SIZE}.")
    if page_offset < 0:
        raise ValueError("The page offset must not be negative.")


async def paginated_query(
    field: str,
    args: Mapping[str, Any],
    fields: Sequence[str],
    *,
    page_offset: int,
    page_size: int,
    filter: str | None = None,
    order: str | None = None,
) -> PaginatedResult[dict[str, Any]]:
    """Fetch one page of a ``*_list`` query as a :class:`PaginatedResult`."""
    check_page(page_offset, page_size)
    all_args = {"limit": page_size, "offset": page_offset, **args, "filter": filter, "order": order}
    doc = f"query {{ {field}{gql_arguments(all_args)} {{ items {{ {selection(fields)} }} total_count }} }}"
    from .admin import Admin

    return parse_page(pick_field(await Admin._query(doc), field), fields)


def parse_page(result: Any, fields: Sequence[str]) -> PaginatedResult[dict[str, Any]]:
    """A ``*_list`` answer (``{"items": [...], "total_count": N}``) as a :class:`PaginatedResult`."""
    try:
        total, items = int(result["total_count"]), list(result["items"])
    except (KeyError, TypeError, ValueError) as e:
        raise BackendClientError(f"Unexpected GraphQL response: {e!r}") from None
    return PaginatedResult(total_count=total, items=items, fields=tuple(fields))


def encode_json_string(value: Any, what: str) -> str | None:
    """Encode a ``JSONString`` argument: mappings are dumped, strings must already be JSON objects."""
    if not is_given(value):
        return None
    if isinstance(value, Mapping):
        return json.dumps(dict(value), default=str)
    if isinstance(value, str):
        try:
            decoded = json.loads(value)
        except json.JSONDecodeError as e:
            raise ValueError(f"{what} is not valid JSON: {e.msg} (at position {e.pos})") from None
        if not isinstance(decoded, dict):
            raise ValueError(f"{what} must be a JSON object")
        return value
    raise ValueError(f"{what} must be a mapping or a JSON object string, not {type(value).__name__}")


def decode_json_fields(item: Mapping[str, Any], names: Iterable[str]) -> dict[str, Any]:
    """A copy of *item* with the named ``JSONString`` fields decoded (invalid JSON is kept as is)."""
    out = dict(item)
    for name in names:
        value = out.get(name)
        if isinstance(value, str):
            try:
                out[name] = json.loads(value)
            except json.JSONDecodeError:
                pass
    return out


def opt_list(values: Iterable[Any] | None) -> list[Any] | None:
    """``None`` stays ``None``; any other iterable becomes a list."""
    return None if values is None else list(values)


def drop_unset(mapping: Mapping[str, Any]) -> dict[str, Any]:
    """The items of *mapping* whose values are given (not ``None``/:data:`undefined`)."""
    return {k: v for k, v in mapping.items() if is_given(v)}
