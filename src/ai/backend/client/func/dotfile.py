"""``Dotfile``: your files placed in ``/home/work`` of every new session (``/user-config/dotfiles``)."""

from __future__ import annotations

from typing import Any

from ..exceptions import BackendClientError
from ..request import Request
from .base import BaseFunction, api_function

__all__ = ("Dotfile",)


class Dotfile(BaseFunction):
    """A dotfile, addressed by its path (relative to ``/home/work``)."""

    def __init__(self, path: str, owner_access_key: str | None = None) -> None:
        self.path = path
        self.owner_access_key = owner_access_key

    def __repr__(self) -> str:
        return f"<{type(self).__name__} path={self.path!r}>"

    def _owner(self) -> dict[str, str]:
        return {"owner_access_key": self.owner_access_key} if self.owner_access_key else {}

    @api_function
    @classmethod
    async def create(
        cls, data: str, path: str, permission: str = "644", owner_access_key: str | None = None
    ) -> Dotfile:
        """Add the dotfile *path* holding *data* with mode *permission* (octal digits, e.g. ``"755"``)."""
        body: dict[str, Any] = {"data": data, "path": path, "permission": permission}
        if owner_access_key:
            body["owner_access_key"] = owner_access_key
        rqst = Request("POST", "/user-config/dotfiles")
        rqst.set_json(body)
        async with rqst.fetch():
            pass
        return cls(path, owner_access_key=owner_access_key)

    @api_function
    @classmethod
    async def list_dotfiles(cls, owner_access_key: str | None = None) -> list[dict[str, Any]]:
        """Every dotfile: ``[{"path", "permission", "data"}]`` (of another user's keypair for admins)."""
        params = {"owner_access_key": owner_access_key} if owner_access_key else None
        async with Request("GET", "/user-config/dotfiles", params=params).fetch() as resp:
            data = await resp.json()
        if not isinstance(data, list):
            raise BackendClientError(f"Unexpected dotfile list response: {data!r}")
        return data

    @api_function
    async def get(self) -> dict[str, Any]:
        """This dotfile: ``{"path", "permission", "data"}``."""
        rqst = Request("GET", "/user-config/dotfiles", params={"path": self.path, **self._owner()})
        async with rqst.fetch() as resp:
            data = await resp.json()
        if not isinstance(data, dict):
            raise BackendClientError(f"Unexpected dotfile response: {data!r}")
        data.setdefault("permission", data.get("perm"))
        return data

    @api_function
    async def update(self, data: str, permission: str) -> Any:
        """Replace the content and mode of this dotfile."""
        rqst = Request("PATCH", "/user-config/dotfiles")
        rqst.set_json({"data": data, "path": self.path, "permission": permission, **self._owner()})
        async with rqst.fetch() as resp:
            return await resp.json()

    @api_function
    async def delete(self) -> Any:
        """Remove this dotfile."""
        rqst = Request("DELETE", "/user-config/dotfiles", params={"path": self.path, **self._owner()})
        async with rqst.fetch() as resp:
            return await resp.json()
