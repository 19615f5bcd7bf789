"""Escape attempts against the storage proxy's file operations (vfs backend, real files in a temp dir).

Each test plants what code in a session could plant inside a folder (symlinks to an "outside" directory,
to ``/``, loops, FIFOs, device nodes, hard links, odd names), tries an operation, and checks that it is
refused or treats the link as a link, and that nothing outside the folder changed.
"""

from __future__ import annotations

import hashlib
import os
import stat
import uuid
from collections.abc import AsyncIterator
from pathlib import Path

import pytest

from ai.backend.common.problems import Conflict, InvalidAPIParameters, NotFound
from ai.backend.storage.volumes import safepath
from ai.backend.storage.volumes.base import PayloadTooLarge
from ai.backend.storage.volumes.safepath import Owner, PathRefused, split_relpath
from ai.backend.storage.volumes.vfs import VfsVolume

IS_ROOT = os.geteuid() == 0


def snapshot(root: Path) -> dict[str, tuple[int, int, str]]:
    """Every path below ``root`` (and root itself): mode, mtime and content hash, without following links."""
    out: dict[str, tuple[int, int, str]] = {}
    for dirpath, dirnames, filenames in os.walk(root):
        for name in [".", *dirnames, *filenames]:
            p = Path(dirpath) / name
            st = p.lstat()
            digest = ""
            if stat.S_ISREG(st.st_mode):
                digest = hashlib.sha256(p.read_bytes()).hexdigest()
            elif stat.S_ISLNK(st.st_mode):
                digest = os.readlink(p)
            out[str(p.relative_to(root))] = (st.st_mode, st.st_mtime_ns, digest)
    return out


@pytest.fixture
def outside(tmp_path: Path) -> Path:
    d = tmp_path / "outside"
    (d / "sub").mkdir(parents=True)
    (d / "secret.txt").write_text("top secret")
    (d / "sub" / "deep.txt").write_text("deep secret")
    return d


@pytest.fixture
async def volume(tmp_path: Path) -> AsyncIterator[VfsVolume]:
    vol = VfsVolume("v", str(tmp_path / "volume"), {}, Owner(1000, 1000, enabled=IS_ROOT), 1 << 30)
    await vol.open()
    yield vol
    await vol.close()


@pytest.fixture
async def folder(volume: VfsVolume, outside: Path) -> tuple[str, Path]:
    """A folder with a file, a directory and the usual planted escapes."""
    vfid = uuid.uuid4().hex
    await volume.create_folder(vfid, None)
    root = Path(await volume.mount_path(vfid))
    (root / "data").mkdir()
    (root / "data" / "file.txt").write_text("inside")
    (root / "to-outside").symlink_to(outside)  # a directory symlink leaving the folder
    (root / "to-secret").symlink_to(outside / "secret.txt")  # a file symlink leaving the folder
    (root / "to-root").symlink_to("/")
    (root / "relative-up").symlink_to("../../../../outside")
    (root / "loop").symlink_to("loop")
    (root / "data" / "up").symlink_to("..")
    return vfid, root


def test_split_relpath_refuses_malformed_paths() -> None:
    assert split_relpath("") == ()
    assert split_relpath(".") == ()
    assert split_relpath("a/b/") == ("a", "b")
    # NFD input is normalised to NFC ("é" as e + combining acute).
    assert split_relpath("cafe\u0301/x") == ("caf\u00e9", "x")
    bad = [
        "..",
        "a/../b",
        "../x",
        "/etc/passwd",
        "/",
        "a//b",
        "a/./b",
        "./a",
        "a\x00b",
        "a/\x01b",
        "tab\there",
        "new\nline",
        "del\x7f",
        "x" * 256,
        "a/" * 3000,
        "\ud800",
    ]
    for p in bad:
        with pytest.raises(PathRefused):
            split_relpath(p)
    with pytest.raises(PathRefused):
        split_relpath("", allow_root=False)
    assert split_relpath("\u00e9" * 127) == ("\u00e9" * 127,)  # 254 bytes: allowed
    with pytest.raises(PathRefused):
        split_relpath("\u00e9" * 128)  # 256 bytes: one component too long
    for name in ("a/b", "..", ".", "", "x\x00"):
        with pytest.raises(PathRefused):
            safepath.check_name(name)


async def test_traversal_and_absolute_paths_refused(volume: VfsVolume, folder: tuple[str, Path], outside: Path) -> None:
    vfid, _ = folder
    before = snapshot(outside)
    for rel in ("../../outside", "/etc", "data/../../x", "data/\x00"):
        with pytest.raises(PathRefused):
            await volume.list_dir(vfid, rel, 100)
        with pytest.raises(PathRefused):
            await volume.mkdir(vfid, rel + "/new", parents=True, exist_ok=True)
        with pytest.raises(PathRefused):
            await volume.delete_files(vfid, [rel], recursive=True)
        with pytest.raises(PathRefused):
            await volume.open_download(vfid, rel)
        with pytest.raises(PathRefused):
            await volume.check_upload(vfid, rel, 1)
    with pytest.raises(PathRefused):
        await volume.rename(vfid, "data/file.txt", "../escaped")
    with pytest.raises(PathRefused):
        await volume.move(vfid, "data/file.txt", "../escaped")
    assert snapshot(outside) == before


async def test_symlinked_directories_are_never_entered(
    volume: VfsVolume, folder: tuple[str, Path], outside: Path
) -> None:
    vfid, root = folder
    before = snapshot(outside)
    for link in ("to-outside", "to-root", "relative-up", "loop", "data/up"):
        with pytest.raises(PathRefused):
            await volume.list_dir(vfid, link, 100)
        with pytest.raises(PathRefused):
            await volume.list_dir(vfid, link + "/sub", 100)
        with pytest.raises(PathRefused):
            await volume.mkdir(vfid, link + "/planted", parents=False, exist_ok=False)
        with pytest.raises(PathRefused):
            await volume.mkdir(vfid, link + "/a/b", parents=True, exist_ok=True)
        with pytest.raises(PathRefused):
            await volume.delete_files(vfid, [link + "/secret.txt"], recursive=True)
        with pytest.raises(PathRefused):
            await volume.rename(vfid, link + "/secret.txt", "x")
        with pytest.raises(PathRefused):
            await volume.move(vfid, "data/file.txt", link + "/stolen.txt")
        with pytest.raises(PathRefused):
            await volume.move(vfid, link + "/secret.txt", "data/stolen.txt")
        with pytest.raises(PathRefused):
            await volume.check_upload(vfid, link + "/planted.txt", 3)
        with pytest.raises(PathRefused):
            await volume.open_download(vfid, link + "/secret.txt")
    assert (root / "data" / "file.txt").read_text() == "inside"
    assert snapshot(outside) == before
    assert not (Path("/") / "planted").exists()


async def test_symlink_as_last_component_is_the_link_itself(
    volume: VfsVolume, folder: tuple[str, Path], outside: Path
) -> None:
    vfid, root = folder
    before = snapshot(outside)
    # Downloads of a symlink (to a file or a directory, even as an archive) are refused.
    for link in ("to-secret", "to-outside", "to-root", "loop"):
        with pytest.raises(PathRefused):
            await volume.open_download(vfid, link)
    # Listing shows links as links, with their target, without following them.
    items, truncated = await volume.list_dir(vfid, "", 100)
    kinds = {i["name"]: i["type"] for i in items}
    assert not truncated
    assert kinds["to-outside"] == "SYMLINK" and kinds["to-secret"] == "SYMLINK" and kinds["data"] == "DIRECTORY"
    assert next(i for i in items if i["name"] == "to-outside")["symlink_target"] == str(outside)
    # Rename and move act on the link.
    await volume.rename(vfid, "to-secret", "renamed-link")
    assert (root / "renamed-link").is_symlink() and os.readlink(root / "renamed-link") == str(outside / "secret.txt")
    await volume.move(vfid, "renamed-link", "data/moved-link")
    assert (root / "data" / "moved-link").is_symlink()
    # Deleting a symlink to a directory (even recursively) removes the link, not the target's content.
    await volume.delete_files(vfid, ["to-outside", "to-root", "data/moved-link"], recursive=True)
    assert not (root / "to-outside").exists() and not (root / "to-outside").is_symlink()
    # mkdir with exist_ok over a symlink to a directory is a conflict, not "exists".
    with pytest.raises(Conflict):
        await volume.mkdir(vfid, "relative-up", parents=False, exist_ok=True)
    assert snapshot(outside) == before
    assert Path("/etc/passwd").exists()


async def test_upload_replaces_a_symlink_instead_of_writing_through_it(
    volume: VfsVolume, folder: tuple[str, Path], outside: Path
) -> None:
    vfid, root = folder
    before = snapshot(outside)
    session = "ab" * 16
    await volume.check_upload(vfid, "to-secret", 4)
    fd, offset = volume.upload_fd(session)
    assert offset == 0
    os.write(fd, b"mine")
    os.close(fd)
    await volume.finish_upload(vfid, "to-secret", session, 4)
    assert not (root / "to-secret").is_symlink()
    assert (root / "to-secret").read_bytes() == b"mine"
    assert snapshot(outside) == before
    if IS_ROOT:
        st = (root / "to-secret").stat()
        assert (st.st_uid, st.st_gid) == (1000, 1000)


async def test_upload_through_a_symlinked_parent_is_refused_at_completion(
    volume: VfsVolume, folder: tuple[str, Path], outside: Path
) -> None:
    """The token was issued while ``later`` was a real directory; by completion it is a link to outside."""
    vfid, root = folder
    before = snapshot(outside)
    (root / "later").mkdir()
    await volume.check_upload(vfid, "later/x.txt", 3)
    session = "cd" * 16
    fd, _ = volume.upload_fd(session)
    os.write(fd, b"abc")
    os.close(fd)
    (root / "later").rmdir()
    (root / "later").symlink_to(outside)
    with pytest.raises(PathRefused):
        await volume.finish_upload(vfid, "later/x.txt", session, 3)
    assert volume.upload_size(session) == 0  # the partial file is discarded
    assert snapshot(outside) == before


async def test_special_files_are_never_opened(volume: VfsVolume, folder: tuple[str, Path], outside: Path) -> None:
    vfid, root = folder
    os.mkfifo(root / "fifo")  # opening it for reading would block forever
    specials = ["fifo"]
    if IS_ROOT:
        os.mknod(root / "zero", stat.S_IFCHR | 0o666, os.makedev(1, 5))  # /dev/zero: an endless download
        os.mknod(root / "disk", stat.S_IFBLK | 0o600, os.makedev(7, 0))
        specials += ["zero", "disk"]
    for name in specials:
        with pytest.raises(PathRefused):
            await volume.open_download(vfid, name)
    items, _ = await volume.list_dir(vfid, "", 100)
    assert all(i.get("special") for i in items if i["name"] in specials)
    # Clone skips them; usage does not count their (device) sizes.
    dst = uuid.uuid4().hex
    await volume.clone_folder(vfid, volume, dst)
    dst_root = Path(await volume.mount_path(dst))
    for name in specials:
        assert not os.path.lexists(dst_root / name)
    assert (await volume.usage(vfid)).used_bytes == len("inside")
    # Deleting them removes the nodes only.
    await volume.delete_files(vfid, specials, recursive=False)
    assert not any(os.path.lexists(root / n) for n in specials)


async def test_hard_links_are_counted_once_and_never_written_through(
    volume: VfsVolume, folder: tuple[str, Path], tmp_path: Path
) -> None:
    vfid, root = folder
    os.link(root / "data" / "file.txt", root / "hardlink.txt")
    usage = await volume.usage(vfid)
    assert usage.used_bytes == len("inside")
    session = "ef" * 16
    fd, _ = volume.upload_fd(session)
    os.write(fd, b"new content")
    os.close(fd)
    await volume.finish_upload(vfid, "hardlink.txt", session, 11)
    assert (root / "hardlink.txt").read_bytes() == b"new content"
    assert (root / "data" / "file.txt").read_text() == "inside"  # the other name keeps the old inode


async def test_clone_copies_links_as_links(volume: VfsVolume, folder: tuple[str, Path], outside: Path) -> None:
    vfid, _ = folder
    before = snapshot(outside)
    (Path(await volume.mount_path(vfid)) / "data" / "exec.sh").write_text("#!/bin/sh\n")
    os.chmod(Path(await volume.mount_path(vfid)) / "data" / "exec.sh", 0o4755)  # setuid must not survive
    dst = uuid.uuid4().hex
    await volume.clone_folder(vfid, volume, dst)
    droot = Path(await volume.mount_path(dst))
    assert (droot / "data" / "file.txt").read_text() == "inside"
    assert os.readlink(droot / "to-outside") == str(outside)
    assert os.readlink(droot / "loop") == "loop"
    assert os.readlink(droot / "data" / "up") == ".."
    assert stat.S_IMODE((droot / "data" / "exec.sh").stat().st_mode) == 0o755
    if IS_ROOT:
        for p in (droot / "data", droot / "data" / "file.txt"):
            assert (p.stat().st_uid, p.stat().st_gid) == (1000, 1000)
        assert os.lstat(droot / "to-outside").st_uid == 1000
    assert snapshot(outside) == before
    # Cloning onto an existing folder is a conflict and leaves it as it was.
    with pytest.raises(Conflict):
        await volume.clone_folder(vfid, volume, dst)
    assert (droot / "data" / "file.txt").read_text() == "inside"


async def test_delete_folder_does_not_follow_links(volume: VfsVolume, folder: tuple[str, Path], outside: Path) -> None:
    vfid, root = folder
    before = snapshot(outside)
    (root / "data" / "nested").mkdir()
    (root / "data" / "nested" / "to-outside-again").symlink_to(outside / "sub")
    await volume.delete_folder(vfid)
    assert not root.exists()
    assert snapshot(outside) == before
    with pytest.raises(NotFound):
        await volume.delete_folder(vfid)
    with pytest.raises(NotFound):
        await volume.list_dir(vfid, "", 10)


async def test_very_deep_trees_are_deleted_completely(volume: VfsVolume, folder: tuple[str, Path]) -> None:
    vfid, root = folder
    depth = safepath.MAX_DEPTH * 2 + 7
    fd = os.open(root, os.O_RDONLY | os.O_DIRECTORY)
    try:
        for _ in range(depth):  # deeper than PATH_MAX allows by path, so built with descriptors
            os.mkdir("d", dir_fd=fd)
            nxt = os.open("d", os.O_RDONLY | os.O_DIRECTORY, dir_fd=fd)
            os.close(fd)
            fd = nxt
        os.close(os.open("leaf", os.O_WRONLY | os.O_CREAT, 0o644, dir_fd=fd))
    finally:
        os.close(fd)
    usage = await volume.usage(vfid)  # stops descending at MAX_DEPTH instead of failing
    assert usage.file_count >= safepath.MAX_DEPTH
    with pytest.raises(PathRefused):  # a clone of it is refused and leaves nothing behind
        await volume.clone_folder(vfid, volume, "f" * 32)
    assert not os.path.lexists(Path(volume.path) / "ff" / "ff" / ("f" * 28))
    await volume.delete_files(vfid, ["d"], recursive=True)
    assert not os.path.lexists(root / "d")
    assert sorted(os.listdir(root)) == sorted(["data", "to-outside", "to-secret", "to-root", "relative-up", "loop"])


async def test_delete_refuses_directories_without_recursive_and_deletes_nothing(
    volume: VfsVolume, folder: tuple[str, Path]
) -> None:
    vfid, root = folder
    with pytest.raises(InvalidAPIParameters):
        await volume.delete_files(vfid, ["to-secret", "data"], recursive=False)
    assert (root / "to-secret").is_symlink()  # the valid first path was not deleted either
    with pytest.raises(NotFound):
        await volume.delete_files(vfid, ["to-secret", "missing"], recursive=True)
    assert (root / "to-secret").is_symlink()
    with pytest.raises(PathRefused):
        await volume.delete_files(vfid, [""], recursive=True)  # the folder root itself
    assert root.is_dir()


async def test_created_entries_are_owned_by_the_configured_user(volume: VfsVolume, folder: tuple[str, Path]) -> None:
    vfid, root = folder
    await volume.mkdir(vfid, "x/y/z", parents=True, exist_ok=False)
    st = os.stat(root)
    assert stat.S_IMODE(st.st_mode) == 0o755
    if IS_ROOT:
        for p in (root, root / "x", root / "x" / "y", root / "x" / "y" / "z"):
            assert (p.stat().st_uid, p.stat().st_gid) == (1000, 1000), p
        # The volume's shard directories and private state stay root's.
        shard = Path(volume.path) / vfid[:2]
        assert shard.stat().st_uid == 0
        assert stat.S_IMODE((Path(volume.path) / ".meta").stat().st_mode) == 0o700
    with pytest.raises(Conflict):
        await volume.mkdir(vfid, "x/y/z", parents=False, exist_ok=False)
    await volume.mkdir(vfid, "x/y/z", parents=False, exist_ok=True)
    with pytest.raises(NotFound):
        await volume.mkdir(vfid, "no/such/parent", parents=False, exist_ok=False)


async def test_quota_refuses_uploads_that_do_not_fit(volume: VfsVolume, folder: tuple[str, Path]) -> None:
    vfid, root = folder
    await volume.set_quota(vfid, 10)
    assert await volume.get_quota(vfid) == 10
    await volume.check_upload(vfid, "ok.bin", 4)  # 6 used + 4
    with pytest.raises(PayloadTooLarge):
        await volume.check_upload(vfid, "big.bin", 5)
    # Replacing an existing file only counts the growth.
    await volume.check_upload(vfid, "data/file.txt", 10)
    await volume.set_quota(vfid, None)
    await volume.check_upload(vfid, "big.bin", 1 << 20)


async def test_odd_names(volume: VfsVolume, folder: tuple[str, Path]) -> None:
    vfid, root = folder
    # A name that is not valid UTF-8 (created inside a session) is listed with U+FFFD, and flagged.
    os.close(os.open(os.fsencode(str(root)) + b"/bad-\xff-name", os.O_WRONLY | os.O_CREAT, 0o644))
    await volume.mkdir(vfid, "caf\u0065\u0301", parents=False, exist_ok=False)  # NFD in, NFC on disk
    items, _ = await volume.list_dir(vfid, "", 100)
    names = {i["name"]: i for i in items}
    assert names["bad-\ufffd-name"]["name_undecodable"] is True
    assert "caf\u00e9" in names
    assert (root / "caf\u00e9").is_dir()
    # A folder id that is not a UUID never reaches the file system.
    from ai.backend.storage.volumes.base import normalize_vfid

    for bad in ("../../etc", "", "zz" * 16, "a" * 31):
        with pytest.raises(InvalidAPIParameters):
            normalize_vfid(bad)
    assert normalize_vfid(str(uuid.UUID(vfid))) == vfid
