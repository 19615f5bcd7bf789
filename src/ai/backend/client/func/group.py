"""``Group``: projects (user groups) of a domain, and their members."""

from __future__ import annotations

import builtins
from collections.abc import Mapping, Sequence
from typing import Any
from uuid import UUID

from ._gql import drop_unset, encode_json_string, is_given, mutate, opt_list, query_field
from .base import BaseFunction, api_function

__all__ = ("DEFAULT_FIELDS", "Group", "JSON_FIELDS")

DEFAULT_FIELDS: tuple[str, ...] = (
    "id",
    "name",
    "description",
    "is_active",
    "created_at",
    "domain_name",
    "total_resource_slots",
    "allowed_vfolder_hosts",
    "integration_id",
)
"""The fields fetched unless told otherwise."""
JSON_FIELDS: tuple[str, ...] = ("total_resource_slots",)
"""The ``JSONString`` fields of a group."""


def _uuid_list(user_uuids: Sequence[str | UUID]) -> builtins.list[str]:
    if isinstance(user_uuids, (str, UUID)):
        user_uuids = [user_uuids]
    out = [str(u) for u in user_uuids]
    if not out:
        raise ValueError("Give at least one user UUID.")
    return out


class Group(BaseFunction):
    """Groups (projects).  Superadmins manage any group, domain admins the groups of their domain."""

    @api_function
    @classmethod
    async def list(
        cls,
        domain_name: str | None = None,
        fields: Sequence[str] = DEFAULT_FIELDS,
        *,
        is_active: bool | None = None,
    ) -> builtins.list[dict[str, Any]]:
        """The groups of a domain (all visible groups if *domain_name* is omitted)."""
        return builtins.list(
            await query_field("groups", {"domain_name": domain_name, "is_active": is_active}, fields) or []
        )

    @api_function
    @classmethod
    async def detail(cls, gid: str | UUID, fields: Sequence[str] = DEFAULT_FIELDS) -> dict[str, Any] | None:
        """One group by its ID; ``None`` if it does not exist or is not visible."""
        return await query_field("group", {"id": str(gid)}, fields)

    @api_function
    @classmethod
    async def from_name(
        cls,
        name: str,
        *,
        domain_name: str | None = None,
        fields: Sequence[str] = DEFAULT_FIELDS,
    ) -> builtins.list[dict[str, Any]]:
        """The groups called *name* (in *domain_name*, or in any visible domain); names are unique per domain."""
        wanted = builtins.list(dict.fromkeys(["name", *fields]))
        items = await query_field("groups", {"domain_name": domain_name}, wanted) or []
        return [{k: v for k, v in g.items() if k in fields} for g in items if g.get("name") == name]

    @api_function
    @classmethod
    async def create(
        cls,
        domain_name: str,
        name: str,
        description: str = "",
        is_active: bool = True,
        total_resource_slots: Mapping[str, Any] | str | None = None,
        allowed_vfolder_hosts: Sequence[str] | None = None,
        integration_id: str | None = None,
        fields: Sequence[str] = ("id", "name", "domain_name"),
    ) -> dict[str, Any]:
        """Create a group in a domain; returns ``{"ok", "msg", "group"}``."""
        props = {
            "domain_name": domain_name,
            "description": description,
            "is_active": is_active,
            "total_resource_slots": encode_json_string(total_resource_slots or {}, "total_resource_slots"),
            "allowed_vfolder_hosts": builtins.list(allowed_vfolder_hosts or []),
            "integration_id": integration_id,
        }
        result_fields = ("ok", "msg", f"group {{ {' '.join(fields)} }}")
        return await mutate("create_group", {"name": name, "props": drop_unset(props)}, result_fields)

    @api_function
    @classmethod
    async def update(
        cls,
        gid: str | UUID,
        name: str | None = None,
        description: str | None = None,
        is_active: bool | None = None,
        total_resource_slots: Mapping[str, Any] | str | None = None,
        allowed_vfolder_hosts: Sequence[str] | None = None,
        integration_id: str | None = None,
        fields: Sequence[str] | None = None,
    ) -> dict[str, Any]:
        """Change the given properties (``None`` leaves one unchanged); returns ``{"ok", "msg"}``."""
        props = {
            "name": name,
            "description": description,
            "is_active": is_active,
            "total_resource_slots": encode_json_string(total_resource_slots, "total_resource_slots"),
            "allowed_vfolder_hosts": opt_list(allowed_vfolder_hosts),
            "integration_id": integration_id,
        }
        props = {k: v for k, v in props.items() if is_given(v)}
        if not props:
            raise ValueError("Nothing to update: give at least one property to change.")
        return await mutate("modify_group", {"gid": str(gid), "props": props})

    @api_function
    @classmethod
    async def delete(cls, gid: str | UUID) -> dict[str, Any]:
        """Delete (deactivate) a group; returns ``{"ok", "msg"}``."""
        return await mutate("delete_group", {"gid": str(gid)})

    @api_function
    @classmethod
    async def add_users(
        cls, gid: str | UUID, user_uuids: Sequence[str | UUID], fields: Sequence[str] | None = None
    ) -> dict[str, Any]:
        """Add users (by UUID) to a group; returns ``{"ok", "msg"}``."""
        props = {"user_update_mode": "add", "user_uuids": _uuid_list(user_uuids)}
        return await mutate("modify_group", {"gid": str(gid), "props": props})

    @api_function
    @classmethod
    async def remove_users(
        cls, gid: str | UUID, user_uuids: Sequence[str | UUID], fields: Sequence[str] | None = None
    ) -> dict[str, Any]:
        """Remove users (by UUID) from a group; returns ``{"ok", "msg"}``."""
        props = {"user_update_mode": "remove", "user_uuids": _uuid_list(user_uuids)}
        return await mutate("modify_group", {"gid": str(gid), "props": props})
