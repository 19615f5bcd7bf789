"""Folder quotas that hold for writes from sessions: one loop-mounted ext4 image per folder with a quota.

Used by the ``vfs`` backend with ``options = { quota-images = true }`` (ADR 0009). The image of folder
``vfid`` is ``<volume>/.images/<vfid>.img`` (root's, outside every folder), mounted on the folder's
directory; sessions bind-mount that directory, so a write past the image's size fails with ENOSPC in the
container. The image is sized so that at least the quota is free in a new folder (ext4 keeps a few percent
for its own metadata). Needs root (mount, losetup).
"""

from __future__ import annotations

import ctypes
import os
import subprocess

__all__ = ["grow", "is_mounted", "make", "mount", "unmount"]

_MNT_DETACH = 2
_libc = ctypes.CDLL(None, use_errno=True)


def _run(cmd: list[str]) -> None:
    out = subprocess.run(cmd, capture_output=True, text=True)
    if out.returncode != 0:
        raise OSError(f"{cmd[0]} failed: {(out.stderr or out.stdout).strip()[-300:]}")


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
    for flags in (0, _MNT_DETACH):
        if _libc.umount2(os.fsencode(path), flags) == 0:
            return
    err = ctypes.get_errno()
    if err not in (22, 2):  # EINVAL: not mounted; ENOENT: gone
        raise OSError(err, f"cannot unmount {path}: {os.strerror(err)}")


def _free(path: str) -> int:
    st = os.statvfs(path)
    return st.f_bavail * st.f_frsize


def _device(path: str) -> str:
    real = os.path.realpath(path)
    with open("/proc/self/mountinfo") as f:
        for line in f:
            fields = line.split()
            if fields[4] == real:
                return fields[fields.index("-") + 2]
    raise OSError(f"{path} is not mounted")


def make(image: str, path: str, quota: int, uid: int, gid: int) -> None:
    """Create ``image`` for ``quota`` bytes and mount it on ``path`` (an empty directory)."""
    size = quota + quota // 25 + (2 << 20)
    with open(image, "xb") as f:
        f.truncate(size)
    try:
        _run(["mkfs.ext4", "-q", "-F", "-m", "0", "-E", f"root_owner={uid}:{gid},lazy_itable_init=1", image])
        mount(image, path)
        try:
            os.rmdir(os.path.join(path, "lost+found"))  # users see the folder root: keep it empty
        except OSError:
            pass
        grow(image, path, quota)
    except BaseException:
        try:
            unmount(path)
        finally:
            os.unlink(image)
        raise


def grow(image: str, path: str, quota: int) -> None:
    """Grow a mounted image (online) until at least ``quota`` bytes minus what is used are free."""
    for _ in range(4):
        st = os.statvfs(path)
        used = (st.f_blocks - st.f_bfree) * st.f_frsize
        missing = quota - used - _free(path)
        if missing <= 0:
            return
        size = os.stat(image).st_size + missing + missing // 8 + (256 << 10)
        os.truncate(image, size)
        device = _device(path)
        _run(["losetup", "-c", device])
        _run(["resize2fs", device])
