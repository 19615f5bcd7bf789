"""``ScalingGroup``: resource groups of agents, and which domains, groups and keypairs may use them."""

from __future__ import annotations

import builtins
from collections.abc import Mapping, Sequence
from typing import Any
from uuid import UUID

from ..config import Undefined, undefined
from ..exceptions import BackendClientError
from ..request import Request
from ._gql import drop_unset, encode_json_string, is_given, mutate, query_field
from .base import BaseFunction, api_function

__all__ = ("DEFAULT_FIELDS", "DETAIL_FIELDS", "JSON_FIELDS", "ScalingGroup")

DEFAULT_FIELDS: tuple[str, ...] = (
    "name",
    "description",
    "is_active",
    "is_public",
    "created_at",
    "driver",
    "scheduler",
    "use_host_network",
    "wsproxy_addr",
    "wsproxy_api_token",
)
"""The fields listed unless told otherwise."""
DETAIL_FIELDS: tuple[str, ...] = (*DEFAULT_FIELDS, "driver_opts", "scheduler_opts")
"""The fields :meth:`ScalingGroup.detail` fetches unless told otherwise."""
JSON_FIELDS: tuple[str, ...] = ("driver_opts", "scheduler_opts")
"""The ``JSONString`` fields of a scaling group."""

_OptStr = str | None | Undefined
_OptBool = bool | None | Undefined
_OptJSON = Mapping[str, Any] | str | None | Undefined


class ScalingGroup(BaseFunction):
    """Scaling groups.  Everything but :meth:`list_available` needs a superadmin."""

    def __init__(self, name: str) -> None:
        self.name = name

    @api_function
    @classmethod
    async def list_available(cls, group: str) -> builtins.list[dict[str, Any]]:
        """The scaling groups the caller may use for sessions in the group called *group* (REST)."""
        rqst = Request("GET", "/scaling-groups", params={"group": group})
        async with rqst.fetch() as resp:
            body = await resp.json()
        try:
            return builtins.list(body["scaling_groups"])
        except (KeyError, TypeError) as e:
            raise BackendClientError(f"Unexpected response from /scaling-groups: {e!r}") from None

    @api_function
    @classmethod
    async def list(
        cls, fields: Sequence[str] = DEFAULT_FIELDS, *, is_active: bool | None = None
    ) -> builtins.list[dict[str, Any]]:
        """All scaling groups (optionally only the active or the inactive ones)."""
        return builtins.list(await query_field("scaling_groups", {"is_active": is_active}, fields) or [])

    @api_function
    @classmethod
    async def list_for_domain(
        cls, domain: str, fields: Sequence[str] = DEFAULT_FIELDS
    ) -> builtins.list[dict[str, Any]]:
        """The scaling groups associated with a domain."""
        return builtins.list(await query_field("scaling_groups_for_domain", {"domain": domain}, fields) or [])

    @api_function
    @classmethod
    async def list_for_group(
        cls, group_id: str | UUID, fields: Sequence[str] = DEFAULT_FIELDS
    ) -> builtins.list[dict[str, Any]]:
        """The scaling groups associated with a group (by ID)."""
        args = {"user_group": str(group_id)}
        return builtins.list(await query_field("scaling_groups_for_user_group", args, fields) or [])

    @api_function
    @classmethod
    async def list_for_keypair(
        cls, access_key: str, fields: Sequence[str] = DEFAULT_FIELDS
    ) -> builtins.list[dict[str, Any]]:
        """The scaling groups associated with a keypair."""
        args = {"access_key": access_key}
        return builtins.list(await query_field("scaling_groups_for_keypair", args, fields) or [])

    @api_function
    @classmethod
    async def detail(cls, name: str, fields: Sequence[str] = DETAIL_FIELDS) -> dict[str, Any] | None:
        """One scaling group by name; ``None`` if there is none."""
        return await query_field("scaling_group", {"name": name}, fields)

    @api_function
    @classmethod
    async def create(
        cls,
        name: str,
        *,
        description: str = "",
        is_active: bool = True,
        is_public: bool = True,
        driver: str,
        driver_opts: _OptJSON = undefined,
        scheduler: str,
        scheduler_opts: _OptJSON = undefined,
        use_host_network: bool = False,
        wsproxy_addr: str | None = None,
        wsproxy_api_token: str | None = None,
        fields: Sequence[str] = ("name",),
    ) -> dict[str, Any]:
        """Create a scaling group; returns ``{"ok", "msg", "scaling_group"}``."""
        if not driver or not scheduler:
            raise ValueError("A scaling group needs a driver and a scheduler.")
        props = {
            "description": description,
            "is_active": is_active,
            "is_public": is_public,
            "driver": driver,
            "driver_opts": encode_json_string(driver_opts if is_given(driver_opts) else {}, "driver_opts"),
            "scheduler": scheduler,
            "scheduler_opts": encode_json_string(scheduler_opts if is_given(scheduler_opts) else {}, "scheduler_opts"),
            "use_host_network": use_host_network,
            "wsproxy_addr": wsproxy_addr,
            "wsproxy_api_token": wsproxy_api_token,
        }
        result_fields = ("ok", "msg", f"scaling_group {{ {' '.join(fields)} }}")
        return await mutate("create_scaling_group", {"name": name, "props": drop_unset(props)}, result_fields)

    @api_function
    @classmethod
    async def update(
        cls,
        name: str,
        *,
        description: _OptStr = undefined,
        is_active: _OptBool = undefined,
        is_public: _OptBool = undefined,
        driver: _OptStr = undefined,
        driver_opts: _OptJSON = undefined,
        scheduler: _OptStr = undefined,
        scheduler_opts: _OptJSON = undefined,
        use_host_network: _OptBool = undefined,
        wsproxy_addr: _OptStr = undefined,
        wsproxy_api_token: _OptStr = undefined,
        fields: Sequence[str] | None = None,
    ) -> dict[str, Any]:
        """Change the given properties (``None``/``undefined`` leave one unchanged); returns ``{"ok", "msg"}``."""
        props = {
            "description": description,
            "is_active": is_active,
            "is_public": is_public,
            "driver": driver,
            "driver_opts": encode_json_string(driver_opts, "driver_opts"),
            "scheduler": scheduler,
            "scheduler_opts": encode_json_string(scheduler_opts, "scheduler_opts"),
            "use_host_network": use_host_network,
            "wsproxy_addr": wsproxy_addr,
            "wsproxy_api_token": wsproxy_api_token,
        }
        props = {k: v for k, v in props.items() if is_given(v)}
        if not props:
            raise ValueError("Nothing to update: give at least one property to change.")
        return await mutate("modify_scaling_group", {"name": name, "props": props})

    @api_function
    @classmethod
    async def delete(cls, name: str) -> dict[str, Any]:
        """Delete a scaling group; returns ``{"ok", "msg"}``."""
        return await mutate("delete_scaling_group", {"name": name})

    @api_function
    @classmethod
    async def associate_domain(cls, scaling_group: str, domain: str) -> dict[str, Any]:
        """Let a domain use a scaling group."""
        args = {"scaling_group": scaling_group, "domain": domain}
        return await mutate("associate_scaling_group_with_domain", args)

    @api_function
    @classmethod
    async def dissociate_domain(cls, scaling_group: str, domain: str) -> dict[str, Any]:
        """Stop a domain from using a scaling group."""
        args = {"scaling_group": scaling_group, "domain": domain}
        return await mutate("disassociate_scaling_group_with_domain", args)

    @api_function
    @classmethod
    async def dissociate_all_domain(cls, domain: str) -> dict[str, Any]:
        """Remove every scaling group from a domain."""
        return await mutate("disassociate_all_scaling_groups_with_domain", {"domain": domain})

    @api_function
    @classmethod
    async def associate_group(cls, scaling_group: str, group_id: str | UUID) -> dict[str, Any]:
        """Let a group (by ID) use a scaling group."""
        args = {"scaling_group": scaling_group, "user_group": str(group_id)}
        return await mutate("associate_scaling_group_with_user_group", args)

    @api_function
    @classmethod
    async def dissociate_group(cls, scaling_group: str, group_id: str | UUID) -> dict[str, Any]:
        """Stop a group (by ID) from using a scaling group."""
        args = {"scaling_group": scaling_group, "user_group": str(group_id)}
        return await mutate("disassociate_scaling_group_with_user_group", args)

    @api_function
    @classmethod
    async def dissociate_all_group(cls, group_id: str | UUID) -> dict[str, Any]:
        """Remove every scaling group from a group (by ID)."""
        return await mutate("disassociate_all_scaling_groups_with_group", {"user_group": str(group_id)})

    @api_function
    @classmethod
    async def associate_keypair(cls, scaling_group: str, access_key: str) -> dict[str, Any]:
        """Let a keypair use a scaling group."""
        args = {"scaling_group": scaling_group, "access_key": access_key}
        return await mutate("associate_scaling_group_with_keypair", args)

    @api_function
    @classmethod
    async def dissociate_keypair(cls, scaling_group: str, access_key: str) -> dict[str, Any]:
        """Stop a keypair from using a scaling group."""
        args = {"scaling_group": scaling_group, "access_key": access_key}
        return await mutate("disassociate_scaling_group_with_keypair", args)
