"""``Domain``: the top-level tenants (GraphQL ``domain``/``domains`` and the domain mutations)."""

from __future__ import annotations

import builtins
from collections.abc import Mapping, Sequence
from typing import Any

from ._gql import drop_unset, encode_json_string, is_given, mutate, opt_list, query_field
from .base import BaseFunction, api_function

__all__ = ("DEFAULT_FIELDS", "Domain", "JSON_FIELDS")

DEFAULT_FIELDS: tuple[str, ...] = (
    "name",
    "description",
    "is_active",
    "created_at",
    "total_resource_slots",
    "allowed_vfolder_hosts",
    "allowed_docker_registries",
    "integration_id",
)
"""The fields fetched unless told otherwise."""
JSON_FIELDS: tuple[str, ...] = ("total_resource_slots",)
"""The ``JSONString`` fields of a domain."""


class Domain(BaseFunction):
    """Domains: listing and details (superadmins; others see their own domain) and CRUD (superadmins)."""

    @api_function
    @classmethod
    async def list(
        cls, fields: Sequence[str] = DEFAULT_FIELDS, *, is_active: bool | None = None
    ) -> builtins.list[dict[str, Any]]:
        """All domains (optionally only the active or the inactive ones)."""
        return builtins.list(await query_field("domains", {"is_active": is_active}, fields) or [])

    @api_function
    @classmethod
    async def detail(cls, name: str | None = None, fields: Sequence[str] = DEFAULT_FIELDS) -> dict[str, Any] | None:
        """One domain by name (the caller's own domain if *name* is omitted); ``None`` if invisible."""
        return await query_field("domain", {"name": name}, fields)

    @api_function
    @classmethod
    async def create(
        cls,
        name: str,
        description: str = "",
        is_active: bool = True,
        total_resource_slots: Mapping[str, Any] | str | None = None,
        allowed_vfolder_hosts: Sequence[str] | None = None,
        allowed_docker_registries: Sequence[str] | None = None,
        integration_id: str | None = None,
        fields: Sequence[str] = ("name", "description", "is_active"),
    ) -> dict[str, Any]:
        """Create a domain; returns ``{"ok", "msg", "domain"}``."""
        props = {
            "description": description,
            "is_active": is_active,
            "total_resource_slots": encode_json_string(total_resource_slots or {}, "total_resource_slots"),
            "allowed_vfolder_hosts": builtins.list(allowed_vfolder_hosts or []),
            "allowed_docker_registries": builtins.list(allowed_docker_registries or []),
            "integration_id": integration_id,
        }
        result_fields = ("ok", "msg", f"domain {{ {' '.join(fields)} }}")
        return await mutate("create_domain", {"name": name, "props": drop_unset(props)}, result_fields)

    @api_function
    @classmethod
    async def update(
        cls,
        name: str,
        new_name: str | None = None,
        description: str | None = None,
        is_active: bool | None = None,
        total_resource_slots: Mapping[str, Any] | str | None = None,
        allowed_vfolder_hosts: Sequence[str] | None = None,
        allowed_docker_registries: Sequence[str] | None = None,
        integration_id: str | None = None,
        fields: Sequence[str] | None = None,
    ) -> dict[str, Any]:
        """Change the given properties (``None`` leaves one unchanged); returns ``{"ok", "msg"}``."""
        props = {
            "name": new_name,
            "description": description,
            "is_active": is_active,
            "total_resource_slots": encode_json_string(total_resource_slots, "total_resource_slots"),
            "allowed_vfolder_hosts": opt_list(allowed_vfolder_hosts),
            "allowed_docker_registries": opt_list(allowed_docker_registries),
            "integration_id": integration_id,
        }
        props = {k: v for k, v in props.items() if is_given(v)}
        if not props:
            raise ValueError("Nothing to update: give at least one property to change.")
        return await mutate("modify_domain", {"name": name, "props": props})

    @api_function
    @classmethod
    async def delete(cls, name: str) -> dict[str, Any]:
        """Delete a domain; returns ``{"ok", "msg"}``."""
        return await mutate("delete_domain", {"name": name})
