"""The cuda compute plugin without a GPU: NVML absent gives no devices; the DeviceRequests it produces."""

from __future__ import annotations

import logging
from decimal import Decimal

import pytest

from ai.backend.agent.accelerators import AcceleratorManager, AllocationError
from ai.backend.agent.accelerators.base import Device
from ai.backend.agent.accelerators.cuda import CudaPlugin, device_requests


def test_missing_nvml_means_no_devices_and_one_log_line(caplog: pytest.LogCaptureFixture) -> None:
    with caplog.at_level(logging.WARNING, logger="ai.backend.agent.accelerators.cuda"):
        p = CudaPlugin.detect("libnvidia-ml-does-not-exist.so.1")
    assert p.list_devices() == [] and p.slot_types() == {} and p.available_slots() == {}
    assert len(caplog.records) == 1 and "NVML unavailable" in caplog.records[0].getMessage()
    mgr = AcceleratorManager([p])
    with pytest.raises(AllocationError):
        mgr.allocate("k", {"cuda.device": "1"})


def test_device_requests_shape() -> None:
    assert device_requests([]) == []
    assert device_requests(["GPU-a", "GPU-b"]) == [
        {"Driver": "nvidia", "DeviceIDs": ["GPU-a", "GPU-b"], "Capabilities": [["gpu"]]}
    ]


def test_allocation_gives_device_requests_for_the_chosen_gpus() -> None:
    gpus = [Device(device_id=f"GPU-{i}", slot_name="cuda.device", index=i) for i in range(3)]
    p = CudaPlugin(gpus, {"nvidia_driver": "550.0"})
    assert p.slot_types() == {"cuda.device": "count"} and p.available_slots() == {"cuda.device": Decimal(3)}
    mgr = AcceleratorManager([p])
    mgr.allocate("a", {"cuda.device": "1"})
    mgr.allocate("b", {"cuda.device": "2"})
    env, host = mgr.container_config("b")
    assert host == {
        "DeviceRequests": [{"Driver": "nvidia", "DeviceIDs": ["GPU-1", "GPU-2"], "Capabilities": [["gpu"]]}]
    }
    assert env["CUDA_VISIBLE_DEVICES"] == "0,1"
    assert env["BACKENDAI_ACCELERATOR_CUDA_DEVICES"] == "GPU-1,GPU-2"
    with pytest.raises(AllocationError):
        mgr.allocate("c", {"cuda.device": "1"})
    assert mgr.container_config("c") == ({}, {})
    assert p.metadata()["attributes"] == {"nvidia_driver": "550.0"}
