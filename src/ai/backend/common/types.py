"""Resource slots and binary sizes: the units every component schedules and reports in."""

from __future__ import annotations

import re
from collections.abc import ItemsView, Iterator, KeysView, Mapping, ValuesView
from decimal import Decimal, InvalidOperation
from typing import Any

__all__ = ["BinarySize", "ResourceSlot", "SlotTypeError", "SLOT_TYPES"]

_SIZE_RE = re.compile(r"^\s*(\d+(?:\.\d+)?)\s*([kmgtpezy]?)(i?b)?\s*$", re.IGNORECASE)
_SUFFIXES = "kmgtpezy"

# Known slot kinds: "count" (a positive real) or "bytes" (sizes with binary suffixes).
SLOT_TYPES: dict[str, str] = {"cpu": "count", "mem": "bytes"}


class SlotTypeError(ValueError):
    """A resource slot name or value is malformed."""


class BinarySize(int):
    """An integer byte count that parses ``512m``, ``4g``, ``64GiB`` and prints compactly."""

    @classmethod
    def parse(cls, value: str | int | float | Decimal) -> BinarySize:
        """Parse a byte count; suffixes k..y are powers of 1024 (case-insensitive, ``iB`` optional)."""
        if isinstance(value, bool):
            raise SlotTypeError(f"not a size: {value!r}")
        if isinstance(value, int):
            if value < 0:
                raise SlotTypeError(f"negative size: {value}")
            return cls(value)
        if isinstance(value, float | Decimal):
            if value < 0 or value != value:
                raise SlotTypeError(f"invalid size: {value}")
            return cls(int(value))
        m = _SIZE_RE.match(str(value))
        if m is None:
            raise SlotTypeError(f"invalid size {value!r} (use e.g. 512m, 4g, 1073741824)")
        num = Decimal(m.group(1))
        suffix = m.group(2).lower()
        mult = 1024 ** (_SUFFIXES.index(suffix) + 1) if suffix else 1
        return cls(int(num * mult))

    def __str__(self) -> str:
        n = int(self)
        for i in range(len(_SUFFIXES), 0, -1):
            unit = 1024**i
            if n >= unit and n % unit == 0:
                return f"{n // unit}{_SUFFIXES[i - 1]}"
        return str(n)


def _normalize_value(name: str, value: Any) -> Decimal:
    kind = SLOT_TYPES.get(name, "bytes" if name.endswith(".mem") else "count")
    try:
        if kind == "bytes":
            try:
                return Decimal(int(BinarySize.parse(value)))
            except SlotTypeError as e:
                raise SlotTypeError(f"slot {name!r}: {e}") from None
        if isinstance(value, bool):
            raise SlotTypeError(f"slot {name!r}: not a number: {value!r}")
        if isinstance(value, str) and value.strip().lower() == "infinity":
            return Decimal("Infinity")
        d = Decimal(str(value).strip())
    except (InvalidOperation, ValueError) as e:
        if isinstance(e, SlotTypeError):
            raise
        raise SlotTypeError(f"slot {name!r}: not a number: {value!r}") from None
    if d.is_nan() or d < 0:
        raise SlotTypeError(f"slot {name!r}: must be a non-negative number, got {value!r}")
    return d


_SLOT_NAME_RE = re.compile(r"^[a-z][a-z0-9_-]*(\.[a-z0-9_-]+)?$")
_ZERO = Decimal(0)


class ResourceSlot(Mapping[str, Decimal]):
    """An immutable mapping of slot name (``cpu``, ``mem``, ``cuda.device``...) to a Decimal amount."""

    __slots__ = ("_data",)

    def __init__(self, data: Mapping[str, Decimal] | None = None) -> None:
        self._data: dict[str, Decimal] = dict(data or {})

    @classmethod
    def _own(cls, data: dict[str, Decimal]) -> ResourceSlot:
        """Wrap ``data`` without copying it (the caller gives it up; the hot paths below build fresh dicts)."""
        obj = object.__new__(cls)
        obj._data = data
        return obj

    @classmethod
    def from_user_input(cls, data: Mapping[str, Any] | None) -> ResourceSlot:
        """Validate and normalize slots from an API body or CLI (``{"cpu": "2", "mem": "4g"}``)."""
        if data is None:
            return cls()
        if not isinstance(data, Mapping):
            raise SlotTypeError("resources must be an object of slot names to amounts")
        out: dict[str, Decimal] = {}
        for name, value in data.items():
            if not isinstance(name, str) or not _SLOT_NAME_RE.match(name):
                raise SlotTypeError(f"invalid resource slot name: {name!r}")
            out[name] = _normalize_value(name, value)
        return cls(out)

    @classmethod
    def from_json(cls, data: Mapping[str, Any] | None) -> ResourceSlot:
        """Load slots stored by :meth:`to_json` (trusted input)."""
        return cls._own({k: Decimal(v if type(v) is str else str(v)) for k, v in (data or {}).items()})

    def to_json(self) -> dict[str, str]:
        """Serialize with every value as a string (bytes unscaled), as the API documents."""
        out: dict[str, str] = {}
        for k, v in self._data.items():
            if v.is_infinite():
                out[k] = "Infinity"
            elif v == v.to_integral_value():
                out[k] = str(int(v))
            else:
                out[k] = format(v.normalize(), "f")
        return out

    def __getitem__(self, key: str) -> Decimal:
        return self._data[key]

    def __iter__(self) -> Iterator[str]:
        return iter(self._data)

    def __len__(self) -> int:
        return len(self._data)

    # The Mapping mixins go through __getitem__ (and a KeyError per missing key); the dict's own are faster.
    def __contains__(self, key: object) -> bool:
        return key in self._data

    def get(self, key: str, default: Any = None) -> Any:
        return self._data.get(key, default)

    def keys(self) -> KeysView[str]:
        return self._data.keys()

    def values(self) -> ValuesView[Decimal]:
        return self._data.values()

    def items(self) -> ItemsView[str, Decimal]:
        return self._data.items()

    def __repr__(self) -> str:
        return f"ResourceSlot({self.to_json()!r})"

    def __eq__(self, other: object) -> bool:
        if not isinstance(other, Mapping):
            return NotImplemented
        keys = set(self) | set(other)
        return all(self.get(k, Decimal(0)) == Decimal(str(other.get(k, 0))) for k in keys)

    def __hash__(self) -> int:
        return hash(tuple(sorted((k, v) for k, v in self._data.items() if v != 0)))

    def __add__(self, other: Mapping[str, Decimal]) -> ResourceSlot:
        # Every key of either side; a key missing on one side counts as 0 there (and is added to 0).
        mine = self._data
        theirs = other._data if isinstance(other, ResourceSlot) else other
        out = {k: v + theirs.get(k, _ZERO) for k, v in mine.items()}
        for k, v in theirs.items():
            if k not in mine:
                out[k] = _ZERO + v
        return ResourceSlot._own(out)

    def __sub__(self, other: Mapping[str, Decimal]) -> ResourceSlot:
        mine = self._data
        theirs = other._data if isinstance(other, ResourceSlot) else other
        out = {k: v - theirs.get(k, _ZERO) for k, v in mine.items()}
        for k, v in theirs.items():
            if k not in mine:
                out[k] = _ZERO - v
        return ResourceSlot._own(out)

    def fits_in(self, capacity: Mapping[str, Decimal]) -> bool:
        """True if every slot here is at most the same slot of ``capacity`` (missing = 0)."""
        cap = capacity._data if isinstance(capacity, ResourceSlot) else capacity
        for k, v in self._data.items():
            if v > 0 and not v <= cap.get(k, _ZERO):
                return False
        return True

    def exceeding(self, limit: Mapping[str, Decimal]) -> list[str]:
        """Names of the slots that exceed ``limit`` (slots absent from ``limit`` are unlimited)."""
        lim = limit._data if isinstance(limit, ResourceSlot) else limit
        return [k for k, v in self._data.items() if k in lim and v > lim[k]]

    def filled(self, defaults: Mapping[str, Decimal]) -> ResourceSlot:
        """A copy with the slots missing here taken from ``defaults``."""
        merged = dict(defaults)
        merged.update(self._data)
        return ResourceSlot(merged)
