"""The SDK and the ``backend.ai`` CLI against the real cluster, including the upstream 22.03 client."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest

from .conftest import ADMIN, REPO, USER, Cluster

pytestmark = pytest.mark.docker

CLI = [sys.executable, "-m", "ai.backend.client.cli"]
UPSTREAM = REPO / ".cache" / "upstream-client"


def _cli(
    cluster: Cluster, *args: str, input: str | None = None, timeout: float = 120
) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [*CLI, *args], env=cluster.env(), capture_output=True, text=True, input=input, timeout=timeout
    )


def test_cli_run_prints_42(cluster: Cluster) -> None:
    p = _cli(cluster, "run", "--rm", "python", "-c", "print(6*7)")
    assert p.returncode == 0, p.stderr
    assert p.stdout == "42\n"


def test_cli_run_input_from_stdin(cluster: Cluster) -> None:
    p = _cli(cluster, "run", "--rm", "python", "-c", "print('hi', input('name? '))", input="bob\n")
    assert p.returncode == 0, p.stderr
    assert "hi bob" in p.stdout


def test_cli_ps_rm_info(cluster: Cluster) -> None:
    p = _cli(cluster, "run", "-t", "cli-keep", "python", "-c", "print(1)")
    assert p.returncode == 0, p.stderr
    ps = _cli(cluster, "ps")
    assert ps.returncode == 0 and "cli-keep" in ps.stdout
    psj = _cli(cluster, "--output", "json", "ps")
    assert psj.returncode == 0, psj.stderr
    names = [item.get("name") for item in json.loads(psj.stdout)["items"]]
    assert "cli-keep" in names
    info = _cli(cluster, "session", "info", "cli-keep")
    assert info.returncode == 0 and "RUNNING" in info.stdout
    assert "Apps: jupyter (http), jupyterlab (http), sshd (tcp), ttyd (http)" in info.stdout, info.stdout
    infoj = _cli(cluster, "--output", "json", "session", "info", "cli-keep")
    assert [a["name"] for a in json.loads(infoj.stdout)["apps"]] == ["jupyter", "jupyterlab", "sshd", "ttyd"]
    rm = _cli(cluster, "rm", "cli-keep")
    assert rm.returncode == 0, rm.stderr
    dead = _cli(cluster, "ps", "--dead")
    assert "cli-keep" in dead.stdout


def test_cli_errors_are_one_line(cluster: Cluster) -> None:
    p = _cli(cluster, "rm", "no-such-session")
    assert p.returncode != 0
    assert "Traceback" not in p.stderr
    assert len(p.stderr.strip().splitlines()) <= 2 and "no-such-session" in p.stderr
    p = _cli(cluster, "run", "--rm", "no-such-image", "-c", "print(1)")
    assert p.returncode != 0 and "Traceback" not in p.stderr and "no-such-image" in p.stderr
    p = _cli(cluster, "run", "--rm", "-r", "mem=lots", "python", "-c", "print(1)")
    assert p.returncode != 0 and "Traceback" not in p.stderr


def test_cli_config(cluster: Cluster) -> None:
    p = _cli(cluster, "config")
    assert p.returncode == 0, p.stderr
    assert cluster.endpoint in p.stdout and USER["access_key"] in p.stdout
    assert USER["secret_key"] not in p.stdout


def test_sdk_sync_and_legacy_kernel(cluster: Cluster, monkeypatch: pytest.MonkeyPatch) -> None:
    for k, v in cluster.env().items():
        if k.startswith("BACKEND_"):
            monkeypatch.setenv(k, v)
    from ai.backend.client.session import Session

    with Session() as api:
        sess = api.ComputeSession.get_or_create("python", name="sdk-sync")
        assert sess.status == "RUNNING"
        r = sess.execute(code="y = 21")
        r = sess.execute(code="print(y * 2)")
        assert r["console"] == [["stdout", "42\n"]]
        sess.destroy()
    from ai.backend.client.kernel import Kernel

    with Session():
        k = Kernel.get_or_create("python", client_token="sdk-legacy")
        r = k.execute(code="print('legacy')", mode="query")
        assert r["console"] == [["stdout", "legacy\n"]]
        k.destroy()


def _upstream_client() -> Path:
    bin_ = UPSTREAM / "bin" / "backend.ai"
    if bin_.exists():
        return bin_
    UPSTREAM.parent.mkdir(exist_ok=True)
    subprocess.run([sys.executable, "-m", "venv", str(UPSTREAM)], check=True)
    pip = [str(UPSTREAM / "bin" / "pip"), "install", "-q"]
    steps = [
        [*pip, "--no-deps", "backend.ai-client==22.3.2", "backend.ai-cli~=0.6.0"],
        [
            *pip,
            "aiohttp~=3.8.6",
            "PyYAML>=6",
            "yarl<1.17",
            "aiotusclient~=0.1.4",
            "appdirs",
            "click~=8.0",
            "colorama",
            "humanize",
            "janus",
            "python-dateutil",
            "rich~=12.2",
            "tabulate",
            "tqdm",
            "attrs",
            "multidict",
            "async_timeout",
            "setuptools<81",
        ],
    ]
    for step in steps:
        if subprocess.run(step, capture_output=True, timeout=600).returncode != 0:
            pytest.skip("cannot install the upstream backend.ai 22.03 client from PyPI here")
    return bin_


def test_upstream_2203_client(cluster: Cluster) -> None:
    client = _upstream_client()
    env = {**cluster.env(), "PYTHONWARNINGS": "ignore"}
    run = subprocess.run(
        [str(client), "run", "--rm", "python", "-c", "print(6*7)"],
        env=env,
        capture_output=True,
        text=True,
        timeout=120,
        cwd=os.getcwd(),
    )
    assert run.returncode == 0, run.stderr
    assert "42" in run.stdout.splitlines()
    start = subprocess.run(
        [str(client), "run", "-t", "upstream-keep", "python", "-c", "print(1)"],
        env=env,
        capture_output=True,
        text=True,
        timeout=120,
    )
    assert start.returncode == 0, start.stderr
    ps = subprocess.run([str(client), "ps"], env=env, capture_output=True, text=True, timeout=60)
    assert ps.returncode == 0 and "upstream-keep" in ps.stdout, ps.stderr
    rm = subprocess.run([str(client), "rm", "upstream-keep"], env=env, capture_output=True, text=True, timeout=60)
    assert rm.returncode == 0, rm.stderr
    cfg = subprocess.run([str(client), "config"], env=env, capture_output=True, text=True, timeout=60)
    assert cfg.returncode == 0 and "v6.20220615" in cfg.stdout


def test_upstream_2203_client_admin_commands(cluster: Cluster) -> None:
    """The upstream client's admin commands read our GraphQL schema (its own queries and variable types)."""
    client = _upstream_client()
    env = {**cluster.env(ADMIN), "PYTHONWARNINGS": "ignore"}

    def run(*args: str) -> str:
        out = subprocess.run([str(client), *args], env=env, capture_output=True, text=True, timeout=120)
        assert out.returncode == 0 and "Error" not in out.stdout + out.stderr, (args, out.stdout, out.stderr)
        return out.stdout

    assert "admin@lablup.com" in run("admin", "user", "list")
    assert "AKIANABBDUSEREXAMPLE" in run("admin", "keypair", "list")
    assert "default" in run("admin", "domain", "list")
    assert "2de2b969-1d04-48a6-af16-0bc8adb3c831" in run("admin", "group", "list", "-d", "default")
    assert "default" in run("admin", "group", "info", "2de2b969-1d04-48a6-af16-0bc8adb3c831")
    assert "default" in run("admin", "keypair-resource-policy", "list")
    assert cluster.agent_id in run("admin", "agent", "list")
    assert "python" in run("admin", "image", "list")
    assert "AKIAIOSFODNN7EXAMPLE" in run("admin", "keypair", "info")
