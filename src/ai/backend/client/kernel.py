"""The legacy (19.09) ``Kernel`` API: :class:`ComputeSession` under its old name.

``Kernel.get_or_create()`` accepts ``client_token=`` as the old spelling of ``name=``,
and ``kernel_id`` is the old name of the session name attribute.
"""

from __future__ import annotations

from typing import Any

from .func.base import api_function
from .func.session import ComputeSession

__all__ = ("Kernel",)


class Kernel(ComputeSession):
    """A compute session, as the 19.09 SDK called it: ``Kernel(kernel_id, owner_access_key=None)``."""

    @property
    def kernel_id(self) -> str | None:
        """The session name (the 19.09 "kernel ID")."""
        return self.name

    @api_function
    @classmethod
    async def get_or_create(
        cls,
        image: str,
        *,
        client_token: str | None = None,
        name: str | None = None,
        **kwargs: Any,
    ) -> Kernel:
        """Like :meth:`ComputeSession.get_or_create`; ``client_token`` is an alias of ``name``."""
        if client_token is not None and name is not None and client_token != name:
            raise ValueError("Give either client_token or name, not both.")
        defaults: dict[str, Any] = {
            "type_": "interactive",
            "starts_at": None,
            "enqueue_only": False,
            "max_wait": 0,
            "no_reuse": False,
            "dependencies": None,
            "callback_url": None,
            "mounts": None,
            "mount_map": None,
            "envs": None,
            "startup_command": None,
            "resources": None,
            "resource_opts": None,
            "cluster_size": 1,
            "cluster_mode": "single-node",
            "domain_name": None,
            "group_name": None,
            "bootstrap_script": None,
            "tag": None,
            "scaling_group": None,
            "owner_access_key": None,
            "preopen_ports": None,
            "assign_agent": None,
        }
        unknown = set(kwargs) - set(defaults)
        if unknown:
            raise TypeError(f"get_or_create() got unexpected keyword arguments: {', '.join(sorted(unknown))}")
        result: Kernel = await cls._get_or_create(
            image, name=client_token if client_token is not None else name, **{**defaults, **kwargs}
        )
        return result
