"""Loop-mounted file-system images, as the agent (kernel scratch) and the storage proxy (folder quotas)
use them: running the tools, finding mounts in this process's ``mountinfo`` and unmounting. Needs root."""

from __future__ import annotations

import ctypes
import os
import subprocess
from pathlib import Path

__all__ = ["mount_source", "mounts_under", "run_checked", "unmount"]

_MNT_DETACH = 2
_EINVAL, _ENOENT = 22, 2
_libc = ctypes.CDLL(None, use_errno=True)


def run_checked(cmd: list[str], ok: tuple[int, ...] = (0,)) -> None:
    """Run a tool (``mkfs.ext4``, ``mount``, ``resize2fs``...); an exit status not in ``ok`` is an OSError
    with the end of what it printed."""
    out = subprocess.run(cmd, capture_output=True, text=True)
    if out.returncode not in ok:
        raise OSError(f"{cmd[0]} failed: {(out.stderr or out.stdout).strip()[-300:]}")


def unmount(path: str | os.PathLike[str], *, lazy: bool = True) -> bool:
    """Unmount ``path``; with ``lazy``, detach it when busy (the loop device goes with its last user).
    False when it was not mounted (or is gone); an OSError for any other failure."""
    for flags in (0, _MNT_DETACH) if lazy else (0,):
        if _libc.umount2(os.fsencode(path), flags) == 0:
            return True
    err = ctypes.get_errno()
    if err in (_EINVAL, _ENOENT):
        return False
    raise OSError(err, f"cannot unmount {os.fspath(path)}: {os.strerror(err)}")


def _mountinfo() -> list[list[str]]:
    try:
        return [line.split() for line in Path("/proc/self/mountinfo").read_text().splitlines()]
    except OSError:
        return []


def _point(fields: list[str]) -> str:
    return fields[4].encode().decode("unicode_escape")  # mountinfo escapes spaces and such as \\040


def mounts_under(root: str | os.PathLike[str]) -> list[Path]:
    """Mount points strictly below ``root``, deepest first."""
    prefix = os.fspath(root).rstrip("/") + "/"
    points = [Path(p) for p in (_point(f) for f in _mountinfo() if len(f) > 4) if p.startswith(prefix)]
    return sorted(points, key=lambda p: len(p.parts), reverse=True)


def mount_source(path: str | os.PathLike[str]) -> str:
    """The device mounted at ``path`` (e.g. ``/dev/loop3``); an OSError when nothing is."""
    real = os.path.realpath(path)
    for fields in _mountinfo():
        if len(fields) > 4 and _point(fields) == real and "-" in fields:
            return fields[fields.index("-") + 2]
    raise OSError(f"{os.fspath(path)} is not mounted")
