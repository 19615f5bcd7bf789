"""The official 22.03 CLI's administration commands, run as the superadmin.

Covers the rows marked OK or FAIL of the matrix's section "1. 22.03 CLI", subsection "Administration
(superadmin)" (`/work/shared/compat/official-client-matrix.md`). FAIL rows are tested for the correct
behaviour (they fail until the server is fixed): R2 (modify mutations taking an explicit ``null`` as a
value: domains renamed to "None", slots, hosts and ``full_name`` wiped), R8 (``admin scaling add``),
R12 (``admin agent info``) and R1 (``admin session info``). N/A rows live in ``not_offered.py``;
CLIENT and HANG rows are not tested.

Every state change is checked through our own GraphQL (the ``gql`` fixture), not only through what the
CLI prints; the 22.03 CLI exits 0 after many failures, so the output is checked too.
"""

from __future__ import annotations

import json
import re
from collections.abc import Callable, Iterator
from datetime import UTC, datetime, timedelta
from typing import Any

import pytest

from ai.backend.manager.fixtures import ADMIN, DEFAULT_GROUP_ID, USER
from ai.backend.testutils.cluster import Cluster

from .conftest import CLI, GQL, VOLUME, Run, unique

Admin = Callable[..., Run]


@pytest.fixture(scope="module")
def adm(cli22: CLI) -> Admin:
    """The 22.03 CLI as the superadmin."""

    def run(*args: str, input: str | None = None) -> Run:
        return cli22(*args, who=ADMIN, input=input)

    return run


# --- helpers: our own GraphQL to prepare and check state ---------------------------------------------


def _domain(gql: GQL, name: str) -> dict[str, Any] | None:
    data = gql(
        "query($n: String) { domain(name: $n) { name description is_active total_resource_slots "
        "allowed_vfolder_hosts allowed_docker_registries } }",
        {"n": name},
    )
    return data["domain"]


def _group(gql: GQL, gid: str) -> dict[str, Any] | None:
    data = gql(
        "query($id: UUID!) { group(id: $id) { id name description is_active domain_name "
        "total_resource_slots allowed_vfolder_hosts } }",
        {"id": gid},
    )
    return data["group"]


def _user(gql: GQL, email: str) -> dict[str, Any] | None:
    data = gql(
        "query($e: String) { user(email: $e) { uuid email username full_name description role status "
        "need_password_change is_active } }",
        {"e": email},
    )
    return data["user"]


def _policy(gql: GQL, name: str) -> dict[str, Any] | None:
    data = gql(
        "query($n: String) { keypair_resource_policy(name: $n) { name total_resource_slots "
        "max_concurrent_sessions max_containers_per_session idle_timeout max_vfolder_count "
        "max_vfolder_size allowed_vfolder_hosts } }",
        {"n": name},
    )
    return data["keypair_resource_policy"]


def _policies(gql: GQL) -> list[str]:
    return [p["name"] for p in gql("{ keypair_resource_policies { name } }")["keypair_resource_policies"]]


def _scaling_group(gql: GQL, name: str) -> dict[str, Any] | None:
    data = gql(
        "query($n: String) { scaling_groups(name: $n) { name description is_active driver scheduler } }", {"n": name}
    )
    return data["scaling_groups"][0] if data["scaling_groups"] else None


def _keypairs(gql: GQL, email: str) -> list[dict[str, Any]]:
    return gql(
        "query($e: String) { keypairs(email: $e) { access_key is_active is_admin rate_limit resource_policy } }",
        {"e": email},
    )["keypairs"]


def _slots(value: Any) -> dict[str, Any]:
    """``total_resource_slots`` as a dict (a JSONString comes back as text)."""
    return json.loads(value) if isinstance(value, str) else (value or {})


def _quietly(gql: GQL, query: str, variables: dict[str, Any]) -> None:
    """A clean-up mutation whose failure (the object is already gone) does not matter."""
    try:
        gql(query, variables)
    except AssertionError:
        pass


def _mutation_ok(gql: GQL, query: str, variables: dict[str, Any], field: str) -> dict[str, Any]:
    out = gql(query, variables)[field]
    assert out["ok"], out
    return out


def _make_domain(gql: GQL, name: str, **props: Any) -> None:
    _mutation_ok(
        gql,
        "mutation($n: String!, $p: DomainInput!) { create_domain(name: $n, props: $p) { ok msg } }",
        {"n": name, "p": props},
        "create_domain",
    )


def _drop_domain(gql: GQL, name: str) -> None:
    _quietly(gql, "mutation($n: String!) { delete_domain(name: $n) { ok msg } }", {"n": name})


def _make_group(gql: GQL, name: str, domain: str = "default", **props: Any) -> str:
    data = gql(
        "mutation($n: String!, $p: GroupInput!) { create_group(name: $n, props: $p) { ok msg group { id } } }",
        {"n": name, "p": {"domain_name": domain, **props}},
    )["create_group"]
    assert data["ok"], data
    return str(data["group"]["id"])


def _drop_group(gql: GQL, gid: str) -> None:
    _quietly(gql, "mutation($g: UUID) { delete_group(gid: $g) { ok msg } }", {"g": gid})


def _make_user(gql: GQL, email: str, **props: Any) -> str:
    base = {
        "username": email.split("@")[0],
        "password": "compat-pass-x",
        "need_password_change": False,
        "full_name": "Compat Admin Target",
        "domain_name": "default",
        "role": "user",
        "status": "active",
        "group_ids": [str(DEFAULT_GROUP_ID)],
    }
    data = gql(
        "mutation($e: String!, $p: UserInput!) { create_user(email: $e, props: $p) { ok msg user { uuid } } }",
        {"e": email, "p": {**base, **props}},
    )["create_user"]
    assert data["ok"], data
    return str(data["user"]["uuid"])


def _drop_user(gql: GQL, email: str) -> None:
    _quietly(gql, "mutation($e: String!) { delete_user(email: $e) { ok msg } }", {"e": email})


def _drop_policy(gql: GQL, name: str) -> None:
    _quietly(gql, "mutation($n: String!) { delete_keypair_resource_policy(name: $n) { ok msg } }", {"n": name})


def _drop_scaling_group(gql: GQL, name: str) -> None:
    _quietly(gql, "mutation($n: String!) { delete_scaling_group(name: $n) { ok msg } }", {"n": name})


def _make_scaling_group(gql: GQL, name: str) -> None:
    _mutation_ok(
        gql,
        "mutation($n: String!, $p: ScalingGroupInput!) { create_scaling_group(name: $n, props: $p) { ok msg } }",
        {"n": name, "p": {"description": "compat sg", "is_active": True, "driver": "static", "scheduler": "fifo"}},
        "create_scaling_group",
    )


def _json_items(run: Run) -> list[dict[str, Any]]:
    """The ``items`` of a ``--output json`` list (or the list itself)."""
    data = run.ok().json()
    return data["items"] if isinstance(data, dict) else data


# --- fixtures of objects to act on -------------------------------------------------------------------


@pytest.fixture
def domain(gql: GQL) -> Iterator[str]:
    """A fresh domain with slots, hosts and registries; soft-deleted afterwards."""
    name = unique("cs-dom")
    _make_domain(
        gql,
        name,
        description="compat domain",
        is_active=True,
        total_resource_slots=json.dumps({"cpu": "16", "mem": "68719476736"}),
        allowed_vfolder_hosts=[VOLUME],
        allowed_docker_registries=["cr.backend.ai"],
    )
    yield name
    _drop_domain(gql, name)


@pytest.fixture
def group(gql: GQL) -> Iterator[str]:
    """A fresh group of the default domain with slots and a host; its id. Soft-deleted afterwards."""
    gid = _make_group(
        gql,
        unique("cs-grp"),
        description="compat group",
        total_resource_slots=json.dumps({"cpu": "4"}),
        allowed_vfolder_hosts=[VOLUME],
    )
    yield gid
    _drop_group(gql, gid)


@pytest.fixture
def target_user(gql: GQL) -> Iterator[str]:
    """A fresh normal user with a full name and a description; its email. Soft-deleted afterwards."""
    email = f"{unique('cs-usr')}@example.org"
    _make_user(gql, email, description="compat target")
    yield email
    _drop_user(gql, email)


@pytest.fixture
def policy(gql: GQL) -> Iterator[str]:
    """A fresh keypair resource policy that allows the test volume."""
    name = unique("cs-pol")
    _mutation_ok(
        gql,
        "mutation($n: String!, $p: CreateKeyPairResourcePolicyInput!) "
        "{ create_keypair_resource_policy(name: $n, props: $p) { ok msg } }",
        {
            "n": name,
            "p": {
                "default_for_unspecified": "UNLIMITED",
                "total_resource_slots": json.dumps({"cpu": "4"}),
                "max_concurrent_sessions": 5,
                "max_containers_per_session": 2,
                "idle_timeout": 1800,
                "max_vfolder_count": 10,
                "max_vfolder_size": 1073741824,
                "allowed_vfolder_hosts": [VOLUME],
            },
        },
        "create_keypair_resource_policy",
    )
    yield name
    _drop_policy(gql, name)


@pytest.fixture
def scaling_group(gql: GQL) -> Iterator[str]:
    name = unique("cs-sg")
    _make_scaling_group(gql, name)
    yield name
    _drop_scaling_group(gql, name)


@pytest.fixture(scope="module")
def pending_session(cluster: Cluster) -> Iterator[dict[str, str]]:
    """A session of the normal user reserved an hour ahead (PENDING, never started: no container)."""
    name = unique("cs-adms")
    starts = (datetime.now(UTC) + timedelta(hours=1)).isoformat()
    r = cluster.request(
        "POST", "/session", {"image": "python", "name": name, "enqueueOnly": True, "startsAt": starts}, who=USER
    )
    assert r.status_code in (200, 201), r.text
    sid = str(r.json()["sessionId"])
    yield {"name": name, "id": sid}
    cluster.request("DELETE", f"/session/{name}?forced=true", who=USER)


# --- agents ------------------------------------------------------------------------------------------


@pytest.mark.parametrize(
    "args",
    [
        (),
        ("-s", "ALIVE", "--scaling-group", "default"),
        ("--filter", 'id like "i-%"', "--order", "id"),
    ],
    ids=["plain", "alive-sgroup", "filter-order"],
)
def test_agent_list(adm: Admin, cluster: Cluster, args: tuple[str, ...]) -> None:
    run = adm("admin", "agent", "list", *args).ok()
    assert cluster.agent_id in run.out, run.describe()


def test_agent_list_lost_is_empty(adm: Admin, cluster: Cluster) -> None:
    run = adm("admin", "agent", "list", "-s", "LOST").ok()
    assert cluster.agent_id not in run.out, run.describe()


def test_agent_list_json(adm: Admin, cluster: Cluster) -> None:
    items = _json_items(adm("--output", "json", "admin", "agent", "list"))
    agent = next((a for a in items if a.get("id") == cluster.agent_id), None)
    assert agent is not None and agent["status"] == "ALIVE", items


def test_agent_info(adm: Admin, cluster: Cluster) -> None:
    """FAIL R12 today: ``Agent.hardware_metadata`` unknown; ``live_stat`` must have upstream's shape."""
    run = adm("admin", "agent", "info", cluster.agent_id).ok()
    assert cluster.agent_id in run.out and "ALIVE" in run.out, run.describe()


# --- domains -----------------------------------------------------------------------------------------


def test_domain_list(adm: Admin, domain: str) -> None:
    run = adm("admin", "domain", "list").ok()
    assert re.search(r"^default\s+The default domain", run.out, re.M) and domain in run.out, run.describe()


def test_domain_info(adm: Admin) -> None:
    run = adm("admin", "domain", "info", "default").ok()
    assert "The default domain" in run.out, run.describe()


def test_domain_add(adm: Admin, gql: GQL) -> None:
    name = unique("cs-dom")
    try:
        run = adm(
            "admin",
            "domain",
            "add",
            name,
            "-d",
            "compat domain",
            "--total-resource-slots",
            '{"cpu": 16, "mem": "64g"}',
            "--allowed-vfolder-hosts",
            VOLUME,
            "--allowed-docker-registries",
            "cr.backend.ai",
        ).ok()
        assert re.search(r"ok\s+True", run.out), run.describe()
        d = _domain(gql, name)
        assert d is not None and d["description"] == "compat domain" and d["is_active"], d
        slots = _slots(d["total_resource_slots"])
        assert float(slots["cpu"]) == 16 and int(float(slots["mem"])) == 64 * 2**30, d
        assert d["allowed_vfolder_hosts"] == [VOLUME] and d["allowed_docker_registries"] == ["cr.backend.ai"], d
    finally:
        _drop_domain(gql, name)


def test_domain_add_inactive(adm: Admin, gql: GQL) -> None:
    name = unique("cs-dom")
    try:
        run = adm("admin", "domain", "add", name, "-i").ok()
        assert re.search(r"ok\s+True", run.out), run.describe()
        d = _domain(gql, name)
        assert d is not None and d["is_active"] is False, d
    finally:
        _drop_domain(gql, name)


def test_domain_update_keeps_name_and_slots(adm: Admin, gql: GQL, domain: str) -> None:
    """FAIL R2 today: the CLI sends ``name: null`` and ``total_resource_slots: null``; the server renamed
    the domain to "None" and wiped its slots. ``null`` must mean "unchanged"."""
    before = _domain(gql, domain)
    assert before is not None
    run = adm("admin", "domain", "update", domain, "--description", "updated desc", "--is-active", "true").ok()
    assert re.search(r"ok\s+True", run.out), run.describe()
    after = _domain(gql, domain)
    assert after is not None, f"domain {domain} is gone after `domain update` (renamed?): {run.describe()}"
    assert after["name"] == domain and after["description"] == "updated desc" and after["is_active"], after
    assert _slots(after["total_resource_slots"]) == _slots(before["total_resource_slots"]), (before, after)
    assert _domain(gql, "None") is None, "a domain named 'None' appeared"


def test_domain_update_new_name(adm: Admin, gql: GQL, domain: str) -> None:
    new = unique("cs-dom")
    try:
        run = adm("admin", "domain", "update", domain, "--new-name", new).ok()
        assert re.search(r"ok\s+True", run.out), run.describe()
        assert _domain(gql, domain) is None, "old name still there"
        d = _domain(gql, new)
        assert d is not None and d["description"] == "compat domain", d
    finally:
        _drop_domain(gql, new)


def test_domain_delete(adm: Admin, gql: GQL, domain: str) -> None:
    run = adm("admin", "domain", "delete", domain).ok()
    assert re.search(r"ok\s+True", run.out), run.describe()
    d = _domain(gql, domain)
    assert d is None or d["is_active"] is False, d


# --- groups ------------------------------------------------------------------------------------------


@pytest.mark.parametrize("args", [(), ("-d", "default")], ids=["all", "domain"])
def test_group_list(adm: Admin, group: str, args: tuple[str, ...]) -> None:
    run = adm("admin", "group", "list", *args).ok()
    assert str(DEFAULT_GROUP_ID) in run.out and group in run.out, run.describe()


def test_group_add(adm: Admin, gql: GQL) -> None:
    name = unique("cs-grp")
    run = adm(
        "admin",
        "group",
        "add",
        "default",
        name,
        "-d",
        "compat group",
        "--total-resource-slots",
        '{"cpu": 4}',
        "--allowed-vfolder-hosts",
        VOLUME,
    ).ok()
    m = re.search(r"^id\s+([0-9a-f-]{36})", run.out, re.M)
    assert m, run.describe()
    try:
        g = _group(gql, m.group(1))
        assert g is not None and g["name"] == name and g["domain_name"] == "default", g
        assert g["description"] == "compat group" and g["allowed_vfolder_hosts"] == [VOLUME], g
        assert float(_slots(g["total_resource_slots"])["cpu"]) == 4, g
    finally:
        _drop_group(gql, m.group(1))


def test_group_add_inactive_in_other_domain(adm: Admin, gql: GQL, domain: str) -> None:
    name = unique("cs-grp")
    run = adm("admin", "group", "add", domain, name, "-i").ok()
    m = re.search(r"^id\s+([0-9a-f-]{36})", run.out, re.M)
    assert m, run.describe()
    try:
        g = _group(gql, m.group(1))
        assert g is not None and g["name"] == name and g["domain_name"] == domain and g["is_active"] is False, g
    finally:
        _drop_group(gql, m.group(1))


def test_group_info(adm: Admin, gql: GQL, group: str) -> None:
    name = _group(gql, group)["name"]  # type: ignore[index]
    run = adm("admin", "group", "info", group).ok()
    assert name in run.out and group in run.out, run.describe()


def test_group_add_and_remove_users(adm: Admin, gql: GQL, group: str, target_user: str, user2: dict[str, Any]) -> None:
    uid1 = _user(gql, target_user)["uuid"]  # type: ignore[index]
    uid2 = str(user2["uuid"])

    def members() -> set[str]:
        data = gql("query($g: UUID) { users(group_id: $g) { uuid } }", {"g": group})
        return {str(u["uuid"]) for u in data["users"]}

    run = adm("admin", "group", "add-users", group, uid1, uid2).ok()
    assert re.search(r"ok\s+True", run.out), run.describe()
    assert {uid1, uid2} <= members()
    run = adm("admin", "group", "remove-users", group, uid2).ok()
    assert re.search(r"ok\s+True", run.out), run.describe()
    assert uid1 in members() and uid2 not in members()


def test_group_update_keeps_name_and_slots(adm: Admin, gql: GQL, group: str) -> None:
    """FAIL R2 today: ``name: null`` renamed the group to "None" and ``total_resource_slots: null`` wiped
    its slots. (``allowed_vfolder_hosts`` is emptied by the client's own ``[]``: upstream behaviour.)"""
    before = _group(gql, group)
    assert before is not None
    run = adm("admin", "group", "update", group, "-d", "updated group desc").ok()
    assert re.search(r"ok\s+True", run.out), run.describe()
    after = _group(gql, group)
    assert after is not None
    assert after["name"] == before["name"] and after["description"] == "updated group desc", (before, after)
    assert _slots(after["total_resource_slots"]) == _slots(before["total_resource_slots"]), (before, after)


def test_group_delete(adm: Admin, gql: GQL, group: str) -> None:
    run = adm("admin", "group", "delete", group).ok()
    assert re.search(r"ok\s+True", run.out), run.describe()
    g = _group(gql, group)
    assert g is None or g["is_active"] is False, g


# --- images ------------------------------------------------------------------------------------------


def test_image_list(adm: Admin) -> None:
    run = adm("admin", "image", "list").ok()
    assert "python" in run.out, run.describe()


def test_image_list_operation(adm: Admin, gql: GQL) -> None:
    """Only the operation images (none in the test cluster: then the CLI prints nothing at all)."""
    run = adm("admin", "image", "list", "--operation").ok()
    ops = gql("{ images(is_operation: true) { name } }")["images"]
    for image in ops:
        assert image["name"] in run.out, run.describe()
    if not ops:
        assert "python" not in run.out, run.describe()


def test_image_list_json(adm: Admin, gql: GQL) -> None:
    items = _json_items(adm("--output", "json", "admin", "image", "list"))
    names = {i.get("name") for i in items}
    assert any(n and "python" in n for n in names), items


def _python_image(gql: GQL) -> dict[str, Any]:
    images = gql("{ images { name tag reference architecture aliases } }")["images"]
    image = next((i for i in images if "python" in i["aliases"] or i["name"].endswith("python")), None)
    assert image is not None, images
    return image


@pytest.mark.parametrize("arch", [False, True], ids=["plain", "arch"])
def test_image_alias_dealias(adm: Admin, gql: GQL, arch: bool) -> None:
    image = _python_image(gql)
    alias = unique("cs-py")
    extra = ("--arch", image["architecture"]) if arch else ()
    run = adm("admin", "image", "alias", alias, image["reference"], *extra).ok()
    assert alias in _python_image_aliases(gql, image["reference"]), run.describe()
    run = adm("admin", "image", "dealias", alias).ok()
    assert alias not in _python_image_aliases(gql, image["reference"]), run.describe()


def _python_image_aliases(gql: GQL, reference: str) -> list[str]:
    data = gql("query($r: String!) { image(reference: $r) { aliases } }", {"r": reference})
    return data["image"]["aliases"]


@pytest.mark.parametrize("args", [(), ("-r", "local")], ids=["all", "local"])
def test_image_rescan(adm: Admin, gql: GQL, args: tuple[str, ...]) -> None:
    run = adm("admin", "image", "rescan", *args).ok()
    assert re.search(r"(?i)done|finish|updated|rescan", run.out), run.describe()
    assert _python_image(gql)  # the images are still known afterwards


# --- keypairs ----------------------------------------------------------------------------------------


def test_keypair_add(adm: Admin, gql: GQL, target_user: str) -> None:
    before = {k["access_key"] for k in _keypairs(gql, target_user)}
    run = adm("admin", "keypair", "add", target_user, "default", "-r", "5000").ok()
    new = [k for k in _keypairs(gql, target_user) if k["access_key"] not in before]
    assert len(new) == 1 and new[0]["access_key"] in run.out, (new, run.describe())
    assert new[0]["rate_limit"] == 5000 and new[0]["resource_policy"] == "default" and new[0]["is_active"], new


def test_keypair_add_json_admin_inactive(adm: Admin, gql: GQL, target_user: str) -> None:
    before = {k["access_key"] for k in _keypairs(gql, target_user)}
    run = adm("--output", "json", "admin", "keypair", "add", target_user, "default", "-a", "-i").ok()
    data = run.json()
    new = [k for k in _keypairs(gql, target_user) if k["access_key"] not in before]
    assert len(new) == 1 and new[0]["access_key"] in json.dumps(data), (new, run.describe())
    assert new[0]["is_admin"] is True and new[0]["is_active"] is False, new


def test_keypair_list_by_user(adm: Admin, gql: GQL, target_user: str) -> None:
    ak = _keypairs(gql, target_user)[0]["access_key"]
    run = adm("admin", "keypair", "list", "-u", target_user).ok()
    assert ak in run.out and ADMIN["access_key"] not in run.out, run.describe()


def test_keypair_list_filtered(adm: Admin, gql: GQL, target_user: str) -> None:
    ak = _keypairs(gql, target_user)[0]["access_key"]
    run = adm(
        "admin", "keypair", "list", "--is-active", "true", "--filter", 'user_id like "cs-%"', "--order", "access_key"
    ).ok()
    assert ak in run.out and ADMIN["access_key"] not in run.out, run.describe()


def test_keypair_info(adm: Admin) -> None:
    run = adm("admin", "keypair", "info").ok()
    assert ADMIN["access_key"] in run.out, run.describe()


def test_keypair_info_json(adm: Admin) -> None:
    run = adm("--output", "json", "admin", "keypair", "info").ok()
    assert ADMIN["access_key"] in json.dumps(run.json()), run.describe()


def test_keypair_update(adm: Admin, gql: GQL, target_user: str, policy: str) -> None:
    ak = _keypairs(gql, target_user)[0]["access_key"]
    try:
        run = adm(
            "admin",
            "keypair",
            "update",
            ak,
            "--is-admin",
            "false",
            "--is-active",
            "true",
            "-r",
            "3000",
            "--resource-policy",
            policy,
        ).ok()
        assert re.search(r"ok\s+True", run.out), run.describe()
        kp = next(k for k in _keypairs(gql, target_user) if k["access_key"] == ak)
        assert kp["rate_limit"] == 3000 and kp["resource_policy"] == policy and kp["is_active"], kp
        assert kp["is_admin"] is False, kp
    finally:  # the policy can only be deleted once no keypair uses it
        _quietly(
            gql,
            'mutation($a: String!) { modify_keypair(access_key: $a, props: {resource_policy: "default"}) { ok } }',
            {"a": ak},
        )


def test_keypair_deactivate_activate_delete(adm: Admin, gql: GQL, target_user: str) -> None:
    before = {k["access_key"] for k in _keypairs(gql, target_user)}
    adm("admin", "keypair", "add", target_user, "default").ok()
    ak = next(k["access_key"] for k in _keypairs(gql, target_user) if k["access_key"] not in before)

    def state() -> dict[str, Any] | None:
        return next((k for k in _keypairs(gql, target_user) if k["access_key"] == ak), None)

    adm("admin", "keypair", "deactivate", ak).ok()
    assert state()["is_active"] is False  # type: ignore[index]
    adm("admin", "keypair", "activate", ak).ok()
    assert state()["is_active"] is True  # type: ignore[index]
    adm("admin", "keypair", "delete", ak).ok()
    assert state() is None


# --- keypair resource policies -----------------------------------------------------------------------


def test_resource_policy_list(adm: Admin, policy: str) -> None:
    run = adm("admin", "keypair-resource-policy", "list").ok()
    assert "default" in run.out and policy in run.out, run.describe()


def test_resource_policy_info(adm: Admin) -> None:
    run = adm("admin", "keypair-resource-policy", "info", "default").ok()
    assert "default" in run.out and "1800" in run.out, run.describe()


def test_resource_policy_add(adm: Admin, gql: GQL) -> None:
    name = unique("cs-pol")
    try:
        run = adm(
            "admin",
            "keypair-resource-policy",
            "add",
            name,
            "--total-resource-slots",
            '{"cpu": "4", "mem": "8g"}',
            "--max-concurrent-sessions",
            "5",
            "--max-containers-per-session",
            "2",
            "--max-vfolder-count",
            "10",
            "--max-vfolder-size",
            "1073741824",
            "--idle-timeout",
            "1800",
            "--allowed-vfolder-hosts",
            VOLUME,
        ).ok()
        assert re.search(r"ok\s+True", run.out), run.describe()
        p = _policy(gql, name)
        assert p is not None, run.describe()
        assert (
            p["max_concurrent_sessions"],
            p["max_containers_per_session"],
            p["max_vfolder_count"],
            int(p["max_vfolder_size"]),
            int(p["idle_timeout"]),
        ) == (5, 2, 10, 1073741824, 1800), p
        assert p["allowed_vfolder_hosts"] == [VOLUME], p
        slots = _slots(p["total_resource_slots"])
        assert float(slots["cpu"]) == 4 and int(float(slots["mem"])) == 8 * 2**30, p
    finally:
        _drop_policy(gql, name)


def test_resource_policy_update_keeps_hosts(adm: Admin, gql: GQL, policy: str) -> None:
    """FAIL R2 today: the CLI sends ``allowed_vfolder_hosts: null``, which emptied the list."""
    before = _policy(gql, policy)
    run = adm("admin", "keypair-resource-policy", "update", policy, "--idle-timeout", "60").ok()
    assert re.search(r"ok\s+True", run.out), run.describe()
    after = _policy(gql, policy)
    assert after is not None and int(after["idle_timeout"]) == 60, after
    assert after["allowed_vfolder_hosts"] == before["allowed_vfolder_hosts"] == [VOLUME], (before, after)  # type: ignore[index]


def test_resource_policy_delete(adm: Admin, gql: GQL, policy: str) -> None:
    run = adm("admin", "keypair-resource-policy", "delete", policy, input="y\n").ok()
    assert re.search(r"ok\s+True", run.out), run.describe()
    assert policy not in _policies(gql)


# --- resources ---------------------------------------------------------------------------------------


def test_resource_query_slots(adm: Admin) -> None:
    run = adm("admin", "resource", "query-slots").ok()
    assert "cpu" in run.out and "mem" in run.out, run.describe()


def test_resource_docker_registries(adm: Admin, cluster: Cluster) -> None:
    """One line per registry of ``GET /config/docker-registries`` (none configured in the test cluster)."""
    run = adm("admin", "resource", "docker-registries").ok()
    r = cluster.request("GET", "/config/docker-registries", who=ADMIN)
    assert r.status_code == 200, r.text
    assert sorted(run.stdout.split()) == sorted(r.json()), (r.json(), run.describe())


# --- scaling groups ----------------------------------------------------------------------------------


def test_scaling_list(adm: Admin, scaling_group: str) -> None:
    run = adm("admin", "scaling", "list").ok()
    assert re.search(r"^default\b", run.out, re.M) and scaling_group in run.out, run.describe()


def test_scaling_info(adm: Admin) -> None:
    run = adm("admin", "scaling", "info", "default").ok()
    assert "default" in run.out and "fifo" in run.out, run.describe()


def test_scaling_add(adm: Admin, gql: GQL) -> None:
    """FAIL R8 today: the client declares ``$input: CreateScalingGroupInput!`` (server: ``ScalingGroupInput``)."""
    name = unique("cs-sg")
    try:
        run = adm(
            "admin",
            "scaling",
            "add",
            name,
            "-d",
            "compat sg",
            "--driver",
            "static",
            "--driver-opts",
            "{}",
            "--scheduler",
            "fifo",
            "--scheduler-opts",
            "{}",
        ).ok()
        assert re.search(r"ok\s+True", run.out), run.describe()
        sg = _scaling_group(gql, name)
        assert sg is not None, f"scaling group {name} was not created: {run.describe()}"
        assert (sg["description"], sg["driver"], sg["scheduler"]) == ("compat sg", "static", "fifo"), sg
    finally:
        _drop_scaling_group(gql, name)


def test_scaling_update(adm: Admin, gql: GQL, scaling_group: str) -> None:
    run = adm("admin", "scaling", "update", scaling_group, "-d", "updated sg", "--scheduler", "drf").ok()
    assert re.search(r"ok\s+True", run.out), run.describe()
    sg = _scaling_group(gql, scaling_group)
    assert sg is not None and sg["description"] == "updated sg" and sg["scheduler"] == "drf", sg


def test_scaling_associate(adm: Admin, gql: GQL, scaling_group: str, domain: str) -> None:
    run = adm("admin", "scaling", "associate-scaling", scaling_group, domain).ok()
    assert re.search(r"ok\s+True", run.out), run.describe()
    data = gql("query($d: String!) { scaling_groups_for_domain(domain: $d) { name } }", {"d": domain})
    assert scaling_group in [s["name"] for s in data["scaling_groups_for_domain"]], data


@pytest.mark.parametrize("who", [ADMIN, USER], ids=["admin", "user"])
def test_scaling_get_available(cli22: CLI, who: dict[str, Any]) -> None:
    run = cli22("admin", "scaling", "get-available", "default", who=who).ok()
    assert "default" in run.out, run.describe()


def test_scaling_delete(adm: Admin, gql: GQL, scaling_group: str) -> None:
    run = adm("admin", "scaling", "delete", scaling_group).ok()
    assert re.search(r"ok\s+True", run.out), run.describe()
    assert _scaling_group(gql, scaling_group) is None


# --- sessions ----------------------------------------------------------------------------------------


def test_session_list_by_access_key(adm: Admin, pending_session: dict[str, str]) -> None:
    run = adm("admin", "session", "list", "--access-key", USER["access_key"]).ok()
    assert pending_session["name"] in run.out, run.describe()


def test_session_list_all_limited(adm: Admin, pending_session: dict[str, str]) -> None:
    run = adm("admin", "session", "list", "-s", "ALL", "--limit", "2").ok()
    rows = [ln for ln in run.out.splitlines() if re.search(r"[0-9a-f]{8}-[0-9a-f]{4}-", ln)]
    assert 1 <= len(rows) <= 2, run.describe()


def test_session_info(adm: Admin, pending_session: dict[str, str]) -> None:
    """FAIL R1 today: the query asks ``containers { … status_data … }``."""
    run = adm("admin", "session", "info", pending_session["id"]).ok()
    assert pending_session["name"] in run.out and "PENDING" in run.out, run.describe()


# --- users -------------------------------------------------------------------------------------------


def test_user_add(adm: Admin, gql: GQL) -> None:
    email = f"{unique('cs-usr')}@example.org"
    name = email.split("@")[0]
    try:
        run = adm(
            "admin",
            "user",
            "add",
            "default",
            email,
            "compat-Pass-1",
            "-u",
            name,
            "-n",
            "CS User Two",
            "-r",
            "user",
            "--description",
            "compat user",
        ).ok()
        assert re.search(r"ok\s+True", run.out), run.describe()
        u = _user(gql, email)
        assert u is not None and (u["username"], u["full_name"], u["role"], u["description"]) == (
            name,
            "CS User Two",
            "user",
            "compat user",
        ), u
    finally:
        _drop_user(gql, email)


@pytest.mark.parametrize(
    "args",
    [
        (),
        ("-s", "active", "--filter", 'email like "cs-%"', "--order", "created_at"),
        ("-g", str(DEFAULT_GROUP_ID)),
    ],
    ids=["plain", "filtered", "group"],
)
def test_user_list(adm: Admin, target_user: str, args: tuple[str, ...]) -> None:
    run = adm("admin", "user", "list", *args).ok()
    assert target_user in run.out, run.describe()
    if "--filter" in args:
        assert ADMIN["email"] not in run.out, run.describe()


def test_user_list_json(adm: Admin, target_user: str) -> None:
    items = _json_items(adm("--output", "json", "admin", "user", "list"))
    assert target_user in {u.get("email") for u in items}, items


def test_user_info_by_email(adm: Admin, target_user: str) -> None:
    run = adm("admin", "user", "info", "-e", target_user).ok()
    assert target_user in run.out and "Compat Admin Target" in run.out, run.describe()


def test_user_info_self(adm: Admin) -> None:
    run = adm("admin", "user", "info").ok()
    assert ADMIN["email"] in run.out and "superadmin" in run.out, run.describe()


def test_user_info_json(adm: Admin, target_user: str) -> None:
    run = adm("--output", "json", "admin", "user", "info", "-e", target_user).ok()
    assert target_user in json.dumps(run.json()), run.describe()


def test_user_update(adm: Admin, gql: GQL, target_user: str) -> None:
    run = adm(
        "admin", "user", "update", target_user, "-n", "CS User 2", "--description", "updated", "--need-password-change"
    ).ok()
    assert re.search(r"ok\s+True", run.out), run.describe()
    u = _user(gql, target_user)
    assert u is not None and (u["full_name"], u["description"], u["need_password_change"]) == (
        "CS User 2",
        "updated",
        True,
    ), u


def test_user_update_keeps_full_name(adm: Admin, gql: GQL, target_user: str) -> None:
    """FAIL R2 today: without ``-n`` the CLI sends ``full_name: null``, which cleared it."""
    new_name = unique("cs-usrb")
    run = adm("admin", "user", "update", target_user, "-u", new_name, "-r", "user", "-s", "active").ok()
    assert re.search(r"ok\s+True", run.out), run.describe()
    u = _user(gql, target_user)
    assert u is not None and u["username"] == new_name and u["role"] == "user" and u["status"] == "active", u
    assert u["full_name"] == "Compat Admin Target", u


def test_user_delete(adm: Admin, gql: GQL, target_user: str) -> None:
    run = adm("admin", "user", "delete", target_user).ok()
    assert re.search(r"ok\s+True", run.out), run.describe()
    u = _user(gql, target_user)
    assert u is None or u["status"] == "deleted", u


# --- virtual folders ---------------------------------------------------------------------------------


@pytest.fixture
def group_folder(cluster: Cluster, gql: GQL) -> Iterator[tuple[str, str]]:
    """A group folder of the default group (created by the admin); ``(name, group id)``."""
    name = unique("cs-agvf")
    r = cluster.request("POST", "/folders", {"name": name, "host": VOLUME, "group": str(DEFAULT_GROUP_ID)}, who=ADMIN)
    assert r.status_code in (200, 201), r.text
    yield name, str(DEFAULT_GROUP_ID)
    cluster.request("DELETE", f"/folders/{name}", who=ADMIN)


def test_vfolder_list(adm: Admin, group_folder: tuple[str, str]) -> None:
    run = adm("admin", "vfolder", "list").ok()
    assert group_folder[0] in run.out, run.describe()


def test_vfolder_list_group_filtered(adm: Admin, group_folder: tuple[str, str]) -> None:
    run = adm("admin", "vfolder", "list", "-g", group_folder[1], "--filter", 'name like "cs-%"').ok()
    assert group_folder[0] in run.out, run.describe()


def test_vfolder_list_hosts(adm: Admin) -> None:
    run = adm("admin", "vfolder", "list-hosts").ok()
    assert VOLUME in run.out, run.describe()
