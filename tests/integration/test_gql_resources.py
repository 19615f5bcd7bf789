"""Scaling groups, resource presets, agents, images and session/container scoping, through real signed HTTP.

The ``manager`` fixture (a manager without agents, on SQLite and on PostgreSQL) covers what needs no
agent; the ``cluster`` fixture (a real Docker agent) covers agents, images, containers and capacity.
Every refusal is checked for its status and problem body, and for having changed nothing.
"""

from __future__ import annotations

import json
import secrets
import uuid
from typing import Any, Protocol

import httpx
import pytest

from ai.backend.manager.fixtures import ADMIN, DEFAULT_GROUP_ID, USER
from ai.backend.testutils.problems import problem


class Requester(Protocol):
    def request(self, method: str, path: str, body: Any = None, who: dict[str, Any] = ...) -> httpx.Response: ...

    def gql_request(
        self, query: str, variables: dict[str, Any] | None = ..., *, who: dict[str, Any] = ...
    ) -> httpx.Response: ...

    def gql(
        self, query: str, variables: dict[str, Any] | None = ..., *, who: dict[str, Any] = ...
    ) -> dict[str, Any]: ...


def _uid() -> str:
    return secrets.token_hex(3)


def _mutate(
    m: Requester, query: str, variables: dict[str, Any] | None = None, who: dict[str, Any] = ADMIN
) -> dict[str, Any]:
    data = m.gql(query, variables, who=who)
    (result,) = data.values()
    assert result["ok"] is True and result["msg"] == "success", result
    out: dict[str, Any] = result
    return out


def _refused(
    m: Requester,
    status: int,
    query: str,
    variables: dict[str, Any] | None = None,
    who: dict[str, Any] = ADMIN,
    words: tuple[str, ...] = (),
) -> None:
    problem(m.gql_request(query, variables, who=who), status, *words)


# --- accounts used by the scoping tests ---------------------------------------------------------------


def _account(m: Requester, *, role: str, domain: str = "default", group_ids: list[str] | None = None) -> dict[str, Any]:
    """A new user with an admin-flagged keypair; returns the signing credentials."""
    email = f"{role}-{_uid()}@example.com"
    props = {
        "username": email.split("@")[0],
        "password": "pw-" + _uid(),
        "need_password_change": False,
        "domain_name": domain,
        "role": role,
        "group_ids": group_ids or [],
    }
    _mutate(
        m,
        "mutation($e: String!, $p: UserInput!) { create_user(email: $e, props: $p) { ok msg } }",
        {"e": email, "p": props},
    )
    kp = _mutate(
        m,
        "mutation($u: String!, $p: KeyPairInput!) { create_keypair(user_id: $u, props: $p) "
        "{ ok msg keypair { access_key secret_key } } }",
        {"u": email, "p": {"is_active": True, "is_admin": True, "resource_policy": "default", "rate_limit": 10000}},
    )["keypair"]
    return {"email": email, "access_key": kp["access_key"], "secret_key": kp["secret_key"]}


def _domain(m: Requester) -> str:
    name = f"dom-{_uid()}"
    _mutate(m, "mutation($n: String!) { create_domain(name: $n, props: {}) { ok msg } }", {"n": name})
    return name


def _group(m: Requester, domain: str = "default") -> str:
    r = _mutate(
        m,
        "mutation($n: String!, $d: String!) { create_group(name: $n, props: {domain_name: $d}) "
        "{ ok msg group { id } } }",
        {"n": f"grp-{_uid()}", "d": domain},
    )
    return str(r["group"]["id"])


# --- scaling groups -----------------------------------------------------------------------------------

SG_FIELDS = (
    "name description is_active is_public created_at driver driver_opts scheduler scheduler_opts "
    "use_host_network wsproxy_addr wsproxy_api_token"
)
CREATE_SG = (
    "mutation($n: String!, $p: ScalingGroupInput!) { create_scaling_group(name: $n, props: $p) "
    f"{{ ok msg scaling_group {{ {SG_FIELDS} }} }} }}"
)
MODIFY_SG = (
    "mutation($n: String!, $p: ModifyScalingGroupInput!) { modify_scaling_group(name: $n, props: $p) { ok msg } }"
)
GET_SG = f"query($n: String) {{ scaling_group(name: $n) {{ {SG_FIELDS} }} }}"


def _sg(m: Requester, name: str) -> dict[str, Any] | None:
    found: dict[str, Any] | None = m.gql(GET_SG, {"n": name})["scaling_group"]
    return found


def _create_sg(m: Requester, name: str, **props: Any) -> dict[str, Any]:
    props = {"driver": "static", "scheduler": "fifo", **props}
    created: dict[str, Any] = _mutate(m, CREATE_SG, {"n": name, "p": props})["scaling_group"]
    return created


def test_scaling_group_create_query_modify_delete(manager: Any) -> None:
    name = f"sg-{_uid()}"
    created = _create_sg(
        manager,
        name,
        description="GPU-less nodes",
        is_public=False,
        scheduler="drf",
        driver_opts=json.dumps({"x": 1}),
        scheduler_opts={"y": [2]},
        wsproxy_addr="http://127.0.0.1:5050",
        wsproxy_api_token="tok",
    )
    assert created["name"] == name and created["scheduler"] == "drf" and created["is_public"] is False
    assert json.loads(created["driver_opts"]) == {"x": 1} and json.loads(created["scheduler_opts"]) == {"y": [2]}
    assert created["is_active"] is True and created["use_host_network"] is False
    assert created["wsproxy_addr"] == "http://127.0.0.1:5050" and created["wsproxy_api_token"] == "tok"
    assert created["created_at"]
    assert _sg(manager, name) == created
    names = [s["name"] for s in manager.gql("{ scaling_groups { name } }")["scaling_groups"]]
    assert name in names and "default" in names
    only = manager.gql("query($n: String) { scaling_groups(name: $n) { name } }", {"n": name})
    assert only["scaling_groups"] == [{"name": name}]

    _mutate(
        manager,
        MODIFY_SG,
        {
            "n": name,
            "p": {
                "scheduler": "lifo",
                "is_active": False,
                "description": "x",
                "wsproxy_addr": "",
                "scheduler_opts": "{}",
            },
        },
    )
    after = _sg(manager, name)
    assert after is not None
    assert (after["scheduler"], after["is_active"], after["description"]) == ("lifo", False, "x")
    assert after["wsproxy_addr"] is None and json.loads(after["scheduler_opts"]) == {}
    assert after["is_public"] is False  # untouched
    inactive = manager.gql("{ scaling_groups(is_active: false) { name } }")["scaling_groups"]
    active = manager.gql("{ scaling_groups(is_active: true) { name } }")["scaling_groups"]
    assert {"name": name} in inactive and {"name": name} not in active

    _mutate(manager, "mutation($n: String!) { delete_scaling_group(name: $n) { ok msg } }", {"n": name})
    assert _sg(manager, name) is None
    _refused(
        manager, 404, "mutation($n: String!) { delete_scaling_group(name: $n) { ok msg } }", {"n": name}, words=(name,)
    )
    _refused(manager, 404, MODIFY_SG, {"n": name, "p": {"description": "y"}}, words=(name,))


@pytest.mark.parametrize(
    "name,props,words",
    [
        ("sg-ok", {"driver": "kubernetes"}, ("driver", "static")),
        ("sg-ok", {"scheduler": "random"}, ("scheduler", "fifo")),
        ("bad name!", {}, ("name",)),
        ("-leading", {}, ("name",)),
        ("sg-ok", {"driver_opts": "[1, 2]"}, ("driver_opts",)),
        ("sg-ok", {"wsproxy_addr": "ftp://x"}, ("wsproxy_addr",)),
        ("sg-ok", {"wsproxy_api_token": "t" * 300}, ("wsproxy_api_token",)),
    ],
)
def test_scaling_group_create_rejects_bad_values(
    manager: Any, name: str, props: dict[str, Any], words: tuple[str, ...]
) -> None:
    sg = f"{name}-{_uid()}" if name == "sg-ok" else name
    props = {"driver": "static", "scheduler": "fifo", **props}
    _refused(manager, 400, CREATE_SG, {"n": sg, "p": props}, words=words)
    assert _sg(manager, sg) is None


def test_malformed_json_string_is_a_client_error(manager: Any) -> None:
    name = f"sg-{_uid()}"
    doc = (
        f'mutation {{ create_scaling_group(name: "{name}", props: {{driver: "static", scheduler: "fifo", '
        'scheduler_opts: "{not json"}) { ok } }'
    )
    legacy = manager.request("POST", "/admin/graphql", {"query": doc})
    problem(legacy, 400, "GraphQL")
    assert "JSONString" in json.dumps(legacy.json()["errors"])
    std = manager.request(
        "POST",
        "/admin/gql",
        {
            "query": doc.replace('"{not json"', "$o").replace("mutation {", "mutation($o: JSONString) {"),
            "variables": {"o": "{not json"},
        },
    )
    assert std.status_code == 200 and std.json()["data"] is None and std.json()["errors"], std.text
    assert _sg(manager, name) is None


def test_scaling_group_refusals_change_nothing(manager: Any) -> None:
    name = f"sg-{_uid()}"
    _create_sg(manager, name)
    before = _sg(manager, name)
    _refused(
        manager, 409, CREATE_SG, {"n": name, "p": {"driver": "static", "scheduler": "lifo"}}, words=("already exists",)
    )
    _refused(manager, 400, MODIFY_SG, {"n": name, "p": {"scheduler": "lifo", "driver": "nope"}}, words=("driver",))
    for who in (USER,):
        _refused(manager, 403, MODIFY_SG, {"n": name, "p": {"scheduler": "lifo"}}, who=who, words=("superadmin",))
        _refused(manager, 403, "mutation($n: String!) { delete_scaling_group(name: $n) { ok } }", {"n": name}, who=who)
        _refused(manager, 403, CREATE_SG, {"n": name + "x", "p": {"driver": "static", "scheduler": "fifo"}}, who=who)
        _refused(manager, 403, GET_SG, {"n": name}, who=who)
        _refused(manager, 403, "{ scaling_groups { name } }", who=who)
    assert _sg(manager, name) == before
    assert _sg(manager, name + "x") is None
    _refused(manager, 400, "{ scaling_group { name } }", words=("name",))


def test_domain_admin_is_refused_scaling_group_calls(manager: Any) -> None:
    admin = _account(manager, role="admin")
    _refused(manager, 403, "{ scaling_groups { name } }", who=admin)
    _refused(
        manager,
        403,
        'mutation { associate_scaling_group_with_domain(domain: "default", scaling_group: "default") { ok } }',
        who=admin,
    )


ASSOC = {
    "domain": (
        "mutation($s: String!, $t: String!) { associate_scaling_group_with_domain(scaling_group: $s, "
        "domain: $t) { ok msg } }",
        "mutation($s: String!, $t: String!) { disassociate_scaling_group_with_domain(scaling_group: $s, "
        "domain: $t) { ok msg } }",
        "query($t: String!) { scaling_groups_for_domain(domain: $t) { name } }",
    ),
    "group": (
        "mutation($s: String!, $t: String!) { associate_scaling_group_with_user_group(scaling_group: $s, "
        "user_group: $t) { ok msg } }",
        "mutation($s: String!, $t: String!) { disassociate_scaling_group_with_user_group(scaling_group: $s, "
        "user_group: $t) { ok msg } }",
        "query($t: String!) { scaling_groups_for_user_group(user_group: $t) { name } }",
    ),
    "keypair": (
        "mutation($s: String!, $t: String!) { associate_scaling_group_with_keypair(scaling_group: $s, "
        "access_key: $t) { ok msg } }",
        "mutation($s: String!, $t: String!) { disassociate_scaling_group_with_keypair(scaling_group: $s, "
        "access_key: $t) { ok msg } }",
        "query($t: String!) { scaling_groups_for_keypair(access_key: $t) { name } }",
    ),
}


def _listed(m: Requester, kind: str, target: str) -> list[str]:
    (rows,) = m.gql(ASSOC[kind][2], {"t": target}).values()
    return [r["name"] for r in rows]


@pytest.mark.parametrize("kind", ["domain", "group", "keypair"])
def test_scaling_group_associations(manager: Any, kind: str) -> None:
    assoc, dissoc, _ = ASSOC[kind]
    sg = f"sg-{_uid()}"
    _create_sg(manager, sg)
    target = {"domain": _domain, "group": _group, "keypair": lambda m: _account(m, role="user")["access_key"]}[kind](
        manager
    )
    assert _listed(manager, kind, target) == []
    _mutate(manager, assoc, {"s": sg, "t": target})
    assert _listed(manager, kind, target) == [sg]
    _refused(manager, 409, assoc, {"s": sg, "t": target}, words=("already",))
    _refused(manager, 404, assoc, {"s": "no-such-sg", "t": target}, words=("no-such-sg",))
    unknown = {
        "domain": "no-such-domain",
        "group": "00000000-0000-0000-0000-000000000000",
        "keypair": "AKIANOSUCHKEY0000000",
    }[kind]
    _refused(manager, 404, assoc, {"s": sg, "t": unknown}, words=(unknown,))
    _refused(manager, 404, ASSOC[kind][2], {"t": unknown}, words=(unknown,))
    _refused(manager, 403, assoc, {"s": sg, "t": target}, who=USER)
    _refused(manager, 403, dissoc, {"s": sg, "t": target}, who=USER)
    _refused(manager, 403, ASSOC[kind][2], {"t": target}, who=USER)
    assert _listed(manager, kind, target) == [sg]
    # is_active narrows the association lists too.
    _mutate(manager, MODIFY_SG, {"n": sg, "p": {"is_active": False}})
    q = ASSOC[kind][2].replace("$t)", "$t, is_active: true)")
    (rows,) = manager.gql(q, {"t": target}).values()
    assert rows == []
    _mutate(manager, dissoc, {"s": sg, "t": target})
    assert _listed(manager, kind, target) == []
    _refused(manager, 404, dissoc, {"s": sg, "t": target}, words=("not associated",))
    # Deleting a scaling group removes its associations.
    _mutate(manager, assoc, {"s": sg, "t": target})
    _mutate(manager, "mutation($n: String!) { delete_scaling_group(name: $n) { ok msg } }", {"n": sg})
    assert _listed(manager, kind, target) == []


def test_scaling_group_association_bad_group_id(manager: Any) -> None:
    _refused(manager, 400, ASSOC["group"][0], {"s": "default", "t": "not-a-uuid"}, words=("uuid",))
    _refused(manager, 400, ASSOC["group"][2], {"t": "not-a-uuid"}, words=("uuid",))


def test_disassociate_all(manager: Any) -> None:
    dom, grp = _domain(manager), _group(manager)
    sgs = [f"sg-{_uid()}" for _ in range(2)]
    for sg in sgs:
        _create_sg(manager, sg)
        _mutate(manager, ASSOC["domain"][0], {"s": sg, "t": dom})
        _mutate(manager, ASSOC["group"][0], {"s": sg, "t": grp})
    assert _listed(manager, "domain", dom) == sorted(sgs)
    _refused(
        manager,
        403,
        "mutation($d: String!) { disassociate_all_scaling_groups_with_domain(domain: $d) { ok } }",
        {"d": dom},
        who=USER,
    )
    _refused(
        manager,
        404,
        'mutation { disassociate_all_scaling_groups_with_domain(domain: "nope-dom") { ok } }',
        words=("nope-dom",),
    )
    _refused(
        manager,
        404,
        "mutation { disassociate_all_scaling_groups_with_group("
        'user_group: "00000000-0000-0000-0000-000000000001") { ok } }',
    )
    assert _listed(manager, "domain", dom) == sorted(sgs)
    _mutate(
        manager,
        "mutation($d: String!) { disassociate_all_scaling_groups_with_domain(domain: $d) { ok msg } }",
        {"d": dom},
    )
    assert _listed(manager, "domain", dom) == [] and _listed(manager, "group", grp) == sorted(sgs)
    _mutate(
        manager,
        "mutation($g: String!) { disassociate_all_scaling_groups_with_group(user_group: $g) { ok msg } }",
        {"g": grp},
    )
    assert _listed(manager, "group", grp) == []
    # The default domain keeps its own association.
    assert "default" in _listed(manager, "domain", "default")


# --- REST: usable scaling groups and slot types -------------------------------------------------------


def _usable(m: Requester, group: str, who: dict[str, Any] = USER) -> list[str]:
    r = m.request("GET", f"/scaling-groups?group={group}", who=who)
    assert r.status_code == 200, r.text
    return [s["name"] for s in r.json()["scaling_groups"]]


def test_rest_usable_scaling_groups(manager: Any) -> None:
    assert "default" in _usable(manager, "default")
    assert _usable(manager, str(DEFAULT_GROUP_ID)) == _usable(manager, "default")
    public_kp, private_grp, inactive, elsewhere = (f"sg-{_uid()}" for _ in range(4))
    _create_sg(manager, public_kp)
    _create_sg(manager, private_grp, is_public=False)
    _create_sg(manager, inactive, is_active=False)
    _create_sg(manager, elsewhere)
    _mutate(manager, ASSOC["keypair"][0], {"s": public_kp, "t": USER["access_key"]})
    _mutate(manager, ASSOC["group"][0], {"s": private_grp, "t": str(DEFAULT_GROUP_ID)})
    _mutate(manager, ASSOC["domain"][0], {"s": inactive, "t": "default"})
    user_sees, admin_sees = _usable(manager, "default"), _usable(manager, "default", who=ADMIN)
    assert public_kp in user_sees and private_grp not in user_sees  # private ones: admins only
    assert private_grp in admin_sees and public_kp not in admin_sees  # the keypair association is USER's
    assert inactive not in user_sees + admin_sees and elsewhere not in user_sees + admin_sees
    problem(manager.request("GET", "/scaling-groups?group=no-such-group"), 404, "no-such-group")
    problem(manager.request("GET", "/scaling-groups"), 400, "group")
    # A group of the user's domain that the user is not a member of.
    lonely = _group(manager)
    problem(manager.request("GET", f"/scaling-groups?group={lonely}"), 403, "member")
    lonely_admin = _usable(manager, lonely, who=ADMIN)
    assert "default" in lonely_admin and private_grp not in lonely_admin  # domain association only


def test_rest_resource_slots(manager: Any) -> None:
    r = manager.request("GET", "/config/resource-slots")
    assert r.status_code == 200, r.text
    assert r.json()["cpu"] == "count" and r.json()["mem"] == "bytes"
    unsigned = httpx.get(manager.endpoint + "/config/resource-slots")
    assert unsigned.status_code == 401


# --- resource presets ---------------------------------------------------------------------------------

CREATE_PRESET = (
    "mutation($n: String!, $p: CreateResourcePresetInput!) { create_resource_preset(name: $n, "
    "props: $p) { ok msg resource_preset { name resource_slots shared_memory } } }"
)
MODIFY_PRESET = (
    "mutation($n: String!, $p: ModifyResourcePresetInput!) { modify_resource_preset(name: $n, props: $p) { ok msg } }"
)
DELETE_PRESET = "mutation($n: String!) { delete_resource_preset(name: $n) { ok msg } }"
GET_PRESET = "query($n: String!) { resource_preset(name: $n) { name resource_slots shared_memory } }"


def _preset(m: Requester, name: str, who: dict[str, Any] = ADMIN) -> dict[str, Any] | None:
    found: dict[str, Any] | None = m.gql(GET_PRESET, {"n": name}, who=who)["resource_preset"]
    if found is not None:
        found["resource_slots"] = json.loads(found["resource_slots"])
    return found


def test_resource_preset_crud(manager: Any) -> None:
    name = f"small-{_uid()}"
    created = _mutate(
        manager,
        CREATE_PRESET,
        {"n": name, "p": {"resource_slots": json.dumps({"cpu": "1", "mem": "1g"}), "shared_memory": "64m"}},
    )["resource_preset"]
    assert created == {
        "name": name,
        "resource_slots": json.dumps({"cpu": "1", "mem": str(2**30)}),
        "shared_memory": 64 * 2**20,
    }
    # Everyone may read presets.
    assert _preset(manager, name, who=USER) == {
        "name": name,
        "resource_slots": {"cpu": "1", "mem": str(2**30)},
        "shared_memory": 64 * 2**20,
    }
    listed = manager.gql("{ resource_presets { name } }", who=USER)["resource_presets"]
    assert {"name": name} in listed
    _mutate(manager, MODIFY_PRESET, {"n": name, "p": {"resource_slots": {"cpu": "2", "mem": "2g"}}})
    after = _preset(manager, name)
    assert after is not None and after["resource_slots"] == {"cpu": "2", "mem": str(2 * 2**30)}
    assert after["shared_memory"] == 64 * 2**20  # not given: unchanged
    _mutate(manager, MODIFY_PRESET, {"n": name, "p": {"shared_memory": ""}})
    cleared = _preset(manager, name)
    assert cleared is not None and cleared["shared_memory"] is None
    _mutate(manager, MODIFY_PRESET, {"n": name, "p": {"shared_memory": "1073741824"}})
    again = _preset(manager, name)
    assert again is not None and again["shared_memory"] == 2**30
    _mutate(manager, DELETE_PRESET, {"n": name})
    assert _preset(manager, name) is None
    _refused(manager, 404, DELETE_PRESET, {"n": name}, words=(name,))
    _refused(manager, 404, MODIFY_PRESET, {"n": name, "p": {"shared_memory": "1m"}}, words=(name,))


@pytest.mark.parametrize(
    "props,words",
    [
        ({"resource_slots": json.dumps({"cpu": "1", "mem": "lots"})}, ("mem",)),
        ({"resource_slots": json.dumps({"cpu": "-1"})}, ("cpu",)),
        ({"resource_slots": "{}"}, ("at least one",)),
        ({"resource_slots": json.dumps(["cpu"])}, ("resource_slots",)),
        ({"resource_slots": json.dumps({"cpu": "Infinity"})}, ("finite",)),
        ({"resource_slots": json.dumps({"Bad Slot": "1"})}, ("slot",)),
        ({"resource_slots": json.dumps({"cpu": "1", "mem": "1g"}), "shared_memory": "huge"}, ("shared_memory",)),
        ({"resource_slots": json.dumps({"cpu": "1", "mem": "1g"}), "shared_memory": "2g"}, ("exceed",)),
    ],
)
def test_resource_preset_rejects_bad_values(manager: Any, props: dict[str, Any], words: tuple[str, ...]) -> None:
    name = f"bad-{_uid()}"
    _refused(manager, 400, CREATE_PRESET, {"n": name, "p": props}, words=words)
    assert _preset(manager, name) is None


def test_resource_preset_refusals_change_nothing(manager: Any) -> None:
    name = f"p-{_uid()}"
    _mutate(manager, CREATE_PRESET, {"n": name, "p": {"resource_slots": {"cpu": "1", "mem": "512m"}}})
    before = _preset(manager, name)
    _refused(manager, 409, CREATE_PRESET, {"n": name, "p": {"resource_slots": {"cpu": "4"}}}, words=("exists",))
    _refused(
        manager,
        400,
        MODIFY_PRESET,
        {"n": name, "p": {"resource_slots": {"cpu": "2", "mem": "512m"}, "shared_memory": "1g"}},
        words=("exceed",),
    )
    _refused(manager, 400, MODIFY_PRESET, {"n": name, "p": {"shared_memory": "1g"}}, words=("exceed",))
    _refused(manager, 400, MODIFY_PRESET, {"n": name, "p": {"resource_slots": {"mem": "x"}}})
    _refused(manager, 403, CREATE_PRESET, {"n": name + "u", "p": {"resource_slots": {"cpu": "1"}}}, who=USER)
    _refused(manager, 403, MODIFY_PRESET, {"n": name, "p": {"resource_slots": {"cpu": "9"}}}, who=USER)
    _refused(manager, 403, DELETE_PRESET, {"n": name}, who=USER)
    _refused(manager, 400, CREATE_PRESET, {"n": "bad name", "p": {"resource_slots": {"cpu": "1"}}}, words=("name",))
    assert _preset(manager, name) == before
    assert _preset(manager, name + "u") is None


def test_rest_presets_hide_slot_types_the_cluster_lacks(manager: Any) -> None:
    name = f"gpu-{_uid()}"
    _mutate(
        manager,
        CREATE_PRESET,
        {"n": name, "p": {"resource_slots": {"cpu": "1", "mem": "1g", "cuda.device": "1"}, "shared_memory": "1m"}},
    )
    gql_view = _preset(manager, name)
    assert gql_view is not None and gql_view["resource_slots"]["cuda.device"] == "1"
    r = manager.request("GET", "/resource/presets")
    assert r.status_code == 200, r.text
    (rest_view,) = [p for p in r.json()["presets"] if p["name"] == name]
    assert rest_view == {"name": name, "resource_slots": {"cpu": "1", "mem": str(2**30)}, "shared_memory": 2**20}
    _mutate(manager, DELETE_PRESET, {"n": name})


# --- REST: check-presets ------------------------------------------------------------------------------


def _check(m: Requester, body: dict[str, Any], who: dict[str, Any] = USER) -> dict[str, Any]:
    r = m.request("POST", "/resource/check-presets", body, who=who)
    assert r.status_code == 200, r.text
    out: dict[str, Any] = r.json()
    return out


def test_check_presets_without_agents(manager: Any) -> None:
    name = f"cp-{_uid()}"
    _mutate(manager, CREATE_PRESET, {"n": name, "p": {"resource_slots": {"cpu": "1", "mem": "1g"}}})
    who = _account(manager, role="user", group_ids=[str(DEFAULT_GROUP_ID)])
    out = _check(manager, {}, who=who)
    assert out["keypair_limits"] == {"cpu": "Infinity", "mem": "Infinity"}  # the default policy: UNLIMITED
    assert out["keypair_using"] == {"cpu": "0", "mem": "0"}
    assert out["keypair_remaining"] == {"cpu": "Infinity", "mem": "Infinity"}
    assert out["scaling_group_remaining"] == {"cpu": "0", "mem": "0"}  # no agents
    zero = {"cpu": "0", "mem": "0"}
    assert out["scaling_groups"]["default"] == {"using": zero, "remaining": zero}
    (mine,) = [p for p in out["presets"] if p["name"] == name]
    assert mine["allocatable"] is False and mine["resource_slots"] == {"cpu": "1", "mem": str(2**30)}
    assert _check(manager, {"scaling_group": "default", "group": "default"}, who=who)["scaling_groups"].keys() == {
        "default"
    }
    problem(manager.request("POST", "/resource/check-presets", {"scaling_group": "nope-sg"}), 404, "nope-sg")
    problem(manager.request("POST", "/resource/check-presets", {"group": "nope-grp"}), 404, "nope-grp")
    problem(manager.request("POST", "/resource/check-presets", {"scaling_group": 5}), 400, "scaling_group")
    hidden = f"sg-{_uid()}"
    _create_sg(manager, hidden)  # associated with nothing
    problem(manager.request("POST", "/resource/check-presets", {"scaling_group": hidden}), 403, hidden)
    _mutate(manager, DELETE_PRESET, {"n": name})


def test_check_presets_follows_a_limited_policy(manager: Any) -> None:
    policy = f"pol-{_uid()}"
    props = {
        "default_for_unspecified": "LIMITED",
        "total_resource_slots": json.dumps({"cpu": "2"}),
        "max_concurrent_sessions": 3,
        "max_containers_per_session": 1,
        "idle_timeout": 600,
        "max_vfolder_count": 1,
        "max_vfolder_size": 0,
    }
    _mutate(
        manager,
        "mutation($n: String!, $p: CreateKeyPairResourcePolicyInput!) { "
        "create_keypair_resource_policy(name: $n, props: $p) { ok msg } }",
        {"n": policy, "p": props},
    )
    who = _account(manager, role="user", group_ids=[str(DEFAULT_GROUP_ID)])
    _mutate(
        manager,
        "mutation($a: String!, $p: ModifyKeyPairInput!) { modify_keypair(access_key: $a, props: $p) { ok msg } }",
        {"a": who["access_key"], "p": {"resource_policy": policy}},
    )
    out = _check(manager, {}, who=who)
    assert out["keypair_limits"] == {"cpu": "2", "mem": "0"}  # LIMITED: unspecified slots are zero
    assert out["keypair_remaining"] == {"cpu": "2", "mem": "0"}


# --- sessions without an agent: scoping refusals ------------------------------------------------------

LIST = (
    "query($d: String, $g: String, $a: String, $s: String, $k: String, $o: Boolean, $f: String) { "
    "compute_session_list(limit: 50, offset: 0, domain_name: $d, group_id: $g, access_key: $a, status: $s, "
    "order_key: $k, order_asc: $o, filter: $f) { total_count items { id name access_key domain_name } } }"
)


def test_session_list_scope_refusals(manager: Any) -> None:
    _refused(manager, 403, LIST, {"d": "other-domain"}, who=USER, words=("own domain",))
    _refused(manager, 403, LIST, {"a": ADMIN["access_key"]}, who=USER, words=("own access key",))
    admin = _account(manager, role="admin")
    _refused(manager, 403, LIST, {"d": "other-domain"}, who=admin, words=("own domain",))
    assert manager.gql(LIST, {"d": "other-domain"})["compute_session_list"]["total_count"] == 0
    _refused(manager, 400, LIST, {"s": "SLEEPING"}, words=("SLEEPING",))
    _refused(manager, 400, LIST, {"k": "password"}, words=("order_key",))
    _refused(manager, 400, LIST, {"g": "not-a-uuid"}, words=("uuid",))
    _refused(manager, 400, LIST, {"f": "name ==="})
    _refused(manager, 400, "{ compute_session_list(limit: 1000, offset: 0) { total_count } }", words=("limit",))
    bad_id = manager.request(
        "POST", "/admin/graphql", {"query": '{ compute_container_list(session_id: "x") { total_count } }'}
    )
    problem(bad_id, 400, "GraphQL")
    assert "UUID" in json.dumps(bad_id.json()["errors"])
    _refused(
        manager, 404, '{ compute_container_list(session_id: "00000000-0000-0000-0000-000000000000") { total_count } }'
    )
    none = manager.gql('{ compute_container(id: "00000000-0000-0000-0000-000000000000") { id } }')
    assert none["compute_container"] is None


def test_agent_and_image_roles_without_agents(manager: Any) -> None:
    assert manager.gql("{ agent_list(limit: 10, offset: 0) { total_count items { id } } }")["agent_list"] == {
        "total_count": 0,
        "items": [],
    }
    for who in (USER, _account(manager, role="admin")):
        _refused(manager, 403, "{ agent_list(limit: 10, offset: 0) { total_count } }", who=who)
        _refused(manager, 403, '{ agent(agent_id: "x") { id } }', who=who)
        _refused(manager, 403, "{ agents { id } }", who=who)
    monitor = _account(manager, role="monitor")
    assert manager.gql("{ agents { id } }", who=monitor) == {"agents": []}
    _refused(manager, 400, '{ agents(status: "DEAD") { id } }', words=("DEAD",))
    _refused(manager, 400, '{ agent_list(limit: 5, offset: 0, order_key: "secret") { total_count } }')
    assert manager.gql("{ images { name } }", who=USER) == {"images": []}
    assert manager.gql('{ image(reference: "nothing") { name } }') == {"image": None}
    _refused(manager, 404, 'mutation { alias_image(alias: "a1", target: "nothing") { ok } }', words=("nothing",))
    _refused(manager, 404, 'mutation { dealias_image(alias: "a1") { ok } }', words=("a1",))
    _refused(manager, 403, 'mutation { dealias_image(alias: "a1") { ok } }', who=USER)
    _refused(manager, 403, 'mutation { rescan_images(registry: "local") { ok } }', who=USER)
    _refused(manager, 404, 'mutation { rescan_images(registry: "docker.io") { ok } }', words=("registry",))
    for op in ("preload_image", "unload_image"):
        _refused(
            manager,
            400,
            f'mutation {{ {op}(reference: "python", target_agents: "*") {{ ok }} }}',
            words=("not supported",),
        )
    rescan = manager.gql("mutation { rescan_images { ok msg task_id } }")["rescan_images"]
    assert rescan["ok"] is True and "heartbeat" in rescan["msg"]
    uuid.UUID(rescan["task_id"])  # a background task (GET /events/background-task)


# --- with a real agent --------------------------------------------------------------------------------


@pytest.mark.docker
def test_agents_and_containers_with_a_real_agent(cluster: Any) -> None:
    name = f"gqlres-{_uid()}"
    r = cluster.request(
        "POST",
        "/session",
        {"image": "python", "name": name, "config": {"resources": {"cpu": "1", "mem": "256m"}}},
        who=USER,
    )
    assert r.status_code == 201, r.text
    sid = r.json()["sessionId"]
    cluster.wait_for_status(name, "RUNNING", who=USER)
    try:
        agents = cluster.gql(
            '{ agent_list(limit: 10, offset: 0, status: "ALIVE", order_key: "id", '
            "order_asc: false) { total_count items { id status scaling_group available_slots "
            "occupied_slots addr mem_slots cpu_slots used_cpu_slots used_mem_slots "
            'live_stat cpu_cur_pct mem_cur_bytes compute_containers(status: "RUNNING") '
            "{ id session_id agent status } } } }"
        )["agent_list"]
        (agent,) = [a for a in agents["items"] if a["id"] == cluster.agent_id]
        assert agent["status"] == "ALIVE" and agent["scaling_group"] == "default"
        assert agent["cpu_slots"] == 4.0 and agent["mem_slots"] == 4096
        assert json.loads(agent["available_slots"]) == {"cpu": "4", "mem": str(4 * 2**30)}
        assert agent["used_cpu_slots"] >= 1.0 and agent["used_mem_slots"] >= 256
        live = json.loads(agent["live_stat"])
        assert 0 < live["mem_used_bytes"] <= live["mem_total_bytes"]
        assert agent["mem_cur_bytes"] == live["mem_used_bytes"]
        assert agent["cpu_cur_pct"] is None or 0.0 <= agent["cpu_cur_pct"] <= 100.0
        mine = [c for c in agent["compute_containers"] if c["session_id"] == sid]
        assert len(mine) == 1 and mine[0]["agent"] == cluster.agent_id and mine[0]["status"] == "RUNNING"
        one = cluster.gql(
            "query($a: String!) { agent(agent_id: $a) { id version architecture } }", {"a": cluster.agent_id}
        )["agent"]
        assert one["id"] == cluster.agent_id and one["version"]
        filtered = cluster.gql(
            '{ agent_list(limit: 10, offset: 0, filter: "scaling_group == \\"nope\\"") { total_count } }'
        )["agent_list"]
        assert filtered["total_count"] == 0
        _refused(cluster, 403, "{ agent_list(limit: 10, offset: 0) { total_count } }", who=USER)

        # Containers: the agent is shown to the superadmin only.
        q = (
            "query($s: UUID!) { compute_session(id: $s) { id name containers { id role hostname agent status "
            "occupied_slots session_id } } }"
        )
        as_user = cluster.gql(q, {"s": sid}, who=USER)["compute_session"]
        as_admin = cluster.gql(q, {"s": sid})["compute_session"]
        (uc,), (ac,) = as_user["containers"], as_admin["containers"]
        assert uc["agent"] is None and ac["agent"] == cluster.agent_id
        assert uc["role"] == "main" and uc["status"] == "RUNNING" and uc["session_id"] == sid
        assert json.loads(uc["occupied_slots"]) == {"cpu": "1", "mem": str(256 * 2**20)}
        kid = uc["id"]
        cq = "query($k: UUID!) { compute_container(id: $k) { id agent session_id } }"
        assert cluster.gql(cq, {"k": kid}, who=USER)["compute_container"] == {
            "id": kid,
            "agent": None,
            "session_id": sid,
        }
        assert cluster.gql(cq, {"k": kid})["compute_container"]["agent"] == cluster.agent_id
        lq = (
            "query($s: UUID!, $r: String) { compute_container_list(session_id: $s, limit: 10, offset: 0, role: $r) "
            "{ total_count items { id } } }"
        )
        assert cluster.gql(lq, {"s": sid}, who=USER)["compute_container_list"] == {
            "total_count": 1,
            "items": [{"id": kid}],
        }
        assert cluster.gql(lq, {"s": sid, "r": "master"})["compute_container_list"]["total_count"] == 1
        assert cluster.gql(lq, {"s": sid, "r": "sub"})["compute_container_list"]["total_count"] == 0

        # Scoping: a domain admin sees the user's session, an admin of another domain and other users do not.
        dom_admin = _account(cluster, role="admin")
        other_dom = _domain(cluster)
        foreign_admin = _account(cluster, role="admin", domain=other_dom)
        other_user = _account(cluster, role="user", group_ids=[str(DEFAULT_GROUP_ID)])
        names = [i["name"] for i in cluster.gql(LIST, {}, who=dom_admin)["compute_session_list"]["items"]]
        assert name in names
        by_key = cluster.gql(LIST, {"a": USER["access_key"], "s": "RUNNING"}, who=dom_admin)
        assert all(i["access_key"] == USER["access_key"] for i in by_key["compute_session_list"]["items"])
        assert name in [i["name"] for i in by_key["compute_session_list"]["items"]]
        assert cluster.gql(q, {"s": sid}, who=dom_admin)["compute_session"]["containers"][0]["agent"] is None
        assert cluster.gql(LIST, {}, who=foreign_admin)["compute_session_list"]["total_count"] == 0
        assert cluster.gql(q, {"s": sid}, who=foreign_admin)["compute_session"] is None
        _refused(cluster, 403, LIST, {"d": "default"}, who=foreign_admin)
        seen = cluster.gql(LIST, {}, who=other_user)["compute_session_list"]["items"]
        assert name not in [i["name"] for i in seen]
        assert cluster.gql(q, {"s": sid}, who=other_user)["compute_session"] is None
        assert cluster.gql(cq, {"k": kid}, who=other_user)["compute_container"] is None
        problem(cluster.gql_request(lq, {"s": sid}, who=other_user), 404)
        # The superadmin narrows by domain, group and ordering.
        in_grp = cluster.gql(
            LIST, {"d": "default", "g": str(DEFAULT_GROUP_ID), "k": "created_at", "o": False, "f": f'name == "{name}"'}
        )["compute_session_list"]
        assert [i["name"] for i in in_grp["items"]] == [name] and in_grp["total_count"] == 1

        # Capacity as check-presets reports it.
        preset = f"cp-{_uid()}"
        _mutate(cluster, CREATE_PRESET, {"n": preset, "p": {"resource_slots": {"cpu": "1", "mem": "512m"}}})
        huge = f"huge-{_uid()}"
        _mutate(cluster, CREATE_PRESET, {"n": huge, "p": {"resource_slots": {"cpu": "1", "mem": "64g"}}})
        out = _check(cluster, {"scaling_group": "default"})
        assert float(out["keypair_using"]["cpu"]) >= 1
        remaining = out["scaling_groups"]["default"]["remaining"]
        assert int(remaining["mem"]) <= 4 * 2**30 - 256 * 2**20 and out["scaling_group_remaining"] == remaining
        flags = {p["name"]: p["allocatable"] for p in out["presets"]}
        assert flags[preset] is True and flags[huge] is False
        for p in (preset, huge):
            _mutate(cluster, DELETE_PRESET, {"n": p})

        # A scaling group with an agent cannot be deleted.
        _refused(cluster, 409, 'mutation { delete_scaling_group(name: "default") { ok } }', words=(cluster.agent_id,))
        assert _sg(cluster, "default") is not None
    finally:
        cluster.request("DELETE", f"/session/{name}", who=USER)
    finished = cluster.gql("query($s: UUID!) { compute_session(id: $s) { status containers { status } } }", {"s": sid})[
        "compute_session"
    ]
    assert finished["status"] == "TERMINATED" and finished["containers"][0]["status"] == "TERMINATED"


@pytest.mark.docker
def test_images_with_a_real_agent(cluster: Any) -> None:
    fields = (
        "name tag registry reference digest aliases size_bytes installed installed_agents "
        "labels { key value } resource_limits { key min max } supported_accelerators"
    )
    img = cluster.gql(f'{{ image(reference: "python") {{ {fields} }} }}')["image"]
    assert img["name"] == "python" and img["registry"] == "local" and "python" in img["aliases"]
    assert img["installed"] is True and img["installed_agents"] == [cluster.agent_id]
    assert img["size_bytes"] > 0 and img["digest"]
    assert {"key": "ai.backend.kernelspec", "value": "1"} in img["labels"]
    limits = {r["key"]: (r["min"], r["max"]) for r in img["resource_limits"]}
    assert limits["cpu"] == ("1", "Infinity") and limits["mem"] == (str(128 * 2**20), "Infinity")
    as_user = cluster.gql(f"{{ images {{ {fields} }} }}", who=USER)["images"]
    (mine,) = [i for i in as_user if i["reference"] == img["reference"]]
    assert mine["installed"] is True and mine["installed_agents"] is None
    assert cluster.gql("{ images(is_installed: false) { name } }")["images"] == []
    assert img["reference"] in [
        i["reference"] for i in cluster.gql("{ images(is_operation: false) { reference } }")["images"]
    ]

    alias = f"py-{_uid()}"
    aq = "mutation($a: String!, $t: String!) { alias_image(alias: $a, target: $t) { ok msg } }"
    dq = "mutation($a: String!) { dealias_image(alias: $a) { ok msg } }"
    _refused(cluster, 403, aq, {"a": alias, "t": img["reference"]}, who=USER)
    _refused(cluster, 404, aq, {"a": alias, "t": "no-such-image:1"}, words=("no-such-image",))
    _refused(cluster, 400, aq, {"a": "has space", "t": img["reference"]}, words=("alias",))
    _refused(cluster, 409, aq, {"a": img["reference"], "t": "python"}, words=("image",))
    assert cluster.gql('{ image(reference: "has space") { name } }')["image"] is None
    _mutate(cluster, aq, {"a": alias, "t": img["reference"]})
    via_alias = cluster.gql("query($r: String!) { image(reference: $r) { reference aliases } }", {"r": alias})
    assert via_alias["image"]["reference"] == img["reference"] and alias in via_alias["image"]["aliases"]
    _refused(cluster, 409, aq, {"a": alias, "t": img["reference"]}, words=("already",))
    _refused(cluster, 409, aq, {"a": "python", "t": img["reference"]}, words=("already",))
    _refused(cluster, 403, dq, {"a": alias}, who=USER)
    _mutate(cluster, dq, {"a": alias})
    assert cluster.gql("query($r: String!) { image(reference: $r) { name } }", {"r": alias})["image"] is None
    _refused(cluster, 404, dq, {"a": alias}, words=(alias,))

    rescan = cluster.gql('mutation { rescan_images(registry: "local") { ok msg task_id } }')["rescan_images"]
    assert rescan["ok"] is True and "1 alive agent" in rescan["msg"]
    uuid.UUID(rescan["task_id"])
    _refused(
        cluster,
        409,
        "mutation($r: String!) { forget_image(reference: $r) { ok } }",
        {"r": img["reference"]},
        words=(cluster.agent_id,),
    )
    _refused(
        cluster,
        400,
        'mutation { preload_image(reference: "python", target_agents: "*") { ok task_id } }',
        words=("not supported",),
    )
    assert cluster.gql(f'{{ image(reference: "python") {{ {fields} }} }}')["image"]["installed"] is True
