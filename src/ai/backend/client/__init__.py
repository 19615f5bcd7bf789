"""Backend.AI client SDK: ``Session``/``AsyncSession``, ``APIConfig`` and the API functions.

The names are imported lazily so that ``import ai.backend.client`` (and with it the
``backend.ai`` CLI start-up) stays cheap.
"""

from __future__ import annotations

import importlib
from typing import TYPE_CHECKING, Any

__version__ = "0.1.0"

__all__ = (
    "APIConfig",
    "APIVersionWarning",
    "AsyncSession",
    "BackendAPIError",
    "BackendClientError",
    "BackendError",
    "BaseSession",
    "Session",
    "__version__",
    "get_user_agent",
)

_LAZY = {
    "Session": "ai.backend.client.session",
    "AsyncSession": "ai.backend.client.session",
    "BaseSession": "ai.backend.client.session",
    "APIConfig": "ai.backend.client.config",
    "BackendError": "ai.backend.client.exceptions",
    "BackendAPIError": "ai.backend.client.exceptions",
    "BackendClientError": "ai.backend.client.exceptions",
    "APIVersionWarning": "ai.backend.client.exceptions",
}

if TYPE_CHECKING:
    from .config import APIConfig
    from .exceptions import APIVersionWarning, BackendAPIError, BackendClientError, BackendError
    from .session import AsyncSession, BaseSession, Session


def get_user_agent() -> str:
    """The ``User-Agent`` header value sent by this client."""
    return f"Backend.AI Client for Python {__version__}"


def __getattr__(name: str) -> Any:
    module = _LAZY.get(name)
    if module is None:
        raise AttributeError(f"module {__name__!r} has no attribute {name!r}")
    return getattr(importlib.import_module(module), name)
