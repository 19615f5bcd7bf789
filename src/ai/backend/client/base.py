"""Legacy (19.09) location of the API function machinery; see :mod:`ai.backend.client.func.base`."""

from .func.base import APIFunctionMeta, BaseFunction, api_function

__all__ = ("APIFunctionMeta", "BaseFunction", "api_function")
