"""The machinery that turns ``@api_function`` coroutines into session-aware methods.

An API function is written once as a coroutine (or async generator).  Called under an
:class:`~ai.backend.client.session.AsyncSession` it returns the coroutine for the caller
to await; under a sync :class:`~ai.backend.client.session.Session` it runs on the
session's worker loop and returns the result directly.
"""

from __future__ import annotations

import functools
from collections.abc import Callable
from typing import Any, TypeVar, cast

from ..session import api_session

__all__ = (
    "APIFunctionMeta",
    "BaseFunction",
    "api_function",
)

F = TypeVar("F")


def api_function(meth: F) -> F:
    """Mark a method (plain or ``classmethod``) as an API function."""
    cast(Any, meth)._backend_api = True
    return meth


def _is_api_function(value: Any) -> bool:
    if getattr(value, "_backend_api", False):
        return True
    inner = getattr(value, "__func__", None)
    return bool(getattr(inner, "_backend_api", False))


def _wrap(fn: Callable[..., Any]) -> Callable[..., Any]:
    @functools.wraps(fn)
    def _api_method(*args: Any, **kwargs: Any) -> Any:
        session = api_session.get()
        if session is None:
            raise RuntimeError("API functions must be called inside the context of a valid API session")
        return session.run_api(fn(*args, **kwargs))

    return _api_method


class APIFunctionMeta(type):
    """Replaces the methods marked with :func:`api_function` by session-aware wrappers.

    The original method stays available as ``_orig_<name>``.
    """

    def __init__(cls, name: str, bases: tuple[type, ...], attrs: dict[str, Any], **kwargs: Any) -> None:
        super().__init__(name, bases, attrs, **kwargs)
        for attr_name, value in attrs.items():
            if not _is_api_function(value):
                continue
            setattr(cls, f"_orig_{attr_name}", value)
            if isinstance(value, classmethod):
                setattr(cls, attr_name, classmethod(_wrap(value.__func__)))
            elif isinstance(value, staticmethod):
                setattr(cls, attr_name, staticmethod(_wrap(value.__func__)))
            else:
                setattr(cls, attr_name, _wrap(value))


class BaseFunction(metaclass=APIFunctionMeta):
    """Base class of the API function classes."""
