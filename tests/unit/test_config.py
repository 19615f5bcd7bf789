"""Config loading: search paths, environment overrides and one-line errors."""

from __future__ import annotations

from pathlib import Path

import pytest

from ai.backend.agent.config import AgentConfig
from ai.backend.common.config import ConfigError, load_config, read_config_dict
from ai.backend.manager.config import ManagerConfig


def test_defaults_without_file(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.chdir(tmp_path)
    monkeypatch.setenv("HOME", str(tmp_path))
    cfg = load_config(ManagerConfig, "manager", environ={})
    assert cfg.manager.service_addr_port == 8081
    assert cfg.db_url().startswith("sqlite+aiosqlite:///")


def test_file_in_cwd_then_env_override(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.chdir(tmp_path)
    (tmp_path / "manager.toml").write_text(
        '[manager]\nservice-addr-port = 9000\n[db]\nurl = "sqlite+aiosqlite:///x.db"\n'
    )
    cfg = load_config(ManagerConfig, "manager", environ={"BACKENDAI_MANAGER__MANAGER__SERVICE_ADDR_PORT": "9100"})
    assert cfg.manager.service_addr_port == 9100
    assert cfg.db_url() == "sqlite+aiosqlite:///x.db"


def test_home_config_is_found(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.chdir(tmp_path)
    monkeypatch.setenv("HOME", str(tmp_path))
    d = tmp_path / ".config" / "backend.ai"
    d.mkdir(parents=True)
    (d / "agent.toml").write_text('[agent]\nid = "i-home"\n')
    data, found = read_config_dict("agent", environ={})
    assert found == d / "agent.toml"
    assert load_config(AgentConfig, "agent", environ={}).agent.id == "i-home"


def test_invalid_toml_is_one_line(tmp_path: Path) -> None:
    p = tmp_path / "bad.toml"
    p.write_text("[manager\nport = 1")
    with pytest.raises(ConfigError) as e:
        load_config(ManagerConfig, "manager", p, environ={})
    assert "invalid TOML" in str(e.value) and "\n" not in str(e.value)


def test_invalid_value_names_the_key(tmp_path: Path) -> None:
    p = tmp_path / "m.toml"
    p.write_text("[manager]\nservice-addr-port = 70000\n")
    with pytest.raises(ConfigError) as e:
        load_config(ManagerConfig, "manager", p, environ={})
    assert "service-addr-port" in str(e.value)


def test_unknown_key_rejected(tmp_path: Path) -> None:
    p = tmp_path / "m.toml"
    p.write_text("[manager]\nservice-adr-port = 1\n")
    with pytest.raises(ConfigError):
        load_config(ManagerConfig, "manager", p, environ={})


def test_missing_explicit_file(tmp_path: Path) -> None:
    with pytest.raises(ConfigError, match="not found"):
        load_config(ManagerConfig, "manager", tmp_path / "nope.toml", environ={})
