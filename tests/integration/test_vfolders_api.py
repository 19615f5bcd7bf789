"""The ``/folders`` REST API and the ``vfolder_list`` GraphQL query against a real storage proxy.

Each database kind (SQLite, PostgreSQL) gets a storage proxy (node ``local`` with volumes ``volume1`` and
``volume2``; the default keypair policy allows ``local:volume1`` only) and a manager-only server that knows
it, plus a proxy name ``down`` that points at a closed port. The world built once per database, as the
superadmin through GraphQL: a domain admin, users ``alice`` (owner), ``bob``, ``carol``, ``outsider``, and a
group ``team`` (members alice and bob). Refusals are checked to change nothing: the folder listing, the files
on the volume and the database stay as they were.
"""

from __future__ import annotations

import asyncio
import itertools
import json
import secrets
import socket
import subprocess
import unicodedata
import uuid
from collections.abc import Iterator
from contextlib import ExitStack
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import httpx
import pytest
from sqlalchemy import delete, insert, update

from ai.backend.common.auth import sign_request_headers
from ai.backend.manager.db import create_engine
from ai.backend.manager.fixtures import ADMIN, DEFAULT_GROUP_ID, USER
from ai.backend.manager.models import SessionRow
from ai.backend.testutils.cluster import Cluster, launch_manager
from ai.backend.testutils.databases import DB_KINDS, check_pg, fresh_database
from ai.backend.testutils.problems import problem
from ai.backend.testutils.storage import StorageProxy, launch_storage_proxy

Who = dict[str, Any]
PASSWORD = "vfolder-pass-123"


def _closed_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


@dataclass
class World:
    m: Cluster
    sp: StorageProxy
    vol2: Path
    alice: Who
    bob: Who
    carol: Who
    outsider: Who
    dadmin: Who
    team: str  # group id
    tok: str = field(default_factory=lambda: secrets.token_hex(3))
    seq: itertools.count = field(default_factory=itertools.count)

    def req(self, method: str, path: str, body: Any = None, who: Who = USER) -> httpx.Response:
        return self.m.request(method, path, body, who=who)

    def ok(self, method: str, path: str, body: Any = None, who: Who = USER, status: int = 200) -> Any:
        r = self.req(method, path, body, who)
        assert r.status_code == status, f"{method} {path}: {r.status_code} {r.text}"
        return r.json() if r.content else None

    def gql(self, query: str, variables: dict[str, Any] | None = None, who: Who = ADMIN) -> httpx.Response:
        return self.req("POST", "/admin/gql", {"query": query, "variables": variables or {}}, who)

    def sa(self, query: str, variables: dict[str, Any] | None = None) -> Any:
        r = self.gql(query, variables)
        assert r.status_code == 200 and not r.json().get("errors"), r.text
        return r.json()["data"]

    def uniq(self, kind: str) -> str:
        return f"{kind}-{self.tok}-{next(self.seq)}"

    def folder(self, name: str, who: Who, status: int = 201, **extra: Any) -> dict[str, Any]:
        result: dict[str, Any] = self.ok("POST", "/folders", {"name": name, **extra}, who, status)
        return result

    def names(self, who: Who) -> set[str]:
        return {f["name"] for f in self.ok("GET", "/folders", who=who)}

    def disk(self, root: Path | None = None) -> set[str]:
        """Every path under the volumes (folders and their files)."""
        out: set[str] = set()
        for base in [root] if root else [self.sp.volume_path, self.vol2]:
            out |= {str(p.relative_to(base)) for p in base.rglob("*")}
        return out

    def upload(self, name: str, path: str, data: bytes, who: Who) -> None:
        info = self.ok("POST", f"/folders/{name}/request-upload", {"path": path, "size": len(data)}, who)
        r = httpx.patch(
            info["url"],
            params={"token": info["token"]},
            content=data,
            headers={"Tus-Resumable": "1.0.0", "Upload-Offset": "0", "Content-Type": "application/offset+octet-stream"},
        )
        assert r.status_code == 204, r.text

    def download(self, name: str, path: str, who: Who) -> bytes:
        info = self.ok("POST", f"/folders/{name}/request-download", {"path": path}, who)
        r = httpx.get(info["url"], params={"token": info["token"]})
        assert r.status_code == 200, r.text
        return r.content

    def ls(self, name: str, who: Who, path: str = "") -> dict[str, dict[str, Any]]:
        doc = self.ok("GET", f"/folders/{name}/files", {"path": path}, who)
        assert isinstance(doc["files"], str), "files must be a JSON string, as the official clients read it"
        return {f["filename"]: f for f in json.loads(doc["files"])}

    def db(self, stmt: Any) -> None:
        async def run() -> None:
            engine = create_engine(self.m.db_url)
            try:
                async with engine.begin() as conn:
                    await conn.execute(stmt)
            finally:
                await engine.dispose()

        asyncio.run(run())


def _sa(m: Cluster, query: str, variables: dict[str, Any]) -> Any:
    r = m.request("POST", "/admin/gql", {"query": query, "variables": variables}, who=ADMIN)
    assert r.status_code == 200 and not r.json().get("errors"), r.text
    return r.json()["data"]


def _make_policy(m: Cluster, name: str, count: int, size: int) -> None:
    d = _sa(
        m,
        "mutation($n: String!, $p: CreateKeyPairResourcePolicyInput!) { "
        "create_keypair_resource_policy(name: $n, props: $p) { ok msg } }",
        {
            "n": name,
            "p": {
                "default_for_unspecified": "UNLIMITED",
                "total_resource_slots": "{}",
                "max_concurrent_sessions": 1,
                "max_containers_per_session": 1,
                "idle_timeout": 0,
                "max_vfolder_count": count,
                "max_vfolder_size": size,
                "allowed_vfolder_hosts": ["local:volume1"],
            },
        },
    )
    assert d["create_keypair_resource_policy"]["ok"], d


def _make_user(
    m: Cluster, email: str, role: str = "user", groups: list[str] | None = None, policy: str | None = None
) -> Who:
    def sa(query: str, variables: dict[str, Any]) -> Any:
        return _sa(m, query, variables)

    d = sa(
        "mutation($e: String!, $p: UserInput!) { create_user(email: $e, props: $p) { ok msg user { uuid } } }",
        {"e": email, "p": {"password": PASSWORD, "domain_name": "default", "role": role, "group_ids": groups or []}},
    )
    assert d["create_user"]["ok"], d
    kp = sa("query($e: String) { keypairs(email: $e) { access_key secret_key } }", {"e": email})["keypairs"][0]
    if policy is not None:
        mod = sa(
            "mutation($a: String!, $p: String) { modify_keypair(access_key: $a, props: {resource_policy: $p}) "
            "{ ok msg } }",
            {"a": kp["access_key"], "p": policy},
        )
        assert mod["modify_keypair"]["ok"], mod
    return {"email": email, "uuid": d["create_user"]["user"]["uuid"], **kp}


@pytest.fixture(scope="module", params=DB_KINDS)
def w(request: pytest.FixtureRequest, tmp_path_factory: pytest.TempPathFactory) -> Iterator[World]:
    kind: str = request.param
    if kind == "postgresql":
        check_pg()
    with ExitStack() as stack:
        state = tmp_path_factory.mktemp(f"vf-{kind}")
        vol2 = (state / "sp" / "vfroot" / "volume2").resolve()
        sp = launch_storage_proxy(state / "sp", extra_toml=f'[volume.volume2]\nbackend = "vfs"\npath = "{vol2}"')
        stack.callback(sp.shutdown)
        db_url = stack.enter_context(fresh_database(kind, state))
        down = (
            f'[storage-proxies.down]\nclient-api = "http://127.0.0.1:{_closed_port()}"\n'
            f'manager-api = "http://127.0.0.1:{_closed_port()}"\nsecret = "whatever"'
        )
        m = launch_manager(
            state / "m",
            db_url=db_url,
            manager_toml=sp.manager_toml() + "\n\n" + down,
            settings={"anonymous-rate-limit": 0},
        )
        stack.callback(m.shutdown)
        tok = secrets.token_hex(3)
        r = m.request(
            "POST",
            "/admin/gql",
            {
                "query": "mutation($n: String!) { create_group(name: $n, props: "
                '{domain_name: "default"}) { ok group { id } } }',
                "variables": {"n": f"team-{tok}"},
            },
            who=ADMIN,
        )
        team = r.json()["data"]["create_group"]["group"]["id"]
        # max_vfolder_count 0: no limit (the tests make many folders).
        _make_policy(m, f"roomy-{tok}", 0, 0)
        p = f"roomy-{tok}"
        alice = _make_user(m, f"alice-{tok}@ex.com", groups=[team, str(DEFAULT_GROUP_ID)], policy=p)
        bob = _make_user(m, f"bob-{tok}@ex.com", groups=[team], policy=p)
        carol = _make_user(m, f"carol-{tok}@ex.com", policy=p)
        outsider = _make_user(m, f"out-{tok}@ex.com", policy=p)
        dadmin = _make_user(m, f"dadmin-{tok}@ex.com", role="admin", policy=p)
        yield World(m, sp, vol2, alice, bob, carol, outsider, dadmin, team, tok)


# --- hosts, create, list, info, delete -------------------------------------------------------------------


def test_hosts(w: World) -> None:
    assert w.ok("GET", "/folders/_/hosts") == {
        "default": "local:volume1",
        "allowed": ["local:volume1"],
        "volume_info": {"local:volume1": {"backend": "vfs", "capabilities": ["vfolder", "quota"]}},
    }
    # The superadmin may use every volume of every reachable proxy (the "down" proxy is skipped).
    assert w.ok("GET", "/folders/_/hosts", who=ADMIN)["allowed"] == ["local:volume1", "local:volume2"]
    assert w.ok("GET", "/folders/_/all-hosts", who=ADMIN)["allowed"] == ["local:volume1", "local:volume2"]
    problem(w.req("GET", "/folders/_/all-hosts"), 403)
    # A group's hosts: for its members (and admins) only.
    assert w.ok("GET", f"/folders/_/hosts?group_id={w.team}", who=w.bob)["allowed"] == ["local:volume1"]
    problem(w.req("GET", f"/folders/_/hosts?group_id={w.team}", who=w.carol), 404)
    assert w.ok("GET", "/folders/_/allowed-types") == ["user", "group"]


def test_create_list_info_delete(w: World) -> None:
    name = w.uniq("data")
    f = w.folder(name, w.alice, usage_mode="model", permission="ro", cloneable=True)
    assert uuid.UUID(f["id"]) and f["name"] == name and f["host"] == "local:volume1"
    assert f["is_owner"] is True and f["cloneable"] is True and f["permission"] == "wd"
    assert f["type"] == f["ownership_type"] == "user" and f["user"] == w.alice["uuid"] and f["group"] is None
    assert f["usage_mode"] == "model" and f["creator"] == w.alice["email"] and f["status"] == "ready"
    path = w.sp.folder_path(f["id"])
    assert path.is_dir()
    listed = [x for x in w.ok("GET", "/folders", who=w.alice) if x["name"] == name]
    assert listed == [f]
    w.upload(name, "hello.txt", b"hello!", w.alice)
    info = w.ok("GET", f"/folders/{name}", who=w.alice)
    assert info["num_files"] == info["numFiles"] == 1 and info["used_bytes"] >= 6
    assert info["default_permission"] == "ro" and info["id"] == f["id"]
    # By id too (hex or hyphenated).
    assert w.ok("GET", f"/folders/{uuid.UUID(f['id']).hex}", who=w.alice)["name"] == name
    # Others do not see it: 404, not 403.
    problem(w.req("GET", f"/folders/{name}", who=w.bob), 404)
    problem(w.req("DELETE", f"/folders/{name}", who=w.bob), 404)
    assert path.is_dir()
    r = w.req("DELETE", f"/folders/{name}", who=w.alice)
    assert r.status_code == 204 and not path.exists()
    problem(w.req("GET", f"/folders/{name}", who=w.alice), 404)
    assert name not in w.names(w.alice)


def test_delete_by_id_and_group_listing(w: World) -> None:
    name = w.uniq("byid")
    f = w.folder(name, w.alice)
    gname = w.uniq("grp")
    g = w.folder(gname, w.dadmin, group_id=w.team)
    mine = {x["name"] for x in w.ok("GET", f"/folders?group_id={w.team}", who=w.alice)}
    assert {name, gname} <= mine
    # group_id narrows the group folders, not the user folders.
    other = {x["name"] for x in w.ok("GET", f"/folders?group_id={DEFAULT_GROUP_ID}", who=w.alice)}
    assert name in other and gname not in other
    r = w.req("DELETE", "/folders", {"id": f["id"]}, who=w.alice)
    assert r.status_code == 204 and name not in w.names(w.alice)
    assert w.req("DELETE", f"/folders/{g['id']}", who=w.dadmin).status_code == 204


def test_create_refusals_change_nothing(w: World) -> None:
    name = w.uniq("dup")
    w.folder(name, w.alice)
    before_names, before_disk = w.names(w.alice), w.disk()
    problem(w.req("POST", "/folders", {"name": name}, w.alice), 409, "already exists", in_detail=True)
    for bad in (
        "",
        ".",
        "..",
        "a/b",
        "x" * 65,
        "a\x00b",
        "tab\there",
        "\u202eevil",
        " lead",
        "trail ",
        "back\\slash",
        "\udc80",
    ):
        problem(w.req("POST", "/folders", {"name": bad}, w.alice), 400)
    for bad_body in (
        {},
        {"name": 5},
        {"name": "ok", "usage_mode": "weird"},
        {"name": "ok", "permission": "rwx"},
        {"name": "ok", "quota": "lots"},
        {"name": "ok", "cloneable": "maybe"},
    ):
        problem(w.req("POST", "/folders", bad_body, w.alice), 400)
    for host in ("local:nope", "nope:volume1", "novolume", ":volume1"):
        problem(w.req("POST", "/folders", {"name": w.uniq("h"), "host": host}, w.alice), 400)
    problem(
        w.req("POST", "/folders", {"name": w.uniq("h"), "host": "local:volume2"}, w.alice),
        403,
        "local:volume2",
        in_detail=True,
    )
    # Group folders: only admins create them, for groups they administer.
    problem(w.req("POST", "/folders", {"name": w.uniq("g"), "group_id": w.team}, w.alice), 403)
    problem(w.req("POST", "/folders", {"name": w.uniq("g"), "group_id": str(uuid.uuid4())}, w.dadmin), 404)
    # An unreachable proxy: 503, and no row is left behind.
    problem(w.req("POST", "/folders", {"name": w.uniq("down"), "host": "down:volume1"}, ADMIN), 503)
    assert w.names(w.alice) == before_names and w.disk() == before_disk
    assert not any(f["host"].startswith("down:") for f in w.ok("GET", "/folders?all=true", who=ADMIN))
    # Names: NFC-normalized (the NFD spelling is the same name); dot-names are allowed.
    cafe = w.uniq("café")
    w.folder(unicodedata.normalize("NFC", cafe), w.alice)
    problem(w.req("POST", "/folders", {"name": unicodedata.normalize("NFD", cafe)}, w.alice), 409)
    dot = w.folder(f".cfg-{w.tok}", w.alice)
    assert dot["name"] == f".cfg-{w.tok}"
    # Names are per owner: another user may use the same one.
    w.folder(name, w.bob)
    # The superadmin may create on volume2; the name is still unique per owner across hosts.
    n2 = w.uniq("v2")
    assert w.folder(n2, ADMIN, host="local:volume2")["host"] == "local:volume2"
    problem(w.req("POST", "/folders", {"name": n2}, ADMIN), 409)


def test_count_and_size_limits(w: World) -> None:
    pol = w.uniq("pol")
    _make_policy(w.m, pol, 2, 1000)
    u = _make_user(w.m, f"lim-{w.tok}@ex.com", policy=pol)
    problem(w.req("POST", "/folders", {"name": "big", "quota": 2000}, u), 406, "max_vfolder_size", in_detail=True)
    f1 = w.folder("one", u)
    assert f1["quota"] == 1000  # the policy's cap when none is asked for
    assert w.folder("two", u, quota=500)["quota"] == 500
    before = w.disk()
    problem(w.req("POST", "/folders", {"name": "three"}, u), 406, "max_vfolder_count", in_detail=True)
    assert w.names(u) == {"one", "two"} and w.disk() == before
    # Uploads past the quota are refused before a byte moves.
    problem(w.req("POST", "/folders/one/request-upload", {"path": "f.bin", "size": 2000}, u), 413)
    w.upload("one", "f.bin", b"x" * 600, u)
    problem(w.req("POST", "/folders/one/request-upload", {"path": "g.bin", "size": 600}, u), 413)
    assert set(w.ls("one", u)) == {"f.bin"}
    # Deleting one frees a slot.
    assert w.req("DELETE", "/folders/two", who=u).status_code == 204
    w.folder("three", u)


# --- files -----------------------------------------------------------------------------------------------


def test_file_operations(w: World) -> None:
    name = w.uniq("files")
    w.folder(name, w.alice)
    assert w.ok("POST", f"/folders/{name}/mkdir", {"path": "a/b"}, w.alice, 201)
    problem(w.req("POST", f"/folders/{name}/mkdir", {"path": "a/b"}, w.alice), 409)
    w.ok("POST", f"/folders/{name}/mkdir", {"path": "a/b", "exist_ok": True}, w.alice, 201)
    problem(w.req("POST", f"/folders/{name}/mkdir", {"path": "x/y", "parents": False}, w.alice), 404)
    root = w.ls(name, w.alice)
    assert set(root) == {"a"} and root["a"]["type"] == "DIRECTORY" and isinstance(root["a"]["mtime"], int)
    w.upload(name, "a/b/data.txt", b"some data", w.alice)
    entry = w.ls(name, w.alice, "a/b")["data.txt"]
    assert entry["size"] == 9 and entry["type"] == "FILE" and isinstance(entry["mode"], int)
    assert w.download(name, "a/b/data.txt", w.alice) == b"some data"
    # The query string works for GET parameters too.
    listed = json.loads(w.ok("GET", f"/folders/{name}/files?path=a/b", who=w.alice)["files"])
    assert "data.txt" in {f["filename"] for f in listed}
    problem(w.req("GET", f"/folders/{name}/files", {"path": "nope"}, w.alice), 404)
    # Directory downloads need archive.
    problem(w.req("POST", f"/folders/{name}/request-download", {"path": "a"}, w.alice), 400)
    arc = w.ok("POST", f"/folders/{name}/request-download", {"path": "a", "archive": True}, w.alice)
    assert httpx.get(arc["url"], params={"token": arc["token"]}).content[:2] == b"PK"
    w.ok("POST", f"/folders/{name}/rename-file", {"target_path": "a/b/data.txt", "new_name": "renamed.txt"}, w.alice)
    assert set(w.ls(name, w.alice, "a/b")) == {"renamed.txt"}
    w.ok("POST", f"/folders/{name}/move-file", {"src": "a/b/renamed.txt", "dst": "moved.txt"}, w.alice)
    assert set(w.ls(name, w.alice)) == {"a", "moved.txt"}
    problem(w.req("DELETE", f"/folders/{name}/delete-files", {"files": ["a"]}, w.alice), 400)
    assert "a" in w.ls(name, w.alice)
    w.ok("DELETE", f"/folders/{name}/delete-files", {"files": ["a", "moved.txt"], "recursive": True}, w.alice)
    assert w.ls(name, w.alice) == {}
    problem(w.req("DELETE", f"/folders/{name}/delete-files", {}, w.alice), 400)
    problem(w.req("POST", f"/folders/{name}/request-upload", {"path": "x"}, w.alice), 400)  # no size


BAD_PATHS = [
    "..",
    "../x",
    "a/../../b",
    "a/..",
    "/etc/passwd",
    "/",
    "a\x00b",
    "a\nb",
    "\u202etxt.exe",
    "\udc80",
    "x" * 256,
]


def test_path_traversal_refused(w: World) -> None:
    name = w.uniq("trav")
    f = w.folder(name, w.alice)
    w.upload(name, "keep.txt", b"keep", w.alice)
    folder = w.sp.folder_path(f["id"])
    before_all = w.disk()
    for bad in BAD_PATHS:
        calls = [
            ("GET", f"/folders/{name}/files", {"path": bad}),
            ("POST", f"/folders/{name}/mkdir", {"path": bad}),
            ("POST", f"/folders/{name}/mkdir", {"path": [f"ok-{w.tok}", bad]}),
            ("DELETE", f"/folders/{name}/delete-files", {"files": [bad], "recursive": True}),
            ("POST", f"/folders/{name}/rename-file", {"target_path": bad, "new_name": "z"}),
            ("POST", f"/folders/{name}/rename-file", {"target_path": "keep.txt", "new_name": bad}),
            ("POST", f"/folders/{name}/move-file", {"src": "keep.txt", "dst": bad}),
            ("POST", f"/folders/{name}/request-upload", {"path": bad, "size": 1}),
            ("POST", f"/folders/{name}/request-download", {"path": bad}),
        ]
        for method, path, body in calls:
            problem(w.req(method, path, body, w.alice), 400)
    # Single names for rename-file: no "/".
    problem(w.req("POST", f"/folders/{name}/rename-file", {"target_path": "keep.txt", "new_name": "d/e"}, w.alice), 400)
    assert w.disk() == before_all
    assert sorted(p.name for p in folder.iterdir()) == ["keep.txt"]
    assert (folder / "keep.txt").read_bytes() == b"keep"


# --- permissions, invitations, sharing --------------------------------------------------------------------


def _matrix_ops(w: World, ref: str) -> dict[str, tuple[str, str, dict[str, Any], int]]:
    """Operation → (method, path, body, success status); each leaves the folder usable for the next caller."""
    t = w.uniq("m")
    return {
        "info": ("GET", f"/folders/{ref}", {}, 200),
        "files": ("GET", f"/folders/{ref}/files", {}, 200),
        "download": ("POST", f"/folders/{ref}/request-download", {"path": "seed.txt"}, 200),
        "upload": ("POST", f"/folders/{ref}/request-upload", {"path": f"{t}.txt", "size": 1}, 200),
        "mkdir": ("POST", f"/folders/{ref}/mkdir", {"path": t}, 201),
        "rename-file": (
            "POST",
            f"/folders/{ref}/rename-file",
            {"target_path": "victim.txt", "new_name": f"{t}.r"},
            200,
        ),
        "delete-files": ("DELETE", f"/folders/{ref}/delete-files", {"files": ["victim.txt"]}, 200),
        "update-options": ("POST", f"/folders/{ref}/update-options", {"cloneable": True}, 200),
    }


READ, WRITE, MANAGE = (
    ("info", "files", "download"),
    ("upload", "mkdir", "rename-file", "delete-files"),
    ("update-options",),
)


def _check_matrix(w: World, owner: Who, name: str, fid: str, expect: dict[str, tuple[Who, str, set[str]]]) -> None:
    """``expect``: label → (caller, ref kind "name"/"id", allowed operations); all others must be 404."""
    for label, (who, kind, allowed) in expect.items():
        ref = name if kind == "name" else fid
        for op, (method, path, body, status) in _matrix_ops(w, ref).items():
            if op in ("rename-file", "delete-files"):
                w.upload(fid, "victim.txt", b"v", owner)
            before = w.disk()
            r = w.req(method, path, body, who)
            if op in allowed:
                assert r.status_code == status, f"{label} {op}: {r.status_code} {r.text}"
            else:
                problem(r, 404)
                assert w.disk() == before, f"{label} {op} changed files"


def test_permission_matrix_user_folder(w: World) -> None:
    name = w.uniq("shared")
    f = w.folder(name, w.alice)
    w.upload(name, "seed.txt", b"seed", w.alice)
    for who, perm in ((w.bob, "ro"), (w.carol, "rw")):
        ids = w.ok("POST", f"/folders/{name}/invite", {"perm": perm, "emails": [who["email"]]}, w.alice)
        assert ids == {"invited_ids": [who["email"]]}
        inv = w.ok("GET", "/folders/invitations/list", who=who)["invitations"]
        mine = [i for i in inv if i["vfolder_id"] == f["id"]]
        w.ok("POST", "/folders/invitations/accept", {"inv_id": mine[0]["id"]}, who)
    all_ops = set(READ) | set(WRITE) | set(MANAGE)
    _check_matrix(
        w,
        w.alice,
        name,
        f["id"],
        {
            "owner": (w.alice, "name", all_ops),
            "invitee ro": (w.bob, "name", set(READ)),
            "invitee rw": (w.carol, "name", set(READ) | set(WRITE)),
            "other user": (w.outsider, "name", set()),
            "other user by id": (w.outsider, "id", set()),
            "project member (not shared)": (USER, "name", set()),
            "domain admin by name": (w.dadmin, "name", set()),
            "domain admin by id": (w.dadmin, "id", all_ops),
            "superadmin by id": (ADMIN, "id", all_ops),
        },
    )
    listing = {x["name"]: x for x in w.ok("GET", "/folders", who=w.bob)}
    assert listing[name]["is_owner"] is False and listing[name]["permission"] == "ro"
    # Only the owner (or an admin, by id) renames or deletes it; invitees get 404 and nothing changes.
    for who in (w.bob, w.carol, w.outsider):
        problem(w.req("POST", f"/folders/{name}/rename", {"new_name": "stolen"}, who), 404)
        problem(w.req("DELETE", f"/folders/{name}", who=who), 404)
        problem(w.req("POST", f"/folders/{name}/invite", {"emails": [w.outsider["email"]]}, who), 404)
    assert name in w.names(w.alice)
    problem(w.req("GET", "/folders?all=true", who=w.alice), 403)
    assert f["id"] in {x["id"] for x in w.ok("GET", "/folders?all=true", who=ADMIN)}


def test_permission_matrix_group_folder(w: World) -> None:
    name = w.uniq("proj")
    g = w.folder(name, w.dadmin, group_id=w.team, permission="ro")
    assert g["type"] == "group" and g["group"] == w.team and g["user"] is None and g["is_owner"] is True
    w.upload(g["id"], "seed.txt", b"seed", w.dadmin)
    all_ops = set(READ) | set(WRITE) | set(MANAGE)
    _check_matrix(
        w,
        w.dadmin,
        name,
        g["id"],
        {
            "member (ro default)": (w.bob, "name", set(READ)),
            "non-member": (w.carol, "name", set()),
            "domain admin": (w.dadmin, "name", all_ops),
            "superadmin by id": (ADMIN, "id", all_ops),
        },
    )
    listed = {x["name"]: x for x in w.ok("GET", "/folders", who=w.bob)}[name]
    assert listed["permission"] == "ro" and listed["is_owner"] is False and listed["group_name"].startswith("team-")
    # share overrides the default for a member; unshare falls back to it.
    r = w.ok("POST", f"/folders/{name}/share", {"permission": "rw", "emails": [w.bob["email"]]}, w.dadmin, 201)
    assert r == {"shared_emails": [w.bob["email"]]}
    w.ok("POST", f"/folders/{name}/mkdir", {"path": "bobdir"}, w.bob, 201)
    shared = w.ok("GET", f"/folders/_/shared?vfolder_id={g['id']}", who=w.dadmin)
    assert [(s["shared_to"]["email"], s["perm"]) for s in shared] == [(w.bob["email"], "rw")]
    assert shared[0]["shared-to"] == shared[0]["shared_to"]
    # Refusals change nothing: not members, no emails, no permission, a user folder, a non-manager.
    for body, who, status in (
        ({"permission": "rw", "emails": [w.carol["email"]]}, w.dadmin, 404),
        ({"permission": "rw", "emails": ["nobody@nowhere"]}, w.dadmin, 404),
        ({"permission": "rw"}, w.dadmin, 400),
        ({"emails": [w.bob["email"]]}, w.dadmin, 400),
        ({"permission": "wd", "emails": [w.bob["email"]]}, w.bob, 404),
    ):
        problem(w.req("POST", f"/folders/{name}/share", body, who), status)
    assert [s["perm"] for s in w.ok("GET", f"/folders/_/shared?vfolder_id={g['id']}", who=w.dadmin)] == ["rw"]
    problem(w.req("POST", f"/folders/{name}/leave", who=w.bob), 400)
    r = w.ok("DELETE", f"/folders/{name}/unshare", {"emails": [w.bob["email"]]}, w.dadmin)
    assert r == {"unshared_emails": [w.bob["email"]]}
    problem(w.req("POST", f"/folders/{name}/mkdir", {"path": "again"}, w.bob), 404)
    problem(w.req("DELETE", f"/folders/{name}/unshare", {}, w.dadmin), 400)
    # Users cannot invite to group folders, admins neither: groups share by /share.
    problem(w.req("POST", f"/folders/{name}/invite", {"emails": [w.carol["email"]]}, w.dadmin), 400)
    user_folder = w.uniq("uf")
    w.folder(user_folder, w.alice)
    problem(
        w.req("POST", f"/folders/{user_folder}/share", {"permission": "rw", "emails": [w.bob["email"]]}, w.alice), 400
    )


def test_invitations_flow(w: World) -> None:
    name = w.uniq("inv")
    f = w.folder(name, w.alice)
    problem(w.req("POST", f"/folders/{name}/invite", {"perm": "ro"}, w.alice), 400)
    problem(w.req("POST", f"/folders/{name}/invite", {"emails": [w.alice["email"]]}, w.alice), 400)
    problem(w.req("POST", f"/folders/{name}/invite", {"emails": ["ghost@nowhere"]}, w.alice), 404)
    problem(w.req("POST", f"/folders/{name}/invite", {"perm": "xx", "emails": [w.bob["email"]]}, w.alice), 400)
    assert w.ok("GET", "/folders/invitations/list-sent", who=w.alice)["invitations"] == [] or all(
        i["vfolder_id"] != f["id"] for i in w.ok("GET", "/folders/invitations/list-sent", who=w.alice)["invitations"]
    )
    r = w.ok("POST", f"/folders/{name}/invite", {"perm": "ro", "emails": [w.bob["email"], w.carol["email"]]}, w.alice)
    assert sorted(r["invited_ids"]) == sorted([w.bob["email"], w.carol["email"]])
    # Inviting again creates nothing new.
    assert w.ok("POST", f"/folders/{name}/invite", {"perm": "rw", "emails": [w.bob["email"]]}, w.alice) == {
        "invited_ids": []
    }
    sent = [
        i
        for i in w.ok("GET", "/folders/invitations/list-sent", who=w.alice)["invitations"]
        if i["vfolder_id"] == f["id"]
    ]
    assert sorted(i["invitee"] for i in sent) == sorted([w.bob["email"], w.carol["email"]])
    got = [i for i in w.ok("GET", "/folders/invitations/list", who=w.bob)["invitations"] if i["vfolder_id"] == f["id"]]
    assert len(got) == 1 and got[0]["inviter"] == w.alice["email"] and got[0]["perm"] == "ro"
    assert got[0]["state"] == "pending" and got[0]["vfolder_name"] == name and uuid.UUID(got[0]["id"])
    inv_bob = got[0]["id"]
    # The inviter changes the permission; the invitee cannot.
    problem(w.req("POST", f"/folders/invitations/update/{inv_bob}", {}, w.alice), 400)
    problem(w.req("POST", f"/folders/invitations/update/{inv_bob}", {"perm": "rw"}, w.bob), 404)
    w.ok("POST", f"/folders/invitations/update/{inv_bob}", {"perm": "rw"}, w.alice)
    # Others cannot accept it; the folder is not visible before acceptance.
    problem(w.req("POST", "/folders/invitations/accept", {"inv_id": inv_bob}, w.carol), 404)
    problem(w.req("GET", f"/folders/{name}", who=w.bob), 404)
    w.ok("POST", "/folders/invitations/accept", {"inv_id": inv_bob}, w.bob)
    item = {x["name"]: x for x in w.ok("GET", "/folders", who=w.bob)}[name]
    assert item["permission"] == "rw" and item["is_owner"] is False and item["user_email"] == w.alice["email"]
    problem(w.req("POST", "/folders/invitations/accept", {"inv_id": inv_bob}, w.bob), 404)
    assert all(i["vfolder_id"] != f["id"] for i in w.ok("GET", "/folders/invitations/list", who=w.bob)["invitations"])
    # Carol rejects hers (a DELETE with a JSON body).
    inv_carol = [
        i for i in w.ok("GET", "/folders/invitations/list", who=w.carol)["invitations"] if i["vfolder_id"] == f["id"]
    ][0]["id"]
    assert "rejected" in w.ok("DELETE", "/folders/invitations/delete", {"inv_id": inv_carol}, w.carol)["msg"]
    problem(w.req("POST", "/folders/invitations/accept", {"inv_id": inv_carol}, w.carol), 404)
    problem(w.req("GET", f"/folders/{name}", who=w.carol), 404)
    problem(w.req("DELETE", "/folders/invitations/delete", {"inv_id": str(uuid.uuid4())}, w.carol), 404)
    problem(w.req("DELETE", "/folders/invitations/delete", {}, w.carol), 400)
    # Accepting a folder whose name the invitee already uses: 409, nothing granted.
    dup = w.uniq("dupname")
    w.folder(dup, w.alice)
    w.folder(dup, w.carol)
    w.ok("POST", f"/folders/{dup}/invite", {"emails": [w.carol["email"]]}, w.alice)
    inv = [i for i in w.ok("GET", "/folders/invitations/list", who=w.carol)["invitations"] if i["vfolder_name"] == dup][
        0
    ]
    problem(w.req("POST", "/folders/invitations/accept", {"inv_id": inv["id"]}, w.carol), 409)
    assert [x["is_owner"] for x in w.ok("GET", "/folders", who=w.carol) if x["name"] == dup] == [True]
    # The inviter may cancel a pending invitation.
    assert "canceled" in w.ok("DELETE", "/folders/invitations/delete", {"inv_id": inv["id"]}, w.alice)["msg"]


def test_leave_and_shared_updates(w: World) -> None:
    name = w.uniq("leave")
    f = w.folder(name, w.alice)
    w.ok("POST", f"/folders/{name}/invite", {"perm": "ro", "emails": [w.bob["email"]]}, w.alice)
    inv = [i for i in w.ok("GET", "/folders/invitations/list", who=w.bob)["invitations"] if i["vfolder_id"] == f["id"]]
    w.ok("POST", "/folders/invitations/accept", {"inv_id": inv[0]["id"]}, w.bob)
    shared = [s for s in w.ok("GET", "/folders/_/shared", who=w.alice) if s["vfolder_id"] == f["id"]]
    assert [(s["vfolder_name"], s["shared_to"]["uuid"], s["perm"], s["shared_by"]) for s in shared] == [
        (name, w.bob["uuid"], "ro", w.alice["email"])
    ]
    # Bob cannot change his own permission; Alice can.
    problem(w.req("POST", "/folders/_/shared", {"vfolder": f["id"], "user": w.bob["uuid"], "perm": "wd"}, w.bob), 404)
    problem(w.req("POST", "/folders/_/shared", {"vfolder": f["id"], "perm": "rw"}, w.alice), 400)
    problem(
        w.req("POST", "/folders/_/shared", {"vfolder": f["id"], "user": w.carol["uuid"], "perm": "rw"}, w.alice), 404
    )
    w.ok("POST", "/folders/_/shared", {"vfolder": f["id"], "user": w.bob["uuid"], "perm": "rw"}, w.alice)
    assert {x["name"]: x for x in w.ok("GET", "/folders", who=w.bob)}[name]["permission"] == "rw"
    # The owner cannot leave; a stranger gets 404; bob leaves.
    problem(w.req("POST", f"/folders/{name}/leave", who=w.alice), 400)
    problem(w.req("POST", f"/folders/{name}/leave", who=w.carol), 404)
    assert "left" in w.ok("POST", f"/folders/{name}/leave", who=w.bob)["msg"]
    assert name not in w.names(w.bob)
    assert [s for s in w.ok("GET", "/folders/_/shared", who=w.alice) if s["vfolder_id"] == f["id"]] == []


def test_rename_and_update_options(w: World) -> None:
    a, b = w.uniq("ren-a"), w.uniq("ren-b")
    fa = w.folder(a, w.alice)
    w.folder(b, w.alice)
    problem(w.req("POST", f"/folders/{a}/rename", {"new_name": b}, w.alice), 409)
    problem(w.req("POST", f"/folders/{a}/rename", {"new_name": "x/y"}, w.alice), 400)
    problem(w.req("POST", f"/folders/{a}/rename", {}, w.alice), 400)
    new = w.uniq("ren-c")
    r = w.ok("POST", f"/folders/{a}/rename", {"new_name": new}, w.alice, 201)
    assert r["name"] == new and r["id"] == fa["id"]
    assert new in w.names(w.alice) and a not in w.names(w.alice)
    r = w.ok("POST", f"/folders/{new}/update-options", {"permission": "ro", "cloneable": True}, w.alice)
    assert r["cloneable"] is True
    assert w.ok("GET", f"/folders/{new}", who=w.alice)["default_permission"] == "ro"
    problem(w.req("POST", f"/folders/{new}/update-options", {}, w.alice), 400)


# --- clone -------------------------------------------------------------------------------------------------


def _bgtask_events(w: World, task_id: str, who: Who) -> list[tuple[str, dict[str, Any]]]:
    path = f"/events/background-task?taskId={task_id}"
    host = w.m.endpoint.split("//", 1)[1]
    h = sign_request_headers(
        method="GET",
        path_with_query=path,
        host=host,
        content_type="application/json",
        version="v6.20220615",
        access_key=who["access_key"],
        secret_key=who["secret_key"],
    )
    events: list[tuple[str, dict[str, Any]]] = []
    with httpx.stream("GET", w.m.endpoint + path, headers=h, timeout=60) as resp:
        assert resp.status_code == 200, resp.read()
        name = ""
        for line in resp.iter_lines():
            if line.startswith("event:"):
                name = line.split(":", 1)[1].strip()
            elif line.startswith("data:"):
                events.append((name, json.loads(line.split(":", 1)[1])))
                if name == "server_close":
                    break
    return events


def test_clone(w: World) -> None:
    src = w.uniq("src")
    w.folder(src, w.alice)
    w.upload(src, "d/file.txt", b"cloned content", w.alice)
    before = w.disk()
    problem(
        w.req("POST", f"/folders/{src}/clone", {"target_name": w.uniq("c")}, w.alice), 403, "cloneable", in_detail=True
    )
    assert w.disk() == before
    w.ok("POST", f"/folders/{src}/update-options", {"cloneable": True}, w.alice)
    problem(w.req("POST", f"/folders/{src}/clone", {}, w.alice), 400)
    problem(w.req("POST", f"/folders/{src}/clone", {"target_name": src}, w.alice), 409)
    problem(
        w.req("POST", f"/folders/{src}/clone", {"target_name": w.uniq("c"), "target_host": "local:volume2"}, w.alice),
        403,
    )
    assert w.disk() == before
    # Bob, with read-only access, clones it into a folder of his own.
    w.ok("POST", f"/folders/{src}/invite", {"perm": "ro", "emails": [w.bob["email"]]}, w.alice)
    inv = [i for i in w.ok("GET", "/folders/invitations/list", who=w.bob)["invitations"] if i["vfolder_name"] == src]
    w.ok("POST", "/folders/invitations/accept", {"inv_id": inv[0]["id"]}, w.bob)
    target = w.uniq("clone")
    r = w.ok("POST", f"/folders/{src}/clone", {"target_name": target, "usage_mode": "data", "permission": "ro"}, w.bob)
    assert r["name"] == target and r["user"] == w.bob["uuid"] and r["usage_mode"] == "data"
    assert r["is_owner"] is True and r["bgtask_id"] == r["task_id"]
    events = _bgtask_events(w, r["bgtask_id"], w.bob)
    names = [e for e, _ in events]
    assert "bgtask_done" in names and names[-1] == "server_close", events
    done = dict(events)["bgtask_done"]
    assert done["current_progress"] == done["total_progress"] == 1 and target in done["message"]
    info = w.ok("GET", f"/folders/{target}", who=w.bob)
    assert info["status"] == "ready" and info["num_files"] == 2 and info["cloneable"] is False  # d, d/file.txt
    assert w.download(target, "d/file.txt", w.bob) == b"cloned content"
    # The copy is independent of its source.
    w.ok("DELETE", f"/folders/{target}/delete-files", {"files": ["d"], "recursive": True}, w.bob)
    assert w.download(src, "d/file.txt", w.alice) == b"cloned content"


def test_clone_to_other_volume(w: World) -> None:
    src = w.uniq("xsrc")
    w.folder(src, ADMIN, cloneable=True)
    w.upload(src, "f.txt", b"across", ADMIN)
    t = w.uniq("xdst")
    r = w.ok("POST", f"/folders/{src}/clone", {"target_name": t, "target_host": "local:volume2"}, ADMIN)
    assert r["host"] == "local:volume2"
    assert dict(_bgtask_events(w, r["bgtask_id"], ADMIN)).get("bgtask_done") is not None
    assert (w.vol2 / r["id"].replace("-", "")[0:2]).is_dir()
    assert w.download(t, "f.txt", ADMIN) == b"across"
    # Another proxy's volume: refused before anything is created.
    before = w.names(ADMIN)
    problem(
        w.req("POST", f"/folders/{src}/clone", {"target_name": w.uniq("x"), "target_host": "down:volume1"}, ADMIN),
        400,
        "storage proxy",
        in_detail=True,
    )
    assert w.names(ADMIN) == before


# --- mounted folders, GraphQL ------------------------------------------------------------------------------


def test_delete_refused_while_mounted(w: World) -> None:
    name = w.uniq("mounted")
    f = w.folder(name, USER)
    sid = uuid.uuid4()
    w.db(
        insert(SessionRow).values(
            id=sid,
            name=w.uniq("sess"),
            access_key=USER["access_key"],
            user_uuid=uuid.UUID(f["user"]),
            domain_name="default",
            group_id=DEFAULT_GROUP_ID,
            scaling_group="default",
            image="python:latest",
            status="RUNNING",
            vfolder_mounts=[
                {
                    "vfid": uuid.UUID(f["id"]).hex,
                    "name": name,
                    "host": f["host"],
                    "mount_path": f"/home/work/{name}",
                    "permission": "rw",
                }
            ],
        )
    )
    try:
        problem(w.req("DELETE", f"/folders/{name}"), 409, "mounted", in_detail=True)
        assert name in w.names(USER) and w.sp.folder_path(f["id"]).is_dir()
        assert w.ok("GET", f"/folders/{name}")["status"] == "ready"
        w.db(update(SessionRow).where(SessionRow.id == sid).values(status="TERMINATED"))
        assert w.req("DELETE", f"/folders/{name}").status_code == 204
        assert not w.sp.folder_path(f["id"]).exists()
    finally:
        w.db(delete(SessionRow).where(SessionRow.id == sid))


def test_gql_vfolder_list(w: World) -> None:
    own, grp = w.uniq("gq-own"), w.uniq("gq-grp")
    f = w.folder(own, w.carol, quota=5 * 2**20)
    g = w.folder(grp, w.dadmin, group_id=w.team)
    other = w.folder(w.uniq("gq-other"), w.outsider)
    q = (
        "query($ak: String, $d: String, $g: UUID) { vfolder_list(limit: 100, offset: 0, access_key: $ak, "
        'domain_name: $d, group_id: $g, order: "name") { total_count items { id name host user group '
        "ownership_type max_size quota num_files cur_size created_at } } }"
    )

    def items(who: Who, **variables: Any) -> dict[str, dict[str, Any]]:
        r = w.gql(q, variables, who)
        assert r.status_code == 200 and not r.json().get("errors"), r.text
        data = r.json()["data"]["vfolder_list"]
        assert data["total_count"] == len(data["items"])
        return {i["id"]: i for i in data["items"]}

    mine = items(w.carol)
    assert f["id"] in mine and g["id"] not in mine and other["id"] not in mine
    assert mine[f["id"]]["max_size"] == 5 and mine[f["id"]]["quota"] == 5 * 2**20
    assert mine[f["id"]]["num_files"] == 0 and mine[f["id"]]["cur_size"] == 0
    bobs = items(w.bob)  # a member of the team group
    assert g["id"] in bobs and f["id"] not in bobs
    r = w.gql(q, {"ak": w.outsider["access_key"]}, w.carol)
    assert r.status_code == 403
    admin_view = items(w.dadmin)
    assert {f["id"], g["id"], other["id"]} <= set(admin_view)
    assert set(items(w.dadmin, ak=w.carol["access_key"])) == {
        k for k, v in admin_view.items() if v["user"] == w.carol["uuid"]
    }
    assert set(items(w.dadmin, g=w.team)) == {k for k, v in admin_view.items() if v["group"] == w.team}
    assert w.gql(q, {"d": "elsewhere"}, w.dadmin).status_code == 403
    assert {f["id"], g["id"], other["id"]} <= set(items(ADMIN))
    r = w.gql("{ vfolders { id name } }", who=w.carol)
    assert {i["id"] for i in r.json()["data"]["vfolders"]} == set(mine)


# --- the upstream 22.03 client -------------------------------------------------------------------------------


def test_upstream_2203_client_vfolder_commands(w: World, tmp_path: Path) -> None:
    """The upstream client's ``vfolder`` commands (REST, GraphQL ``vfolder_list``, tus uploads, downloads)."""
    if "sqlite" not in w.m.db_url:
        pytest.skip("the wire format does not depend on the database; run once (SQLite)")
    from .test_cli_sdk import _upstream_client

    client = _upstream_client()
    env = {**w.m.env(w.alice), "PYTHONWARNINGS": "ignore"}

    def run(*args: str) -> str:
        out = subprocess.run(
            [str(client), *args], env=env, capture_output=True, text=True, timeout=120, cwd=tmp_path, input="y\n"
        )
        assert out.returncode == 0 and "✘" not in out.stdout + out.stderr, (args, out.stdout, out.stderr)
        return out.stdout + out.stderr

    name = w.uniq("up")
    assert "local:volume1" in run("vfolder", "list-hosts")
    run("vfolder", "create", name)
    assert name in run("vfolder", "list")
    (tmp_path / "data.txt").write_text("upstream bytes")
    run("vfolder", "upload", name, "data.txt")
    assert w.download(name, "data.txt", w.alice) == b"upstream bytes"
    assert "Number of files: 1" in run("vfolder", "info", name)
    run("vfolder", "mkdir", name, "sub")
    (tmp_path / "data.txt").unlink()
    run("vfolder", "download", name, "data.txt")
    assert (tmp_path / "data.txt").read_text() == "upstream bytes"
    run("vfolder", "rename-file", name, "data.txt", "renamed.txt")
    run("vfolder", "update-options", name, "--set-cloneable", "true")
    clone = w.uniq("upc")
    assert "complete" in run("vfolder", "clone", name, clone, "local:volume1")
    assert set(w.ls(clone, w.alice)) == {"renamed.txt", "sub"}
    run("vfolder", "rm", name, "renamed.txt")
    assert set(w.ls(name, w.alice)) == {"sub"}
    run("vfolder", "delete", clone)
    assert clone not in w.names(w.alice)
