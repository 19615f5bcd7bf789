"""``backend.ai vfolder ...`` (as subprocesses) and the ``VFolder`` SDK against a real manager and storage proxy.

Folders go round trip (create, list, info, upload of a multi-MiB file and of a directory, ls, download and
byte comparison, mkdir, mv, rename-file, rm, rename, clone, delete); an interrupted upload resumes with only
the missing bytes; invitations and group-folder shares work between two users; errors are one line.
"""

from __future__ import annotations

import hashlib
import json
import os
import subprocess
import sys
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import httpx
import pytest

from ai.backend.client.config import APIConfig
from ai.backend.client.exceptions import BackendAPIError
from ai.backend.client.session import AsyncSession, Session
from ai.backend.client.transfer import UploadStateStore
from ai.backend.manager.fixtures import ADMIN, USER
from ai.backend.testutils.cluster import Cluster, launch_manager
from ai.backend.testutils.storage import StorageProxy, launch_storage_proxy

CLI = [sys.executable, "-m", "ai.backend.client.cli"]
MiB = 1024 * 1024


class Stack:
    def __init__(self, manager: Cluster, proxy: StorageProxy, home: Path) -> None:
        self.manager = manager
        self.proxy = proxy
        self.home = home  # XDG_CACHE_HOME of the CLI runs (upload state)

    def env(self, who: dict[str, Any] = USER) -> dict[str, str]:
        env = self.manager.env(who)
        env["XDG_CACHE_HOME"] = str(self.home / who["access_key"])
        return env

    def cli(
        self, *args: str, who: dict[str, Any] = USER, cwd: Path | None = None, input: str | None = None
    ) -> subprocess.CompletedProcess[str]:
        return subprocess.run(
            [*CLI, *args], env=self.env(who), capture_output=True, text=True, timeout=180, cwd=cwd, input=input
        )

    def ok(self, *args: str, who: dict[str, Any] = USER, cwd: Path | None = None) -> subprocess.CompletedProcess[str]:
        p = self.cli(*args, who=who, cwd=cwd)
        assert p.returncode == 0, f"{args}: rc={p.returncode}\n{p.stdout}\n{p.stderr}"
        assert "Traceback" not in p.stderr
        return p

    def json(self, *args: str, who: dict[str, Any] = USER, cwd: Path | None = None) -> Any:
        return json.loads(self.ok("--output", "json", *args, who=who, cwd=cwd).stdout)

    def fails(
        self,
        *args: str,
        code: int = 1,
        who: dict[str, Any] = USER,
        cwd: Path | None = None,
        needles: tuple[str, ...] = (),
    ) -> str:
        p = self.cli(*args, who=who, cwd=cwd)
        assert p.returncode == code, f"{args}: rc={p.returncode}\n{p.stdout}\n{p.stderr}"
        err = p.stderr.strip()
        assert len(err.splitlines()) == 1 and err.startswith("✘"), f"{args}: {p.stderr!r}"
        assert "Traceback" not in p.stderr
        for n in needles:
            assert n.lower() in err.lower(), f"{n!r} not in {err!r}"
        return err

    def config(self, who: dict[str, Any] = USER) -> APIConfig:
        return APIConfig(
            endpoint=self.manager.endpoint,
            access_key=who["access_key"],
            secret_key=who["secret_key"],
            endpoint_type="api",
        )


@pytest.fixture(scope="module")
def stack(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Stack]:
    state = tmp_path_factory.mktemp("vfolder-stack")
    proxy = launch_storage_proxy(state / "storage")
    try:
        manager = launch_manager(
            state / "manager", manager_toml=proxy.manager_toml(), settings={"default-vfolder-host": proxy.host}
        )
    except Exception:
        proxy.shutdown()
        raise
    try:
        yield Stack(manager, proxy, state / "home")
    finally:
        manager.shutdown()
        proxy.shutdown()


def write_random(path: Path, size: int) -> bytes:
    path.parent.mkdir(parents=True, exist_ok=True)
    data = os.urandom(size)
    path.write_bytes(data)
    return data


def digest(path: Path) -> str:
    return hashlib.sha256(path.read_bytes()).hexdigest()


def names(listing: dict[str, Any]) -> set[str]:
    return {item["filename"] for item in listing["items"]}


def test_round_trip(stack: Stack, tmp_path: Path) -> None:
    work = tmp_path / "work"
    big = write_random(work / "bigdata.csv", 5 * MiB + 12345)
    tree = {
        "tree/a.txt": write_random(work / "tree" / "a.txt", 100),
        "tree/sub/b.bin": write_random(work / "tree" / "sub" / "b.bin", 2 * MiB + 1),
        "tree/sub/empty": write_random(work / "tree" / "sub" / "empty", 0),
    }

    created = stack.json("vfolder", "create", "mydata1", stack.proxy.host)
    assert created["name"] == "mydata1" and created["host"] == stack.proxy.host
    hosts = stack.ok("vfolder", "list-hosts").stdout
    assert f"Default vfolder host: {stack.proxy.host}" in hosts and stack.proxy.host in hosts.splitlines()[1]
    table = stack.ok("vfolder", "list").stdout
    assert "mydata1" in table and "Name" in table.splitlines()[0]
    assert [i["name"] for i in stack.json("vfolder", "list")["items"]] == ["mydata1"]
    info = stack.ok("vfolder", "info", "mydata1").stdout
    assert "Name:" in info and "mydata1" in info and created["id"] in info

    p = stack.ok("vfolder", "upload", "mydata1", "bigdata.csv", "tree", "--chunk-size", "1m", cwd=work)
    assert "Uploaded 4 file(s)" in p.stderr
    assert names(stack.json("vfolder", "ls", "mydata1", ".")) == {"bigdata.csv", "tree"}
    ls = stack.ok("vfolder", "ls", "mydata1", "tree/sub").stdout
    assert "b.bin" in ls and "empty" in ls
    listing = stack.json("vfolder", "ls", "mydata1", "tree/sub")["items"]
    assert {i["filename"]: i["size"] for i in listing} == {"b.bin": 2 * MiB + 1, "empty": 0}

    down = tmp_path / "down"
    down.mkdir()
    stack.ok("vfolder", "download", "mydata1", "./bigdata.csv", "tree", cwd=down)
    assert (down / "bigdata.csv").read_bytes() == big
    for rel, data in tree.items():
        assert (down / rel).read_bytes() == data, rel
    assert sorted(p.name for p in down.iterdir()) == ["bigdata.csv", "tree"]  # no partial files left
    root = tmp_path / "root"
    results = stack.json("vfolder", "download", "mydata1", ".", "-b", str(root))
    assert results[0]["archive"] is True
    assert (root / "tree" / "sub" / "b.bin").read_bytes() == tree["tree/sub/b.bin"]
    assert (root / "bigdata.csv").read_bytes() == big

    stack.ok("vfolder", "mkdir", "mydata1", "x/y/z", "-p")
    stack.fails("vfolder", "mkdir", "mydata1", "x/y/z")  # exists
    stack.ok("vfolder", "mv", "mydata1", "tree/a.txt", "x/y/z/a.txt")
    stack.ok("vfolder", "rename-file", "mydata1", "x/y/z/a.txt", "renamed.txt")
    assert names(stack.json("vfolder", "ls", "mydata1", "x/y/z")) == {"renamed.txt"}
    assert names(stack.json("vfolder", "ls", "mydata1", "tree")) == {"sub"}
    stack.ok("vfolder", "download", "mydata1", "x/y/z/renamed.txt", "-b", str(tmp_path / "d2"))
    assert (tmp_path / "d2" / "x" / "y" / "z" / "renamed.txt").read_bytes() == tree["tree/a.txt"]

    stack.fails("vfolder", "rm", "mydata1", "tree")  # a directory needs -r
    stack.ok("vfolder", "rm", "mydata1", "tree", "-r")
    stack.ok("vfolder", "delete-file", "mydata1", "bigdata.csv")
    assert names(stack.json("vfolder", "ls", "mydata1")) == {"x"}

    stack.ok("vfolder", "rename", "mydata1", "mydata2")
    assert [i["name"] for i in stack.json("vfolder", "list")["items"]] == ["mydata2"]
    stack.ok("vfolder", "update-options", "mydata2", "--set-cloneable", "true")
    cloned = stack.json("vfolder", "clone", "mydata2", "mydata3")
    assert cloned["name"] == "mydata3"
    assert names(stack.json("vfolder", "ls", "mydata3", "x/y/z")) == {"renamed.txt"}
    stack.ok("vfolder", "delete", "mydata2")
    stack.ok("vfolder", "delete", "mydata3")
    assert stack.json("vfolder", "list")["items"] == []
    assert "There are no virtual folders." in stack.ok("vfolder", "list").stdout


class Interrupt(Exception):
    pass


def test_interrupted_upload_resumes_with_the_missing_bytes_only(stack: Stack, tmp_path: Path) -> None:
    stack.ok("vfolder", "create", "resume1")
    work = tmp_path / "w"
    data = write_random(work / "big.bin", 6 * MiB + 3)
    cache = Path(stack.env()["XDG_CACHE_HOME"]) / "backend.ai" / "uploads"

    def stop_after_two(target: str, offset: int) -> None:
        if offset >= 2 * MiB:
            raise Interrupt  # the process "dies" after two acknowledged chunks

    with Session(config=stack.config()) as api, pytest.raises(Interrupt):
        api.VFolder("resume1").upload(
            [work / "big.bin"], basedir=work, chunk_size=MiB, on_chunk=stop_after_two, state_dir=cache
        )
    (state_file,) = cache.glob("*.json")
    saved = UploadStateStore(cache).load(state_file.stem)
    assert saved is not None
    head = httpx.head(saved["url"], headers={"Tus-Resumable": "1.0.0"})
    assert int(head.headers["Upload-Offset"]) == 2 * MiB  # what the server holds before the second run
    assert int(head.headers["Upload-Length"]) == len(data)

    p = stack.ok("--output", "json", "vfolder", "upload", "resume1", "big.bin", "--chunk-size", "1m", cwd=work)
    assert json.loads(p.stdout) == [{"path": "big.bin", "size": len(data), "resumed_from": 2 * MiB}]
    assert list(cache.glob("*.json")) == []  # forgotten once complete
    # the same upload session was completed (not a new one): its token now reports every byte received
    assert httpx.head(saved["url"], headers={"Tus-Resumable": "1.0.0"}).headers["Upload-Offset"] == str(len(data))
    down = tmp_path / "down"
    stack.ok("vfolder", "download", "resume1", "big.bin", "-b", str(down))
    assert (down / "big.bin").read_bytes() == data

    # A fresh run of the same file after completion uploads everything again (overwrite).
    results = stack.json("vfolder", "upload", "resume1", "big.bin", cwd=work)
    assert results[0]["resumed_from"] == 0
    stack.ok("vfolder", "delete", "resume1")


async def test_async_sdk(stack: Stack, tmp_path: Path) -> None:
    src = tmp_path / "src"
    data = write_random(src / "d" / "f.bin", 3 * MiB)
    async with AsyncSession(config=stack.config()) as api:
        created = await api.VFolder.create("sdkfolder", cloneable=True)
        assert created["name"] == "sdkfolder"
        hosts = await api.VFolder.list_hosts()
        assert stack.proxy.host in hosts["allowed"]
        vf = api.VFolder("sdkfolder")
        results = await vf.upload([src / "d"], basedir=src, chunk_size=MiB, state_dir=tmp_path / "state")
        assert results == [{"path": "d/f.bin", "size": 3 * MiB, "resumed_from": 0}]
        info = await vf.info()
        assert info["name"] == "sdkfolder" and info["num_files"] >= 1 and info["used_bytes"] >= 3 * MiB
        files = (await vf.list_files("d"))["files"]
        assert [(f["filename"], f["size"]) for f in files] == [("f.bin", 3 * MiB)]
        link = await vf.request_download("d/f.bin")
        async with httpx.AsyncClient() as client:
            resp = await client.get(link["url"], params={"token": link["token"]}, headers={"Range": "bytes=10-19"})
        assert resp.status_code == 206 and resp.content == data[10:20]
        got = await vf.download(["d/f.bin"], basedir=tmp_path / "out")
        assert got[0]["files"] == ["d/f.bin"] and (tmp_path / "out" / "d" / "f.bin").read_bytes() == data
        await vf.delete_files(["d"], recursive=True)
        assert (await vf.list_files("."))["files"] == []
        await vf.rename("sdkfolder2")
        assert vf.name == "sdkfolder2"
        await vf.delete()
        with pytest.raises(BackendAPIError) as ei:
            await vf.info()
        assert ei.value.status == 404


def test_invitations_between_two_users(stack: Stack, tmp_path: Path) -> None:
    work = tmp_path / "w"
    data = write_random(work / "shared.txt", 1000)
    stack.ok("vfolder", "create", "tobeshared")
    stack.ok("vfolder", "upload", "tobeshared", "shared.txt", cwd=work)
    p = stack.ok("vfolder", "invite", "tobeshared", ADMIN["email"], "-p", "ro")
    assert ADMIN["email"] in p.stderr
    sent = stack.json("vfolder", "invitations", "--sent")["items"]
    assert [(i["vfolder_name"], i["permission"]) for i in sent] == [("tobeshared", "ro")]

    received = stack.json("vfolder", "invitations", who=ADMIN)["items"]
    assert [(i["vfolder_name"], i["inviter"], i["permission"]) for i in received] == [
        ("tobeshared", USER["email"], "ro")
    ]
    table = stack.ok("vfolder", "invitations", "--no-interactive", who=ADMIN).stdout
    assert "tobeshared" in table and received[0]["id"] in table
    stack.ok("vfolder", "invitations", "--accept", received[0]["id"], who=ADMIN)
    assert stack.json("vfolder", "invitations", who=ADMIN)["items"] == []

    mine = {i["name"]: i for i in stack.json("vfolder", "list", who=ADMIN)["items"]}
    assert mine["tobeshared"]["is_owner"] is False and mine["tobeshared"]["permission"] == "ro"
    stack.ok("vfolder", "download", "tobeshared", "shared.txt", "-b", str(tmp_path / "admin"), who=ADMIN)
    assert (tmp_path / "admin" / "shared.txt").read_bytes() == data
    stack.fails("vfolder", "upload", "tobeshared", "shared.txt", who=ADMIN, cwd=work)  # read-only
    stack.ok("vfolder", "leave", "tobeshared", who=ADMIN)
    assert "tobeshared" not in {i["name"] for i in stack.json("vfolder", "list", who=ADMIN)["items"]}

    # A second invitation, rejected with the non-interactive command.
    stack.ok("vfolder", "invite", "tobeshared", ADMIN["email"])
    (inv,) = stack.json("vfolder", "invitations", who=ADMIN)["items"]
    stack.ok("vfolder", "reject-invitation", inv["id"], who=ADMIN)
    assert stack.json("vfolder", "invitations", who=ADMIN)["items"] == []

    # The interactive way: pick the invitation by its number, then accept it.
    stack.ok("vfolder", "invite", "tobeshared", ADMIN["email"], "-p", "rw")
    p = stack.cli("vfolder", "invitations", "-i", who=ADMIN, input="1\na\n")
    assert p.returncode == 0, p.stderr
    assert "[1] tobeshared from user@lablup.com (rw)" in p.stdout and "accepted" in p.stderr
    mine = {i["name"]: i for i in stack.json("vfolder", "list", who=ADMIN)["items"]}
    assert mine["tobeshared"]["permission"] == "rw"
    stack.ok("vfolder", "leave", "tobeshared", who=ADMIN)
    assert "tobeshared" not in {i["name"] for i in stack.json("vfolder", "list", who=ADMIN)["items"]}
    stack.ok("vfolder", "delete", "tobeshared")


def test_group_folder_share_and_unshare(stack: Stack) -> None:
    stack.ok("vfolder", "create", "groupdata", "-g", "default", "-p", "ro", who=ADMIN)
    seen = {i["name"]: i for i in stack.json("vfolder", "list")["items"]}
    assert seen["groupdata"]["ownership_type"] == "group" and seen["groupdata"]["permission"] == "ro"
    p = stack.ok("vfolder", "share", "groupdata", USER["email"], "-p", "rw", who=ADMIN)
    assert USER["email"] in p.stderr
    seen = {i["name"]: i for i in stack.json("vfolder", "list")["items"]}
    assert seen["groupdata"]["permission"] == "rw"
    stack.ok("vfolder", "unshare", "groupdata", USER["email"], who=ADMIN)
    seen = {i["name"]: i for i in stack.json("vfolder", "list")["items"]}
    assert seen["groupdata"]["permission"] == "ro"
    stack.fails("vfolder", "leave", "groupdata")  # group folders cannot be left
    stack.ok("vfolder", "delete", "groupdata", who=ADMIN)


def test_cli_errors_are_one_line(stack: Stack, tmp_path: Path) -> None:
    stack.fails("vfolder", "info", "no-such-folder", needles=("404",))
    stack.fails("vfolder", "create", "x", "-p", "all", code=2, needles=("--permission",))
    stack.fails("vfolder", "create", "bad/name", needles=("400",))
    stack.fails("vfolder", "invite", "x", "not-an-email", code=2, needles=("email",))
    stack.fails("vfolder", "upload", "x", "missing-file.txt", cwd=tmp_path, needles=("No such file",))
    stack.fails("vfolder", "update-options", "x", code=2, needles=("Nothing to update",))
    stack.fails("vfolder", "cp", "x", "a", "b", code=2, needles=("FOLDER:",))
    stack.fails("vfolder", "cp", "a:x", "b", "c:", code=2, needles=("FOLDER:",))
    stack.ok("vfolder", "create", "errs")
    stack.fails("vfolder", "download", "errs", "../../etc/passwd", cwd=tmp_path)
    stack.fails("vfolder", "download", "errs", "nothing-here.txt", cwd=tmp_path, needles=("404",))
    stack.fails("vfolder", "create", "errs", needles=("409",))  # duplicate name
    assert list(tmp_path.iterdir()) == []  # nothing written by the failed downloads
    stack.ok("vfolder", "delete", "errs")


def test_cp_uploads_and_downloads_scp_style(stack: Stack, tmp_path: Path) -> None:
    src = tmp_path / "src"
    src.mkdir()
    (src / "a.txt").write_text("alpha")
    (src / "b.bin").write_bytes(os.urandom(70_000))
    stack.ok("vfolder", "create", "cpdata")
    stack.ok("vfolder", "cp", str(src / "a.txt"), str(src / "b.bin"), "cpdata:")
    out = tmp_path / "out"
    stack.ok("vfolder", "cp", "cpdata:a.txt", "cpdata:b.bin", str(out))
    assert (out / "a.txt").read_text() == "alpha"
    assert (out / "b.bin").read_bytes() == (src / "b.bin").read_bytes()
    stack.fails("vfolder", "cp", str(src / "a.txt"), "cpdata:sub/", code=2, needles=("FOLDER:",))
    stack.ok("vfolder", "delete", "cpdata")
