"""Shared pieces of the admin GraphQL schema: scalars, the request context, role checks,
pagination, ordering, the filter mini-language and input validation.

Resolvers refuse bad calls by raising :class:`~ai.backend.common.problems.ProblemError`
subclasses (403, 404, 409, 400); the endpoint turns the first one into the HTTP status and
problem body of the whole response. Each mutation runs in one transaction, so a refused
mutation changes nothing.
"""

from __future__ import annotations

import json
import re
import uuid
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any, NewType

import strawberry
from sqlalchemy import and_, false, or_
from sqlalchemy.exc import IntegrityError
from sqlalchemy.ext.asyncio import AsyncSession, async_sessionmaker
from strawberry.types import Info

from ai.backend.common.problems import Conflict, Forbidden, InvalidAPIParameters
from ai.backend.common.types import BinarySize, ResourceSlot, SlotTypeError

from ...accounts import ROLES as ROLES  # re-exported for the area modules
from ...accounts import check_choice as check_choice
from ...accounts import check_email as check_email

if TYPE_CHECKING:
    from ...auth import AuthContext
    from ...context import ManagerContext
    from ...registry import SessionRegistry

SUPERADMIN, ADMIN, USER, MONITOR = "superadmin", "admin", "user", "monitor"
MAX_PAGE = 100
JS_SAFE_INT = 2**53 - 1


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


JSONString = strawberry.scalar(
    NewType("JSONString", object),
    serialize=lambda v: json.dumps(v),
    parse_value=_parse_json_string,
    description="A JSON document encoded as a string.",
)
BigInt = strawberry.scalar(
    NewType("BigInt", int),
    serialize=lambda v: int(v),
    parse_value=_parse_bigint,
    description="An integer within ±(2^53-1).",
)


@dataclass
class GQLContext:
    """What every resolver gets as ``info.context``."""

    auth: AuthContext
    db: async_sessionmaker[AsyncSession]
    registry: SessionRegistry
    state: ManagerContext  # the manager's shared services

    @property
    def role(self) -> str:
        return self.auth.role


def context(info: Info) -> GQLContext:
    ctx: GQLContext = info.context
    return ctx


# --- role checks ---------------------------------------------------------------------------------


def require_roles(ctx: GQLContext, roles: Sequence[str], action: str) -> None:
    """Refuse with 403 unless the caller's role is one of ``roles``."""
    if ctx.role not in roles:
        who = " or ".join(roles)
        raise Forbidden(f"{action} requires the {who} role; your role is {ctx.role}.")


def require_superadmin(ctx: GQLContext, action: str) -> None:
    require_roles(ctx, (SUPERADMIN,), action)


def scoped_domain(ctx: GQLContext, requested: str | None, action: str) -> str | None:
    """The domain a query may look at: any (None = all) for superadmins, the own one for others."""
    if ctx.role in (SUPERADMIN, MONITOR):
        return requested
    if requested is not None and requested != ctx.auth.domain_name:
        raise Forbidden(f"{action}: you may only look at your own domain ({ctx.auth.domain_name}).")
    return ctx.auth.domain_name


# --- pagination, ordering and filtering ----------------------------------------------------------


def check_page(limit: int, offset: int) -> None:
    if not (0 < limit <= MAX_PAGE):
        raise InvalidAPIParameters(f"limit must be between 1 and {MAX_PAGE}, got {limit}.")
    if offset < 0:
        raise InvalidAPIParameters(f"offset must not be negative, got {offset}.")


def order_clauses(
    columns: Mapping[str, Any], *, order_key: str | None = None, order_asc: bool | None = True,
    order: str | None = None, default: Sequence[Any] = (),
) -> list[Any]:
    """ORDER BY clauses from ``order_key``/``order_asc`` (seed) or ``order`` ("-created_at,email")."""
    out: list[Any] = []
    if order_key:
        col = _column(columns, order_key, "order_key")
        out.append(col.asc() if order_asc is not False else col.desc())
    if order:
        for part in order.split(","):
            part = part.strip()
            if not part:
                continue
            name = part.lstrip("+-")
            col = _column(columns, name, "order")
            out.append(col.desc() if part.startswith("-") else col.asc())
    return out or list(default)


def _column(columns: Mapping[str, Any], name: str, what: str) -> Any:
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
            raise InvalidAPIParameters(f"Cannot parse the filter near {expr[pos:pos + 20]!r}.")
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
        col = _column(columns, field, "filter")
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


NO_ROWS = false()


# --- validation of inputs ------------------------------------------------------------------------

_SLUG_RE = re.compile(r"^[A-Za-z0-9](?:[A-Za-z0-9._-]*[A-Za-z0-9])?$")


def check_slug(value: str, what: str, max_len: int = 64) -> str:
    """A name of letters, digits, ``-``, ``_`` and ``.`` that starts and ends alphanumerically."""
    if not value or len(value) > max_len or not _SLUG_RE.match(value):
        raise InvalidAPIParameters(
            f"{what} {value!r} is not valid: use 1–{max_len} letters, digits, '-', '_' or '.', "
            "starting and ending with a letter or digit."
        )
    return value


def check_uuid(value: Any, what: str) -> uuid.UUID:
    try:
        return uuid.UUID(str(value))
    except ValueError:
        raise InvalidAPIParameters(f"{what} {value!r} is not a UUID.") from None


def check_nonneg(value: int, what: str) -> int:
    if value < 0:
        raise InvalidAPIParameters(f"{what} must not be negative, got {value}.")
    return value


def parse_slots(value: Any, what: str = "total_resource_slots") -> dict[str, str]:
    """Validate a resource-slot JSON object and return its normalized JSON form."""
    if value is None:
        return {}
    if not isinstance(value, Mapping):
        raise InvalidAPIParameters(f"{what} must be a JSON object of slot names to amounts.")
    try:
        return ResourceSlot.from_user_input(value).to_json()
    except SlotTypeError as e:
        raise InvalidAPIParameters(f"{what}: {e}.") from None


def parse_json_object(value: Any, what: str) -> dict[str, Any]:
    if value is None:
        return {}
    if not isinstance(value, Mapping):
        raise InvalidAPIParameters(f"{what} must be a JSON object.")
    return dict(value)


def parse_size(value: Any, what: str) -> int:
    try:
        return int(BinarySize.parse(value))
    except SlotTypeError as e:
        raise InvalidAPIParameters(f"{what}: {e}.") from None


def check_str_list(value: Any, what: str) -> list[str]:
    if value is None:
        return []
    if not isinstance(value, list) or not all(isinstance(v, str) for v in value):
        raise InvalidAPIParameters(f"{what} must be a list of strings.")
    return list(value)


async def commit_or_conflict(db: AsyncSession, what: str) -> None:
    """Commit; a unique or foreign-key violation becomes a 409 that names ``what``."""
    try:
        await db.commit()
    except IntegrityError as e:
        await db.rollback()
        raise Conflict(f"{what} conflicts with existing data: {_integrity_reason(e)}.") from None


def _integrity_reason(e: IntegrityError) -> str:
    text = str(e.orig).lower()
    if "unique" in text or "duplicate" in text:
        return "a record with the same key already exists"
    if "foreign key" in text:
        return "it is still referenced by other records, or refers to a missing one"
    return "a database constraint failed"


def updates_from(props: Any, fields: Sequence[str]) -> dict[str, Any]:
    """The fields of a strawberry input that were given a value: neither left out nor ``null``.

    ``null`` means "unchanged", as upstream: the official SDKs send every field of a ``Modify*Input``,
    with ``null`` for each option the user did not give, so taking ``null`` as a value would wipe data.
    """
    out: dict[str, Any] = {}
    for f in fields:
        v = getattr(props, f, strawberry.UNSET)
        if v is not strawberry.UNSET and v is not None:
            out[f] = v
    return out


def result_type(name: str, extra: Mapping[str, Any] | None = None) -> Any:
    """A mutation payload type ``name`` with ``ok``/``msg`` (and optional extra fields)."""
    annotations: dict[str, Any] = {"ok": bool, "msg": str}
    namespace: dict[str, Any] = {}
    for key, typ in (extra or {}).items():
        annotations[key] = typ
        namespace[key] = None
    namespace["__annotations__"] = annotations
    return strawberry.type(type(name, (), namespace))
