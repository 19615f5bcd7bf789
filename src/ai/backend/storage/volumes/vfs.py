"""The ``vfs`` backend: folders are plain directories on a local or network file system.

Layout: folder ``vfid`` is ``<path>/<vfid[0:2]>/<vfid[2:4]>/<vfid[4:]>``; the proxy's own state lives beside
the folders, never inside one: ``<path>/.meta/<vfid>.json`` (quota) and ``<path>/.upload/<session>`` (partial
uploads). A plain file system cannot enforce a per-directory quota, so the quota is checked by the proxy when
an upload is requested and completed. With ``options = { quota-images = true }`` a folder created with a quota
is also its own loop-mounted ext4 image (:mod:`.quota_images`), which limits writes from sessions too.
"""

from __future__ import annotations

import asyncio
import errno
import json
import os
import re
import secrets
import stat
import time
from datetime import UTC, datetime
from typing import Any

from ai.backend.common.problems import Conflict, InvalidAPIParameters, NotFound

from . import quota_images
from .base import AbstractVolume, DownloadTarget, PayloadTooLarge, Usage
from .safepath import (
    DIR_FLAGS,
    Owner,
    PathRefused,
    check_name,
    copy_tree,
    fs_error,
    iter_tree,
    lstat_at,
    mkdir_at,
    open_dir,
    open_dir_at,
    open_regular,
    rmtree_at,
    split_relpath,
)

__all__ = ["VfsVolume"]

_SESSION_RE = re.compile(r"^[0-9a-f]{16,64}$")
USAGE_TTL_S = 10.0


def _iso(ts: float) -> str:
    return datetime.fromtimestamp(ts, UTC).isoformat()


def _display(name: str) -> str:
    """A JSON-safe form of a name read from disk (names that are not UTF-8 get U+FFFD)."""
    return name.encode("utf-8", "surrogateescape").decode("utf-8", "replace")


class VfsVolume(AbstractVolume):
    """Folders as directories; every folder-relative path goes through :mod:`.safepath`."""

    backend = "vfs"
    capabilities = ("vfolder", "quota")

    def __init__(self, name: str, path: str, options: dict[str, Any], owner: Owner, max_upload_size: int) -> None:
        super().__init__(name, path, options)
        self.owner = owner
        self.max_upload_size = max_upload_size
        self._fd = -1
        self._meta_fd = -1
        self._upload_fd = -1
        self._usage: dict[str, tuple[float, Usage]] = {}
        self._images_fd = -1
        value = options.get("quota-images", False)
        if not isinstance(value, bool):
            raise ValueError(f"volume {name}: quota-images must be true or false")
        self.quota_images = value

    # ------------------------------------------------------------------------------------------ set-up

    async def open(self) -> None:
        os.makedirs(self.path, mode=0o755, exist_ok=True)
        self._fd = os.open(self.path, os.O_RDONLY | os.O_DIRECTORY | os.O_CLOEXEC)
        self._meta_fd = self._private_dir(".meta")
        self._upload_fd = self._private_dir(".upload")
        if self.quota_images:
            if os.geteuid() != 0:
                raise ValueError(f"volume {self.name}: quota-images needs the proxy to run as root (mount)")
            self._images_fd = self._private_dir(".images")
            await self._run(self._mount_images)

    def _image(self, vfid: str) -> str:
        return os.path.join(self.path, ".images", f"{vfid}.img")

    def _has_image(self, vfid: str) -> bool:
        return self.quota_images and lstat_at(self._images_fd, f"{vfid}.img") is not None

    def _mount_images(self) -> None:
        """Mount the images of folders with quotas that are not mounted (after a reboot, or a crash)."""
        for entry in os.listdir(self._images_fd):
            vfid = entry.removesuffix(".img")
            if entry.endswith(".img") and len(vfid) == 32:
                try:
                    quota_images.mount(self._image(vfid), os.path.join(self.path, *self._shards(vfid)))
                except OSError as e:
                    raise ValueError(f"volume {self.name}: cannot mount the quota image of {vfid}: {e}") from None

    def _private_dir(self, name: str) -> int:
        try:
            os.mkdir(name, 0o700, dir_fd=self._fd)
        except FileExistsError:
            pass
        fd = open_dir_at(self._fd, name)
        os.fchmod(fd, 0o700)
        return fd

    async def close(self) -> None:
        for fd in (self._images_fd, self._upload_fd, self._meta_fd, self._fd):
            if fd >= 0:
                os.close(fd)
        self._fd = self._meta_fd = self._upload_fd = self._images_fd = -1

    def cleanup_uploads(self, older_than_s: float) -> int:
        """Remove partial uploads untouched for ``older_than_s`` (their tokens have expired)."""
        removed = 0
        now = time.time()
        with os.scandir(self._upload_fd) as it:
            for entry in it:
                try:
                    st = entry.stat(follow_symlinks=False)
                    if now - st.st_mtime > older_than_s:
                        os.unlink(entry.name, dir_fd=self._upload_fd)
                        removed += 1
                except OSError:
                    continue
        return removed

    # ------------------------------------------------------------------------------------------ helpers

    @staticmethod
    def _shards(vfid: str) -> tuple[str, str, str]:
        return vfid[0:2], vfid[2:4], vfid[4:]

    def _open_folder(self, vfid: str) -> int:
        try:
            return open_dir(self._fd, self._shards(vfid))
        except NotFound:
            raise NotFound(f"no such folder {vfid} on volume {self.name}") from None

    def _invalidate(self, vfid: str) -> None:
        self._usage.pop(vfid, None)

    def _read_meta(self, vfid: str) -> dict[str, Any]:
        try:
            fd = os.open(f"{vfid}.json", os.O_RDONLY | os.O_NOFOLLOW | os.O_CLOEXEC, dir_fd=self._meta_fd)
        except FileNotFoundError:
            return {}
        with os.fdopen(fd, "rb") as f:
            try:
                data = json.loads(f.read(1 << 16))
            except ValueError:
                return {}
        return data if isinstance(data, dict) else {}

    def _write_meta(self, vfid: str, data: dict[str, Any]) -> None:
        tmp = f".{vfid}.{secrets.token_hex(4)}.tmp"
        fd = os.open(
            tmp, os.O_WRONLY | os.O_CREAT | os.O_EXCL | os.O_NOFOLLOW | os.O_CLOEXEC, 0o600, dir_fd=self._meta_fd
        )
        try:
            with os.fdopen(fd, "wb") as f:
                f.write(json.dumps(data).encode())
            os.rename(tmp, f"{vfid}.json", src_dir_fd=self._meta_fd, dst_dir_fd=self._meta_fd)
        except BaseException:
            try:
                os.unlink(tmp, dir_fd=self._meta_fd)
            except OSError:
                pass
            raise

    def _remove_meta(self, vfid: str) -> None:
        try:
            os.unlink(f"{vfid}.json", dir_fd=self._meta_fd)
        except FileNotFoundError:
            pass

    @staticmethod
    async def _run(func: Any, *args: Any, **kwargs: Any) -> Any:
        return await asyncio.get_running_loop().run_in_executor(None, lambda: func(*args, **kwargs))

    # ------------------------------------------------------------------------------------------ folders

    async def create_folder(self, vfid: str, quota: int | None) -> None:
        await self._run(self._create_folder, vfid, quota)

    def _create_folder(self, vfid: str, quota: int | None) -> None:
        a, b, rest = self._shards(vfid)
        shard = open_dir(self._fd, (a, b), create=Owner(0, 0, enabled=False))
        try:
            fd = mkdir_at(shard, rest, self.owner, 0o755, shown=vfid)
            os.close(fd)
            try:
                self._write_meta(vfid, {"quota": quota})
                if self.quota_images and quota:
                    # Sessions bind-mount the directory: only a file system of its own limits their writes.
                    quota_images.make(
                        self._image(vfid), os.path.join(self.path, a, b, rest), quota, self.owner.uid, self.owner.gid
                    )
            except BaseException:
                self._remove_meta(vfid)
                os.rmdir(rest, dir_fd=shard)
                raise
        except Conflict:
            raise Conflict(f"folder {vfid} already exists on volume {self.name}") from None
        finally:
            os.close(shard)
        self._invalidate(vfid)

    async def delete_folder(self, vfid: str) -> None:
        await self._run(self._delete_folder, vfid)

    def _delete_folder(self, vfid: str) -> None:
        a, b, rest = self._shards(vfid)
        try:
            shard = open_dir(self._fd, (a, b))
        except NotFound:
            raise NotFound(f"no such folder {vfid} on volume {self.name}") from None
        try:
            if lstat_at(shard, rest) is None:
                raise NotFound(f"no such folder {vfid} on volume {self.name}")
            if self._has_image(vfid):
                quota_images.unmount(os.path.join(self.path, a, b, rest))
                os.unlink(f"{vfid}.img", dir_fd=self._images_fd)
            rmtree_at(shard, rest, vfid)
        finally:
            os.close(shard)
        self._remove_meta(vfid)
        self._invalidate(vfid)

    async def clone_folder(self, src_vfid: str, dst: AbstractVolume, dst_vfid: str) -> None:
        if not isinstance(dst, VfsVolume):
            raise InvalidAPIParameters(f"cannot clone from a {self.backend} volume to a {dst.backend} volume")
        quota = await self.get_quota(src_vfid)
        await dst.create_folder(dst_vfid, quota)
        try:
            await self._run(self._copy_into, src_vfid, dst, dst_vfid)
        except BaseException:
            await dst.delete_folder(dst_vfid)
            raise
        dst._invalidate(dst_vfid)

    def _copy_into(self, src_vfid: str, dst: VfsVolume, dst_vfid: str) -> None:
        src_fd = self._open_folder(src_vfid)
        try:
            dst_fd = dst._open_folder(dst_vfid)
            try:
                copy_tree(src_fd, dst_fd, dst.owner)
            finally:
                os.close(dst_fd)
        finally:
            os.close(src_fd)

    async def mount_path(self, vfid: str) -> str:
        os.close(await self._run(self._open_folder, vfid))
        path = os.path.join(self.path, *self._shards(vfid))
        if self._has_image(vfid):
            # Never hand out the bare directory under an image that is not mounted (its writes are unlimited).
            await self._run(quota_images.mount, self._image(vfid), path)
        return path

    async def usage(self, vfid: str) -> Usage:
        cached = self._usage.get(vfid)
        if cached is not None and time.monotonic() - cached[0] < USAGE_TTL_S:
            return cached[1]
        started = time.monotonic()
        result: Usage = await self._run(self._scan_usage, vfid)
        self._usage[vfid] = (started, result)
        return result

    def _scan_usage(self, vfid: str) -> Usage:
        fd = self._open_folder(vfid)
        try:
            count = 0
            used = 0
            seen: set[tuple[int, int]] = set()
            for ev in iter_tree(fd):
                if ev.kind == "leave" or ev.st is None:
                    continue
                count += 1
                if stat.S_ISREG(ev.st.st_mode):
                    key = (ev.st.st_dev, ev.st.st_ino)
                    if ev.st.st_nlink > 1:  # a hard-linked file is counted once
                        if key in seen:
                            continue
                        seen.add(key)
                    used += ev.st.st_size
            return Usage(count, used)
        finally:
            os.close(fd)

    async def get_quota(self, vfid: str) -> int | None:
        def read() -> int | None:
            os.close(self._open_folder(vfid))
            q = self._read_meta(vfid).get("quota")
            return q if isinstance(q, int) and not isinstance(q, bool) else None

        result: int | None = await self._run(read)
        return result

    async def set_quota(self, vfid: str, size_bytes: int | None) -> None:
        def write() -> None:
            os.close(self._open_folder(vfid))
            meta = self._read_meta(vfid)
            meta["quota"] = size_bytes
            if size_bytes and self._has_image(vfid):
                # The image grows (a smaller quota is enforced on uploads, the image keeps its size).
                try:
                    quota_images.grow(self._image(vfid), os.path.join(self.path, *self._shards(vfid)), size_bytes)
                except quota_images.ImageBusy as e:
                    raise Conflict(f"The folder's quota cannot grow now: {e.strerror}.") from None
            self._write_meta(vfid, meta)

        await self._run(write)

    # ------------------------------------------------------------------------------------------ files

    async def mkdir(self, vfid: str, relpath: str, *, parents: bool, exist_ok: bool) -> None:
        parts = split_relpath(relpath, allow_root=False)
        await self._run(self._mkdir, vfid, parts, parents, exist_ok)
        self._invalidate(vfid)

    def _mkdir(self, vfid: str, parts: tuple[str, ...], parents: bool, exist_ok: bool) -> None:
        root = self._open_folder(vfid)
        try:
            parent = open_dir(root, parts[:-1], create=self.owner if parents else None)
        finally:
            os.close(root)
        shown = "/".join(parts)
        try:
            try:
                os.close(mkdir_at(parent, parts[-1], self.owner, 0o755, shown))
            except Conflict:
                st = lstat_at(parent, parts[-1])
                if not exist_ok or st is None or not stat.S_ISDIR(st.st_mode):
                    raise Conflict(f"already exists: {shown}") from None
        finally:
            os.close(parent)

    async def list_dir(self, vfid: str, relpath: str, limit: int) -> tuple[list[dict[str, Any]], bool]:
        parts = split_relpath(relpath)
        result: tuple[list[dict[str, Any]], bool] = await self._run(self._list_dir, vfid, parts, limit)
        return result

    def _list_dir(self, vfid: str, parts: tuple[str, ...], limit: int) -> tuple[list[dict[str, Any]], bool]:
        root = self._open_folder(vfid)
        try:
            fd = open_dir(root, parts)
        finally:
            os.close(root)
        items: list[dict[str, Any]] = []
        truncated = False
        try:
            with os.scandir(fd) as it:
                for entry in it:
                    if len(items) >= limit:
                        truncated = True
                        break
                    try:
                        st = entry.stat(follow_symlinks=False)
                    except FileNotFoundError:
                        continue
                    items.append(self._describe(fd, entry.name, st))
        finally:
            os.close(fd)
        items.sort(key=lambda i: i["name"])
        return items, truncated

    @staticmethod
    def _describe(dir_fd: int, name: str, st: os.stat_result) -> dict[str, Any]:
        if stat.S_ISDIR(st.st_mode):
            kind = "DIRECTORY"
        elif stat.S_ISLNK(st.st_mode):
            kind = "SYMLINK"
        else:
            kind = "FILE"
        item: dict[str, Any] = {
            "name": _display(name),
            "type": kind,
            "stat": {
                "mode": st.st_mode,
                "size": st.st_size,
                "created": _iso(st.st_ctime),
                "modified": _iso(st.st_mtime),
            },
        }
        if _display(name) != name:
            item["name_undecodable"] = True
        if kind == "SYMLINK":
            try:
                item["symlink_target"] = _display(os.readlink(name, dir_fd=dir_fd))
            except OSError:
                item["symlink_target"] = ""
        elif kind == "FILE" and not stat.S_ISREG(st.st_mode):
            item["special"] = True  # a FIFO, socket or device node: listed, never opened
        return item

    def _open_parent(self, vfid: str, parts: tuple[str, ...], create: bool = False) -> int:
        root = self._open_folder(vfid)
        try:
            return open_dir(root, parts[:-1], create=self.owner if create else None)
        finally:
            os.close(root)

    async def rename(self, vfid: str, relpath: str, new_name: str) -> None:
        parts = split_relpath(relpath, allow_root=False)
        new = check_name(new_name, "new_name")
        await self._run(self._rename, vfid, parts, new)
        self._invalidate(vfid)

    def _rename(self, vfid: str, parts: tuple[str, ...], new: str) -> None:
        parent = self._open_parent(vfid, parts)
        try:
            self._rename_at(parent, parts[-1], parent, new, "/".join(parts), "/".join((*parts[:-1], new)))
        finally:
            os.close(parent)

    @staticmethod
    def _rename_at(src_fd: int, src: str, dst_fd: int, dst: str, src_shown: str, dst_shown: str) -> None:
        if lstat_at(src_fd, src) is None:
            raise NotFound(f"no such file or directory: {src_shown}")
        if lstat_at(dst_fd, dst) is not None:
            raise Conflict(f"already exists: {dst_shown}")
        try:
            os.rename(src, dst, src_dir_fd=src_fd, dst_dir_fd=dst_fd)
        except OSError as e:
            fs_error(e, src_shown)

    async def move(self, vfid: str, src_relpath: str, dst_relpath: str) -> None:
        src = split_relpath(src_relpath, allow_root=False)
        dst = split_relpath(dst_relpath, allow_root=False)
        if dst[: len(src)] == src:
            raise InvalidAPIParameters("cannot move a directory into itself")
        await self._run(self._move, vfid, src, dst)
        self._invalidate(vfid)

    def _move(self, vfid: str, src: tuple[str, ...], dst: tuple[str, ...]) -> None:
        sp = self._open_parent(vfid, src)
        try:
            if lstat_at(sp, src[-1]) is None:
                raise NotFound(f"no such file or directory: {'/'.join(src)}")
            dp = self._open_parent(vfid, dst, create=True)
            try:
                self._rename_at(sp, src[-1], dp, dst[-1], "/".join(src), "/".join(dst))
            finally:
                os.close(dp)
        finally:
            os.close(sp)

    async def delete_files(self, vfid: str, relpaths: list[str], *, recursive: bool) -> None:
        paths = [split_relpath(p, allow_root=False) for p in relpaths]
        try:
            await self._run(self._delete_files, vfid, paths, recursive)
        finally:
            self._invalidate(vfid)

    def _delete_files(self, vfid: str, paths: list[tuple[str, ...]], recursive: bool) -> None:
        root = self._open_folder(vfid)
        try:
            # Check every path first so that a bad one deletes nothing.
            for parts in paths:
                shown = "/".join(parts)
                parent = open_dir(root, parts[:-1])
                try:
                    st = lstat_at(parent, parts[-1])
                finally:
                    os.close(parent)
                if st is None:
                    raise NotFound(f"no such file or directory: {shown}")
                if stat.S_ISDIR(st.st_mode) and not recursive:
                    raise InvalidAPIParameters(f"{shown} is a directory: pass recursive=true to delete it")
            for parts in paths:
                shown = "/".join(parts)
                try:
                    parent = open_dir(root, parts[:-1])
                except NotFound:
                    continue  # its parent was deleted by an earlier path of this request
                try:
                    if lstat_at(parent, parts[-1]) is not None:
                        rmtree_at(parent, parts[-1], shown)
                finally:
                    os.close(parent)
        finally:
            os.close(root)

    # ------------------------------------------------------------------------------------------ transfers

    async def check_upload(self, vfid: str, relpath: str, size: int) -> str:
        parts = split_relpath(relpath, allow_root=False)
        if size > self.max_upload_size:
            raise PayloadTooLarge(f"{size} bytes is more than the largest upload allowed ({self.max_upload_size})")
        existing: int = await self._run(self._upload_target_size, vfid, parts)
        await self._check_quota(vfid, size - existing)
        return "/".join(parts)

    async def _check_quota(self, vfid: str, growth: int) -> None:
        quota = await self.get_quota(vfid)
        if quota is None:
            return
        used = (await self.usage(vfid)).used_bytes
        if used + growth > quota:
            raise PayloadTooLarge(
                f"the folder quota is {quota} bytes and {used} are used; {max(growth, 0)} more do not fit"
            )

    def _upload_target_size(self, vfid: str, parts: tuple[str, ...]) -> int:
        """Bytes freed by replacing what is at ``parts`` (0 if nothing); refuses directories and paths
        through symlinks."""
        root = self._open_folder(vfid)
        try:
            try:
                parent = open_dir(root, parts[:-1])
            except NotFound:
                return 0  # parents are created when the upload completes
        finally:
            os.close(root)
        try:
            st = lstat_at(parent, parts[-1])
        finally:
            os.close(parent)
        if st is None:
            return 0
        if stat.S_ISDIR(st.st_mode):
            raise Conflict(f"a directory exists at {'/'.join(parts)}")
        return st.st_size if stat.S_ISREG(st.st_mode) and st.st_nlink == 1 else 0

    @staticmethod
    def _check_session(session: str) -> str:
        if not isinstance(session, str) or not _SESSION_RE.match(session):
            raise InvalidAPIParameters("malformed upload session id")
        return session

    def upload_fd(self, session: str) -> tuple[int, int]:
        name = self._check_session(session)
        fd = os.open(
            name, os.O_WRONLY | os.O_CREAT | os.O_APPEND | os.O_NOFOLLOW | os.O_CLOEXEC, 0o600, dir_fd=self._upload_fd
        )
        return fd, os.fstat(fd).st_size

    def upload_size(self, session: str) -> int:
        st = lstat_at(self._upload_fd, self._check_session(session))
        return st.st_size if st is not None and stat.S_ISREG(st.st_mode) else 0

    async def finish_upload(self, vfid: str, relpath: str, session: str, size: int) -> None:
        parts = split_relpath(relpath, allow_root=False)
        name = self._check_session(session)
        try:
            existing: int = await self._run(self._upload_target_size, vfid, parts)
            await self._check_quota(vfid, size - existing)
            await self._run(self._place_upload, vfid, parts, name)
        except BaseException:
            await self.discard_upload(session)
            raise
        finally:
            self._invalidate(vfid)

    def _place_upload(self, vfid: str, parts: tuple[str, ...], name: str) -> None:
        parent = self._open_parent(vfid, parts, create=True)
        try:
            fd = os.open(name, os.O_RDONLY | os.O_NOFOLLOW | os.O_CLOEXEC, dir_fd=self._upload_fd)
            try:
                self.owner.apply(fd)
                os.fchmod(fd, 0o644)
            finally:
                os.close(fd)
            try:
                try:
                    # rename() replaces a file or a symlink at the target itself; it never follows one.
                    os.rename(name, parts[-1], src_dir_fd=self._upload_fd, dst_dir_fd=parent)
                except OSError as e:
                    if e.errno != errno.EXDEV:
                        raise
                    self._copy_upload(name, parent, parts[-1])  # the folder is a quota image of its own
            except OSError as e:
                if e.errno in (errno.EISDIR, errno.ENOTEMPTY, errno.EEXIST):
                    raise Conflict(f"a directory exists at {'/'.join(parts)}") from None
                fs_error(e, "/".join(parts))
        finally:
            os.close(parent)

    def _copy_upload(self, name: str, parent: int, target: str) -> None:
        """Move an upload into a folder on another file system: copied to a new hidden file beside the
        target, then renamed over it (so an existing file or symlink is replaced, never written through)."""
        tmp = f".upload-{secrets.token_hex(8)}"
        src = os.open(name, os.O_RDONLY | os.O_NOFOLLOW | os.O_CLOEXEC, dir_fd=self._upload_fd)
        try:
            dst = os.open(
                tmp, os.O_WRONLY | os.O_CREAT | os.O_EXCL | os.O_NOFOLLOW | os.O_CLOEXEC, 0o644, dir_fd=parent
            )
            try:
                try:
                    self.owner.apply(dst)
                    size = os.fstat(src).st_size
                    while size > 0:
                        n = os.sendfile(dst, src, None, min(size, 1 << 30))
                        if n == 0:
                            break
                        size -= n
                finally:
                    os.close(dst)
                os.rename(tmp, target, src_dir_fd=parent, dst_dir_fd=parent)
            except BaseException:
                os.unlink(tmp, dir_fd=parent)
                raise
        except OSError as e:
            if e.errno in (errno.ENOSPC, errno.EDQUOT):
                raise PayloadTooLarge("the folder's file system is full (its quota)") from None
            raise
        finally:
            os.close(src)
        os.unlink(name, dir_fd=self._upload_fd)

    async def discard_upload(self, session: str) -> None:
        try:
            os.unlink(self._check_session(session), dir_fd=self._upload_fd)
        except FileNotFoundError:
            pass

    async def open_download(self, vfid: str, relpath: str) -> DownloadTarget:
        parts = split_relpath(relpath)
        target: DownloadTarget = await self._run(self._open_download, vfid, parts)
        return target

    def _open_download(self, vfid: str, parts: tuple[str, ...]) -> DownloadTarget:
        root = self._open_folder(vfid)
        if not parts:
            return DownloadTarget(root, os.fstat(root), "")
        try:
            parent = open_dir(root, parts[:-1])
        finally:
            os.close(root)
        shown = "/".join(parts)
        try:
            st = lstat_at(parent, parts[-1])
            if st is None:
                raise NotFound(f"no such file or directory: {shown}")
            if stat.S_ISDIR(st.st_mode):
                fd = os.open(parts[-1], DIR_FLAGS, dir_fd=parent)
                return DownloadTarget(fd, os.fstat(fd), parts[-1])
            if stat.S_ISLNK(st.st_mode):
                raise PathRefused(f"is a symbolic link (not followed): {shown}")
            fd, fst = open_regular(parent, parts[-1], shown)
            return DownloadTarget(fd, fst, parts[-1])
        except OSError as e:
            fs_error(e, shown)
        finally:
            os.close(parent)
