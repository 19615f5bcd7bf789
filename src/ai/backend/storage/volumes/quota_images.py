"""Folder quotas that hold for writes from sessions: one loop-mounted ext4 image per folder with a quota.

Used by the ``vfs`` backend with ``options = { quota-images = true }`` (ADR 0009). The image of folder
``vfid`` is ``<volume>/.images/<vfid>.img`` (root's, outside every folder), mounted on the folder's
directory; sessions bind-mount that directory, so a write past the image's size fails with ENOSPC in the
container. The image is sized so that at least the quota is free in a new folder (ext4 keeps a few percent
for its own metadata). Needs root (mount, losetup).
"""

from __future__ import annotations

import os

from ai.backend.common.mounts import mount_source
from ai.backend.common.mounts import run_checked as _run
from ai.backend.common.mounts import unmount as _unmount

__all__ = ["ImageBusy", "grow", "is_mounted", "make", "mount", "unmount"]


def is_mounted(path: str) -> bool:
    try:
        return os.path.ismount(path)
    except OSError:
        return False


def mount(image: str, path: str) -> None:
    if not is_mounted(path):
        _run(["mount", "-o", "loop,nosuid,nodev", image, path])


def unmount(path: str) -> None:
    """Unmount (lazily while a session still has it: the loop device goes when the last user does)."""
    _unmount(path)


def _free(path: str) -> int:
    st = os.statvfs(path)
    return st.f_bavail * st.f_frsize


def _mkfs(image: str, size: int, uid: int, gid: int) -> None:
    with open(image, "wb") as f:
        f.truncate(size)
    # 4 KiB blocks and GDT blocks reserved for a thousandfold growth: online growth (a raised quota) then
    # works; with the 1 KiB blocks mkfs picks for small images, resize2fs refuses to grow a mounted one.
    blocks = size // 4096
    _run(
        [
            "mkfs.ext4",
            "-q",
            "-F",
            "-m",
            "0",
            "-b",
            "4096",
            "-E",
            f"root_owner={uid}:{gid},lazy_itable_init=1,resize={min(blocks * 1024, 2**32 - 1)}",
            image,
        ]
    )


def make(image: str, path: str, quota: int, uid: int, gid: int) -> None:
    """Create ``image`` for ``quota`` bytes and mount it on ``path`` (an empty directory).

    The empty file system is sized offline (made again, larger, until at least ``quota`` bytes are free),
    which needs no online resize at creation."""
    size = quota + quota // 25 + (4 << 20)
    open(image, "xb").close()
    try:
        for _ in range(4):
            _mkfs(image, size, uid, gid)
            mount(image, path)
            missing = quota - _free(path)
            if missing <= 0:
                break
            unmount(path)
            size += missing + missing // 8 + (1 << 20)
        else:
            raise OSError(f"could not size an image for a quota of {quota} bytes")
        try:
            os.rmdir(os.path.join(path, "lost+found"))  # users see the folder root: keep it empty
        except OSError:
            pass
    except BaseException:
        try:
            unmount(path)
        finally:
            os.unlink(image)
        raise


class ImageBusy(OSError):
    """The image cannot grow now: online growth is not possible here and a session has the folder mounted."""


def grow(image: str, path: str, quota: int) -> None:
    """Grow a mounted image until at least ``quota`` bytes minus what is used are free.

    Online (``resize2fs`` on the mounted loop device) where the kernel lets this process (it needs
    ``CAP_SYS_RESOURCE``); else offline, unmounting it first, which a session holding the folder prevents
    (:class:`ImageBusy`; nothing changed).
    """
    for _ in range(4):
        st = os.statvfs(path)
        used = (st.f_blocks - st.f_bfree) * st.f_frsize
        missing = quota - used - _free(path)
        if missing <= 0:
            return
        size = os.stat(image).st_size + missing + missing // 8 + (256 << 10)
        device = mount_source(path)
        old_size = os.stat(image).st_size
        os.truncate(image, size)
        _run(["losetup", "-c", device])
        try:
            _run(["resize2fs", device])
        except OSError:
            _grow_offline(image, path, old_size)


def _grow_offline(image: str, path: str, old_size: int) -> None:
    try:
        _unmount(path, lazy=False)
    except OSError as e:
        # Back to the size the file system has, so the image and the mount stay as they were.
        os.truncate(image, old_size)
        err = e.errno or 0
        raise ImageBusy(
            err, f"the folder is in use ({os.strerror(err)}); its quota can grow when no session mounts it"
        ) from None
    try:
        _run(["e2fsck", "-f", "-y", image], ok=(0, 1, 2))  # 1, 2: something was corrected
        _run(["resize2fs", image])
    finally:
        mount(image, path)
