"""Parsing of CLI arguments: ``KEY=VAL`` pairs, mounts, range expressions and case expansion.

The functions here are pure (no I/O) and raise :class:`ValueError`; the click parameter
types wrap them so that a bad argument becomes a one-line usage error (exit code 2).
"""

from __future__ import annotations

import itertools
import re
import string
from collections.abc import Mapping, Sequence
from typing import Any, NamedTuple

import click

__all__ = (
    "ENV_KEY_RE",
    "Case",
    "CommaSeparatedList",
    "KeyValueType",
    "PortList",
    "RangeExprType",
    "SessionNameType",
    "build_cases",
    "parse_key_value",
    "parse_range_expr",
    "prepare_mount_arg",
)

ENV_KEY_RE = re.compile(r"^[A-Za-z_][A-Za-z0-9_]*$")
RANGE_KEY_RE = re.compile(r"^[A-Za-z_][A-Za-z0-9_]*$")
SLOT_KEY_RE = re.compile(r"^[A-Za-z][A-Za-z0-9_.-]*$")
SLOT_VALUE_RE = re.compile(r"^(?:\d+(?:\.\d*)?|\.\d+)\s*(?:[kmgtpe]i?b?|b)?$", re.IGNORECASE)


def parse_key_value(
    value: str,
    *,
    key_re: re.Pattern[str] | None = None,
    value_re: re.Pattern[str] | None = None,
    allow_empty_value: bool = False,
    what: str = "KEY=VALUE pair",
) -> tuple[str, str]:
    """Split ``KEY=VALUE``; raise :class:`ValueError` if '=' is missing or a part is invalid."""
    key, sep, val = value.partition("=")
    if not sep:
        raise ValueError(f"{value!r} is not a {what} (missing '=')")
    key = key.strip()
    if not key:
        raise ValueError(f"{value!r} has an empty key")
    if key_re is not None and not key_re.match(key):
        raise ValueError(f"{key!r} is not a valid key")
    if not val and not allow_empty_value:
        raise ValueError(f"{value!r} has an empty value")
    if val and value_re is not None and not value_re.match(val.strip()):
        raise ValueError(f"{val!r} is not a valid value for {key!r}")
    return key, val


class KeyValueType(click.ParamType):
    """A ``KEY=VAL`` option value, converted to a ``(key, value)`` tuple."""

    name = "KEY=VAL"

    def __init__(
        self,
        *,
        key_re: re.Pattern[str] | None = None,
        value_re: re.Pattern[str] | None = None,
        allow_empty_value: bool = False,
    ) -> None:
        self.key_re = key_re
        self.value_re = value_re
        self.allow_empty_value = allow_empty_value

    def convert(self, value: Any, param: click.Parameter | None, ctx: click.Context | None) -> tuple[str, str]:
        if isinstance(value, tuple):
            return value
        try:
            return parse_key_value(
                str(value),
                key_re=self.key_re,
                value_re=self.value_re,
                allow_empty_value=self.allow_empty_value,
            )
        except ValueError as e:
            self.fail(str(e), param, ctx)


ENV_TYPE = KeyValueType(key_re=ENV_KEY_RE, allow_empty_value=True)
"""``-e/--env KEY=VAL``: a valid environment variable name; the value may be empty."""
RESOURCE_TYPE = KeyValueType(key_re=SLOT_KEY_RE, value_re=SLOT_VALUE_RE)
"""``-r/--resources KEY=VAL``: a slot name and a number, optionally with a size unit."""
RESOURCE_OPT_TYPE = KeyValueType(key_re=SLOT_KEY_RE)
"""``--resource-opts KEY=VAL``."""


def pairs_to_dict(pairs: Sequence[tuple[str, str]]) -> dict[str, str]:
    """Collect ``(key, value)`` pairs; later values override earlier ones."""
    return {k: v for k, v in pairs}


def prepare_mount_arg(mount_args: Sequence[str]) -> tuple[list[str], dict[str, str]]:
    """Parse ``NAME``, ``NAME=PATH`` or ``NAME:PATH`` mount arguments into names and a path map."""
    mounts: list[str] = []
    mount_map: dict[str, str] = {}
    for value in mount_args:
        sep = "=" if "=" in value else (":" if ":" in value else None)
        if sep is None:
            name, path = value.strip(), None
        else:
            name, _, path = value.partition(sep)
            name, path = name.strip(), path.strip()
            if not path:
                raise ValueError(f"{value!r} has an empty mount path")
        if not name:
            raise ValueError(f"{value!r} has an empty virtual folder name")
        if name not in mounts:
            mounts.append(name)
        if path is not None:
            mount_map[name] = path
    return mounts, mount_map


class MountType(click.ParamType):
    """A ``NAME[=PATH]`` mount argument (validated; parsed later by :func:`prepare_mount_arg`)."""

    name = "NAME[=PATH]"

    def convert(self, value: Any, param: click.Parameter | None, ctx: click.Context | None) -> str:
        try:
            prepare_mount_arg([str(value)])
        except ValueError as e:
            self.fail(str(e), param, ctx)
        return str(value)


def _format_decimal(d: Any) -> str:
    if d == d.to_integral_value():
        return str(int(d))
    return format(d.normalize(), "f")


def parse_range_expr(arg: str) -> tuple[str, tuple[str, ...]]:
    """Expand ``VAR=case:a,b``, ``VAR=linspace:START,STOP,NUM`` or ``VAR=range:START,STOP[,STEP]``.

    Returns the variable name and its values as strings, e.g.
    ``"X=linspace:1,2,3"`` → ``("X", ("1", "1.5", "2"))``.
    """
    key, sep, expr = arg.partition("=")
    if not sep:
        raise ValueError(f"{arg!r} is not a VAR=EXPR range expression")
    key = key.strip()
    if not RANGE_KEY_RE.match(key):
        raise ValueError(f"{key!r} is not a valid variable name")
    kind, colon, body = expr.partition(":")
    if not colon:
        raise ValueError(f"{expr!r} must be case:..., linspace:... or range:...")
    if kind == "case":
        values = tuple(v.strip() for v in body.split(","))
        if not any(values):
            raise ValueError("case: needs at least one value")
        return key, values
    if kind == "linspace":
        from decimal import Decimal, InvalidOperation

        parts = body.split(",")
        if len(parts) != 3:
            raise ValueError("linspace: needs START,STOP,NUM")
        try:
            start, stop = Decimal(parts[0].strip()), Decimal(parts[1].strip())
            num = int(parts[2].strip())
        except (InvalidOperation, ValueError):
            raise ValueError(f"{body!r} is not START,STOP,NUM with numbers") from None
        if not start.is_finite() or not stop.is_finite():
            raise ValueError("linspace: START and STOP must be finite numbers")
        if num < 1:
            raise ValueError("linspace: NUM must be at least 1")
        if num == 1:
            return key, (_format_decimal(start),)
        step = (stop - start) / (num - 1)
        return key, tuple(_format_decimal(start + step * i) for i in range(num))
    if kind == "range":
        try:
            nums = [int(p.strip()) for p in body.split(",")]
        except ValueError:
            raise ValueError(f"{body!r} is not START,STOP[,STEP] with integers") from None
        if not 1 <= len(nums) <= 3:
            raise ValueError("range: needs STOP, START,STOP or START,STOP,STEP")
        if len(nums) == 3 and nums[2] == 0:
            raise ValueError("range: STEP must not be zero")
        values = tuple(str(v) for v in range(*nums))
        if not values:
            raise ValueError(f"range:{body} produces no values")
        return key, values
    raise ValueError(f"unknown range expression type {kind!r} (use case, linspace or range)")


class RangeExprType(click.ParamType):
    """A ``VAR=case:...|linspace:...|range:...`` option value."""

    name = "RANGE_EXPR"

    def convert(
        self, value: Any, param: click.Parameter | None, ctx: click.Context | None
    ) -> tuple[str, tuple[str, ...]]:
        if isinstance(value, tuple):
            return value
        try:
            return parse_range_expr(str(value))
        except ValueError as e:
            self.fail(str(e), param, ctx)


class Case(NamedTuple):
    """One combination of environment, build command and exec command for ``run``."""

    envs: tuple[tuple[str, str], ...]
    build: str
    exec: str


def _product(ranges: Sequence[tuple[str, tuple[str, ...]]]) -> list[dict[str, str]]:
    merged: dict[str, tuple[str, ...]] = {}
    for key, values in ranges:
        merged[key] = values
    return [dict(zip(merged, combo, strict=True)) for combo in itertools.product(*merged.values())]


def build_cases(
    envs: Mapping[str, str],
    build: str | None,
    exec_: str | None,
    *,
    env_ranges: Sequence[tuple[str, tuple[str, ...]]] = (),
    build_ranges: Sequence[tuple[str, tuple[str, ...]]] = (),
    exec_ranges: Sequence[tuple[str, tuple[str, ...]]] = (),
) -> list[Case]:
    """Expand the range variables into the Cartesian product of cases, without duplicates.

    ``$VAR``/``${VAR}`` in env values, the build and the exec command are replaced by the
    values of the corresponding range kind; other ``$`` text is left as is.  Missing
    build/exec commands become ``"*"`` (the image's default).
    """
    cases: dict[Case, None] = {}
    for env_map, build_map, exec_map in itertools.product(
        _product(env_ranges), _product(build_ranges), _product(exec_ranges)
    ):
        env_items = tuple((k, string.Template(v).safe_substitute(env_map) if env_map else v) for k, v in envs.items())
        b = string.Template(build).safe_substitute(build_map) if build and build_map else (build or "*")
        e = string.Template(exec_).safe_substitute(exec_map) if exec_ and exec_map else (exec_ or "*")
        cases[Case(env_items, b, e)] = None
    return list(cases)


class CommaSeparatedList(click.ParamType):
    """A comma-separated list of non-empty strings."""

    name = "LIST"

    def convert(self, value: Any, param: click.Parameter | None, ctx: click.Context | None) -> list[str]:
        if isinstance(value, list):
            return value
        items = [v.strip() for v in str(value).split(",") if v.strip()]
        if not items:
            self.fail("expected a comma-separated list", param, ctx)
        return items


class PortList(click.ParamType):
    """A comma-separated list of port numbers between 1024 and 65535."""

    name = "PORTS"

    def convert(self, value: Any, param: click.Parameter | None, ctx: click.Context | None) -> list[int]:
        if isinstance(value, list):
            return value
        ports: list[int] = []
        for item in str(value).split(","):
            item = item.strip()
            if not item:
                continue
            if not item.isdigit() or not 1024 <= int(item) <= 65535:
                self.fail(f"{item!r} is not a port number between 1024 and 65535", param, ctx)
            ports.append(int(item))
        if not ports:
            self.fail("expected a comma-separated list of ports", param, ctx)
        return ports


class SessionNameType(click.ParamType):
    """A session name of 4 to 64 characters."""

    name = "NAME"

    def convert(self, value: Any, param: click.Parameter | None, ctx: click.Context | None) -> str:
        from ..naming import validate_session_name

        try:
            return validate_session_name(str(value))
        except ValueError as e:
            self.fail(str(e), param, ctx)
