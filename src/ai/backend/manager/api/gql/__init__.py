"""The admin GraphQL API: ``POST /admin/graphql`` (bare data, seed style) and ``POST /admin/gql``
(standard ``{data, errors}`` envelope).

The schema is assembled from the area modules of this package: each module that defines a
``Query`` and/or ``Mutation`` strawberry type contributes its fields. Introspection is off
unless ``[manager] allow-graphql-introspection`` is set, query depth is capped, and a document's size,
aliases, fragment spreads and expanded field count are bounded before it runs (``cost.py``).
"""

from __future__ import annotations

import asyncio
import importlib
import logging
import pkgutil
from dataclasses import dataclass
from typing import Any

import strawberry
from fastapi import APIRouter, Depends, Request
from fastapi.responses import JSONResponse
from graphql import GraphQLError
from graphql.validation import NoSchemaIntrospectionCustomRule
from strawberry.extensions import AddValidationRules, ParserCache, QueryDepthLimiter, ValidationCache
from strawberry.schema.config import StrawberryConfig
from strawberry.schema.exceptions import CannotGetOperationTypeError
from strawberry.tools import merge_types

from ai.backend.common.problems import (
    PROBLEM_BASE,
    InvalidAPIParameters,
    ProblemError,
    ServiceUnavailable,
    problem_document,
)

from ...auth import AuthContext
from ...config import ManagerConfig
from ..deps import auth_required, json_body, manager_context
from .context import GQLContext
from .cost import CostGate, InFlight
from .scalars import SCALARS
from .variable_types import VariableTypeNormalizer

log = logging.getLogger(__name__)
MAX_DEPTH = 10


def _collect() -> tuple[list[type], list[type]]:
    queries: list[type] = []
    mutations: list[type] = []
    for mod in sorted(pkgutil.iter_modules(__path__), key=lambda m: m.name):
        module = importlib.import_module(f"{__name__}.{mod.name}")
        if hasattr(module, "Query"):
            queries.append(module.Query)
        if hasattr(module, "Mutation"):
            mutations.append(module.Mutation)
    return queries, mutations


class _Schema(strawberry.Schema):
    """Logs only what is not the caller's fault; refusals and invalid documents are answered, not logged."""

    def process_errors(self, errors: list[GraphQLError], execution_context: Any = None) -> None:
        for error in errors:
            orig = error.original_error
            if orig is None or isinstance(orig, ProblemError | GraphQLError) or error.path is None:
                continue
            log.error("GraphQL resolver error at %s", error.path, exc_info=orig)


def build_schema(*, allow_introspection: bool = False) -> strawberry.Schema:
    """Assemble the schema from the area modules."""
    queries, mutations = _collect()
    # Parsed and validated documents are cached: clients send the same few queries over and over.
    extensions: list[Any] = [
        ParserCache(maxsize=512),
        ValidationCache(maxsize=512),
        QueryDepthLimiter(max_depth=MAX_DEPTH),
    ]
    if not allow_introspection:
        extensions.append(AddValidationRules([NoSchemaIntrospectionCustomRule]))
    return _Schema(
        query=merge_types("Query", tuple(queries)),
        mutation=merge_types("Mutation", tuple(mutations)) if mutations else None,
        config=StrawberryConfig(auto_camel_case=False, scalar_map=SCALARS),
        extensions=extensions,
    )


@dataclass(frozen=True, slots=True)
class GraphQLRuntime:
    """The schema and what every document goes through before it runs: the cost gate, the variable-type
    normalizer and the per-key concurrency limit."""

    schema: strawberry.Schema
    variable_types: VariableTypeNormalizer
    cost: CostGate
    in_flight: InFlight
    timeout: float

    @classmethod
    def for_config(cls, config: ManagerConfig) -> GraphQLRuntime:
        schema = build_schema(allow_introspection=config.manager.allow_graphql_introspection)
        return cls(
            schema,
            VariableTypeNormalizer(schema._schema),
            CostGate(),
            InFlight(config.manager.graphql_concurrency),
            config.manager.graphql_timeout,
        )


router = APIRouter()


class GQLOutcome:
    """The executed document: data, client-facing errors and the first refusal, if any."""

    def __init__(self, data: Any, errors: list[dict[str, Any]], problem: ProblemError | None) -> None:
        self.data = data
        self.errors = errors
        self.problem = problem


async def _execute(request: Request, ctx: AuthContext) -> GQLOutcome:
    body = await json_body(request)
    query = body.get("query")
    if not isinstance(query, str) or not query.strip():
        raise InvalidAPIParameters("'query' must be a non-empty GraphQL document string.")
    variables = body.get("variables") or {}
    if not isinstance(variables, dict):
        raise InvalidAPIParameters("'variables' must be an object.")
    op_name = body.get("operation_name") or body.get("operationName")
    if op_name is not None and not isinstance(op_name, str):
        raise InvalidAPIParameters("'operation_name' must be a string.")
    mgr = manager_context(request)
    gctx = GQLContext(auth=ctx, db=mgr.db, registry=mgr.registry, state=mgr)
    rt = mgr.graphql
    mutates = rt.cost.check(query)  # before anything else looks at the document
    query = rt.variable_types.normalize(query)
    timeout = None if mutates else rt.timeout
    try:
        async with rt.in_flight.slot(ctx.access_key):
            async with asyncio.timeout(timeout):
                result = await rt.schema.execute(
                    query, variable_values=variables, context_value=gctx, operation_name=op_name
                )
    except CannotGetOperationTypeError:
        raise InvalidAPIParameters(f"'operationName' {op_name!r} names no operation of the document.") from None
    except TimeoutError:
        raise ServiceUnavailable(
            f"The query ran longer than {timeout} s and was stopped; ask for less (pagination, fewer fields)."
        ) from None
    errors: list[dict[str, Any]] = []
    problem: ProblemError | None = None
    for err in result.errors or []:
        orig = err.original_error
        entry: dict[str, Any] = {
            "message": err.message,
            "path": err.path,
            "locations": [loc._asdict() for loc in err.locations or []],
        }
        if isinstance(orig, ProblemError):
            entry["message"] = orig.detail or orig.title
            entry["extensions"] = {"status": orig.status, "type": PROBLEM_BASE + orig.slug}
            problem = problem or orig
        elif orig is not None and not isinstance(orig, GraphQLError) and err.path is not None:
            # A bug, not bad input (logged by _Schema): tell the client nothing about the internals. Errors
            # without a path come from validating the document or the variables, e.g. a scalar refusing a value.
            entry["message"] = "Internal error while resolving this field; it was logged."
            problem = problem or ProblemError("Internal error while resolving a GraphQL field; it was logged.")
        errors.append(entry)
    return GQLOutcome(result.data, errors, problem)


def _problem(outcome: GQLOutcome) -> JSONResponse:
    if outcome.problem is not None:
        body = outcome.problem.body()
        body["errors"] = outcome.errors
        return JSONResponse(body, status_code=outcome.problem.status, media_type="application/problem+json")
    return JSONResponse(
        problem_document(
            400,
            "graphql-error",
            "GraphQL-generated error",
            outcome.errors[0]["message"],
            errors=outcome.errors,
            data=outcome.errors,
        ),
        status_code=400,
        media_type="application/problem+json",
    )


@router.post("/admin/gql")
async def gql(request: Request, ctx: AuthContext = Depends(auth_required)) -> JSONResponse:
    """Standard GraphQL envelope; refusals (403/404/409/400 from resolvers) keep their HTTP status."""
    outcome = await _execute(request, ctx)
    if outcome.problem is not None:
        return _problem(outcome)
    payload: dict[str, Any] = {"data": outcome.data}
    if outcome.errors:
        payload["errors"] = outcome.errors
    return JSONResponse(payload)


@router.post("/admin/graphql")
async def graphql_legacy(request: Request, ctx: AuthContext = Depends(auth_required)) -> JSONResponse:
    """The seed's endpoint: the bare data object, or a problem+json body on any error."""
    outcome = await _execute(request, ctx)
    if outcome.errors:
        return _problem(outcome)
    return JSONResponse(outcome.data)
