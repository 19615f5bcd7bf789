"""RFC 7807 problem types shared by the servers: one exception class per failure kind."""

from __future__ import annotations

from typing import Any

from .logs import request_id_var

PROBLEM_BASE = "https://api.backend.ai/probs/"


def problem_document(status: int, slug: str, title: str, detail: str | None = None, **extra: Any) -> dict[str, Any]:
    """An RFC 7807 problem body (``type``, ``title``, ``status``, ``detail``) plus upstream's ``msg`` and, while
    a request is handled, its ``request_id`` (the id its log lines carry, see :mod:`ai.backend.common.logs`).

    ``msg`` repeats ``detail``: the official clients print a problem's ``title`` and ``msg`` (and ``data``)
    but never ``detail``, so without it their users would see only the title.
    """
    doc: dict[str, Any] = {"type": PROBLEM_BASE + slug, "title": title, "status": status}
    if detail:
        doc["detail"] = detail
        doc["msg"] = detail
    doc.update(extra)
    rid = request_id_var.get()
    if rid is not None:
        doc.setdefault("request_id", rid)
    return doc


class ProblemError(Exception):
    """An error answered as ``application/problem+json`` with ``type``, ``title`` and ``detail``."""

    status: int = 500
    slug: str = "internal-error"
    title: str = "Internal server error"

    def __init__(self, detail: str | None = None, **extra: Any) -> None:
        super().__init__(detail or self.title)
        self.detail = detail
        self.extra = extra

    def body(self) -> dict[str, Any]:
        """The JSON problem document."""
        return problem_document(self.status, self.slug, self.title, self.detail, **self.extra)


class InvalidAPIParameters(ProblemError):
    status, slug, title = 400, "invalid-api-params", "Invalid API parameters"


class AuthorizationFailed(ProblemError):
    status, slug, title = 401, "unauthorized", "Unauthorized access"


class InvalidAuthParameters(ProblemError):
    status, slug, title = 400, "invalid-auth-params", "Missing or invalid authorization parameters"


class Forbidden(ProblemError):
    status, slug, title = 403, "forbidden", "Forbidden operation"


class NotFound(ProblemError):
    status, slug, title = 404, "not-found", "Not found"


class SessionNotFound(NotFound):
    slug, title = "session-not-found", "No such session"


class ImageNotFound(NotFound):
    slug, title = "image-not-found", "Unknown image"


class MethodNotAllowed(ProblemError):
    status, slug, title = 405, "method-not-allowed", "Method not allowed"


class QuotaExceeded(ProblemError):
    status, slug, title = 406, "quota-exceeded", "Requested resources exceed the allowed limits"


class Conflict(ProblemError):
    status, slug, title = 409, "conflict", "Conflict"


class SessionAlreadyExists(Conflict):
    slug, title = "session-already-exists", "The session already exists"


class TooManyRequests(ProblemError):
    status, slug, title = 429, "too-many-requests", "Too many requests"


class InternalServerError(ProblemError):
    status, slug, title = 500, "internal-error", "Internal server error"


class BadGateway(ProblemError):
    status, slug, title = 502, "agent-error", "The agent failed to handle the request"


class ServiceUnavailable(ProblemError):
    status, slug, title = 503, "service-unavailable", "Service unavailable"


class InsufficientResources(ProblemError):
    status, slug, title = 503, "insufficient-resources", "No agent has enough free resources"
