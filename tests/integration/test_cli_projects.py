"""Projects (groups) from the CLI: ``admin user add -g`` puts the new user in projects (names looked up in the
user's domain, or UUIDs), and a user outside the project gets a one-line hint naming
``backend.ai admin group add-users`` after the server's refusal of a new session; running that command fixes it.
"""

from __future__ import annotations

import re
import secrets
import subprocess
import sys
from typing import Any

import pytest

from .conftest import ADMIN, Cluster

pytestmark = pytest.mark.docker

CLI = [sys.executable, "-m", "ai.backend.client.cli"]
UUID_RE = r"[0-9a-f]{8}-[0-9a-f]{4}-[0-9a-f]{4}-[0-9a-f]{4}-[0-9a-f]{12}"


def cli(cluster: Cluster, *args: str, who: dict[str, Any] = ADMIN) -> subprocess.CompletedProcess[str]:
    return subprocess.run([*CLI, *args], env=cluster.env(who), capture_output=True, text=True, timeout=120)


def ok(cluster: Cluster, *args: str, who: dict[str, Any] = ADMIN) -> subprocess.CompletedProcess[str]:
    p = cli(cluster, *args, who=who)
    assert p.returncode == 0 and "Traceback" not in p.stderr, f"{args}: {p.stdout}\n{p.stderr}"
    return p


def uniq(prefix: str) -> str:
    return f"{prefix}-{secrets.token_hex(3)}"


def _new_user(cluster: Cluster, domain: str, *options: str) -> tuple[str, str, dict[str, str]]:
    """A user made with ``admin user add`` (and a keypair): ``(email, uuid, keypair)``."""
    email = f"{uniq('proj')}@example.org"
    p = ok(cluster, "admin", "user", "add", domain, email, "pass-word-1", *options)
    m = re.search(rf"User UUID: ({UUID_RE})", p.stdout)
    assert m, p.stdout
    p = ok(cluster, "admin", "keypair", "add", email)
    ak = re.search(r"^Access Key: (\S+)$", p.stdout, re.M)
    sk = re.search(r"^Secret Key: (\S+)$", p.stdout, re.M)
    assert ak and sk, p.stdout
    return email, m.group(1), {"access_key": ak.group(1), "secret_key": sk.group(1)}


def _groups(cluster: Cluster, email: str) -> set[str]:
    import json

    info = json.loads(ok(cluster, "--output", "json", "admin", "user", "info", email).stdout)
    return {str(g["name"]) for g in info["groups"]}


def test_user_add_with_groups_by_name_and_uuid(cluster: Cluster) -> None:
    dom, other_dom = uniq("dom"), uniq("dom")
    g1, g2 = uniq("grp"), uniq("grp")
    ok(cluster, "admin", "domain", "add", dom)
    ok(cluster, "admin", "domain", "add", other_dom)
    ok(cluster, "admin", "group", "add", dom, g1)
    gid2 = re.search(rf"Group ID: ({UUID_RE})", ok(cluster, "admin", "group", "add", dom, g2).stdout)
    assert gid2
    ok(cluster, "admin", "group", "add", other_dom, g1)  # the same name in another domain: not ambiguous here

    email, _uid, _kp = _new_user(cluster, dom, "-g", g1, "--group", gid2.group(1))
    assert _groups(cluster, email) == {g1, g2}

    # An unknown project: one line, exit 1, and no user is created.
    missing = f"{uniq('nobody')}@example.org"
    p = cli(cluster, "admin", "user", "add", dom, missing, "pass-word-1", "-g", "no-such-project")
    assert p.returncode == 1 and p.stdout == ""
    assert p.stderr.strip().splitlines() == [f"✘ No such group: 'no-such-project' in the domain {dom!r}"]
    p = cli(cluster, "--output", "json", "admin", "user", "info", missing)
    assert p.returncode != 0 or p.stdout.strip() in ("null", "")


def test_no_project_hint_names_the_command_that_fixes_it(cluster: Cluster) -> None:
    email, uid, kp = _new_user(cluster, "default")  # in no project
    assert _groups(cluster, email) == set()
    fix = f"backend.ai admin group add-users default -d default {uid}"

    p = cli(cluster, "create", "python", "--starts-at", "1h", who=kp)
    assert p.returncode == 1 and p.stdout == "", p.stderr
    lines = p.stderr.strip().splitlines()
    assert len(lines) == 2, p.stderr
    assert lines[0].startswith("✘ ") and "No project (group) 'default' in domain 'default'" in lines[0]
    assert lines[1] == f"∙ Hint: you belong to no project; an admin can add you with: {fix}"

    p = cli(cluster, "run", "python", "-c", "print(1)", "--starts-at", "1h", who=kp)
    assert p.returncode == 1 and p.stdout == "", p.stderr
    assert p.stderr.strip().splitlines()[-1] == f"∙ Hint: you belong to no project; an admin can add you with: {fix}"

    # The hinted command, as written, fixes it.
    ok(cluster, *fix.split()[1:])
    name = uniq("hinted")
    try:
        p = ok(cluster, "create", "python", "-t", name, "--starts-at", "1h", "--enqueue-only", who=kp)
        assert "Hint" not in p.stderr
    finally:
        cli(cluster, "rm", name, who=kp)
