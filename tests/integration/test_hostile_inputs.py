"""Inputs that once made the manager answer 500 (with a traceback in its log) now get a clear 4xx.

A Date header with a UTC offset of a day or more, an HMAC with a SHAKE hash, JSON nested a thousand
levels deep (REST bodies and GraphQL JSONString variables), and a GraphQL ``operationName`` that names
no operation of the document.
"""

from __future__ import annotations

from typing import Any

import pytest

from ai.backend.manager.fixtures import USER
from ai.backend.testutils.cluster import Cluster
from ai.backend.testutils.problems import problem


@pytest.mark.parametrize(
    "date", ["2026-12-07T14:00:00+25:00", "Mon, 07 Dec 2026 14:00:00 +2500", "2026-12-07T14:00:00-24:00"]
)
def test_date_with_an_offset_of_a_day_or_more_is_a_400(manager: Cluster, date: str) -> None:
    r = manager.request("GET", "/session/no-such-session", headers={"Date": date, "X-BackendAI-Date": date})
    problem(r, 400, "date", in_detail=True)


@pytest.mark.parametrize("method", ["SHAKE_128", "shake_256", "NOPE"])
def test_unusable_signature_hashes_are_a_400(manager: Cluster, method: str) -> None:
    auth = f"BackendAI signMethod=HMAC-{method}, credential={USER['access_key']}:{'0' * 64}"
    problem(
        manager.request("GET", "/session/no-such-session", headers={"Authorization": auth}), 400, "hash", in_detail=True
    )


def _nested(depth: int) -> str:
    return "[" * depth + "]" * depth


def test_deeply_nested_json_body_is_a_400(manager: Cluster) -> None:
    import httpx

    from ai.backend.common.auth import sign_request_headers

    host = manager.endpoint.split("//", 1)[1]
    for path in ("/session", "/admin/gql"):
        h = sign_request_headers(
            method="POST",
            path_with_query=path,
            host=host,
            content_type="application/json",
            version="v6.20220615",
            access_key=USER["access_key"],
            secret_key=USER["secret_key"],
        )
        r = httpx.post(manager.endpoint + path, headers=h, content='{"x": ' + _nested(100_000) + "}", timeout=30)
        problem(r, 400, "nested too deeply", in_detail=True)


def test_deeply_nested_graphql_jsonstring_variable_is_refused(manager: Cluster) -> None:
    r = manager.request(
        "POST",
        "/admin/graphql",
        {
            "query": "mutation($n: String!, $p: CreateResourcePresetInput!) {"
            " create_resource_preset(name: $n, props: $p) { ok } }",
            "variables": {"n": "deep-preset", "p": {"resource_slots": '{"cpu": ' + _nested(100_000) + "}"}},
        },
        who=USER,
    )
    problem(r, 400, "nested too deeply", in_detail=True)


def test_operation_name_that_names_no_operation_is_a_400(manager: Cluster) -> None:
    for path in ("/admin/gql", "/admin/graphql"):
        r = manager.request("POST", path, {"query": "query A { domain { name } }", "operationName": "B"})
        body = problem(r, 400)
        assert "B" in r.text and body["title"], body


def _forwarded(m: Cluster, signed_path: str, sent_method: str, sent_path: str) -> Any:
    """A request signed for ``GET signed_path`` but sent as ``sent_method sent_path``, with X-Forwarded-URL
    naming the signed path: a captured signature replayed on another route."""
    import httpx

    from ai.backend.common.auth import sign_request_headers

    host = m.endpoint.split("//", 1)[1]
    h = sign_request_headers(
        method=sent_method,
        path_with_query=signed_path,
        host=host,
        content_type="application/json",
        version="v6.20220615",
        access_key=USER["access_key"],
        secret_key=USER["secret_key"],
    )
    h["X-Forwarded-URL"] = f"http://{host}{signed_path}"
    return httpx.request(sent_method, m.endpoint + sent_path, headers=h, timeout=30)


def test_forwarded_url_is_ignored_from_untrusted_peers(manager: Cluster) -> None:
    r = _forwarded(manager, "/folders/captured", "DELETE", "/session/victim-session")
    problem(r, 401, "signature", in_detail=True)


def test_forwarded_url_is_honoured_from_a_trusted_proxy(tmp_path: Any) -> None:
    from ai.backend.testutils.cluster import launch_manager

    m = launch_manager(tmp_path, settings={"trusted-proxies": ["127.0.0.0/8"]})
    try:
        # Signed for the path the proxy was asked for; sent to the manager under another one.
        r = _forwarded(m, "/session/no-such-session", "GET", "/session/other-path")
        problem(r, 404)  # authenticated: the signature matched the forwarded URL
    finally:
        m.shutdown()


def test_trusted_proxies_must_be_addresses(tmp_path: Any) -> None:
    import subprocess
    import sys

    cfg = tmp_path / "manager.toml"
    cfg.write_text('[manager]\ntrusted-proxies = ["not-an-address"]\n')
    p = subprocess.run(
        [sys.executable, "-m", "ai.backend.manager.server", "-f", str(cfg)], capture_output=True, text=True, timeout=60
    )
    assert p.returncode == 2 and "not-an-address" in p.stderr and "Traceback" not in p.stderr, p.stderr


@pytest.mark.parametrize(("aliases", "words"), [(10_000, "bytes"), (1_000, "aliases")])
def test_alias_bombs_are_refused_before_they_run(manager: Cluster, aliases: int, words: str) -> None:
    query = "{" + " ".join(f"a{i}:domains{{name}}" for i in range(aliases)) + "}"
    for path in ("/admin/gql", "/admin/graphql"):
        r = manager.request("POST", path, {"query": query}, who=USER)
        body = problem(r, 400, words, in_detail=True)
        assert body["type"].endswith("/graphql-too-costly"), body
    # An ordinary query of the same user still answers.
    r = manager.request("POST", "/admin/gql", {"query": "{ a: domain { name } b: domain { name } }"}, who=USER)
    assert r.status_code == 200 and r.json()["data"]["a"]["name"] == "default", r.text


def _signed_post(m: Cluster, path: str, body: bytes, *, sign_body: bool) -> dict[str, str]:
    from ai.backend.common.auth import sign_request_headers

    host = m.endpoint.split("//", 1)[1]
    return sign_request_headers(
        method="POST",
        path_with_query=path,
        host=host,
        content_type="application/json",
        version="v6.20220615",
        access_key=USER["access_key"],
        secret_key=USER["secret_key"],
        body=body,
        sign_body=sign_body,
    )


def test_a_signed_body_cannot_be_replayed_with_another_body(manager: Cluster) -> None:
    import httpx

    from ai.backend.common.auth import BODY_HASH_HEADER

    path = "/admin/gql"
    original = b'{"query": "{ domain { name } }"}'
    headers = _signed_post(manager, path, original, sign_body=True)
    assert BODY_HASH_HEADER in headers
    r = httpx.post(manager.endpoint + path, headers=headers, content=original)
    assert r.status_code == 200 and r.json()["data"]["domain"]["name"] == "default", r.text
    # The captured headers with another body: refused.
    forged = b'{"query": "{ keypair { access_key secret_key } }"}'
    problem(httpx.post(manager.endpoint + path, headers=headers, content=forged), 401, "does not match", in_detail=True)
    # With the body-hash header stripped the string to sign changes: refused too.
    stripped = {k: v for k, v in headers.items() if k != BODY_HASH_HEADER}
    problem(httpx.post(manager.endpoint + path, headers=stripped, content=forged), 401, "signature", in_detail=True)


def test_upstream_signatures_without_a_body_hash_still_work(manager: Cluster) -> None:
    import httpx

    # The official clients sign no body (API v4.20181215 and later): such requests stay accepted.
    path = "/admin/gql"
    body = b'{"query": "{ domain { name } }"}'
    r = httpx.post(manager.endpoint + path, headers=_signed_post(manager, path, b"", sign_body=False), content=body)
    assert r.status_code == 200, r.text


def test_a_query_running_too_long_is_stopped_but_mutations_finish(tmp_path: Any) -> None:
    from ai.backend.manager.fixtures import ADMIN
    from ai.backend.testutils.cluster import launch_manager

    # A timeout no database round trip can meet: every query is stopped, mutations are not.
    m = launch_manager(tmp_path, settings={"graphql-timeout": 1e-6})
    try:
        r = m.request("POST", "/admin/graphql", {"query": "{ domains { name } }"}, who=ADMIN)
        problem(r, 503, "longer than", in_detail=True)
        r = m.request(
            "POST",
            "/admin/graphql",
            {"query": 'mutation { create_domain(name: "slow-ok", props: {description: "x"}) { ok } }'},
            who=ADMIN,
        )
        assert r.status_code == 200 and r.json()["create_domain"]["ok"], r.text
    finally:
        m.shutdown()
