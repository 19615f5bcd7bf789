"""Unit tests of the ``backend.ai`` CLI that need no server: help, usage errors, config, laziness."""

from __future__ import annotations

import os
import socket
import subprocess
import sys
from pathlib import Path

import pytest
from click.testing import CliRunner, Result

from ai.backend.client.cli.main import COMMANDS, main
from ai.backend.client.config import set_config

SRC = Path(__file__).resolve().parents[2] / "src"


def _closed_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


@pytest.fixture(autouse=True)
def clean_env(monkeypatch: pytest.MonkeyPatch) -> str:
    for key in list(os.environ):
        if key.startswith(("BACKEND_", "SORNA_")):
            monkeypatch.delenv(key)
    endpoint = f"http://127.0.0.1:{_closed_port()}"
    monkeypatch.setenv("BACKEND_ENDPOINT", endpoint)
    monkeypatch.setenv("BACKEND_ACCESS_KEY", "AKIAIOSFODNN7EXAMPLE")
    monkeypatch.setenv("BACKEND_SECRET_KEY", "wJalrXUtnFEMI/K7MDENG/bPxRfiCYEXAMPLEKEY")
    set_config(None)
    return endpoint


def invoke(*args: str) -> Result:
    return CliRunner().invoke(main, list(args), prog_name="backend.ai")  # type: ignore[arg-type]


def assert_one_line_error(result: Result, code: int, *needles: str) -> None:
    assert result.exit_code == code, result.output
    lines = result.stderr.strip().splitlines()
    assert len(lines) == 1, result.stderr
    assert lines[0].startswith("✘ ")
    assert "Traceback" not in result.output
    for needle in needles:
        assert needle in lines[0]


def _all_command_paths() -> list[list[str]]:
    paths: list[list[str]] = [[]]
    for name, spec in COMMANDS.items():
        if name in ("server", "mgr"):
            continue
        for n in (name, *spec.aliases):
            paths.append([n])
    for sub in ("create", "start", "destroy", "rm", "kill", "terminate", "restart", "info", "list"):
        paths.append(["session", sub])
    for sub in ("upload", "download", "ls", "logs", "rename"):
        paths.append(["session", sub])
    paths += [
        ["admin", "session"],
        ["admin", "session", "list"],
        ["admin", "session", "info"],
        ["admin", "sessions"],
    ]
    return paths


@pytest.mark.parametrize("path", _all_command_paths(), ids=lambda p: " ".join(p) or "backend.ai")
def test_help_of_every_command(path: list[str]) -> None:
    result = invoke(*path, "--help")
    assert result.exit_code == 0, result.output
    assert result.stdout.startswith("Usage: backend.ai")
    short = invoke(*path, "-h")
    assert short.exit_code == 0 and short.stdout == result.stdout


def test_top_level_help_lists_commands_and_aliases() -> None:
    out = invoke("--help").stdout
    for text in ("run", "ps", "destroy (rm, kill, terminate)", "create (start)", "config", "server", "mgr"):
        assert text in out
    assert "--skip-sslcert-validation" in out and "--output [console|json]" in out


@pytest.mark.parametrize("path", [[], ["session"], ["admin"], ["admin", "session"]])
def test_groups_without_subcommand_show_help(path: list[str]) -> None:
    result = invoke(*path)
    assert result.exit_code == 0, result.output
    assert result.stdout.startswith("Usage: backend.ai")
    assert "Commands:" in result.stdout


def test_version() -> None:
    result = invoke("--version")
    assert result.exit_code == 0
    assert result.stdout.startswith("backend.ai ")
    assert "v6.20220615" in result.stdout


def test_unknown_command() -> None:
    assert_one_line_error(invoke("nosuchcommand"), 2, "No such command")


@pytest.mark.parametrize(
    ("args", "needle"),
    [
        (["run", "python"], '"-c"'),
        (["run", "python", "-c", "print(1)", "main.py"], "either source files or"),
        (["run", "-r", "cpu", "-c", "x", "python"], "'cpu' is not a KEY=VALUE pair"),
        (["run", "-r", "mem=lots", "-c", "x", "python"], "'lots' is not a valid value"),
        (["run", "-e", "NOEQUALS", "-c", "x", "python"], "missing '='"),
        (["run", "-e", "1X=2", "-c", "x", "python"], "'1X' is not a valid key"),
        (["run", "--env-range", "X=foo:1", "-c", "x", "python"], "unknown range expression"),
        (["run", "--exec-range", "X=range:1,2,0", "-c", "x", "python"], "STEP"),
        (["run", "--max-parallel", "0", "-c", "x", "python"], "--max-parallel"),
        (["run", "-t", "ab", "-c", "x", "python"], "4 to 64"),
        (["run", "--cluster-size", "0", "-c", "x", "python"], "--cluster-size"),
        (["run", "--preopen", "80", "-c", "x", "python"], "between 1024 and 65535"),
        (["run", "-m", "=x", "-c", "x", "python"], "empty virtual folder name"),
        (["run", "--type", "weird", "-c", "x", "python"], "--type"),
        (["create", "-r", "cpu", "python"], "KEY=VALUE"),
        (["start", "-t", "a b c", "python"], "may contain only"),
        (["ps", "-f", "name,bogus"], "There is no such format option: bogus"),
        (["ps", "--running", "--dead"], "--running and --dead"),
        (["ps", "-s", "SLEEPING"], "unknown status 'SLEEPING'"),
        (["ps", "--limit", "0"], "--limit"),
        (["ps", "--all", "--limit", "5"], "--all and --limit"),
        (["session", "list", "-f", "nope"], "no such format option"),
        (["admin", "session", "list", "-f", "nope"], "no such format option"),
        (["rm"], "Missing argument"),
        (["session", "destroy"], "Missing argument"),
        (["restart"], "Missing argument"),
        (["info"], "Missing argument"),
        (["--output", "xml", "ps"], "--output"),
    ],
)
def test_usage_errors_are_one_line(args: list[str], needle: str) -> None:
    result = invoke(*args)
    assert_one_line_error(result, 2, needle)
    assert result.stdout == ""


def test_bad_config_env_is_one_line(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("BACKEND_SKIP_SSLCERT_VALIDATION", "maybe")
    assert_one_line_error(invoke("ps"), 1, "BACKEND_SKIP_SSLCERT_VALIDATION", "'maybe'")
    monkeypatch.delenv("BACKEND_SKIP_SSLCERT_VALIDATION")
    monkeypatch.setenv("BACKEND_ENDPOINT", "ftp://example.com")
    assert_one_line_error(invoke("run", "-c", "x", "python"), 1, "BACKEND_ENDPOINT")


@pytest.mark.parametrize("args", [["ps"], ["rm", "abcd"], ["info", "abcd"], ["--output", "json", "ps"]])
def test_connection_error_names_the_endpoint(clean_env: str, args: list[str]) -> None:
    assert_one_line_error(invoke(*args), 1, "Cannot connect", clean_env)


def test_run_connection_error(clean_env: str) -> None:
    result = invoke("run", "-c", "print(1)", "python")
    assert result.exit_code == 1
    assert result.stdout == ""
    assert "Session name prefix:" in result.stderr
    assert clean_env in result.stderr
    assert "Traceback" not in result.stderr


def test_config_output_masks_the_secret(clean_env: str) -> None:
    result = invoke("config")
    assert result.exit_code == 0, result.output
    lines = result.stdout.splitlines()
    assert lines[0] == f"API endpoint: {clean_env} (mode: api)"
    assert lines[1].startswith("Client version: ") and lines[1].endswith("(API: v6.20220615)")
    assert lines[2] == "Server version: (failed to fetch)"
    assert lines[3] == "Negotiated API version: v6.20220615"
    assert 'Domain name: "default"' in lines
    assert 'Group name: "default"' in lines
    assert 'Access key: "AKIAIOSFODNN7EXAMPLE"' in lines
    assert 'Secret key: "wJalrX************************EXAMPLEKEY"' in lines
    assert "wJalrXUtnFEMI/K7MDENG/bPxRfiCYEXAMPLEKEY" not in result.output
    assert lines[-2:] == ["Signature hash type: sha256", "Skip SSL certificate validation? False"]


def test_config_anonymous_and_skip_ssl(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("BACKEND_ACCESS_KEY", "")
    result = invoke("--skip-sslcert-validation", "config")
    assert result.exit_code == 0, result.output
    assert "Access key: (this is an anonymous session)" in result.stdout
    assert "Secret key" not in result.stdout
    assert "Skip SSL certificate validation? True" in result.stdout


def test_config_json() -> None:
    import json

    result = invoke("--output", "json", "config")
    assert result.exit_code == 0, result.output
    data = json.loads(result.stdout)
    assert data["Signature hash type"] == "sha256"
    assert "************************" in data["Secret key"]


@pytest.mark.parametrize(
    ("args", "module"),
    [
        (["server", "up", "--timeout", "5"], "ai.backend.allinone"),
        (["server", "--help"], "ai.backend.allinone"),
        (["mgr", "schema", "oneshot"], "ai.backend.manager.cli"),
    ],
)
def test_server_and_mgr_hand_over(monkeypatch: pytest.MonkeyPatch, args: list[str], module: str) -> None:
    calls: list[list[str]] = []

    def fake_execv(path: str, argv: list[str]) -> None:
        calls.append([path, *argv])
        raise SystemExit(0)

    monkeypatch.setattr(os, "execv", fake_execv)
    result = invoke(*args)
    assert result.exit_code == 0, result.output
    assert calls == [[sys.executable, sys.executable, "-m", module, *args[1:]]]


def test_help_imports_no_heavy_modules() -> None:
    code = (
        "import sys\n"
        "from ai.backend.client.cli.main import main\n"
        "rc = main(['--help'], standalone_mode=False)\n"
        "bad = [m for m in ('click', 'httpx', 'rich', 'dateutil', 'asyncio', 'ai.backend.client.cli.run',"
        " 'ai.backend.client.cli.session', 'ai.backend.client.session') if m in sys.modules]\n"
        "print(rc, bad)\n"
    )
    env = {**os.environ, "PYTHONPATH": str(SRC)}
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, env=env, check=True)
    assert out.stdout.strip().splitlines()[-1] == "0 []"


def test_fast_help_matches_the_click_group() -> None:
    import click

    from ai.backend.client.cli.core import cli
    from ai.backend.client.cli.main import render_fast_help

    ctx = click.Context(cli)
    assert cli.list_commands(ctx) == sorted(COMMANDS)
    help_text = render_fast_help()
    for name, spec in COMMANDS.items():
        assert spec.help in help_text
        assert cli.get_command(ctx, name) is not None
        for alias in spec.aliases:
            assert cli.get_command(ctx, alias) is cli.get_command(ctx, name)
    for param in cli.params:
        for opt in param.opts:
            assert opt in help_text


def test_subcommand_help_imports_no_http_client() -> None:
    code = (
        "import sys\n"
        "from ai.backend.client.cli.main import main\n"
        "main(['run', '--help'], standalone_mode=False)\n"
        "main(['ps', '--help'], standalone_mode=False)\n"
        "print([m for m in ('httpx', 'rich', 'dateutil') if m in sys.modules])\n"
    )
    env = {**os.environ, "PYTHONPATH": str(SRC)}
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, env=env, check=True)
    assert out.stdout.strip().splitlines()[-1] == "[]"
