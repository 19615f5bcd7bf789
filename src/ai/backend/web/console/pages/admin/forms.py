"""The admin forms' field parsers (each raises a 400 :class:`ConsoleError` naming the field) and the resource
slot inputs (one per slot type of the cluster)."""

from __future__ import annotations

import json
import re
from collections.abc import Iterable, Mapping
from typing import Any

from aiohttp import web
from multidict import MultiDictProxy

from ai.backend.common.types import BinarySize, ResourceSlot, SlotTypeError

from ...base import ConsoleError, Login, api

#: The same e-mail rule as the manager's (so the console's message comes first, not a different verdict).
EMAIL_RE = re.compile(r"^[^@\s]+@[^@\s]+$")


SLUG_RE = re.compile(r"^[A-Za-z0-9](?:[A-Za-z0-9._-]*[A-Za-z0-9])?$")


def json_field(value: Any) -> Any:
    """A ``JSONString`` field's value (the manager sends it as JSON text)."""
    if isinstance(value, str):
        try:
            return json.loads(value)
        except ValueError:
            return {}
    return value if value is not None else {}


def form_values(form: MultiDictProxy[Any]) -> dict[str, str]:
    """The form's text fields (the last value of each), to fill the form in again."""
    return {k: v for k, v in form.items() if isinstance(v, str) and k != "_csrf"}


def form_text(form: Mapping[str, Any], name: str, label: str, *, required: bool = False, max_len: int = 512) -> str:
    value = form.get(name, "")
    value = value.strip() if isinstance(value, str) else ""
    if required and not value:
        raise ConsoleError(400, "Invalid form", f"{label} is required.")
    if len(value) > max_len:
        raise ConsoleError(400, "Invalid form", f"{label} must be at most {max_len} characters.")
    return value


def form_checked(form: Mapping[str, Any], name: str) -> bool:
    return form.get(name) in ("on", "true", "1", "yes")


def form_choice(form: Mapping[str, Any], name: str, label: str, choices: Iterable[str]) -> str:
    value = form_text(form, name, label, required=True)
    options = list(choices)
    if value not in options:
        raise ConsoleError(400, "Invalid form", f"{label} must be one of {', '.join(options)}.")
    return value


def form_count(form: Mapping[str, Any], name: str, label: str, *, minimum: int = 0, default: int | None = None) -> int:
    raw = form_text(form, name, label, required=default is None, max_len=20)
    if not raw and default is not None:
        return default
    try:
        n = int(raw)
    except ValueError:
        raise ConsoleError(400, "Invalid form", f"{label} must be a whole number, not {raw!r}.") from None
    if n < minimum:
        raise ConsoleError(400, "Invalid form", f"{label} must be at least {minimum}.")
    if n > 2**53 - 1:
        raise ConsoleError(400, "Invalid form", f"{label} is too large.")
    return n


def form_size(form: Mapping[str, Any], name: str, label: str, *, default: int = 0) -> int:
    raw = form_text(form, name, label, max_len=32)
    if not raw:
        return default
    try:
        n = int(BinarySize.parse(raw))
    except SlotTypeError:
        raise ConsoleError(
            400, "Invalid form", f"{label}: {raw!r} is not a size (e.g. 512m, 10g, 1073741824)."
        ) from None
    if n > 2**53 - 1:
        raise ConsoleError(400, "Invalid form", f"{label} is too large.")
    return n


def form_names(form: Mapping[str, Any], name: str, label: str) -> list[str]:
    """A comma- or space-separated list of names."""
    raw = form_text(form, name, label, max_len=4096)
    return [part for part in re.split(r"[\s,]+", raw) if part]


def form_slug(form: Mapping[str, Any], name: str, label: str, max_len: int = 64) -> str:
    value = form_text(form, name, label, required=True, max_len=max_len)
    if not SLUG_RE.match(value):
        raise ConsoleError(
            400,
            "Invalid form",
            f"{label} {value!r} is not valid: use letters, digits, '-', '_' or '.', starting and ending with a "
            "letter or digit.",
        )
    return value


def form_email(form: Mapping[str, Any], name: str = "email") -> str:
    value = form_text(form, name, "E-mail", required=True, max_len=64)
    if not EMAIL_RE.match(value):
        raise ConsoleError(400, "Invalid form", f"{value!r} is not a valid e-mail address.")
    return value


async def slot_types(request: web.Request, login: Login) -> dict[str, str]:
    """The cluster's slot types and their kinds (``count`` or ``bytes``)."""
    answer = await api(request, login).get("/config/resource-slots")
    return {str(k): str(v) for k, v in (answer or {}).items()} if isinstance(answer, dict) else {}


def slot_fields(
    types: Mapping[str, str], current: Mapping[str, Any], form: Mapping[str, str] | None
) -> list[dict[str, str]]:
    """The slot inputs of a form: one per known slot type (and per slot the record already has)."""
    names = list(types) + [k for k in current if k not in types]
    out = []
    for name in names:
        kind = types.get(name, "bytes" if name.endswith(".mem") else "count")
        if form is not None:
            value = form.get(f"slot.{name}", "")
        else:
            raw = current.get(name)
            value = "" if raw is None else str(raw)
            if raw is not None and kind == "bytes" and str(raw).isdigit():
                value = str(BinarySize(int(str(raw))))
        out.append({"name": name, "kind": kind, "value": value})
    return out


def form_slots(form: Mapping[str, Any], types: Mapping[str, str], *, allow_infinite: bool = True) -> dict[str, str]:
    """The ``slot.<name>`` inputs as resource slots (empty inputs left out), or a 400 naming the bad one."""
    raw: dict[str, str] = {}
    for key, value in form.items():
        if isinstance(key, str) and key.startswith("slot.") and isinstance(value, str) and value.strip():
            raw[key[5:]] = value.strip()
    try:
        slots = ResourceSlot.from_user_input(raw).to_json()
    except SlotTypeError as e:
        raise ConsoleError(400, "Invalid form", f"Resource slots: {e}.") from None
    if not allow_infinite:
        infinite = [k for k, v in slots.items() if v == "Infinity"]
        if infinite:
            raise ConsoleError(400, "Invalid form", f"Resource slots must be finite: {', '.join(infinite)}.")
    return slots


def slot_order(keys: Iterable[str]) -> list[str]:
    """cpu, mem, then the other slots (accelerators) by name."""
    found = set(keys)
    head = [k for k in ("cpu", "mem") if k in found]
    return head + sorted(found - set(head))
