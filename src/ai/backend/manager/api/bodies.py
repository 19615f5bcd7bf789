"""Request bodies as pydantic models, read as leniently as before and described in the OpenAPI document.

A handler takes ``body: Model = Depends(body_of(Model))``: the dependency reads the body with
:func:`~.deps.json_body` (lenient JSON: an empty body is ``{}``, query-string parameters fill in what the
body lacks) and validates it into ``Model``. Routers are built with ``APIRouter(route_class=DocumentedRoute)``,
which finds such dependencies and writes the model into the route's OpenAPI operation: as the JSON request
body, or as query parameters on ``GET`` routes (which read the query string). See docs/adr/0011.
"""

from __future__ import annotations

import copy
from collections.abc import Callable, Coroutine
from typing import Annotated, Any, ClassVar, TypeVar

from fastapi import Request
from fastapi.dependencies.models import Dependant
from fastapi.routing import APIRoute
from pydantic import (
    AliasChoices,
    BaseModel,
    BeforeValidator,
    ConfigDict,
    Field,
    ValidationError,
    ValidationInfo,
    WithJsonSchema,
    model_validator,
)

from ai.backend.common.problems import InvalidAPIParameters

M = TypeVar("M", bound="RequestModel")

__all__ = [
    "AliasChoices",
    "DocumentedRoute",
    "Field",
    "LaterBool",
    "LaterInt",
    "LaterObject",
    "LaterStr",
    "LaterStrOrInt",
    "LaterStrs",
    "NonEmptyStr",
    "RawParams",
    "RequestModel",
    "body_of",
    "given",
    "validate_body",
]


class RequestModel(BaseModel):
    """Base of request bodies: unknown keys are ignored (clients send more than we read), every field may be
    given by its name or any alias, and (with ``null_is_absent``) a JSON ``null`` counts as not given."""

    model_config = ConfigDict(extra="ignore", populate_by_name=True)
    null_is_absent: ClassVar[bool] = True

    @model_validator(mode="before")
    @classmethod
    def _drop_nulls(cls, data: Any) -> Any:
        if cls.null_is_absent and isinstance(data, dict):
            return {k: v for k, v in data.items() if v is not None}
        return data


def _problem_detail(e: ValidationError) -> str:
    """``'field': message`` of the first error, naming the field as the client spelled it."""
    first = e.errors(include_url=False)[0]
    loc = ".".join(str(p) for p in first.get("loc", ())) or "body"
    if first.get("type") == "missing":
        return f"'{loc}' is required."
    msg = str(first.get("msg", "invalid value")).removeprefix("Value error, ")
    return f"'{loc}': {msg}"


def _non_empty(value: Any, info: ValidationInfo) -> str:
    if not isinstance(value, str) or not value:
        raise InvalidAPIParameters(f"'{info.field_name}' must be a non-empty string.")
    return value


# Field types taken as sent and checked by the handler's own code (whose messages and order the clients
# know), documented as the JSON type they must be.
LaterStr = Annotated[Any, WithJsonSchema({"type": "string"})]
LaterBool = Annotated[Any, WithJsonSchema({"type": "boolean"})]
LaterInt = Annotated[Any, WithJsonSchema({"type": "integer"})]
LaterObject = Annotated[Any, WithJsonSchema({"type": "object"})]
LaterStrOrInt = Annotated[Any, WithJsonSchema({"type": ["string", "integer"]})]
LaterStrs = Annotated[
    Any, WithJsonSchema({"anyOf": [{"type": "string"}, {"type": "array", "items": {"type": "string"}}]})
]


class RawParams(RequestModel):
    """A model that documents the keys a handler reads, one field per wire spelling, and leaves every check
    to the handler: :func:`given` hands it the keys the client sent, as they were sent."""

    null_is_absent = False


def given(params: BaseModel) -> dict[str, Any]:
    """The fields the client gave (``null`` included), by field name."""
    return params.model_dump(exclude_unset=True)


NonEmptyStr = Annotated[str, BeforeValidator(_non_empty), Field(min_length=1)]
"""A string field that must be given as a non-empty JSON string (no numbers taken as text)."""


def validate_body(model: type[M], data: Any) -> M:
    """``data`` as ``model``, or a 400 ``invalid-api-params`` problem naming the offending field."""
    if not isinstance(data, dict):
        raise InvalidAPIParameters("The request body must be a JSON object.")
    try:
        return model.model_validate(data)
    except ValidationError as e:
        raise InvalidAPIParameters(_problem_detail(e)) from None


def body_of(model: type[M]) -> Callable[[Request], Coroutine[Any, Any, M]]:
    """A dependency: the request's JSON body (with the query string merged in) validated as ``model``."""

    async def dependency(request: Request) -> M:
        from .deps import json_body  # here: deps imports the registry, whose session parameters use this module

        return validate_body(model, await json_body(request))

    dependency.__body_model__ = model  # type: ignore[attr-defined]
    dependency.__name__ = f"body_of_{model.__name__}"
    return dependency


def _inline_refs(schema: Any, defs: dict[str, Any]) -> Any:
    """``schema`` with its ``#/$defs/...`` references replaced by the definitions (the models are not
    recursive), so it stands alone inside the OpenAPI document."""
    if isinstance(schema, dict):
        ref = schema.get("$ref")
        if isinstance(ref, str) and ref.startswith("#/$defs/"):
            target = _inline_refs(copy.deepcopy(defs[ref.removeprefix("#/$defs/")]), defs)
            rest = {k: _inline_refs(v, defs) for k, v in schema.items() if k != "$ref"}
            return {**target, **rest}
        return {k: _inline_refs(v, defs) for k, v in schema.items() if k != "$defs"}
    if isinstance(schema, list):
        return [_inline_refs(v, defs) for v in schema]
    return schema


def model_schema(model: type[BaseModel]) -> dict[str, Any]:
    """The JSON schema of ``model``'s input, self-contained."""
    schema = model.model_json_schema(by_alias=True, mode="validation")
    return dict(_inline_refs(schema, schema.get("$defs", {})))


def _openapi_for(model: type[BaseModel], *, as_query: bool) -> dict[str, Any]:
    schema = model_schema(model)
    if not as_query:
        return {"requestBody": {"required": False, "content": {"application/json": {"schema": schema}}}}
    required = set(schema.get("required", ()))
    params = [
        {"name": name, "in": "query", "required": name in required, "schema": prop}
        for name, prop in schema.get("properties", {}).items()
    ]
    return {"parameters": params}


def _body_models(dependant: Dependant) -> list[type[BaseModel]]:
    found: list[type[BaseModel]] = []
    for dep in dependant.dependencies:
        model = getattr(dep.call, "__body_model__", None)
        if model is not None:
            found.append(model)
        found.extend(_body_models(dep))
    return found


class DocumentedRoute(APIRoute):
    """An API route whose OpenAPI operation describes the models its :func:`body_of` dependencies read."""

    def __init__(self, path: str, endpoint: Callable[..., Any], **kwargs: Any) -> None:
        super().__init__(path, endpoint, **kwargs)
        models = _body_models(self.dependant)
        if models:
            extra = dict(self.openapi_extra or {})
            doc = _openapi_for(models[0], as_query="GET" in (self.methods or ()))
            extra["parameters"] = [*extra.get("parameters", []), *doc.get("parameters", [])]
            if "requestBody" in doc:
                extra["requestBody"] = doc["requestBody"]
            self.openapi_extra = extra
        # Alias paths that differ only in '-' and '_' (/folders/_/all-hosts) would share FastAPI's operation id.
        if "-" in self.path_format:
            self.unique_id = self.unique_id + "_" + str(sum(1 for c in self.path_format if c == "-"))
