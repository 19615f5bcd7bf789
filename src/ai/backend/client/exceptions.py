"""Exceptions raised by the client SDK.

:class:`BackendAPIError` carries the server's RFC 7807 problem body as ``data``;
:class:`BackendClientError` covers client-side failures such as unreachable endpoints.
"""

from __future__ import annotations

import json
from typing import Any

__all__ = (
    "APIVersionWarning",
    "BackendAPIError",
    "BackendAPIVersionError",
    "BackendClientError",
    "BackendError",
)


class BackendError(Exception):
    """Base of every ai.backend client error."""


class BackendAPIError(BackendError):
    """An error response (4xx/5xx) from the API server.

    ``data`` is the problem+json body as a dict (``type``, ``title`` and optional
    ``detail``/``msg``/``data``).  A non-JSON body is wrapped in a generic problem dict
    whose ``content`` holds the raw text.
    """

    def __init__(self, status: int, reason: str, data: Any) -> None:
        if isinstance(data, bytes):
            data = data.decode("utf-8", errors="replace")
        if isinstance(data, str):
            try:
                data = json.loads(data)
            except json.JSONDecodeError:
                data = {
                    "type": "https://api.backend.ai/probs/generic-error",
                    "title": reason or "Generic Error (could not parse error string)",
                    "content": data,
                }
        if not isinstance(data, dict):
            data = {
                "type": "https://api.backend.ai/probs/generic-error",
                "title": reason or "Generic Error",
                "content": data,
            }
        super().__init__(status, reason, data)

    @property
    def status(self) -> int:
        """The HTTP status code."""
        return int(self.args[0])

    @property
    def reason(self) -> str:
        """The HTTP reason phrase."""
        return str(self.args[1])

    @property
    def data(self) -> dict[str, Any]:
        """The problem body."""
        return dict(self.args[2])

    @property
    def title(self) -> str:
        """The problem title, or the reason phrase if the body has none."""
        return str(self.args[2].get("title") or self.reason or "Error")

    @property
    def detail(self) -> str | None:
        """A one-line human-readable detail of the problem, if the body has one."""
        body = self.args[2]
        for key in ("detail", "msg", "message"):
            value = body.get(key)
            if value:
                return " ".join(str(value).split())
        errors = body.get("data") if str(body.get("type", "")).endswith("/graphql-error") else None
        if isinstance(errors, list) and errors:
            msgs = [str(e.get("message", e)) if isinstance(e, dict) else str(e) for e in errors]
            return " ".join("; ".join(msgs).split())
        content = body.get("content")
        if isinstance(content, str) and content.strip():
            return " ".join(content.split())[:200]
        return None

    @property
    def request_id(self) -> str | None:
        """The server's id of the failed request (``request_id`` of the problem body; this project's servers
        send it): the key to the request's lines in the server logs. None when the server sent none."""
        value = self.args[2].get("request_id")
        return value if isinstance(value, str) and value else None

    def __str__(self) -> str:
        detail = self.detail
        if detail and detail != self.title:
            return f"{self.title}: {detail} ({self.status})"
        return f"{self.title} ({self.status})"


class BackendAPIVersionError(BackendError):
    """The operation or argument is not supported by the negotiated API version."""


class BackendClientError(BackendError):
    """A client-side error: invalid arguments, connection failures, malformed responses."""


class APIVersionWarning(UserWarning):
    """The server's API version differs from what this client supports."""
