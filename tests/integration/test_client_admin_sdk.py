"""The admin SDK function classes (``api.Domain``, ``api.Group``, ``api.User``, ...) against a real manager.

Each test runs on a manager-only server (the ``manager`` fixture, on SQLite and on PostgreSQL) and
builds uniquely-named targets.  What a call sent is checked by reading its effect back through
another call; refusals are checked for their status and for having changed nothing.  Argument
checks that fail before any request is sent are in ``tests/unit/test_client_admin_offline.py``.
"""

from __future__ import annotations

import json
import secrets
import uuid
from collections.abc import Iterator
from typing import Any

import httpx
import pytest

from ai.backend.client.config import APIConfig
from ai.backend.client.exceptions import BackendAPIError
from ai.backend.client.func import domain as domain_mod
from ai.backend.client.func import user as user_mod
from ai.backend.client.session import AsyncSession, Session
from ai.backend.manager.fixtures import DEFAULT_GROUP_ID

from .conftest import ADMIN, USER, Cluster

OK = {"ok": True, "msg": "success"}
PASSWORD = "pass-word-1"


def uniq(prefix: str) -> str:
    return f"{prefix}-{secrets.token_hex(3)}"


def config(manager: Cluster, who: dict[str, Any] = ADMIN, **kwargs: Any) -> APIConfig:
    return APIConfig(
        endpoint=manager.endpoint,
        endpoint_type="api",
        access_key=who["access_key"],
        secret_key=who["secret_key"],
        **kwargs,
    )


def session(manager: Cluster, who: dict[str, Any] = ADMIN) -> Session:
    return Session(config=config(manager, who))


@pytest.fixture
def api(manager: Cluster) -> Iterator[Session]:
    """A blocking SDK session as the superadmin."""
    with session(manager) as s:
        yield s


def names(items: list[dict[str, Any]], key: str = "name") -> set[str]:
    return {str(i[key]) for i in items}


def new_domain(api: Session) -> str:
    name = uniq("dom")
    assert api.Domain.create(name)["ok"] is True
    return name


def new_user(api: Session, domain: str = "default", **kwargs: Any) -> dict[str, Any]:
    """A new user; returns its uuid, email and main keypair (usable as ``who``)."""
    email = f"{uniq('u')}@example.org"
    res = api.User.create(domain, email, PASSWORD, **kwargs)
    assert res["ok"] is True, res
    (kp,) = api.KeyPair.list(email, fields=["access_key", "secret_key"])
    return {"email": email, "uuid": res["user"]["uuid"], **kp}


def refused(status: int, call: Any, *words: str) -> BackendAPIError:
    with pytest.raises(BackendAPIError) as info:
        call()
    assert info.value.status == status, info.value
    for word in words:
        assert word in str(info.value), (word, str(info.value))
    return info.value


# ---- domain ----


def test_domain_create_detail_list(api: Session) -> None:
    name = uniq("dom")
    res = api.Domain.create(
        name,
        "desc",
        total_resource_slots={"cpu": 4, "mem": "1g"},
        allowed_vfolder_hosts=["local"],
        fields=["name", "is_active", "total_resource_slots"],
    )
    assert res["ok"] is True and res["msg"] == "success"
    assert res["domain"]["name"] == name and res["domain"]["is_active"] is True
    assert json.loads(res["domain"]["total_resource_slots"]) == {"cpu": "4", "mem": str(2**30)}

    detail = api.Domain.detail(name)  # the default fields
    assert detail is not None and set(detail) == set(domain_mod.DEFAULT_FIELDS)
    assert detail["description"] == "desc" and detail["allowed_vfolder_hosts"] == ["local"]
    assert detail["allowed_docker_registries"] == [] and detail["integration_id"] is None
    assert api.Domain.detail(name, fields=["name", "is_active"]) == {"name": name, "is_active": True}
    assert api.Domain.detail(uniq("nope"), fields=["name"]) is None

    listed = {d["name"]: d for d in api.Domain.list(fields=["name", "total_resource_slots"])}
    assert {"default", name} <= set(listed)
    assert listed[name] == {"name": name, "total_resource_slots": detail["total_resource_slots"]}
    assert set(api.Domain.list()[0]) == set(domain_mod.DEFAULT_FIELDS)


def test_domain_is_active_filter(api: Session) -> None:
    off = uniq("dom")
    created = api.Domain.create(off, is_active=False, fields=["name", "is_active"])
    assert created["domain"] == {"name": off, "is_active": False}
    inactive = names(api.Domain.list(is_active=False, fields=["name"]))
    active = names(api.Domain.list(is_active=True, fields=["name"]))
    assert off in inactive and "default" not in inactive
    assert "default" in active and off not in active


def test_domain_update_and_delete(api: Session) -> None:
    name, renamed = uniq("dom"), uniq("dom")
    api.Domain.create(name, "before", total_resource_slots='{"cpu": 2}')
    assert (
        api.Domain.update(
            name, new_name=renamed, description="", allowed_docker_registries=["cr.example.org"], integration_id="ext-1"
        )
        == OK
    )
    assert api.Domain.detail(name) is None
    after = api.Domain.detail(renamed)
    assert after is not None
    assert after["description"] == "" and after["is_active"] is True
    assert after["allowed_docker_registries"] == ["cr.example.org"] and after["integration_id"] == "ext-1"
    assert json.loads(after["total_resource_slots"]) == {"cpu": "2"}  # not given: unchanged
    assert api.Domain.update(renamed, is_active=False, total_resource_slots={"cpu": 8}) == OK
    again = api.Domain.detail(renamed, fields=["is_active", "total_resource_slots"])
    assert again is not None and again["is_active"] is False
    assert json.loads(again["total_resource_slots"]) == {"cpu": "8"}
    api.Domain.update(renamed, is_active=True)

    assert api.Domain.delete(renamed) == OK
    assert api.Domain.detail(renamed, fields=["is_active"]) == {"is_active": False}  # soft delete
    refused(404, lambda: api.Domain.delete(uniq("nope")), "No such domain")
    refused(409, lambda: api.Domain.create("default"), "already exists")


# ---- group ----


def test_group_create_list_detail_from_name(api: Session) -> None:
    dom = new_domain(api)
    g1, g2 = uniq("grp"), uniq("grp")
    created = api.Group.create(dom, g1, "desc", total_resource_slots='{"cpu": 1}')
    assert created["ok"] is True
    gid1 = created["group"]["id"]
    assert created["group"] == {"id": gid1, "name": g1, "domain_name": dom}
    uuid.UUID(gid1)
    gid2 = api.Group.create(dom, g2, is_active=False, allowed_vfolder_hosts=["local"])["group"]["id"]

    listed = api.Group.list(dom, fields=["id", "name", "domain_name"])
    assert sorted(listed, key=lambda g: g["name"]) == sorted(
        [{"id": gid1, "name": g1, "domain_name": dom}, {"id": gid2, "name": g2, "domain_name": dom}],
        key=lambda g: g["name"],
    )
    assert names(api.Group.list(dom, fields=["name"], is_active=True)) == {g1}
    assert g1 not in names(api.Group.list("default", fields=["name"]))
    assert {g1, g2, "default"} <= names(api.Group.list(fields=["name"]))  # every domain

    detail = api.Group.detail(gid1, fields=["id", "name", "description", "is_active", "total_resource_slots"])
    assert detail is not None and json.loads(detail.pop("total_resource_slots")) == {"cpu": "1"}
    assert detail == {"id": gid1, "name": g1, "description": "desc", "is_active": True}
    assert api.Group.detail(gid2, fields=["allowed_vfolder_hosts", "is_active"]) == {
        "allowed_vfolder_hosts": ["local"],
        "is_active": False,
    }
    assert api.Group.detail(uuid.uuid4(), fields=["id"]) is None

    assert api.Group.from_name(g2, domain_name=dom, fields=["id"]) == [{"id": gid2}]
    assert api.Group.from_name(g2, fields=["id", "domain_name"]) == [{"id": gid2, "domain_name": dom}]
    assert api.Group.from_name(g2, domain_name="default", fields=["id"]) == []


def test_group_update_members_delete(api: Session) -> None:
    dom = new_domain(api)
    name, renamed = uniq("grp"), uniq("grp")
    gid = api.Group.create(dom, name, "desc")["group"]["id"]
    assert api.Group.update(gid, name=renamed, description="") == OK
    assert api.Group.detail(gid, fields=["name", "description"]) == {"name": renamed, "description": ""}

    a, b = new_user(api, dom), new_user(api, dom)
    assert api.Group.add_users(gid, [a["uuid"], uuid.UUID(b["uuid"])]) == OK
    members = api.User.list(group=gid, fields=["email"])
    assert names(members, "email") == {a["email"], b["email"]}
    assert api.User.detail(a["email"], fields=["groups { id name }"]) == {"groups": [{"id": gid, "name": renamed}]}
    assert api.Group.remove_users(gid, a["uuid"]) == OK  # a single UUID is accepted too
    assert names(api.User.list(group=gid, fields=["email"]), "email") == {b["email"]}
    refused(404, lambda: api.Group.add_users(gid, [str(uuid.uuid4())]))
    assert names(api.User.list(group=gid, fields=["email"]), "email") == {b["email"]}  # unchanged

    assert api.Group.delete(gid) == OK
    assert api.Group.detail(gid, fields=["is_active"]) == {"is_active": False}


# ---- user ----


def test_user_create_detail_update_delete(api: Session) -> None:
    dom = new_domain(api)
    gid = api.Group.create(dom, uniq("grp"))["group"]["id"]
    email = f"{uniq('n')}@example.org"
    res = api.User.create(
        dom, email, PASSWORD, full_name="N. N.", role="admin", group_ids=[gid], fields=["uuid", "email", "role"]
    )
    assert res["ok"] is True and res["user"]["email"] == email and res["user"]["role"] == "admin"
    uid = res["user"]["uuid"]
    got = api.User.detail(email)
    assert got is not None and set(got) == {f.split()[0] for f in user_mod.DEFAULT_FIELDS}
    assert {
        k: got[k]
        for k in (
            "uuid",
            "username",
            "need_password_change",
            "full_name",
            "description",
            "status",
            "domain_name",
            "role",
        )
    } == {
        "uuid": uid,
        "username": email,
        "need_password_change": False,
        "full_name": "N. N.",
        "description": "",
        "status": "active",
        "domain_name": dom,
        "role": "admin",
    }
    assert [g["id"] for g in got["groups"]] == [gid]
    assert api.User.detail_by_uuid(uid, fields=["uuid", "email"]) == {"uuid": uid, "email": email}
    assert api.User.detail(f"{uniq('ghost')}@example.org", fields=["email"]) is None
    # The password reached the server: it signs in.
    assert api.Auth.authorize(dom, email, PASSWORD)["role"] == "admin"

    assert api.User.update(email, status="inactive", need_password_change=True, group_ids=[], description="moved") == OK
    after = api.User.detail(email, fields=["status", "need_password_change", "groups { id }", "description"])
    assert after == {"status": "inactive", "need_password_change": True, "groups": [], "description": "moved"}
    api.User.update(email, username="nn", full_name="New Name", group_ids=gid)  # one group ID is accepted too
    assert api.User.detail(email, fields=["username", "full_name", "groups { id }"]) == {
        "username": "nn",
        "full_name": "New Name",
        "groups": [{"id": gid}],
    }

    assert api.User.delete(email) == OK
    assert api.User.detail(email, fields=["status"]) == {"status": "deleted"}
    assert [k["is_active"] for k in api.KeyPair.list(email, fields=["is_active"])] == [False]
    refused(404, lambda: api.User.update(f"{uniq('ghost')}@example.org", full_name="x"), "No such user")


def test_user_list_and_paginated_list(api: Session) -> None:
    dom = new_domain(api)
    gid = api.Group.create(dom, uniq("grp"))["group"]["id"]
    tag = secrets.token_hex(3)
    emails = [f"p{i}-{tag}@example.org" for i in range(3)]
    for i, email in enumerate(emails):
        api.User.create(dom, email, PASSWORD, group_ids=[gid], status="inactive" if i == 1 else "active")
    assert names(api.User.list(group=gid, fields=["email"]), "email") == set(emails)
    assert names(api.User.list(status="active", group=gid, fields=["email"]), "email") == {emails[0], emails[2]}
    assert api.User.list(status="inactive", group=str(gid), fields=["email"]) == [{"email": emails[1]}]
    assert api.User.list(status="before-verification", group=gid, fields=["email"]) == []

    page = api.User.paginated_list(
        fields=["email"], page_size=2, filter=f'email like "%-{tag}@example.org"', order="-email"
    )
    assert page.total_count == 3 and [i["email"] for i in page.items] == [emails[2], emails[1]]
    assert tuple(page.fields) == ("email",)
    rest = api.User.paginated_list(
        fields=["email"], page_offset=2, page_size=2, filter=f'email like "%-{tag}@example.org"', order="-email"
    )
    assert rest.total_count == 3 and rest.items == [{"email": emails[0]}]
    active = api.User.paginated_list("active", gid, fields=["email", "status"], order="email")
    assert active.total_count == 2 and active.items == [
        {"email": emails[0], "status": "active"},
        {"email": emails[2], "status": "active"},
    ]
    refused(400, lambda: api.User.paginated_list(fields=["email"], filter="password == 1"))


def test_user_detail_of_self(manager: Cluster, api: Session) -> None:
    assert api.User.detail(fields=["email", "role"]) == {"email": ADMIN["email"], "role": "superadmin"}
    with session(manager, USER) as user_api:
        assert user_api.User.detail(fields=["email", "role"]) == {"email": USER["email"], "role": "user"}
        me = user_api.User.detail_by_uuid(fields=["email", "uuid"])
        assert me is not None and me["email"] == USER["email"]
        assert user_api.User.detail_by_uuid(me["uuid"], fields=["email"]) == {"email": USER["email"]}


# ---- keypair ----


def test_keypair_create_update_list_delete(manager: Cluster, api: Session) -> None:
    policy = uniq("pol")
    api.KeypairResourcePolicy.create(policy)
    owner = new_user(api)
    res = api.KeyPair.create(owner["email"], is_admin=True, resource_policy=policy, rate_limit=100)
    assert res["ok"] is True and set(res["keypair"]) == {"access_key", "secret_key"}
    ak = res["keypair"]["access_key"]
    fields = ["user_id", "access_key", "is_active", "is_admin", "resource_policy", "rate_limit"]
    assert api.KeyPair(ak).info(fields=fields) == {
        "user_id": owner["email"],
        "access_key": ak,
        "is_active": True,
        "is_admin": True,
        "resource_policy": policy,
        "rate_limit": 100,
    }
    # The new keys sign requests, and KeyPair() is the caller's own keypair.
    with session(manager, res["keypair"]) as own:
        assert own.KeyPair().info(fields=["access_key", "user_id"]) == {"access_key": ak, "user_id": owner["email"]}

    assert api.KeyPair.update(ak, rate_limit=0, is_admin=False) == OK
    assert api.KeyPair(ak).info(fields=["rate_limit", "is_admin"]) == {"rate_limit": 0, "is_admin": False}
    assert api.KeyPair.update(ak, resource_policy="default") == OK
    assert api.KeyPair(ak).info(fields=["resource_policy"]) == {"resource_policy": "default"}

    assert api.KeyPair.deactivate(ak) == OK
    assert api.KeyPair(ak).info(fields=["is_active"]) == {"is_active": False}
    assert names(api.KeyPair.list(owner["email"], is_active=True, fields=["access_key"]), "access_key") == {
        owner["access_key"]
    }
    assert api.KeyPair.list(owner["email"], is_active=False, fields=["access_key"]) == [{"access_key": ak}]
    page = api.KeyPair.paginated_list(False, "default", user_id=owner["email"], fields=["access_key"])
    assert page.total_count == 1 and page.items == [{"access_key": ak}]
    assert api.KeyPair.paginated_list(False, uniq("nodom"), user_id=owner["email"], fields=["access_key"]).items == []
    both = api.KeyPair.paginated_list(user_id=owner["email"], fields=["access_key"], page_size=1)
    assert both.total_count == 2 and len(both.items) == 1
    assert api.KeyPair.activate(ak) == OK
    assert api.KeyPair(ak).info(fields=["is_active"]) == {"is_active": True}

    assert api.KeyPair.delete(ak) == OK
    assert api.KeyPair(ak).info(fields=["access_key"]) is None
    refused(404, lambda: api.KeyPair.update(ak, rate_limit=1))
    refused(404, lambda: api.KeyPair.create(f"{uniq('ghost')}@example.org"), "No such user")


def test_keypair_info_of_self(manager: Cluster, api: Session) -> None:
    assert api.KeyPair().info() == {
        "user_id": ADMIN["email"],
        "access_key": ADMIN["access_key"],
        "secret_key": ADMIN["secret_key"],
        "is_active": True,
        "is_admin": True,
    }
    with session(manager, USER) as user_api:
        assert user_api.KeyPair().info(fields=["access_key", "is_admin"]) == {
            "access_key": USER["access_key"],
            "is_admin": False,
        }


# ---- keypair resource policy ----


def test_keypair_resource_policy_calls(manager: Cluster, api: Session) -> None:
    name = uniq("pol")
    res = api.KeypairResourcePolicy.create(name, total_resource_slots={"cpu": 2})
    assert res == {**OK, "resource_policy": {"name": name}}
    fields = [
        "name",
        "default_for_unspecified",
        "total_resource_slots",
        "max_concurrent_sessions",
        "max_containers_per_session",
        "max_vfolder_count",
        "max_vfolder_size",
        "idle_timeout",
        "allowed_vfolder_hosts",
    ]
    got = api.KeypairResourcePolicy().info(name, fields=fields)
    assert got is not None and json.loads(got.pop("total_resource_slots")) == {"cpu": "2"}
    assert got == {
        "name": name,
        "default_for_unspecified": "UNLIMITED",
        "max_concurrent_sessions": 30,
        "max_containers_per_session": 1,
        "max_vfolder_count": 10,
        "max_vfolder_size": 0,
        "idle_timeout": 1800,
        "allowed_vfolder_hosts": [],
    }

    assert (
        api.KeypairResourcePolicy.update(
            name,
            max_vfolder_size=2**40,
            allowed_vfolder_hosts=["local"],
            default_for_unspecified="LIMITED",
            idle_timeout=60,
        )
        == OK
    )
    after = api.KeypairResourcePolicy().info(
        name,
        fields=[
            "max_vfolder_size",
            "allowed_vfolder_hosts",
            "default_for_unspecified",
            "idle_timeout",
            "max_concurrent_sessions",
        ],
    )
    assert after == {
        "max_vfolder_size": 2**40,
        "allowed_vfolder_hosts": ["local"],
        "default_for_unspecified": "LIMITED",
        "idle_timeout": 60,
        "max_concurrent_sessions": 30,
    }
    assert {"default", name} <= names(api.KeypairResourcePolicy.list(fields=["name"]))
    # Without a name: the policy of the caller's keypair.
    assert api.KeypairResourcePolicy().info(fields=["name"]) == {"name": "default"}
    with session(manager, USER) as user_api:
        assert names(user_api.KeypairResourcePolicy.list(fields=["name"])) == {"default"}
        refused(403, lambda: user_api.KeypairResourcePolicy.update(name, idle_timeout=1))
    assert api.KeypairResourcePolicy().info(name, fields=["idle_timeout"]) == {"idle_timeout": 60}

    refused(409, lambda: api.KeypairResourcePolicy.create(name))
    assert api.KeypairResourcePolicy.delete(name) == OK
    assert api.KeypairResourcePolicy().info(name, fields=["name"]) is None


# ---- scaling group ----


def test_scaling_group_create_detail_update_delete(api: Session) -> None:
    sg = uniq("sg")
    res = api.ScalingGroup.create(
        sg,
        driver="static",
        scheduler="fifo",
        scheduler_opts={"num_retries": 3},
        wsproxy_addr="http://w:5000",
        description="for tests",
    )
    assert res == {**OK, "scaling_group": {"name": sg}}
    got = api.ScalingGroup.detail(sg)
    assert got is not None
    assert json.loads(got.pop("scheduler_opts")) == {"num_retries": 3} and json.loads(got.pop("driver_opts")) == {}
    got.pop("created_at")
    assert got == {
        "name": sg,
        "description": "for tests",
        "is_active": True,
        "is_public": True,
        "driver": "static",
        "scheduler": "fifo",
        "use_host_network": False,
        "wsproxy_addr": "http://w:5000",
        "wsproxy_api_token": None,
    }
    assert sg in names(api.ScalingGroup.list(fields=["name"]))
    assert api.ScalingGroup.detail(uniq("nope"), fields=["name"]) is None

    assert api.ScalingGroup.update(sg, is_public=False, description=None, scheduler_opts='{"num_retries": 5}') == OK
    after = api.ScalingGroup.detail(sg, fields=["is_public", "description", "scheduler_opts"])
    assert after is not None and json.loads(after.pop("scheduler_opts")) == {"num_retries": 5}
    assert after == {"is_public": False, "description": "for tests"}  # None: unchanged
    api.ScalingGroup.update(sg, is_active=False)
    assert sg in names(api.ScalingGroup.list(fields=["name"], is_active=False))
    assert sg not in names(api.ScalingGroup.list(fields=["name"], is_active=True))

    assert api.ScalingGroup.delete(sg) == OK
    assert api.ScalingGroup.detail(sg, fields=["name"]) is None


def test_scaling_group_associations(api: Session) -> None:
    sg, dom = uniq("sg"), new_domain(api)
    grp = uniq("grp")
    gid = api.Group.create("default", grp)["group"]["id"]
    owner = new_user(api)
    api.ScalingGroup.create(sg, driver="static", scheduler="fifo", is_public=False)
    assert api.ScalingGroup.list_for_domain(dom, fields=["name"]) == []

    assert api.ScalingGroup.associate_domain(sg, dom) == OK
    assert api.ScalingGroup.list_for_domain(dom, fields=["name"]) == [{"name": sg}]
    assert api.ScalingGroup.associate_group(sg, gid) == OK
    assert api.ScalingGroup.list_for_group(gid, fields=["name"]) == [{"name": sg}]
    assert api.ScalingGroup.associate_keypair(sg, owner["access_key"]) == OK
    assert api.ScalingGroup.list_for_keypair(owner["access_key"], fields=["name"]) == [{"name": sg}]
    # REST: what the caller may use in a group (superadmins also see private ones through the group).
    assert sg in names(api.ScalingGroup.list_available(grp))
    assert sg not in names(api.ScalingGroup.list_available("default"))

    assert api.ScalingGroup.dissociate_domain(sg, dom) == OK
    assert api.ScalingGroup.list_for_domain(dom, fields=["name"]) == []
    assert api.ScalingGroup.dissociate_group(sg, gid) == OK
    assert api.ScalingGroup.list_for_group(gid, fields=["name"]) == []
    assert api.ScalingGroup.dissociate_keypair(sg, owner["access_key"]) == OK
    assert api.ScalingGroup.list_for_keypair(owner["access_key"], fields=["name"]) == []

    api.ScalingGroup.associate_domain(sg, dom)
    api.ScalingGroup.associate_domain("default", dom)
    assert names(api.ScalingGroup.list_for_domain(dom, fields=["name"])) == {sg, "default"}
    assert api.ScalingGroup.dissociate_all_domain(dom) == OK
    assert api.ScalingGroup.list_for_domain(dom, fields=["name"]) == []
    api.ScalingGroup.associate_group(sg, gid)
    assert api.ScalingGroup.dissociate_all_group(gid) == OK
    assert api.ScalingGroup.list_for_group(gid, fields=["name"]) == []
    assert "default" in names(api.ScalingGroup.list_for_domain("default", fields=["name"]))  # untouched
    refused(404, lambda: api.ScalingGroup.associate_domain(sg, uniq("nodom")))
    refused(404, lambda: api.ScalingGroup.list_available(uniq("nogrp")))


# ---- resource ----


def test_resource_presets_through_graphql(api: Session) -> None:
    name = uniq("preset")
    res = api.Resource.create_preset(name, {"cpu": 1, "mem": "1g"}, shared_memory="64m")
    assert res == {**OK, "resource_preset": {"name": name}}
    got = api.Resource.preset_info(name)
    assert got is not None and json.loads(got.pop("resource_slots")) == {"cpu": "1", "mem": str(2**30)}
    assert got == {"name": name, "shared_memory": 64 * 2**20}
    listed = {p["name"]: p for p in api.Resource.list_presets()}
    assert json.loads(listed[name]["resource_slots"]) == {"cpu": "1", "mem": str(2**30)}

    assert api.Resource.update_preset(name, shared_memory=1024) == OK
    assert api.Resource.preset_info(name, fields=["shared_memory"]) == {"shared_memory": 1024}
    assert api.Resource.update_preset(name, resource_slots='{"cpu": "2", "mem": "2g"}') == OK
    after = api.Resource.preset_info(name, fields=["resource_slots", "shared_memory"])
    assert after is not None and json.loads(after["resource_slots"]) == {"cpu": "2", "mem": str(2 * 2**30)}
    assert after["shared_memory"] == 1024

    refused(409, lambda: api.Resource.create_preset(name, {"cpu": 1}))
    assert api.Resource.delete_preset(name) == OK
    assert api.Resource.preset_info(name) is None
    assert name not in names(api.Resource.list_presets(fields=["name"]))


def test_resource_rest_calls(manager: Cluster, api: Session) -> None:
    name = uniq("preset")
    api.Resource.create_preset(name, {"cpu": 1, "mem": "1g"})
    with session(manager, USER) as user_api:
        rest = {p["name"]: p for p in user_api.Resource.list()}
        assert rest[name] == {"name": name, "resource_slots": {"cpu": "1", "mem": str(2**30)}, "shared_memory": None}
        checked = user_api.Resource.check_presets(scaling_group="default")
        assert checked["keypair_limits"] == {"cpu": "Infinity", "mem": "Infinity"}
        assert checked["keypair_remaining"] == {"cpu": "Infinity", "mem": "Infinity"}
        assert set(checked["scaling_groups"]) == {"default"}
        (mine,) = [p for p in checked["presets"] if p["name"] == name]
        assert mine["allocatable"] is False  # no agents
        assert set(user_api.Resource.check_presets(group="default")) == set(checked)
        # The arguments reach the server: unknown names are refused.
        refused(404, lambda: user_api.Resource.check_presets(scaling_group="no-such-sg"), "no-such-sg")
        refused(404, lambda: user_api.Resource.check_presets(group="no-such-grp"), "no-such-grp")
        assert user_api.Resource.get_resource_slots() == {"cpu": "count", "mem": "bytes"}
        refused(403, lambda: user_api.Resource.create_preset(uniq("p"), {"cpu": 1}))
    api.Resource.delete_preset(name)


# ---- image, agent (a manager without agents knows neither) ----


def test_image_calls_without_agents(manager: Cluster, api: Session) -> None:
    assert api.Image.list() == []
    assert api.Image.list(operation=True, fields=["name", "tag"]) == []
    assert api.Image.detail("python", fields=["name"]) is None
    refused(404, lambda: api.Image.alias_image("py3", "python:latest"), "python:latest")
    refused(404, lambda: api.Image.dealias_image("py3"), "py3")
    rescan = api.Image.rescan_images()
    assert rescan["ok"] is True and "heartbeat" in rescan["msg"]
    uuid.UUID(rescan["task_id"])
    refused(404, lambda: api.Image.rescan_images("index.docker.io"), "index.docker.io")
    with session(manager, USER) as user_api:
        assert user_api.Image.list() == []
        refused(403, lambda: user_api.Image.rescan_images())


def test_agent_calls_without_agents(manager: Cluster, api: Session) -> None:
    page = api.Agent.paginated_list(fields=["id", "status"])
    assert page.total_count == 0 and page.items == [] and tuple(page.fields) == ("id", "status")
    assert api.Agent.paginated_list(None, "default", fields=["id"], page_size=100).total_count == 0
    assert api.Agent.paginated_list("lost").items == []  # the status is sent in upper case
    assert api.Agent.detail("i-nothing", fields=["id"]) is None
    refused(400, lambda: api.Agent.paginated_list(order="secret"))
    with session(manager, USER) as user_api:
        refused(403, lambda: user_api.Agent.paginated_list())


# ---- auth ----


def test_auth_authorize_is_unsigned(manager: Cluster) -> None:
    # Signing in works for a client without valid keys, and sends no signature.
    bad = config(manager, {"access_key": ADMIN["access_key"], "secret_key": "not-the-secret"})
    with Session(config=bad) as api:
        sent: dict[str, bool] = {}

        async def spy(request: httpx.Request) -> None:
            sent[request.url.path] = "authorization" in request.headers

        api.http_client.event_hooks = {"request": [spy], "response": []}
        got = api.Auth.authorize("default", USER["email"], USER["password"])
        assert got["access_key"] == USER["access_key"] and got["secret_key"] == USER["secret_key"]
        assert got["role"] == "user" and got["status"] == "active"
        refused(401, lambda: api.Auth.authorize("default", USER["email"], "wrong-password"))
        refused(401, lambda: api.Auth.get_role())  # a signed call with the bad key is refused
        assert sent == {"/auth/authorize": False, "/auth/role": True}


def test_auth_update_password_and_role(manager: Cluster, api: Session) -> None:
    owner = new_user(api, group_ids=[str(DEFAULT_GROUP_ID)])
    new = "new-pass-word-2"
    with session(manager, owner) as own:
        refused(401, lambda: own.Auth.update_password("wrong-password", new, new), "old password")
        assert own.Auth.update_password(PASSWORD, new, new) == {}
        assert own.Auth.get_role() == {"global_role": "user", "domain_role": "user", "group_role": None}
        assert own.Auth.get_role("default")["group_role"] == "user"
    assert api.Auth.authorize("default", owner["email"], new)["access_key"] == owner["access_key"]
    refused(401, lambda: api.Auth.authorize("default", owner["email"], PASSWORD))
    assert api.Auth.get_role()["global_role"] == "superadmin"


# ---- refusals, injection, async ----


def test_refusals_raise_backend_api_error_and_change_nothing(manager: Cluster, api: Session) -> None:
    dom, email = uniq("dom"), f"{uniq('u')}@example.org"
    with session(manager, USER) as user_api:
        err = refused(403, lambda: user_api.Domain.list())
        assert "superadmin" in str(err)
        refused(403, lambda: user_api.Domain.create(dom))
        refused(403, lambda: user_api.User.create("default", email, PASSWORD))
        refused(403, lambda: user_api.User.update(USER["email"], role="superadmin"))
        refused(403, lambda: user_api.KeyPair.create(USER["email"], is_admin=True))
        refused(403, lambda: user_api.ScalingGroup.list())
    assert api.Domain.detail(dom) is None
    assert api.User.detail(email) is None
    assert api.User.detail(USER["email"], fields=["role"]) == {"role": "user"}
    assert names(api.KeyPair.list(USER["email"], fields=["access_key"]), "access_key") == {USER["access_key"]}


def test_bad_fields_never_reach_the_server(api: Session) -> None:
    victim = new_user(api)
    with pytest.raises(ValueError, match="GraphQL field"):
        api.User.list(fields=[f'email }} }} mutation {{ delete_user(email: "{victim["email"]}") {{ ok'])
    assert api.User.detail(victim["email"], fields=["status"]) == {"status": "active"}


async def test_async_session(manager: Cluster) -> None:
    async with AsyncSession(config=config(manager)) as api:
        assert await api.Domain.detail(fields=["name"]) == {"name": "default"}
        assert await api.KeyPair().info(fields=["access_key"]) == {"access_key": ADMIN["access_key"]}
        name = uniq("dom")
        assert (await api.Domain.create(name))["ok"] is True
        assert name in names(await api.Domain.list(fields=["name"]))
