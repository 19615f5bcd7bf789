"""A GraphQL document's cost, bounded before anything runs.

One request must not be able to hold the database pool or the event loop for long: a query with
10,000 aliases of a list field once held both for over 30 s. Before validation and execution every
document is measured (size in bytes, aliased fields, fragment spreads, and the fields it would resolve
with every fragment spread expanded) and refused with a 400 naming the limit it exceeds. Depth is
bounded separately (``QueryDepthLimiter``). Accepted documents are remembered, so the clients' usual
few queries are measured once. While they run, one access key has only a few documents running at once
(:class:`InFlight`; the others wait their turn), and a query (not a mutation: its transaction is left
to finish) is cut off after ``[manager] graphql-timeout`` seconds with a 503.
"""

from __future__ import annotations

import asyncio
from collections import OrderedDict
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from dataclasses import dataclass

from graphql import (
    DocumentNode,
    FieldNode,
    FragmentDefinitionNode,
    FragmentSpreadNode,
    GraphQLError,
    InlineFragmentNode,
    OperationDefinitionNode,
    OperationType,
    SelectionSetNode,
    parse,
)

from ai.backend.common.problems import InvalidAPIParameters, TooManyRequests


@dataclass(frozen=True)
class CostLimits:
    """The most a document may ask for (the official clients' largest documents use a fraction)."""

    max_bytes: int = 64 * 1024
    max_aliases: int = 100
    max_fragment_spreads: int = 200
    max_fields: int = 2000  # with every fragment spread expanded


class DocumentTooCostly(InvalidAPIParameters):
    slug, title = "graphql-too-costly", "GraphQL document too costly"


class _Counter:
    def __init__(self, doc: DocumentNode, limits: CostLimits) -> None:
        self.limits = limits
        self.fragments = {d.name.value: d for d in doc.definitions if isinstance(d, FragmentDefinitionNode)}
        self.aliases = 0
        self.spreads = 0
        self.fields = 0
        self._fragment_fields: dict[str, int] = {}

    def _bump_fields(self, n: int) -> None:
        self.fields += n
        if self.fields > self.limits.max_fields:
            raise DocumentTooCostly(
                f"The document resolves more than {self.limits.max_fields} fields "
                "(fragments expanded); split it into smaller queries or use pagination."
            )

    def selection_fields(self, sel: SelectionSetNode | None, stack: tuple[str, ...]) -> int:
        """Fields under ``sel`` with fragments expanded; counts aliases and spreads on the way."""
        if sel is None:
            return 0
        total = 0
        for node in sel.selections:
            if isinstance(node, FieldNode):
                if node.alias is not None:
                    self.aliases += 1
                    if self.aliases > self.limits.max_aliases:
                        raise DocumentTooCostly(f"The document has more than {self.limits.max_aliases} aliases.")
                total += 1 + self.selection_fields(node.selection_set, stack)
            elif isinstance(node, InlineFragmentNode):
                total += self.selection_fields(node.selection_set, stack)
            elif isinstance(node, FragmentSpreadNode):
                self.spreads += 1
                if self.spreads > self.limits.max_fragment_spreads:
                    raise DocumentTooCostly(
                        f"The document has more than {self.limits.max_fragment_spreads} fragment spreads."
                    )
                total += self.fragment_fields(node.name.value, stack)
            if total > self.limits.max_fields:
                self._bump_fields(total)
        return total

    def fragment_fields(self, name: str, stack: tuple[str, ...]) -> int:
        if name in stack:
            return 0  # a cycle: validation refuses it with its own message
        cached = self._fragment_fields.get(name)
        if cached is not None:
            return cached
        frag = self.fragments.get(name)
        n = self.selection_fields(frag.selection_set, (*stack, name)) if frag is not None else 0
        self._fragment_fields[name] = n
        return n


class CostGate:
    """Measures documents against :class:`CostLimits`; raises :class:`DocumentTooCostly`."""

    def __init__(self, limits: CostLimits | None = None, cache_size: int = 512) -> None:
        self.limits = limits or CostLimits()
        self._accepted: OrderedDict[str, bool] = OrderedDict()  # document -> whether it has a mutation
        self._cache_size = cache_size

    def check(self, query: str) -> bool:
        """Refuse ``query`` if it exceeds a limit; a document that does not parse is left to validation.
        Returns whether the document has a mutation (which must not be cut short, see ``__init__``)."""
        known = self._accepted.get(query)
        if known is not None:
            self._accepted.move_to_end(query)
            return known
        size = len(query.encode("utf-8", "surrogatepass"))
        if size > self.limits.max_bytes:
            raise DocumentTooCostly(f"The document has {size} bytes; at most {self.limits.max_bytes} are accepted.")
        try:
            doc = parse(query, no_location=True)
        except GraphQLError:
            return False
        counter = _Counter(doc, self.limits)
        mutates = False
        for op in doc.definitions:
            if isinstance(op, OperationDefinitionNode):
                counter._bump_fields(counter.selection_fields(op.selection_set, ()))
                mutates = mutates or op.operation == OperationType.MUTATION
        self._accepted[query] = mutates
        if len(self._accepted) > self._cache_size:
            self._accepted.popitem(last=False)
        return mutates


class InFlight:
    """Turns of the GraphQL documents of each access key: at most ``limit`` run at once (so a tenant cannot
    take the whole database pool with parallel queries), the next ones wait holding nothing, and beyond
    ``max_waiting`` waiting ones a request is refused with 429."""

    def __init__(self, limit: int, max_waiting: int = 256) -> None:
        self.limit = limit
        self.max_waiting = max_waiting
        self._keys: dict[str, tuple[asyncio.Semaphore, list[int]]] = {}  # key -> (turns, [requests held])

    @asynccontextmanager
    async def slot(self, access_key: str) -> AsyncIterator[None]:
        entry = self._keys.get(access_key)
        if entry is None:
            entry = self._keys[access_key] = (asyncio.Semaphore(self.limit), [0])
        turns, held = entry
        if held[0] >= self.limit + self.max_waiting:
            raise TooManyRequests(
                f"This access key has {held[0]} GraphQL requests running or waiting; wait for them to finish."
            )
        held[0] += 1
        try:
            async with turns:
                yield
        finally:
            held[0] -= 1
            if not held[0]:
                del self._keys[access_key]
