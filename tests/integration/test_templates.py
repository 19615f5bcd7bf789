"""Session templates through real signed HTTP: CRUD, validation, visibility and sessions created from them.

The ``manager`` fixture (SQLite and PostgreSQL, no agent; a heartbeat registers the image) covers the
template CRUD; the ``cluster`` fixture (a real agent) covers ``POST /session/_/create-from-template``.
"""

from __future__ import annotations

import json
import secrets
import shutil
import subprocess
from pathlib import Path
from typing import Any

import httpx
import pytest
import yaml

from ai.backend.common.auth import CLUSTER_SECRET_HEADER
from ai.backend.manager.fixtures import DEFAULT_GROUP_ID
from ai.backend.manager.sessions.params import parse_create_params
from ai.backend.manager.sessions.templates import (
    GitSpec,
    add_git_clone,
    check_template,
    creation_body,
    git_clone_script,
    merge_overrides,
)
from ai.backend.testutils.problems import problem

from .conftest import ADMIN, USER, Cluster

IMAGE = "python:3.11-debian12"

SAMPLE = f"""---
api_version: v1
kind: taskTemplate
metadata:
  name: template1234
  tag: example-tag
spec:
  kernel:
    environ:
      MYCONFIG: XXX
    git:
      branch: '19.09'
      commit: 10daee9e328876d75e6d0fa4998d4456711730db
      repository: https://github.com/lablup/backend.ai-agent
      destinationDir: /home/work/baiagent
    image: {IMAGE}
  resources:
    cpu: '2'
    mem: 4g
  mounts:
    hostpath-test: /home/work/hostDesktop
    test-vfolder:
  sessionType: interactive
"""


def _template(name: str, image: str = IMAGE, environ: dict[str, str] | None = None, **spec: Any) -> str:
    doc = {
        "api_version": "v1",
        "kind": "taskTemplate",
        "metadata": {"name": name},
        "spec": {"kernel": {"image": image, "environ": environ or {}}, **spec},
    }
    return yaml.safe_dump(doc, sort_keys=False)


def _create(m: Cluster, payload: str, who: dict[str, Any] = USER, **extra: Any) -> str:
    r = m.request("POST", "/template/session", {"payload": payload, **extra}, who=who)
    assert r.status_code == 200, r.text
    item = r.json()  # one template document: one object, as the 22.03 SDK reads it
    assert isinstance(item, dict) and item["user"], item
    return str(item["id"])


def _ids(m: Cluster, who: dict[str, Any] = USER, query: str = "") -> list[str]:
    r = m.request("GET", "/template/session" + query, who=who)
    assert r.status_code == 200, r.text
    return [t["id"] for t in r.json()]


@pytest.fixture(scope="module")
def tm(manager: Cluster) -> Cluster:
    """The manager with the kernel image registered (as an agent's heartbeat would)."""
    hb = {
        "id": "tpl-fake-agent",
        "addr": "http://127.0.0.1:9",
        "available_slots": {"cpu": "1", "mem": "1g"},
        "images": [{"ref": IMAGE, "digest": "sha256:" + "0" * 64, "labels": {"ai.backend.kernelspec": "1"}}],
    }
    r = httpx.post(manager.endpoint + "/internal/heartbeat", json=hb, headers={CLUSTER_SECRET_HEADER: manager.secret})
    assert r.status_code == 200, r.text
    return manager


@pytest.fixture(scope="module")
def other(tm: Cluster) -> dict[str, Any]:
    """A second plain user in the default project."""
    email = f"tpl-{secrets.token_hex(3)}@example.org"
    q = "mutation($e: String!, $p: UserInput!) { create_user(email: $e, props: $p) { ok msg } }"
    props = {
        "password": "pass-word-1",
        "domain_name": "default",
        "role": "user",
        "group_ids": [str(DEFAULT_GROUP_ID)],
        "need_password_change": False,
    }
    r = tm.request("POST", "/admin/gql", {"query": q, "variables": {"e": email, "p": props}}, who=ADMIN)
    assert r.json()["data"]["create_user"]["ok"] is True, r.text
    kq = "query($e: String) { keypairs(email: $e) { access_key secret_key } }"
    r = tm.request("POST", "/admin/gql", {"query": kq, "variables": {"e": email}}, who=ADMIN)
    kp = r.json()["data"]["keypairs"][0]
    return {"email": email, "access_key": kp["access_key"], "secret_key": kp["secret_key"]}


def test_crud_round_trip(tm: Cluster) -> None:
    tid = _create(tm, SAMPLE)
    listed = {t["id"]: t for t in tm.request("GET", "/template/session").json()}
    assert listed[tid]["name"] == "template1234" and listed[tid]["is_owner"] is True
    assert listed[tid]["user_email"] == USER["email"] and listed[tid]["group_name"] == "default"
    assert listed[tid]["type"] == "task"
    # YAML comes back equal to what was sent (camelCase keys and all).
    r = tm.request("GET", f"/template/session/{tid}?format=yaml")
    assert r.status_code == 200 and r.headers["content-type"].startswith("text/yaml")
    assert yaml.safe_load(r.text) == yaml.safe_load(SAMPLE)
    r = tm.request("GET", f"/template/session/{tid}?format=json")
    assert r.json()["template"] == yaml.safe_load(SAMPLE) and r.json()["name"] == "template1234"
    assert r.json()["group_id"] == str(DEFAULT_GROUP_ID)
    # Update: the new document replaces the old one.
    new = SAMPLE.replace("MYCONFIG: XXX", "MYCONFIG: YYY").replace("template1234", "renamed")
    r = tm.request("PUT", f"/template/session/{tid}", {"payload": new})
    assert r.status_code == 200 and r.json() == {"success": True}
    got = yaml.safe_load(tm.request("GET", f"/template/session/{tid}?format=yaml").text)
    assert got["spec"]["kernel"]["environ"] == {"MYCONFIG": "YYY"}
    assert {t["id"]: t["name"] for t in tm.request("GET", "/template/session").json()}[tid] == "renamed"
    # A bad update changes nothing.
    problem(tm.request("PUT", f"/template/session/{tid}", {"payload": "kind: nope"}), 400, "api_version")
    assert yaml.safe_load(tm.request("GET", f"/template/session/{tid}?format=yaml").text) == got
    # Delete: gone from every read, and a second delete is a 404.
    r = tm.request("DELETE", f"/template/session/{tid}")
    assert r.status_code == 200 and r.json() == {"success": True}
    assert tid not in _ids(tm)
    problem(tm.request("GET", f"/template/session/{tid}"), 404, "template")
    problem(tm.request("PUT", f"/template/session/{tid}", {"payload": new}), 404)
    problem(tm.request("DELETE", f"/template/session/{tid}"), 404)


def test_json_payload_and_wrapper(tm: Cluster) -> None:
    doc = yaml.safe_load(_template("json-one"))
    tid = _create(tm, json.dumps(doc))
    assert tm.request("GET", f"/template/session/{tid}").json()["template"] == doc
    wrapped = json.dumps(
        {"session_templates": [{"template": doc, "name": "first"}, {"template": yaml.safe_load(_template("second"))}]}
    )
    r = tm.request("POST", "/template/session", {"payload": wrapped})
    assert r.status_code == 200, r.text
    ids = [item["id"] for item in r.json()]
    assert len(ids) == 2 and all(item["user"] for item in r.json())
    names = {t["id"]: t["name"] for t in tm.request("GET", "/template/session").json()}
    assert [names[i] for i in ids] == ["first", "second"]


@pytest.mark.parametrize(
    ("payload", "words"),
    [
        ("api_version: v1\nkind: taskTemplate\nmetadata:\n\tname: x\n", ["line 4", "yaml"]),
        ("api_version: v1\nkind: taskTemplate\nmetadata:\n  name: x\n  tag: [open\nspec: {}\n", ["line 6"]),
        (_template("x").replace("kind: taskTemplate", "kind: clusterTemplate"), ["kind"]),
        (_template("x").replace("api_version: v1\n", ""), ["api_version", "required"]),
        (_template("x").replace(f"image: {IMAGE}", "image: null"), ["spec.kernel.image", "required"]),
        (_template("x", resources={"cpu": "lots"}), ["spec.resources"]),
        (_template("x", type="weird"), ["spec.session_type", "weird"]),
        (_template("x", environ={"1BAD": "v"}), ["spec.kernel.environ", "1BAD"]),
        (
            _template("x").replace("environ: {}", "git: {repository: 'https://h/r.git', destinationDir: ../etc}"),
            ["destination_dir", ".."],
        ),
        (_template("x").replace("environ: {}", "git: {branch: main}"), ["spec.kernel.git.repository"]),
        ("- just\n- a list\n", ["mapping"]),
        (_template("x", image="no-such-image:1.0"), ["spec.kernel.image", "no-such-image:1.0"]),
    ],
)
def test_invalid_templates_are_refused_and_store_nothing(tm: Cluster, payload: str, words: list[str]) -> None:
    before = _ids(tm)
    problem(tm.request("POST", "/template/session", {"payload": payload}), 400, *words)
    assert _ids(tm) == before


def test_bad_request_bodies(tm: Cluster) -> None:
    problem(tm.request("POST", "/template/session", {}), 400, "payload")
    problem(tm.request("POST", "/template/session", {"payload": {"api_version": "v1"}}), 400, "string")
    problem(
        tm.request("POST", "/template/session", {"payload": _template("x"), "group": "no-such-group"}),
        400,
        "no-such-group",
    )
    problem(
        tm.request("POST", "/template/session", {"payload": _template("x"), "domain": "elsewhere"}), 400, "elsewhere"
    )
    problem(tm.request("GET", "/template/session/not-a-uuid"), 404)
    tid = _create(tm, _template("fmt"))
    problem(tm.request("GET", f"/template/session/{tid}?format=xml"), 400, "format")


def test_other_users_templates_are_invisible(tm: Cluster, other: dict[str, Any]) -> None:
    mine = _create(tm, _template("mine"))
    theirs = _create(tm, _template("theirs"), who=other)
    assert mine in _ids(tm) and theirs not in _ids(tm)
    assert theirs in _ids(tm, other) and mine not in _ids(tm, other)
    # Asking for everything is an admin power: a user still sees only their own.
    assert theirs not in _ids(tm, USER, "?all=true")
    for method, body in (("GET", None), ("PUT", {"payload": _template("hijack")}), ("DELETE", None)):
        problem(tm.request(method, f"/template/session/{theirs}", body), 404)
    problem(tm.request("POST", "/session/_/create-from-template", {"template_id": theirs}), 404)
    assert (
        yaml.safe_load(tm.request("GET", f"/template/session/{theirs}?format=yaml", who=other).text)["metadata"]["name"]
        == "theirs"
    )
    # Acting for another user is for admins only.
    problem(tm.request("GET", "/template/session/" + theirs + "?owner_access_key=" + other["access_key"]), 403)
    # The superadmin lists everything with all=true and reads any template; is_owner tells whose it is.
    everything = {t["id"]: t for t in tm.request("GET", "/template/session?all=true", who=ADMIN).json()}
    assert {mine, theirs} <= set(everything) and everything[theirs]["is_owner"] is False
    assert everything[theirs]["user_email"] == other["email"]
    assert mine not in _ids(tm, ADMIN)  # without all=true an admin lists their own only
    assert tm.request("GET", f"/template/session/{theirs}", who=ADMIN).status_code == 200
    # An admin files a template for the user, who then owns it.
    filed = _create(tm, _template("filed"), who=ADMIN, owner_access_key=other["access_key"])
    assert filed in _ids(tm, other)


def test_git_clone_script_clones_into_the_destination(tmp_path: Path) -> None:
    """The generated bootstrap lines, run by a shell, clone the branch and check out the commit."""
    if shutil.which("git") is None:
        pytest.skip("git is not installed on this host")
    src = tmp_path / "src repo"
    env = {
        "GIT_AUTHOR_NAME": "t",
        "GIT_AUTHOR_EMAIL": "t@e",
        "GIT_COMMITTER_NAME": "t",
        "GIT_COMMITTER_EMAIL": "t@e",
        "HOME": str(tmp_path),
        "PATH": "/usr/bin:/bin",
    }

    def git(*args: str, cwd: Path = src) -> str:
        return subprocess.run(["git", *args], cwd=cwd, env=env, check=True, capture_output=True, text=True).stdout

    src.mkdir()
    git("init", "-q", "-b", "main")
    (src / "f.txt").write_text("one")
    git("add", "f.txt")
    git("commit", "-qm", "one")
    first = git("rev-parse", "HEAD").strip()
    git("checkout", "-qb", "dev")
    (src / "f.txt").write_text("two")
    git("commit", "-qam", "two")
    dest = tmp_path / "work" / "it's here"
    script = git_clone_script(GitSpec(repository=f"file://{src}", dest_dir=str(dest), branch="dev", commit=first))
    out = subprocess.run(["sh", "-ec", script], env=env, capture_output=True, text=True)
    assert out.returncode == 0, out.stderr
    assert (dest / "f.txt").read_text() == "one"  # the commit, checked out from the dev branch
    assert git("rev-parse", "HEAD", cwd=dest).strip() == first


def test_git_credentials_stay_out_of_the_clone_config() -> None:
    script = git_clone_script(
        GitSpec(
            repository="https://git.example.org/r.git",
            dest_dir="/home/work/r",
            username="me",
            password="p@ss word;rm -rf /",
        )
    )
    lines = script.splitlines()
    assert "https://me:p%40ss%20word%3Brm%20-rf%20%2F@git.example.org/r.git" in lines[1]
    assert lines[2] == "git -C /home/work/r remote set-url origin https://git.example.org/r.git"


def test_merge_overrides_replace_whole_values_in_any_spelling() -> None:
    tpl = check_template(yaml.safe_load(SAMPLE))
    base = creation_body(tpl, domain="default", group="g1")
    assert base["config"]["mounts"] == ["hostpath-test", "test-vfolder"]
    assert base["config"]["mount_map"] == {"hostpath-test": "/home/work/hostDesktop"}
    merged = merge_overrides(
        base,
        {
            "template_id": "x",
            "sessionType": "batch",
            "groupName": "g2",
            "tag": None,
            "startup_command": "python run.py",
            "config": {"environ": {"B": "2"}, "mounts": ["other"], "scaling_group": None},
        },
    )
    # (Mounts are checked when sessions are created; folders are not part of this check.)
    params = parse_create_params({**merged, "config": {k: v for k, v in merged["config"].items() if k != "mounts"}})
    assert params.session_type == "batch" and params.group == "g2" and params.tag == "example-tag"
    assert params.startup_command == "python run.py"
    assert merged["config"]["environ"] == {"B": "2"} and merged["config"]["mounts"] == ["other"]
    assert "mount_map" not in merged["config"]  # the template's paths went with its mounts
    assert merged["config"]["resources"] == {"cpu": "2", "mem": "4g"}
    assert "template_id" not in merged
    add_git_clone(merged, tpl.git)
    assert merged["bootstrap_script"].splitlines()[1] == (
        "git clone --branch 19.09 -- https://github.com/lablup/backend.ai-agent /home/work/baiagent"
    )
    commit = "10daee9e328876d75e6d0fa4998d4456711730db"
    assert merged["bootstrap_script"].splitlines()[2] == f"git -C /home/work/baiagent checkout --quiet {commit}"


# ---- creating sessions from templates (real containers) ----


def _run(cluster: Cluster, name: str, code: str) -> str:
    r = cluster.request("POST", f"/session/{name}", {"mode": "query", "code": code})
    assert r.status_code == 200, r.text
    return "".join(str(c[1]) for c in r.json()["result"]["console"])


@pytest.mark.docker
def test_create_from_template_with_overrides(cluster: Cluster) -> None:
    tpl = _template(
        "envtpl", image="python", environ={"MYCONFIG": "XXX", "OTHER": "kept"}, resources={"cpu": "1", "mem": "256m"}
    )
    tpl = tpl.replace("kind: taskTemplate", "kind: task_template").replace(
        "metadata:\n  name: envtpl", "metadata:\n  name: envtpl\n  tag: from-tpl"
    )
    tid = _create(cluster, tpl)
    env_code = "import os\nprint(os.environ.get('MYCONFIG'), os.environ.get('OTHER'))"
    r = cluster.request("POST", "/session/_/create-from-template", {"template_id": tid, "name": "tpl-plain"})
    assert r.status_code == 201, r.text
    assert r.json()["status"] == "RUNNING" and r.json()["sessionName"] == "tpl-plain"
    try:
        assert _run(cluster, "tpl-plain", env_code) == "XXX kept\n"
        info = cluster.request("GET", "/session/tpl-plain").json()
        assert info["tag"] == "from-tpl" and info["image"] == IMAGE and info["type"] == "interactive"
        assert info["requestedSlots"]["cpu"] == "1" and int(info["requestedSlots"]["mem"]) == 256 * 2**20
        # Reusing the running session still answers 201 on this route.
        again = cluster.request("POST", "/session/_/create-from-template", {"template_id": tid, "name": "tpl-plain"})
        assert again.status_code == 201 and again.json()["created"] is False
    finally:
        cluster.request("DELETE", "/session/tpl-plain")
    # Overrides win, and the environment is replaced as a whole (OTHER is gone).
    r = cluster.request(
        "POST",
        "/session/_/create-from-template",
        {"templateId": tid, "name": "tpl-over", "tag": "mine", "config": {"environ": {"MYCONFIG": "YYY"}}},
    )
    assert r.status_code == 201, r.text
    try:
        assert _run(cluster, "tpl-over", env_code) == "YYY None\n"
        assert cluster.request("GET", "/session/tpl-over").json()["tag"] == "mine"
    finally:
        cluster.request("DELETE", "/session/tpl-over")


@pytest.mark.docker
def test_create_from_template_refusals_create_nothing(cluster: Cluster) -> None:
    tid = _create(cluster, _template("refusals", image="python"))

    def names() -> set[str]:
        q = "query { compute_session_list(limit: 100, offset: 0) { items { name } } }"
        r = cluster.request("POST", "/admin/gql", {"query": q})
        return {i["name"] for i in r.json()["data"]["compute_session_list"]["items"]}

    before = names()
    problem(cluster.request("POST", "/session/_/create-from-template", {}), 400, "template_id")
    problem(
        cluster.request(
            "POST", "/session/_/create-from-template", {"template_id": tid, "name": "tpl-bad", "type": "weird"}
        ),
        400,
        "type",
    )
    problem(
        cluster.request(
            "POST", "/session/_/create-from-template", {"template_id": tid, "name": "tpl-bad", "image": "no-such-image"}
        ),
        404,
        "no-such-image",
    )
    cluster.request("DELETE", f"/template/session/{tid}")
    problem(cluster.request("POST", "/session/_/create-from-template", {"template_id": tid, "name": "tpl-bad"}), 404)
    assert names() == before
