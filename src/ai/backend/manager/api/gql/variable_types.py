"""Declared variable types of the official clients, rewritten to the schema's before validation.

GraphQL compares a variable's declared type with the argument's by name, and the official clients of
two generations declare different names for the same arguments: the 19.09 CLI says ``$gid: String!``
for ``group(id: UUID!)``, the 22.03 SDK ``$user_id: ID`` for ``user_from_uuid(user_id: String)`` and
``$input: CreateScalingGroupInput!`` where 19.09 (and the seed) say ``ScalingGroupInput``. No single
schema satisfies both, so the server rewrites the declaration instead (ADR 0008):

* a declared input type with a known other name (:data:`INPUT_ALIASES`) is renamed;
* a declared string-like scalar (``String``, ``ID``, ``UUID``) used only where the schema expects
  another string-like scalar takes that scalar's name, keeping the declared list/non-null wrapping.

Nothing else changes: values are still parsed (and refused) by the schema's own scalar, so a malformed
UUID is still a clear error. Documents without variables are returned as they are, without parsing.
"""

from __future__ import annotations

from collections import OrderedDict
from typing import Any

from graphql import (
    DocumentNode,
    GraphQLError,
    GraphQLSchema,
    ListTypeNode,
    NamedTypeNode,
    NonNullTypeNode,
    OperationDefinitionNode,
    TypeInfo,
    TypeInfoVisitor,
    TypeNode,
    VariableDefinitionNode,
    VariableNode,
    Visitor,
    get_named_type,
    parse,
    visit,
)

STRING_LIKE = frozenset({"String", "ID", "UUID"})
INPUT_ALIASES = {"CreateScalingGroupInput": "ScalingGroupInput"}


def _named(node: TypeNode) -> NamedTypeNode:
    while isinstance(node, NonNullTypeNode | ListTypeNode):
        node = node.type
    assert isinstance(node, NamedTypeNode)
    return node


class _Usages(Visitor):
    """The named input types that each variable is used as, outside its own declaration."""

    def __init__(self, type_info: TypeInfo) -> None:
        super().__init__()
        self.type_info = type_info
        self.expected: dict[str, set[str]] = {}

    def enter_variable(self, node: VariableNode, _key: Any, parent: Any, *_: Any) -> None:
        if isinstance(parent, VariableDefinitionNode):
            return
        typ = self.type_info.get_input_type()
        name = get_named_type(typ).name if typ is not None else "?"
        self.expected.setdefault(node.name.value, set()).add(name)


class VariableTypeNormalizer:
    """Rewrites the variable declarations of incoming documents for one schema; results are cached."""

    def __init__(self, schema: GraphQLSchema, cache_size: int = 512) -> None:
        self.schema = schema
        self._cache: OrderedDict[str, str] = OrderedDict()
        self._cache_size = cache_size

    def normalize(self, query: str) -> str:
        """``query`` with its variable declarations matched to the schema (the same string if nothing
        needs it, or if the document does not parse: validation then reports the problem)."""
        if "$" not in query:
            return query
        hit = self._cache.get(query)
        if hit is not None:
            self._cache.move_to_end(query)
            return hit
        out = self._rewrite(query)
        self._cache[query] = out
        if len(self._cache) > self._cache_size:
            self._cache.popitem(last=False)
        return out

    def _rewrite(self, query: str) -> str:
        try:
            doc = parse(query)
        except GraphQLError:
            return query
        if not self._needs_look(doc):
            return query
        type_info = TypeInfo(self.schema)
        usages = _Usages(type_info)
        visit(doc, TypeInfoVisitor(type_info, usages))
        edits: list[tuple[int, int, str]] = []
        for op in doc.definitions:
            if not isinstance(op, OperationDefinitionNode):
                continue
            for vdef in op.variable_definitions or ():
                named = _named(vdef.type)
                new = self._target(named.name.value, usages.expected.get(vdef.variable.name.value, set()))
                if new is not None and named.loc is not None:
                    edits.append((named.loc.start, named.loc.end, new))
        # Replaced in the source text (from the end, so offsets stay valid): the rest of the document,
        # and so any error location reported later, stays as the client sent it.
        for start, end, new in sorted(edits, reverse=True):
            query = query[:start] + new + query[end:]
        return query

    def _needs_look(self, doc: DocumentNode) -> bool:
        for op in doc.definitions:
            if isinstance(op, OperationDefinitionNode):
                for vdef in op.variable_definitions or ():
                    name = _named(vdef.type).name.value
                    if name in STRING_LIKE or name in INPUT_ALIASES:
                        return True
        return False

    def _target(self, declared: str, expected: set[str]) -> str | None:
        if declared in INPUT_ALIASES and self.schema.get_type(declared) is None:
            return INPUT_ALIASES[declared]
        if declared in STRING_LIKE and len(expected) == 1:
            (want,) = expected
            if want in STRING_LIKE and want != declared:
                return want
        return None
