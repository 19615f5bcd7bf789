"""``backend.ai mgr image ...`` as a subprocess: list, alias, dealias, forget and build.

Runs against a manager without agents (SQLite and PostgreSQL); agents are stood in for by heartbeats
sent with the cluster secret: one "on this host" (loopback address, so the command checks it against
this host's Docker images) and, later, one on another host.  Needs the Docker engine and the kernel
images of ``scripts/setup.sh``; the build failure case needs the Debian mirror.
"""

from __future__ import annotations

import hashlib
import json
import os
import secrets
import subprocess
import sys
from pathlib import Path
from typing import Any

import httpx
import pytest

from ai.backend.common.auth import CLUSTER_SECRET_HEADER

from .conftest import ADMIN, REPO, Cluster

pytestmark = pytest.mark.docker

MGR = [sys.executable, "-m", "ai.backend.manager.cli"]
PYTHON_REF = "python:3.11-debian12"
GHOST = "ghost-image:1.0"


def mgr(
    m: Cluster, *args: str, env: dict[str, str] | None = None, via_client: bool = False, timeout: float = 300
) -> subprocess.CompletedProcess[str]:
    cmd = [sys.executable, "-m", "ai.backend.client.cli", "mgr"] if via_client else MGR
    return subprocess.run(
        [*cmd, "-f", str(m.state / "manager.toml"), "image", *args],
        capture_output=True,
        text=True,
        timeout=timeout,
        env=env,
    )


def ok(m: Cluster, *args: str, **kw: Any) -> subprocess.CompletedProcess[str]:
    p = mgr(m, *args, **kw)
    assert p.returncode == 0, f"{args}: {p.stdout}\n{p.stderr}"
    assert "Traceback" not in p.stderr
    return p


def fails(m: Cluster, *args: str, **kw: Any) -> str:
    """A refused command: exit 1 and exactly one ``Error:`` line on stderr; returns that line."""
    p = mgr(m, *args, **kw)
    assert p.returncode == 1, f"{args}: rc={p.returncode}\n{p.stdout}\n{p.stderr}"
    lines = p.stderr.strip().splitlines()
    assert len(lines) == 1 and lines[0].startswith("Error: "), p.stderr
    return lines[0]


def listed(m: Cluster) -> dict[str, dict[str, Any]]:
    body = json.loads(ok(m, "list", "--output", "json").stdout)
    assert body["count"] == len(body["items"])
    return {i["reference"]: i for i in body["items"]}


def heartbeat(m: Cluster, agent_id: str, addr: str, refs: list[str]) -> None:
    # One digest per repository: the tags of one image share it (as `repo:latest` does with its tag).
    images = [
        {
            "ref": ref,
            "digest": "sha256:" + hashlib.sha256(ref.split(":")[0].encode()).hexdigest(),
            "size": 1000,
            "labels": {"ai.backend.kernelspec": "1", "ai.backend.runtime-type": "python"},
        }
        for ref in refs
    ]
    hb = {"id": agent_id, "addr": addr, "available_slots": {"cpu": "1", "mem": "1g"}, "images": images}
    r = httpx.post(m.endpoint + "/internal/heartbeat", json=hb, headers={CLUSTER_SECRET_HEADER: m.secret})
    assert r.status_code == 200, r.text


def gql_image(m: Cluster, ref: str) -> Any:
    q = "query($r: String!) { image(reference: $r) { reference aliases } }"
    r = m.request("POST", "/admin/gql", {"query": q, "variables": {"r": ref}}, who=ADMIN)
    assert r.status_code == 200, r.text
    return r.json()["data"]["image"]


@pytest.fixture(scope="module")
def im(manager: Cluster) -> Cluster:
    """The manager, told by a local agent that it has the python image and a ghost image."""
    heartbeat(manager, "img-local-agent", "http://127.0.0.1:9", [PYTHON_REF, "python:latest", GHOST])
    return manager


def test_list_merges_docker_and_database(im: Cluster) -> None:
    items = listed(im)
    py = items[PYTHON_REF]
    assert py["local"] is True and py["registered"] is True
    assert "python:latest" in py["tags"] and py["runtime_type"] == "python"
    assert {"python", "python:latest"} <= set(py["aliases"])
    assert py["labels"]["ai.backend.kernelspec"] == "1" and py["size_bytes"] > 10_000_000
    ghost = items[GHOST]
    assert ghost["local"] is False and ghost["registered"] is True and ghost["aliases"] == ["ghost-image"]
    # Other local kernel images (built by scripts/setup.sh) are listed though not registered here.
    for ref in ("c:12-debian12", "nodejs:18-debian12", "lua:5.3-debian12"):
        assert items[ref]["local"] is True and items[ref]["registered"] is False, ref
    table = ok(im, "list").stdout.splitlines()
    assert table[0].split() == ["REFERENCE", "RUNTIME", "SIZE", "LOCAL", "REGISTERED", "ALIASES"]
    row = next(line for line in table if line.startswith(PYTHON_REF + " "))
    assert " python " in row and " yes " in row


def test_alias_and_dealias(im: Cluster) -> None:
    alias = f"py-{secrets.token_hex(3)}"
    p = ok(im, "alias", alias, "python")  # the target may itself be an alias
    assert f"{alias} now points to {PYTHON_REF}" in p.stderr
    assert gql_image(im, alias)["reference"] == PYTHON_REF
    assert alias in listed(im)[PYTHON_REF]["aliases"]
    assert "already points to" in fails(im, "alias", alias, GHOST)
    assert "is the name of an image" in fails(im, "alias", GHOST, PYTHON_REF)
    assert "Unknown image 'no-such-image'" in fails(im, "alias", f"x-{alias}", "no-such-image")
    assert "is not valid" in fails(im, "alias", "has space", PYTHON_REF)
    ok(im, "dealias", alias)
    assert gql_image(im, alias) is None
    assert "No such image alias" in fails(im, "dealias", alias)


def test_forget_checks_the_agents(im: Cluster) -> None:
    # (A fresh heartbeat: agents count as alive only for the manager's heartbeat timeout.)
    heartbeat(im, "img-local-agent", "http://127.0.0.1:9", [PYTHON_REF, "python:latest", GHOST])
    # The local agent still has the python image (this host's Docker has it): refused, nothing removed.
    line = fails(im, "forget", "python")
    assert "still installed on img-local-agent" in line
    assert gql_image(im, PYTHON_REF)["reference"] == PYTHON_REF
    # The ghost image is registered but not in this host's Docker: forgotten, with its aliases.
    assert f"Image {GHOST} forgotten" in ok(im, "forget", GHOST).stderr
    assert gql_image(im, GHOST) is None and gql_image(im, "ghost-image") is None
    assert "Unknown image" in fails(im, "forget", GHOST)
    # An agent on another host: its images cannot be checked from here.
    heartbeat(im, "img-remote-agent", "http://192.0.2.10:6001", ["remote-image:2.0"])
    assert "--force" in fails(im, "forget", "remote-image:2.0")
    assert gql_image(im, "remote-image:2.0") is not None
    ok(im, "forget", "--force", "remote-image:2.0")
    assert gql_image(im, "remote-image:2.0") is None


def test_user_facing_route(im: Cluster) -> None:
    p = mgr(im, "list", "--output", "json", via_client=True)
    assert p.returncode == 0, p.stderr
    assert PYTHON_REF in {i["reference"] for i in json.loads(p.stdout)["items"]}


def test_build_refusals(im: Cluster) -> None:
    assert "no such image recipe: nope" in fails(im, "build", "nope")
    assert "or use --all" in fails(im, "build")
    assert "not both" in fails(im, "build", "--all", "lua")


def test_build_up_to_date_is_quick_and_idempotent(im: Cluster, tmp_path: Path) -> None:
    # A recipe directory holding only the lua recipe: the same recipe gives the same digest.
    (tmp_path / "lua").mkdir()
    (tmp_path / "lua" / "recipe.env").write_bytes((REPO / "images" / "lua" / "recipe.env").read_bytes())
    env = {**_env(), "BAI_IMAGE_RECIPES": str(tmp_path)}
    p = ok(im, "build", "--all", env=env, timeout=600)
    assert "lua:5.3-debian12 is up to date" in p.stderr and "Images are up to date: lua" in p.stderr


def test_build_failure_names_the_image(im: Cluster, tmp_path: Path) -> None:
    recipe = (REPO / "images" / "lua" / "recipe.env").read_text()
    recipe = recipe.replace("NAME=lua", "NAME=bai-broken-test").replace(
        'PACKAGES="lua5.3"', 'PACKAGES="no-such-package-bai"'
    )
    (tmp_path / "broken").mkdir()
    (tmp_path / "broken" / "recipe.env").write_text(recipe)
    env = {**_env(), "BAI_IMAGE_RECIPES": str(tmp_path)}
    p = mgr(im, "build", "broken", env=env, timeout=600)
    assert p.returncode == 1, p.stderr
    assert "FAILED to build bai-broken-test:5.3-debian12" in p.stderr
    assert p.stderr.strip().splitlines()[-1] == "Error: building broken failed (exit 1); see the lines above"
    found = subprocess.run(["docker", "image", "inspect", "bai-broken-test:5.3-debian12"], capture_output=True)
    assert found.returncode != 0  # nothing half-built is left tagged


def _env() -> dict[str, str]:
    return dict(os.environ)
