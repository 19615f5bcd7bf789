"""Bad input gets the right 4xx problem+json and changes nothing."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta

import httpx
import pytest

from ai.backend.testutils.problems import problem

from .conftest import USER, Cluster

pytestmark = pytest.mark.docker


def _session_count(cluster: Cluster) -> int:
    q = {"query": '{ compute_session_list(limit: 100, status: "PENDING,SCHEDULED,PREPARING,RUNNING") { total_count } }'}
    r = cluster.request("POST", "/admin/gql", q)
    assert r.status_code == 200, r.text
    return int(r.json()["data"]["compute_session_list"]["total_count"])


@pytest.mark.parametrize(
    "body,status,words",
    [
        ({"image": "no-such-image", "name": "bad-img"}, 404, ["no-such-image"]),
        ({"image": "python", "name": "bad-res", "config": {"resources": {"mem": "lots"}}}, 400, ["mem"]),
        ({"image": "python", "name": "bad-res2", "config": {"resources": {"cpu": "-1"}}}, 400, ["cpu"]),
        ({"image": "python", "name": "bad-slot", "config": {"resources": {"gpu.magic": "1"}}}, 400, ["gpu.magic"]),
        ({"image": "python", "name": "too-big", "config": {"resources": {"mem": "64t"}}}, 406, ["never fit"]),
        ({"image": "python", "name": "tiny-mem", "config": {"resources": {"mem": "1m"}}}, 400, ["minimum"]),
        ({"image": "python", "name": "x"}, 400, ["name"]),
        ({"name": "no-image"}, 400, ["image"]),
        ({"image": "python", "name": "bad-type", "type": "weird"}, 400, ["type"]),
        ({"image": "python", "name": "bad-env", "config": {"environ": {"A": 1}}}, 400, ["environ"]),
        ({"image": "python", "name": "bad-grp", "group": "nope"}, 404, ["nope"]),
        ({"image": "python", "name": "bad-wait", "maxWaitSeconds": -3}, 400, ["maxWaitSeconds"]),
    ],
)
def test_create_rejections(cluster: Cluster, body: dict[str, object], status: int, words: list[str]) -> None:
    before = _session_count(cluster)
    problem(cluster.request("POST", "/session", body), status, *words)
    assert _session_count(cluster) == before


def test_non_json_body(cluster: Cluster) -> None:
    host = cluster.endpoint.split("//")[1]
    from ai.backend.common.auth import sign_request_headers

    h = sign_request_headers(
        method="POST",
        path_with_query="/session",
        host=host,
        content_type="application/json",
        version="v6.20220615",
        access_key=USER["access_key"],
        secret_key=USER["secret_key"],
    )
    r = httpx.post(cluster.endpoint + "/session", headers=h, content=b"{not json")
    problem(r, 400, "JSON")


def test_missing_signature(cluster: Cluster) -> None:
    problem(httpx.get(cluster.endpoint + "/session/whatever"), 401, "Authorization header is missing")


def test_bad_signature(cluster: Cluster) -> None:
    bad = {**USER, "secret_key": "not-the-secret"}
    problem(cluster.request("GET", "/session/whatever", who=bad), 401, "signature")


def test_unknown_access_key(cluster: Cluster) -> None:
    bad = {"access_key": "AKIANOSUCHKEY0000000", "secret_key": "x"}
    problem(cluster.request("GET", "/session/whatever", who=bad), 401, "access key")


def test_date_out_of_window(cluster: Cluster) -> None:
    old = (datetime.now(UTC) - timedelta(minutes=20)).isoformat()
    problem(cluster.request("GET", "/session/whatever", headers={"Date": old}), 401, "window")


def test_missing_version_header(cluster: Cluster) -> None:
    r = cluster.request("GET", "/session/whatever", headers={"X-BackendAI-Version": ""})
    assert r.status_code in (400, 401)


def test_nonexistent_session(cluster: Cluster) -> None:
    problem(cluster.request("GET", "/session/nope-nope"), 404, "nope-nope")
    problem(cluster.request("DELETE", "/session/nope-nope"), 404, "nope-nope")
    problem(cluster.request("POST", "/session/nope-nope", {"mode": "query", "code": "1"}), 404)


def test_bad_execute_mode(cluster: Cluster) -> None:
    problem(cluster.request("POST", "/session/anything", {"mode": "launch", "code": ""}), 400, "mode")


def test_unsupported_version_prefix(cluster: Cluster) -> None:
    problem(httpx.get(cluster.endpoint + "/v99/"), 404, "v99")


def test_version_endpoint(cluster: Cluster) -> None:
    for path in ("/", "/v2", "/v6/"):
        r = httpx.get(cluster.endpoint + path)
        assert r.status_code == 200 and r.json()["version"] == "v6.20220615"


def test_graphql_error_is_clean(cluster: Cluster) -> None:
    r = cluster.request("POST", "/admin/gql", {"query": "{ no_such_field }"})
    assert r.status_code == 200
    errs = r.json()["errors"]
    assert "no_such_field" in errs[0]["message"]
    assert "Traceback" not in r.text
