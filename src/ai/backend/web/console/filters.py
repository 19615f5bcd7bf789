"""Jinja2 filters for the console's templates: sizes, times, durations, resource slots."""

from __future__ import annotations

import datetime as dt
from decimal import Decimal, InvalidOperation
from typing import Any

import jinja2

__all__ = ["install"]


def human_bytes(value: Any) -> str:
    """``1536`` → ``1.5 KiB``."""
    try:
        n = float(value)
    except (TypeError, ValueError):
        return "–"
    for unit in ("B", "KiB", "MiB", "GiB", "TiB"):
        if abs(n) < 1024 or unit == "TiB":
            return f"{n:.0f} {unit}" if unit == "B" else f"{n:.1f} {unit}"
        n /= 1024
    return f"{n:.1f} PiB"


def when(value: Any) -> str:
    """An ISO-8601 time (or epoch seconds) as ``YYYY-MM-DD HH:MM:SS`` UTC; ``–`` for none."""
    if value in (None, ""):
        return "–"
    try:
        if isinstance(value, int | float):
            t = dt.datetime.fromtimestamp(value, dt.UTC)
        else:
            t = dt.datetime.fromisoformat(str(value).replace("Z", "+00:00"))
            if t.tzinfo is None:
                t = t.replace(tzinfo=dt.UTC)
        return t.astimezone(dt.UTC).strftime("%Y-%m-%d %H:%M:%S UTC")
    except (ValueError, OverflowError, OSError):
        return str(value)


def duration(seconds: Any) -> str:
    """``3725`` → ``1h 2m 5s``."""
    try:
        s = int(float(seconds))
    except (TypeError, ValueError):
        return "–"
    h, rem = divmod(max(s, 0), 3600)
    m, s = divmod(rem, 60)
    return f"{h}h {m}m {s}s" if h else (f"{m}m {s}s" if m else f"{s}s")


def slot(value: Any, name: str = "") -> str:
    """A resource-slot amount: memory in GiB/MiB, others as plain numbers."""
    try:
        d = Decimal(str(value))
    except (InvalidOperation, ValueError):
        return str(value)
    if name == "mem" or name.endswith(".mem"):
        return human_bytes(d)
    return f"{d.normalize():f}"


def install(env: jinja2.Environment) -> None:
    """Add the filters to ``env``."""
    env.filters.update(bytes=human_bytes, when=when, duration=duration, slot=slot)
