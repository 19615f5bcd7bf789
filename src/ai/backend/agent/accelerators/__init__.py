"""Compute plugins (accelerators) of the agent and the per-kernel bookkeeping of their devices.

``[agent] allow-compute-plugins`` (or ``allowed-compute-plugins``) names the plugins to load:
``ai.backend.accelerator.mock`` (devices from the TOML file of ``[plugins.mock] config``) and
``ai.backend.accelerator.cuda`` (alias ``...cuda_open``: NVIDIA GPUs through NVML).
"""

from __future__ import annotations

import logging
from collections.abc import Mapping
from decimal import Decimal, InvalidOperation
from typing import TYPE_CHECKING, Any

from ai.backend.common.types import ResourceSlot

from .base import (
    Allocation,
    AllocationError,
    ComputePlugin,
    PluginError,
    allocation_from_json,
    allocation_to_json,
)
from .cuda import ALIASES as CUDA_ALIASES
from .cuda import CudaPlugin
from .mock import PLUGIN_NAME as MOCK_NAME
from .mock import MockPlugin

if TYPE_CHECKING:
    from ..config import AgentConfig

__all__ = ["KNOWN_PLUGINS", "AcceleratorManager", "AllocationError", "PluginError", "load_plugins"]

log = logging.getLogger(__name__)
KNOWN_PLUGINS = (MOCK_NAME, *CUDA_ALIASES)
INTRINSIC = ("cpu", "mem")


def load_plugins(config: AgentConfig) -> AcceleratorManager:
    """Load the allowed plugins; raises :class:`PluginError` (one line) when one cannot be loaded."""
    plugins: list[ComputePlugin] = []
    for name in dict.fromkeys(config.agent.allow_compute_plugins):
        if name == MOCK_NAME:
            plugins.append(MockPlugin.from_file(config.plugins.mock.config))
        elif name in CUDA_ALIASES:
            if any(isinstance(p, CudaPlugin) for p in plugins):
                continue  # both spellings of the same plugin
            plugins.append(CudaPlugin.detect(config.plugins.cuda.library))
        else:
            raise PluginError(f"unknown compute plugin {name!r} (known: {', '.join(KNOWN_PLUGINS)})")
    return AcceleratorManager(plugins)


class AcceleratorManager:
    """Routes slot requests to the plugins that own the slots and remembers each kernel's devices."""

    def __init__(self, plugins: list[ComputePlugin] | None = None) -> None:
        self.plugins = list(plugins or [])
        self.owner: dict[str, ComputePlugin] = {}
        for p in self.plugins:
            for slot in p.slot_types():
                if slot in INTRINSIC or slot in self.owner:
                    raise PluginError(
                        f"slot {slot!r} of {p.name} is already provided"
                        + (f" by {self.owner[slot].name}" if slot in self.owner else "")
                    )
                self.owner[slot] = p
        self.allocations: dict[str, dict[str, Allocation]] = {}  # kernel id → plugin name → allocation

    def slot_types(self) -> dict[str, str]:
        return {slot: kind for p in self.plugins for slot, kind in p.slot_types().items()}

    def available_slots(self) -> ResourceSlot:
        total = ResourceSlot()
        for p in self.plugins:
            total = total + p.available_slots()
        return total

    def metadata(self) -> dict[str, Any]:
        """``Agent.compute_plugins``: plugin name → slot types and devices."""
        return {p.name: p.metadata() for p in self.plugins}

    def holds(self, kernel_id: str) -> bool:
        return kernel_id in self.allocations

    def allocate(self, kernel_id: str, requested: Mapping[str, Any]) -> dict[str, Allocation]:
        """Take devices for every plugin slot in ``requested`` (all or nothing); raises AllocationError."""
        want: dict[str, Decimal] = {}
        for slot, value in requested.items():
            if slot in INTRINSIC:
                continue
            if slot not in self.owner:
                try:
                    zero = Decimal(str(value)) == 0
                except InvalidOperation:
                    zero = False
                if zero:
                    continue
                raise AllocationError(f"No compute plugin on this agent provides the slot {slot!r}.")
            want[slot] = Decimal(str(value))
        taken: dict[str, Allocation] = {}
        done: list[tuple[ComputePlugin, Allocation]] = []
        try:
            for p in self.plugins:
                mine = {k: v for k, v in want.items() if self.owner[k] is p}
                if mine:
                    alloc = p.allocate(mine)
                    done.append((p, alloc))
                    if alloc:
                        taken[p.name] = alloc
        except BaseException:
            for p, alloc in done:
                p.release(alloc)
            raise
        if taken:
            self.allocations[kernel_id] = taken
        return taken

    def release(self, kernel_id: str) -> None:
        """Give back a kernel's devices (idempotent)."""
        for name, alloc in self.allocations.pop(kernel_id, {}).items():
            plugin = self._plugin(name)
            if plugin is not None:
                plugin.release(alloc)

    def restore(self, kernel_id: str, stored: Any) -> None:
        """Take back a kernel's devices from its stored :meth:`to_json` after an agent restart."""
        if not isinstance(stored, dict) or kernel_id in self.allocations:
            return
        restored: dict[str, Allocation] = {}
        for name, data in stored.items():
            plugin = self._plugin(str(name))
            if plugin is None:
                log.warning("kernel %s holds devices of plugin %s, which is not loaded now", kernel_id, name)
                continue
            alloc = allocation_from_json(data)
            plugin.restore(alloc)
            restored[plugin.name] = alloc
        if restored:
            self.allocations[kernel_id] = restored

    def to_json(self, kernel_id: str) -> dict[str, Any]:
        return {name: allocation_to_json(a) for name, a in self.allocations.get(kernel_id, {}).items()}

    def container_config(self, kernel_id: str) -> tuple[dict[str, str], dict[str, Any]]:
        """The environment variables and ``HostConfig`` additions for a kernel's devices."""
        env: dict[str, str] = {}
        host: dict[str, Any] = {}
        for name, alloc in self.allocations.get(kernel_id, {}).items():
            plugin = self._plugin(name)
            if plugin is None:
                continue
            cc = plugin.container_config(alloc)
            env.update(cc.get("Env") or {})
            for key, value in (cc.get("HostConfig") or {}).items():
                if isinstance(value, list):
                    host.setdefault(key, []).extend(value)
                else:
                    host[key] = value
        return env, host

    def _plugin(self, name: str) -> ComputePlugin | None:
        if name in CUDA_ALIASES:
            name = CudaPlugin.name
        return next((p for p in self.plugins if p.name == name), None)
