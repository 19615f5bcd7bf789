"""Fuzzing the manager's REST API (schemathesis, from its own OpenAPI document) and its GraphQL API
(hypothesis-graphql, from its own schema), as a normal user and as an admin: no answer may be a 5xx, and every
4xx must be an RFC 7807 problem (``application/problem+json``).

The manager under test is this module's own (with a storage proxy, so the folder routes reach real code): the
fuzzer creates, renames and deletes whatever its generated arguments name, so it must not share the
session-wide ``cluster`` with the other tests. Its runtime is bounded by a few examples per operation.

Excluded, and why:

* GraphQL ``rescan_images``: it walks the configured Docker registries over the network (none here; each
  call waits for its connection timeout).
* GraphQL ``preload_image`` / ``unload_image``: background work on the agents (there are none).
* GraphQL ``delete_keypair``, ``modify_keypair``, ``delete_user``, ``modify_user``, ``delete_domain``,
  ``modify_domain``, ``delete_group``, ``modify_group``, ``delete_keypair_resource_policy`` and
  ``modify_keypair_resource_policy``: one that named the fuzzing accounts' own keypair, user, domain, group or
  resource policy (``default`` is a likely string) would lock the fuzzer out or deactivate the admin, and
  every later call would fail for a reason that is no bug. Their refusals are covered by
  test_permission_matrix.py and test_gql_modify_nulls.py.

Nothing is excluded from REST: a normal user or an admin cannot delete their own keypair over REST, and the
agent-facing ``/internal/*`` routes answer 401 to calls without the cluster secret (the app proxy's without its
secret). The manager has an ``[appproxy]``, so ``start-service`` is not a 503 ("no app proxy") for every input.
"""

from __future__ import annotations

import json
import time
from collections.abc import Callable, Iterator
from typing import Any

import hypothesis.strategies as st
import pytest
import requests
import schemathesis
from hypothesis import HealthCheck, Phase, given, settings
from hypothesis_graphql import mutations, queries
from requests.auth import AuthBase
from schemathesis import GenerationMode

from ai.backend.common.auth import sign_request_headers
from ai.backend.manager.api.gql import build_schema
from ai.backend.manager.api.root import API_VERSION
from ai.backend.testutils.cluster import Cluster, launch_manager
from ai.backend.testutils.storage import launch_storage_proxy

from .conftest import ADMIN, USER

EXAMPLES = 20  # per REST operation, role and generation mode (valid and invalid inputs)
GQL_EXAMPLES = 25  # per GraphQL root-field group and role
ROLES = {"user": USER, "admin": ADMIN}
STATUSES: dict[int, int] = {}  # answers seen, by status (printed with -s)
GQL_SKIPPED_MUTATIONS = {"rescan_images", "preload_image", "unload_image"}
GQL_GUARDED_MUTATIONS = {
    "delete_keypair",
    "modify_keypair",
    "delete_user",
    "modify_user",
    "delete_domain",
    "modify_domain",
    "delete_group",
    "modify_group",
    "delete_keypair_resource_policy",
    "modify_keypair_resource_policy",
}
_SETTINGS = settings(
    max_examples=EXAMPLES,
    deadline=None,
    database=None,
    derandomize=True,
    phases=[Phase.explicit, Phase.generate],
    suppress_health_check=list(HealthCheck),
)


class Signed(AuthBase):
    """Signs each request with the HMAC scheme of the API (as the SDK does)."""

    def __init__(self, who: dict[str, Any]) -> None:
        self.who = who

    def __call__(self, r: requests.PreparedRequest) -> requests.PreparedRequest:
        host = (r.url or "").split("//", 1)[1].split("/", 1)[0]
        ctype = r.headers.get("Content-Type") or "application/json"
        r.headers.update(
            sign_request_headers(
                method=r.method or "GET",
                path_with_query=r.path_url,
                host=host,
                content_type=ctype,
                version=API_VERSION,
                access_key=self.who["access_key"],
                secret_key=self.who["secret_key"],
            )
        )
        return r


@pytest.fixture(scope="module")
def fuzz_manager(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Cluster]:
    state = tmp_path_factory.mktemp("fuzz")
    proxy = launch_storage_proxy(state / "storage")
    try:
        # With an [appproxy] (nothing listens there): start-service then checks its input instead of a 503.
        appproxy = '[appproxy]\nurl = "http://127.0.0.1:9"\nsecret = "fuzzing-app-proxy-secret"\n'
        m = launch_manager(state / "manager", manager_toml=proxy.manager_toml() + "\n" + appproxy)
        try:
            yield m
        finally:
            m.shutdown()
    finally:
        proxy.shutdown()


def _problem_failure(resp: requests.Response) -> str | None:
    """Why ``resp`` breaks the rule (no 5xx; a 4xx is problem+json), or None."""
    if resp.status_code >= 500:
        return f"{resp.status_code}: {resp.text[:300]}"
    if resp.status_code >= 400:
        if not resp.headers.get("content-type", "").startswith("application/problem+json"):
            return f"{resp.status_code} without problem+json ({resp.headers.get('content-type')}): {resp.text[:200]}"
        try:
            body = resp.json()
        except ValueError:
            return f"{resp.status_code} problem+json that is not JSON: {resp.text[:200]}"
        if not isinstance(body, dict) or not body.get("type") or not body.get("title"):
            return f"{resp.status_code} problem without type/title: {resp.text[:200]}"
    return None


def _send(session: requests.Session, method: str, url: str, who: dict[str, Any], **kw: Any) -> requests.Response:
    """One signed call; streams (event endpoints) are cut after the status line and headers."""
    resp = session.request(method, url, auth=Signed(who), stream=True, timeout=60, **kw)
    STATUSES[resp.status_code] = STATUSES.get(resp.status_code, 0) + 1
    if not resp.headers.get("content-type", "").startswith("text/event-stream"):
        _ = resp.content
    resp.close()
    return resp


def _run_each(label: str, fn: Callable[[], None], failures: list[str]) -> None:
    try:
        fn()
    except AssertionError as e:
        failures.append(f"{label}: {str(e).splitlines()[0] if str(e) else e!r}")


@pytest.mark.parametrize("role", list(ROLES))
def test_rest_fuzz(fuzz_manager: Cluster, role: str) -> None:
    """Every REST operation of the OpenAPI document, a few generated requests each: no 5xx, 4xx are problems."""
    who = ROLES[role]
    schema = schemathesis.openapi.from_url(fuzz_manager.endpoint + "/openapi.json")
    session = requests.Session()
    failures: list[str] = []
    started = time.monotonic()
    count = 0
    for result in schema.get_all_operations():
        op = result.ok()
        label = f"{op.method.upper()} {op.path}"

        @_SETTINGS
        @given(case=st.one_of(op.as_strategy(GenerationMode.POSITIVE), op.as_strategy(GenerationMode.NEGATIVE)))
        def check(case: Any) -> None:
            kw = case.as_transport_kwargs(base_url=fuzz_manager.endpoint)
            kw.pop("headers", None)  # generated headers would fight the signature; the auth adds ours
            method, url = kw.pop("method"), kw.pop("url")
            kw.pop("timeout", None)
            resp = _send(session, method, url, who, **kw)
            why = _problem_failure(resp)
            assert why is None, f"{method} {resp.request.path_url} body={str(case.body)[:200]}: {why}"

        _run_each(label, check, failures)
        count += 1
    print(f"{role}: {count} operations in {time.monotonic() - started:.0f} s; statuses so far: {STATUSES}")
    assert count > 50, "the OpenAPI document lists too few operations"
    assert not failures, f"{len(failures)} operation(s) failed ({time.monotonic() - started:.0f} s):\n" + "\n".join(
        failures
    )


def _gql_sdl() -> str:
    return str(build_schema(allow_introspection=True))


def _gql_strategies() -> dict[str, st.SearchStrategy[str]]:
    import graphql

    sdl = _gql_sdl()
    schema = graphql.build_schema(sdl)
    assert schema.mutation_type is not None
    fuzzed = sorted(set(schema.mutation_type.fields) - GQL_SKIPPED_MUTATIONS - GQL_GUARDED_MUTATIONS)
    custom = {
        name: _scalar(name)
        for name, t in schema.type_map.items()
        if isinstance(t, graphql.GraphQLScalarType) and name not in graphql.specified_scalar_types
    }
    return {
        "queries": queries(sdl, custom_scalars=custom),
        "mutations": mutations(sdl, fields=fuzzed, custom_scalars=custom),
    }


def _scalar(name: str) -> st.SearchStrategy[Any]:
    """Value nodes for the schema's custom scalars (JSON, UUID, DateTime, ...)."""
    import graphql

    lowered = name.lower()
    if "uuid" in lowered:
        return st.uuids().map(lambda u: graphql.StringValueNode(value=str(u)))
    if "date" in lowered or "time" in lowered:
        return st.datetimes().map(lambda d: graphql.StringValueNode(value=d.isoformat()))
    return st.text(max_size=20).map(lambda s: graphql.StringValueNode(value=s))


@pytest.mark.parametrize("role", list(ROLES))
def test_graphql_fuzz(fuzz_manager: Cluster, role: str) -> None:
    """Generated GraphQL documents (queries and mutations) on ``POST /admin/gql``: no 5xx, 4xx are problems,
    and a 200 is a GraphQL answer (``data`` and/or ``errors``)."""
    who = ROLES[role]
    session = requests.Session()
    failures: list[str] = []
    for kind, strategy in _gql_strategies().items():

        @settings(_SETTINGS, max_examples=GQL_EXAMPLES)
        @given(doc=strategy)
        def check(doc: str) -> None:
            resp = _send(
                session,
                "POST",
                fuzz_manager.endpoint + "/admin/gql",
                who,
                data=json.dumps({"query": doc}),
                headers={"Content-Type": "application/json"},
            )
            why = _problem_failure(resp)
            assert why is None, f"{doc[:300]}: {why}"
            if resp.status_code == 200:
                body = resp.json()
                assert "data" in body or "errors" in body, f"{doc[:300]}: {resp.text[:200]}"
                for err in body.get("errors") or []:
                    assert "internal" not in str(err.get("message", "")).lower(), f"{doc[:300]}: {err}"

        _run_each(kind, check, failures)
    assert not failures, "\n".join(failures)


@pytest.mark.parametrize("prefix", ["", "/spec", "/v6", "/v6/spec"])
def test_openapi_document_and_docs(fuzz_manager: Cluster, prefix: str) -> None:
    """The document is served at /openapi.json and /spec/openapi.json (also under a /vN prefix), with
    Swagger UI beside it, and it describes the request bodies."""
    doc = requests.get(f"{fuzz_manager.endpoint}{prefix}/openapi.json", timeout=30)
    assert doc.status_code == 200, doc.text
    paths = doc.json()["paths"]
    create = paths["/session"]["post"]["requestBody"]["content"]["application/json"]["schema"]
    assert {"image", "name", "config", "maxWaitSeconds"} <= set(create["properties"])
    assert "requestBody" in paths["/auth/authorize"]["post"]
    assert {p["name"] for p in paths["/user-config/dotfiles"]["get"]["parameters"]} >= {"path", "owner_access_key"}
    assert not any(p.startswith(("/spec", "/docs", "/openapi")) for p in paths)
    ui = requests.get(f"{fuzz_manager.endpoint}{prefix}/docs", timeout=30)
    assert ui.status_code == 200 and "swagger" in ui.text.lower()
    assert f"{prefix.removeprefix('/v6')}/openapi.json" in ui.text
