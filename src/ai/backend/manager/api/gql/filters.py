"""The ``filter`` mini-language of the admin GraphQL list queries, compiled to SQLAlchemy clauses.

``field OP value`` terms joined by ``&`` (and) or ``|`` (or); a bad filter is a 400 that says why.
"""

from __future__ import annotations

import re
from collections.abc import Mapping
from typing import Any

from sqlalchemy import and_, or_

from ai.backend.common.problems import InvalidAPIParameters


def column(columns: Mapping[str, Any], name: str, what: str) -> Any:
    """The column ``name`` may refer to, or a 400 naming the ones it may."""
    col = columns.get(name)
    if col is None:
        raise InvalidAPIParameters(f"Cannot use {name!r} in {what}; use one of: {', '.join(sorted(columns))}.")
    return col


_TOKEN_RE = re.compile(
    r"""\s*(?:(?P<str>"(?:[^"\\]|\\.)*"|'(?:[^'\\]|\\.)*')|(?P<op>==|!=|<=|>=|<|>)|(?P<join>&|\|)"""
    r"""|(?P<word>[A-Za-z_][A-Za-z0-9_.]*|-?\d+(?:\.\d+)?))"""
)
_WORD_OPS = {"like", "ilike", "in", "contains"}


def filter_clause(expr: str | None, columns: Mapping[str, Any]) -> Any | None:
    """Parse the ``filter`` mini-language: ``field OP value`` terms joined by ``&`` (and) or ``|`` (or).

    OP is one of ``== != < <= > >= like ilike``; values are quoted strings, numbers, ``true``,
    ``false`` or ``null``. ``&`` binds tighter than ``|``. No parentheses.
    """
    if expr is None or not expr.strip():
        return None
    tokens: list[tuple[str, str]] = []
    pos = 0
    while pos < len(expr):
        if expr[pos:].strip() == "":
            break
        m = _TOKEN_RE.match(expr, pos)
        if m is None or m.end() == pos:
            raise InvalidAPIParameters(f"Cannot parse the filter near {expr[pos : pos + 20]!r}.")
        kind = m.lastgroup or ""
        tokens.append((kind, m.group(kind)))
        pos = m.end()
    ors: list[Any] = []
    ands: list[Any] = []
    i = 0
    while i < len(tokens):
        if i + 2 >= len(tokens):
            raise InvalidAPIParameters("Incomplete filter term; expected 'field OP value'.")
        (k1, field), (k2, op), (k3, raw) = tokens[i], tokens[i + 1], tokens[i + 2]
        if k1 != "word":
            raise InvalidAPIParameters(f"Expected a field name in the filter, got {field!r}.")
        if not (k2 == "op" or (k2 == "word" and op.lower() in _WORD_OPS)):
            raise InvalidAPIParameters(f"Expected an operator after {field!r} in the filter, got {op!r}.")
        col = column(columns, field, "filter")
        value = _literal(k3, raw)
        ands.append(_compare(col, op.lower(), value))
        i += 3
        if i < len(tokens):
            kind, j = tokens[i]
            if kind != "join":
                raise InvalidAPIParameters(f"Expected '&' or '|' in the filter, got {j!r}.")
            if j == "|":
                ors.append(and_(*ands))
                ands = []
            i += 1
            if i >= len(tokens):
                raise InvalidAPIParameters("The filter ends with a dangling '&' or '|'.")
    ors.append(and_(*ands))
    return or_(*ors) if len(ors) > 1 else ors[0]


def _literal(kind: str, raw: str) -> Any:
    if kind == "str":
        return bytes(raw[1:-1], "utf-8").decode("unicode_escape")
    if kind != "word":
        raise InvalidAPIParameters(f"Expected a value in the filter, got {raw!r}.")
    low = raw.lower()
    if low in ("true", "false"):
        return low == "true"
    if low == "null":
        return None
    try:
        return float(raw) if "." in raw else int(raw)
    except ValueError:
        raise InvalidAPIParameters(f"Filter values must be quoted strings or numbers, got {raw!r}.") from None


def _compare(col: Any, op: str, value: Any) -> Any:
    if value is None:
        if op == "==":
            return col.is_(None)
        if op == "!=":
            return col.is_not(None)
        raise InvalidAPIParameters("null can only be compared with == or !=.")
    match op:
        case "==":
            return col == value
        case "!=":
            return col != value
        case "<":
            return col < value
        case "<=":
            return col <= value
        case ">":
            return col > value
        case ">=":
            return col >= value
        case "like":
            return col.like(str(value))
        case "ilike":
            return col.ilike(str(value))
        case "contains":
            return col.contains(str(value))
    raise InvalidAPIParameters(f"Unsupported filter operator {op!r}.")
