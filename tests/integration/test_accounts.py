"""Accounts through the admin GraphQL API and /auth on a real manager, on SQLite and PostgreSQL:
domains, groups, users, keypairs and policies; refusals change nothing; deactivation is immediate."""

from __future__ import annotations

import json
import secrets
import subprocess
import sys
from typing import Any

import httpx
import pytest

from ai.backend.manager.fixtures import ADMIN, DEFAULT_GROUP_ID, USER
from ai.backend.testutils.cluster import Cluster


def gql(
    m: Cluster, query: str, variables: dict[str, Any] | None = None, who: dict[str, Any] = ADMIN, status: int = 200
) -> Any:
    r = m.request("POST", "/admin/graphql", {"query": query, "variables": variables or {}}, who=who)
    assert r.status_code == status, r.text
    return r.json()


def uniq(prefix: str) -> str:
    return f"{prefix}-{secrets.token_hex(3)}"


def new_user(
    m: Cluster,
    *,
    domain: str = "default",
    role: str = "user",
    groups: list[str] | None = None,
    password: str = "pass-word-1",
) -> dict[str, Any]:
    """Create a user as the superadmin; returns its uuid, email and main keypair."""
    email = f"{uniq('u')}@example.org"
    out = gql(
        m,
        """mutation($e: String!, $p: UserInput!) { create_user(email: $e, props: $p) {
                     ok msg user { uuid email role domain_name groups { id name } } } }""",
        {
            "e": email,
            "p": {
                "password": password,
                "domain_name": domain,
                "role": role,
                "group_ids": groups or [],
                "need_password_change": False,
            },
        },
    )
    assert out["create_user"]["ok"] is True
    kps = gql(m, "query($e: String) { keypairs(email: $e) { access_key secret_key is_main is_admin } }", {"e": email})
    kp = kps["keypairs"][0]
    return {
        "email": email,
        "uuid": out["create_user"]["user"]["uuid"],
        "access_key": kp["access_key"],
        "secret_key": kp["secret_key"],
        "user": out["create_user"]["user"],
        "keypair": kp,
        "password": password,
    }


def assert_problem(r: httpx.Response, status: int, slug: str) -> dict[str, Any]:
    assert r.status_code == status, r.text
    assert r.headers["content-type"].startswith("application/problem+json")
    body = r.json()
    assert body["type"].endswith("/" + slug), body
    assert body.get("detail"), body
    assert "Traceback" not in r.text and "sqlalchemy" not in r.text.lower()
    return body


def gql_raw(
    m: Cluster, query: str, variables: dict[str, Any] | None = None, who: dict[str, Any] = ADMIN
) -> httpx.Response:
    return m.request("POST", "/admin/graphql", {"query": query, "variables": variables or {}}, who=who)


# --- domains -------------------------------------------------------------------------------------


def test_domain_lifecycle(manager: Cluster) -> None:
    name = uniq("dom")
    create = """mutation($n: String!, $p: DomainInput!) { create_domain(name: $n, props: $p) {
                  ok msg domain { name description total_resource_slots allowed_vfolder_hosts scaling_groups } } }"""
    props = {
        "description": "lab",
        "total_resource_slots": '{"cpu": 4, "mem": "8g"}',
        "allowed_vfolder_hosts": ["local"],
    }
    out = gql(manager, create, {"n": name, "p": props})
    dom = out["create_domain"]["domain"]
    assert dom["name"] == name and dom["description"] == "lab"
    assert json.loads(dom["total_resource_slots"]) == {"cpu": "4", "mem": str(8 * 2**30)}
    # Duplicate, malformed name and malformed slots are refused.
    assert_problem(gql_raw(manager, create, {"n": name, "p": {}}), 409, "conflict")
    assert_problem(gql_raw(manager, create, {"n": "bad name!", "p": {}}), 400, "invalid-api-params")
    assert_problem(
        gql_raw(manager, create, {"n": uniq("d"), "p": {"total_resource_slots": '{"mem": "lots"}'}}),
        400,
        "invalid-api-params",
    )
    # A plain user may neither create nor rename it; nothing changes.
    assert_problem(gql_raw(manager, create, {"n": uniq("d"), "p": {}}, who=USER), 403, "forbidden")
    modify = "mutation($n: String!, $p: ModifyDomainInput!) { modify_domain(name: $n, props: $p) { ok } }"
    assert_problem(gql_raw(manager, modify, {"n": name, "p": {"description": "hacked"}}, who=USER), 403, "forbidden")
    got = gql(manager, "query($n: String) { domain(name: $n) { description is_active } }", {"n": name})
    assert got["domain"] == {"description": "lab", "is_active": True}
    # Rename, then soft-delete.
    renamed = uniq("dom")
    assert gql(manager, modify, {"n": name, "p": {"name": renamed}})["modify_domain"]["ok"] is True
    assert gql(manager, "query($n: String) { domain(name: $n) { name } }", {"n": name})["domain"] is None
    deleted = gql(manager, "mutation($n: String!) { delete_domain(name: $n) { ok } }", {"n": renamed})
    assert deleted["delete_domain"]["ok"] is True
    got = gql(manager, "query($n: String) { domain(name: $n) { is_active } }", {"n": renamed})
    assert got["domain"]["is_active"] is False
    assert_problem(gql_raw(manager, 'mutation { delete_domain(name: "no-such-domain") { ok } }'), 404, "not-found")


# --- groups --------------------------------------------------------------------------------------


def test_group_membership_and_domain_admin_scope(manager: Cluster) -> None:
    other = uniq("dom")
    gql(manager, "mutation($n: String!) { create_domain(name: $n, props: {}) { ok } }", {"n": other})
    admin = new_user(manager, role="admin")
    member = new_user(manager)
    create = """mutation($n: String!, $p: GroupInput!) { create_group(name: $n, props: $p) {
                  ok group { id name domain_name } } }"""
    gname = uniq("proj")
    out = gql(manager, create, {"n": gname, "p": {"domain_name": "default"}}, who=admin)
    gid = out["create_group"]["group"]["id"]
    # Same name in the same domain: 409; in another domain it's fine; unknown domain: 404.
    assert_problem(gql_raw(manager, create, {"n": gname, "p": {"domain_name": "default"}}), 409, "conflict")
    assert gql(manager, create, {"n": gname, "p": {"domain_name": other}})["create_group"]["ok"]
    assert_problem(gql_raw(manager, create, {"n": uniq("p"), "p": {"domain_name": "nowhere"}}), 404, "not-found")
    # The domain admin cannot act in another domain.
    assert_problem(gql_raw(manager, create, {"n": uniq("p"), "p": {"domain_name": other}}, who=admin), 403, "forbidden")
    modify = "mutation($g: UUID!, $p: ModifyGroupInput!) { modify_group(gid: $g, props: $p) { ok } }"
    add = {"g": gid, "p": {"user_update_mode": "add", "user_uuids": [member["uuid"]]}}
    assert gql(manager, modify, add, who=admin)["modify_group"]["ok"] is True
    mine = gql(manager, "{ groups { id name } }", who=member)["groups"]
    assert {g["id"] for g in mine} == {gid}
    # A user outside the domain can't be added; an unknown uuid is a 404; nothing changes.
    stranger = new_user(manager, domain=other)
    assert_problem(
        gql_raw(manager, modify, {"g": gid, "p": {"user_update_mode": "add", "user_uuids": [stranger["uuid"]]}}),
        400,
        "invalid-api-params",
    )
    assert_problem(
        gql_raw(manager, modify, {"g": gid, "p": {"user_update_mode": "add", "user_uuids": [str(DEFAULT_GROUP_ID)]}}),
        404,
        "not-found",
    )
    assert_problem(
        gql_raw(manager, modify, {"g": gid, "p": {"user_update_mode": "swap", "user_uuids": [member["uuid"]]}}),
        400,
        "invalid-api-params",
    )
    users = gql(manager, "query($g: UUID) { users(group_id: $g) { email } }", {"g": gid})["users"]
    assert [u["email"] for u in users] == [member["email"]]
    remove = {"g": gid, "p": {"user_update_mode": "remove", "user_uuids": [member["uuid"]]}}
    assert gql(manager, modify, remove)["modify_group"]["ok"] is True
    assert gql(manager, "{ groups { id } }", who=member)["groups"] == []
    # A plain user may not modify groups; soft delete by the admin.
    assert_problem(gql_raw(manager, modify, {"g": gid, "p": {"description": "x"}}, who=member), 403, "forbidden")
    assert gql(manager, "mutation($g: UUID!) { delete_group(gid: $g) { ok } }", {"g": gid}, who=admin)
    got = gql(manager, "query($g: UUID!) { group(id: $g) { is_active description } }", {"g": gid})["group"]
    assert got == {"is_active": False, "description": ""}


# --- users ---------------------------------------------------------------------------------------


def test_user_creation_makes_a_working_keypair(manager: Cluster) -> None:
    u = new_user(manager, groups=[str(DEFAULT_GROUP_ID)])
    assert u["user"]["groups"] == [{"id": str(DEFAULT_GROUP_ID), "name": "default"}]
    assert u["keypair"]["is_main"] is True and u["keypair"]["is_admin"] is False
    r = manager.request("GET", "/auth/test?echo=hi", who=u)
    assert r.status_code == 200 and r.json()["echo"] == "hi"
    me = gql(manager, "{ user { email role } }", who=u)["user"]
    assert me == {"email": u["email"], "role": "user"}


@pytest.mark.parametrize(
    ("props", "status", "slug"),
    [
        ({"password": "short", "domain_name": "default"}, 400, "invalid-api-params"),
        ({"password": "long-enough", "domain_name": "default", "role": "emperor"}, 400, "invalid-api-params"),
        ({"password": "long-enough", "domain_name": "atlantis"}, 404, "not-found"),
        ({"password": "long-enough", "domain_name": "default", "group_ids": ["not-a-group"]}, 404, "not-found"),
        ({"password": "long-enough", "domain_name": "default", "status": "sleeping"}, 400, "invalid-api-params"),
    ],
)
def test_create_user_refusals_change_nothing(manager: Cluster, props: dict[str, Any], status: int, slug: str) -> None:
    email = f"{uniq('bad')}@example.org"
    q = "mutation($e: String!, $p: UserInput!) { create_user(email: $e, props: $p) { ok } }"
    assert_problem(gql_raw(manager, q, {"e": email, "p": props}), status, slug)
    assert gql(manager, "query($e: String) { user(email: $e) { email } }", {"e": email})["user"] is None
    assert gql(manager, "query($e: String) { keypairs(email: $e) { access_key } }", {"e": email})["keypairs"] == []


def test_duplicate_user_and_non_superadmin(manager: Cluster) -> None:
    u = new_user(manager)
    q = "mutation($e: String!, $p: UserInput!) { create_user(email: $e, props: $p) { ok } }"
    assert_problem(gql_raw(manager, q, {"e": u["email"], "p": {"password": "long-enough"}}), 409, "conflict")
    admin = new_user(manager, role="admin")
    assert_problem(gql_raw(manager, q, {"e": "x@y.org", "p": {"password": "long-enough"}}, who=admin), 403, "forbidden")


def test_delete_user_deactivates_keypairs_at_once(manager: Cluster) -> None:
    u = new_user(manager)
    assert manager.request("GET", "/auth/test", who=u).status_code == 200
    out = gql(manager, "mutation($e: String!) { delete_user(email: $e) { ok } }", {"e": u["email"]})
    assert out["delete_user"]["ok"] is True
    assert_problem(manager.request("GET", "/auth/test", who=u), 401, "unauthorized")
    kps = gql(manager, "query($e: String) { keypairs(email: $e) { is_active } }", {"e": u["email"]})["keypairs"]
    assert kps == [{"is_active": False}]
    status = gql(manager, "query($e: String) { user(email: $e) { status is_active } }", {"e": u["email"]})["user"]
    assert status == {"status": "deleted", "is_active": False}


def test_role_change_syncs_keypair_admin_flag(manager: Cluster) -> None:
    u = new_user(manager)
    assert_problem(gql_raw(manager, "{ users { email } }", who=u), 403, "forbidden")
    q = "mutation($e: String!, $p: ModifyUserInput!) { modify_user(email: $e, props: $p) { ok user { role } } }"
    assert gql(manager, q, {"e": u["email"], "p": {"role": "admin"}})["modify_user"]["user"]["role"] == "admin"
    users = gql(manager, "{ users { email domain_name } }", who=u)["users"]
    assert users and all(x["domain_name"] == "default" for x in users)
    # Superadmins cannot demote themselves (no lock-out), and the refusal changes nothing.
    assert_problem(gql_raw(manager, q, {"e": ADMIN["email"], "p": {"role": "user"}}), 403, "forbidden")
    assert gql(manager, "{ user { role } }")["user"]["role"] == "superadmin"


def test_user_list_pagination_filter_and_order(manager: Cluster) -> None:
    tag = secrets.token_hex(3)
    for i in range(3):
        email = f"page{i}-{tag}@example.org"
        gql(
            manager,
            'mutation($e: String!) { create_user(email: $e, props: {password: "long-enough"}) { ok } }',
            {"e": email},
        )
    q = """query($f: String, $o: String, $off: Int!) { user_list(limit: 2, offset: $off, filter: $f, order: $o) {
             total_count items { email } } }"""
    page = gql(manager, q, {"f": f'email like "%-{tag}@example.org"', "o": "-email", "off": 0})["user_list"]
    assert page["total_count"] == 3
    assert [u["email"] for u in page["items"]] == [f"page2-{tag}@example.org", f"page1-{tag}@example.org"]
    rest = gql(manager, q, {"f": f'email like "%-{tag}@example.org"', "o": "-email", "off": 2})["user_list"]
    assert [u["email"] for u in rest["items"]] == [f"page0-{tag}@example.org"]
    legacy = gql(
        manager,
        """query($f: String) { user_list(limit: 5, offset: 0, filter: $f, order_key: "email",
                              order_asc: false) { items { email } } }""",
        {"f": f'email like "%-{tag}@example.org"'},
    )["user_list"]
    assert [u["email"] for u in legacy["items"]][0] == f"page2-{tag}@example.org"
    for bad in ({"f": "password == 1", "o": None}, {"f": "email ==", "o": None}, {"f": None, "o": "secret"}):
        assert_problem(gql_raw(manager, q, {**bad, "off": 0}), 400, "invalid-api-params")
    assert_problem(gql_raw(manager, "{ user_list(limit: 0, offset: 0) { total_count } }"), 400, "invalid-api-params")


# --- keypairs ------------------------------------------------------------------------------------


def test_keypair_deactivation_is_immediate_and_reversible(manager: Cluster) -> None:
    u = new_user(manager)
    out = gql(
        manager,
        """mutation($e: String!) { create_keypair(user_id: $e, props: {rate_limit: 500}) {
                            ok keypair { access_key secret_key is_main rate_limit } } }""",
        {"e": u["email"]},
    )
    kp = out["create_keypair"]["keypair"]
    assert kp["is_main"] is False and kp["rate_limit"] == 500 and len(kp["secret_key"]) == 40
    who = {"access_key": kp["access_key"], "secret_key": kp["secret_key"]}
    assert manager.request("GET", "/auth/test", who=who).status_code == 200
    modify = "mutation($a: String!, $p: ModifyKeyPairInput!) { modify_keypair(access_key: $a, props: $p) { ok } }"
    gql(manager, modify, {"a": kp["access_key"], "p": {"is_active": False}})
    assert_problem(manager.request("GET", "/auth/test", who=who), 401, "unauthorized")
    assert manager.request("GET", "/auth/test", who=u).status_code == 200  # the main keypair is unaffected
    gql(manager, modify, {"a": kp["access_key"], "p": {"is_active": True}})
    assert manager.request("GET", "/auth/test", who=who).status_code == 200
    # Unknown policy: 404, and the keypair keeps its policy.
    assert_problem(
        gql_raw(manager, modify, {"a": kp["access_key"], "p": {"resource_policy": "nope"}}), 404, "not-found"
    )
    got = gql(manager, "query($a: String) { keypair(access_key: $a) { resource_policy } }", {"a": kp["access_key"]})
    assert got["keypair"]["resource_policy"] == "default"
    # Delete (never used for sessions) and it stops working.
    assert gql(manager, "mutation($a: String!) { delete_keypair(access_key: $a) { ok } }", {"a": kp["access_key"]})
    assert_problem(manager.request("GET", "/auth/test", who=who), 401, "unauthorized")
    assert_problem(
        gql_raw(manager, 'mutation { delete_keypair(access_key: "AKIANOSUCHKEY0000000") { ok } }'), 404, "not-found"
    )


def test_keypair_secrets_are_not_shown_to_domain_admins(manager: Cluster) -> None:
    admin = new_user(manager, role="admin")
    rows = gql(
        manager, "query($e: String) { keypairs(email: $e) { access_key secret_key } }", {"e": USER["email"]}, who=admin
    )["keypairs"]
    assert rows and all(r["secret_key"] is None for r in rows)
    own = gql(manager, "{ keypair { secret_key } }", who=admin)["keypair"]
    assert own["secret_key"] == admin["secret_key"]
    assert_problem(
        gql_raw(manager, "query($e: String) { keypairs(email: $e) { access_key } }", {"e": ADMIN["email"]}, who=USER),
        403,
        "forbidden",
    )


def test_self_lockout_is_refused(manager: Cluster) -> None:
    modify = "mutation($a: String!, $p: ModifyKeyPairInput!) { modify_keypair(access_key: $a, props: $p) { ok } }"
    assert_problem(gql_raw(manager, modify, {"a": ADMIN["access_key"], "p": {"is_active": False}}), 403, "forbidden")
    assert_problem(
        gql_raw(manager, "mutation($a: String!) { delete_keypair(access_key: $a) { ok } }", {"a": ADMIN["access_key"]}),
        403,
        "forbidden",
    )
    assert manager.request("GET", "/auth/test").status_code == 200


# --- keypair resource policies -------------------------------------------------------------------


def test_policy_lifecycle(manager: Cluster) -> None:
    name = uniq("pol")
    props = {
        "default_for_unspecified": "LIMITED",
        "total_resource_slots": '{"cpu": "2", "mem": "2g"}',
        "max_concurrent_sessions": 2,
        "max_containers_per_session": 1,
        "idle_timeout": 600,
        "max_vfolder_count": 3,
        "max_vfolder_size": 1 << 30,
        "allowed_vfolder_hosts": ["local"],
    }
    create = """mutation($n: String!, $p: CreateKeyPairResourcePolicyInput!) {
                  create_keypair_resource_policy(name: $n, props: $p) { ok resource_policy { name idle_timeout } } }"""
    out = gql(manager, create, {"n": name, "p": props})
    assert out["create_keypair_resource_policy"]["resource_policy"] == {"name": name, "idle_timeout": 600}
    assert_problem(gql_raw(manager, create, {"n": name, "p": props}), 409, "conflict")
    assert_problem(
        gql_raw(manager, create, {"n": uniq("p"), "p": {**props, "default_for_unspecified": "SOME"}}),
        400,
        "invalid-api-params",
    )
    assert_problem(
        gql_raw(manager, create, {"n": uniq("p"), "p": {**props, "max_concurrent_sessions": -1}}),
        400,
        "invalid-api-params",
    )
    assert_problem(gql_raw(manager, create, {"n": uniq("p"), "p": props}, who=USER), 403, "forbidden")
    u = new_user(manager)
    gql(
        manager,
        "mutation($a: String!, $n: String!) { modify_keypair(access_key: $a, props: {resource_policy: $n}) { ok } }",
        {"a": u["access_key"], "n": name},
    )
    assert gql(manager, "{ keypair_resource_policy { name } }", who=u)["keypair_resource_policy"]["name"] == name
    assert [
        p["name"] for p in gql(manager, "{ keypair_resource_policies { name } }", who=u)["keypair_resource_policies"]
    ] == [name]
    assert_problem(gql_raw(manager, '{ keypair_resource_policy(name: "default") { name } }', who=u), 403, "forbidden")
    # In use: 409; after moving the keypair away, it can go.
    delete = "mutation($n: String!) { delete_keypair_resource_policy(name: $n) { ok } }"
    assert_problem(gql_raw(manager, delete, {"n": name}), 409, "conflict")
    gql(
        manager,
        'mutation($a: String!) { modify_keypair(access_key: $a, props: {resource_policy: "default"}) { ok } }',
        {"a": u["access_key"]},
    )
    assert gql(manager, delete, {"n": name})["delete_keypair_resource_policy"]["ok"] is True


# --- GraphQL errors ------------------------------------------------------------------------------


@pytest.mark.parametrize(
    "query",
    [
        "{ users { password } }",
        "{ nosuchfield }",
        "{ users {",
        "{ __schema { types { name } } }",
        "query($x: Int!) { user { email } }",
    ],
)
def test_graphql_errors_are_clean_400s(manager: Cluster, query: str) -> None:
    body = assert_problem(gql_raw(manager, query), 400, "graphql-error")
    assert body["errors"] and all("message" in e for e in body["errors"])


def test_standard_endpoint_envelope(manager: Cluster) -> None:
    r = manager.request("POST", "/admin/gql", {"query": "{ user { email } }"}, who=ADMIN)
    assert r.status_code == 200 and r.json() == {"data": {"user": {"email": ADMIN["email"]}}}
    r = manager.request("POST", "/admin/gql", {"query": "{ domains { name } }"}, who=USER)
    assert_problem(r, 403, "forbidden")


def test_query_depth_is_capped(manager: Cluster) -> None:
    deep = "{ user " + "{ groups " * 12 + "{ name }" + " }" * 12 + " }"
    assert_problem(gql_raw(manager, deep), 400, "graphql-error")


# --- /auth ---------------------------------------------------------------------------------------


def test_password_login_and_change(manager: Cluster) -> None:
    u = new_user(manager, password="first-pass-1")
    login = {"type": "keypair", "domain": "default", "username": u["email"], "password": "first-pass-1"}
    r = httpx.post(manager.endpoint + "/auth/authorize", json=login)
    assert r.status_code == 200
    assert r.json()["data"]["access_key"] == u["access_key"] and r.json()["data"]["role"] == "user"
    wrong = httpx.post(manager.endpoint + "/auth/authorize", json={**login, "password": "nope-nope"})
    unknown = httpx.post(manager.endpoint + "/auth/authorize", json={**login, "username": "ghost@example.org"})
    assert_problem(wrong, 401, "unauthorized")
    assert_problem(unknown, 401, "unauthorized")
    assert_problem(
        httpx.post(manager.endpoint + "/auth/authorize", json={"domain": "default"}), 400, "invalid-api-params"
    )
    change = {"old_password": "first-pass-1", "new_password": "second-pass-2", "new_password2": "second-pass-2"}
    assert_problem(
        manager.request("POST", "/auth/update-password", {**change, "new_password2": "x"}, who=u),
        400,
        "invalid-api-params",
    )
    assert_problem(
        manager.request("POST", "/auth/update-password", {**change, "old_password": "wrong-old"}, who=u),
        401,
        "unauthorized",
    )
    assert manager.request("POST", "/auth/update-password", change, who=u).status_code == 200
    assert_problem(httpx.post(manager.endpoint + "/auth/authorize", json=login), 401, "unauthorized")
    r = httpx.post(manager.endpoint + "/auth/authorize", json={**login, "password": "second-pass-2"})
    assert r.status_code == 200
    roles = manager.request("GET", "/auth/role", who=u).json()
    assert roles == {"global_role": "user", "domain_role": "user", "group_role": None}


def test_login_attempts_are_limited_per_account(manager: Cluster) -> None:
    u = new_user(manager)
    login = {"type": "keypair", "domain": "default", "username": u["email"], "password": "wrong-guess"}
    codes = [httpx.post(manager.endpoint + "/auth/authorize", json=login).status_code for _ in range(31)]
    assert codes[:30] == [401] * 30 and codes[30] == 429
    good = httpx.post(manager.endpoint + "/auth/authorize", json={**login, "password": u["password"]})
    assert_problem(good, 429, "too-many-requests")


# --- rate limiting -------------------------------------------------------------------------------


def test_rate_limit_per_keypair(manager: Cluster) -> None:
    u = new_user(manager)
    gql(
        manager,
        "mutation($a: String!) { modify_keypair(access_key: $a, props: {rate_limit: 5}) { ok } }",
        {"a": u["access_key"]},
    )
    remaining = []
    for _ in range(5):
        r = manager.request("GET", "/auth/test", who=u)
        assert r.status_code == 200
        assert r.headers["X-RateLimit-Limit"] == "5" and r.headers["X-RateLimit-Window"] == "900"
        remaining.append(int(r.headers["X-RateLimit-Remaining"]))
    assert remaining == [4, 3, 2, 1, 0]
    body = assert_problem(manager.request("GET", "/auth/test", who=u), 429, "too-many-requests")
    assert u["access_key"] in body["detail"]
    # Other keypairs are not affected.
    assert manager.request("GET", "/auth/test", who=USER).status_code == 200


def test_failed_authentication_does_not_spend_the_victims_budget(manager: Cluster) -> None:
    victim = new_user(manager)
    gql(
        manager,
        "mutation($a: String!) { modify_keypair(access_key: $a, props: {rate_limit: 3}) { ok } }",
        {"a": victim["access_key"]},
    )
    forged = {"access_key": victim["access_key"], "secret_key": "not-the-secret-key-at-all-0000000000000"}
    for _ in range(5):
        assert_problem(manager.request("GET", "/auth/test", who=forged), 401, "unauthorized")
    r = manager.request("GET", "/auth/test", who=victim)
    assert r.status_code == 200 and r.headers["X-RateLimit-Remaining"] == "2"


def test_anonymous_calls_carry_rate_limit_headers(manager: Cluster) -> None:
    r = httpx.get(manager.endpoint + "/")
    assert r.status_code == 200
    assert int(r.headers["X-RateLimit-Limit"]) > 0 and "X-RateLimit-Remaining" in r.headers


def test_num_queries_and_last_used_are_counted(manager: Cluster) -> None:
    u = new_user(manager)
    for _ in range(3):
        manager.request("GET", "/auth/test", who=u)
    kp = gql(manager, "query($a: String) { keypair(access_key: $a) { num_queries } }", {"a": u["access_key"]})
    assert kp["keypair"]["num_queries"] >= 3


# --- delegation ----------------------------------------------------------------------------------


def test_owner_access_key_delegation(manager: Cluster) -> None:
    q = "query($a: String) { compute_session_list(limit: 5, offset: 0, access_key: $a) { total_count } }"
    assert_problem(gql_raw(manager, q, {"a": ADMIN["access_key"]}, who=USER), 403, "forbidden")
    assert gql(manager, q, {"a": USER["access_key"]})["compute_session_list"]["total_count"] >= 0
    other = uniq("dom")
    gql(manager, "mutation($n: String!) { create_domain(name: $n, props: {}) { ok } }", {"n": other})
    outsider = new_user(manager, domain=other)
    admin = new_user(manager, role="admin")
    # An access-key filter only narrows the admin's own domain: nothing from the other domain shows up.
    assert gql(manager, q, {"a": outsider["access_key"]}, who=admin)["compute_session_list"]["total_count"] == 0
    r = manager.request("GET", f"/session/whatever?owner_access_key={outsider['access_key']}", who=admin)
    assert_problem(r, 403, "forbidden")


# --- operator CLI --------------------------------------------------------------------------------


def _mgr(manager: Cluster, *args: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [sys.executable, "-m", "ai.backend.manager.cli", "-f", str(manager.state / "manager.toml"), *args],
        capture_output=True,
        text=True,
        timeout=120,
    )


def test_mgr_cli_adds_users_and_keypairs(manager: Cluster) -> None:
    email = f"{uniq('ops')}@example.org"
    out = _mgr(manager, "user", "add", email, "-p", "operator-pass", "-r", "admin", "-g", "default")
    assert out.returncode == 0, out.stderr
    ak = out.stdout.split("Access key: ")[1].split()[0]
    sk = out.stdout.split("Secret key: ")[1].split()[0]
    who = {"access_key": ak, "secret_key": sk}
    me = gql(manager, "{ user { email role groups { name } } }", who=who)["user"]
    assert me == {"email": email, "role": "admin", "groups": [{"name": "default"}]}
    dup = _mgr(manager, "user", "add", email, "-p", "operator-pass")
    assert dup.returncode != 0 and "already exists" in dup.stderr and "Traceback" not in dup.stderr
    short = _mgr(manager, "user", "add", f"x{email}", "-p", "short")
    assert short.returncode != 0 and "at least 8" in short.stderr
    more = _mgr(manager, "keypair", "add", email, "--rate-limit", "7")
    assert more.returncode == 0, more.stderr
    ak2 = more.stdout.split("Access key: ")[1].split()[0]
    listed = _mgr(manager, "keypair", "list", "-e", email)
    assert ak in listed.stdout and ak2 in listed.stdout and sk not in listed.stdout
    off = _mgr(manager, "keypair", "set-active", ak, "false")
    assert off.returncode == 0
    assert_problem(manager.request("GET", "/auth/test", who=who), 401, "unauthorized")
    missing = _mgr(manager, "keypair", "add", "ghost@example.org")
    assert missing.returncode != 0 and "No such user" in missing.stderr


def test_refusals_are_not_logged_as_errors(manager: Cluster) -> None:
    """Bad input is the caller's problem: it is answered, not written to the log as a server error."""
    assert_problem(gql_raw(manager, "{ domains { name } }", who=USER), 403, "forbidden")
    assert_problem(gql_raw(manager, 'mutation { delete_domain(name: "no-such") { ok } }'), 404, "not-found")
    assert_problem(gql_raw(manager, "{ nosuchfield }"), 400, "graphql-error")
    log = (manager.state / "manager.log").read_text()
    assert "Traceback" not in log and "ERROR" not in log, log[-2000:]


def test_moving_a_user_to_another_domain_drops_old_memberships(manager: Cluster) -> None:
    other = uniq("dom")
    gql(manager, "mutation($n: String!) { create_domain(name: $n, props: {}) { ok } }", {"n": other})
    g = gql(
        manager,
        "mutation($n: String!, $d: String!) { create_group(name: $n, props: {domain_name: $d}) { group { id } } }",
        {"n": uniq("g"), "d": other},
    )["create_group"]["group"]["id"]
    u = new_user(manager, domain=other, groups=[g])
    assert [x["id"] for x in u["user"]["groups"]] == [g]
    q = (
        'mutation($e: String!) { modify_user(email: $e, props: {domain_name: "default"}) { user { domain_name '
        "groups { id } } } }"
    )
    moved = gql(manager, q, {"e": u["email"]})["modify_user"]["user"]
    assert moved == {"domain_name": "default", "groups": []}
