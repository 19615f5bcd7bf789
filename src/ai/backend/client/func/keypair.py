"""``KeyPair``: API keypairs (access key + secret key) of users."""

from __future__ import annotations

import builtins
from collections.abc import Sequence
from typing import Any

from ..types import PaginatedResult
from ._gql import drop_unset, is_given, mutate, paginated_query, query_field
from .base import BaseFunction, api_function

__all__ = ("DEFAULT_FIELDS", "INFO_FIELDS", "KeyPair")

DEFAULT_FIELDS: tuple[str, ...] = (
    "user_id",
    "access_key",
    "secret_key",
    "is_active",
    "is_admin",
    "created_at",
)
"""The fields listed unless told otherwise."""
INFO_FIELDS: tuple[str, ...] = ("user_id", "access_key", "secret_key", "is_active", "is_admin")
"""The fields :meth:`KeyPair.info` fetches unless told otherwise."""


class KeyPair(BaseFunction):
    """Keypairs.  Creating, changing and listing others' keypairs needs a superadmin.

    ``KeyPair(access_key)`` addresses one keypair for :meth:`info`; without an access key
    it is the caller's own keypair.
    """

    def __init__(self, access_key: str | None = None) -> None:
        self.access_key = access_key

    @api_function
    @classmethod
    async def create(
        cls,
        user_id: str,
        is_active: bool = True,
        is_admin: bool = False,
        resource_policy: str = "default",
        rate_limit: int = 10000,
        fields: Sequence[str] = ("access_key", "secret_key"),
    ) -> dict[str, Any]:
        """Create a keypair for the user with the email *user_id*; returns ``{"ok", "msg", "keypair"}``."""
        if rate_limit is not None and rate_limit < 0:
            raise ValueError("The rate limit must not be negative.")
        props = {
            "is_active": is_active,
            "is_admin": is_admin,
            "resource_policy": resource_policy,
            "rate_limit": rate_limit,
        }
        result_fields = ("ok", "msg", f"keypair {{ {' '.join(fields)} }}")
        return await mutate("create_keypair", {"user_id": user_id, "props": drop_unset(props)}, result_fields)

    @api_function
    @classmethod
    async def update(
        cls,
        access_key: str,
        is_active: bool | None = None,
        is_admin: bool | None = None,
        resource_policy: str | None = None,
        rate_limit: int | None = None,
    ) -> dict[str, Any]:
        """Change the given properties (``None`` leaves one unchanged); returns ``{"ok", "msg"}``."""
        if rate_limit is not None and rate_limit < 0:
            raise ValueError("The rate limit must not be negative.")
        props = {
            "is_active": is_active,
            "is_admin": is_admin,
            "resource_policy": resource_policy,
            "rate_limit": rate_limit,
        }
        props = {k: v for k, v in props.items() if is_given(v)}
        if not props:
            raise ValueError("Nothing to update: give at least one property to change.")
        return await mutate("modify_keypair", {"access_key": access_key, "props": props})

    @api_function
    @classmethod
    async def delete(cls, access_key: str) -> dict[str, Any]:
        """Delete a keypair; returns ``{"ok", "msg"}``."""
        return await mutate("delete_keypair", {"access_key": access_key})

    @api_function
    @classmethod
    async def list(
        cls,
        user_id: str | None = None,
        is_active: bool | None = None,
        fields: Sequence[str] = DEFAULT_FIELDS,
    ) -> builtins.list[dict[str, Any]]:
        """The keypairs (of the user with the email *user_id*) visible to the caller."""
        return builtins.list(await query_field("keypairs", {"email": user_id, "is_active": is_active}, fields) or [])

    @api_function
    @classmethod
    async def paginated_list(
        cls,
        is_active: bool | None = None,
        domain_name: str | None = None,
        *,
        user_id: str | None = None,
        fields: Sequence[str] = DEFAULT_FIELDS,
        page_offset: int = 0,
        page_size: int = 20,
        filter: str | None = None,
        order: str | None = None,
    ) -> PaginatedResult[dict[str, Any]]:
        """One page of ``keypair_list``."""
        args = {"is_active": is_active, "domain_name": domain_name, "email": user_id}
        return await paginated_query(
            "keypair_list", args, fields, page_offset=page_offset, page_size=page_size, filter=filter, order=order
        )

    @api_function
    async def info(self, fields: Sequence[str] = INFO_FIELDS) -> dict[str, Any] | None:
        """This keypair's details (the caller's own keypair if no access key was given)."""
        return await query_field("keypair", {"access_key": self.access_key}, fields)

    @api_function
    @classmethod
    async def activate(cls, access_key: str) -> dict[str, Any]:
        """Re-enable a keypair; returns ``{"ok", "msg"}``."""
        return await mutate("modify_keypair", {"access_key": access_key, "props": {"is_active": True}})

    @api_function
    @classmethod
    async def deactivate(cls, access_key: str) -> dict[str, Any]:
        """Disable a keypair: it cannot make API requests until it is activated again."""
        return await mutate("modify_keypair", {"access_key": access_key, "props": {"is_active": False}})
