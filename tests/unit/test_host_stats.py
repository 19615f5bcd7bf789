"""The agent's host utilisation sample (parsing /proc) and the manager's store of it."""

from __future__ import annotations

from pathlib import Path

from ai.backend.agent.stats import HostStats
from ai.backend.manager.agents.live_stats import AgentLiveStats


def _proc(tmp: Path, user: int, idle: int) -> None:
    (tmp / "stat").write_text(f"cpu  {user} 0 0 {idle} 0 0 0 0 0 0\ncpu0 1 2 3 4\n")
    (tmp / "meminfo").write_text("MemTotal:       1000 kB\nMemFree:         100 kB\nMemAvailable:    250 kB\n")


def test_cpu_percent_is_measured_between_samples(tmp_path: Path) -> None:
    _proc(tmp_path, 100, 900)
    stats = HostStats(tmp_path)
    first = stats.sample()
    assert "cpu_util_pct" not in first  # one sample is not a rate
    assert first["mem_total_bytes"] == 1000 * 1024 and first["mem_used_bytes"] == 750 * 1024
    _proc(tmp_path, 130, 970)  # 100 more jiffies, 30 of them busy
    assert stats.sample()["cpu_util_pct"] == 30.0


def test_unreadable_proc_gives_an_empty_sample(tmp_path: Path) -> None:
    assert HostStats(tmp_path / "missing").sample() == {}


def test_store_keeps_only_known_numbers() -> None:
    store = AgentLiveStats()
    store.update("i-1", {"cpu_util_pct": 12.5, "mem_used_bytes": 10, "evil": 1, "mem_total_bytes": "lots"})
    store.update("i-2", ["not", "a", "dict"])
    assert store.get("i-1") == {"cpu_util_pct": 12.5, "mem_used_bytes": 10.0}
    assert store.get("i-2") == {}
