"""Detecting the host capacity the agent offers (cpu cores and memory)."""

from __future__ import annotations

import os
from decimal import Decimal

from ai.backend.common.types import BinarySize, ResourceSlot

from .config import ResourceSection


def host_memory() -> int:
    with open("/proc/meminfo") as f:
        for line in f:
            if line.startswith("MemTotal:"):
                return int(line.split()[1]) * 1024
    raise RuntimeError("cannot read MemTotal from /proc/meminfo")


def detect_capacity(cfg: ResourceSection) -> ResourceSlot:
    """Slots offered to the scheduler: configured values, else the host's cores and memory minus a reserve."""
    cpu = Decimal(str(cfg.cpu)) if cfg.cpu else Decimal(len(os.sched_getaffinity(0)))
    mem = int(BinarySize.parse(cfg.mem))
    if not mem:
        mem = max(host_memory() - int(BinarySize.parse(cfg.reserved_mem)), 0)
    return ResourceSlot({"cpu": cpu, "mem": Decimal(mem)})
