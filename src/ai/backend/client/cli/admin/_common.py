"""Shared parts of the ``backend.ai admin`` commands: running API calls, output and option types.

Console output is a table (lists) or aligned ``Heading: value`` lines (details) on stdout;
status lines (``✔``/``✘``) go to stderr.  With ``--output json`` lists print
``{"count", "total_count", "items"}``, details print the object and mutations print the
server's ``{"ok", "msg", ...}``, with ``JSONString`` fields decoded.
"""

from __future__ import annotations

import json
import sys
import uuid
from collections.abc import Awaitable, Callable, Iterable, Mapping, Sequence
from decimal import Decimal, InvalidOperation
from typing import TYPE_CHECKING, Any, NamedTuple, NoReturn, TypeVar

import click

from ..core import get_cli_context
from ..pretty import print_done, print_fail, print_info

if TYPE_CHECKING:
    from ...session import AsyncSession
    from ...types import PaginatedResult

__all__ = (
    "BYTE_SIZE",
    "JSON_OBJECT",
    "Column",
    "DEFAULT_PAGE_SIZE",
    "decode_item",
    "emit_json",
    "fetch_pages",
    "field_key",
    "format_value",
    "join_lists",
    "paging_options",
    "print_item",
    "print_items",
    "print_result",
    "require_changes",
    "resolve_group_id",
    "resolve_user_uuids",
    "run_api",
)

T = TypeVar("T")
DEFAULT_PAGE_SIZE = 20
MAX_PAGE_SIZE = 100


def run_api(factory: Callable[[AsyncSession], Awaitable[T]]) -> T:
    """Open an :class:`AsyncSession`, await ``factory(session)`` and return the result."""
    import asyncio

    from ...session import AsyncSession

    get_cli_context().get_config()

    async def _main() -> T:
        async with AsyncSession() as api_sess:
            return await factory(api_sess)

    return asyncio.run(_main())


def emit_json(data: Any) -> None:
    """Print *data* as indented JSON on stdout."""
    click.echo(json.dumps(data, indent=2, ensure_ascii=False, default=str))


# ---- values ----


class Column(NamedTuple):
    """A column of a table (or a line of a detail view)."""

    field: str
    """The GraphQL field, possibly with a nested selection (``groups { id name }``)."""
    heading: str
    kind: str = "text"
    """How the value is shown: text, bool, json, slots, bytes, list, groups, seconds."""

    @property
    def key(self) -> str:
        """The key of the value in a result item."""
        return field_key(self.field)


def field_key(field: str) -> str:
    """``"groups { id name }"`` → ``"groups"``."""
    return field.split("{", 1)[0].strip()


def _human_bytes(value: Any) -> str:
    try:
        d = Decimal(str(value))
    except (InvalidOperation, ValueError):
        return str(value)
    if not d.is_finite() or d != d.to_integral_value():
        return str(value)  # "Infinity" (no limit) or a fraction is shown as it is
    n = int(d)
    from ai.backend.common.types import BinarySize

    return str(BinarySize(n)) if n >= 0 else str(n)


def _maybe_json(value: Any) -> Any:
    if isinstance(value, str):
        try:
            return json.loads(value)
        except json.JSONDecodeError:
            return value
    return value


def format_value(kind: str, value: Any) -> str:
    """Format one value for the console."""
    if value is None:
        return "-"
    if kind in ("json", "slots"):
        value = _maybe_json(value)
    if kind == "slots" and isinstance(value, Mapping):
        if not value:
            return "{}"
        parts = []
        for k, v in value.items():
            text = _human_bytes(v) if (k == "mem" or str(k).endswith(".mem")) else str(v)
            parts.append(f"{k}={text}")
        return " ".join(parts)
    if kind == "bytes" and not isinstance(value, bool):
        return _human_bytes(value)
    if kind == "groups" and isinstance(value, list):
        return ", ".join(str(g.get("name", g)) if isinstance(g, Mapping) else str(g) for g in value) or "-"
    if kind == "list" and isinstance(value, list):
        return ", ".join(str(v) for v in value) or "-"
    if isinstance(value, bool):
        return "yes" if value else "no"
    if isinstance(value, (dict, list)):
        return json.dumps(value, ensure_ascii=False)
    return str(value)


def decode_item(item: Mapping[str, Any], json_fields: Iterable[str] = ()) -> dict[str, Any]:
    """A copy of *item* with its ``JSONString`` fields decoded, for the JSON output."""
    out = dict(item)
    for name in json_fields:
        if name in out:
            out[name] = _maybe_json(out[name])
    return out


# ---- output ----


def _print_table(rows: Sequence[Mapping[str, Any]], columns: Sequence[Column]) -> None:
    from rich import box
    from rich.console import Console
    from rich.table import Table

    table = Table(box=box.SIMPLE_HEAD, pad_edge=False, show_edge=False, header_style="bold")
    for col in columns:
        table.add_column(col.heading, overflow="fold")
    for row in rows:
        table.add_row(*(format_value(col.kind, row.get(col.key)) for col in columns))
    tty = sys.stdout.isatty()
    console = Console(file=sys.stdout, width=None if tty else 100_000, soft_wrap=not tty)
    with console.capture() as capture:
        console.print(table)
    for line in capture.get().splitlines():
        click.echo(line.rstrip(), color=tty)


def print_items(
    items: Sequence[Mapping[str, Any]],
    columns: Sequence[Column],
    *,
    json_fields: Iterable[str] = (),
    total: int | None = None,
    offset: int = 0,
    empty: str = "There are no matching items.",
    what: str = "items",
) -> None:
    """A table of *items* (console) or ``{"count", "total_count", "items"}`` (JSON)."""
    json_fields = tuple(json_fields)
    total_count = len(items) if total is None else total
    if get_cli_context().json_output:
        emit_json(
            {
                "count": len(items),
                "total_count": total_count,
                "items": [decode_item(item, json_fields) for item in items],
            }
        )
        return
    if not items:
        click.echo(empty)
        return
    _print_table(items, columns)
    if offset + len(items) < total_count:
        print_info(f"Showing {len(items)} of {total_count} {what}; use -a/--all or --offset/--limit to see more.")


def print_item(
    item: Mapping[str, Any] | None,
    columns: Sequence[Column],
    *,
    json_fields: Iterable[str] = (),
    not_found: str = "Not found.",
) -> None:
    """``Heading: value`` lines (console) or the object (JSON); a missing item fails with exit code 1."""
    if item is None:
        fail(not_found)
    if get_cli_context().json_output:
        emit_json(decode_item(item, json_fields))
        return
    width = max((len(col.heading) for col in columns), default=0)
    for col in columns:
        if col.key in item:
            click.echo(f"{(col.heading + ':').ljust(width + 1)} {format_value(col.kind, item.get(col.key))}")


def fail(message: str, code: int = 1) -> NoReturn:
    """Print ``✘ message`` on stderr and exit."""
    print_fail(" ".join(message.split()))
    sys.exit(code)


def print_result(
    result: Mapping[str, Any],
    done: str,
    *,
    failed: str = "Failed",
    json_fields: Iterable[str] = (),
    extra: Callable[[Mapping[str, Any]], None] | None = None,
) -> None:
    """Report a mutation result: ``✔ done`` or ``✘ failed: msg`` (exit code 1 when not ok)."""
    ok = bool(result.get("ok"))
    if get_cli_context().json_output:
        out = dict(result)
        for key, value in out.items():
            if isinstance(value, Mapping):
                out[key] = decode_item(value, json_fields)
        emit_json(out)
        if not ok:
            sys.exit(1)
        return
    if not ok:
        fail(f"{failed}: {result.get('msg') or 'the server gave no reason'}")
    if extra is not None:
        extra(result)
    print_done(done)


def require_changes(changes: Mapping[str, Any]) -> None:
    """Raise a usage error if no option that changes something was given."""
    if all(v is None or v == () for v in changes.values()):
        raise click.UsageError("Nothing to update: give at least one option that changes something.")


def join_lists(values: Iterable[Sequence[str]] | None) -> list[str] | None:
    """Flatten a ``multiple=True`` option of comma-separated lists; ``None`` if not given."""
    if not values:
        return None
    out: list[str] = []
    for chunk in values:
        out.extend(v for v in chunk if v not in out)
    return out


# ---- option types ----


def parse_json_object(text: str) -> dict[str, Any]:
    """Parse a JSON object, or ``KEY=VAL,KEY=VAL`` pairs, into a dict; raise :class:`ValueError`."""
    text = text.strip()
    if text.startswith(("{", "[", '"')):
        try:
            value = json.loads(text)
        except json.JSONDecodeError as e:
            raise ValueError(f"{text!r} is not valid JSON: {e.msg} (at position {e.pos})") from None
        if not isinstance(value, dict):
            raise ValueError(f"{text!r} is not a JSON object")
        return value
    if not text:
        return {}
    out: dict[str, Any] = {}
    for part in text.split(","):
        key, sep, val = part.partition("=")
        if not sep or not key.strip() or not val.strip():
            raise ValueError(f"{text!r} is neither a JSON object nor KEY=VALUE pairs separated by commas")
        out[key.strip()] = val.strip()
    return out


class JSONObjectType(click.ParamType):
    """A JSON object (``'{"cpu": 4, "mem": "8g"}'``) or ``cpu=4,mem=8g``, converted to a dict."""

    name = "JSON"

    def convert(self, value: Any, param: click.Parameter | None, ctx: click.Context | None) -> dict[str, Any]:
        if isinstance(value, dict):
            return value
        try:
            return parse_json_object(str(value))
        except ValueError as e:
            self.fail(str(e), param, ctx)


class ByteSizeType(click.ParamType):
    """A byte count with an optional unit (``512m``, ``4g``, ``1073741824``)."""

    name = "SIZE"

    def convert(self, value: Any, param: click.Parameter | None, ctx: click.Context | None) -> int:
        if isinstance(value, int):
            return value
        from ai.backend.common.types import BinarySize, SlotTypeError

        try:
            return int(BinarySize.parse(str(value).strip()))
        except SlotTypeError as e:
            self.fail(str(e), param, ctx)


JSON_OBJECT = JSONObjectType()
BYTE_SIZE = ByteSizeType()


# ---- pagination ----


def paging_options(func: Callable[..., Any]) -> Callable[..., Any]:
    """``--filter``, ``--order``, ``--offset``, ``--limit`` and ``-a/--all`` (not with ``--limit``)."""
    import functools

    @functools.wraps(func)
    def f(*args: Any, **kwargs: Any) -> Any:
        if kwargs.get("all_") and kwargs.get("limit") is not None:
            raise click.UsageError("Give only one of --all and --limit.")
        return func(*args, **kwargs)

    f = click.option("-a", "--all", "all_", is_flag=True, help="Show all matching items (page through them).")(f)
    f = click.option(
        "--limit",
        type=click.IntRange(1, MAX_PAGE_SIZE),
        default=None,
        help=f"Show at most this many (default {DEFAULT_PAGE_SIZE}).",
    )(f)
    f = click.option("--offset", type=click.IntRange(min=0), default=0, help="Skip this many items.")(f)
    f = click.option("--order", default=None, help="A query ordering expression (server-side).")(f)
    f = click.option("--filter", "filter_", default=None, help="A query filter expression (server-side).")(f)
    return f


async def fetch_pages(
    fetch: Callable[[int, int], Awaitable[PaginatedResult[dict[str, Any]]]],
    *,
    offset: int,
    limit: int | None,
    all_: bool,
) -> tuple[list[dict[str, Any]], int]:
    """Fetch one page (or, with *all_*, every page from *offset*); returns the items and the total."""
    items: list[dict[str, Any]] = []
    cur = offset
    while True:
        page = await fetch(cur, MAX_PAGE_SIZE if all_ else (limit or DEFAULT_PAGE_SIZE))
        items.extend(page.items)
        cur += len(page.items)
        if not all_ or not page.items or cur >= page.total_count:
            return items, page.total_count


# ---- name resolution ----


def _as_uuid(text: str) -> str | None:
    try:
        return str(uuid.UUID(text))
    except ValueError:
        return None


async def resolve_group_id(api: AsyncSession, group: str, domain: str | None) -> str:
    """A group ID given as a UUID or as a group name (looked up in *domain*, or in every visible domain)."""
    gid = _as_uuid(group)
    if gid is not None:
        return gid
    from ...exceptions import BackendClientError

    found = await api.Group.from_name(group, domain_name=domain, fields=("id", "name", "domain_name"))
    if not found:
        where = f" in the domain {domain!r}" if domain else ""
        raise BackendClientError(f"No such group: {group!r}{where}")
    if len(found) > 1:
        domains = ", ".join(sorted(str(g.get("domain_name")) for g in found))
        raise BackendClientError(f"The group name {group!r} exists in several domains ({domains}); give -d/--domain")
    return str(found[0]["id"])


async def resolve_user_uuids(api: AsyncSession, users: Sequence[str]) -> list[str]:
    """User UUIDs for arguments that are UUIDs or emails."""
    from ...exceptions import BackendClientError

    out: list[str] = []
    for user in users:
        uid = _as_uuid(user)
        if uid is None:
            if "@" not in user:
                raise BackendClientError(f"{user!r} is neither a user UUID nor an email address")
            info = await api.User.detail(user, fields=("uuid",))
            if not info or not info.get("uuid"):
                raise BackendClientError(f"No such user: {user!r}")
            uid = str(info["uuid"])
        out.append(uid)
    return out
