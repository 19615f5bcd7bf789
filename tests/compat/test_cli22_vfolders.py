"""The official 22.03 CLI against a real cluster: virtual folders and dotfiles.

One test (or one parametrised test) per OK/FAIL row of "1. 22.03 CLI / Virtual folders and dotfiles" in
``official-client-matrix.md``: ``vfolder`` hosts/types/list/create/info, uploads and downloads through the
storage proxy, ``ls`` and the file operations, rename/update-options/clone, invitations, shares, leave
and delete, and the user ``dotfile`` commands (also by an admin with ``-o``). Rows marked N/A and CLIENT
are not tested here. Every state change is checked through the server's own API; the read-only file
commands share one module-scoped folder.
"""

from __future__ import annotations

import json
import os
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pytest

from ai.backend.manager.fixtures import ADMIN, DEFAULT_GROUP_ID, USER
from ai.backend.testutils.cluster import Cluster

from .conftest import CLI, GQL, VOLUME, Who, unique

# --- helpers -----------------------------------------------------------------------------------------


def folder(cluster: Cluster, name: str, who: Who = USER) -> dict[str, Any] | None:
    """``GET /folders/{name}`` as ``who``, or None when ``who`` cannot use such a folder."""
    r = cluster.request("GET", f"/folders/{name}", who=who)
    if r.status_code == 404:
        return None
    assert r.status_code == 200, f"GET /folders/{name}: {r.status_code} {r.text}"
    return r.json()


def api_folder(cluster: Cluster, name: str, who: Who = USER, **extra: Any) -> dict[str, Any]:
    r = cluster.request("POST", "/folders", {"name": name, "host": VOLUME, **extra}, who=who)
    assert r.status_code == 201, f"creating folder {name}: {r.status_code} {r.text}"
    return r.json()


def delete_folder(cluster: Cluster, name: str, who: Who = USER) -> None:
    cluster.request("DELETE", f"/folders/{name}", who=who)


def files(cluster: Cluster, name: str, path: str = ".", who: Who = USER) -> dict[str, dict[str, Any]]:
    """The entries of ``path`` in the folder, by file name (``files`` may come as a JSON string)."""
    r = cluster.request("GET", f"/folders/{name}/files?path={path}", who=who)
    assert r.status_code == 200, f"listing {name}/{path}: {r.status_code} {r.text}"
    entries = r.json()["files"]
    if isinstance(entries, str):
        entries = json.loads(entries)
    return {e["filename"]: e for e in entries}


def gql_folder(gql: GQL, folder_id: str) -> dict[str, Any]:
    """The folder's row as GraphQL (admin) shows it: its own permission, cloneable, quota, ownership."""
    items = gql(
        "{ vfolder_list(limit: 100) { items { id name permission cloneable usage_mode max_size "
        "ownership_type group } } }"
    )["vfolder_list"]["items"]
    found = [i for i in items if i["id"].replace("-", "") == folder_id.replace("-", "")]
    assert len(found) == 1, (folder_id, items)
    return found[0]


def write(path: Path, data: str | bytes) -> Path:
    path.parent.mkdir(parents=True, exist_ok=True)
    if isinstance(data, bytes):
        path.write_bytes(data)
    else:
        path.write_text(data)
    return path


def dotfiles(cluster: Cluster, who: Who = USER) -> dict[str, dict[str, Any]]:
    r = cluster.request("GET", "/user-config/dotfiles", who=who)
    assert r.status_code == 200, r.text
    return {d["path"]: d for d in r.json()}


def delete_dotfile(cluster: Cluster, path: str, who: Who = USER) -> None:
    cluster.request("DELETE", f"/user-config/dotfiles?path={path}", who=who)


# --- module fixtures ---------------------------------------------------------------------------------


@dataclass
class Shared:
    name: str  # a user folder with big.bin, main.py and a.txt uploaded by the CLI
    id: str
    src: Path  # where the uploaded files came from
    big: bytes


@pytest.fixture(scope="module")
def shared(cluster: Cluster, cli22: CLI, tmp_path_factory: pytest.TempPathFactory) -> Iterator[Shared]:
    name = unique("cs-vf1")
    src = tmp_path_factory.mktemp("vf-src")
    big = os.urandom(300_000)
    write(src / "big.bin", big)
    write(src / "main.py", "print('hello from the folder')\n")
    write(src / "updir" / "a.txt", "a text\n")
    doc = api_folder(cluster, name)
    try:
        cli22("vfolder", "upload", name, "big.bin", cwd=src).ok()
        cli22("vfolder", "upload", name, "main.py", cwd=src).ok()
        cli22("vfolder", "upload", name, "a.txt", "-b", str(src / "updir"), cwd=src).ok()
        yield Shared(name, doc["id"], src, big)
    finally:
        delete_folder(cluster, name)


@pytest.fixture(scope="module")
def group_folder(cluster: Cluster) -> Iterator[str]:
    """A read-only folder of the default group (made by the admin with our own API)."""
    name = unique("cs-gvf")
    api_folder(cluster, name, who=ADMIN, group=str(DEFAULT_GROUP_ID), permission="ro")
    try:
        yield name
    finally:
        delete_folder(cluster, name, who=ADMIN)


@pytest.fixture
def scratch(cluster: Cluster) -> Iterator[str]:
    """A fresh user folder for a test that changes it."""
    name = unique("cs-vfs")
    api_folder(cluster, name)
    try:
        yield name
    finally:
        delete_folder(cluster, name)


# --- hosts, types, list, create, info ----------------------------------------------------------------


def test_list_hosts(cli22: CLI) -> None:
    out = cli22("vfolder", "list-hosts").ok().stdout
    assert f"Default vfolder host: {VOLUME}" in out
    assert VOLUME in out.split("Usable hosts:", 1)[1]


def test_list_allowed_types(cli22: CLI) -> None:
    out = cli22("vfolder", "list-allowed-types").ok().stdout
    assert "'user'" in out and "'group'" in out


def test_list(cli22: CLI, shared: Shared, group_folder: str) -> None:
    out = cli22("vfolder", "list").ok().stdout
    rows = [ln for ln in out.splitlines() if shared.name in ln]
    assert len(rows) == 1 and VOLUME in rows[0] and USER["email"] in rows[0] and "user" in rows[0].split()
    assert group_folder in out


def test_list_json(cli22: CLI, shared: Shared, group_folder: str) -> None:
    items = {i["name"]: i for i in cli22("--output", "json", "vfolder", "list").ok().json()["items"]}
    assert items[shared.name]["host"] == VOLUME and items[shared.name]["ownership_type"] == "user"
    assert items[group_folder]["ownership_type"] == "group"
    assert str(items[group_folder]["group_id"]).replace("-", "") == DEFAULT_GROUP_ID.hex


def test_list_by_group(cli22: CLI, shared: Shared, group_folder: str) -> None:
    out = cli22("vfolder", "list", "-g", str(DEFAULT_GROUP_ID)).ok().stdout
    assert group_folder in out and shared.name not in out


def test_create(cli22: CLI, cluster: Cluster, gql: GQL) -> None:
    name = unique("cs-vf")
    try:
        r = cli22("vfolder", "create", name, VOLUME).ok()
        assert f'Virtual folder "{name}" is created.' in r.stdout
        doc = folder(cluster, name)
        assert doc is not None and doc["host"] == VOLUME and doc["is_owner"]
        row = gql_folder(gql, doc["id"])
        assert row["permission"] == "rw" and row["usage_mode"] == "general" and row["ownership_type"] == "user"
    finally:
        delete_folder(cluster, name)


def test_create_with_options(cli22: CLI, cluster: Cluster, gql: GQL) -> None:
    name = unique("cs-vf2")
    try:
        cli22("vfolder", "create", name, VOLUME, "-m", "general", "-p", "rw", "-q", "100m", "--cloneable").ok()
        doc = folder(cluster, name)
        assert doc is not None
        row = gql_folder(gql, doc["id"])
        assert row["cloneable"] is True and row["permission"] == "rw" and row["usage_mode"] == "general"
        assert row["max_size"] == 100  # MiB
    finally:
        delete_folder(cluster, name)


def test_create_group_folder_as_admin(cli22: CLI, cluster: Cluster, gql: GQL, user2: Who) -> None:
    name = unique("cs-gvf1")
    try:
        r = cli22("vfolder", "create", name, VOLUME, "-g", "default", "-p", "ro", who=ADMIN).ok()
        assert f'Virtual folder "{name}" is created.' in r.stdout
        doc = folder(cluster, name, who=user2)  # a member of the group sees it, read-only
        assert doc is not None and doc["permission"] == "ro"
        row = gql_folder(gql, doc["id"])
        assert row["ownership_type"] == "group" and row["permission"] == "ro"
        assert str(row["group"]).replace("-", "") == DEFAULT_GROUP_ID.hex
    finally:
        delete_folder(cluster, name, who=ADMIN)


def test_info(cli22: CLI, shared: Shared) -> None:
    out = cli22("vfolder", "info", shared.name).ok().stdout
    assert f'Virtual folder "{shared.name}" (ID: ' in out and shared.id.replace("-", "") in out.replace("-", "")
    assert "- Owner: True" in out and "- Ownership Type: user" in out and "- Usage Mode: general" in out
    assert "- Number of files: 3" in out


# --- uploads, downloads, listing ---------------------------------------------------------------------


@pytest.mark.parametrize("variant", ["plain", "chunk-size", "base-dir"])
def test_upload(cli22: CLI, cluster: Cluster, scratch: str, workdir: Path, variant: str) -> None:
    data = os.urandom(70_000) if variant == "plain" else b"print('chunked upload')\n" * 3
    if variant == "plain":
        write(workdir / "big.bin", data)
        r = cli22("vfolder", "upload", scratch, "big.bin", cwd=workdir)
        fname = "big.bin"
    elif variant == "chunk-size":
        write(workdir / "main.py", data)
        r = cli22("vfolder", "upload", scratch, "main.py", "--chunk-size", "16", cwd=workdir)
        fname = "main.py"
    else:
        write(workdir / "updir" / "a.txt", data)
        # an absolute base dir: the 22.03 client cannot use a relative one (CLIENT row)
        r = cli22("vfolder", "upload", scratch, "a.txt", "-b", str(workdir / "updir"), cwd=workdir)
        fname = "a.txt"
    r.ok()
    assert "Done." in r.out
    entries = files(cluster, scratch)
    assert fname in entries and entries[fname]["size"] == len(data), entries
    # byte-identical round trip
    dl = workdir / "back"
    dl.mkdir()
    cli22("vfolder", "download", scratch, fname, cwd=dl).ok()
    assert (dl / fname).read_bytes() == data


def test_download(cli22: CLI, shared: Shared, workdir: Path) -> None:
    r = cli22("vfolder", "download", shared.name, "big.bin", cwd=workdir).ok()
    assert "Done." in r.out
    assert (workdir / "big.bin").read_bytes() == shared.big


def test_download_base_dir_chunk_size(cli22: CLI, shared: Shared, workdir: Path) -> None:
    bd = workdir / "bd"
    bd.mkdir()
    cli22("vfolder", "download", shared.name, "a.txt", "-b", str(bd), "--chunk-size", "4096", cwd=workdir).ok()
    assert (bd / "a.txt").read_text() == "a text\n"
    assert not (workdir / "a.txt").exists()


def test_ls(cli22: CLI, shared: Shared) -> None:
    """FAIL R6 in the matrix: ``files`` must be a JSON-encoded string, as upstream sends it."""
    r = cli22("vfolder", "ls", shared.name, ".").ok()
    assert "Retrived." in r.out, r.describe()
    rows = {ln.split()[0]: ln.split() for ln in r.stdout.splitlines() if ln.strip()}
    assert rows.get("big.bin", [None, None])[1] == "300000", r.describe()
    assert rows.get("main.py", [None, None])[1] == str(len("print('hello from the folder')\n")), r.describe()
    assert rows.get("a.txt", [None, None])[1] == "7", r.describe()


# --- file operations ---------------------------------------------------------------------------------


def _seed(cli22: CLI, folder_name: str, workdir: Path, *names: str) -> None:
    for n in names:
        write(workdir / n, f"content of {n}\n")
        cli22("vfolder", "upload", folder_name, n, cwd=workdir).ok()


def test_mkdir(cli22: CLI, cluster: Cluster, scratch: str) -> None:
    cli22("vfolder", "mkdir", scratch, "newdir").ok()
    assert files(cluster, scratch)["newdir"]["type"] == "DIRECTORY"


def test_rename_file_and_mv(cli22: CLI, cluster: Cluster, scratch: str, workdir: Path) -> None:
    _seed(cli22, scratch, workdir, "data.csv")
    cli22("vfolder", "mkdir", scratch, "newdir").ok()
    r = cli22("vfolder", "rename-file", scratch, "data.csv", "data2.csv").ok()
    assert "Renamed." in r.out
    top = files(cluster, scratch)
    assert "data2.csv" in top and "data.csv" not in top
    r = cli22("vfolder", "mv", scratch, "data2.csv", "newdir/data3.csv").ok()
    assert "Moved." in r.out
    assert "data2.csv" not in files(cluster, scratch)
    assert files(cluster, scratch, "newdir")["data3.csv"]["size"] == len("content of data.csv\n")


@pytest.mark.parametrize("cmd", [("rm",), ("rm", "-r"), ("delete-file",)], ids=["rm", "rm-r", "delete-file"])
def test_rm(cli22: CLI, cluster: Cluster, scratch: str, workdir: Path, cmd: tuple[str, ...]) -> None:
    _seed(cli22, scratch, workdir, "keep.txt", "gone.txt")
    target = "gone.txt"
    if "-r" in cmd:
        cli22("vfolder", "mkdir", scratch, "newdir").ok()
        target = "newdir"
    r = cli22("vfolder", *cmd[:1], scratch, target, *cmd[1:], input="y\n").ok()
    assert "Done." in r.out
    left = files(cluster, scratch)
    assert target not in left and "keep.txt" in left


def test_rm_answer_no_keeps_files(cli22: CLI, cluster: Cluster, scratch: str, workdir: Path) -> None:
    _seed(cli22, scratch, workdir, "keep.txt")
    cli22("vfolder", "rm", scratch, "keep.txt", input="n\n")
    assert "keep.txt" in files(cluster, scratch)


# --- folder operations -------------------------------------------------------------------------------


def test_rename(cli22: CLI, cluster: Cluster) -> None:
    old, new = unique("cs-vf2"), unique("cs-vf2r")
    fid = api_folder(cluster, old)["id"]
    try:
        r = cli22("vfolder", "rename", old, new).ok()
        assert "Renamed." in r.out
        doc = folder(cluster, new)
        assert doc is not None and doc["id"] == fid and folder(cluster, old) is None
    finally:
        delete_folder(cluster, old)
        delete_folder(cluster, new)


def test_update_options(cli22: CLI, cluster: Cluster, gql: GQL, scratch: str) -> None:
    r = cli22("vfolder", "update-options", scratch, "-p", "ro", "--set-cloneable", "true").ok()
    assert "Updated." in r.out
    row = gql_folder(gql, folder(cluster, scratch)["id"])  # type: ignore[index]
    assert row["permission"] == "ro" and row["cloneable"] is True


def test_clone(cli22: CLI, cluster: Cluster, gql: GQL) -> None:
    src, dst = unique("cs-vf2r"), unique("cs-vf3")
    api_folder(cluster, src, cloneable=True)
    try:
        r = cluster.request("POST", f"/folders/{src}/mkdir", {"path": "sub"})
        assert r.status_code in (200, 201), r.text
        r2 = cli22("vfolder", "clone", src, dst, VOLUME, "-m", "general", "-p", "rw", timeout=120).ok()
        assert "Cloning the vfolder is complete." in r2.out
        doc = folder(cluster, dst)
        assert doc is not None and doc["host"] == VOLUME and doc["is_owner"]
        assert gql_folder(gql, doc["id"])["permission"] == "rw"
        assert "sub" in files(cluster, dst)
    finally:
        delete_folder(cluster, dst)
        delete_folder(cluster, src)


@pytest.mark.parametrize("who", ["user", "admin-group"])
def test_delete(cli22: CLI, cluster: Cluster, who: str) -> None:
    name = unique("cs-vfd")
    owner = USER if who == "user" else ADMIN
    extra = {} if who == "user" else {"group": str(DEFAULT_GROUP_ID)}
    api_folder(cluster, name, who=owner, **extra)
    try:
        r = cli22("vfolder", "delete", name, who=owner).ok()
        assert "Deleted." in r.out
        assert folder(cluster, name, who=owner) is None
    finally:
        delete_folder(cluster, name, who=owner)


# --- invitations, leave, shares ----------------------------------------------------------------------


def _invite(cli22: CLI, name: str, user2: Who) -> None:
    r = cli22("vfolder", "invite", name, user2["email"], "-p", "ro").ok()
    assert "Invitation sent to:" in r.stdout and user2["email"] in r.stdout


def test_invite_accept_and_leave(cli22: CLI, cluster: Cluster, scratch: str, user2: Who) -> None:
    _invite(cli22, scratch, user2)
    r = cli22("vfolder", "invitations", who=user2, input="1\na\n").ok()
    assert "[1] " + USER["email"] in r.stdout and "read-only" in r.stdout
    assert f"You can now access vfolder {scratch}" in r.stdout
    doc = folder(cluster, scratch, who=user2)
    assert doc is not None and doc["permission"] == "ro" and not doc["is_owner"]
    r = cli22("vfolder", "leave", scratch, who=user2).ok()
    assert f'Left the shared virtual folder "{scratch}".' in r.stdout
    assert folder(cluster, scratch, who=user2) is None
    assert folder(cluster, scratch) is not None  # the owner keeps it


def test_invite_reject(cli22: CLI, cluster: Cluster, scratch: str, user2: Who) -> None:
    _invite(cli22, scratch, user2)
    r = cli22("vfolder", "invitations", who=user2, input="1\nr\n").ok()
    assert f"vfolder invitation rejected: {scratch}" in r.stdout
    assert folder(cluster, scratch, who=user2) is None
    assert "No invitations." in cli22("vfolder", "invitations", who=user2).ok().stdout


def test_share_unshare_group_folder(cli22: CLI, cluster: Cluster, group_folder: str, user2: Who) -> None:
    assert folder(cluster, group_folder, who=user2)["permission"] == "ro"  # type: ignore[index]
    try:
        r = cli22("vfolder", "share", group_folder, user2["email"], "-p", "rw", who=ADMIN).ok()
        assert "Shared with rw permission to:" in r.stdout and user2["email"] in r.stdout
        assert folder(cluster, group_folder, who=user2)["permission"] == "rw"  # type: ignore[index]
        r = cli22("vfolder", "unshare", group_folder, user2["email"], who=ADMIN).ok()
        assert "Unshared from:" in r.stdout and user2["email"] in r.stdout
        assert folder(cluster, group_folder, who=user2)["permission"] == "ro"  # type: ignore[index]
    finally:
        cluster.request("POST", f"/folders/{group_folder}/unshare", {"emails": [user2["email"]]}, who=ADMIN)


# --- dotfiles ----------------------------------------------------------------------------------------


@pytest.fixture
def dot(cluster: Cluster) -> Iterator[str]:
    """A unique dotfile path of the user, removed afterwards."""
    path = "." + unique("csrc")
    try:
        yield path
    finally:
        delete_dotfile(cluster, path)


@pytest.mark.parametrize("who", ["user", "admin-for-user"])
def test_dotfile_create_from_file(cli22: CLI, cluster: Cluster, workdir: Path, dot: str, who: str) -> None:
    write(workdir / "vimrc", "set nu\nsyntax on\n")
    owner = ("-o", USER["access_key"]) if who != "user" else ()
    r = cli22(
        "dotfile", "create", dot, "-f", "vimrc", "--perm", "644", *owner, cwd=workdir, who=ADMIN if owner else USER
    ).ok()
    assert f"Dotfile {dot} created and ready" in r.out
    got = dotfiles(cluster)[dot]
    assert got["data"] == "set nu\nsyntax on\n" and got["permission"] == "644"
    if owner:
        assert dot not in dotfiles(cluster, ADMIN)


def test_dotfile_create_from_stdin(cli22: CLI, cluster: Cluster, dot: str) -> None:
    r = cli22("dotfile", "create", dot, input="alias ll='ls -l'\n").ok()
    assert f"Dotfile {dot} created and ready" in r.out
    got = dotfiles(cluster)[dot]
    assert got["data"].strip() == "alias ll='ls -l'" and got["permission"] == "755"


def _api_dotfile(cluster: Cluster, path: str, data: str = "set nu\n", perm: str = "644") -> None:
    r = cluster.request("POST", "/user-config/dotfiles", {"path": path, "data": data, "permission": perm})
    assert r.status_code in (200, 201), r.text


def test_dotfile_list(cli22: CLI, cluster: Cluster, dot: str) -> None:
    _api_dotfile(cluster, dot, "first line\nsecond\n", "644")
    out = cli22("dotfile", "list").ok().stdout
    row = [ln for ln in out.splitlines() if ln.startswith(dot + " ")]
    assert len(row) == 1 and "first line" in row[0] and row[0].split()[-1] == "644", out


@pytest.mark.parametrize("who", ["user", "admin-for-user"])
def test_dotfile_get(cli22: CLI, cluster: Cluster, dot: str, who: str) -> None:
    _api_dotfile(cluster, dot, "set nu\nsyntax on\n")
    owner = ("-o", USER["access_key"]) if who != "user" else ()
    out = cli22("dotfile", "get", dot, *owner, who=ADMIN if owner else USER).ok().stdout
    assert out.startswith("set nu\nsyntax on\n")


@pytest.mark.parametrize("who", ["user", "admin-for-user"])
def test_dotfile_update(cli22: CLI, cluster: Cluster, workdir: Path, dot: str, who: str) -> None:
    _api_dotfile(cluster, dot, "old\n", "644")
    write(workdir / "vimrc", "new content\n")
    owner = ("-o", USER["access_key"]) if who != "user" else ()
    r = cli22(
        "dotfile", "update", dot, "-f", "vimrc", "--perm", "600", *owner, cwd=workdir, who=ADMIN if owner else USER
    ).ok()
    assert f"Dotfile {dot} updated" in r.out
    got = dotfiles(cluster)[dot]
    assert got["data"] == "new content\n" and got["permission"] == "600"


@pytest.mark.parametrize("how", ["force", "confirm", "admin-for-user"])
def test_dotfile_delete(cli22: CLI, cluster: Cluster, dot: str, how: str) -> None:
    _api_dotfile(cluster, dot)
    if how == "force":
        r = cli22("dotfile", "delete", dot, "-f")
    elif how == "confirm":
        r = cli22("dotfile", "delete", dot, input="y\n")
    else:
        r = cli22("dotfile", "delete", dot, "-f", "-o", USER["access_key"], who=ADMIN)
    r.ok()
    assert f"Dotfile {dot} deleted" in r.out
    assert dot not in dotfiles(cluster)
