"""Validation of the admin GraphQL mutations' inputs; a bad value is a 400 that names the field."""

from __future__ import annotations

import re
import uuid
from collections.abc import Mapping, Sequence
from typing import Any

import strawberry

from ai.backend.common.problems import InvalidAPIParameters
from ai.backend.common.types import BinarySize, ResourceSlot, SlotTypeError

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
    """``value`` as a UUID, or a 400 naming ``what``."""
    try:
        return uuid.UUID(str(value))
    except ValueError:
        raise InvalidAPIParameters(f"{what} {value!r} is not a UUID.") from None


def check_nonneg(value: int, what: str) -> int:
    """``value`` unless it is negative (a 400 naming ``what``)."""
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
    """A JSON object (``{}`` for null), or a 400 naming ``what``."""
    if value is None:
        return {}
    if not isinstance(value, Mapping):
        raise InvalidAPIParameters(f"{what} must be a JSON object.")
    return dict(value)


def parse_size(value: Any, what: str) -> int:
    """A byte size such as ``"64m"`` or ``1024`` as an integer, or a 400 naming ``what``."""
    try:
        return int(BinarySize.parse(value))
    except SlotTypeError as e:
        raise InvalidAPIParameters(f"{what}: {e}.") from None


def check_str_list(value: Any, what: str) -> list[str]:
    """A list of strings (``[]`` for null), or a 400 naming ``what``."""
    if value is None:
        return []
    if not isinstance(value, list) or not all(isinstance(v, str) for v in value):
        raise InvalidAPIParameters(f"{what} must be a list of strings.")
    return list(value)


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
