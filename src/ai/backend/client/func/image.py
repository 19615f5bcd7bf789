"""``Image``: kernel images known to the manager, their aliases and registry rescans."""

from __future__ import annotations

import builtins
from collections.abc import Sequence
from typing import Any

from ._gql import mutate, query_field
from .base import BaseFunction, api_function

__all__ = ("DEFAULT_FIELDS", "Image")

DEFAULT_FIELDS: tuple[str, ...] = ("name", "registry", "tag", "digest", "size_bytes", "aliases")
"""The fields listed unless told otherwise."""


class Image(BaseFunction):
    """Images.  Listing is open to every user (filtered to usable images); mutations need a superadmin."""

    @api_function
    @classmethod
    async def list(
        cls, operation: bool = False, fields: Sequence[str] = DEFAULT_FIELDS
    ) -> builtins.list[dict[str, Any]]:
        """The images (*operation*: the operation images instead of the regular ones)."""
        return builtins.list(await query_field("images", {"is_operation": operation}, fields) or [])

    @api_function
    @classmethod
    async def detail(cls, reference: str, fields: Sequence[str] = DEFAULT_FIELDS) -> dict[str, Any] | None:
        """One image by reference (``name[:tag]``, full ``registry/name:tag`` or an alias)."""
        return await query_field("image", {"reference": reference}, fields)

    @api_function
    @classmethod
    async def alias_image(cls, alias: str, target: str) -> dict[str, Any]:
        """Make *alias* point to the image *target*; returns ``{"ok", "msg"}``."""
        return await mutate("alias_image", {"alias": alias, "target": target})

    @api_function
    @classmethod
    async def dealias_image(cls, alias: str) -> dict[str, Any]:
        """Remove an alias; returns ``{"ok", "msg"}``."""
        return await mutate("dealias_image", {"alias": alias})

    @api_function
    @classmethod
    async def rescan_images(cls, registry: str | None = None) -> dict[str, Any]:
        """Rescan one registry (all if omitted); returns ``{"ok", "msg", "task_id"}``."""
        return await mutate("rescan_images", {"registry": registry}, ("ok", "msg", "task_id"))
