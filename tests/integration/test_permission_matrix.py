"""The permission matrix of the admin GraphQL API: each role × each query and mutation → allow or deny.

Runs against a manager-only server (no agent) on SQLite and on PostgreSQL (the ``manager`` fixture).
The set-up, done once per database through the API as the superadmin, adds a second domain with a
group and these callers next to the fixture's superadmin and user:

* ``admin``: a domain admin of ``default`` (role admin, main keypair with is_admin = true);
* ``monitor``: a monitor of ``default``;
* ``admin_plainkey``: the same domain admin calling with a keypair whose is_admin is false, which
  makes it act as a plain user;
* targets that are nobody's own: ``peer`` (a plain user of ``default``), ``ouser`` and ``oadmin``
  (a plain user and an admin of the other domain).

A denial is HTTP 403 with a problem+json body whose ``type`` ends in ``/forbidden``, and a denied
mutation changes nothing (checked by reading as the superadmin afterwards); an allowed query is
HTTP 200 with the scoping its role implies, and an allowed mutation answers ``ok: true`` and did
what it says. Every operation builds its own uniquely-named targets, so the cases do not depend on
one another.
"""

from __future__ import annotations

import itertools
import json
import secrets
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

import httpx
import pytest

from ai.backend.manager.fixtures import ADMIN, DEFAULT_GROUP_ID, USER

ALLOW, DENY = "allow", "deny"
S, A, M, U = "superadmin", "admin", "monitor", "user"
AP = "admin_plainkey"  # the domain admin with a non-admin keypair: acts as a plain user
ALL = (S, A, M, U)
DEFAULT = "default"
DEFAULT_GID = str(DEFAULT_GROUP_ID)
PASSWORD = "matrix-pass-123"

Who = dict[str, Any]


# --- the world the cases run in ----------------------------------------------------------------------


@dataclass
class World:
    manager: Any
    tok: str
    other: str  # the second domain
    other_group: str  # id of the group "default" of the other domain
    team_group: str  # id of a group of "default" that USER is not a member of
    who: dict[str, Who]  # role -> credentials (email, uuid, access_key, secret_key)
    peer: Who
    ouser: Who
    oadmin: Who
    preset: str
    spare_policy: str  # a keypair resource policy that no caller's keypair uses
    images: list[str]
    seq: itertools.count = field(default_factory=itertools.count)

    def gql(self, query: str, variables: dict[str, Any] | None = None, who: Who = ADMIN) -> httpx.Response:
        body: dict[str, Any] = {"query": query}
        if variables:
            body["variables"] = variables
        r: httpx.Response = self.manager.request("POST", "/admin/graphql", body, who=who)
        return r

    def sa(self, query: str, variables: dict[str, Any] | None = None) -> Any:
        """Run ``query`` as the superadmin; it must succeed. Returns the data object."""
        r = self.gql(query, variables)
        assert r.status_code == 200, f"superadmin query failed: {_explain(r)}\n{query}"
        return r.json()

    def uniq(self, kind: str) -> str:
        return f"{kind}-{self.tok}-{next(self.seq)}"

    # building targets (as the superadmin) and reading state back

    def make_user(self, domain: str = DEFAULT, role: str = "user", groups: list[str] | None = None) -> Who:
        email = f"{self.uniq(role[:3])}@ex.com"
        props: dict[str, Any] = {"password": PASSWORD, "domain_name": domain, "role": role, "group_ids": groups or []}
        d = self.sa(
            "mutation($e: String!, $p: UserInput!) { create_user(email: $e, props: $p) { ok msg user { uuid } } }",
            {"e": email, "p": props},
        )
        assert d["create_user"]["ok"] is True, d
        kps = self.keypairs_of(email)
        assert len(kps) == 1, kps
        return {
            "email": email,
            "uuid": d["create_user"]["user"]["uuid"],
            "access_key": kps[0]["access_key"],
            "secret_key": kps[0]["secret_key"],
            "is_admin": kps[0]["is_admin"],
            "role": role,
        }

    def keypairs_of(self, email: str) -> list[dict[str, Any]]:
        d = self.sa(
            "query($e: String) { keypairs(email: $e) { access_key secret_key is_admin is_main } }", {"e": email}
        )
        return list(d["keypairs"])

    def add_keypair(self, email: str, is_admin: bool = False) -> Who:
        d = self.sa(
            "mutation($u: String!, $a: Boolean) { create_keypair(user_id: $u, props: {is_admin: $a}) "
            "{ ok msg keypair { access_key secret_key } } }",
            {"u": email, "a": is_admin},
        )
        assert d["create_keypair"]["ok"] is True, d
        return dict(d["create_keypair"]["keypair"])

    def make_domain(self) -> str:
        name = self.uniq("dom")
        d = self.sa(
            'mutation($n: String!) { create_domain(name: $n, props: {description: "before"}) { ok } }', {"n": name}
        )
        assert d["create_domain"]["ok"] is True, d
        return name

    def domain(self, name: str) -> dict[str, Any] | None:
        d = self.sa("query($n: String) { domain(name: $n) { name description is_active } }", {"n": name})
        return d["domain"]  # type: ignore[no-any-return]

    def make_group(self, domain: str = DEFAULT, name: str | None = None) -> str:
        d = self.sa(
            "mutation($n: String!, $d: String!) { create_group(name: $n, props: {domain_name: $d, "
            'description: "before"}) { ok group { id } } }',
            {"n": name or self.uniq("grp"), "d": domain},
        )
        assert d["create_group"]["ok"] is True, d
        return str(d["create_group"]["group"]["id"])

    def group(self, gid: str) -> dict[str, Any] | None:
        d = self.sa("query($g: UUID!) { group(id: $g) { id name domain_name description is_active } }", {"g": gid})
        return d["group"]  # type: ignore[no-any-return]

    def groups_named(self, name: str, domain: str) -> list[dict[str, Any]]:
        d = self.sa(
            "query($n: String!, $d: String) { groups_by_name(name: $n, domain_name: $d) { id } }",
            {"n": name, "d": domain},
        )
        return list(d["groups_by_name"])

    def user(self, email: str) -> dict[str, Any] | None:
        d = self.sa(
            "query($e: String) { user(email: $e) { email full_name status domain_name role groups { id } } }",
            {"e": email},
        )
        return d["user"]  # type: ignore[no-any-return]

    def keypair(self, access_key: str) -> dict[str, Any] | None:
        d = self.sa(
            "query($a: String) { keypair(access_key: $a) { access_key rate_limit is_active } }", {"a": access_key}
        )
        return d["keypair"]  # type: ignore[no-any-return]

    def make_policy(self) -> str:
        name = self.uniq("pol")
        d = self.sa(
            "mutation($n: String!, $p: CreateKeyPairResourcePolicyInput!) { "
            "create_keypair_resource_policy(name: $n, props: $p) { ok } }",
            {"n": name, "p": POLICY_PROPS},
        )
        assert d["create_keypair_resource_policy"]["ok"] is True, d
        return name

    def policy(self, name: str) -> dict[str, Any] | None:
        d = self.sa(
            "query($n: String) { keypair_resource_policy(name: $n) { name max_concurrent_sessions } }", {"n": name}
        )
        return d["keypair_resource_policy"]  # type: ignore[no-any-return]

    def make_preset(self) -> str:
        name = self.uniq("preset")
        d = self.sa(
            "mutation($n: String!, $s: JSONString!) { create_resource_preset(name: $n, "
            "props: {resource_slots: $s}) { ok } }",
            {"n": name, "s": json.dumps(PRESET_SLOTS)},
        )
        assert d["create_resource_preset"]["ok"] is True, d
        return name

    def preset_slots(self, name: str) -> dict[str, Any] | None:
        d = self.sa("query($n: String!) { resource_preset(name: $n) { name resource_slots } }", {"n": name})
        p = d["resource_preset"]
        return None if p is None else dict(json.loads(p["resource_slots"]))

    def make_sgroup(self) -> str:
        name = self.uniq("sg")
        d = self.sa(
            'mutation($n: String!) { create_scaling_group(name: $n, props: {driver: "static", '
            'scheduler: "fifo", description: "before"}) { ok } }',
            {"n": name},
        )
        assert d["create_scaling_group"]["ok"] is True, d
        return name

    def sgroup(self, name: str) -> dict[str, Any] | None:
        d = self.sa("query($n: String) { scaling_group(name: $n) { name description } }", {"n": name})
        return d["scaling_group"]  # type: ignore[no-any-return]

    def sgroups_of_default(self) -> set[str]:
        d = self.sa('{ scaling_groups_for_domain(domain: "default") { name } }')
        return {g["name"] for g in d["scaling_groups_for_domain"]}

    def associate(self, sgroup: str) -> None:
        d = self.sa(
            'mutation($s: String!) { associate_scaling_group_with_domain(domain: "default", '
            "scaling_group: $s) { ok } }",
            {"s": sgroup},
        )
        assert d["associate_scaling_group_with_domain"]["ok"] is True, d

    def image(self, reference: str) -> dict[str, Any] | None:
        d = self.sa("query($r: String!) { image(reference: $r) { reference aliases } }", {"r": reference})
        return d["image"]  # type: ignore[no-any-return]


POLICY_PROPS: dict[str, Any] = {
    "default_for_unspecified": "LIMITED",
    "total_resource_slots": "{}",
    "max_concurrent_sessions": 3,
    "max_containers_per_session": 1,
    "idle_timeout": 0,
    "max_vfolder_count": 0,
    "max_vfolder_size": 0,
}
PRESET_SLOTS = {"cpu": "1", "mem": "1g"}


def _explain(r: httpx.Response) -> str:
    return f"HTTP {r.status_code} {r.headers.get('content-type')}: {r.text[:800]}"


@pytest.fixture(scope="module")
def world(manager: Any) -> World:
    """The second domain, its group and the callers, created through the API as the superadmin."""
    tok = secrets.token_hex(3)
    w = World(
        manager=manager,
        tok=tok,
        other="",
        other_group="",
        team_group="",
        who={},
        peer={},
        ouser={},
        oadmin={},
        preset="",
        spare_policy="",
        images=[],
    )
    w.other = f"other-{tok}"
    d = w.sa(
        'mutation($n: String!) { create_domain(name: $n, props: {description: "the other domain"}) { ok } }',
        {"n": w.other},
    )
    assert d["create_domain"]["ok"] is True, d
    # Named like the default domain's group, so that groups_by_name(name: "default") shows the scoping.
    w.other_group = w.make_group(w.other, name=DEFAULT)
    w.team_group = w.make_group(DEFAULT)
    dadmin = w.make_user(DEFAULT, "admin", [DEFAULT_GID])
    monitor = w.make_user(DEFAULT, "monitor", [DEFAULT_GID])
    w.peer = w.make_user(DEFAULT, "user", [DEFAULT_GID])
    w.ouser = w.make_user(w.other, "user", [w.other_group])
    w.oadmin = w.make_user(w.other, "admin", [w.other_group])
    assert dadmin["is_admin"] is True and monitor["is_admin"] is False and w.peer["is_admin"] is False
    plain = w.add_keypair(dadmin["email"], is_admin=False)
    fixture_users = {}
    for spec in (ADMIN, USER):
        found = w.user(spec["email"])
        assert found is not None
        uid = w.sa("query($e: String) { user(email: $e) { uuid } }", {"e": spec["email"]})["user"]["uuid"]
        fixture_users[spec["role"]] = {**spec, "uuid": uid}
    w.who = {
        S: fixture_users["superadmin"],
        A: dadmin,
        M: monitor,
        U: fixture_users["user"],
        AP: {**dadmin, "access_key": plain["access_key"], "secret_key": plain["secret_key"], "is_admin": False},
    }
    w.preset = w.make_preset()
    w.spare_policy = w.make_policy()
    w.images = [i["reference"] for i in w.sa("{ images { reference } }")["images"]]
    return w


# --- operations --------------------------------------------------------------------------------------


def _nothing(*_: Any) -> None:
    return None


@dataclass
class Case:
    query: str
    field: str  # the top-level field of the response to look at
    variables: dict[str, Any] = field(default_factory=dict)
    allowed: Callable[[Any], None] = _nothing  # checks the field's value of an allowed call
    denied: Callable[[], None] = _nothing  # checks (as the superadmin) that a denied call changed nothing

    @property
    def is_mutation(self) -> bool:
        return self.query.lstrip().startswith("mutation")


Builder = Callable[[World, str], Case]
OPS: dict[str, Builder] = {}


def op(name: str) -> Callable[[Builder], Builder]:
    def register(fn: Builder) -> Builder:
        OPS[name] = fn
        return fn

    return register


def _ids(items: list[dict[str, Any]]) -> set[str]:
    return {str(i["id"]) for i in items}


# queries: domains


@op("domain-own")
def _domain_own(w: World, role: str) -> Case:
    def check(v: Any) -> None:
        assert v["name"] == DEFAULT

    return Case("{ domain { name } }", "domain", allowed=check)


@op("domain-other")
def _domain_other(w: World, role: str) -> Case:
    def check(v: Any) -> None:
        assert v is not None and v["name"] == w.other

    return Case("query($n: String) { domain(name: $n) { name } }", "domain", {"n": w.other}, check)


@op("domains")
def _domains(w: World, role: str) -> Case:
    def check(v: Any) -> None:
        assert {DEFAULT, w.other} <= {d["name"] for d in v}

    return Case("{ domains { name } }", "domains", allowed=check)


# queries: groups


def _user_groups(w: World, role: str) -> set[str]:
    found = w.user(w.who[role]["email"])
    assert found is not None
    return _ids(found["groups"])


@op("groups")
def _groups(w: World, role: str) -> Case:
    def check(v: Any) -> None:
        ids = _ids(v)
        if role in (S, M):
            assert {DEFAULT_GID, w.team_group, w.other_group} <= ids
        elif role == A:
            assert {DEFAULT_GID, w.team_group} <= ids
            assert all(g["domain_name"] == DEFAULT for g in v), v  # nothing of the other domain
        else:  # only the groups the caller belongs to
            assert DEFAULT_GID in ids
            assert ids <= _user_groups(w, role), v
            assert w.team_group not in ids and w.other_group not in ids

    return Case("{ groups { id domain_name } }", "groups", allowed=check)


@op("groups-other-domain")
def _groups_other_domain(w: World, role: str) -> Case:
    def check(v: Any) -> None:
        assert w.other_group in _ids(v)
        assert all(g["domain_name"] == w.other for g in v), v

    return Case("query($d: String) { groups(domain_name: $d) { id domain_name } }", "groups", {"d": w.other}, check)


@op("groups_by_name")
def _groups_by_name(w: World, role: str) -> Case:
    # Both domains have a group named "default".
    def check(v: Any) -> None:
        ids = _ids(v)
        if role in (S, M):
            assert {DEFAULT_GID, w.other_group} <= ids
        else:
            assert ids == {DEFAULT_GID}, v

    return Case('{ groups_by_name(name: "default") { id domain_name } }', "groups_by_name", allowed=check)


@op("group-other-domain")
def _group_other(w: World, role: str) -> Case:
    def check(v: Any) -> None:
        assert v is not None and v["id"] == w.other_group and v["domain_name"] == w.other

    return Case("query($g: UUID!) { group(id: $g) { id domain_name } }", "group", {"g": w.other_group}, check)


@op("group-default")
def _group_default(w: World, role: str) -> Case:
    def check(v: Any) -> None:
        assert v is not None and v["id"] == DEFAULT_GID

    return Case("query($g: UUID!) { group(id: $g) { id domain_name } }", "group", {"g": DEFAULT_GID}, check)


# queries: users


def _email_is(email: str) -> Callable[[Any], None]:
    def check(v: Any) -> None:
        assert v is not None and v["email"] == email, v

    return check


@op("user-self")
def _user_self(w: World, role: str) -> Case:
    return Case("{ user { email } }", "user", allowed=_email_is(w.who[role]["email"]))


@op("user-same-domain")
def _user_same(w: World, role: str) -> Case:
    return Case(
        "query($e: String) { user(email: $e) { email } }", "user", {"e": w.peer["email"]}, _email_is(w.peer["email"])
    )


@op("user-other-domain")
def _user_other(w: World, role: str) -> Case:
    return Case(
        "query($e: String) { user(email: $e) { email } }", "user", {"e": w.ouser["email"]}, _email_is(w.ouser["email"])
    )


@op("user_from_uuid-self")
def _user_uuid_self(w: World, role: str) -> Case:
    return Case("{ user_from_uuid { email } }", "user_from_uuid", allowed=_email_is(w.who[role]["email"]))


@op("user_from_uuid-same-domain")
def _user_uuid_same(w: World, role: str) -> Case:
    return Case(
        "query($u: String) { user_from_uuid(user_id: $u) { email } }",
        "user_from_uuid",
        {"u": w.peer["uuid"]},
        _email_is(w.peer["email"]),
    )


@op("user_from_uuid-other-domain")
def _user_uuid_other(w: World, role: str) -> Case:
    return Case(
        "query($u: String) { user_from_uuid(user_id: $u) { email } }",
        "user_from_uuid",
        {"u": w.ouser["uuid"]},
        _email_is(w.ouser["email"]),
    )


def _all_user_emails(w: World, domain: str | None) -> set[str]:
    d = w.sa("query($d: String) { users(domain_name: $d) { email } }", {"d": domain})
    return {u["email"] for u in d["users"]}


@op("users")
def _users(w: World, role: str) -> Case:
    def check(v: Any) -> None:
        emails = {u["email"] for u in v}
        if role == A:
            assert all(u["domain_name"] == DEFAULT for u in v), v
            assert emails == _all_user_emails(w, DEFAULT)
            assert w.peer["email"] in emails and w.ouser["email"] not in emails
        else:
            assert emails == _all_user_emails(w, None)
            assert {w.peer["email"], w.ouser["email"], w.oadmin["email"]} <= emails

    return Case("{ users { email domain_name } }", "users", allowed=check)


@op("user_list")
def _user_list(w: World, role: str) -> Case:
    def check(v: Any) -> None:
        if role == A:
            assert all(u["domain_name"] == DEFAULT for u in v["items"]), v
            assert v["total_count"] == len(_all_user_emails(w, DEFAULT))
        else:
            assert v["total_count"] == len(_all_user_emails(w, None))
        assert len(v["items"]) == min(10, v["total_count"])

    return Case(
        "{ user_list(limit: 10, offset: 0) { items { email domain_name } total_count } }", "user_list", allowed=check
    )


# queries: keypairs


@op("keypair-self")
def _keypair_self(w: World, role: str) -> Case:
    me = w.who[role]

    def check(v: Any) -> None:
        assert v["access_key"] == me["access_key"] and v["secret_key"] == me["secret_key"], v

    return Case("{ keypair { access_key secret_key } }", "keypair", allowed=check)


def _keypair_of(w: World, role: str, owner: Who) -> Case:
    def check(v: Any) -> None:
        assert v is not None and v["access_key"] == owner["access_key"], v
        # Another user's secret key: visible to superadmins only.
        assert v["secret_key"] == (owner["secret_key"] if role == S else None), v

    return Case(
        "query($a: String) { keypair(access_key: $a) { access_key secret_key } }",
        "keypair",
        {"a": owner["access_key"]},
        check,
    )


@op("keypair-same-domain")
def _keypair_same(w: World, role: str) -> Case:
    return _keypair_of(w, role, w.peer)


@op("keypair-other-domain")
def _keypair_other(w: World, role: str) -> Case:
    return _keypair_of(w, role, w.ouser)


def _all_keys(w: World, domain: str | None = None, email: str | None = None) -> set[str]:
    d = w.sa(
        "query($d: String, $e: String) { keypairs(domain_name: $d, email: $e) { access_key } }",
        {"d": domain, "e": email},
    )
    return {k["access_key"] for k in d["keypairs"]}


def _check_keypairs(w: World, role: str, items: list[dict[str, Any]], total: int | None = None) -> None:
    me = w.who[role]
    keys = {k["access_key"] for k in items}
    if role == U:
        expected = _all_keys(w, email=me["email"])
        assert me["access_key"] in keys
        assert all(k["user_id"] == me["email"] for k in items), items
    elif role == A:
        expected = _all_keys(w, domain=DEFAULT)
        assert all(k["domain_name"] == DEFAULT for k in items), items
        assert w.ouser["access_key"] not in keys
    else:
        expected = _all_keys(w)
    if total is None:
        assert keys == expected
    else:
        assert total == len(expected) and keys <= expected
    for k in items:  # secrets: one's own, or everyone's for superadmins
        if k["user_id"] != me["email"]:
            assert (k["secret_key"] is not None) == (role == S), k


@op("keypairs")
def _keypairs(w: World, role: str) -> Case:
    def check(v: Any) -> None:
        _check_keypairs(w, role, v)

    return Case("{ keypairs { access_key user_id domain_name secret_key } }", "keypairs", allowed=check)


@op("keypair_list")
def _keypair_list(w: World, role: str) -> Case:
    def check(v: Any) -> None:
        _check_keypairs(w, role, v["items"], v["total_count"])

    return Case(
        "{ keypair_list(limit: 10, offset: 0) { items { access_key user_id domain_name secret_key } total_count } }",
        "keypair_list",
        allowed=check,
    )


@op("keypairs-of-other-user")
def _keypairs_other_user(w: World, role: str) -> Case:
    def check(v: Any) -> None:
        assert {k["access_key"] for k in v} == _all_keys(w, email=w.peer["email"])
        assert all(k["user_id"] == w.peer["email"] for k in v), v

    return Case(
        "query($e: String) { keypairs(email: $e) { access_key user_id } }", "keypairs", {"e": w.peer["email"]}, check
    )


# queries: policies, presets


@op("keypair_resource_policy")
def _policy(w: World, role: str) -> Case:
    def check(v: Any) -> None:
        assert v is not None and v["name"] == DEFAULT

    return Case("{ keypair_resource_policy { name } }", "keypair_resource_policy", allowed=check)


@op("keypair_resource_policy-by-name")
def _policy_by_name(w: World, role: str) -> Case:
    def check(v: Any) -> None:
        assert v is not None and v["name"] == w.spare_policy

    return Case(
        "query($n: String) { keypair_resource_policy(name: $n) { name } }",
        "keypair_resource_policy",
        {"n": w.spare_policy},
        check,
    )


@op("keypair_resource_policies")
def _policies(w: World, role: str) -> Case:
    def check(v: Any) -> None:
        names = {p["name"] for p in v}
        if role == U:  # the policies of its own keypairs only
            assert names == {DEFAULT}, v
        else:
            assert {DEFAULT, w.spare_policy} <= names

    return Case("{ keypair_resource_policies { name } }", "keypair_resource_policies", allowed=check)


@op("resource_preset")
def _preset(w: World, role: str) -> Case:
    def check(v: Any) -> None:
        assert v is not None and v["name"] == w.preset

    return Case(
        "query($n: String!) { resource_preset(name: $n) { name resource_slots } }",
        "resource_preset",
        {"n": w.preset},
        check,
    )


@op("resource_presets")
def _presets(w: World, role: str) -> Case:
    def check(v: Any) -> None:
        assert w.preset in {p["name"] for p in v}

    return Case("{ resource_presets { name } }", "resource_presets", allowed=check)


# queries: scaling groups, agents, images


@op("scaling_group")
def _sgroup(w: World, role: str) -> Case:
    def check(v: Any) -> None:
        assert v is not None and v["name"] == DEFAULT

    return Case('{ scaling_group(name: "default") { name } }', "scaling_group", allowed=check)


def _names_include(*names: str) -> Callable[[Any], None]:
    def check(v: Any) -> None:
        assert set(names) <= {g["name"] for g in v}, v

    return check


@op("scaling_groups")
def _sgroups(w: World, role: str) -> Case:
    return Case("{ scaling_groups { name } }", "scaling_groups", allowed=_names_include(DEFAULT))


@op("scaling_groups_for_domain")
def _sgroups_domain(w: World, role: str) -> Case:
    return Case(
        '{ scaling_groups_for_domain(domain: "default") { name } }',
        "scaling_groups_for_domain",
        allowed=_names_include(DEFAULT),
    )


@op("scaling_groups_for_user_group")
def _sgroups_group(w: World, role: str) -> Case:
    return Case(
        "query($g: String!) { scaling_groups_for_user_group(user_group: $g) { name } }",
        "scaling_groups_for_user_group",
        {"g": DEFAULT_GID},
        _names_include(),
    )


@op("scaling_groups_for_keypair")
def _sgroups_keypair(w: World, role: str) -> Case:
    return Case(
        "query($a: String!) { scaling_groups_for_keypair(access_key: $a) { name } }",
        "scaling_groups_for_keypair",
        {"a": USER["access_key"]},
        _names_include(),
    )


@op("agent")
def _agent(w: World, role: str) -> Case:
    def check(v: Any) -> None:
        assert v is None  # no agent on a manager-only server

    return Case('{ agent(agent_id: "i-nonexistent") { id } }', "agent", allowed=check)


@op("agent_list")
def _agent_list(w: World, role: str) -> Case:
    def check(v: Any) -> None:
        assert isinstance(v["total_count"], int) and len(v["items"]) == min(10, v["total_count"])

    return Case("{ agent_list(limit: 10, offset: 0) { items { id } total_count } }", "agent_list", allowed=check)


@op("agents")
def _agents(w: World, role: str) -> Case:
    def check(v: Any) -> None:
        assert isinstance(v, list)

    return Case("{ agents { id } }", "agents", allowed=check)


@op("image")
def _image(w: World, role: str) -> Case:
    # A manager-only server may know no image at all; then the answer is null, still an allow.
    def check(v: Any) -> None:
        assert v is None or v["reference"], v

    return Case('{ image(reference: "python") { reference } }', "image", allowed=check)


@op("images")
def _images(w: World, role: str) -> Case:
    def check(v: Any) -> None:
        assert {i["reference"] for i in v} == set(w.images)

    return Case("{ images { reference } }", "images", allowed=check)


# queries: compute sessions

_SESSIONS = "{ items { id access_key domain_name } total_count }"


@op("compute_session_list")
def _sessions(w: World, role: str) -> Case:
    def check(v: Any) -> None:
        assert isinstance(v["total_count"], int)
        if role == U:
            assert all(s["access_key"] == w.who[U]["access_key"] for s in v["items"]), v
        elif role == A:
            assert all(s["domain_name"] == DEFAULT for s in v["items"]), v

    return Case(
        "{ compute_session_list(limit: 10, offset: 0) " + _SESSIONS + " }", "compute_session_list", allowed=check
    )


@op("compute_session_list-peer-key")
def _sessions_peer(w: World, role: str) -> Case:
    def check(v: Any) -> None:
        assert all(s["access_key"] == w.peer["access_key"] for s in v["items"]), v

    return Case(
        "query($a: String) { compute_session_list(limit: 10, offset: 0, access_key: $a) " + _SESSIONS + " }",
        "compute_session_list",
        {"a": w.peer["access_key"]},
        check,
    )


@op("compute_session_list-other-domain")
def _sessions_other(w: World, role: str) -> Case:
    def check(v: Any) -> None:
        assert all(s["domain_name"] == w.other for s in v["items"]), v

    return Case(
        "query($d: String) { compute_session_list(limit: 10, offset: 0, domain_name: $d) " + _SESSIONS + " }",
        "compute_session_list",
        {"d": w.other},
        check,
    )


# mutations: domains


@op("create_domain")
def _create_domain(w: World, role: str) -> Case:
    name = w.uniq("dom")

    def allowed(v: Any) -> None:
        assert w.domain(name) is not None

    def denied() -> None:
        assert w.domain(name) is None

    return Case(
        'mutation($n: String!) { create_domain(name: $n, props: {description: "new"}) { ok msg } }',
        "create_domain",
        {"n": name},
        allowed,
        denied,
    )


@op("modify_domain")
def _modify_domain(w: World, role: str) -> Case:
    name = w.make_domain()

    def description_is(expected: str) -> None:
        found = w.domain(name)
        assert found is not None and found["description"] == expected, found

    return Case(
        'mutation($n: String!) { modify_domain(name: $n, props: {description: "after"}) { ok msg } }',
        "modify_domain",
        {"n": name},
        lambda v: description_is("after"),
        lambda: description_is("before"),
    )


@op("delete_domain")
def _delete_domain(w: World, role: str) -> Case:
    name = w.make_domain()

    def active_is(expected: bool) -> None:
        found = w.domain(name)
        assert found is not None and found["is_active"] is expected, found

    return Case(
        "mutation($n: String!) { delete_domain(name: $n) { ok msg } }",
        "delete_domain",
        {"n": name},
        lambda v: active_is(False),
        lambda: active_is(True),
    )


# mutations: groups


def _create_group(w: World, domain: str) -> Case:
    name = w.uniq("grp")

    def count_is(n: int) -> None:
        assert len(w.groups_named(name, domain)) == n

    return Case(
        "mutation($n: String!, $d: String!) { create_group(name: $n, props: {domain_name: $d}) "
        "{ ok msg group { id domain_name } } }",
        "create_group",
        {"n": name, "d": domain},
        lambda v: count_is(1),
        lambda: count_is(0),
    )


@op("create_group-default")
def _create_group_default(w: World, role: str) -> Case:
    return _create_group(w, DEFAULT)


@op("create_group-other-domain")
def _create_group_other(w: World, role: str) -> Case:
    return _create_group(w, w.other)


def _modify_group(w: World, domain: str) -> Case:
    gid = w.make_group(domain)

    def description_is(expected: str) -> None:
        found = w.group(gid)
        assert found is not None and found["description"] == expected, found

    return Case(
        'mutation($g: UUID) { modify_group(gid: $g, props: {description: "after"}) { ok msg } }',
        "modify_group",
        {"g": gid},
        lambda v: description_is("after"),
        lambda: description_is("before"),
    )


def _delete_group(w: World, domain: str) -> Case:
    gid = w.make_group(domain)

    def active_is(expected: bool) -> None:
        found = w.group(gid)
        assert found is not None and found["is_active"] is expected, found

    return Case(
        "mutation($g: UUID) { delete_group(gid: $g) { ok msg } }",
        "delete_group",
        {"g": gid},
        lambda v: active_is(False),
        lambda: active_is(True),
    )


@op("modify_group-default")
def _modify_group_default(w: World, role: str) -> Case:
    return _modify_group(w, DEFAULT)


@op("modify_group-other-domain")
def _modify_group_other(w: World, role: str) -> Case:
    return _modify_group(w, w.other)


@op("delete_group-default")
def _delete_group_default(w: World, role: str) -> Case:
    return _delete_group(w, DEFAULT)


@op("delete_group-other-domain")
def _delete_group_other(w: World, role: str) -> Case:
    return _delete_group(w, w.other)


# mutations: users


@op("create_user")
def _create_user(w: World, role: str) -> Case:
    email = f"{w.uniq('new')}@ex.com"

    def exists(expected: bool) -> None:
        assert (w.user(email) is not None) is expected

    return Case(
        "mutation($e: String!, $p: UserInput!) { create_user(email: $e, props: $p) { ok msg } }",
        "create_user",
        {"e": email, "p": {"password": PASSWORD, "domain_name": DEFAULT}},
        lambda v: exists(True),
        lambda: exists(False),
    )


@op("modify_user")
def _modify_user(w: World, role: str) -> Case:
    target = w.make_user()

    def full_name_is(expected: str | None) -> None:
        found = w.user(target["email"])
        assert found is not None and found["full_name"] == expected, found

    return Case(
        'mutation($e: String!) { modify_user(email: $e, props: {full_name: "Changed"}) { ok msg } }',
        "modify_user",
        {"e": target["email"]},
        lambda v: full_name_is("Changed"),
        lambda: full_name_is(None),
    )


@op("delete_user")
def _delete_user(w: World, role: str) -> Case:
    target = w.make_user()

    def status_is(expected: str) -> None:
        found = w.user(target["email"])
        assert found is not None and found["status"] == expected, found

    return Case(
        "mutation($e: String!) { delete_user(email: $e) { ok msg } }",
        "delete_user",
        {"e": target["email"]},
        lambda v: status_is("deleted"),
        lambda: status_is("active"),
    )


# mutations: keypairs


@op("create_keypair")
def _create_keypair(w: World, role: str) -> Case:
    target = w.make_user()

    def count_is(n: int) -> None:
        assert len(w.keypairs_of(target["email"])) == n

    return Case(
        "mutation($u: String!) { create_keypair(user_id: $u, props: {is_admin: false}) { ok msg } }",
        "create_keypair",
        {"u": target["email"]},
        lambda v: count_is(2),
        lambda: count_is(1),
    )


@op("modify_keypair")
def _modify_keypair(w: World, role: str) -> Case:
    target = w.make_user()
    before = w.keypair(target["access_key"])
    assert before is not None and before["rate_limit"] != 1234

    def rate_limit_is(expected: int) -> None:
        found = w.keypair(target["access_key"])
        assert found is not None and found["rate_limit"] == expected, found

    return Case(
        "mutation($a: String!) { modify_keypair(access_key: $a, props: {rate_limit: 1234}) { ok msg } }",
        "modify_keypair",
        {"a": target["access_key"]},
        lambda v: rate_limit_is(1234),
        lambda: rate_limit_is(before["rate_limit"]),
    )


@op("delete_keypair")
def _delete_keypair(w: World, role: str) -> Case:
    extra = w.add_keypair(w.make_user()["email"])

    def exists(expected: bool) -> None:
        assert (w.keypair(extra["access_key"]) is not None) is expected

    return Case(
        "mutation($a: String!) { delete_keypair(access_key: $a) { ok msg } }",
        "delete_keypair",
        {"a": extra["access_key"]},
        lambda v: exists(False),
        lambda: exists(True),
    )


# mutations: keypair resource policies


@op("create_keypair_resource_policy")
def _create_policy(w: World, role: str) -> Case:
    name = w.uniq("pol")

    def exists(expected: bool) -> None:
        assert (w.policy(name) is not None) is expected

    return Case(
        "mutation($n: String!, $p: CreateKeyPairResourcePolicyInput!) { "
        "create_keypair_resource_policy(name: $n, props: $p) { ok msg } }",
        "create_keypair_resource_policy",
        {"n": name, "p": POLICY_PROPS},
        lambda v: exists(True),
        lambda: exists(False),
    )


@op("modify_keypair_resource_policy")
def _modify_policy(w: World, role: str) -> Case:
    name = w.make_policy()

    def limit_is(expected: int) -> None:
        found = w.policy(name)
        assert found is not None and found["max_concurrent_sessions"] == expected, found

    return Case(
        "mutation($n: String!) { modify_keypair_resource_policy(name: $n, "
        "props: {max_concurrent_sessions: 7}) { ok msg } }",
        "modify_keypair_resource_policy",
        {"n": name},
        lambda v: limit_is(7),
        lambda: limit_is(POLICY_PROPS["max_concurrent_sessions"]),
    )


@op("delete_keypair_resource_policy")
def _delete_policy(w: World, role: str) -> Case:
    name = w.make_policy()

    def exists(expected: bool) -> None:
        assert (w.policy(name) is not None) is expected

    return Case(
        "mutation($n: String!) { delete_keypair_resource_policy(name: $n) { ok msg } }",
        "delete_keypair_resource_policy",
        {"n": name},
        lambda v: exists(False),
        lambda: exists(True),
    )


# mutations: resource presets


@op("create_resource_preset")
def _create_preset(w: World, role: str) -> Case:
    name = w.uniq("preset")

    def exists(expected: bool) -> None:
        assert (w.preset_slots(name) is not None) is expected

    return Case(
        "mutation($n: String!, $s: JSONString!) { create_resource_preset(name: $n, "
        "props: {resource_slots: $s}) { ok msg } }",
        "create_resource_preset",
        {"n": name, "s": json.dumps(PRESET_SLOTS)},
        lambda v: exists(True),
        lambda: exists(False),
    )


@op("modify_resource_preset")
def _modify_preset(w: World, role: str) -> Case:
    name = w.make_preset()
    before = w.preset_slots(name)
    assert before is not None

    def slots_are(expected: dict[str, Any]) -> None:
        assert w.preset_slots(name) == expected

    def allowed(v: Any) -> None:
        after = w.preset_slots(name)
        assert after is not None and after != before and float(after["cpu"]) == 2, after

    return Case(
        "mutation($n: String!, $s: JSONString) { modify_resource_preset(name: $n, "
        "props: {resource_slots: $s}) { ok msg } }",
        "modify_resource_preset",
        {"n": name, "s": json.dumps({"cpu": "2", "mem": "1g"})},
        allowed,
        lambda: slots_are(before),
    )


@op("delete_resource_preset")
def _delete_preset(w: World, role: str) -> Case:
    name = w.make_preset()

    def exists(expected: bool) -> None:
        assert (w.preset_slots(name) is not None) is expected

    return Case(
        "mutation($n: String!) { delete_resource_preset(name: $n) { ok msg } }",
        "delete_resource_preset",
        {"n": name},
        lambda v: exists(False),
        lambda: exists(True),
    )


# mutations: scaling groups


@op("create_scaling_group")
def _create_sgroup(w: World, role: str) -> Case:
    name = w.uniq("sg")

    def exists(expected: bool) -> None:
        assert (w.sgroup(name) is not None) is expected

    return Case(
        'mutation($n: String!) { create_scaling_group(name: $n, props: {driver: "static", '
        'scheduler: "fifo"}) { ok msg } }',
        "create_scaling_group",
        {"n": name},
        lambda v: exists(True),
        lambda: exists(False),
    )


@op("modify_scaling_group")
def _modify_sgroup(w: World, role: str) -> Case:
    name = w.make_sgroup()

    def description_is(expected: str) -> None:
        found = w.sgroup(name)
        assert found is not None and found["description"] == expected, found

    return Case(
        'mutation($n: String!) { modify_scaling_group(name: $n, props: {description: "after"}) { ok msg } }',
        "modify_scaling_group",
        {"n": name},
        lambda v: description_is("after"),
        lambda: description_is("before"),
    )


@op("delete_scaling_group")
def _delete_sgroup(w: World, role: str) -> Case:
    name = w.make_sgroup()

    def exists(expected: bool) -> None:
        assert (w.sgroup(name) is not None) is expected

    return Case(
        "mutation($n: String!) { delete_scaling_group(name: $n) { ok msg } }",
        "delete_scaling_group",
        {"n": name},
        lambda v: exists(False),
        lambda: exists(True),
    )


@op("associate_scaling_group_with_domain")
def _associate(w: World, role: str) -> Case:
    name = w.make_sgroup()

    def associated(expected: bool) -> None:
        assert (name in w.sgroups_of_default()) is expected

    return Case(
        'mutation($s: String!) { associate_scaling_group_with_domain(domain: "default", '
        "scaling_group: $s) { ok msg } }",
        "associate_scaling_group_with_domain",
        {"s": name},
        lambda v: associated(True),
        lambda: associated(False),
    )


@op("disassociate_scaling_group_with_domain")
def _disassociate(w: World, role: str) -> Case:
    name = w.make_sgroup()
    w.associate(name)

    def associated(expected: bool) -> None:
        assert (name in w.sgroups_of_default()) is expected

    return Case(
        'mutation($s: String!) { disassociate_scaling_group_with_domain(domain: "default", '
        "scaling_group: $s) { ok msg } }",
        "disassociate_scaling_group_with_domain",
        {"s": name},
        lambda v: associated(False),
        lambda: associated(True),
    )


# mutations: images (a manager-only server usually knows no image: see MATRIX)


@op("alias_image")
def _alias_image(w: World, role: str) -> Case:
    alias = w.uniq("alias")
    target = w.images[0] if w.images else "python"

    def resolves(expected: bool) -> None:
        assert (w.image(alias) is not None) is expected

    return Case(
        "mutation($a: String!, $t: String!) { alias_image(alias: $a, target: $t) { ok msg } }",
        "alias_image",
        {"a": alias, "t": target},
        lambda v: resolves(True),
        lambda: resolves(False),
    )


@op("dealias_image")
def _dealias_image(w: World, role: str) -> Case:
    alias = w.uniq("alias")
    if w.images:  # with an image to point at, the denied call must leave a real alias in place
        d = w.sa(
            "mutation($a: String!, $t: String!) { alias_image(alias: $a, target: $t) { ok } }",
            {"a": alias, "t": w.images[0]},
        )
        assert d["alias_image"]["ok"] is True, d

    def resolves(expected: bool) -> None:
        assert (w.image(alias) is not None) is expected

    return Case(
        "mutation($a: String!) { dealias_image(alias: $a) { ok msg } }",
        "dealias_image",
        {"a": alias},
        lambda v: resolves(False),
        lambda: resolves(bool(w.images)),
    )


# --- the matrix -------------------------------------------------------------------------------------


def only(*allowed: str, roles: tuple[str, ...] = ALL) -> dict[str, str]:
    return {r: ALLOW if r in allowed else DENY for r in roles}


EVERYONE = only(*ALL)
SUPERADMIN_ONLY = only(S)

MATRIX: dict[str, dict[str, str]] = {
    # queries
    "domain-own": {**EVERYONE, AP: ALLOW},
    "domain-other": only(S, M),
    "domains": {**only(S, M), AP: DENY},
    "groups": EVERYONE,
    "groups-other-domain": only(S, M, roles=(S, A, M)),
    "groups_by_name": EVERYONE,
    "group-other-domain": only(S, M),
    "group-default": EVERYONE,
    "user-self": {**EVERYONE, AP: ALLOW},
    "user-same-domain": {**only(S, A, M), AP: DENY},
    "user-other-domain": only(S, M),
    "user_from_uuid-self": EVERYONE,
    "user_from_uuid-same-domain": only(S, A, M),
    "user_from_uuid-other-domain": only(S, M),
    "users": {**only(S, A, M), AP: DENY},
    "user_list": {**only(S, A, M), AP: DENY},
    "keypair-self": {**EVERYONE, AP: ALLOW},
    "keypair-same-domain": only(S, A, M),
    "keypair-other-domain": only(S, M),
    "keypairs": EVERYONE,
    "keypair_list": EVERYONE,
    "keypairs-of-other-user": only(S, A, M),
    "keypair_resource_policy": EVERYONE,
    "keypair_resource_policy-by-name": only(S, A, M),
    "keypair_resource_policies": EVERYONE,
    "resource_preset": EVERYONE,
    "resource_presets": EVERYONE,
    "scaling_group": SUPERADMIN_ONLY,
    "scaling_groups": SUPERADMIN_ONLY,
    "scaling_groups_for_domain": SUPERADMIN_ONLY,
    "scaling_groups_for_user_group": SUPERADMIN_ONLY,
    "scaling_groups_for_keypair": SUPERADMIN_ONLY,
    "agent": only(S, M),
    "agent_list": only(S, M),
    "agents": only(S, M),
    "image": EVERYONE,
    "images": EVERYONE,
    "compute_session_list": EVERYONE,
    "compute_session_list-peer-key": only(S, A, M),
    "compute_session_list-other-domain": only(S, M, roles=(S, A, M)),
    # mutations
    "create_domain": SUPERADMIN_ONLY,
    "modify_domain": SUPERADMIN_ONLY,
    "delete_domain": SUPERADMIN_ONLY,
    "create_group-default": {**only(S, A), AP: DENY},
    "create_group-other-domain": only(S),
    "modify_group-default": only(S, A),
    "modify_group-other-domain": only(S),
    "delete_group-default": only(S, A),
    "delete_group-other-domain": only(S),
    "create_user": SUPERADMIN_ONLY,
    "modify_user": SUPERADMIN_ONLY,
    "delete_user": SUPERADMIN_ONLY,
    "create_keypair": SUPERADMIN_ONLY,
    "modify_keypair": SUPERADMIN_ONLY,
    "delete_keypair": SUPERADMIN_ONLY,
    "create_keypair_resource_policy": SUPERADMIN_ONLY,
    "modify_keypair_resource_policy": SUPERADMIN_ONLY,
    "delete_keypair_resource_policy": SUPERADMIN_ONLY,
    "create_resource_preset": SUPERADMIN_ONLY,
    "modify_resource_preset": SUPERADMIN_ONLY,
    "delete_resource_preset": SUPERADMIN_ONLY,
    "create_scaling_group": SUPERADMIN_ONLY,
    "modify_scaling_group": SUPERADMIN_ONLY,
    "delete_scaling_group": SUPERADMIN_ONLY,
    "associate_scaling_group_with_domain": SUPERADMIN_ONLY,
    "disassociate_scaling_group_with_domain": SUPERADMIN_ONLY,
    # A manager-only server has no agent, hence no image to alias: only the denials are checked here
    # (the superadmin's alias_image/dealias_image need an agent-reported image).
    "alias_image": only(roles=(A, M, U)),
    "dealias_image": only(roles=(A, M, U)),
}

CASES = [
    pytest.param(role, operation, expected, id=f"{role}-{operation}-{expected}")
    for operation, row in MATRIX.items()
    for role, expected in row.items()
]


def test_every_operation_is_in_the_matrix() -> None:
    assert set(MATRIX) == set(OPS)


@pytest.mark.parametrize(("role", "operation", "expected"), CASES)
def test_matrix(world: World, role: str, operation: str, expected: str) -> None:
    case = OPS[operation](world, role)
    r = world.gql(case.query, case.variables, who=world.who[role])
    if expected == ALLOW:
        assert r.status_code == 200, _explain(r)
        value = r.json()[case.field]
        if case.is_mutation:
            assert value["ok"] is True, value
        case.allowed(value)
    else:
        assert r.status_code == 403, _explain(r)
        assert r.headers["content-type"].startswith("application/problem+json"), _explain(r)
        assert r.json()["type"].endswith("/forbidden"), _explain(r)
        case.denied()


def test_callers_have_their_roles(world: World) -> None:
    """The matrix means something only if each caller is who it claims to be."""
    for role, who in world.who.items():
        r = world.gql("{ user { email role } keypair { access_key is_admin } }", who=who)
        assert r.status_code == 200, _explain(r)
        data = r.json()
        assert data["user"]["email"] == who["email"]
        assert data["user"]["role"] == (A if role == AP else role)
        assert data["keypair"]["access_key"] == who["access_key"]
        assert data["keypair"]["is_admin"] is (role in (S, A))
