"""The ``cuda`` compute plugin: real NVIDIA GPUs found through NVML, one ``cuda.device`` per GPU.

NVML is called through :mod:`ctypes` on ``libnvidia-ml.so.1`` (no extra dependency). Without the library
or without GPUs the plugin offers no devices and logs one line. Kernels get their GPUs through Docker's
``DeviceRequests`` (the NVIDIA container toolkit must be installed on the host).
"""

from __future__ import annotations

import ctypes
import logging
from typing import Any

from .base import Allocation, Device, DevicePlugin

log = logging.getLogger(__name__)

PLUGIN_NAME = "ai.backend.accelerator.cuda"
ALIASES = ("ai.backend.accelerator.cuda", "ai.backend.accelerator.cuda_open")
NVML_LIBRARY = "libnvidia-ml.so.1"
NVML_SUCCESS = 0


class _Memory(ctypes.Structure):
    _fields_ = [("total", ctypes.c_ulonglong), ("free", ctypes.c_ulonglong), ("used", ctypes.c_ulonglong)]


class NVMLError(Exception):
    """An NVML call failed."""


def _check(nvml: Any, rc: int, what: str) -> None:
    if rc != NVML_SUCCESS:
        try:
            nvml.nvmlErrorString.restype = ctypes.c_char_p
            msg = nvml.nvmlErrorString(rc).decode()
        except (AttributeError, UnicodeDecodeError):
            msg = f"error {rc}"
        raise NVMLError(f"{what}: {msg}")


def probe_nvml(library: str = NVML_LIBRARY) -> tuple[list[Device], dict[str, str]]:
    """The GPUs NVML reports and the driver attributes; raises OSError/NVMLError when NVML is unusable."""
    nvml = ctypes.CDLL(library)
    _check(nvml, nvml.nvmlInit_v2(), "nvmlInit")
    try:
        attrs: dict[str, str] = {}
        buf = ctypes.create_string_buffer(96)
        if nvml.nvmlSystemGetDriverVersion(buf, 96) == NVML_SUCCESS:
            attrs["nvidia_driver"] = buf.value.decode()
        version = ctypes.c_int()
        if nvml.nvmlSystemGetCudaDriverVersion_v2(ctypes.byref(version)) == NVML_SUCCESS:
            attrs["cuda_runtime"] = f"{version.value // 1000}.{version.value % 1000 // 10}"
        count = ctypes.c_uint()
        _check(nvml, nvml.nvmlDeviceGetCount_v2(ctypes.byref(count)), "nvmlDeviceGetCount")
        devices = []
        for i in range(count.value):
            handle = ctypes.c_void_p()
            _check(nvml, nvml.nvmlDeviceGetHandleByIndex_v2(i, ctypes.byref(handle)), "nvmlDeviceGetHandleByIndex")
            uuid = ctypes.create_string_buffer(96)
            _check(nvml, nvml.nvmlDeviceGetUUID(handle, uuid, 96), "nvmlDeviceGetUUID")
            name = ctypes.create_string_buffer(96)
            model = name.value.decode() if nvml.nvmlDeviceGetName(handle, name, 96) == NVML_SUCCESS else "GPU"
            mem = _Memory()
            total = mem.total if nvml.nvmlDeviceGetMemoryInfo(handle, ctypes.byref(mem)) == NVML_SUCCESS else 0
            devices.append(
                Device(
                    device_id=uuid.value.decode(),
                    slot_name="cuda.device",
                    index=i,
                    model_name=model,
                    memory_size=int(total),
                    mother_uuid=uuid.value.decode(),
                )
            )
        return devices, attrs
    finally:
        nvml.nvmlShutdown()


def device_requests(device_ids: list[str]) -> list[dict[str, Any]]:
    """Docker ``HostConfig.DeviceRequests`` giving a container exactly these GPUs."""
    if not device_ids:
        return []
    return [{"Driver": "nvidia", "DeviceIDs": list(device_ids), "Capabilities": [["gpu"]]}]


class CudaPlugin(DevicePlugin):
    """Whole NVIDIA GPUs as ``cuda.device``."""

    name = PLUGIN_NAME
    prefix = "cuda"

    def __init__(self, devices: list[Device], attributes: dict[str, str] | None = None) -> None:
        super().__init__(devices, {"cuda.device": "count"} if devices else {})
        self.attributes = attributes or {}

    @classmethod
    def detect(cls, library: str = NVML_LIBRARY) -> CudaPlugin:
        """The plugin with the GPUs of this host; none (one log line) when NVML or the GPUs are missing."""
        try:
            devices, attrs = probe_nvml(library)
        except (OSError, AttributeError, NVMLError) as e:
            log.warning("cuda plugin: NVML unavailable (%s); offering no GPUs", e)
            return cls([])
        if not devices:
            log.warning("cuda plugin: NVML found no GPU; offering none")
        else:
            log.info("cuda plugin: %d GPU(s): %s", len(devices), ", ".join(d.model_name for d in devices))
        return cls(devices, attrs)

    def container_config(self, allocation: Allocation) -> dict[str, Any]:
        devs = self.allocated_devices(allocation)
        if not devs:
            return {"Env": {}, "HostConfig": {}}
        env = self.accelerator_env(allocation)
        # The NVIDIA runtime numbers the container's GPUs from 0.
        env["CUDA_VISIBLE_DEVICES"] = ",".join(str(i) for i in range(len(devs)))
        return {"Env": env, "HostConfig": {"DeviceRequests": device_requests([d.device_id for d in devs])}}

    def metadata(self) -> dict[str, Any]:
        return {**super().metadata(), "attributes": self.attributes}
