"""The official 19.09 CLI (``backend.ai-client==19.9.10``, API v4) against a real cluster.

One test per row marked OK or FAIL in section "3. 19.09 CLI" of the compatibility matrix
(``/work/shared/compat/official-client-matrix.md``). FAIL rows are written for the correct behaviour.
The 19.09 CLI often prints an error and still exits 0, so every test checks what was printed and the
state through our own API.
"""

from __future__ import annotations

import json
import re
import socket
import subprocess
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import httpx
import pytest

from ai.backend.manager.fixtures import ADMIN, USER
from ai.backend.testutils.cluster import Cluster

from .conftest import CLI, GQL, SDK, VOLUME, OfficialClients, Who, client_env, unique
from .helpers import (
    RES,
    create_domain,
    create_group,
    delete_domain,
    delete_group,
    delete_vfolder,
    destroy,
    gone,
    make_user,
    session_status,
    snippet,
    try_gql,
    vf_names,
    vfolders,
    wait_status,
)

ANSI = re.compile(r"\x1b\[[0-9;]*m")


def plain(text: str) -> str:
    return ANSI.sub("", text)


def new_session(sdk22: SDK, name: str, who: Who = USER) -> str:
    """An interactive session started with the 22.03 SDK (an OK row); returns its id."""
    got = sdk22(
        snippet(
            """
        with Session() as s:
            emit(str(s.ComputeSession.get_or_create('python', name=NAME, resources=RES).id))
    """,
            NAME=name,
            RES=RES,
        ),
        who=who,
    )
    return str(got)


@pytest.fixture(scope="module")
def sess(sdk22: SDK, cluster: Cluster) -> Iterator[dict[str, str]]:
    name = unique("cs-19s")
    sid = new_session(sdk22, name)
    yield {"name": name, "id": sid}
    destroy(cluster, sid)


# --- sessions -------------------------------------------------------------------------------------------------


def test_config(cli19: CLI, cluster: Cluster) -> None:
    out = plain(cli19("config").ok().out)
    assert "19.09.10" in out and "v4.20190615" in out
    assert cluster.endpoint in out and USER["access_key"] in out


def test_ps(sess: dict[str, str], cli19: CLI) -> None:
    """FAIL R5: the legacy ``compute_session_list`` fields (``sess_id``, ``sess_type``, ``mem_cur_bytes``...)."""
    for args in (["ps"], ["ps", "-a"], ["ps", "--running", "--detail", "--show-tid"]):
        out = cli19(*args).ok().stdout
        line = next((ln for ln in out.splitlines() if ln.startswith(sess["name"] + " ")), None)
        assert line is not None, f"{args}: {out}"
        assert "RUNNING" in line and "interactive" in line and "python" in line, line
        if "--show-tid" in args:
            assert sess["id"] in line
    assert sess["name"] in cli19("ps", "--id-only").ok().stdout.split()
    dead = cli19("ps", "--dead").ok().out
    assert sess["name"] not in dead


def test_admin_sessions(sess: dict[str, str], cli19: CLI) -> None:
    """FAIL R5 (same query as ``ps``, with the owner column for admins)."""
    out = cli19("admin", "sessions", who=ADMIN).ok().stdout
    line = next((ln for ln in out.splitlines() if ln.startswith(sess["name"] + " ")), None)
    assert line is not None, out
    assert USER["access_key"] in line and "RUNNING" in line


def test_admin_session(sess: dict[str, str], cli19: CLI) -> None:
    """FAIL R5: ``compute_session(sess_id: ...)`` and the legacy fields."""
    out = plain(cli19("admin", "session", sess["name"], who=ADMIN).ok().stdout)
    assert f"Session ID: {sess['name']}" in out and "Status: RUNNING" in out, out
    assert "Image: python" in out and "Role: main" in out


def test_run(sess: dict[str, str], cli19: CLI, cluster: Cluster) -> None:
    """FAIL R4: ``run`` needs ``kernelId`` in the create answer; ``--rm`` removes the session afterwards,
    and ``-t EXISTING`` reuses a running session."""
    name = unique("cs-19run")
    try:
        r = cli19("run", "--rm", "-t", name, "python", "-c", "print(6*7)").ok()
        assert "42" in r.stdout.split(), r.describe()
        assert gone(wait_status(cluster, name, gone, 30))
    finally:
        destroy(cluster, name)
    r = cli19("run", "-t", sess["name"], "python", "-c", "print('again', 2*21)").ok()
    assert "again 42" in r.stdout, r.describe()
    assert "Reusing" in plain(r.out)
    assert session_status(cluster, sess["id"]) == "RUNNING"


def test_start(cli19: CLI, cluster: Cluster) -> None:
    """FAIL R4."""
    name = unique("cs-19st")
    try:
        r = cli19("start", "-t", name, "python").ok()
        assert f"Session ID {name} is created and ready" in plain(r.out), r.describe()
        assert session_status(cluster, name) == "RUNNING"
        r = cli19("start", "-t", name, "python").ok()
        assert "already running" in plain(r.out), r.describe()
    finally:
        destroy(cluster, name)


def test_session_files_logs_restart(
    sess: dict[str, str], cli19: CLI, workdir: Path, sdk22: SDK, cluster: Cluster
) -> None:
    (workdir / "data19.csv").write_text("a,b\n1,2\n")
    (workdir / "main19.py").write_text("print('main19')\n")
    assert "Uploaded" in cli19("upload", sess["name"], "data19.csv", "main19.py", cwd=workdir).ok().out
    out = cli19("ls", sess["name"], ".").ok().stdout
    assert re.search(r"^data19\.csv\s+8 Bytes", out, re.M) and re.search(r"^main19\.py\s", out, re.M), out
    cli19("download", sess["name"], "data19.csv", "--dest", "dl19", cwd=workdir).ok()
    assert (workdir / "dl19" / "data19.csv").read_text() == "a,b\n1,2\n"
    sdk22(
        snippet(
            """
        with Session() as s:
            emit(s.ComputeSession(NAME).execute(code="import sys; print('to-the-log', file=sys.stderr)"))
    """,
            NAME=sess["name"],
        )
    )
    r = cli19("logs", sess["name"]).ok()
    assert "End of logs" in plain(r.out)
    sdk22(
        snippet(
            """
        with Session() as s:
            emit(s.ComputeSession(NAME).execute(code='marker19 = 1'))
    """,
            NAME=sess["name"],
        )
    )
    assert "Done" in plain(cli19("restart", sess["name"]).ok().out)
    assert wait_status(cluster, sess["id"], lambda st: st == "RUNNING") == "RUNNING"
    got = sdk22(
        snippet(
            """
        with Session() as s:
            emit(s.ComputeSession(NAME).execute(code="print('marker19' in globals())"))
    """,
            NAME=sess["name"],
        )
    )
    assert got["console"] == [["stdout", "False\n"]]


def test_events(sdk22: SDK, cluster: Cluster, clients: OfficialClients, home: Path) -> None:
    """FAIL R15: ``GET /stream/kernel/_/events?sessionId=...``."""
    name = unique("cs-19ev")
    sid = new_session(sdk22, name)
    try:
        proc = subprocess.Popen(
            [clients.cli("19.09"), "events", name],
            stdout=subprocess.PIPE,
            stderr=subprocess.STDOUT,
            text=True,
            env=client_env(cluster, USER, home),
            cwd=home,
        )
        time.sleep(3)
        destroy(cluster, sid)
        try:
            out, _ = proc.communicate(timeout=60)
        except subprocess.TimeoutExpired:
            proc.kill()
            out, _ = proc.communicate()
        out = plain(out)
        assert "session_terminated" in out and sid in out, out
        assert "Error" not in out
    finally:
        destroy(cluster, sid)


def test_terminate(sdk22: SDK, cli19: CLI, cluster: Cluster) -> None:
    name = unique("cs-19tm")
    sid = new_session(sdk22, name)
    try:
        assert "Done" in plain(cli19("terminate", name).ok().out)
        assert gone(wait_status(cluster, sid, gone, 30))
    finally:
        destroy(cluster, sid)


def test_terminate_stats(sdk22: SDK, cli19: CLI, cluster: Cluster) -> None:
    """FAIL R3: the destroy answer's ``stats`` needs a ``status`` key."""
    name = unique("cs-19ts")
    sid = new_session(sdk22, name)
    try:
        r = cli19("terminate", "-s", name).ok()
        assert re.search(r"^cpu_used\w*\s+\d+", r.stdout, re.M) and "mem_max_bytes" in r.stdout, r.describe()
        assert gone(wait_status(cluster, sid, gone, 30))
    finally:
        destroy(cluster, sid)


def test_task_logs(sdk22: SDK, cli19: CLI, cluster: Cluster) -> None:
    name = unique("cs-19b")
    got = sdk22(
        snippet(
            """
        with Session() as s:
            emit(str(s.ComputeSession.get_or_create('python', name=NAME, type_='batch', resources=RES,
                                                    startup_command='python3 -c "print(6*7)"').id))
    """,
            NAME=name,
            RES=RES,
        )
    )
    try:
        wait_status(cluster, got, lambda st: st is None or st in ("TERMINATED", "ERROR"))
        r = cli19("task-logs", got).ok()
        assert "42" in r.stdout.split(), r.describe()
    finally:
        destroy(cluster, got)


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def test_proxy(cluster: Cluster, clients: OfficialClients, home: Path) -> None:
    port = _free_port()
    proc = subprocess.Popen(
        [clients.cli("19.09"), "proxy", "--bind", "127.0.0.1", "-p", str(port)],
        stdout=subprocess.PIPE,
        stderr=subprocess.STDOUT,
        env=client_env(cluster, USER, home),
        cwd=home,
    )
    try:
        deadline = time.monotonic() + 30
        while True:
            try:
                root = httpx.get(f"http://127.0.0.1:{port}/", timeout=10)
                break
            except httpx.TransportError:
                assert time.monotonic() < deadline and proc.poll() is None, "the proxy did not start"
                time.sleep(0.3)
        assert root.status_code == 200 and root.json()["version"].startswith("v"), root.text
        folders = httpx.get(f"http://127.0.0.1:{port}/folders", timeout=10)
        assert folders.status_code == 200 and isinstance(folders.json(), list), folders.text
    finally:
        proc.terminate()
        try:
            proc.wait(10)
        except subprocess.TimeoutExpired:
            proc.kill()
            proc.wait()


# --- virtual folders ------------------------------------------------------------------------------------------


@pytest.fixture
def vfolder(cluster: Cluster) -> Iterator[str]:
    name = unique("cs-19vf")
    r = cluster.request("POST", "/folders", {"name": name, "host": VOLUME})
    assert r.status_code in (200, 201), r.text
    yield name
    delete_vfolder(cluster, name)


def seed(sdk22: SDK, name: str, workdir: Path, files: dict[str, str]) -> None:
    """Put files into a folder with the 22.03 SDK (an OK row)."""
    src = workdir / "seed"
    src.mkdir(exist_ok=True)
    for fn, text in files.items():
        (src / fn).parent.mkdir(parents=True, exist_ok=True)
        (src / fn).write_text(text)
    sdk22(
        snippet(
            """
        with Session() as s:
            vf = s.VFolder(NAME)
            for f in FILES:
                vf.upload([f])
            emit(1)
    """,
            NAME=name,
            FILES=list(files),
        ),
        cwd=src,
    )


def test_vfolder_lists(vfolder: str, cli19: CLI) -> None:
    assert vfolder in cli19("vfolder", "list").ok().stdout
    assert vfolder in cli19("vfolder", "list", "-a", who=ADMIN).ok().stdout
    denied = cli19("vfolder", "list", "-a")
    assert "403" in denied.out and vfolder not in denied.stdout
    hosts = cli19("vfolder", "list-hosts").ok().stdout
    assert f"Default vfolder host: {VOLUME}" in hosts and f"Usable hosts: {VOLUME}" in hosts
    assert "user" in cli19("vfolder", "list-allowed-types").ok().stdout


def test_vfolder_create_info_mkdir_rename_delete(cli19: CLI, cluster: Cluster) -> None:
    name, new = unique("cs-19vf"), unique("cs-19vfr")
    try:
        assert f'"{name}" is created' in cli19("vfolder", "create", name, VOLUME).ok().out
        fid = vfolders(cluster)[name]["id"]
        info = cli19("vfolder", "info", name).ok().stdout
        assert name in info and fid.replace("-", "") in info.replace("-", "")
        cli19("vfolder", "mkdir", name, "d19").ok()
        assert vf_names(cluster, name) == {"d19"}
        assert "Renamed" in plain(cli19("vfolder", "rename", name, new).ok().out)
        assert new in vfolders(cluster) and name not in vfolders(cluster)
        assert "Deleted" in plain(cli19("vfolder", "delete", new).ok().out)
        assert new not in vfolders(cluster)
    finally:
        delete_vfolder(cluster, name)
        delete_vfolder(cluster, new)


def test_vfolder_upload(vfolder: str, cli19: CLI, workdir: Path, cluster: Cluster, sdk22: SDK) -> None:
    """FAIL R7: ``POST /folders/{name}/upload`` (multipart)."""
    (workdir / "data19.csv").write_text("x,y\n3,4\n")
    (workdir / "main19.py").write_text("print(19)\n")
    cli19("vfolder", "upload", vfolder, "data19.csv", "main19.py", cwd=workdir).ok()
    assert vf_names(cluster, vfolder) == {"data19.csv", "main19.py"}
    got = sdk22(
        snippet(
            """
        with Session() as s:
            os.makedirs('back', exist_ok=True)
            s.VFolder(NAME).download(['data19.csv'], basedir='back')
            emit(open('back/data19.csv').read())
    """,
            NAME=vfolder,
        ),
        cwd=workdir,
    )
    assert got == "x,y\n3,4\n"


def test_vfolder_ls(vfolder: str, cli19: CLI, workdir: Path, sdk22: SDK) -> None:
    """FAIL R6: ``files`` must be a JSON string."""
    seed(sdk22, vfolder, workdir, {"data19.csv": "12345"})
    r = cli19("vfolder", "ls", vfolder, ".").ok()
    assert re.search(r"^data19\.csv\s+5\s", r.stdout, re.M), r.describe()


def test_vfolder_rename_file(vfolder: str, cli19: CLI, workdir: Path, sdk22: SDK, cluster: Cluster) -> None:
    """FAIL R7: ``POST /folders/{name}/rename_file``."""
    seed(sdk22, vfolder, workdir, {"data19.csv": "1"})
    cli19("vfolder", "rename-file", vfolder, "data19.csv", "data19b.csv").ok()
    assert vf_names(cluster, vfolder) == {"data19b.csv"}


def test_vfolder_download(vfolder: str, cli19: CLI, workdir: Path, sdk22: SDK) -> None:
    """FAIL R7: ``GET /folders/{name}/download`` answering ``multipart/mixed``."""
    seed(sdk22, vfolder, workdir, {"data19b.csv": "b,c\n", "main19.py": "print(6)\n"})
    dest = workdir / "dl"
    dest.mkdir()
    cli19("vfolder", "download", vfolder, "data19b.csv", "main19.py", cwd=dest).ok()
    assert (dest / "data19b.csv").read_text() == "b,c\n"
    assert (dest / "main19.py").read_text() == "print(6)\n"


def test_vfolder_rm(vfolder: str, cli19: CLI, workdir: Path, sdk22: SDK, cluster: Cluster) -> None:
    """FAIL R7: ``DELETE /folders/{name}/delete_files``."""
    seed(sdk22, vfolder, workdir, {"main19.py": "x", "keep.txt": "k", "d19/inner.txt": "i"})
    assert vf_names(cluster, vfolder) == {"main19.py", "keep.txt", "d19"}
    cli19("vfolder", "rm", vfolder, "main19.py", input="y\n").ok()
    assert vf_names(cluster, vfolder) == {"keep.txt", "d19"}
    cli19("vfolder", "rm", "-r", vfolder, "d19", input="y\n").ok()
    assert vf_names(cluster, vfolder) == {"keep.txt"}


def test_vfolder_invite_and_accept(vfolder: str, cli19: CLI, user2: Who, cluster: Cluster) -> None:
    r = cli19("vfolder", "invite", vfolder, user2["email"], "-p", "ro").ok()
    assert user2["email"] in r.stdout
    listing = cli19("vfolder", "invitations", who=user2, input="")
    lines = [ln for ln in listing.stdout.splitlines() if re.match(r"\[\d+\] ", ln)]
    fid = vfolders(cluster)[vfolder]["id"]
    idx = next(ln.split("]")[0][1:] for ln in lines if fid in ln or fid.replace("-", "") in ln)
    r = cli19("vfolder", "invitations", who=user2, input=f"{idx}\na\n").ok()
    assert f"You can now access vfolder {vfolder}" in r.stdout, r.describe()
    assert vfolders(cluster, user2)[vfolder]["permission"] == "ro"
    cluster.request("POST", f"/folders/{vfolder}/leave", who=user2)


# --- administration -------------------------------------------------------------------------------------------


def test_admin_agents(cli19: CLI, cluster: Cluster) -> None:
    out = cli19("admin", "agents", who=ADMIN).ok().stdout
    assert re.search(rf"^{cluster.agent_id}\s+ALIVE", out, re.M), out
    info = cli19("admin", "agent", "-i", cluster.agent_id, who=ADMIN).ok().stdout
    assert re.search(rf"^ID\s+{cluster.agent_id}$", info, re.M) and re.search(r"^Status\s+ALIVE", info, re.M)


def test_admin_images(cli19: CLI, gql: GQL) -> None:
    out = cli19("admin", "images", who=ADMIN).ok().stdout
    line = next(ln for ln in out.splitlines() if ln.startswith("python "))
    tag = line.split()[2]
    alias = unique("cs-19alias")
    r = cli19("admin", "alias-image", alias, f"python:{tag}", who=ADMIN).ok()
    assert "alias has created" in plain(r.out)
    assert gql("query($r: String!) { image(reference: $r) { name tag } }", {"r": alias})["image"]["tag"] == tag
    cli19("admin", "dealias-image", alias, who=ADMIN).ok()
    assert gql("query($r: String!) { image(reference: $r) { name } }", {"r": alias})["image"] is None
    assert "Updated the image metadata" in plain(cli19("admin", "rescan-images", who=ADMIN).ok().out)


def test_admin_domains(cli19: CLI, gql: GQL) -> None:
    assert re.search(r"^Name\s+default$", cli19("admin", "domain", "-n", "default", who=ADMIN).ok().stdout, re.M)
    name = unique("cs-19dom")
    try:
        assert "is created" in cli19("admin", "domains", "add", name, "-d", "19 dom", who=ADMIN).ok().out
        d = gql("query($n: String) { domain(name: $n) { name description is_active } }", {"n": name})["domain"]
        assert d == {"name": name, "description": "19 dom", "is_active": True}
        assert "deleted" in cli19("admin", "domains", "delete", name, who=ADMIN).ok().out
        d = gql("query($n: String) { domain(name: $n) { is_active } }", {"n": name})["domain"]
        assert d is None or d["is_active"] is False
    finally:
        delete_domain(gql, name)


def test_admin_domains_update(cli19: CLI, gql: GQL) -> None:
    """FAIL R2: ``name: null`` must not rename the domain, nor ``null`` wipe its slots."""
    name = unique("cs-19domu")
    create_domain(gql, name)
    try:
        cli19("admin", "domains", "update", name, "--description", "19 upd", who=ADMIN).ok()
        d = gql(
            "query($n: String) { domain(name: $n) { name description total_resource_slots is_active } }", {"n": name}
        )["domain"]
        assert d is not None, "the domain was renamed"
        assert d["description"] == "19 upd" and d["is_active"] is True
        assert json.loads(d["total_resource_slots"]) == {"cpu": "8"}
    finally:
        delete_domain(gql, name)


def group_of(gql: GQL, gid: str) -> dict[str, Any] | None:
    g = gql(
        "query($id: UUID!) { group(id: $id) { name description is_active total_resource_slots "
        "allowed_vfolder_hosts } }",
        {"id": gid},
    )["group"]
    return dict(g) if g else None


@pytest.fixture
def group_id(gql: GQL) -> Iterator[str]:
    gid = create_group(gql, unique("cs-19grp"))
    yield gid
    delete_group(gql, gid)


def test_admin_groups_add(cli19: CLI, gql: GQL) -> None:
    name = unique("cs-19grp")
    r = cli19("admin", "groups", "add", "default", name, "-d", "19 grp", who=ADMIN).ok()
    assert f"Group name {name} is created" in r.out
    found = gql("query($n: String!) { groups_by_name(name: $n) { id description } }", {"n": name})["groups_by_name"]
    assert len(found) == 1 and found[0]["description"] == "19 grp"
    delete_group(gql, found[0]["id"])


def test_admin_group(group_id: str, cli19: CLI) -> None:
    """FAIL R9: ``query($gid: String!) { group(id: $gid) ... }``."""
    out = cli19("admin", "group", group_id, who=ADMIN).ok().stdout
    assert re.search(rf"^ID\s+{group_id}$", out, re.M) and re.search(r"^Description\s+orig desc$", out, re.M), out


def test_admin_groups_update(group_id: str, cli19: CLI, gql: GQL) -> None:
    """FAIL R9 (``$gid: String!``) and R2 (``name: null`` renames)."""
    before = group_of(gql, group_id)
    assert before is not None
    cli19("admin", "groups", "update", group_id, "-d", "x", who=ADMIN).ok()
    after = group_of(gql, group_id)
    assert after is not None
    assert after["description"] == "x" and after["name"] == before["name"], after
    assert json.loads(after["total_resource_slots"]) == {"cpu": "4"} and after["is_active"] is True


def members(gql: GQL, gid: str) -> list[str]:
    return [u["email"] for u in gql("query($g: UUID) { users(group_id: $g) { email } }", {"g": gid})["users"]]


def test_admin_groups_add_users(group_id: str, cli19: CLI, gql: GQL, user2: Who) -> None:
    """FAIL R9."""
    r = cli19("admin", "groups", "add-users", group_id, user2["uuid"], who=ADMIN).ok()
    assert "added" in r.out
    assert user2["email"] in members(gql, group_id)


def test_admin_groups_remove_users(group_id: str, cli19: CLI, gql: GQL, user2: Who) -> None:
    """FAIL R9."""
    gql(
        "mutation($g: UUID!, $p: ModifyGroupInput!) { modify_group(gid: $g, props: $p) { ok msg } }",
        {"g": group_id, "p": {"user_update_mode": "add", "user_uuids": [user2["uuid"]]}},
    )
    assert user2["email"] in members(gql, group_id)
    r = cli19("admin", "groups", "remove-users", group_id, user2["uuid"], who=ADMIN).ok()
    assert "removed" in r.out
    assert user2["email"] not in members(gql, group_id)


def test_admin_groups_delete(group_id: str, cli19: CLI, gql: GQL) -> None:
    """FAIL R9."""
    r = cli19("admin", "groups", "delete", group_id, who=ADMIN).ok()
    assert "deleted" in r.out
    g = group_of(gql, group_id)
    assert g is None or g["is_active"] is False


def test_admin_keypair(cli19: CLI) -> None:
    """FAIL R17: ``KeyPair.concurrency_limit``."""
    out = cli19("admin", "keypair").ok().stdout
    assert re.search(rf"^Access Key\s+{USER['access_key']}$", out, re.M), out
    assert re.search(r"^Concur\.Limit\s+\d+$", out, re.M)


def test_admin_keypairs(cli19: CLI, gql: GQL) -> None:
    who = make_user(gql, "cs-19kp")
    try:
        r = cli19("admin", "keypairs", "add", who["email"], "default", who=ADMIN).ok()
        m = re.search(r"Access Key: (\S+)", r.stdout)
        assert m, r.describe()
        ak = m.group(1)

        def kp() -> dict[str, Any] | None:
            k = gql("query($a: String) { keypair(access_key: $a) { access_key rate_limit is_active } }", {"a": ak})[
                "keypair"
            ]
            return dict(k) if k else None

        assert kp() == {"access_key": ak, "rate_limit": 5000, "is_active": True}
        cli19("admin", "keypairs", "update", ak, "-r", "4000", who=ADMIN).ok()
        assert (kp() or {})["rate_limit"] == 4000
        cli19("admin", "keypairs", "deactivate", ak, who=ADMIN).ok()
        assert (kp() or {})["is_active"] is False
        cli19("admin", "keypairs", "activate", ak, who=ADMIN).ok()
        assert (kp() or {})["is_active"] is True
        cli19("admin", "keypairs", "delete", ak, who=ADMIN).ok()
        assert kp() is None
    finally:
        gql("mutation($e: String!) { delete_user(email: $e) { ok msg } }", {"e": who["email"]})


def policy(gql: GQL, name: str) -> dict[str, Any] | None:
    p = gql(
        "query($n: String) { keypair_resource_policy(name: $n) { name max_concurrent_sessions "
        "allowed_vfolder_hosts idle_timeout } }",
        {"n": name},
    )["keypair_resource_policy"]
    return dict(p) if p else None


def test_admin_keypair_resource_policies(cli19: CLI, gql: GQL, cluster: Cluster) -> None:
    assert re.search(
        r"^Name\s+default$", cli19("admin", "keypair-resource-policy", "-n", "default", who=ADMIN).ok().stdout, re.M
    )
    name = unique("cs-19pol")
    try:
        cli19(
            "admin",
            "keypair-resource-policies",
            "add",
            name,
            "--max-concurrent-sessions",
            "2",
            "--allowed-vfolder-hosts",
            VOLUME,
            who=ADMIN,
        ).ok()
        p = policy(gql, name)
        assert p is not None and p["max_concurrent_sessions"] == 2
        cli19("admin", "keypair-resource-policies", "delete", name, who=ADMIN, input="y\n").ok()
        assert policy(gql, name) is None
    finally:
        try_gql(cluster, "mutation($n: String!) { delete_keypair_resource_policy(name: $n) { ok msg } }", {"n": name})


def test_admin_keypair_resource_policies_update(cli19: CLI, gql: GQL) -> None:
    """FAIL R2: ``allowed_vfolder_hosts: null`` must leave the hosts alone."""
    name = unique("cs-19polu")
    data = gql(
        "mutation($n: String!, $p: CreateKeyPairResourcePolicyInput!) { create_keypair_resource_policy("
        "name: $n, props: $p) { ok msg } }",
        {
            "n": name,
            "p": {
                "default_for_unspecified": "UNLIMITED",
                "total_resource_slots": "{}",
                "max_concurrent_sessions": 2,
                "max_containers_per_session": 1,
                "max_vfolder_count": 10,
                "max_vfolder_size": 0,
                "idle_timeout": 1800,
                "allowed_vfolder_hosts": [VOLUME],
            },
        },
    )
    assert data["create_keypair_resource_policy"]["ok"], data
    try:
        cli19("admin", "keypair-resource-policies", "update", name, "--max-concurrent-sessions", "3", who=ADMIN).ok()
        p = policy(gql, name)
        assert p is not None and p["max_concurrent_sessions"] == 3
        assert p["allowed_vfolder_hosts"] == [VOLUME] and p["idle_timeout"] == 1800, p
    finally:
        gql("mutation($n: String!) { delete_keypair_resource_policy(name: $n) { ok msg } }", {"n": name})


def test_admin_scaling_groups(cli19: CLI, gql: GQL, cluster: Cluster) -> None:
    assert re.search(r"^Name\s+default$", cli19("admin", "scaling-group", "-n", "default", who=ADMIN).ok().stdout, re.M)
    sg, dom = unique("cs-19sg"), unique("cs-19sgd")
    create_domain(gql, dom)

    def sgroup() -> dict[str, Any] | None:
        g = gql("query($n: String) { scaling_group(name: $n) { name description driver scheduler } }", {"n": sg})[
            "scaling_group"
        ]
        return dict(g) if g else None

    def of_domain() -> list[str]:
        return [
            g["name"]
            for g in gql("query($d: String!) { scaling_groups_for_domain(domain: $d) { name } }", {"d": dom})[
                "scaling_groups_for_domain"
            ]
        ]

    try:
        cli19("admin", "scaling-groups", "add", sg, "--driver", "static", "--scheduler", "fifo", who=ADMIN).ok()
        assert sgroup() == {"name": sg, "description": "", "driver": "static", "scheduler": "fifo"}
        cli19("admin", "scaling-groups", "update", sg, "-d", "19 upd", who=ADMIN).ok()
        assert (sgroup() or {})["description"] == "19 upd"
        cli19("admin", "scaling-groups", "associate-scaling-group", sg, dom, who=ADMIN).ok()
        assert of_domain() == [sg]
        cli19("admin", "scaling-groups", "dissociate-scaling-group", sg, dom, who=ADMIN).ok()
        assert of_domain() == []
        assert "default" in cli19("admin", "list-scaling-groups", "default", who=ADMIN).ok().stdout
        cli19("admin", "scaling-groups", "delete", sg, who=ADMIN).ok()
        assert sgroup() is None
    finally:
        try_gql(cluster, "mutation($n: String!) { delete_scaling_group(name: $n) { ok msg } }", {"n": sg})
        delete_domain(gql, dom)


def test_admin_users(cli19: CLI, gql: GQL, user2: Who) -> None:
    out = cli19("admin", "user", "-e", user2["email"], who=ADMIN).ok().stdout
    assert re.search(rf"^Email\s+{re.escape(user2['email'])}$", out, re.M), out
    email = f"{unique('cs-19user')}@example.org"

    def user() -> dict[str, Any] | None:
        u = gql("query($e: String) { user(email: $e) { username full_name status } }", {"e": email})["user"]
        return dict(u) if u else None

    try:
        cli19("admin", "users", "add", "default", email, "pw-19-1234", "-u", email.split("@")[0], who=ADMIN).ok()
        assert (user() or {})["username"] == email.split("@")[0]
        cli19("admin", "users", "update", email, "-n", "19 user", who=ADMIN).ok()
        assert (user() or {})["full_name"] == "19 user"
        assert "deleted" in cli19("admin", "users", "delete", email, who=ADMIN).ok().out
        u = user()
        assert u is None or u["status"] == "deleted"
    finally:
        if user() and (user() or {}).get("status") != "deleted":
            gql("mutation($e: String!) { delete_user(email: $e) { ok msg } }", {"e": email})


def test_admin_resources(cli19: CLI) -> None:
    out = cli19("admin", "resources", "resource-slots", who=ADMIN).ok().stdout
    assert "cpu (count)" in out and "mem (bytes)" in out
    cli19("admin", "resources", "docker-registries", who=ADMIN).ok()


def test_admin_vfolders_list_hosts(cli19: CLI) -> None:
    out = cli19("admin", "vfolders", "list-hosts", who=ADMIN).ok().stdout
    assert f"Default vfolder host: {VOLUME}" in out and VOLUME in out.split("Mounted hosts:")[-1]
