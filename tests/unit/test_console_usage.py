"""The usage page's chart geometry and number formatting (``ai.backend.web.console.pages.usage``)."""

from __future__ import annotations

from typing import Any

import pytest

from ai.backend.web.console.pages.usage import BOTTOM, HEIGHT, TOP, allocation_rows, chart, nice_ceiling, num


@pytest.mark.parametrize(
    ("value", "ceiling"),
    [(0, 1), (-3, 1), (1, 1), (1.2, 2), (3, 5), (7.5, 10), (0.0012, 0.002), (240, 250), (999, 1000)],
)
def test_nice_ceiling(value: float, ceiling: float) -> None:
    assert nice_ceiling(value) == pytest.approx(ceiling)


def test_num() -> None:
    assert [num(v) for v in (4.0, 0.0139, 12.34567, 0, -0.0, None, "x")] == [
        "4",
        "0.0139",
        "12.3457",
        "0",
        "0",
        "–",
        "–",
    ]


def _bins(values: list[float]) -> list[dict[str, Any]]:
    return [{"start": f"2026-12-{i + 1:02d}T00:00:00+00:00", "cpu_hours": v} for i, v in enumerate(values)]


def test_chart_bars_scale_to_the_nice_maximum_and_carry_their_values() -> None:
    c = chart(_bins([0, 2.5, 5]), "cpu_hours", "CPU-hour", "CPU-hours", "day")
    plot_h = HEIGHT - TOP - BOTTOM
    heights = [b.height for b in c["bars"]]
    assert heights == [0, pytest.approx(plot_h / 2), pytest.approx(plot_h)]
    assert [b.title for b in c["bars"]] == [
        "2026-12-01: 0 CPU-hours",
        "2026-12-02: 2.5 CPU-hours",
        "2026-12-03: 5 CPU-hours",
    ]
    assert all(b.y + b.height == pytest.approx(c["base"]) for b in c["bars"])
    assert [t["text"] for t in c["y_ticks"]] == ["0", "2.5", "5"]
    assert c["total"] == "7.5" and c["unit_total"] == "CPU-hours"


def test_chart_labels_always_include_the_last_bin_and_stay_few() -> None:
    c = chart(_bins([1.0] * 30), "cpu_hours", "CPU-hour", "CPU-hours", "day")
    texts = [label["text"] for label in c["x_labels"]]
    assert texts[-1] == "12-30" and len(texts) <= 8
    weekly = chart(_bins([1.0]), "cpu_hours", "CPU-hour", "CPU-hours", "week")
    assert weekly["bars"][0].title == "week of 2026-12-01: 1 CPU-hour" and weekly["unit_total"] == "CPU-hour"


def test_chart_of_nothing_is_flat() -> None:
    c = chart(_bins([0, 0]), "cpu_hours", "CPU-hour", "CPU-hours", "day")
    assert all(b.height == 0 for b in c["bars"]) and [t["text"] for t in c["y_ticks"]] == ["0", "0.5", "1"]
    assert chart([], "cpu_hours", "CPU-hour", "CPU-hours", "day")["bars"] == []


def test_allocation_rows() -> None:
    rows = allocation_rows(
        {
            "keypair_limits": {"cpu": "4", "mem": "Infinity"},
            "keypair_using": {"cpu": "1", "mem": "1073741824"},
            "keypair_remaining": {"cpu": "3", "mem": "Infinity"},
            "scaling_group_remaining": {"cpu": "8"},
        }
    )
    cpu, mem = rows
    assert cpu["slot"] == "cpu" and cpu["percent"] == 25 and not cpu["limit"]["infinite"]
    assert mem["limit"]["infinite"] and mem["percent"] is None and mem["free"]["raw"] == "0"
