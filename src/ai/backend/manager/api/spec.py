"""The OpenAPI document and its browsable docs under a second prefix (FastAPI serves one pair itself)."""

from __future__ import annotations

from fastapi import FastAPI
from fastapi.openapi.docs import get_swagger_ui_html
from fastapi.responses import HTMLResponse, JSONResponse


def serve_spec_aliases(app: FastAPI, prefix: str) -> None:
    """Serve ``app``'s OpenAPI document at ``{prefix}/openapi.json`` and its Swagger UI at ``{prefix}/docs``
    (both unauthenticated and left out of the document, like FastAPI's own pair)."""

    async def document() -> JSONResponse:
        return JSONResponse(app.openapi())

    async def docs() -> HTMLResponse:
        return get_swagger_ui_html(openapi_url=f"{prefix}/openapi.json", title=f"{app.title} - API docs")

    app.add_api_route(f"{prefix}/openapi.json", document, methods=["GET"], include_in_schema=False)
    app.add_api_route(f"{prefix}/docs", docs, methods=["GET"], include_in_schema=False)
