"""``Resource``: resource presets, preset checks and the known slot types.

``list``, ``check_presets`` and ``get_resource_slots`` use REST and work for every user;
the ``*_preset(s)`` methods manage presets through GraphQL (mutations: superadmins).
"""

from __future__ import annotations

import builtins
from collections.abc import Mapping, Sequence
from typing import Any

from ..exceptions import BackendClientError
from ..request import Request
from ._gql import drop_unset, encode_json_string, is_given, mutate, query_field
from .base import BaseFunction, api_function

__all__ = ("PRESET_FIELDS", "PRESET_JSON_FIELDS", "Resource")

PRESET_FIELDS: tuple[str, ...] = ("name", "resource_slots", "shared_memory")
"""The GraphQL fields of a resource preset."""
PRESET_JSON_FIELDS: tuple[str, ...] = ("resource_slots",)
"""The ``JSONString`` fields of a resource preset."""


def _shared_memory(value: str | int | None) -> str | None:
    if value is None:
        return None
    if isinstance(value, bool) or (isinstance(value, int) and value < 0):
        raise ValueError(f"Invalid shared memory size: {value!r}")
    from ai.backend.common.types import BinarySize, SlotTypeError

    try:
        return str(int(BinarySize.parse(value)))
    except SlotTypeError as e:
        raise ValueError(f"Invalid shared memory size: {e}") from None


class Resource(BaseFunction):
    """Resource presets and slot information."""

    @api_function
    @classmethod
    async def list(cls) -> builtins.list[dict[str, Any]]:
        """All resource presets (``GET /resource/presets``): ``[{"name", "resource_slots", "shared_memory"}]``."""
        async with Request("GET", "/resource/presets").fetch() as resp:
            body = await resp.json()
        try:
            return builtins.list(body["presets"])
        except (KeyError, TypeError) as e:
            raise BackendClientError(f"Unexpected response from /resource/presets: {e!r}") from None

    @api_function
    @classmethod
    async def check_presets(cls, scaling_group: str | None = None, group: str | None = None) -> dict[str, Any]:
        """Which presets the caller can allocate now, with the keypair and scaling-group remainders.

        Returns ``{"keypair_limits", "keypair_using", "keypair_remaining",
        "scaling_group_remaining", "scaling_groups", "presets"}``.
        """
        rqst = Request("POST", "/resource/check-presets")
        body: dict[str, Any] = {}
        if scaling_group is not None:
            body["scaling_group"] = scaling_group
        if group is not None:
            body["group"] = group
        rqst.set_json(body)
        async with rqst.fetch() as resp:
            return dict(await resp.json())

    @api_function
    @classmethod
    async def get_resource_slots(cls) -> dict[str, str]:
        """The slot types the cluster knows (``GET /config/resource-slots``), e.g. ``{"cpu": "count"}``."""
        async with Request("GET", "/config/resource-slots").fetch() as resp:
            return dict(await resp.json())

    @api_function
    @classmethod
    async def get_docker_registries(cls) -> dict[str, str]:
        """The Docker registries the manager scans for kernel images, ``{name: url}`` (superadmins)."""
        async with Request("GET", "/config/docker-registries").fetch() as resp:
            return dict(await resp.json())

    @api_function
    @classmethod
    async def list_presets(cls, fields: Sequence[str] = PRESET_FIELDS) -> builtins.list[dict[str, Any]]:
        """All resource presets through GraphQL (``resource_slots`` is a JSON string)."""
        return builtins.list(await query_field("resource_presets", {}, fields) or [])

    @api_function
    @classmethod
    async def preset_info(cls, name: str, fields: Sequence[str] = PRESET_FIELDS) -> dict[str, Any] | None:
        """One resource preset by name; ``None`` if there is none."""
        return await query_field("resource_preset", {"name": name}, fields)

    @api_function
    @classmethod
    async def create_preset(
        cls,
        name: str,
        resource_slots: Mapping[str, Any] | str,
        shared_memory: str | int | None = None,
        fields: Sequence[str] = ("name",),
    ) -> dict[str, Any]:
        """Create a preset; returns ``{"ok", "msg", "resource_preset"}``.

        *shared_memory* is a size such as ``"64m"`` or a byte count.
        """
        props = {
            "resource_slots": encode_json_string(resource_slots, "resource_slots"),
            "shared_memory": _shared_memory(shared_memory),
        }
        result_fields = ("ok", "msg", f"resource_preset {{ {' '.join(fields)} }}")
        return await mutate("create_resource_preset", {"name": name, "props": drop_unset(props)}, result_fields)

    @api_function
    @classmethod
    async def update_preset(
        cls,
        name: str,
        resource_slots: Mapping[str, Any] | str | None = None,
        shared_memory: str | int | None = None,
    ) -> dict[str, Any]:
        """Change a preset's slots and/or shared memory; returns ``{"ok", "msg"}``."""
        props = {
            "resource_slots": encode_json_string(resource_slots, "resource_slots"),
            "shared_memory": _shared_memory(shared_memory),
        }
        props = {k: v for k, v in props.items() if is_given(v)}
        if not props:
            raise ValueError("Nothing to update: give resource_slots and/or shared_memory.")
        return await mutate("modify_resource_preset", {"name": name, "props": props})

    @api_function
    @classmethod
    async def delete_preset(cls, name: str) -> dict[str, Any]:
        """Delete a preset; returns ``{"ok", "msg"}``."""
        return await mutate("delete_resource_preset", {"name": name})
