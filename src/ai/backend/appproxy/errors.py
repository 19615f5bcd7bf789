"""The app proxy's refusals, answered as RFC 7807 problems to programs and as a small HTML page to browsers
(whoever sends ``Accept: text/html``): a browser that followed a stale link should read what to do next."""

from __future__ import annotations

import html

from aiohttp import web

from ai.backend.common.problems import ProblemError

__all__ = [
    "AppTokenRefused",
    "BadRequest",
    "CircuitNotFound",
    "MissingSecret",
    "NoFreePort",
    "PermitMissing",
    "PermitRefused",
    "UpstreamDown",
    "WrongSecret",
    "refusal",
    "wants_html",
]

PROBLEM_JSON = "application/problem+json"
_OPEN_AGAIN = "Open the app again from the console or with the CLI (backend.ai app)."


class BadRequest(ProblemError):
    status, slug, title = 400, "invalid-api-params", "Invalid API parameters"


class AppTokenRefused(ProblemError):
    """An app token that expired or was already used (401), or is not genuine (403: set ``status``)."""

    status, slug, title = 401, "app-token-refused", "App token refused"

    def __init__(self, detail: str, status: int = 401) -> None:
        super().__init__(detail)
        self.status = status


class PermitMissing(ProblemError):
    status, slug, title = 401, "app-permit-missing", "No permit for this app"


class PermitRefused(ProblemError):
    status, slug, title = 403, "app-permit-refused", "Permit refused"


class MissingSecret(ProblemError):
    status, slug, title = 401, "unauthorized", "Unauthorized access"


class WrongSecret(ProblemError):
    status, slug, title = 403, "forbidden", "Forbidden operation"


class CircuitNotFound(ProblemError):
    status, slug, title = 404, "not-found", "Not found"


class UpstreamDown(ProblemError):
    status, slug, title = 502, "app-unreachable", "The app cannot be reached"


class NoFreePort(ProblemError):
    status, slug, title = 503, "no-free-port", "The app proxy has no free port"


def wants_html(request: web.Request) -> bool:
    """Whether the client is a browser showing pages (it lists text/html among what it accepts)."""
    return "text/html" in request.headers.get("Accept", "")


def _page(exc: ProblemError, hint: str) -> str:
    title, detail = html.escape(exc.title), html.escape(exc.detail or "")
    return (
        "<!doctype html>\n<html lang=en><head><meta charset=utf-8>"
        f"<title>{title}</title></head><body style='font-family:sans-serif;max-width:40em;margin:3em auto'>"
        f"<h1>{title}</h1><p>{detail}</p><p>{html.escape(hint)}</p>"
        f"<p style='color:#888'>Backend.AI app proxy, HTTP {exc.status}</p></body></html>\n"
    )


def refusal(request: web.Request, exc: ProblemError, *, open_again: bool = True) -> web.Response:
    """``exc`` as an HTML page (browsers) or a problem document (everything else); never cached."""
    headers = {"Cache-Control": "no-store"}
    if wants_html(request):
        hint = _OPEN_AGAIN if open_again else "Try again in a moment."
        return web.Response(
            status=exc.status, text=_page(exc, hint), content_type="text/html", charset="utf-8", headers=headers
        )
    return web.json_response(exc.body(), status=exc.status, content_type=PROBLEM_JSON, headers=headers)
