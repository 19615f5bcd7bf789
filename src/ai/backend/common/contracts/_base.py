"""The base of the wire models and the one way to read one from untrusted JSON (a 400 problem on failure)."""

from __future__ import annotations

from typing import Any, TypeVar

from pydantic import BaseModel, ConfigDict, ValidationError

from ..problems import InvalidAPIParameters

M = TypeVar("M", bound=BaseModel)


class WireModel(BaseModel):
    """A message between components: frozen, and keys unknown to this version are ignored."""

    model_config = ConfigDict(extra="ignore", frozen=True, populate_by_name=True)

    def to_wire(self) -> dict[str, Any]:
        """The JSON object sent for this message (``None`` fields are left out: receivers treat a missing
        key and ``null`` alike)."""
        return self.model_dump(mode="json", exclude_none=True)


def parse_wire(model: type[M], data: Any, what: str = "body") -> M:
    """``data`` (decoded JSON) as ``model``; a 400 :class:`InvalidAPIParameters` naming the first bad field."""
    if isinstance(data, model):
        return data
    if not isinstance(data, dict):
        raise InvalidAPIParameters(f"the {what} must be a JSON object")
    try:
        return model.model_validate(data)
    except ValidationError as e:
        first = e.errors()[0]
        loc = ".".join(str(p) for p in first["loc"]) or what
        raise InvalidAPIParameters(f"{loc}: {first['msg']}") from None
