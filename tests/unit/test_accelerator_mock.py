"""The mock compute plugin: its TOML, the agent config keys, and device allocation that never over-allocates."""

from __future__ import annotations

from decimal import Decimal
from pathlib import Path

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from ai.backend.agent.accelerators import AcceleratorManager, AllocationError, PluginError, load_plugins
from ai.backend.agent.accelerators.mock import MockPlugin
from ai.backend.agent.config import AgentConfig
from ai.backend.common.config import ConfigError, load_config

REPO = Path(__file__).resolve().parents[2]
EXAMPLE = REPO / "configs" / "accelerator" / "mock-accelerator.toml"


def dev(n: int, **kw: object) -> dict[str, object]:
    return {"mother_uuid": f"uuid-{n}", "model_name": "CUDA GPU", "memory_size": "40G", "subproc_count": 108, **kw}


def test_example_file_gives_device_and_shares_slots() -> None:
    p = MockPlugin.from_file(EXAMPLE)
    assert p.slot_types() == {"cuda.device": "count", "cuda.shares": "count"}
    assert p.available_slots() == {"cuda.device": Decimal(2), "cuda.shares": Decimal(2)}
    assert [d.device_id for d in p.list_devices()][0] == "c59395cd-ac91-4cd3-a1b0-3d2568aa2d01"
    meta = p.metadata()
    assert meta["attributes"]["cuda_runtime"] == "11.0"
    assert meta["device_plugin_name"] == "CUDADevice"
    assert len(meta["devices"]) == 4


def test_older_spellings_and_mig_slices() -> None:
    p = MockPlugin(
        {
            "slot_name": "cuda",
            "nvidia_driver": "418",
            "devices": [
                {"mother_uuid": "m0", "smp_count": 56, "memory_size": "20G", "is_mig_devices": True},
                {"mother_uuid": "m0", "smp_count": 28, "memory_size": "10G", "is_mig_device": True},
                {"mother_uuid": "m0", "smp_count": 28, "memory_size": "10G", "is_mig_device": True},
                dev(1),
            ],
        }
    )
    assert p.slot_types() == {"cuda.20g-mig": "unique", "cuda.10g-mig": "unique", "cuda.device": "count"}
    assert p.available_slots() == {"cuda.20g-mig": Decimal(1), "cuda.10g-mig": Decimal(2), "cuda.device": Decimal(1)}
    assert [d.device_id for d in p.list_devices()] == ["m0-0", "m0-1", "m0-2", "uuid-1"]
    assert p.list_devices()[0].processing_units == 56
    assert p.attributes["nvidia_driver"] == "418"
    a = p.allocate({"cuda.10g-mig": Decimal(2)})
    assert set(a["cuda.10g-mig"]) == {"m0-1", "m0-2"}
    with pytest.raises(AllocationError):
        p.allocate({"cuda.10g-mig": Decimal(1)})


def test_fractional_capacity_from_units() -> None:
    p = MockPlugin({"allocation_mode": "fractional", "unit_mem": 1024**3, "unit_proc": 10, "devices": [dev(1)]})
    assert p.available_slots() == {"cuda.shares": Decimal("10.8")}  # min(40 GiB / 1 GiB, 108 / 10)


@pytest.mark.parametrize(
    "config, message",
    [
        ({"devices": []}, "non-empty"),
        ({"devices": [{"model_name": "x"}]}, "mother_uuid"),
        ({"devices": [dev(1, memory_size="lots")]}, "memory_size"),
        ({"devices": [dev(1, colour="red")]}, "colour"),
        ({"allocation_mode": "greedy", "devices": [dev(1)]}, "allocation_mode"),
        ({"slot_name": "CUDA!", "devices": [dev(1)]}, "slot_name"),
        ({"devices": [dev(1, device_id="x"), dev(2, device_id="x")]}, "duplicate"),
    ],
)
def test_bad_mock_config_is_refused(config: dict[str, object], message: str) -> None:
    with pytest.raises(PluginError, match=message):
        MockPlugin(config)


def test_missing_file_is_one_line() -> None:
    with pytest.raises(PluginError, match="cannot read") as e:
        MockPlugin.from_file("/nonexistent/mock.toml")
    assert "\n" not in str(e.value)


@pytest.mark.parametrize("key", ["allow-compute-plugins", "allowed-compute-plugins"])
def test_agent_config_accepts_both_spellings(tmp_path: Path, key: str) -> None:
    (tmp_path / "agent.toml").write_text(
        f'[agent]\n{key} = ["ai.backend.accelerator.mock"]\n[plugins.mock]\nconfig = "{EXAMPLE}"\n'
    )
    cfg = load_config(AgentConfig, "agent", tmp_path / "agent.toml", environ={})
    assert cfg.agent.allow_compute_plugins == ["ai.backend.accelerator.mock"]
    mgr = load_plugins(cfg)
    assert mgr.slot_types() == {"cuda.device": "count", "cuda.shares": "count"}
    assert mgr.available_slots()["cuda.device"] == 2


def test_unknown_plugin_is_a_config_error(tmp_path: Path) -> None:
    (tmp_path / "agent.toml").write_text('[agent]\nallow-compute-plugins = ["ai.backend.accelerator.tpu"]\n')
    with pytest.raises(ConfigError, match="unknown compute plugin"):
        load_config(AgentConfig, "agent", tmp_path / "agent.toml", environ={})


def test_no_plugins_by_default() -> None:
    mgr = load_plugins(AgentConfig())
    assert mgr.slot_types() == {} and mgr.available_slots() == {}


def manager() -> AcceleratorManager:
    return AcceleratorManager([MockPlugin.from_file(EXAMPLE)])


def test_whole_devices_env_and_release() -> None:
    mgr = manager()
    mgr.allocate("k1", {"cpu": "1", "mem": "1073741824", "cuda.device": "1"})
    env, host = mgr.container_config("k1")
    assert env["BACKENDAI_ACCELERATOR_CUDA_DEVICES"] == "c59395cd-ac91-4cd3-a1b0-3d2568aa2d01"
    assert env["CUDA_VISIBLE_DEVICES"] == "0"
    assert host == {}
    mgr.allocate("k2", {"cuda.device": "1"})
    assert mgr.container_config("k2")[0]["BACKENDAI_ACCELERATOR_CUDA_DEVICES"].endswith("2d02")
    with pytest.raises(AllocationError) as e:
        mgr.allocate("k3", {"cuda.device": "1"})
    assert e.value.status == 409 and e.value.extra["reason"] == "no-available-device"
    assert not mgr.holds("k3")
    mgr.release("k1")
    mgr.release("k1")  # idempotent
    mgr.allocate("k3", {"cuda.device": "1"})
    assert mgr.container_config("k3")[0]["BACKENDAI_ACCELERATOR_CUDA_DEVICES"].endswith("2d01")


def test_fractional_shares_fit_one_device_then_spread() -> None:
    mgr = manager()
    a = mgr.allocate("a", {"cuda.shares": "0.6"})["ai.backend.accelerator.mock"]["cuda.shares"]
    b = mgr.allocate("b", {"cuda.shares": "0.3"})["ai.backend.accelerator.mock"]["cuda.shares"]
    assert len(a) == 1 and len(b) == 1 and set(a) == set(b)  # best fit keeps the other device whole
    c = mgr.allocate("c", {"cuda.shares": "1.05"})["ai.backend.accelerator.mock"]["cuda.shares"]
    assert sum(c.values()) == Decimal("1.05") and len(c) == 2  # spread over both devices
    env = mgr.container_config("c")[0]
    assert env["BACKENDAI_ACCELERATOR_CUDA_SHARES"].count("=") == 2
    with pytest.raises(AllocationError, match="free"):
        mgr.allocate("d", {"cuda.shares": "0.1"})  # 0.05 left
    mgr.allocate("d", {"cuda.shares": "0.05"})


def test_whole_device_request_must_be_integral_and_mixed_request_is_atomic() -> None:
    mgr = manager()
    with pytest.raises(AllocationError, match="whole"):
        mgr.allocate("k", {"cuda.device": "1.5"})
    with pytest.raises(AllocationError):
        mgr.allocate("k", {"cuda.shares": "1", "cuda.device": "3"})
    assert mgr.allocate("k2", {"cuda.shares": "2", "cuda.device": "2"})  # nothing was left taken


def test_unknown_slot_is_refused_zero_is_ignored() -> None:
    mgr = manager()
    with pytest.raises(AllocationError, match="tpu.device"):
        mgr.allocate("k", {"tpu.device": "1"})
    assert mgr.allocate("k", {"tpu.device": "0", "cpu": "1"}) == {}


def test_restore_after_restart() -> None:
    first = manager()
    first.allocate("k", {"cuda.device": "1", "cuda.shares": "0.5"})
    stored = first.to_json("k")
    second = manager()
    second.restore("k", stored)
    assert second.to_json("k") == stored
    second.allocate("other", {"cuda.device": "1"})
    with pytest.raises(AllocationError):
        second.allocate("third", {"cuda.device": "1"})  # the restored kernel still holds one
    with pytest.raises(AllocationError):
        second.allocate("third", {"cuda.shares": "1.6"})  # 1.5 shares left
    second.release("k")
    second.allocate("third", {"cuda.device": "1", "cuda.shares": "2"})


def test_duplicate_slot_owner_is_refused() -> None:
    with pytest.raises(PluginError, match="already provided"):
        AcceleratorManager([MockPlugin.from_file(EXAMPLE), MockPlugin.from_file(EXAMPLE)])


amounts = st.decimals(min_value=Decimal("0.01"), max_value=Decimal("2.5"), places=2)
ops = st.lists(
    st.one_of(
        st.tuples(st.just("alloc"), st.sampled_from(["cuda.device", "cuda.shares", "cuda.10g-mig"]), amounts),
        st.tuples(st.just("release"), st.integers(0, 20), st.just(Decimal(0))),
    ),
    max_size=40,
)


@settings(max_examples=200, deadline=None)
@given(ops)
def test_random_allocate_release_never_exceeds_capacity(seq: list[tuple[str, object, Decimal]]) -> None:
    plugin = MockPlugin(
        {
            "slot_name": "cuda",
            "devices": [
                dev(1),
                dev(2),
                dev(3, allocation_mode="fractional"),
                dev(4, allocation_mode="fractional"),
                dev(5, allocation_mode="fractional"),
                {"mother_uuid": "m", "memory_size": "10G", "is_mig_device": True},
                {"mother_uuid": "m", "memory_size": "10G", "is_mig_device": True},
            ],
        }
    )
    mgr = AcceleratorManager([plugin])
    live: list[str] = []
    for n, (op, arg, amount) in enumerate(seq):
        if op == "alloc":
            kid = f"k{n}"
            free_before = dict(plugin.allocator.used)
            try:
                got = mgr.allocate(kid, {str(arg): amount})
            except AllocationError:
                assert plugin.allocator.used == free_before  # a refusal takes nothing
            else:
                live.append(kid)
                per_dev = got["ai.backend.accelerator.mock"][str(arg)]
                assert sum(per_dev.values()) == (amount if arg == "cuda.shares" else len(per_dev))
        elif live:
            mgr.release(live.pop(int(str(arg)) % len(live)))
        for d in plugin.list_devices():
            held = sum(
                (a[plugin.name].get(d.slot_name, {}).get(d.device_id, Decimal(0)) for a in mgr.allocations.values()),
                Decimal(0),
            )
            assert held == plugin.allocator.used[d.device_id] <= d.capacity
            if not d.fractional:
                holders = [k for k, a in mgr.allocations.items() if d.device_id in a[plugin.name].get(d.slot_name, {})]
                assert len(holders) <= 1  # whole and MIG devices go to one kernel only
    for kid in live:
        mgr.release(kid)
    assert all(v == 0 for v in plugin.allocator.used.values())
