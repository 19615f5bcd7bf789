"""Kernel images from a real Docker registry: rescan, pull on first use, failures, permissions.

Two in-process registries (``ai.backend.testutils.registry``) serve the local ``python:latest`` image (with
one extra layer and label, so that the agent really downloads something) under other names: an open one
and one that wants basic-auth credentials. The manager of this module's own cluster is configured with
both, plus a third name pointing at the second registry with a wrong password.
"""

from __future__ import annotations

import json
import subprocess
import sys
import time
from collections.abc import Iterator
from typing import Any

import httpx
import pytest

from ai.backend.common.auth import sign_request_headers
from ai.backend.testutils.cluster import Cluster, docker_available, launch_cluster
from ai.backend.testutils.docker_registry import TestRegistry
from ai.backend.testutils.problems import problem

from .conftest import ADMIN, USER

pytestmark = pytest.mark.docker

MARKER = "/opt/bai-registry-test.txt"
REMOTE_REPO = "testing/python-remote"


@pytest.fixture(scope="module")
def registries() -> Iterator[tuple[TestRegistry, TestRegistry]]:
    """``(open, authenticated)`` registries serving kernel images made from ``python:latest``."""
    if not docker_available():
        pytest.fail("Docker engine or the python kernel image is missing: run scripts/setup.sh first")
    extra = {
        "extra_files": {MARKER: b"pulled from the test registry\n"},
        "extra_labels": {"ai.backend.test-registry": "yes"},
    }
    open_reg, auth_reg = TestRegistry(), TestRegistry(username="alice", password="s3cret")
    open_reg.add_docker_image("python:latest", REMOTE_REPO, "1", **extra)  # type: ignore[arg-type]
    open_reg.add_docker_image("python:latest", REMOTE_REPO, "latest", **extra)  # type: ignore[arg-type]
    open_reg.add_docker_image("python:latest", "testing/python-gone", "1", **extra)  # type: ignore[arg-type]
    open_reg.add_synthetic_image("testing/not-a-kernel", "1", {"org.opencontainers.image.title": "plain"})
    arm = open_reg.add_synthetic_image(
        "testing/multiarch", None, {"ai.backend.kernelspec": "1", "arch": "arm64"}, architecture="arm64", oci=True
    )
    amd = open_reg.add_synthetic_image(
        "testing/multiarch", None, {"ai.backend.kernelspec": "1", "arch": "amd64"}, architecture="amd64", oci=True
    )
    open_reg.add_index("testing/multiarch", "2", [(arm, "arm64"), (amd, "amd64")])
    auth_reg.add_docker_image("python:latest", "testing/python-auth", "1", **extra)  # type: ignore[arg-type]
    with open_reg, auth_reg:
        yield open_reg, auth_reg


@pytest.fixture(scope="module")
def rcluster(
    registries: tuple[TestRegistry, TestRegistry], tmp_path_factory: pytest.TempPathFactory
) -> Iterator[Cluster]:
    open_reg, auth_reg = registries
    toml = "\n".join(
        [
            f'[docker-registries."{open_reg.address}"]',
            f'url = "{open_reg.url}"',
            "",
            f'[docker-registries."{auth_reg.address}"]',
            f'url = "{auth_reg.url}"',
            'username = "alice"',
            'password = "s3cret"',
            "",
            f'[docker-registries."localhost:{auth_reg.port}"]',
            f'url = "{auth_reg.url}"',
            'username = "alice"',
            'password = "wrong"',
        ]
    )
    c = launch_cluster(tmp_path_factory.mktemp("registry-cluster"), manager_toml=toml)
    try:
        yield c
    finally:
        c.shutdown()  # first: its spare containers may use the pulled images
        for reg, repo in (
            (open_reg, REMOTE_REPO),
            (open_reg, "testing/python-gone"),
            (auth_reg, "testing/python-auth"),
        ):
            subprocess.run(["docker", "rmi", f"{reg.address}/{repo}:1"], capture_output=True)


def _data(c: Cluster, query: str) -> dict[str, Any]:
    r = c.gql_request(query)
    assert r.status_code == 200 and "errors" not in r.json(), r.text
    data: dict[str, Any] = r.json()["data"]
    return data


def _wait_task(c: Cluster, task_id: str, timeout: float = 120) -> tuple[str, dict[str, Any]]:
    """Follow ``GET /events/background-task`` until the task's final event: ``(event name, data)``."""
    path = f"/events/background-task?task_id={task_id}"
    host = c.endpoint.split("//", 1)[1]
    headers = sign_request_headers(
        method="GET",
        path_with_query=path,
        host=host,
        content_type="application/json",
        version="v6.20220615",
        access_key=ADMIN["access_key"],
        secret_key=ADMIN["secret_key"],
    )
    event = ""
    with httpx.stream("GET", c.endpoint + path, headers=headers, timeout=timeout) as resp:
        assert resp.status_code == 200, resp.read()
        for line in resp.iter_lines():
            if line.startswith("event:"):
                event = line[6:].strip()
            elif line.startswith("data:") and event in ("bgtask_done", "bgtask_failed", "bgtask_cancelled"):
                return event, json.loads(line[5:])
    raise AssertionError(f"the stream of task {task_id} ended without a final event")


def _rescan(c: Cluster, registry: str) -> tuple[str, dict[str, Any]]:
    res = _data(c, f'mutation {{ rescan_images(registry: "{registry}") {{ ok msg task_id }} }}')["rescan_images"]
    assert res["ok"] is True and res["task_id"], res
    return _wait_task(c, res["task_id"])


IMAGE_FIELDS = "name reference registry tag digest installed architecture aliases labels { key value }"


def _images(c: Cluster, args: str = "") -> dict[str, dict[str, Any]]:
    return {i["reference"]: i for i in _data(c, f"{{ images{args} {{ {IMAGE_FIELDS} }} }}")["images"]}


def _session(c: Cluster, image: str, name: str) -> dict[str, Any]:
    r = c.request("POST", "/session", {"image": image, "name": name}, timeout=240)
    assert r.status_code == 201, r.text
    body: dict[str, Any] = r.json()
    return body


def _run_code(c: Cluster, session: str, code: str) -> list[Any]:
    """Execute ``code`` (query mode, following ``continued`` answers) and return its console."""
    body: dict[str, Any] = {"mode": "query", "code": code, "runId": "registry-run"}
    console: list[Any] = []
    for _ in range(60):
        r = c.request("POST", f"/session/{session}", body)
        assert r.status_code == 200, r.text
        result = r.json()["result"]
        console += result["console"]
        if result["status"] != "continued":
            assert result["status"] == "finished", result
            return console
        body = {"mode": "continue", "code": "", "runId": "registry-run"}
    raise AssertionError(f"the code did not finish: {console}")


def test_registries_endpoint_lists_names_and_urls_only(
    rcluster: Cluster, registries: tuple[TestRegistry, TestRegistry]
) -> None:
    open_reg, auth_reg = registries
    r = rcluster.request("GET", "/config/docker-registries", who=ADMIN)
    assert r.status_code == 200, r.text
    assert r.json() == {
        open_reg.address: open_reg.url,
        auth_reg.address: auth_reg.url,
        f"localhost:{auth_reg.port}": auth_reg.url,
    }
    assert "s3cret" not in r.text and "alice" not in r.text
    problem(rcluster.request("GET", "/config/docker-registries", who=USER), 403, "superadmin")
    cli = [sys.executable, "-m", "ai.backend.client.cli"]
    p = subprocess.run(
        [*cli, "--output", "json", "admin", "resource", "docker-registries"],
        env=rcluster.env(ADMIN),
        capture_output=True,
        text=True,
        timeout=60,
    )
    assert p.returncode == 0 and json.loads(p.stdout) == r.json(), p.stderr
    p = subprocess.run(
        [*cli, "admin", "resource", "docker-registries"],
        env=rcluster.env(ADMIN),
        capture_output=True,
        text=True,
        timeout=60,
    )
    assert p.returncode == 0 and open_reg.url in p.stdout, p.stderr
    p = subprocess.run(
        [*cli, "admin", "resource", "docker-registries"],
        env=rcluster.env(USER),
        capture_output=True,
        text=True,
        timeout=60,
    )
    assert p.returncode != 0 and "Traceback" not in p.stderr and len(p.stderr.strip().splitlines()) == 1


def test_rescan_refusals(rcluster: Cluster, registries: tuple[TestRegistry, TestRegistry]) -> None:
    open_reg, _ = registries
    before = _images(rcluster)
    problem(
        rcluster.gql_request(f'mutation {{ rescan_images(registry: "{open_reg.address}") {{ ok }} }}', who=USER), 403
    )
    body = problem(
        rcluster.gql_request('mutation { rescan_images(registry: "cr.example.com") { ok } }'),
        404,
        "cr.example.com",
        open_reg.address,
    )
    assert "registry" in body["detail"]
    assert _images(rcluster) == before  # nothing registered by a refused rescan


def test_rescan_registers_kernel_images(rcluster: Cluster, registries: tuple[TestRegistry, TestRegistry]) -> None:
    open_reg, _ = registries
    name = open_reg.address
    local_before = {ref: i for ref, i in _images(rcluster).items() if i["registry"] == "local"}
    assert "python:3.11-debian12" in local_before
    event, data = _rescan(rcluster, name)
    assert event == "bgtask_done", data
    assert "registered 3 kernel image(s)" in data["message"] and data["current_progress"] == 5
    images = _images(rcluster)
    mine = {ref: i for ref, i in images.items() if i["registry"] == name}
    assert set(mine) == {f"{name}/{REMOTE_REPO}:1", f"{name}/testing/python-gone:1", f"{name}/testing/multiarch:2"}
    remote = mine[f"{name}/{REMOTE_REPO}:1"]
    labels = {kv["key"]: kv["value"] for kv in remote["labels"]}
    assert labels["ai.backend.kernelspec"] == "1" and labels["ai.backend.test-registry"] == "yes"
    assert remote["name"] == REMOTE_REPO and remote["tag"] == "1" and remote["installed"] is False
    manifest = json.loads(open_reg.manifests[open_reg.tags[REMOTE_REPO]["1"]].data)
    assert remote["digest"] == manifest["config"]["digest"]
    assert set(remote["aliases"]) == {f"{name}/{REMOTE_REPO}", f"{name}/{REMOTE_REPO}:latest"}
    multi = {kv["key"]: kv["value"] for kv in mine[f"{name}/testing/multiarch:2"]["labels"]}
    assert multi["arch"] == "amd64" and mine[f"{name}/testing/multiarch:2"]["architecture"] == "x86_64"
    # The local images are untouched.
    assert {ref: i for ref, i in images.items() if i["registry"] == "local"} == local_before
    # Aliases and canonical names resolve.
    one = _data(rcluster, f'{{ image(reference: "{name}/{REMOTE_REPO}") {{ reference registry }} }}')["image"]
    assert one == {"reference": f"{name}/{REMOTE_REPO}:1", "registry": name}


def test_rescan_with_credentials(rcluster: Cluster, registries: tuple[TestRegistry, TestRegistry]) -> None:
    _, auth_reg = registries
    event, data = _rescan(rcluster, auth_reg.address)
    assert event == "bgtask_done", data
    assert f"{auth_reg.address}/testing/python-auth:1" in _images(rcluster)
    assert ("GET", "/v2/_catalog", "basic") in auth_reg.requests
    wrong = f"localhost:{auth_reg.port}"
    event, data = _rescan(rcluster, wrong)
    assert event == "bgtask_failed", data
    assert "username/password" in data["message"] and auth_reg.url in data["message"], data
    assert not [i for i in _images(rcluster).values() if i["registry"] == wrong]


def _mgr(c: Cluster, *args: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [sys.executable, "-m", "ai.backend.manager.cli", "-f", str(c.state / "manager.toml"), *args],
        capture_output=True,
        text=True,
        timeout=120,
    )


def test_mgr_image_rescan(rcluster: Cluster, registries: tuple[TestRegistry, TestRegistry]) -> None:
    open_reg, _ = registries
    p = _mgr(rcluster, "image", "rescan", open_reg.address)
    assert p.returncode == 0, p.stderr
    assert f"3 kernel image(s) of registry {open_reg.address} registered" in p.stderr
    assert "testing/not-a-kernel:1: not a kernel image" in p.stderr
    assert f"{open_reg.address}/{REMOTE_REPO}:1" in _images(rcluster)
    for bad, words in (("cr.example.com", "no such registry 'cr.example.com'"), ("local", "heartbeats")):
        p = _mgr(rcluster, "image", "rescan", bad)
        assert p.returncode != 0 and words in p.stderr and open_reg.address in p.stderr, p.stderr
        assert len(p.stderr.strip().splitlines()) == 1 and "Traceback" not in p.stderr
    p = _mgr(rcluster, "image", "rescan", f"localhost:{registries[1].port}")
    assert p.returncode != 0 and "username/password" in p.stderr and "Traceback" not in p.stderr, p.stderr


def test_session_pulls_registry_image(rcluster: Cluster, registries: tuple[TestRegistry, TestRegistry]) -> None:
    open_reg, _ = registries
    ref = f"{open_reg.address}/{REMOTE_REPO}:1"
    if ref not in _images(rcluster):
        assert _rescan(rcluster, open_reg.address)[0] == "bgtask_done"
    subprocess.run(["docker", "rmi", ref], capture_output=True)  # a leftover of an aborted run would skip the pull
    body = _session(rcluster, ref, "from-registry")
    assert body["status"] == "RUNNING", body
    info = rcluster.request("GET", "/session/from-registry").json()
    history = info["statusHistory"]
    assert "PULLING" in history and history["PREPARING"] <= history["PULLING"] <= history["RUNNING"], history
    assert info["image"] == ref
    assert _run_code(rcluster, "from-registry", f"print(open({MARKER!r}).read())") == [
        ["stdout", "pulled from the test registry\n\n"]
    ]
    blob_gets = [p for m, p, _ in open_reg.requests if m == "GET" and "/blobs/" in p and REMOTE_REPO in p]
    assert blob_gets, "the agent did not download anything from the registry"
    # The agent's next heartbeats report the pulled image: installed, still the registry's row, no duplicate.
    deadline = time.monotonic() + 20
    while time.monotonic() < deadline:
        installed = _images(rcluster, "(is_installed: true)")
        if ref in installed:
            break
        time.sleep(0.5)
    assert ref in installed and installed[ref]["registry"] == open_reg.address
    everything = _images(rcluster)
    assert [r for r, i in everything.items() if REMOTE_REPO in r] == [ref]
    assert rcluster.request("DELETE", "/session/from-registry").status_code == 200


def _failed_session(c: Cluster, image: str, name: str) -> dict[str, Any]:
    body = _session(c, image, name)
    assert body["status"] == "ERROR" and body["statusInfo"] == "failed-to-pull", body
    info = c.request("GET", f"/session/{name}").json()
    assert info["status"] == "ERROR" and info["statusInfo"] == "failed-to-pull" and "PULLING" in info["statusHistory"]
    error = str(info["statusData"]["error"])
    assert image in error, error
    return info


def test_missing_tag_fails_to_pull(rcluster: Cluster, registries: tuple[TestRegistry, TestRegistry]) -> None:
    open_reg, _ = registries
    ref = f"{open_reg.address}/testing/python-gone:1"
    if ref not in _images(rcluster):
        assert _rescan(rcluster, open_reg.address)[0] == "bgtask_done"
    open_reg.remove_tag("testing/python-gone", "1")
    info = _failed_session(rcluster, ref, "gone-tag")
    assert "manifest unknown" in str(info["statusData"]["error"]).lower(), info["statusData"]


def test_private_registry_pull_uses_the_configured_credentials(
    rcluster: Cluster, registries: tuple[TestRegistry, TestRegistry]
) -> None:
    _, auth_reg = registries
    ref = f"{auth_reg.address}/testing/python-auth:1"
    if ref not in _images(rcluster):
        assert _rescan(rcluster, auth_reg.address)[0] == "bgtask_done"
    subprocess.run(["docker", "rmi", ref], capture_output=True)
    body = _session(rcluster, ref, "from-private")
    assert body["status"] == "RUNNING", body
    assert "PULLING" in rcluster.request("GET", "/session/from-private").json()["statusHistory"]
    pulls = [a for m, p, a in auth_reg.requests if m == "GET" and "/blobs/" in p]
    assert pulls and all(a == "basic" for a in pulls), pulls
    assert _run_code(rcluster, "from-private", f"print(open({MARKER!r}).read())") == [
        ["stdout", "pulled from the test registry\n\n"]
    ]
    assert rcluster.request("DELETE", "/session/from-private").status_code == 200
    subprocess.run(["docker", "rmi", "-f", ref], capture_output=True)


def test_registry_down_fails_to_pull(rcluster: Cluster, registries: tuple[TestRegistry, TestRegistry]) -> None:
    _, auth_reg = registries
    ref = f"{auth_reg.address}/testing/python-auth:1"
    if ref not in _images(rcluster):
        assert _rescan(rcluster, auth_reg.address)[0] == "bgtask_done"
    auth_reg.stop()
    info = _failed_session(rcluster, ref, "registry-down")
    assert "connection refused" in str(info["statusData"]["error"]).lower(), info["statusData"]
    # The manager's own rescan says the same, as a failed task.
    event, data = _rescan(rcluster, auth_reg.address)
    assert event == "bgtask_failed" and "cannot reach" in data["message"], data
