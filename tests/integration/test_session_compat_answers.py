"""Session answers the official clients depend on: ``kernelId`` in create answers, relative ``starts_at``,
rename, ``data.existingSessionId`` and ``msg`` in problems, ``status`` in the destroy stats.

The sessions here are reserved an hour ahead (``starts_at``), so they stay ``PENDING`` and need no
container; the real cluster fixture is shared with the other integration modules.
"""

from __future__ import annotations

import uuid
from collections.abc import Iterator
from datetime import UTC, datetime, timedelta
from typing import Any

import pytest
from dateutil.parser import isoparse

from ai.backend.manager.fixtures import ADMIN, USER
from ai.backend.testutils.cluster import Cluster


def _name() -> str:
    return f"compat-{uuid.uuid4().hex[:8]}"


@pytest.fixture
def reserved(cluster: Cluster) -> Iterator[list[str]]:
    """Names of sessions to destroy after the test."""
    names: list[str] = []
    yield names
    for n in names:
        cluster.request("DELETE", f"/session/{n}")


def _reserve(cluster: Cluster, name: str, starts_at: str = "1h", **extra: Any) -> Any:
    return cluster.request(
        "POST", "/session", {"image": "python", "name": name, "enqueueOnly": True, "starts_at": starts_at, **extra}
    )


def test_relative_starts_at_and_kernel_id(cluster: Cluster, reserved: list[str]) -> None:
    name = _name()
    r = _reserve(cluster, name, "+1h")
    reserved.append(name)
    assert r.status_code == 201, r.text
    created = r.json()
    # The 19.09 client addresses the session by kernelId from here on.
    assert created["kernelId"] == name and created["status"] == "PENDING"
    info = cluster.request("GET", f"/kernel/{created['kernelId']}").json()
    starts = isoparse(info["startsAt"])
    assert abs(starts - (datetime.now(UTC) + timedelta(hours=1))) < timedelta(minutes=2), info["startsAt"]


@pytest.mark.parametrize("bad", ["1x", "-1h", "soon", "400d", ""])
def test_bad_starts_at_is_a_400_with_msg(cluster: Cluster, bad: str) -> None:
    name = _name()
    r = _reserve(cluster, name, bad)
    assert r.status_code == 400, r.text
    body = r.json()
    assert "starts_at" in body["detail"] and body["msg"] == body["detail"]  # the official CLIs print msg
    assert cluster.request("GET", f"/session/{name}").status_code == 404  # nothing created


def test_rename_and_its_refusals(cluster: Cluster, reserved: list[str]) -> None:
    first, second, new = _name(), _name(), _name()
    for n in (first, second):
        assert _reserve(cluster, n).status_code == 201
        reserved.append(n)
    # The 22.03 client's call: POST /session/NAME/rename?name=NEW, no body.
    r = cluster.request("POST", f"/session/{first}/rename?name={new}")
    assert r.status_code == 204, r.text
    reserved.append(new)
    assert cluster.request("GET", f"/session/{new}").json()["status"] == "PENDING"
    assert cluster.request("GET", f"/session/{first}").status_code == 404
    # Taken by another active session of the owner: 409 naming it, nothing renamed.
    r = cluster.request("POST", f"/session/{new}/rename?name={second}")
    assert r.status_code == 409, r.text
    second_id = cluster.request("GET", f"/session/{second}").json()["sessionId"]
    assert r.json()["data"] == {"existingSessionId": second_id}
    for bad in ("a", "x" * 70, "bad name!", "from-template"):
        r = cluster.request("POST", f"/session/{new}/rename", {"name": bad})
        assert r.status_code == 400 and "name" in r.json()["msg"], r.text
    assert cluster.request("POST", f"/session/{new}/rename", {}).status_code == 400
    # Someone else's session is not found; an admin renames it with owner_access_key.
    assert cluster.request("POST", f"/session/{new}/rename?name={_name()}", who=ADMIN).status_code == 404
    other = _name()
    r = cluster.request("POST", f"/session/{new}/rename?name={other}&owner_access_key={USER['access_key']}", who=ADMIN)
    assert r.status_code == 204, r.text
    reserved.append(other)
    assert cluster.request("GET", f"/session/{other}").status_code == 200


def test_name_in_use_problem_names_the_existing_session(cluster: Cluster, reserved: list[str]) -> None:
    name = _name()
    first = _reserve(cluster, name)
    reserved.append(name)
    # --no-reuse on a name in use: the 22.03 CLI reads data.existingSessionId.
    r = _reserve(cluster, name, reuseIfExists=False)
    assert r.status_code == 409, r.text
    body = r.json()
    assert body["data"] == {"existingSessionId": first.json()["sessionId"]}
    assert body["msg"] == body["detail"] and name in body["msg"]


def test_destroy_stats_carry_a_status(cluster: Cluster) -> None:
    name = _name()
    assert _reserve(cluster, name).status_code == 201
    r = cluster.request("DELETE", f"/session/{name}")
    assert r.status_code == 200, r.text
    # Both official CLIs' stats printers pop 'status' without a default.
    assert r.json()["stats"]["status"] == "terminated"
    assert cluster.request("POST", f"/session/{name}/rename?name={_name()}").status_code == 404
