"""Dotfiles and the user bootstrap script: ``/user-config/*`` over signed HTTP, the ``dotfile`` CLI, and their
effect on new sessions (real containers).

Each test works as a user of its own, so the limits it fills and the files it leaves touch nobody else.
"""

from __future__ import annotations

import json
import secrets
import subprocess
import sys
from typing import Any

import httpx
import pytest

from ai.backend.manager.fixtures import DEFAULT_GROUP_ID
from ai.backend.manager.userconfig import MAX_DOTFILES, MAX_TOTAL_BYTES
from ai.backend.testutils.problems import problem

from .conftest import ADMIN, USER, Cluster

CLI = [sys.executable, "-m", "ai.backend.client.cli"]
DOT = "/user-config/dotfiles"


def new_user(m: Cluster) -> dict[str, Any]:
    """A fresh plain user in the default project, with its keypair."""
    email = f"dot-{secrets.token_hex(4)}@example.org"
    q = "mutation($e: String!, $p: UserInput!) { create_user(email: $e, props: $p) { ok msg } }"
    props = {
        "password": "pass-word-1",
        "domain_name": "default",
        "role": "user",
        "group_ids": [str(DEFAULT_GROUP_ID)],
        "need_password_change": False,
    }
    r = m.request("POST", "/admin/gql", {"query": q, "variables": {"e": email, "p": props}}, who=ADMIN)
    assert r.json()["data"]["create_user"]["ok"] is True, r.text
    r = m.request(
        "POST",
        "/admin/gql",
        {"query": "query($e: String) { keypairs(email: $e) { access_key secret_key } }", "variables": {"e": email}},
        who=ADMIN,
    )
    kp = r.json()["data"]["keypairs"][0]
    return {"email": email, "access_key": kp["access_key"], "secret_key": kp["secret_key"]}


def _list(m: Cluster, who: dict[str, Any]) -> list[dict[str, Any]]:
    r = m.request("GET", DOT, who=who)
    assert r.status_code == 200, r.text
    out: list[dict[str, Any]] = r.json()
    return out


def _add(m: Cluster, who: dict[str, Any], path: str, data: str = "x", perm: str = "644") -> httpx.Response:
    return m.request("POST", DOT, {"path": path, "data": data, "permission": perm}, who=who)


def test_dotfile_round_trip(manager: Cluster) -> None:
    u = new_user(manager)
    assert _list(manager, u) == []
    r = _add(manager, u, ".vimrc", "set number\n", "644")
    assert r.status_code == 200 and r.json() == {}
    # An absolute path inside /home/work is the same file.
    assert _add(manager, u, "/home/work/bin/hello.sh", "#!/bin/sh\necho hi\n", "0755").status_code == 200
    assert _list(manager, u) == [
        {"path": ".vimrc", "permission": "644", "data": "set number\n"},
        {"path": "bin/hello.sh", "permission": "755", "data": "#!/bin/sh\necho hi\n"},
    ]
    one = manager.request("GET", DOT + "?path=bin/hello.sh", who=u).json()
    assert one["path"] == "bin/hello.sh" and one["perm"] == "755" and one["data"].startswith("#!/bin/sh")
    r = manager.request("PATCH", DOT, {"path": ".vimrc", "data": "set nu\n", "permission": "600"}, who=u)
    assert r.status_code == 200, r.text
    assert manager.request("GET", DOT + "?path=.vimrc", who=u).json()["data"] == "set nu\n"
    r = manager.request("DELETE", DOT + "?path=.vimrc", who=u)
    assert r.status_code == 200 and r.json() == {"success": True}
    assert [d["path"] for d in _list(manager, u)] == ["bin/hello.sh"]
    problem(manager.request("GET", DOT + "?path=.vimrc", who=u), 404, ".vimrc")
    problem(manager.request("DELETE", DOT + "?path=.vimrc", who=u), 404)
    problem(manager.request("PATCH", DOT, {"path": ".vimrc", "data": "", "permission": "644"}, who=u), 404)


def test_duplicates_conflict(manager: Cluster) -> None:
    u = new_user(manager)
    assert _add(manager, u, ".bashrc", "one").status_code == 200
    problem(_add(manager, u, ".bashrc", "two"), 409, ".bashrc")
    problem(_add(manager, u, "/home/work/.bashrc", "two"), 409)
    problem(_add(manager, u, "./.bashrc", "two"), 409)
    assert _list(manager, u) == [{"path": ".bashrc", "permission": "644", "data": "one"}]


@pytest.mark.parametrize(
    ("path", "words"),
    [
        ("../escape", [".."]),
        ("a/../../escape", [".."]),
        ("/home/work/../etc/passwd", [".."]),
        ("/etc/profile", ["outside"]),
        ("/home/workshop/x", ["outside"]),
        ("/home/work", ["outside"]),
        ("", ["path"]),
        (".", ["does not name a file"]),
        ("dir/", ["directory"]),
        (".ssh/authorized_keys", ["reserved"]),
        ("bad\nname", ["forbidden"]),
    ],
)
def test_bad_paths_are_refused(manager: Cluster, path: str, words: list[str]) -> None:
    problem(_add(manager, USER, path), 400, *words)
    assert path not in {d["path"] for d in _list(manager, USER)}


def test_bad_bodies(manager: Cluster) -> None:
    u = new_user(manager)
    for perm in ("999", "rwx", "75", "07555"):
        problem(_add(manager, u, ".x", "d", perm), 400, "permission")
    problem(manager.request("POST", DOT, {"path": ".x", "data": "d", "permission": 755}, who=u), 400, "permission")
    problem(manager.request("POST", DOT, {"path": ".x", "permission": "644"}, who=u), 400, "data")
    problem(manager.request("POST", DOT, {"path": ".x", "data": 5, "permission": "644"}, who=u), 400, "data")
    assert _list(manager, u) == []


def test_limits(manager: Cluster) -> None:
    u = new_user(manager)
    for i in range(MAX_DOTFILES):
        assert _add(manager, u, f".f{i}", "").status_code == 200
    problem(_add(manager, u, ".one-too-many"), 400, str(MAX_DOTFILES))
    assert len(_list(manager, u)) == MAX_DOTFILES
    # Size: the paths and contents of one user's dotfiles together stay within 64 KiB.
    v = new_user(manager)
    half = "a" * (MAX_TOTAL_BYTES // 2)
    assert _add(manager, v, ".big1", half).status_code == 200
    problem(_add(manager, v, ".big2", half), 400, "KiB")
    small = _add(manager, v, ".small", "b" * 100)
    assert small.status_code == 200
    # An update that would overflow is refused and leaves the file as it was.
    r = manager.request("PATCH", DOT, {"path": ".small", "data": half, "permission": "644"}, who=v)
    problem(r, 400, "KiB")
    assert manager.request("GET", DOT + "?path=.small", who=v).json()["data"] == "b" * 100
    # Shrinking the big one makes room again.
    r = manager.request("PATCH", DOT, {"path": ".big1", "data": "", "permission": "644"}, who=v)
    assert r.status_code == 200
    assert _add(manager, v, ".big2", half).status_code == 200


def test_other_users_and_admins(manager: Cluster) -> None:
    u, w = new_user(manager), new_user(manager)
    assert _add(manager, u, ".secret", "u's").status_code == 200
    assert _list(manager, w) == []
    problem(manager.request("GET", DOT + "?path=.secret", who=w), 404)
    problem(manager.request("GET", DOT + "?owner_access_key=" + u["access_key"], who=w), 403)
    # An admin manages a user's dotfiles with owner_access_key.
    r = manager.request("GET", DOT + "?owner_access_key=" + u["access_key"], who=ADMIN)
    assert [d["path"] for d in r.json()] == [".secret"]
    r = manager.request(
        "POST",
        DOT,
        {"path": ".fromadmin", "data": "hi", "permission": "644", "owner_access_key": u["access_key"]},
        who=ADMIN,
    )
    assert r.status_code == 200, r.text
    assert {d["path"] for d in _list(manager, u)} == {".secret", ".fromadmin"}
    assert ".fromadmin" not in {d["path"] for d in _list(manager, ADMIN)}


def test_bootstrap_script(manager: Cluster) -> None:
    u = new_user(manager)
    path = "/user-config/bootstrap-script"
    assert manager.request("GET", path, who=u).json() == ""
    r = manager.request("POST", path, {"script": "echo hello > /home/work/hello\n"}, who=u)
    assert r.status_code == 200 and r.json() == {}
    assert manager.request("GET", path, who=u).json() == "echo hello > /home/work/hello\n"
    assert manager.request("GET", path, who=USER).json() != "echo hello > /home/work/hello\n"
    problem(manager.request("POST", path, {"script": "x" * (64 * 1024 + 1)}, who=u), 400, "KiB")
    problem(manager.request("POST", path, {"script": 42}, who=u), 400, "script")
    problem(manager.request("POST", path, {}, who=u), 400, "script")
    assert manager.request("GET", path, who=u).json() == "echo hello > /home/work/hello\n"
    assert manager.request("POST", path, {"script": ""}, who=u).status_code == 200
    assert manager.request("GET", path, who=u).json() == ""


# ---- the CLI ----


def _cli(m: Cluster, who: dict[str, Any], *args: str, input: str | None = None) -> subprocess.CompletedProcess[str]:
    return subprocess.run([*CLI, *args], env=m.env(who), capture_output=True, text=True, input=input, timeout=120)


def _fails(p: subprocess.CompletedProcess[str], *words: str) -> None:
    assert p.returncode == 1, (p.stdout, p.stderr)
    lines = p.stderr.strip().splitlines()
    assert len(lines) == 1 and lines[0].startswith("✘"), p.stderr
    for w in words:
        assert w.lower() in lines[0].lower(), (w, lines)


def test_dotfile_cli(manager: Cluster, tmp_path: Any) -> None:
    u = new_user(manager)
    p = _cli(manager, u, "dotfile", "create", ".vimrc", "--data", "set nu", "-m", "644")
    assert p.returncode == 0 and "created" in p.stderr, p.stderr
    src = tmp_path / "tool.sh"
    src.write_text("#!/bin/sh\necho tool\n")
    assert _cli(manager, u, "dotfile", "create", "bin/tool.sh", "-f", str(src)).returncode == 0
    assert _cli(manager, u, "dotfile", "create", ".fromstdin", input="piped\n").returncode == 0
    p = _cli(manager, u, "dotfile", "list")
    assert p.returncode == 0
    rows = {line.split()[0]: line.split()[1] for line in p.stdout.splitlines()[2:] if line.strip()}
    assert rows == {".fromstdin": "755", ".vimrc": "644", "bin/tool.sh": "755"}, p.stdout
    listed = json.loads(_cli(manager, u, "--output", "json", "dotfile", "list").stdout)
    assert listed["count"] == 3
    assert {i["path"]: i["data"] for i in listed["items"]}["bin/tool.sh"] == "#!/bin/sh\necho tool\n"
    p = _cli(manager, u, "dotfile", "get", ".vimrc")
    assert p.returncode == 0 and "set nu" in p.stdout and "644" in p.stdout, p.stdout
    assert _cli(manager, u, "dotfile", "update", ".vimrc", "--data", "set nonu", "-m", "600").returncode == 0
    got = json.loads(_cli(manager, u, "--output", "json", "dotfile", "get", ".vimrc").stdout)
    assert got["data"] == "set nonu" and got["permission"] == "600"
    _fails(_cli(manager, u, "dotfile", "create", ".vimrc", "--data", "again"), "already exists")
    _fails(_cli(manager, u, "dotfile", "create", "../x", "--data", "x"), "..")
    bad = _cli(manager, u, "dotfile", "create", ".y", "--data", "x", "-m", "999")
    assert bad.returncode == 2 and "octal" in bad.stderr
    _fails(_cli(manager, u, "dotfile", "delete", ".vimrc"), "not deleted")  # no confirmation on stdin
    assert _cli(manager, u, "dotfile", "delete", "-f", ".vimrc").returncode == 0
    _fails(_cli(manager, u, "dotfile", "get", ".vimrc"), ".vimrc")
    assert {d["path"] for d in _list(manager, u)} == {".fromstdin", "bin/tool.sh"}


# ---- the effect on new sessions (real containers) ----


@pytest.mark.docker
def test_dotfiles_and_bootstrap_script_in_new_sessions(cluster: Cluster) -> None:
    u = new_user(cluster)
    assert _add(cluster, u, ".myrc", "export A=1\n", "640").status_code == 200
    assert _add(cluster, u, "bin/run.sh", "#!/bin/sh\necho ran\n", "755").status_code == 200
    script = 'echo "user script $BACKENDAI_SESSION_NAME" > /home/work/bootstrapped\n'
    assert cluster.request("POST", "/user-config/bootstrap-script", {"script": script}, who=u).status_code == 200
    code = (
        "import os, stat\n"
        "for p in ('.myrc', 'bin/run.sh'):\n"
        "    st = os.stat(p)\n"
        "    print(p, oct(stat.S_IMODE(st.st_mode)), st.st_uid, repr(open(p).read()))\n"
        "print(open('bootstrapped').read().strip() if os.path.exists('bootstrapped') else 'no bootstrap')\n"
    )

    def run(name: str, **extra: Any) -> str:
        r = cluster.request("POST", "/session", {"image": "python", "name": name, **extra}, who=u)
        assert r.status_code == 201 and r.json()["status"] == "RUNNING", r.text
        try:
            r = cluster.request("POST", f"/session/{name}", {"mode": "query", "code": code}, who=u)
            assert r.status_code == 200, r.text
            return "".join(str(c[1]) for c in r.json()["result"]["console"])
        finally:
            cluster.request("DELETE", f"/session/{name}", who=u)

    out = run("dotfile-sess")
    assert out.splitlines() == [
        ".myrc 0o640 1000 'export A=1\\n'",
        "bin/run.sh 0o755 1000 '#!/bin/sh\\necho ran\\n'",
        "user script dotfile-sess",
    ], out
    # A session's own bootstrap script replaces the user's.
    own = "echo own > /home/work/bootstrapped\n"
    assert run("dotfile-own", bootstrap_script=own).splitlines()[-1] == "own"
