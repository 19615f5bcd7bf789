"""A GraphQL document's cost, bounded before anything runs.

One request must not be able to hold the database pool or the event loop for long: a query with
10,000 aliases of a list field once held both for over 30 s. Before validation and execution every
document is measured (size in bytes, aliased fields, fragment spreads, and the fields it would resolve
with every fragment spread expanded) and refused with a 400 naming the limit it exceeds. Depth is
bounded separately (``QueryDepthLimiter``). Accepted documents are remembered, so the clients' usual
few queries are measured once.
"""

from __future__ import annotations

from collections import OrderedDict
from dataclasses import dataclass

from graphql import (
    DocumentNode,
    FieldNode,
    FragmentDefinitionNode,
    FragmentSpreadNode,
    GraphQLError,
    InlineFragmentNode,
    OperationDefinitionNode,
    SelectionSetNode,
    parse,
)

from ai.backend.common.problems import InvalidAPIParameters


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
            raise DocumentTooCostly(f"The document resolves more than {self.limits.max_fields} fields "
                                    "(fragments expanded); split it into smaller queries or use pagination.")

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
                        f"The document has more than {self.limits.max_fragment_spreads} fragment spreads.")
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
        self._accepted: OrderedDict[str, None] = OrderedDict()
        self._cache_size = cache_size

    def check(self, query: str) -> None:
        """Refuse ``query`` if it exceeds a limit; a document that does not parse is left to validation."""
        if query in self._accepted:
            self._accepted.move_to_end(query)
            return
        size = len(query.encode("utf-8", "surrogatepass"))
        if size > self.limits.max_bytes:
            raise DocumentTooCostly(f"The document has {size} bytes; at most {self.limits.max_bytes} are accepted.")
        try:
            doc = parse(query, no_location=True)
        except GraphQLError:
            return
        counter = _Counter(doc, self.limits)
        for op in doc.definitions:
            if isinstance(op, OperationDefinitionNode):
                counter._bump_fields(counter.selection_fields(op.selection_set, ()))
        self._accepted[query] = None
        if len(self._accepted) > self._cache_size:
            self._accepted.popitem(last=False)
