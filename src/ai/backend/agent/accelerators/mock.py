"""The ``mock`` compute plugin: devices declared in a TOML file, no hardware behind them.

The file follows upstream's ``mock-accelerator.toml``::

    slot_name = "cuda"                 # slots are "cuda.device", "cuda.shares", "cuda.10g-mig"
    device_plugin_name = "CUDADevice"  # or "MockDevice"
    allocation_mode = "discrete"       # or "fractional" (upstream keeps this in etcd; here it may be per device)
    unit_mem = 1073741824              # fractional mode: 1 share = unit_mem bytes and unit_proc processors
    unit_proc = 10
    devices = [
      { mother_uuid = "c59395cd-...-2d01", model_name = "CUDA GPU", numa_node = 0, subproc_count = 108,
        memory_size = "40G", is_mig_device = false },
    ]
    [attributes]  # free-form, reported as is
    [formats.device]  # display hints, reported as is

Accepted spellings: ``subproc_count`` or ``smp_count``; ``is_mig_device`` or ``is_mig_devices``. Each device
may also set ``device_id`` (default: its ``mother_uuid``, with ``-<n>`` added when MIG slices share one) and
``allocation_mode``. MIG devices give a ``unique`` slot named after their memory, e.g. ``cuda.10g-mig``.
Containers only get environment variables naming their devices (see :meth:`DevicePlugin.accelerator_env`).
"""

from __future__ import annotations

import tomllib
from decimal import ROUND_DOWN, Decimal
from pathlib import Path
from typing import Any

from ai.backend.common.types import BinarySize, SlotTypeError

from .base import Allocation, Device, DevicePlugin, PluginError

PLUGIN_NAME = "ai.backend.accelerator.mock"
DEVICE_KEYS = {
    "mother_uuid",
    "device_id",
    "model_name",
    "numa_node",
    "subproc_count",
    "smp_count",
    "memory_size",
    "is_mig_device",
    "is_mig_devices",
    "allocation_mode",
    "slot_name",
}
TOP_KEYS = {
    "slot_name",
    "device_plugin_name",
    "allocation_mode",
    "unit_mem",
    "unit_proc",
    "devices",
    "attributes",
    "formats",
    "nvidia_driver",
    "cuda_runtime",
}
MODES = ("discrete", "fractional")


def _int(where: str, value: Any) -> int:
    if isinstance(value, bool) or not isinstance(value, int) or value < 0:
        raise PluginError(f"{where} must be a non-negative integer, got {value!r}")
    return value


class MockPlugin(DevicePlugin):
    """Simulated accelerators read from the mock TOML file."""

    name = PLUGIN_NAME

    def __init__(self, config: dict[str, Any], source: str = "mock config") -> None:
        self.source = source
        unknown = set(config) - TOP_KEYS
        if unknown:
            raise PluginError(f"{source}: unknown key(s) {', '.join(sorted(unknown))}")
        self.prefix = config.get("slot_name", "cuda")
        if (
            not isinstance(self.prefix, str)
            or not self.prefix.replace("_", "").replace("-", "").isalnum()
            or not self.prefix[:1].isalpha()
            or self.prefix != self.prefix.lower()
        ):
            raise PluginError(f"{source}: slot_name must be a lowercase name such as 'cuda', got {self.prefix!r}")
        self.device_plugin_name = str(config.get("device_plugin_name", "MockDevice"))
        if self.device_plugin_name not in ("CUDADevice", "MockDevice"):
            raise PluginError(f"{source}: device_plugin_name must be CUDADevice or MockDevice")
        self.mode = config.get("allocation_mode", "discrete")
        if self.mode not in MODES:
            raise PluginError(f"{source}: allocation_mode must be 'discrete' or 'fractional', got {self.mode!r}")
        self.unit_mem = _int(f"{source}: unit_mem", config["unit_mem"]) if "unit_mem" in config else 0
        self.unit_proc = _int(f"{source}: unit_proc", config["unit_proc"]) if "unit_proc" in config else 0
        self.attributes = dict(config.get("attributes") or {})
        for key in ("nvidia_driver", "cuda_runtime"):  # the older files keep these at the top
            if key in config:
                self.attributes.setdefault(key, config[key])
        self.formats = dict(config.get("formats") or {})
        raw = config.get("devices")
        if not isinstance(raw, list) or not raw:
            raise PluginError(f"{source}: 'devices' must be a non-empty list of tables")
        devices = self._devices(raw)
        types = {d.slot_name: "unique" if d.is_mig_device else "count" for d in devices}
        super().__init__(devices, types)

    @classmethod
    def from_file(cls, path: str | Path) -> MockPlugin:
        """Load the plugin from a mock TOML file."""
        p = Path(path)
        try:
            data = tomllib.loads(p.read_text())
        except OSError as e:
            raise PluginError(f"cannot read the mock accelerator file {p}: {e.strerror or e}") from None
        except tomllib.TOMLDecodeError as e:
            raise PluginError(f"{p}: invalid TOML: {e}") from None
        return cls(data, str(p))

    def _devices(self, raw: list[Any]) -> list[Device]:
        mothers = [d.get("mother_uuid") if isinstance(d, dict) else None for d in raw]
        seen: dict[str, int] = {}
        out = []
        for i, d in enumerate(raw):
            where = f"{self.source}: devices[{i}]"
            if not isinstance(d, dict):
                raise PluginError(f"{where} must be a table")
            unknown = set(d) - DEVICE_KEYS
            if unknown:
                raise PluginError(f"{where}: unknown key(s) {', '.join(sorted(unknown))}")
            mother = d.get("mother_uuid")
            if not isinstance(mother, str) or not mother:
                raise PluginError(f"{where}: mother_uuid is required")
            dev_id = d.get("device_id")
            if dev_id is None:
                n = seen[mother] = seen.get(mother, -1) + 1
                dev_id = mother if mothers.count(mother) == 1 else f"{mother}-{n}"
            if not isinstance(dev_id, str) or not dev_id or any(c in dev_id for c in ",= \t"):
                raise PluginError(f"{where}: device_id must be a string without commas, '=' or spaces")
            try:
                memory = int(BinarySize.parse(d.get("memory_size", 0)))
            except SlotTypeError as e:
                raise PluginError(f"{where}: memory_size: {e}") from None
            procs = _int(f"{where}: subproc_count", d.get("subproc_count", d.get("smp_count", 0)))
            numa = d.get("numa_node")
            if numa is not None:
                numa = _int(f"{where}: numa_node", numa)
            mig = d.get("is_mig_device", d.get("is_mig_devices", False))
            if not isinstance(mig, bool):
                raise PluginError(f"{where}: is_mig_device must be true or false")
            mode = d.get("allocation_mode", self.mode)
            if mode not in MODES:
                raise PluginError(f"{where}: allocation_mode must be 'discrete' or 'fractional'")
            if mig:
                gib = max(memory // (1024**3), 1)
                slot, capacity, fractional = f"{self.prefix}.{gib}g-mig", Decimal(1), False
            elif mode == "fractional":
                slot, capacity, fractional = f"{self.prefix}.shares", self._shares(memory, procs), True
            else:
                slot, capacity, fractional = f"{self.prefix}.device", Decimal(1), False
            out.append(
                Device(
                    device_id=dev_id,
                    slot_name=slot,
                    capacity=capacity,
                    fractional=fractional,
                    index=i,
                    model_name=str(d.get("model_name", "")),
                    memory_size=memory,
                    processing_units=procs,
                    numa_node=numa,
                    is_mig_device=mig,
                    mother_uuid=mother,
                )
            )
        return out

    def _shares(self, memory: int, procs: int) -> Decimal:
        """A fractional device's worth: 1.0, or what unit_mem/unit_proc make of its memory and processors."""
        parts = []
        if self.unit_mem:
            parts.append(Decimal(memory) / Decimal(self.unit_mem))
        if self.unit_proc:
            parts.append(Decimal(procs) / Decimal(self.unit_proc))
        shares = min(parts) if parts else Decimal(1)
        return shares.quantize(Decimal("0.01"), rounding=ROUND_DOWN)

    def container_config(self, allocation: Allocation) -> dict[str, Any]:
        env = self.accelerator_env(allocation)
        if env and self.device_plugin_name == "CUDADevice":
            # What a CUDA program would see with real devices: container-local numbering.
            env["CUDA_VISIBLE_DEVICES"] = ",".join(str(i) for i in range(len(self.allocated_devices(allocation))))
        return {"Env": env, "HostConfig": {}}

    def metadata(self) -> dict[str, Any]:
        return {
            **super().metadata(),
            "device_plugin_name": self.device_plugin_name,
            "attributes": self.attributes,
            "formats": self.formats,
        }
