"""``GET /metrics`` of a real cluster: the manager, the agent, the storage proxy, the app proxy and a webserver are
scraped after some requests, and specific series must have moved by what was done; the scrape check (allow-list
or secret) is tested on a manager of its own whose allow-list is empty.

The cluster is the session's shared one (other tests may use it meanwhile only sequentially), so series that
other tests also move are compared before and after, never against absolute numbers.
"""

from __future__ import annotations

import re
import uuid
from collections.abc import Callable, Iterator
from typing import Any

import httpx
import pytest
from prometheus_client.parser import text_string_to_metric_families

from ai.backend.common.auth import CLUSTER_SECRET_HEADER
from ai.backend.testutils.cluster import Cluster, launch_manager
from ai.backend.testutils.processes import wait_until
from ai.backend.testutils.web import launch_webserver

from .conftest import USER

pytestmark = pytest.mark.docker

Samples = dict[tuple[str, tuple[tuple[str, str], ...]], float]
V = {"X-BackendAI-Version": "v6.20220615"}


def scrape(url: str, headers: dict[str, str] | None = None) -> Samples:
    """Every sample of ``url``'s ``/metrics`` (asserting a 200 in the Prometheus text format)."""
    r = httpx.get(url + "/metrics", headers=headers, timeout=30)
    assert r.status_code == 200, r.text
    assert r.headers["content-type"].startswith("text/plain; version=0.0.4")
    out: Samples = {}
    for family in text_string_to_metric_families(r.text):
        for s in family.samples:
            out[(s.name, tuple(sorted(s.labels.items())))] = s.value
    return out


def get(samples: Samples, name: str, **labels: str) -> float:
    return samples.get((name, tuple(sorted(labels.items()))), 0.0)


def agent_url(cluster: Cluster) -> str:
    m = re.search(r"rpc-listen-port = (\d+)", (cluster.state / "agent.toml").read_text())
    assert m is not None
    return f"http://127.0.0.1:{m.group(1)}"


def poll(url: str, check: Callable[[Samples], bool], what: str) -> Samples:
    """Scrape until ``check`` holds (the manager's database gauges are cached for a second)."""
    return wait_until(what, lambda: scrape(url), check, 10, interval=0.3)


@pytest.fixture(scope="module")
def running(cluster: Cluster) -> Iterator[str]:
    """A running session of this module."""
    name = f"metrics-{uuid.uuid4().hex[:6]}"
    cluster.create_session(name)
    try:
        yield name
    finally:
        cluster.request("DELETE", f"/session/{name}")


def test_manager_request_and_session_series(cluster: Cluster, running: str) -> None:
    before = scrape(cluster.endpoint)
    route = {"method": "GET", "route": "/session/{ref}", "status": "200"}
    for _ in range(5):
        cluster.session_info(running)
    for _ in range(3):
        assert cluster.exec(running, "1+1")["status"] == "finished"
    after = scrape(cluster.endpoint)
    name = "backendai_http_requests_total"
    assert get(after, name, **route) - get(before, name, **route) == 5
    # The route template, never the session's name.
    assert not any(running in str(labels) for _, labels in after)
    execs = "backendai_manager_execute_seconds_count"
    assert get(after, execs, mode="query") - get(before, execs, mode="query") == 3
    post = {"method": "POST", "route": "/session/{ref}"}
    assert (
        get(after, "backendai_http_request_duration_seconds_count", **post)
        - get(before, "backendai_http_request_duration_seconds_count", **post)
        == 3
    )
    assert get(after, "backendai_manager_sessions", status="RUNNING") >= 1
    assert get(after, "backendai_manager_scheduler_pass_seconds_count") >= 1
    assert get(after, "backendai_manager_agents", status="ALIVE") >= 1
    assert get(after, "backendai_manager_agent_capacity", scaling_group="default", slot="cpu") >= 4
    assert get(after, "backendai_manager_agent_occupied", scaling_group="default", slot="cpu") >= 1


def test_manager_pending_queue_follows_a_reserved_session(cluster: Cluster) -> None:
    name = f"metrics-pending-{uuid.uuid4().hex[:6]}"
    before = scrape(cluster.endpoint)
    pending = get(before, "backendai_manager_sessions", status="PENDING")
    assert get(before, "backendai_manager_pending_sessions") == pending
    cluster.create_session(name, enqueueOnly=True, starts_at="1h", expect=(201,), running=False)
    try:
        after = poll(
            cluster.endpoint,
            lambda s: get(s, "backendai_manager_sessions", status="PENDING") == pending + 1,
            "the reserved session to be counted as PENDING",
        )
        assert get(after, "backendai_manager_pending_sessions") == pending + 1
        assert get(after, "backendai_manager_pending_oldest_wait_seconds") >= 0.0
    finally:
        assert cluster.request("DELETE", f"/session/{name}").status_code == 200
    poll(
        cluster.endpoint,
        lambda s: get(s, "backendai_manager_sessions", status="PENDING") == pending,
        "the cancelled session to leave the PENDING count",
    )


def test_agent_series(cluster: Cluster, running: str) -> None:
    url = agent_url(cluster)
    samples = scrape(url)  # from loopback: no secret needed
    assert get(samples, "backendai_agent_kernels_running") >= 1
    assert get(samples, "backendai_agent_container_start_seconds_count", phase="total") >= 1
    assert get(samples, "backendai_agent_container_start_seconds_count", phase="image_check") >= 1
    health = {"method": "GET", "route": "/v1/health", "status": "200"}
    before = get(samples, "backendai_http_requests_total", **health)
    for _ in range(4):
        assert httpx.get(url + "/v1/health", headers={CLUSTER_SECRET_HEADER: cluster.secret}).status_code == 200
    assert get(scrape(url), "backendai_http_requests_total", **health) - before == 4
    # The cluster secret still guards everything else: the scrape's exemption is /metrics only.
    assert httpx.get(url + "/v1/health").status_code == 401


def test_storage_proxy_transfer_bytes(cluster: Cluster) -> None:
    sp = cluster.storage
    assert sp is not None
    before = scrape(sp.manager_url)
    vfid = str(uuid.uuid4())
    assert sp.request("POST", "/folder/create", {"volume": sp.volume, "vfid": vfid}).status_code == 204
    data = b"m" * 70_000
    token = sp.request(
        "POST", "/folder/file/upload", {"volume": sp.volume, "vfid": vfid, "relpath": "m.bin", "size": len(data)}
    ).json()["token"]
    tus = {"Tus-Resumable": "1.0.0", "Content-Type": "application/offset+octet-stream", "Upload-Offset": "0"}
    assert httpx.patch(sp.client_url + "/upload", params={"token": token}, content=data, headers=tus).status_code == 204
    token = sp.request("POST", "/folder/file/download", {"volume": sp.volume, "vfid": vfid, "relpath": "m.bin"}).json()[
        "token"
    ]
    assert httpx.get(sp.client_url + "/download", params={"token": token}).content == data
    after = scrape(sp.manager_url)
    name = "backendai_storage_transfer_bytes_total"
    assert get(after, name, direction="up") - get(before, name, direction="up") == len(data)
    assert get(after, name, direction="down") - get(before, name, direction="down") == len(data)
    patch = {"method": "PATCH", "route": "/upload", "status": "204"}
    assert (
        get(after, "backendai_http_requests_total", **patch) - get(before, "backendai_http_requests_total", **patch)
        == 1
    )
    # The client API is public: it does not serve the metrics.
    assert httpx.get(sp.client_url + "/metrics").status_code == 404
    sp.request("POST", "/folder/delete", {"volume": sp.volume, "vfid": vfid})


def test_appproxy_series(cluster: Cluster) -> None:
    assert cluster.appproxy is not None
    url = cluster.appproxy.url
    before = scrape(url)
    status = {"method": "GET", "route": "/v2/status", "status": "200"}
    for _ in range(3):
        cluster.appproxy.status()
    after = scrape(url)
    assert (
        get(after, "backendai_http_requests_total", **status) - get(before, "backendai_http_requests_total", **status)
        == 3
    )
    assert ("backendai_appproxy_circuits_open", ()) in after
    assert get(after, "backendai_appproxy_circuits_open") == cluster.appproxy.status()["circuits"]


def test_webserver_logins_and_func(cluster: Cluster, tmp_path_factory: pytest.TempPathFactory) -> None:
    web = launch_webserver(tmp_path_factory.mktemp("metrics-web"), cluster.endpoint)
    try:
        bad = httpx.post(
            web.url + "/server/login", json={"username": USER["email"], "password": "wrong-one"}, headers=V
        )
        assert bad.status_code == 401
        with httpx.Client(base_url=web.url, timeout=30) as client:
            ok = client.post("/server/login", json={"username": USER["email"], "password": USER["password"]}, headers=V)
            assert ok.status_code == 200, ok.text
            for _ in range(2):
                assert client.get("/func/session", headers=V).status_code < 500
        samples = scrape(web.url)
    finally:
        web.shutdown()
    assert get(samples, "backendai_web_logins_total", result="ok") == 1
    assert get(samples, "backendai_web_logins_total", result="failed") == 1
    assert get(samples, "backendai_web_logins_total", result="blocked") == 0
    assert get(samples, "backendai_web_func_requests_total", kind="http") == 2
    assert get(samples, "backendai_http_requests_total", method="POST", route="/server/login", status="200") == 1


@pytest.fixture(scope="module")
def closed_manager(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Cluster]:
    """A manager whose metrics need the secret from every address (empty allow-list), with a tiny anonymous
    rate limit to see refusals counted."""
    m = launch_manager(
        tmp_path_factory.mktemp("metrics-closed"),
        settings={"anonymous-rate-limit": 3},
        manager_toml="[metrics]\nallow-from = []\n",
    )
    try:
        yield m
    finally:
        m.shutdown()


def test_scrape_refused_without_secret_when_the_allow_list_is_empty(closed_manager: Cluster) -> None:
    url = closed_manager.endpoint + "/metrics"
    for headers in ({}, {CLUSTER_SECRET_HEADER: "not-the-secret"}):
        r = httpx.get(url, headers=headers)
        assert r.status_code == 403, r.text
        assert r.headers["content-type"] == "application/problem+json"
        doc: dict[str, Any] = r.json()
        assert doc["status"] == 403 and CLUSTER_SECRET_HEADER in doc["detail"]
    assert httpx.get(url, headers={CLUSTER_SECRET_HEADER: closed_manager.secret}).status_code == 200


def test_rate_limit_refusals_are_counted(closed_manager: Cluster) -> None:
    secret = {CLUSTER_SECRET_HEADER: closed_manager.secret}
    before = get(scrape(closed_manager.endpoint, secret), "backendai_manager_rate_limit_refusals_total", scope="ip")
    codes = [httpx.get(closed_manager.endpoint + "/").status_code for _ in range(6)]
    refused = codes.count(429)
    assert refused >= 3, codes  # at most 3 anonymous calls per window pass
    after = scrape(closed_manager.endpoint, secret)
    assert get(after, "backendai_manager_rate_limit_refusals_total", scope="ip") - before == refused
    # The refusals are requests too, counted under their route with their status.
    assert get(after, "backendai_http_requests_total", method="GET", route="/", status="429") == refused
