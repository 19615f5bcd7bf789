"""``Auth``: password-based sign-in (keypair issue), password change and the caller's roles."""

from __future__ import annotations

from typing import Any

from ..exceptions import BackendClientError
from ..request import Request
from ..session import BaseSession, api_session
from .base import BaseFunction, api_function

__all__ = ("Auth",)


def _session() -> BaseSession:
    session = api_session.get()
    if session is None:
        raise RuntimeError("API functions must be called inside the context of a valid API session")
    return session


class Auth(BaseFunction):
    """Authentication helpers."""

    @api_function
    @classmethod
    async def login(cls, user_id: str, password: str) -> dict[str, Any]:
        """Log in to a webserver (``BACKEND_ENDPOINT_TYPE=session`` only) with an email or user name.

        Returns the server's answer (``{"authenticated": true, "data": {...}}``) and saves the login cookie
        (see :mod:`ai.backend.client.cookies`) for the later sessions of this user; a refused login raises
        :class:`~ai.backend.client.exceptions.BackendAPIError` (401 wrong password, 429 blocked).
        """
        session = _session()
        if session.config.endpoint_type != "session":
            raise BackendClientError('To use login, your endpoint type must be "session".')
        rqst = Request("POST", "/server/login")
        rqst.set_json({"username": user_id, "password": password})
        async with rqst.fetch(anonymous=True) as resp:
            answer = dict(await resp.json())
        if answer.get("authenticated"):
            from ..cookies import save_cookies

            jar = session.http_client.cookies.jar
            save_cookies(str(session.config.endpoint), {c.name: c.value or "" for c in jar})
        return answer

    @api_function
    @classmethod
    async def logout(cls) -> None:
        """Log out of a webserver (``BACKEND_ENDPOINT_TYPE=session`` only) and forget the saved cookie."""
        session = _session()
        if session.config.endpoint_type != "session":
            raise BackendClientError('To use logout, your endpoint type must be "session".')
        from ..cookies import clear_cookies

        try:
            async with Request("POST", "/server/logout").fetch(anonymous=True):
                pass
        finally:
            clear_cookies(str(session.config.endpoint))

    @api_function
    @classmethod
    async def authorize(cls, domain: str, username: str, password: str) -> dict[str, Any]:
        """Check a user's email and password (``POST /auth/authorize``, unsigned).

        Returns ``{"access_key", "secret_key", "role", "status"}`` of the user's keypair.
        """
        rqst = Request("POST", "/auth/authorize")
        rqst.set_json({"type": "keypair", "domain": domain, "username": username, "password": password})
        async with rqst.fetch(anonymous=True) as resp:
            body = await resp.json()
        data = body.get("data") if isinstance(body, dict) else None
        if not isinstance(data, dict):
            raise BackendClientError(f"Unexpected response from /auth/authorize: {str(body)[:200]}")
        return data

    @api_function
    @classmethod
    async def update_password(cls, old_password: str, new_password: str, new_password2: str) -> dict[str, Any]:
        """Change the caller's own password (``POST /auth/update-password``)."""
        if new_password != new_password2:
            raise ValueError("The new password and its confirmation do not match.")
        if not new_password:
            raise ValueError("The new password must not be empty.")
        rqst = Request("POST", "/auth/update-password")
        rqst.set_json({"old_password": old_password, "new_password": new_password, "new_password2": new_password2})
        async with rqst.fetch() as resp:
            body = await resp.json() if resp.content else {}
        return dict(body) if isinstance(body, dict) else {}

    @api_function
    @classmethod
    async def get_role(cls, group: str | None = None) -> dict[str, Any]:
        """The caller's roles (``GET /auth/role``): ``{"global_role", "domain_role", "group_role"}``."""
        rqst = Request("GET", "/auth/role", params={"group": group} if group else None)
        async with rqst.fetch() as resp:
            return dict(await resp.json())
