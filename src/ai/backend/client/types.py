"""Small shared types: the :data:`undefined` placeholder and :class:`PaginatedResult`."""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass, field
from typing import Generic, TypeVar

from .config import Undefined, undefined

__all__ = ("PaginatedResult", "Undefined", "undefined")

T = TypeVar("T")


@dataclass
class PaginatedResult(Generic[T]):
    """One page of a GraphQL ``*_list`` query."""

    total_count: int
    items: list[T]
    fields: Sequence[str] = field(default_factory=tuple)
