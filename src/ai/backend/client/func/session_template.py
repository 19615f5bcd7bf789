"""``SessionTemplate``: store, read, update and delete session templates (``/template/session``).

A template is sent as a YAML or JSON string (see docs/client.md for the syntax); start a session from one
with :meth:`ComputeSession.create_from_template <ai.backend.client.func.session.ComputeSession.create_from_template>`.
"""

from __future__ import annotations

from typing import Any

from ..exceptions import BackendClientError
from ..request import Request
from ..session import api_session
from .base import BaseFunction, api_function

__all__ = ("SessionTemplate",)


def _config() -> Any:
    session = api_session.get()
    if session is None:
        raise RuntimeError("API functions must be called inside the context of a valid API session")
    return session.config


class SessionTemplate(BaseFunction):
    """A stored session template, addressed by its id."""

    def __init__(self, template_id: str, owner_access_key: str | None = None) -> None:
        self.template_id = template_id
        self.owner_access_key = owner_access_key

    def __repr__(self) -> str:
        return f"<{type(self).__name__} id={self.template_id!r}>"

    def _owner(self) -> dict[str, str]:
        return {"owner_access_key": self.owner_access_key} if self.owner_access_key else {}

    @api_function
    @classmethod
    async def create(
        cls,
        template: str,
        domain_name: str | None = None,
        group_name: str | None = None,
        owner_access_key: str | None = None,
    ) -> SessionTemplate:
        """Store *template* (YAML or JSON text) under the project *group_name*; returns the new template.

        When the text holds several templates (``session_templates: [...]``) the returned object's id
        is the comma-separated list of their ids.
        """
        config = _config()
        body = {
            "payload": template,
            "domain_name": domain_name if domain_name is not None else config.domain,
            "group_name": group_name if group_name is not None else config.group,
            "owner_access_key": owner_access_key,
        }
        rqst = Request("POST", "/template/session")
        rqst.set_json(body)
        async with rqst.fetch() as resp:
            data = await resp.json()
        items = data if isinstance(data, list) else [data]
        try:
            ids = [str(item["id"]) for item in items]
        except (KeyError, TypeError):
            raise BackendClientError(f"Unexpected template creation response: {data!r}") from None
        return cls(", ".join(ids), owner_access_key=owner_access_key)

    @api_function
    @classmethod
    async def list_templates(cls, list_all: bool = False) -> list[dict[str, Any]]:
        """Your templates; with *list_all* an administrator gets every template in reach."""
        rqst = Request("GET", "/template/session", params={"all": "true" if list_all else "false"})
        async with rqst.fetch() as resp:
            data = await resp.json()
        if not isinstance(data, list):
            raise BackendClientError(f"Unexpected template list response: {data!r}")
        return data

    @api_function
    async def get(self, body_format: str = "yaml") -> str:
        """The template as text: YAML (the document), or JSON (``{"template", "name", ...}``)."""
        if body_format not in ("yaml", "json"):
            raise ValueError("body_format must be 'yaml' or 'json'")
        params = {"format": body_format, **self._owner()}
        rqst = Request("GET", f"/template/session/{self.template_id}", params=params)
        async with rqst.fetch() as resp:
            return await resp.text()

    @api_function
    async def put(self, template: str) -> Any:
        """Replace the template with *template* (YAML or JSON text)."""
        rqst = Request("PUT", f"/template/session/{self.template_id}")
        rqst.set_json({"payload": template, **self._owner()})
        async with rqst.fetch() as resp:
            return await resp.json()

    @api_function
    async def delete(self) -> Any:
        """Delete the template."""
        rqst = Request("DELETE", f"/template/session/{self.template_id}", params=self._owner())
        async with rqst.fetch() as resp:
            return await resp.json()
