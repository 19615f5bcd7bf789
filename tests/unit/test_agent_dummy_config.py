"""``[agent] backend`` and the ``[dummy]`` section of agent.toml, the fleet's per-agent configs, and the
dummy backend's answers."""

from __future__ import annotations

import asyncio
from typing import Any

import pytest
from pydantic import ValidationError

from ai.backend.agent.backends.dummy import DummyBackend, pick_delay
from ai.backend.agent.config import AgentConfig
from ai.backend.agent.fleet import fleet_configs
from ai.backend.common.contracts.agent import KernelSpec
from ai.backend.common.problems import InvalidAPIParameters, NotFound


def test_backend_defaults_to_docker_and_dummy_defaults() -> None:
    cfg = AgentConfig.model_validate({})
    assert cfg.agent.backend == "docker"
    assert cfg.dummy.create_delay == 0.0 and cfg.dummy.execute == "empty"
    refs = [i.ref for i in cfg.dummy.images]
    assert refs == ["python:3.11-debian12"]
    assert cfg.dummy.images[0].labels["ai.backend.kernelspec"] == "1"


def test_dummy_section_parses_numbers_ranges_and_images() -> None:
    cfg = AgentConfig.model_validate(
        {
            "agent": {"backend": "dummy"},
            "dummy": {
                "create-delay": [0.1, 0.3],
                "destroy-delay": 2,
                "execute": "echo",
                "images": [{"ref": "lablup/r:4", "labels": {"ai.backend.kernelspec": "1"}}],
            },
        }
    )
    assert cfg.agent.backend == "dummy"
    assert cfg.dummy.create_delay == (0.1, 0.3) and cfg.dummy.destroy_delay == 2.0
    assert [i.ref for i in cfg.dummy.images] == ["lablup/r:4"]
    for _ in range(20):
        assert 0.1 <= pick_delay(cfg.dummy.create_delay) <= 0.3
    assert pick_delay(cfg.dummy.destroy_delay) == 2.0


@pytest.mark.parametrize(
    "bad",
    [
        {"agent": {"backend": "podman"}},
        {"dummy": {"create-delay": -1}},
        {"dummy": {"create-delay": [2, 1]}},
        {"dummy": {"execute": "python"}},
        {"dummy": {"unknown-key": 1}},
        {"dummy": {"images": [{"ref": ""}]}},
    ],
)
def test_bad_dummy_settings_are_refused(bad: dict[str, Any]) -> None:
    with pytest.raises(ValidationError):
        AgentConfig.model_validate(bad)


def test_fleet_configs_give_each_agent_its_id_address_and_group() -> None:
    base = AgentConfig.model_validate({"agent": {"rpc-listen-host": "127.0.0.1"}, "resource": {"cpu": 4}})
    cfgs = fleet_configs(base, count=3, port=7000, id_prefix="i-d-", scaling_groups=["a", "b"])
    assert [c.agent.id for c in cfgs] == ["i-d-1", "i-d-2", "i-d-3"]
    assert [c.agent.scaling_group for c in cfgs] == ["a", "b", "a"]
    assert all(c.agent.backend == "dummy" and c.resource.cpu == 4 for c in cfgs)
    assert cfgs[1].rpc_addr() == "http://127.0.0.1:7000/a/i-d-2"


def test_dummy_backend_kernel_lifecycle() -> None:
    cfg = AgentConfig.model_validate({"agent": {"backend": "dummy"}, "dummy": {"execute": "echo"}})
    exits: list[tuple[str, str]] = []

    async def on_exit(kid: str, reason: str, code: int | None, **_: Any) -> None:
        exits.append((kid, reason))

    async def scenario() -> None:
        b = DummyBackend(cfg, on_exit)
        with pytest.raises(InvalidAPIParameters):
            await b.create_kernel(KernelSpec(kernel_id="k0", image="not-there:1", session_id="s"))
        r = await b.create_kernel(KernelSpec(kernel_id="k1", image="python:3.11-debian12", session_id="s"))
        assert r.container_id == "dummy-k1" and "container_start" in r.phases
        with pytest.raises(InvalidAPIParameters):
            await b.create_kernel(KernelSpec(kernel_id="k1", image="python:3.11-debian12", session_id="s"))
        out = await b.runner_request("k1", "execute", mode="query", code="hi", run_id="r")
        assert out["status"] == "finished" and out["console"] == [["stdout", "hi"]]
        assert list(await b.live_stats()) == ["k1"]
        await b.destroy_kernel("k1")
        assert not b.kernels
        with pytest.raises(NotFound):
            await b.runner_request("k1", "execute", code="x")
        await b.create_kernel(
            KernelSpec(
                kernel_id="k2",
                image="python:3.11-debian12",
                session_id="s",
                session_type="batch",
                startup_command="true",
            )
        )
        await asyncio.sleep(0.05)
        assert exits == [("k2", "task-finished")] and not b.kernels

    asyncio.run(scenario())
