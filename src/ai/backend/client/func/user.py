"""``User``: user accounts (GraphQL ``user``/``users``/``user_list`` and the user mutations)."""

from __future__ import annotations

import builtins
from collections.abc import Sequence
from typing import Any
from uuid import UUID

from ..types import PaginatedResult
from ._gql import drop_unset, is_given, mutate, paginated_query, query_field
from .base import BaseFunction, api_function

__all__ = ("DEFAULT_FIELDS", "USER_ROLES", "USER_STATUSES", "User")

USER_ROLES: tuple[str, ...] = ("superadmin", "admin", "user", "monitor")
"""The roles a user may have."""
USER_STATUSES: tuple[str, ...] = ("active", "inactive", "deleted", "before-verification")
"""The statuses a user may have (only ``active`` users can sign in)."""

DEFAULT_FIELDS: tuple[str, ...] = (
    "uuid",
    "username",
    "email",
    "need_password_change",
    "full_name",
    "description",
    "status",
    "status_info",
    "created_at",
    "domain_name",
    "role",
    "groups { id name }",
)
"""The fields fetched unless told otherwise (``groups`` is a nested selection)."""


def _check_role(role: str | None) -> None:
    if role is not None and role not in USER_ROLES:
        raise ValueError(f"Unknown role {role!r}: choose from {', '.join(USER_ROLES)}")


def _check_status(status: str | None) -> None:
    if status is not None and status not in USER_STATUSES:
        raise ValueError(f"Unknown user status {status!r}: choose from {', '.join(USER_STATUSES)}")


def _group_ids(group_ids: Sequence[str | UUID] | None) -> builtins.list[str] | None:
    if group_ids is None:
        return None
    if isinstance(group_ids, (str, UUID)):
        group_ids = [group_ids]
    return [str(g) for g in group_ids]


class User(BaseFunction):
    """User accounts.  Mutations are for superadmins; a user may read only their own record."""

    @api_function
    @classmethod
    async def list(
        cls,
        status: str | None = None,
        group: str | UUID | None = None,
        fields: Sequence[str] = DEFAULT_FIELDS,
    ) -> builtins.list[dict[str, Any]]:
        """The users (of a status, of a group given by ID) visible to the caller."""
        _check_status(status)
        args = {"status": status, "group_id": None if group is None else str(group)}
        return builtins.list(await query_field("users", args, fields) or [])

    @api_function
    @classmethod
    async def paginated_list(
        cls,
        status: str | None = None,
        group: str | UUID | None = None,
        *,
        fields: Sequence[str] = DEFAULT_FIELDS,
        page_offset: int = 0,
        page_size: int = 20,
        filter: str | None = None,
        order: str | None = None,
    ) -> PaginatedResult[dict[str, Any]]:
        """One page of ``user_list``."""
        _check_status(status)
        args = {"status": status, "group_id": None if group is None else str(group)}
        return await paginated_query(
            "user_list", args, fields, page_offset=page_offset, page_size=page_size, filter=filter, order=order
        )

    @api_function
    @classmethod
    async def detail(cls, email: str | None = None, fields: Sequence[str] = DEFAULT_FIELDS) -> dict[str, Any] | None:
        """One user by email (the caller if omitted); ``None`` if there is no such user."""
        return await query_field("user", {"email": email}, fields)

    @api_function
    @classmethod
    async def detail_by_uuid(
        cls, user_uuid: str | UUID | None = None, fields: Sequence[str] = DEFAULT_FIELDS
    ) -> dict[str, Any] | None:
        """One user by UUID (the caller if omitted); ``None`` if there is no such user."""
        return await query_field("user_from_uuid", {"user_id": None if user_uuid is None else str(user_uuid)}, fields)

    @api_function
    @classmethod
    async def create(
        cls,
        domain_name: str,
        email: str,
        password: str,
        username: str | None = None,
        full_name: str | None = None,
        role: str = "user",
        status: str = "active",
        need_password_change: bool = False,
        description: str = "",
        group_ids: Sequence[str | UUID] | None = None,
        fields: Sequence[str] = ("uuid", "email", "username", "domain_name", "role", "status"),
    ) -> dict[str, Any]:
        """Create a user (the server also gives them a keypair); returns ``{"ok", "msg", "user"}``."""
        _check_role(role)
        _check_status(status)
        if not password:
            raise ValueError("The password must not be empty.")
        props = {
            "username": username or email,
            "password": password,
            "need_password_change": need_password_change,
            "full_name": full_name or "",
            "description": description,
            "status": status,
            "domain_name": domain_name,
            "role": role,
            "group_ids": _group_ids(group_ids) or [],
        }
        result_fields = ("ok", "msg", f"user {{ {' '.join(fields)} }}")
        return await mutate("create_user", {"email": email, "props": drop_unset(props)}, result_fields)

    @api_function
    @classmethod
    async def update(
        cls,
        email: str,
        password: str | None = None,
        username: str | None = None,
        full_name: str | None = None,
        domain_name: str | None = None,
        role: str | None = None,
        status: str | None = None,
        need_password_change: bool | None = None,
        description: str | None = None,
        group_ids: Sequence[str | UUID] | None = None,
        fields: Sequence[str] | None = None,
    ) -> dict[str, Any]:
        """Change the given properties (``None`` leaves one unchanged); returns ``{"ok", "msg"}``.

        ``group_ids`` replaces the user's group memberships.
        """
        _check_role(role)
        _check_status(status)
        if password is not None and not password:
            raise ValueError("The password must not be empty.")
        props = {
            "password": password,
            "username": username,
            "full_name": full_name,
            "domain_name": domain_name,
            "role": role,
            "status": status,
            "need_password_change": need_password_change,
            "description": description,
            "group_ids": _group_ids(group_ids),
        }
        props = {k: v for k, v in props.items() if is_given(v)}
        if not props:
            raise ValueError("Nothing to update: give at least one property to change.")
        return await mutate("modify_user", {"email": email, "props": props})

    @api_function
    @classmethod
    async def delete(cls, email: str) -> dict[str, Any]:
        """Delete a user (their status becomes ``deleted`` and their keypairs are deactivated)."""
        return await mutate("delete_user", {"email": email})
