"""``null`` in a ``Modify*Input`` leaves the field unchanged, for every modify mutation.

The official SDKs (22.03 and 19.09) send every field of a modify input, ``null`` for each option the
user did not give. Each test sends the exact document and variables of an official client's update call
with one option set, then reads the whole row back and checks that only that option changed.
"""

from __future__ import annotations

import json
import uuid
from typing import Any

from ai.backend.manager.fixtures import ADMIN
from ai.backend.testutils.cluster import Cluster


def _mutate_ok(m: Cluster, query: str, variables: dict[str, Any]) -> None:
    data = m.gql(query, variables)
    (result,) = data.values()
    assert result["ok"], result


def _changed(before: dict[str, Any], after: dict[str, Any]) -> set[str]:
    return {k for k in before if before[k] != after.get(k)}


def _name() -> str:
    return f"nulls-{uuid.uuid4().hex[:8]}"


DOMAIN_FIELDS = (
    "name description is_active total_resource_slots allowed_vfolder_hosts allowed_docker_registries integration_id"
)


def _domain(m: Cluster, name: str) -> dict[str, Any]:
    data = m.gql(f"query($name: String) {{ domain(name: $name) {{ {DOMAIN_FIELDS} }} }}", {"name": name})
    return dict(data["domain"])


def test_modify_domain_22_03_update_keeps_what_it_does_not_name(manager: Cluster) -> None:
    name = _name()
    _mutate_ok(
        m=manager,
        query="mutation($name: String!, $input: DomainInput!) { create_domain(name: $name, props: $input) { ok msg } }",
        variables={
            "name": name,
            "input": {
                "description": "before",
                "is_active": True,
                "total_resource_slots": '{"cpu": "8", "mem": "16g"}',
                "allowed_vfolder_hosts": ["local:volume1"],
                "allowed_docker_registries": ["cr.example.org"],
                "integration_id": "ext-1",
            },
        },
    )
    before = _domain(manager, name)
    # 22.03 `Domain.update(name, description='after')`: every other option null.
    _mutate_ok(
        manager,
        "mutation($name: String!, $input: ModifyDomainInput!) {\n"
        "    modify_domain(name: $name, props: $input) {\n        ok msg\n    }\n}\n",
        {
            "name": name,
            "input": {
                "name": None,
                "description": "after",
                "is_active": None,
                "total_resource_slots": None,
                "allowed_vfolder_hosts": None,
                "allowed_docker_registries": None,
                "integration_id": None,
            },
        },
    )
    after = _domain(manager, name)
    assert after["description"] == "after"
    assert _changed(before, after) == {"description"}, (before, after)


GROUP_FIELDS = "id name description is_active domain_name total_resource_slots allowed_vfolder_hosts integration_id"


def _group(m: Cluster, gid: str) -> dict[str, Any]:
    data = m.gql(f"query($id: UUID!) {{ group(id: $id) {{ {GROUP_FIELDS} }} }}", {"id": gid})
    return dict(data["group"])


def _new_group(m: Cluster) -> str:
    data = m.gql(
        "mutation($name: String!, $input: GroupInput!) { create_group(name: $name, props: $input) "
        "{ ok msg group { id } } }",
        {
            "name": _name(),
            "input": {
                "domain_name": "default",
                "description": "before",
                "is_active": True,
                "total_resource_slots": '{"cpu": "4"}',
                "allowed_vfolder_hosts": ["local:volume1"],
                "integration_id": "g-1",
            },
        },
    )
    return str(data["create_group"]["group"]["id"])


def test_modify_group_22_03_update_keeps_what_it_does_not_name(manager: Cluster) -> None:
    gid = _new_group(manager)
    before = _group(manager, gid)
    # 22.03 `Group.update(gid, description='after')`.
    _mutate_ok(
        manager,
        "mutation($gid: UUID!, $input: ModifyGroupInput!) {\n"
        "    modify_group(gid: $gid, props: $input) {\n        ok msg\n    }\n}\n",
        {
            "gid": gid,
            "input": {
                "name": None,
                "description": "after",
                "is_active": None,
                "total_resource_slots": None,
                "allowed_vfolder_hosts": None,
                "integration_id": None,
            },
        },
    )
    after = _group(manager, gid)
    assert after["description"] == "after"
    assert _changed(before, after) == {"description"}, (before, after)


def test_modify_group_19_09_update_declares_gid_as_string(manager: Cluster) -> None:
    gid = _new_group(manager)
    before = _group(manager, gid)
    # 19.09 `Group.update(gid, description='after')`: `$gid: String!` where the schema has `UUID`.
    _mutate_ok(
        manager,
        "mutation($gid: String!, $input: ModifyGroupInput!) {\n"
        "  modify_group(gid: $gid, props: $input) {\n    ok msg\n  }\n}\n",
        {"gid": gid, "input": {"name": None, "description": "after", "is_active": None, "total_resource_slots": None}},
    )
    after = _group(manager, gid)
    assert _changed(before, after) == {"description"}, (before, after)


POLICY_FIELDS = (
    "name default_for_unspecified total_resource_slots max_concurrent_sessions "
    "max_containers_per_session idle_timeout max_vfolder_count max_vfolder_size allowed_vfolder_hosts"
)


def _policy(m: Cluster, name: str) -> dict[str, Any]:
    data = m.gql(
        f"query($name: String) {{ keypair_resource_policy(name: $name) {{ {POLICY_FIELDS} }} }}", {"name": name}
    )
    return dict(data["keypair_resource_policy"])


def test_modify_keypair_resource_policy_22_03_update_keeps_hosts(manager: Cluster) -> None:
    name = _name()
    _mutate_ok(
        manager,
        "mutation($name: String!, $input: CreateKeyPairResourcePolicyInput!) { "
        "create_keypair_resource_policy(name: $name, props: $input) { ok msg } }",
        {
            "name": name,
            "input": {
                "default_for_unspecified": "UNLIMITED",
                "total_resource_slots": '{"cpu": "4"}',
                "max_concurrent_sessions": 5,
                "max_containers_per_session": 2,
                "idle_timeout": 1800,
                "max_vfolder_count": 10,
                "max_vfolder_size": 1073741824,
                "allowed_vfolder_hosts": ["local:volume1"],
            },
        },
    )
    before = _policy(manager, name)
    # 22.03 `admin keypair-resource-policy update NAME --idle-timeout 60`: the CLI passes None for the rest.
    _mutate_ok(
        manager,
        "mutation($name: String!, $input: ModifyKeyPairResourcePolicyInput!) {"
        "  modify_keypair_resource_policy(name: $name, props: $input) {    ok msg  }}",
        {
            "name": name,
            "input": {
                "default_for_unspecified": None,
                "total_resource_slots": None,
                "max_concurrent_sessions": None,
                "max_containers_per_session": None,
                "max_vfolder_count": None,
                "max_vfolder_size": None,
                "idle_timeout": 60,
                "allowed_vfolder_hosts": None,
            },
        },
    )
    after = _policy(manager, name)
    assert after["idle_timeout"] == 60 and after["allowed_vfolder_hosts"] == ["local:volume1"]
    assert _changed(before, after) == {"idle_timeout"}, (before, after)


USER_FIELDS = "email username full_name description need_password_change domain_name role status groups { id }"


def _user(m: Cluster, email: str) -> dict[str, Any]:
    data = m.gql(f"query($email: String) {{ user(email: $email) {{ {USER_FIELDS} }} }}", {"email": email})
    return dict(data["user"])


def test_modify_user_22_03_update_keeps_full_name_and_description(manager: Cluster) -> None:
    email = f"{_name()}@example.org"
    _mutate_ok(
        manager,
        "mutation($email: String!, $props: UserInput!) { create_user(email: $email, props: $props) { ok msg } }",
        {
            "email": email,
            "props": {
                "username": email.split("@")[0],
                "password": "pw-1234-x",
                "full_name": "Full Name",
                "description": "about",
                "domain_name": "default",
                "role": "user",
                "status": "active",
            },
        },
    )
    before = _user(manager, email)
    # 22.03 `admin user update EMAIL -u NEW -r user -s active` (no -n): full_name, description, password,
    # domain, need_password_change and group_ids are sent as null.
    new_username = _name()
    _mutate_ok(
        manager,
        "mutation($email: String!, $input: ModifyUserInput!) {\n"
        "    modify_user(email: $email, props: $input) {\n        ok msg\n    }\n}\n",
        {
            "email": email,
            "input": {
                "password": None,
                "username": new_username,
                "full_name": None,
                "domain_name": None,
                "role": "user",
                "status": "active",
                "need_password_change": None,
                "description": None,
                "group_ids": None,
            },
        },
    )
    after = _user(manager, email)
    assert after["username"] == new_username and after["full_name"] == "Full Name" and after["description"] == "about"
    assert _changed(before, after) == {"username"}, (before, after)


KEYPAIR_FIELDS = "access_key is_active is_admin resource_policy rate_limit"


def test_modify_keypair_22_03_update_keeps_what_it_does_not_name(manager: Cluster) -> None:
    email = f"{_name()}@example.org"
    _mutate_ok(
        manager,
        "mutation($email: String!, $props: UserInput!) { create_user(email: $email, props: $props) { ok msg } }",
        {"email": email, "props": {"password": "pw-1234-x", "domain_name": "default"}},
    )
    ak = manager.gql("query($email: String) { keypairs(email: $email) { access_key } }", {"email": email})["keypairs"][
        0
    ]["access_key"]
    query = f"query($ak: String) {{ keypair(access_key: $ak) {{ {KEYPAIR_FIELDS} }} }}"
    before = dict(manager.gql(query, {"ak": ak})["keypair"])
    # 22.03 `KeyPair.update(ak, rate_limit=1234)`.
    _mutate_ok(
        manager,
        "mutation($access_key: String!, $input: ModifyKeyPairInput!) {"
        "  modify_keypair(access_key: $access_key, props: $input) {    ok msg  }}",
        {"access_key": ak, "input": {"is_active": None, "is_admin": None, "resource_policy": None, "rate_limit": 1234}},
    )
    after = dict(manager.gql(query, {"ak": ak})["keypair"])
    assert after["rate_limit"] == 1234
    assert _changed(before, after) == {"rate_limit"}, (before, after)


SGROUP_FIELDS = "name description is_active driver driver_opts scheduler scheduler_opts"


def test_modify_scaling_group_22_03_update_keeps_driver_and_scheduler(manager: Cluster) -> None:
    name = _name()
    # 22.03 `ScalingGroup.create` declares `CreateScalingGroupInput` (the server's type is ScalingGroupInput).
    _mutate_ok(
        manager,
        "mutation($name: String!, $input: CreateScalingGroupInput!) {\n"
        "    create_scaling_group(name: $name, props: $input) {\n        ok msg scaling_group { name }\n"
        "    }\n}\n",
        {
            "name": name,
            "input": {
                "description": "before",
                "is_active": True,
                "driver": "static",
                "driver_opts": json.dumps({"x": "1"}),
                "scheduler": "drf",
                "scheduler_opts": json.dumps({"allowed_session_types": ["interactive"]}),
            },
        },
    )
    query = f"query($name: String) {{ scaling_group(name: $name) {{ {SGROUP_FIELDS} }} }}"
    before = dict(manager.gql(query, {"name": name})["scaling_group"])
    # 22.03 `ScalingGroup.update(name, description='after')` (its defaults send is_active: true).
    _mutate_ok(
        manager,
        "mutation($name: String!, $input: ModifyScalingGroupInput!) {\n"
        "    modify_scaling_group(name: $name, props: $input) {\n        ok msg\n    }\n}\n",
        {
            "name": name,
            "input": {
                "description": "after",
                "is_active": True,
                "driver": None,
                "driver_opts": None,
                "scheduler": None,
                "scheduler_opts": None,
            },
        },
    )
    after = dict(manager.gql(query, {"name": name})["scaling_group"])
    assert after["description"] == "after" and after["scheduler"] == "drf"
    assert _changed(before, after) == {"description"}, (before, after)


def test_modify_resource_preset_null_keeps_slots(manager: Cluster) -> None:
    name = _name()
    _mutate_ok(
        manager,
        "mutation($name: String!, $props: CreateResourcePresetInput!) { "
        "create_resource_preset(name: $name, props: $props) { ok msg } }",
        {"name": name, "props": {"resource_slots": '{"cpu": "2", "mem": "2g"}', "shared_memory": "64m"}},
    )
    query = "query($name: String!) { resource_preset(name: $name) { name resource_slots shared_memory } }"
    before = dict(manager.gql(query, {"name": name})["resource_preset"])
    _mutate_ok(
        manager,
        "mutation($name: String!, $props: ModifyResourcePresetInput!) { "
        "modify_resource_preset(name: $name, props: $props) { ok msg } }",
        {"name": name, "props": {"resource_slots": None, "shared_memory": "128m"}},
    )
    after = dict(manager.gql(query, {"name": name})["resource_preset"])
    assert _changed(before, after) == {"shared_memory"}, (before, after)


def test_all_null_modify_is_refused_and_changes_nothing(manager: Cluster) -> None:
    name = _name()
    _mutate_ok(
        manager,
        "mutation($name: String!, $input: DomainInput!) { create_domain(name: $name, props: $input) { ok msg } }",
        {"name": name, "input": {"description": "kept"}},
    )
    before = _domain(manager, name)
    r = manager.request(
        "POST",
        "/admin/gql",
        {
            "query": "mutation($name: String!, $input: ModifyDomainInput!) { modify_domain(name: $name, props: $input) "
            "{ ok msg } }",
            "variables": {"name": name, "input": {"name": None, "description": None, "total_resource_slots": None}},
        },
        who=ADMIN,
    )
    assert r.status_code == 400 and "Nothing to update" in r.text, r.text
    assert _domain(manager, name) == before
