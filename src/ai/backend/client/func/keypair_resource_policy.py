"""``KeypairResourcePolicy``: the resource limits that keypairs refer to by name."""

from __future__ import annotations

import builtins
from collections.abc import Mapping, Sequence
from typing import Any

from ._gql import drop_unset, encode_json_string, is_given, mutate, opt_list, query_field
from .base import BaseFunction, api_function

__all__ = ("DEFAULT_FIELDS", "DEFAULT_FOR_UNSPECIFIED", "JSON_FIELDS", "KeypairResourcePolicy")

DEFAULT_FIELDS: tuple[str, ...] = (
    "name",
    "created_at",
    "default_for_unspecified",
    "total_resource_slots",
    "max_concurrent_sessions",
    "max_containers_per_session",
    "max_vfolder_count",
    "max_vfolder_size",
    "idle_timeout",
    "allowed_vfolder_hosts",
)
"""The fields fetched unless told otherwise."""
JSON_FIELDS: tuple[str, ...] = ("total_resource_slots",)
"""The ``JSONString`` fields of a policy."""
DEFAULT_FOR_UNSPECIFIED: tuple[str, ...] = ("LIMITED", "UNLIMITED")
"""How slots missing from ``total_resource_slots`` are treated."""


def _check(
    default_for_unspecified: str | None,
    counts: Mapping[str, int | None],
) -> None:
    if default_for_unspecified is not None and default_for_unspecified not in DEFAULT_FOR_UNSPECIFIED:
        raise ValueError(
            f"default_for_unspecified must be one of {', '.join(DEFAULT_FOR_UNSPECIFIED)}, "
            f"not {default_for_unspecified!r}"
        )
    for name, value in counts.items():
        if value is not None and value < 0:
            raise ValueError(f"{name} must not be negative")


class KeypairResourcePolicy(BaseFunction):
    """Keypair resource policies.  Mutations and listing all of them need a superadmin.

    ``KeypairResourcePolicy(access_key)`` is kept for compatibility: :meth:`info` without a
    name returns the policy of the caller's keypair.
    """

    def __init__(self, access_key: str | None = None) -> None:
        self.access_key = access_key

    @api_function
    @classmethod
    async def create(
        cls,
        name: str,
        default_for_unspecified: str = "UNLIMITED",
        total_resource_slots: Mapping[str, Any] | str = "{}",
        max_concurrent_sessions: int = 30,
        max_containers_per_session: int = 1,
        max_vfolder_count: int = 10,
        max_vfolder_size: int = 0,
        idle_timeout: int = 1800,
        allowed_vfolder_hosts: Sequence[str] | None = None,
        fields: Sequence[str] = ("name",),
    ) -> dict[str, Any]:
        """Create a policy; returns ``{"ok", "msg", "resource_policy"}``.

        ``max_vfolder_size`` is in bytes (0: unlimited), ``idle_timeout`` in seconds.
        """
        counts = {
            "max_concurrent_sessions": max_concurrent_sessions,
            "max_containers_per_session": max_containers_per_session,
            "max_vfolder_count": max_vfolder_count,
            "max_vfolder_size": max_vfolder_size,
            "idle_timeout": idle_timeout,
        }
        _check(default_for_unspecified, counts)
        props = {
            "default_for_unspecified": default_for_unspecified,
            "total_resource_slots": encode_json_string(total_resource_slots, "total_resource_slots"),
            **counts,
            "allowed_vfolder_hosts": builtins.list(allowed_vfolder_hosts or []),
        }
        result_fields = ("ok", "msg", f"resource_policy {{ {' '.join(fields)} }}")
        return await mutate("create_keypair_resource_policy", {"name": name, "props": drop_unset(props)}, result_fields)

    @api_function
    @classmethod
    async def update(
        cls,
        name: str,
        default_for_unspecified: str | None = None,
        total_resource_slots: Mapping[str, Any] | str | None = None,
        max_concurrent_sessions: int | None = None,
        max_containers_per_session: int | None = None,
        max_vfolder_count: int | None = None,
        max_vfolder_size: int | None = None,
        idle_timeout: int | None = None,
        allowed_vfolder_hosts: Sequence[str] | None = None,
    ) -> dict[str, Any]:
        """Change the given properties (``None`` leaves one unchanged); returns ``{"ok", "msg"}``."""
        counts = {
            "max_concurrent_sessions": max_concurrent_sessions,
            "max_containers_per_session": max_containers_per_session,
            "max_vfolder_count": max_vfolder_count,
            "max_vfolder_size": max_vfolder_size,
            "idle_timeout": idle_timeout,
        }
        _check(default_for_unspecified, counts)
        props = {
            "default_for_unspecified": default_for_unspecified,
            "total_resource_slots": encode_json_string(total_resource_slots, "total_resource_slots"),
            **counts,
            "allowed_vfolder_hosts": opt_list(allowed_vfolder_hosts),
        }
        props = {k: v for k, v in props.items() if is_given(v)}
        if not props:
            raise ValueError("Nothing to update: give at least one property to change.")
        return await mutate("modify_keypair_resource_policy", {"name": name, "props": props})

    @api_function
    @classmethod
    async def delete(cls, name: str) -> dict[str, Any]:
        """Delete a policy; returns ``{"ok", "msg"}``."""
        return await mutate("delete_keypair_resource_policy", {"name": name})

    @api_function
    @classmethod
    async def list(cls, fields: Sequence[str] = DEFAULT_FIELDS) -> builtins.list[dict[str, Any]]:
        """All policies (users get those of their own keypairs)."""
        return builtins.list(await query_field("keypair_resource_policies", {}, fields) or [])

    @api_function
    async def info(self, name: str | None = None, fields: Sequence[str] = DEFAULT_FIELDS) -> dict[str, Any] | None:
        """One policy by name (the caller's keypair's policy if omitted); ``None`` if there is none."""
        return await query_field("keypair_resource_policy", {"name": name}, fields)
