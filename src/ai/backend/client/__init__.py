"""Backend.AI client SDK: ``Session``/``AsyncSession``, ``APIConfig`` and the API functions.

The names are imported lazily so that ``import ai.backend.client`` (and with it the
``backend.ai`` CLI start-up) stays cheap.
"""

from __future__ import annotations

import importlib
import sys
import types

TYPE_CHECKING = False  # avoids importing typing, to keep the CLI start-up cheap

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
    from typing import Any

    from .config import APIConfig
    from .exceptions import APIVersionWarning, BackendAPIError, BackendClientError, BackendError
    from .session import AsyncSession, BaseSession, Session


def _skip_httpx_cli() -> None:
    """Keep ``import httpx`` from importing its own command-line tool.

    httpx's ``__init__`` imports ``httpx._main``, which pulls in rich, pygments and click when they
    are installed (they are, for our CLI): about 70 ms of every ``backend.ai`` command's start-up
    for a tool we never call. A stand-in module with the same ``main`` name avoids that.
    """
    if "httpx" in sys.modules or "httpx._main" in sys.modules:
        return
    stub = types.ModuleType("httpx._main")

    def main() -> None:  # pragma: no cover - only reached if someone runs httpx's CLI through us
        raise SystemExit("the httpx command-line tool is not available in this process")

    stub.main = main  # type: ignore[attr-defined]
    sys.modules["httpx._main"] = stub


_skip_httpx_cli()


def get_user_agent() -> str:
    """The ``User-Agent`` header value sent by this client."""
    return f"Backend.AI Client for Python {__version__}"


def __getattr__(name: str) -> Any:
    module = _LAZY.get(name)
    if module is None:
        raise AttributeError(f"module {__name__!r} has no attribute {name!r}")
    return getattr(importlib.import_module(module), name)
