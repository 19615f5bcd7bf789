"""The compute-plugin interface and the device slot allocator the plugins share.

A compute plugin owns a set of devices; each device adds capacity to one slot (``cuda.device``,
``cuda.shares``, ``cuda.10g-mig``...). Slot kinds follow the resource-slot model:

* ``count`` on whole devices (``cuda.device``): each device is worth 1 and goes to one kernel;
  requests must be whole numbers.
* ``count`` on fractional devices (``cuda.shares``): each device is worth some shares and a request
  may take parts of one or more devices (best fit on one device first, else spread over several).
* ``unique`` (MIG slices): like whole devices, each one exclusively to one kernel.
* ``bytes`` is accepted as a kind but no plugin here declares one.

An :data:`Allocation` maps slot name → device id → amount; it is what the agent stores in the kernel's
``kernel.json`` and gives back to :meth:`ComputePlugin.restore` after a restart.
"""

from __future__ import annotations

import logging
from collections.abc import Mapping
from dataclasses import dataclass, field
from decimal import Decimal, InvalidOperation
from typing import Any, Protocol

from ai.backend.common.problems import ProblemError
from ai.backend.common.types import ResourceSlot

log = logging.getLogger(__name__)

#: slot name → device id → amount taken from that device.
Allocation = dict[str, dict[str, Decimal]]

SLOT_KINDS = ("count", "bytes", "unique")
ZERO = Decimal(0)


class AllocationError(ProblemError):
    """The devices of this agent cannot satisfy a kernel's request (answered 409 to the manager)."""

    status, slug, title = 409, "accelerator-unavailable", "The requested accelerator devices are not available"

    def __init__(self, detail: str | None = None, **extra: Any) -> None:
        extra.setdefault("reason", "no-available-device")  # becomes the session's status_info
        super().__init__(detail, **extra)


class PluginError(Exception):
    """A compute plugin cannot be loaded (bad name or bad configuration); the agent refuses to start."""


@dataclass(frozen=True)
class Device:
    """One device a plugin offers, real or simulated."""

    device_id: str
    slot_name: str  # the slot this device adds capacity to
    capacity: Decimal = Decimal(1)  # 1 for whole/unique devices; the shares worth of a fractional device
    fractional: bool = False
    index: int = 0  # host index (CUDA numbering)
    model_name: str = ""
    memory_size: int = 0
    processing_units: int = 0
    numa_node: int | None = None
    is_mig_device: bool = False
    mother_uuid: str = ""

    def info(self) -> dict[str, Any]:
        """JSON description for the agent's ``compute_plugins`` report."""
        return {
            "device_id": self.device_id,
            "slot_name": self.slot_name,
            "capacity": str(self.capacity),
            "index": self.index,
            "model_name": self.model_name,
            "memory_size": self.memory_size,
            "processing_units": self.processing_units,
            "numa_node": self.numa_node,
            "is_mig_device": self.is_mig_device,
            "mother_uuid": self.mother_uuid,
        }


class ComputePlugin(Protocol):
    """What the agent needs from a compute plugin."""

    name: str  # the full plugin name used in ``allow-compute-plugins``

    def slot_types(self) -> dict[str, str]:
        """Slot name → ``count``, ``bytes`` or ``unique``."""
        ...

    def list_devices(self) -> list[Device]: ...

    def available_slots(self) -> ResourceSlot:
        """The total capacity per slot (what the scheduler may place on this agent)."""
        ...

    def allocate(self, requested: Mapping[str, Decimal]) -> Allocation:
        """Take concrete devices for the slots of ``requested`` this plugin owns; raises AllocationError."""
        ...

    def release(self, allocation: Allocation) -> None: ...

    def restore(self, allocation: Allocation) -> None:
        """Mark a stored allocation as taken again (after an agent restart)."""
        ...

    def container_config(self, allocation: Allocation) -> dict[str, Any]:
        """``{"Env": {...}, "HostConfig": {...}}`` additions for the kernel's container."""
        ...

    def metadata(self) -> dict[str, Any]:
        """A JSON summary (slot types, devices) for the manager's ``Agent.compute_plugins``."""
        ...


@dataclass
class SlotAllocator:
    """Keeps which part of which device is taken; never hands out more than a device's capacity."""

    devices: list[Device]
    used: dict[str, Decimal] = field(default_factory=dict)

    def __post_init__(self) -> None:
        ids = [d.device_id for d in self.devices]
        if len(set(ids)) != len(ids):
            raise PluginError(f"duplicate device ids: {sorted({i for i in ids if ids.count(i) > 1})}")
        self._by_id = {d.device_id: d for d in self.devices}
        for d in self.devices:
            self.used.setdefault(d.device_id, ZERO)

    def slot_names(self) -> list[str]:
        return sorted({d.slot_name for d in self.devices})

    def capacity(self) -> ResourceSlot:
        out: dict[str, Decimal] = {}
        for d in self.devices:
            out[d.slot_name] = out.get(d.slot_name, ZERO) + d.capacity
        return ResourceSlot(out)

    def free(self, device_id: str) -> Decimal:
        d = self._by_id[device_id]
        return d.capacity - self.used[device_id]

    def allocate(self, requested: Mapping[str, Decimal]) -> Allocation:
        """All-or-nothing allocation of the slots of ``requested`` that these devices serve."""
        plan: Allocation = {}
        mine = set(self.slot_names())
        for slot, amount in requested.items():
            if slot not in mine:
                continue
            try:
                amount = Decimal(str(amount))
            except InvalidOperation:
                raise AllocationError(f"{slot}: not a number: {amount!r}.") from None
            if amount <= 0:
                continue
            devs = [d for d in self.devices if d.slot_name == slot]
            plan[slot] = (
                self._plan_fraction(slot, devs, amount) if devs[0].fractional else self._plan_whole(slot, devs, amount)
            )
        for per_dev in plan.values():
            for dev_id, amount in per_dev.items():
                self.used[dev_id] += amount
        return plan

    def _plan_whole(self, slot: str, devs: list[Device], amount: Decimal) -> dict[str, Decimal]:
        if amount != amount.to_integral_value():
            raise AllocationError(f"{slot} takes whole devices; {amount} was asked.")
        free = [d for d in devs if self.used[d.device_id] == 0]
        if len(free) < amount:
            raise AllocationError(f"{slot}: {amount} device(s) asked, {len(free)} of {len(devs)} free on this agent.")
        return {d.device_id: d.capacity for d in free[: int(amount)]}

    def _plan_fraction(self, slot: str, devs: list[Device], amount: Decimal) -> dict[str, Decimal]:
        frees = [(self.free(d.device_id), d.device_id) for d in devs]
        total = sum((f for f, _ in frees), ZERO)
        if total < amount:
            raise AllocationError(f"{slot}: {amount} asked, {total} free on this agent.")
        # One device when possible (the fullest one that fits, to keep whole devices free) ...
        fitting = sorted((f, i) for f, i in frees if f >= amount)
        if fitting:
            return {fitting[0][1]: amount}
        # ... else spread over the devices with the most room first.
        plan: dict[str, Decimal] = {}
        left = amount
        for f, dev_id in sorted(frees, key=lambda x: (-x[0], x[1])):
            if left <= 0:
                break
            take = min(f, left)
            if take > 0:
                plan[dev_id] = take
                left -= take
        return plan

    def release(self, allocation: Allocation) -> None:
        for per_dev in allocation.values():
            for dev_id, amount in per_dev.items():
                if dev_id in self.used:
                    self.used[dev_id] = max(self.used[dev_id] - amount, ZERO)

    def restore(self, allocation: Allocation) -> None:
        """Take a stored allocation again; parts naming devices that are gone are logged and skipped."""
        for slot, per_dev in allocation.items():
            for dev_id, amount in per_dev.items():
                if dev_id not in self._by_id:
                    log.warning("restored allocation names unknown device %s (%s); ignored", dev_id, slot)
                    continue
                self.used[dev_id] = min(self.used[dev_id] + amount, self._by_id[dev_id].capacity)


def fmt_amount(amount: Decimal) -> str:
    """``1``, ``0.5`` (no trailing zeros, no exponent)."""
    return str(int(amount)) if amount == amount.to_integral_value() else format(amount.normalize(), "f")


def allocation_to_json(allocation: Allocation) -> dict[str, dict[str, str]]:
    return {slot: {dev: fmt_amount(amount) for dev, amount in per_dev.items()} for slot, per_dev in allocation.items()}


def allocation_from_json(data: Any) -> Allocation:
    """Parse a stored allocation; malformed parts are dropped."""
    out: Allocation = {}
    if not isinstance(data, dict):
        return out
    for slot, per_dev in data.items():
        if not isinstance(per_dev, dict):
            continue
        try:
            out[str(slot)] = {str(dev): Decimal(str(amount)) for dev, amount in per_dev.items()}
        except InvalidOperation:
            continue
    return out


class DevicePlugin:
    """A plugin serving a fixed list of devices through a :class:`SlotAllocator`; subclasses decide the
    devices, the slot types and the container configuration."""

    name = ""
    #: The slot prefix (``cuda``) used in the container's environment variable names.
    prefix = ""

    def __init__(self, devices: list[Device], slot_types: dict[str, str]) -> None:
        self.devices = devices
        self._slot_types = slot_types
        self.allocator = SlotAllocator(devices)

    def slot_types(self) -> dict[str, str]:
        return dict(self._slot_types)

    def list_devices(self) -> list[Device]:
        return list(self.devices)

    def available_slots(self) -> ResourceSlot:
        return self.allocator.capacity()

    def allocate(self, requested: Mapping[str, Decimal]) -> Allocation:
        return self.allocator.allocate(requested)

    def release(self, allocation: Allocation) -> None:
        self.allocator.release(allocation)

    def restore(self, allocation: Allocation) -> None:
        self.allocator.restore(allocation)

    def allocated_devices(self, allocation: Allocation) -> list[Device]:
        """The devices an allocation touches, in host index order."""
        ids = {dev for per_dev in allocation.values() for dev in per_dev}
        return sorted((d for d in self.devices if d.device_id in ids), key=lambda d: (d.index, d.device_id))

    def accelerator_env(self, allocation: Allocation) -> dict[str, str]:
        """``BACKENDAI_ACCELERATOR_<PREFIX>_DEVICES`` (device ids) and, for fractional slots,
        ``BACKENDAI_ACCELERATOR_<PREFIX>_SHARES`` (``id=amount`` pairs)."""
        devs = self.allocated_devices(allocation)
        if not devs:
            return {}
        key = self.prefix.upper().replace("-", "_").replace(".", "_")
        env = {f"BACKENDAI_ACCELERATOR_{key}_DEVICES": ",".join(d.device_id for d in devs)}
        shares = [
            f"{dev}={fmt_amount(amount)}"
            for slot, per_dev in sorted(allocation.items())
            for dev, amount in per_dev.items()
            if self._is_fractional(dev)
        ]
        if shares:
            env[f"BACKENDAI_ACCELERATOR_{key}_SHARES"] = ",".join(shares)
        return env

    def _is_fractional(self, device_id: str) -> bool:
        return any(d.fractional for d in self.devices if d.device_id == device_id)

    def container_config(self, allocation: Allocation) -> dict[str, Any]:
        return {"Env": self.accelerator_env(allocation), "HostConfig": {}}

    def metadata(self) -> dict[str, Any]:
        return {"slot_types": self.slot_types(), "devices": [d.info() for d in self.devices]}
