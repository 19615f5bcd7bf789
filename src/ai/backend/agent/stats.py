"""Reading a container's resource usage straight from its cgroup (v1 or v2), without docker stats.

``docker stats`` needs two samples a second apart; reading the cgroup files takes microseconds,
which keeps session destruction fast.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

CGROUP_ROOT = Path("/sys/fs/cgroup")


def _read_int(path: Path) -> int | None:
    try:
        return int(path.read_text().split()[0])
    except (OSError, ValueError, IndexError):
        return None


def _kv(path: Path) -> dict[str, int]:
    out: dict[str, int] = {}
    try:
        for line in path.read_text().splitlines():
            parts = line.split()
            if len(parts) == 2 and parts[1].isdigit():
                out[parts[0]] = int(parts[1])
    except OSError:
        pass
    return out


def container_stats(container_id: str) -> dict[str, Any]:
    """The Container Stats Object of the API for a running container (zeros where unreadable)."""
    stats: dict[str, Any] = {
        "cpu_used": 0,
        "mem_max_bytes": 0,
        "mem_cur_bytes": 0,
        "net_rx_bytes": 0,
        "net_tx_bytes": 0,
        "io_read_bytes": 0,
        "io_write_bytes": 0,
        "io_max_scratch_size": 0,
        "io_cur_scratch_size": 0,
    }
    v2 = next(
        (
            p
            for p in (
                CGROUP_ROOT / "system.slice" / f"docker-{container_id}.scope",
                CGROUP_ROOT / "docker" / container_id,
            )
            if (p / "cgroup.controllers").exists()
        ),
        None,
    )
    if v2 is not None:
        cpu = _kv(v2 / "cpu.stat")
        stats["cpu_used"] = cpu.get("usage_usec", 0) // 1000
        stats["mem_cur_bytes"] = _read_int(v2 / "memory.current") or 0
        stats["mem_max_bytes"] = _read_int(v2 / "memory.peak") or stats["mem_cur_bytes"]
        return stats
    mem_dir = CGROUP_ROOT / "memory" / "docker" / container_id
    cpu_dir = CGROUP_ROOT / "cpuacct" / "docker" / container_id
    stats["cpu_used"] = (_read_int(cpu_dir / "cpuacct.usage") or 0) // 1_000_000
    stats["mem_cur_bytes"] = _read_int(mem_dir / "memory.usage_in_bytes") or 0
    stats["mem_max_bytes"] = _read_int(mem_dir / "memory.max_usage_in_bytes") or 0
    blk = CGROUP_ROOT / "blkio" / "docker" / container_id / "blkio.throttle.io_service_bytes"
    try:
        for line in blk.read_text().splitlines():
            parts = line.split()
            if len(parts) == 3 and parts[1] == "Read":
                stats["io_read_bytes"] += int(parts[2])
            elif len(parts) == 3 and parts[1] == "Write":
                stats["io_write_bytes"] += int(parts[2])
    except (OSError, ValueError):
        pass
    return stats


def network_stats(pid: int, proc: Path = Path("/proc")) -> dict[str, int]:
    """Bytes received and sent by a container (all its interfaces but loopback), from its init process."""
    rx = tx = 0
    try:
        lines = (proc / str(pid) / "net" / "dev").read_text().splitlines()[2:]
    except OSError:
        return {}
    for line in lines:
        name, _, rest = line.partition(":")
        fields = rest.split()
        if name.strip() == "lo" or len(fields) < 9:
            continue
        rx += int(fields[0])
        tx += int(fields[8])
    return {"net_rx_bytes": rx, "net_tx_bytes": tx}


class HostStats:
    """The host's CPU utilisation (between two calls, from ``/proc/stat``) and memory in use
    (``MemTotal - MemAvailable`` from ``/proc/meminfo``), sent with each heartbeat."""

    def __init__(self, proc: Path = Path("/proc")) -> None:
        self._proc = proc
        self._last: dict[str, tuple[int, int]] = {}

    def _cpu_times(self) -> dict[str, tuple[int, int]]:
        """``(total, idle)`` jiffies of the host (``"cpu"``) and of each core (``"cpu0"``, ...)."""
        out: dict[str, tuple[int, int]] = {}
        try:
            lines = self._proc.joinpath("stat").read_text().splitlines()
        except OSError:
            return out
        for line in lines:
            if not line.startswith("cpu"):
                continue
            name, *fields = line.split()
            try:
                values = [int(v) for v in fields]
                idle = values[3] + (values[4] if len(values) > 4 else 0)  # idle + iowait
            except (ValueError, IndexError):
                continue
            out[name] = (sum(values), idle)
        return out

    @staticmethod
    def _pct(now: tuple[int, int], last: tuple[int, int] | None) -> float | None:
        if last is None or now[0] <= last[0]:
            return None
        busy = (now[0] - last[0]) - (now[1] - last[1])
        return round(100.0 * busy / (now[0] - last[0]), 1)

    def sample(self) -> dict[str, Any]:
        """``cpu_util_pct``, ``cpu_util_pct_cores`` (core index → %; from the second sample on),
        ``mem_total_bytes`` and ``mem_used_bytes``."""
        out: dict[str, Any] = {}
        now = self._cpu_times()
        if "cpu" in now:
            pct = self._pct(now["cpu"], self._last.get("cpu"))
            if pct is not None:
                out["cpu_util_pct"] = pct
        cores: dict[str, float] = {}
        for name, times in now.items():
            if name != "cpu" and name[3:].isdigit():
                pct = self._pct(times, self._last.get(name))
                if pct is not None:
                    cores[name[3:]] = pct
        if cores:
            out["cpu_util_pct_cores"] = cores
        self._last = now
        mem = _kv_kib(self._proc / "meminfo")
        if "MemTotal" in mem and "MemAvailable" in mem:
            out["mem_total_bytes"] = mem["MemTotal"] * 1024
            out["mem_used_bytes"] = (mem["MemTotal"] - mem["MemAvailable"]) * 1024
        return out


def _kv_kib(path: Path) -> dict[str, int]:
    out: dict[str, int] = {}
    try:
        for line in path.read_text().splitlines():
            name, _, rest = line.partition(":")
            parts = rest.split()
            if parts and parts[0].isdigit():
                out[name.strip()] = int(parts[0])
    except OSError:
        pass
    return out
