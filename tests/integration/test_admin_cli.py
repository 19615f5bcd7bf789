"""``backend.ai admin ...`` and ``update-password`` end to end: the CLI as a subprocess against a real cluster.

The superadmin creates a domain, a group, a user, keypairs, a policy, a preset and a scaling
group with its associations, lists and shows them (console and ``--output json``), deactivates
a keypair (which then cannot authenticate) and deletes things.  Refusals, bad input and
``update-password``, which need no agent, are in ``test_client_admin_cli.py`` (on SQLite and
PostgreSQL).
"""

from __future__ import annotations

import json
import re
import secrets
import subprocess
import sys
from typing import Any

import pytest

from .conftest import ADMIN, USER, Cluster

pytestmark = pytest.mark.docker

CLI = [sys.executable, "-m", "ai.backend.client.cli"]
UUID_RE = r"[0-9a-f]{8}-[0-9a-f]{4}-[0-9a-f]{4}-[0-9a-f]{4}-[0-9a-f]{12}"


def uniq(prefix: str) -> str:
    return f"{prefix}-{secrets.token_hex(3)}"


def cli(
    cluster: Cluster,
    *args: str,
    who: dict[str, Any] = ADMIN,
    input: str | None = None,
) -> subprocess.CompletedProcess[str]:
    return subprocess.run([*CLI, *args], env=cluster.env(who), capture_output=True, text=True, input=input, timeout=120)


def ok(
    cluster: Cluster,
    *args: str,
    who: dict[str, Any] = ADMIN,
    input: str | None = None,
) -> subprocess.CompletedProcess[str]:
    p = cli(cluster, *args, who=who, input=input)
    assert p.returncode == 0, f"{args}: {p.stdout}\n{p.stderr}"
    assert "Traceback" not in p.stderr
    return p


def js(cluster: Cluster, *args: str, who: dict[str, Any] = ADMIN) -> Any:
    return json.loads(ok(cluster, "--output", "json", *args, who=who).stdout)


def fails(cluster: Cluster, *args: str, who: dict[str, Any] = ADMIN, code: int = 1) -> str:
    """Run a command that must fail with one ``✘`` line on stderr; returns that line."""
    p = cli(cluster, *args, who=who)
    assert p.returncode == code, f"{args}: rc={p.returncode}\n{p.stdout}\n{p.stderr}"
    lines = p.stderr.strip().splitlines()
    assert len(lines) == 1 and lines[0].startswith("✘ "), p.stderr
    assert "Traceback" not in p.stderr
    return lines[0]


def names(items: list[dict[str, Any]], key: str = "name") -> set[str]:
    return {str(i.get(key)) for i in items}


def test_domain_group_user_keypair_lifecycle(cluster: Cluster) -> None:
    dom, grp = uniq("dom"), uniq("grp")
    email, password = f"{uniq('u')}@example.org", "pass-word-1"

    # domain
    p = ok(
        cluster,
        "admin",
        "domain",
        "add",
        dom,
        "-d",
        "CLI test",
        "--total-resource-slots",
        '{"cpu": 8, "mem": "16g"}',
        "--allowed-vfolder-hosts",
        "local",
    )
    assert f"Domain {dom} is created." in p.stderr
    assert dom in ok(cluster, "admin", "domain", "list").stdout
    listed = js(cluster, "admin", "domain", "list")
    item = next(i for i in listed["items"] if i["name"] == dom)
    assert item["total_resource_slots"] == {"cpu": "8", "mem": str(16 * 2**30)}
    assert listed["count"] == len(listed["items"]) >= 2
    ok(cluster, "admin", "domain", "update", dom, "-d", "described")
    info = js(cluster, "admin", "domain", "info", dom)
    assert info["description"] == "described" and info["is_active"] is True
    assert info["allowed_vfolder_hosts"] == ["local"]
    console = ok(cluster, "admin", "domain", "info", dom).stdout
    assert re.search(rf"^Name:\s+{dom}$", console, re.M) and "cpu=8 mem=16g" in console

    # group
    p = ok(cluster, "admin", "group", "add", dom, grp, "-d", "a project")
    m = re.search(rf"Group ID: ({UUID_RE})", p.stdout)
    assert m, p.stdout
    gid = m.group(1)
    groups = js(cluster, "admin", "group", "list", "-d", dom)["items"]
    assert names(groups) == {grp}
    assert js(cluster, "admin", "group", "info", grp, "-d", dom)["id"] == gid
    assert grp in ok(cluster, "admin", "group", "info", gid).stdout

    # user
    p = ok(cluster, "admin", "user", "add", dom, email, password, "-u", "cli-user", "-g", grp)
    m = re.search(rf"User UUID: ({UUID_RE})", p.stdout)
    assert m, p.stdout
    uid = m.group(1)
    user = js(cluster, "admin", "user", "info", email)
    assert user["uuid"] == uid and user["domain_name"] == dom and user["role"] == "user"
    assert user["status"] == "active" and user["username"] == "cli-user"
    assert [g["id"] for g in user["groups"]] == [gid]
    members = js(cluster, "admin", "user", "list", "-g", grp, "-d", dom)
    assert names(members["items"], "email") == {email} and members["total_count"] == 1
    assert email in ok(cluster, "admin", "user", "list", "-a").stdout
    ok(cluster, "admin", "user", "update", email, "-n", "Full Name")
    assert js(cluster, "admin", "user", "info", email)["full_name"] == "Full Name"

    # membership through the group commands
    ok(cluster, "admin", "group", "remove-users", grp, email, "-d", dom)
    assert js(cluster, "admin", "user", "info", email)["groups"] == []
    ok(cluster, "admin", "group", "add-users", gid, uid)
    assert [g["name"] for g in js(cluster, "admin", "user", "info", email)["groups"]] == [grp]

    # keypair: created, listed, used, deactivated (then refused), activated again, changed, deleted
    p = ok(cluster, "admin", "keypair", "add", email, "-r", "777")
    ak = re.search(r"^Access Key: (\S+)$", p.stdout, re.M)
    sk = re.search(r"^Secret Key: (\S+)$", p.stdout, re.M)
    assert ak and sk, p.stdout
    new = {"access_key": ak.group(1), "secret_key": sk.group(1)}
    kps = js(cluster, "admin", "keypair", "list", "-u", email)["items"]
    assert new["access_key"] in names(kps, "access_key") and len(kps) == 2  # plus the user's main keypair
    mine = js(cluster, "admin", "keypair", "info", who=new)
    assert mine["access_key"] == new["access_key"] and mine["user_id"] == email and mine["is_active"] is True
    ok(cluster, "admin", "keypair", "deactivate", new["access_key"])
    assert js(cluster, "admin", "keypair", "info", new["access_key"])["is_active"] is False
    line = fails(cluster, "admin", "keypair", "info", who=new)
    assert "(401)" in line or "(403)" in line
    fails(cluster, "ps", who=new)
    ok(cluster, "admin", "keypair", "activate", new["access_key"])
    ok(cluster, "admin", "keypair", "info", who=new)
    ok(cluster, "admin", "keypair", "update", new["access_key"], "--rate-limit", "1234")
    assert js(cluster, "admin", "keypair", "info", new["access_key"])["rate_limit"] == 1234
    ok(cluster, "admin", "keypair", "delete", new["access_key"])
    fails(cluster, "admin", "keypair", "info", who=new)

    # deletion: the user is soft-deleted, the group and the domain deactivated
    ok(cluster, "admin", "user", "delete", email)
    assert js(cluster, "admin", "user", "info", email)["status"] == "deleted"
    ok(cluster, "admin", "group", "delete", gid)
    ok(cluster, "admin", "domain", "delete", dom)
    assert js(cluster, "admin", "domain", "info", dom)["is_active"] is False
    assert dom not in names(js(cluster, "admin", "domain", "list", "--active")["items"])


def test_policy_and_resource_presets(cluster: Cluster) -> None:
    policy, preset = uniq("pol"), uniq("preset")
    ok(
        cluster,
        "admin",
        "keypair-resource-policy",
        "add",
        policy,
        "--max-concurrent-sessions",
        "2",
        "--total-resource-slots",
        "cpu=2,mem=2g",
        "--max-vfolder-size",
        "1g",
    )
    info = js(cluster, "admin", "keypair-resource-policy", "info", policy)
    assert info["max_concurrent_sessions"] == 2 and info["idle_timeout"] == 1800
    assert info["max_vfolder_size"] == 2**30 and info["default_for_unspecified"] == "UNLIMITED"
    assert info["total_resource_slots"] == {"cpu": "2", "mem": str(2 * 2**30)}
    assert policy in names(js(cluster, "admin", "keypair-resource-policy", "list")["items"])
    assert policy in ok(cluster, "admin", "keypair-resource-policy", "list").stdout
    ok(cluster, "admin", "keypair-resource-policy", "update", policy, "--idle-timeout", "600")
    assert js(cluster, "admin", "keypair-resource-policy", "info", policy)["idle_timeout"] == 600
    # the caller's own policy when no name is given
    assert js(cluster, "admin", "keypair-resource-policy", "info", who=USER)["name"] == "default"

    # a keypair that uses the policy
    p = ok(cluster, "admin", "keypair", "add", ADMIN["email"], policy)
    ak = re.search(r"^Access Key: (\S+)$", p.stdout, re.M)
    assert ak
    assert js(cluster, "admin", "keypair", "info", ak.group(1))["resource_policy"] == policy
    ok(cluster, "admin", "keypair", "delete", ak.group(1))
    ok(cluster, "admin", "keypair-resource-policy", "delete", policy)
    fails(cluster, "admin", "keypair-resource-policy", "info", policy)

    # resource presets through GraphQL and REST
    ok(cluster, "admin", "resource-preset", "add", preset, "--resource-slots", "cpu=1,mem=1g", "--shared-memory", "64m")
    items = js(cluster, "admin", "resource-preset", "list")["items"]
    mine = next(i for i in items if i["name"] == preset)
    assert mine["resource_slots"] == {"cpu": "1", "mem": str(2**30)} and mine["shared_memory"] == 64 * 2**20
    row = next(
        line for line in ok(cluster, "admin", "resource-preset", "list").stdout.splitlines() if line.startswith(preset)
    )
    assert row.split() == [preset, "cpu=1", "mem=1g", "64m"]
    assert preset in names(js(cluster, "admin", "resource", "presets", who=USER)["items"])
    ok(cluster, "admin", "resource-preset", "update", preset, "--resource-slots", "cpu=2,mem=1g")
    assert js(cluster, "admin", "resource-preset", "info", preset)["resource_slots"]["cpu"] == "2"
    checked = js(cluster, "admin", "resource", "check-presets", who=USER)
    for key in ("keypair_limits", "keypair_using", "keypair_remaining", "scaling_groups", "presets"):
        assert key in checked
    assert preset in names(checked["presets"])
    assert "Keypair remaining:" in ok(cluster, "admin", "resource", "check-presets", who=USER).stdout
    ok(cluster, "admin", "resource-preset", "delete", preset)
    assert preset not in names(js(cluster, "admin", "resource-preset", "list")["items"])
    slots = js(cluster, "admin", "resource", "query-slots", who=USER)
    assert slots["cpu"] == "count" and slots["mem"] == "bytes"


def test_scaling_group_and_associations(cluster: Cluster) -> None:
    sg, dom, grp = uniq("sg"), uniq("dom"), uniq("grp")
    ok(cluster, "admin", "scaling-group", "add", sg, "-d", "for tests", "--scheduler", "fifo")
    info = js(cluster, "admin", "scaling-group", "info", sg)
    assert info["driver"] == "static" and info["scheduler"] == "fifo" and info["is_public"] is True
    assert info["scheduler_opts"] == {} and info["driver_opts"] == {}
    assert sg in names(js(cluster, "admin", "scaling-group", "list")["items"])
    ok(cluster, "admin", "scaling-group", "update", sg, "--private")
    assert js(cluster, "admin", "scaling-group", "info", sg)["is_public"] is False

    ok(cluster, "admin", "domain", "add", dom)
    gid = re.search(rf"Group ID: ({UUID_RE})", ok(cluster, "admin", "group", "add", dom, grp).stdout)
    assert gid

    ok(cluster, "admin", "scaling-group", "associate-scaling-group", sg, dom)
    assert names(js(cluster, "admin", "scaling-group", "list", "--domain", dom)["items"]) == {sg}
    ok(cluster, "admin", "scaling-group", "associate-group", sg, grp, "-d", dom)
    assert sg in names(js(cluster, "admin", "scaling-group", "list", "--group", gid.group(1))["items"])
    ok(cluster, "admin", "scaling-group", "associate-keypair", sg, ADMIN["access_key"])
    assert sg in names(js(cluster, "admin", "scaling-group", "list", "--access-key", ADMIN["access_key"])["items"])

    ok(cluster, "admin", "scaling-group", "dissociate-scaling-group", sg, dom)
    assert js(cluster, "admin", "scaling-group", "list", "--domain", dom)["items"] == []
    ok(cluster, "admin", "scaling-group", "dissociate-group", sg, gid.group(1))
    assert sg not in names(js(cluster, "admin", "scaling-group", "list", "--group", gid.group(1))["items"])
    ok(cluster, "admin", "scaling-group", "dissociate-keypair", sg, ADMIN["access_key"])
    assert sg not in names(js(cluster, "admin", "scaling-group", "list", "--access-key", ADMIN["access_key"])["items"])

    # what a normal user may use in the default group
    available = js(cluster, "admin", "scaling-group", "get-available", "default", who=USER)["items"]
    assert "default" in names(available) and sg not in names(available)
    assert "default" in ok(cluster, "admin", "scaling-group", "get-available", "default", who=USER).stdout.split()

    ok(cluster, "admin", "scaling-group", "delete", sg)
    fails(cluster, "admin", "scaling-group", "info", sg)


def test_images_and_agents(cluster: Cluster) -> None:
    images = js(cluster, "admin", "image", "list", who=USER)["items"]
    assert any("python" in (i.get("aliases") or []) or i["name"] == "python" for i in images), images
    alias = uniq("py")
    ok(cluster, "admin", "image", "alias", alias, "python")
    assert alias in ok(cluster, "admin", "image", "list").stdout
    assert js(cluster, "admin", "image", "info", alias)["name"]
    ok(cluster, "admin", "image", "dealias", alias)
    assert alias not in ok(cluster, "admin", "image", "list").stdout
    ok(cluster, "admin", "image", "rescan")

    agents = js(cluster, "admin", "agent", "list")
    mine = next(a for a in agents["items"] if a["id"] == cluster.agent_id)
    assert mine["status"] == "ALIVE" and mine["scaling_group"] == "default"
    assert float(mine["available_slots"]["cpu"]) >= 1
    assert cluster.agent_id in ok(cluster, "admin", "agent", "list", "-s", "ALL").stdout
    detail = js(cluster, "admin", "agent", "info", cluster.agent_id)
    assert detail["id"] == cluster.agent_id and detail["addr"]


def test_sessions_listing_stays_available(cluster: Cluster) -> None:
    ok(cluster, "admin", "session", "list")
    assert "items" in js(cluster, "admin", "sessions", "-a")
