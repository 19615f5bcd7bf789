"""``backend.ai admin ...`` and ``update-password`` as subprocesses against a real manager.

Runs on a manager-only server (the ``manager`` fixture, on SQLite and on PostgreSQL).  Each test
builds uniquely-named targets with the SDK, runs the CLI on them, and reads the effect back with
the SDK: console tables and ``--output json`` of real results, one-line errors and exit codes for
bad input, duplicates and refusals, and that a refusal changed nothing.  The end-to-end walk on a
cluster with a Docker agent (images, agents, the lifecycle of every entity) is
``test_admin_cli.py``; usage errors that need no server are in ``tests/unit/test_client_admin_offline.py``.
"""

from __future__ import annotations

import json
import re
import secrets
import subprocess
import sys
from collections.abc import Iterator
from typing import Any

import pytest

from ai.backend.client.config import APIConfig
from ai.backend.client.exceptions import BackendAPIError
from ai.backend.client.session import Session

from .conftest import ADMIN, USER, Cluster

CLI = [sys.executable, "-m", "ai.backend.client.cli"]
UUID_RE = r"[0-9a-f]{8}-[0-9a-f]{4}-[0-9a-f]{4}-[0-9a-f]{4}-[0-9a-f]{12}"
PASSWORD = "pass-word-1"


def uniq(prefix: str) -> str:
    return f"{prefix}-{secrets.token_hex(3)}"


def cli(
    manager: Cluster,
    *args: str,
    who: dict[str, Any] = ADMIN,
    input: str | None = None,
) -> subprocess.CompletedProcess[str]:
    return subprocess.run([*CLI, *args], env=manager.env(who), capture_output=True, text=True, input=input, timeout=120)


def ok(
    manager: Cluster,
    *args: str,
    who: dict[str, Any] = ADMIN,
    input: str | None = None,
) -> subprocess.CompletedProcess[str]:
    p = cli(manager, *args, who=who, input=input)
    assert p.returncode == 0, f"{args}: {p.stdout}\n{p.stderr}"
    assert "Traceback" not in p.stderr
    return p


def js(manager: Cluster, *args: str, who: dict[str, Any] = ADMIN) -> Any:
    return json.loads(ok(manager, "--output", "json", *args, who=who).stdout)


def fails(
    manager: Cluster,
    *args: str,
    who: dict[str, Any] = ADMIN,
    code: int = 1,
    needles: tuple[str, ...] = (),
) -> str:
    """Run a command that must fail with one ``✘`` line on stderr and nothing on stdout; returns that line."""
    p = cli(manager, *args, who=who)
    assert p.returncode == code, f"{args}: rc={p.returncode}\n{p.stdout}\n{p.stderr}"
    lines = p.stderr.strip().splitlines()
    assert len(lines) == 1 and lines[0].startswith("✘ "), p.stderr
    assert "Traceback" not in p.stderr and p.stdout == ""
    for needle in needles:
        assert needle in lines[0], (needle, lines[0])
    return lines[0]


def done(p: subprocess.CompletedProcess[str]) -> str:
    """The one ``✔`` line a successful mutation prints on stderr."""
    lines = p.stderr.strip().splitlines()
    assert len(lines) == 1 and lines[0].startswith("✔ "), p.stderr
    return lines[0][2:]


def rows(stdout: str) -> list[list[str]]:
    """The rows of a console table (after the heading and the rule), split on whitespace."""
    lines = stdout.splitlines()
    assert set(lines[1]) == {"─"}, stdout
    return [line.split() for line in lines[2:]]


def row(stdout: str, first: str) -> list[str]:
    (found,) = [r for r in rows(stdout) if r and r[0] == first]
    return found


def detail_lines(stdout: str) -> dict[str, str]:
    """``Heading: value`` lines as a dict."""
    out = {}
    for line in stdout.splitlines():
        key, _, value = line.partition(":")
        out[key.strip()] = " ".join(value.split())
    return out


def names(items: list[dict[str, Any]], key: str = "name") -> set[str]:
    return {str(i[key]) for i in items}


@pytest.fixture
def api(manager: Cluster) -> Iterator[Session]:
    """An SDK session as the superadmin, to set things up and read effects back."""
    config = APIConfig(
        endpoint=manager.endpoint, endpoint_type="api", access_key=ADMIN["access_key"], secret_key=ADMIN["secret_key"]
    )
    with Session(config=config) as s:
        yield s


def new_user(api: Session, domain: str = "default", **kwargs: Any) -> dict[str, Any]:
    email = f"{uniq('u')}@example.org"
    res = api.User.create(domain, email, PASSWORD, **kwargs)
    assert res["ok"] is True, res
    (kp,) = api.KeyPair.list(email, fields=["access_key", "secret_key"])
    return {"email": email, "uuid": res["user"]["uuid"], **kp}


# ---- domain ----


def test_domain_add_list_info(manager: Cluster, api: Session) -> None:
    dom = uniq("dom")
    p = ok(
        manager,
        "admin",
        "domain",
        "add",
        dom,
        "-i",
        "-d",
        "First",
        "--total-resource-slots",
        "cpu=4,mem=8g",
        "--allowed-vfolder-hosts",
        "local,nfs",
        "--allowed-vfolder-hosts",
        "local",
    )
    assert done(p) == f"Domain {dom} is created." and p.stdout == ""
    got = api.Domain.detail(dom, fields=["description", "is_active", "total_resource_slots", "allowed_vfolder_hosts"])
    assert got is not None and json.loads(got.pop("total_resource_slots")) == {"cpu": "4", "mem": str(8 * 2**30)}
    assert got == {"description": "First", "is_active": False, "allowed_vfolder_hosts": ["local", "nfs"]}

    out = ok(manager, "admin", "domain", "list", "--inactive").stdout
    assert out.splitlines()[0].split() == ["Name", "Description", "Active?", "Total", "Resource", "Slots"]
    assert row(out, dom) == [dom, "First", "no", "cpu=4", "mem=8g"]
    assert "default" not in [r[0] for r in rows(out)]  # the filter reached the server
    listed = js(manager, "admin", "domain", "list")
    assert listed["count"] == listed["total_count"] == len(listed["items"])
    by_name = {i["name"]: i for i in listed["items"]}
    assert by_name[dom]["total_resource_slots"] == {"cpu": "4", "mem": str(8 * 2**30)}
    assert by_name[dom]["allowed_vfolder_hosts"] == ["local", "nfs"] and by_name[dom]["is_active"] is False
    assert by_name["default"]["total_resource_slots"] == {}

    info = detail_lines(ok(manager, "admin", "domain", "info", dom).stdout)
    assert info["Name"] == dom and info["Active?"] == "no" and info["Total Resource Slots"] == "cpu=4 mem=8g"
    assert info["Allowed vfolder hosts"] == "local, nfs" and info["Integration ID"] == "-"
    assert info["Scaling Groups"] == "-"
    data = js(manager, "admin", "domain", "info", dom)
    assert data["name"] == dom and data["total_resource_slots"]["cpu"] == "4" and data["scaling_groups"] == []
    # A new domain has no groups and no scaling groups.
    assert ok(manager, "admin", "group", "list", "-d", dom).stdout == "There are no groups.\n"


def test_domain_update_and_delete(manager: Cluster, api: Session) -> None:
    dom, renamed = uniq("dom"), uniq("dom")
    api.Domain.create(dom, "old", is_active=False)
    p = ok(manager, "admin", "domain", "update", dom, "--new-name", renamed, "--active", "-d", "")
    assert done(p) == f"Domain {dom} is updated."
    assert api.Domain.detail(dom) is None
    assert api.Domain.detail(renamed, fields=["description", "is_active"]) == {"description": "", "is_active": True}
    assert js(manager, "admin", "domain", "delete", renamed) == {"ok": True, "msg": "success"}
    assert api.Domain.detail(renamed, fields=["is_active"]) == {"is_active": False}


def test_duplicates_and_missing_objects_are_one_line(manager: Cluster, api: Session) -> None:
    fails(manager, "admin", "domain", "add", "default", needles=("(409)", "already exists"))
    fails(manager, "--output", "json", "admin", "domain", "add", "default", needles=("(409)",))
    assert api.Domain.detail("default", fields=["description"]) == {"description": "The default domain"}
    fails(manager, "admin", "domain", "info", "nope", needles=("No such domain: nope",))
    fails(
        manager,
        "--output",
        "json",
        "admin",
        "keypair",
        "info",
        "AKIANOSUCHKEY0000000",
        needles=("No such keypair: AKIANOSUCHKEY0000000",),
    )
    fails(manager, "admin", "keypair", "update", "AKIANOSUCHKEY0000000", "--rate-limit", "1", needles=("(404)",))
    bad = "bad name!"
    fails(manager, "admin", "domain", "add", bad, needles=("(400)",))
    assert api.Domain.detail(bad) is None


def test_bad_input_changes_nothing(manager: Cluster, api: Session) -> None:
    dom, email = uniq("dom"), f"{uniq('u')}@example.org"
    fails(
        manager,
        "admin",
        "domain",
        "add",
        dom,
        "--total-resource-slots",
        "{bad",
        code=2,
        needles=("--total-resource-slots", "valid JSON"),
    )
    fails(manager, "admin", "domain", "add", dom, "--total-resource-slots", '{"mem": "lots"}', needles=("(400)",))
    assert api.Domain.detail(dom) is None
    fails(
        manager,
        "admin",
        "user",
        "add",
        "default",
        email,
        PASSWORD,
        "-r",
        "wizard",
        code=2,
        needles=("'wizard' is not one of",),
    )
    fails(manager, "admin", "user", "add", "default", email, "short", needles=("(400)", "8 characters"))
    assert api.User.detail(email) is None and api.KeyPair.list(email) == []


def test_plain_user_is_refused_and_nothing_changes(manager: Cluster, api: Session) -> None:
    dom, email, preset = uniq("dom"), f"{uniq('x')}@example.org", uniq("p")
    for args in (
        ("admin", "domain", "list"),
        ("admin", "domain", "add", dom),
        ("admin", "user", "add", "default", email, PASSWORD),
        ("admin", "keypair", "add", USER["email"], "-a"),
        ("admin", "scaling-group", "list"),
        ("admin", "agent", "list"),
        ("admin", "resource-preset", "add", preset, "--resource-slots", "cpu=1"),
    ):
        fails(manager, *args, who=USER, needles=("Forbidden", "(403)"))
    assert api.Domain.detail(dom) is None
    assert api.User.detail(email) is None
    assert names(api.KeyPair.list(USER["email"], fields=["access_key"]), "access_key") == {USER["access_key"]}
    assert api.Resource.preset_info(preset) is None
    # but their own records are open to them
    assert js(manager, "admin", "user", "info", who=USER)["email"] == USER["email"]
    assert js(manager, "admin", "domain", "info", who=USER)["name"] == "default"
    mine = detail_lines(ok(manager, "admin", "keypair", "info", who=USER).stdout)
    assert mine["Email"] == USER["email"] and mine["Access Key"] == USER["access_key"]
    assert mine["Active?"] == "yes" and mine["Admin?"] == "no" and mine["Resource Policy"] == "default"


# ---- group ----


def test_group_add_resolution_and_members(manager: Cluster, api: Session) -> None:
    dom, other = uniq("dom"), uniq("dom")
    api.Domain.create(dom)
    api.Domain.create(other)
    grp = uniq("grp")
    p = ok(manager, "admin", "group", "add", dom, grp, "-d", "desc")
    m = re.fullmatch(rf"Group ID: ({UUID_RE})\n", p.stdout)
    assert m, p.stdout
    gid = m.group(1)
    assert done(p) == f"Group {grp} is created in {dom}."
    assert api.Group.detail(gid, fields=["name", "domain_name", "description"]) == {
        "name": grp,
        "domain_name": dom,
        "description": "desc",
    }

    api.Group.create(other, grp)  # the same name in another domain
    fails(
        manager,
        "admin",
        "group",
        "info",
        grp,
        needles=(f"exists in several domains ({', '.join(sorted([dom, other]))})", "-d/--domain"),
    )
    fails(manager, "admin", "group", "info", uniq("nope"), needles=("No such group",))

    a, b = new_user(api, dom), new_user(api, dom)
    p = ok(manager, "admin", "group", "add-users", grp, a["email"], b["uuid"], "-d", dom)
    assert done(p) == f"2 user(s) added to group {grp}."
    assert names(api.User.list(group=gid, fields=["email"]), "email") == {a["email"], b["email"]}
    ok(manager, "admin", "group", "remove-users", gid, b["uuid"])  # a group ID needs no domain
    assert names(api.User.list(group=gid, fields=["email"]), "email") == {a["email"]}
    fails(manager, "admin", "group", "add-users", gid, "bob", needles=("'bob' is neither a user UUID nor an email",))
    fails(manager, "admin", "group", "add-users", gid, "ghost@example.org", needles=("No such user",))
    assert names(api.User.list(group=gid, fields=["email"]), "email") == {a["email"]}


# ---- user ----


def test_user_add_prompts_for_the_password_and_update(manager: Cluster, api: Session) -> None:
    dom = uniq("dom")
    api.Domain.create(dom)
    g1, g2 = uniq("grp"), uniq("grp")
    gid1 = api.Group.create(dom, g1)["group"]["id"]
    gid2 = api.Group.create(dom, g2)["group"]["id"]
    email, password = f"{uniq('n')}@example.org", "s3cret-pass"
    p = ok(
        manager,
        "admin",
        "user",
        "add",
        dom,
        email,
        "-g",
        g1,
        "-r",
        "admin",
        "-n",
        "N. N.",
        input=f"{password}\n{password}\n",
    )
    m = re.fullmatch(rf"User UUID: ({UUID_RE})\n", p.stdout)
    assert m, p.stdout
    got = api.User.detail(email, fields=["uuid", "role", "full_name", "domain_name", "groups { id }"])
    assert got == {
        "uuid": m.group(1),
        "role": "admin",
        "full_name": "N. N.",
        "domain_name": dom,
        "groups": [{"id": gid1}],
    }
    assert api.Auth.authorize(dom, email, password)["role"] == "admin"  # the prompted password was sent

    api.User.update(email, need_password_change=True)
    p = ok(manager, "admin", "user", "update", email, "-s", "inactive", "--no-need-password-change", "-g", gid2)
    assert done(p) == f"User {email} is updated."
    assert api.User.detail(email, fields=["status", "need_password_change", "groups { id }", "role"]) == {
        "status": "inactive",
        "need_password_change": False,
        "groups": [{"id": gid2}],
        "role": "admin",
    }


def test_user_list_pages(manager: Cluster, api: Session) -> None:
    dom = uniq("dom")
    api.Domain.create(dom)
    grp = uniq("grp")
    gid = api.Group.create(dom, grp)["group"]["id"]
    tag = secrets.token_hex(3)
    emails = [f"p{i}-{tag}@example.org" for i in range(4)]
    for i, email in enumerate(emails):
        api.User.create(dom, email, PASSWORD, group_ids=[gid], status="inactive" if i == 3 else "active")
    p = ok(manager, "admin", "user", "list", "-g", grp, "-d", dom, "--order", "email", "--limit", "2", "--offset", "1")
    assert p.stdout.splitlines()[0].split() == ["UUID", "Email", "Username", "Domain", "Role", "Status", "Groups"]
    assert [r[1] for r in rows(p.stdout)] == emails[1:3]
    assert rows(p.stdout)[0][3:] == [dom, "user", "active", grp]
    assert "Showing 2 of 4 users" in p.stderr
    data = js(manager, "admin", "user", "list", "-g", gid, "-a", "-s", "active")
    assert data["count"] == data["total_count"] == 3
    assert names(data["items"], "email") == set(emails[:3])
    assert all(i["groups"] == [{"id": gid, "name": grp}] for i in data["items"])
    p = ok(manager, "admin", "user", "list", "--filter", f'email like "%-{tag}@example.org"', "-s", "deleted")
    assert p.stdout == "There are no matching users.\n"


def test_list_all_pages_through_more_than_one_page(manager: Cluster, api: Session) -> None:
    owner = new_user(api)
    made = {owner["access_key"]}
    for _ in range(100):
        made.add(api.KeyPair.create(owner["email"], rate_limit=1)["keypair"]["access_key"])
    data = js(manager, "admin", "keypair", "list", "-u", owner["email"], "-a")
    assert data["count"] == data["total_count"] == 101
    assert names(data["items"], "access_key") == made
    p = ok(manager, "admin", "keypair", "list", "-u", owner["email"], "--limit", "3")
    assert len(rows(p.stdout)) == 3 and "Showing 3 of 101 keypairs" in p.stderr


# ---- keypair ----


def test_keypair_add_prints_working_keys(manager: Cluster, api: Session) -> None:
    policy = uniq("pol")
    api.KeypairResourcePolicy.create(policy)
    owner = new_user(api)
    p = ok(manager, "admin", "keypair", "add", owner["email"], policy, "-a", "-r", "100")
    m = re.fullmatch(r"Access Key: (AKIA\w{16})\nSecret Key: (\S{40})\n", p.stdout)
    assert m, p.stdout
    assert done(p) == f"Keypair is created for {owner['email']}."
    ak, sk = m.groups()
    assert api.KeyPair(ak).info(fields=["user_id", "is_admin", "resource_policy", "rate_limit", "is_active"]) == {
        "user_id": owner["email"],
        "is_admin": True,
        "resource_policy": policy,
        "rate_limit": 100,
        "is_active": True,
    }
    assert js(manager, "admin", "keypair", "info", who={"access_key": ak, "secret_key": sk})["access_key"] == ak

    created = js(manager, "admin", "keypair", "add", owner["email"])
    assert created["ok"] is True and set(created["keypair"]) == {"access_key", "secret_key"}
    assert api.KeyPair(created["keypair"]["access_key"]).info(fields=["is_admin", "resource_policy", "rate_limit"]) == {
        "is_admin": False,
        "resource_policy": "default",
        "rate_limit": 5000,
    }


def test_keypair_activation_messages(manager: Cluster, api: Session) -> None:
    owner = new_user(api)
    ak = owner["access_key"]
    assert done(ok(manager, "admin", "keypair", "deactivate", ak)) == f"Keypair {ak} is deactivated."
    assert api.KeyPair(ak).info(fields=["is_active"]) == {"is_active": False}
    assert done(ok(manager, "admin", "keypair", "activate", ak)) == f"Keypair {ak} is activated."
    assert api.KeyPair(ak).info(fields=["is_active"]) == {"is_active": True}
    p = ok(manager, "admin", "keypair", "update", ak, "--no-admin", "--resource-policy", "default", "-r", "0")
    assert done(p) == f"Keypair {ak} is updated."
    assert api.KeyPair(ak).info(fields=["rate_limit", "is_admin"]) == {"rate_limit": 0, "is_admin": False}


# ---- policies, resources, scaling groups, images, agents ----


def test_policy_add_defaults_list_and_update(manager: Cluster, api: Session) -> None:
    policy = uniq("pol")
    ok(manager, "admin", "keypair-resource-policy", "add", policy, "--max-vfolder-size", "1g")
    got = api.KeypairResourcePolicy().info(policy)
    assert got is not None
    got.pop("created_at")
    assert got == {
        "name": policy,
        "default_for_unspecified": "UNLIMITED",
        "total_resource_slots": "{}",
        "max_concurrent_sessions": 30,
        "max_containers_per_session": 1,
        "max_vfolder_count": 10,
        "max_vfolder_size": 2**30,
        "idle_timeout": 1800,
        "allowed_vfolder_hosts": ["local"],
    }
    out = ok(manager, "admin", "keypair-resource-policy", "list").stdout
    assert row(out, policy) == [policy, "UNLIMITED", "{}", "30", "1", "10", "1g", "1800", "local"]
    assert row(out, "default")[:3] == ["default", "UNLIMITED", "{}"]
    ok(
        manager,
        "admin",
        "keypair-resource-policy",
        "update",
        policy,
        "--default-for-unspecified",
        "limited",
        "--allowed-vfolder-hosts",
        "local,nfs",
        "--total-resource-slots",
        '{"cpu": 2}',
    )
    after = api.KeypairResourcePolicy().info(
        policy, fields=["default_for_unspecified", "allowed_vfolder_hosts", "total_resource_slots", "max_vfolder_size"]
    )
    assert after is not None and json.loads(after.pop("total_resource_slots")) == {"cpu": "2"}
    assert after == {
        "default_for_unspecified": "LIMITED",
        "allowed_vfolder_hosts": ["local", "nfs"],
        "max_vfolder_size": 2**30,
    }


def test_resource_commands(manager: Cluster, api: Session) -> None:
    out = ok(manager, "admin", "resource", "query-slots", who=USER).stdout
    assert out.splitlines()[0].split() == ["Slot", "Type"] and rows(out) == [["cpu", "count"], ["mem", "bytes"]]
    preset = uniq("preset")
    api.Resource.create_preset(preset, {"cpu": 1, "mem": "1g"})
    out = ok(manager, "admin", "resource", "check-presets", "--scaling-group", "default", who=USER).stdout
    info = detail_lines(out)
    assert info["Keypair limits"] == info["Keypair remaining"] == "cpu=Infinity mem=Infinity"
    assert info["Keypair using"] == "cpu=0 mem=0" and info["Scaling group remaining"] == "cpu=0 mem=0"
    assert "Scaling group default: using: cpu=0 mem=0, remaining: cpu=0 mem=0" in out.splitlines()
    assert [line.split() for line in out.splitlines() if line.startswith(preset)] == [
        [preset, "cpu=1", "mem=1g", "-", "no"]
    ]
    fails(
        manager,
        "admin",
        "resource",
        "check-presets",
        "--scaling-group",
        "no-such-sg",
        who=USER,
        needles=("(404)", "no-such-sg"),
    )
    ok(manager, "admin", "resource-preset", "update", preset, "--shared-memory", "64m")
    assert api.Resource.preset_info(preset, fields=["shared_memory"]) == {"shared_memory": 64 * 2**20}
    api.Resource.delete_preset(preset)


def test_scaling_group_commands(manager: Cluster, api: Session) -> None:
    sg, dom, grp = uniq("sg"), uniq("dom"), uniq("grp")
    api.Domain.create(dom)
    gid = api.Group.create("default", grp)["group"]["id"]
    owner = new_user(api)
    ok(
        manager,
        "admin",
        "scaling-group",
        "add",
        sg,
        "--private",
        "--scheduler-opts",
        "num_retries=3",
        "--driver-opts",
        '{"x": 1}',
        "--wsproxy-addr",
        "http://w:5000",
    )
    got = api.ScalingGroup.detail(
        sg, fields=["is_public", "driver", "scheduler", "scheduler_opts", "driver_opts", "wsproxy_addr"]
    )
    assert got is not None
    assert json.loads(got.pop("scheduler_opts")) == {"num_retries": "3"} and json.loads(got.pop("driver_opts")) == {
        "x": 1
    }
    assert got == {"is_public": False, "driver": "static", "scheduler": "fifo", "wsproxy_addr": "http://w:5000"}

    p = ok(manager, "admin", "scaling-group", "associate-domain", sg, dom)  # the alias of associate-scaling-group
    assert done(p) == f"Scaling group {sg} is associated with domain {dom}."
    api.ScalingGroup.associate_group(sg, gid)
    api.ScalingGroup.associate_keypair(sg, owner["access_key"])
    out = ok(manager, "admin", "scaling-group", "list", "--access-key", owner["access_key"]).stdout
    assert rows(out) == [[sg, "yes", "no", "static", "fifo"]]
    assert set(ok(manager, "admin", "scaling-group", "get-available", grp).stdout.splitlines()) == {"default", sg}

    ok(manager, "admin", "scaling-group", "dissociate-all-domain", dom)
    assert api.ScalingGroup.list_for_domain(dom, fields=["name"]) == []
    ok(manager, "admin", "scaling-group", "dissociate-all-group", grp, "-d", "default")
    assert api.ScalingGroup.list_for_group(gid, fields=["name"]) == []
    assert ok(manager, "admin", "scaling-group", "list", "--domain", dom).stdout == (
        "There are no matching scaling groups.\n"
    )
    fails(manager, "admin", "scaling-group", "info", uniq("nope"), needles=("No such scaling group",))


def test_image_and_agent_commands_without_agents(manager: Cluster) -> None:
    assert ok(manager, "admin", "image", "list").stdout == "There are no images.\n"
    p = ok(manager, "admin", "image", "rescan")
    assert p.stdout.startswith("Background task ID: ") and done(p).startswith("Images rescanned.")
    assert js(manager, "admin", "image", "rescan")["task_id"]
    fails(manager, "admin", "image", "alias", "py3", "nope", needles=("(404)", "Unknown image 'nope'"))
    assert ok(manager, "admin", "agent", "list", "-s", "all").stdout == "There are no matching agents.\n"
    assert js(manager, "admin", "agent", "list") == {"count": 0, "total_count": 0, "items": []}


# ---- update-password ----


def test_update_password(manager: Cluster, api: Session) -> None:
    owner = new_user(api)
    new = "new-pass-2"
    fails(manager, "update-password", PASSWORD, new, "other", who=owner, code=2, needles=("do not match",))
    fails(
        manager,
        "update-password",
        "wrong-password",
        new,
        new,
        who=owner,
        needles=("(401)", "The old password is wrong."),
    )
    assert api.Auth.authorize("default", owner["email"], PASSWORD)["access_key"] == owner["access_key"]  # unchanged
    p = ok(manager, "update-password", who=owner, input=f"{PASSWORD}\n{new}\n{new}\n")
    assert "✔ Password updated." in p.stderr.splitlines()
    got = api.Auth.authorize("default", owner["email"], new)
    assert got["access_key"] == owner["access_key"] and got["secret_key"] == owner["secret_key"]
    with pytest.raises(BackendAPIError) as e:
        api.Auth.authorize("default", owner["email"], PASSWORD)
    assert e.value.status == 401
