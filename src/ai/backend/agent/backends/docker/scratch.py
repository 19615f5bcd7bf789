"""Bounded writable space for kernels: one loop-mounted ext4 image per kernel (see ADR 0009).

The container's root file system is read-only; everything a kernel may write lives in its scratch
image, ``<scratch>/scratch.img`` mounted at ``<scratch>/fs``, whose subdirectories are bind-mounted at
:data:`WRITABLE`. A write past the image's size fails with ENOSPC inside the container, and the host
file holds at most the image's size. ``/home/work`` starts as a copy of the image's own ``/home/work``
(dotfiles, matplotlib's font cache), taken once per image and given to ``mkfs.ext4 -d``.
"""

from __future__ import annotations

import logging
import os
import shutil
import subprocess
import tarfile
from pathlib import Path

from ai.backend.common.mounts import mounts_under as _mounts_under
from ai.backend.common.mounts import run_checked, unmount

log = logging.getLogger(__name__)

#: Image subdirectory -> where the container sees it. Nothing else in the container is writable
#: (but /dev/shm, a tmpfs of ``shm-size`` counted in the memory limit).
WRITABLE = {"work": "/home/work", "config": "/home/config", "tmp": "/tmp", "var-tmp": "/var/tmp"}
IMAGE_NAME = "scratch.img"
MOUNT_NAME = "fs"
TEMPLATES = ".templates"


def _umount(path: Path) -> None:
    """Unmount ``path`` (lazily when busy); the loop device goes with it (mount -o loop sets autoclear)."""
    try:
        unmount(path)
    except OSError as e:
        log.warning("could not unmount %s: %s", path, e)


class ScratchSpace:
    """Creates, measures and removes kernels' scratch images under the agent's scratch root."""

    def __init__(self, root: Path, size: int, uid: int, gid: int) -> None:
        self.root = root
        self.size = size  # bytes; 0: no scratch image (the container's writable layer, unbounded)
        self.uid = uid
        self.gid = gid

    @property
    def enabled(self) -> bool:
        return self.size > 0

    def template_dir(self, image_id: str) -> Path:
        return self.root / TEMPLATES / image_id.replace("sha256:", "")[:24]

    def make_template(self, image_id: str, home_tar: tarfile.TarFile | None) -> Path:
        """The directory given to ``mkfs.ext4 -d``: the image's ``/home/work`` (a tar of it, named
        ``work/...``) and empty ``config``, ``tmp`` and ``var-tmp``. Built once per image."""
        final = self.template_dir(image_id)
        if final.exists():
            return final
        tmp = final.with_name(f".{final.name}.{os.getpid()}.{id(home_tar)}")
        shutil.rmtree(tmp, ignore_errors=True)
        tmp.mkdir(parents=True)
        if home_tar is not None:
            members = [m for m in home_tar.getmembers() if m.name == "work" or m.name.startswith("work/")]
            home_tar.extractall(tmp, members=members, numeric_owner=True, filter="tar")
        for name, mode in (("work", 0o755), ("config", 0o755), ("tmp", 0o1777), ("var-tmp", 0o1777)):
            d = tmp / name
            d.mkdir(exist_ok=True)
            if name == "config" or (name == "work" and home_tar is None):
                os.chown(d, self.uid, self.gid)
            os.chmod(d, mode)
        try:
            tmp.rename(final)
        except OSError:  # another kernel of the image made it meanwhile
            shutil.rmtree(tmp, ignore_errors=True)
        return final

    def create(self, scratch: Path, template: Path) -> None:
        """Make and mount ``scratch``'s image (about 15 ms: the file is sparse and inode tables are lazy)."""
        image, mnt = scratch / IMAGE_NAME, scratch / MOUNT_NAME
        mnt.mkdir(parents=True, exist_ok=True)
        with open(image, "wb") as f:
            f.truncate(self.size)
        # No journal (scratch dies with its kernel) and no root-reserved blocks (kernels run as a user).
        run_checked(
            [
                "mkfs.ext4",
                "-q",
                "-F",
                "-m",
                "0",
                "-O",
                "^has_journal",
                "-E",
                "lazy_itable_init=1",
                "-d",
                str(template),
                str(image),
            ]
        )
        run_checked(["mount", "-o", "loop,nosuid,nodev", str(image), str(mnt)])
        try:
            os.rmdir(mnt / "lost+found")  # not needed without a journal to replay; keeps /home/work clean
        except OSError:
            pass

    def binds(self, scratch: Path) -> list[str]:
        return [f"{scratch / MOUNT_NAME / sub}:{target}:rw" for sub, target in WRITABLE.items()]

    def usage(self, scratch: Path) -> tuple[int, int] | None:
        """``(limit, used)`` bytes of a kernel's scratch, or None when it has no image."""
        mnt = scratch / MOUNT_NAME
        try:
            if not os.path.ismount(mnt):
                return None
            st = os.statvfs(mnt)
        except OSError:
            return None
        return self.size, (st.f_blocks - st.f_bfree) * st.f_frsize

    def remove(self, scratch: Path) -> None:
        """Unmount a kernel's image (the caller then deletes the directory, image included)."""
        for point in _mounts_under(scratch):
            _umount(point)

    def cleanup(self, keep: set[Path]) -> list[Path]:
        """Unmount and delete the scratch directories of kernels that are gone (left by a crash), and
        detach loop devices still backed by a file under the scratch root. Answers what was removed."""
        removed: list[Path] = []
        keep_resolved = {k.resolve() for k in keep}
        for point in _mounts_under(self.root):
            scratch = point.parent
            if scratch.resolve() not in keep_resolved:
                _umount(point)
        for loop in Path("/sys/block").glob("loop*"):
            try:
                backing = (loop / "loop" / "backing_file").read_text().strip()
            except OSError:
                continue
            if backing.startswith(str(self.root) + "/") and Path(backing).parent.resolve() not in keep_resolved:
                if not any(Path(p).parent == Path(backing).parent for p in _mounts_under(self.root)):
                    subprocess.run(["losetup", "-d", f"/dev/{loop.name}"], capture_output=True)
        try:
            entries = list(self.root.iterdir())
        except OSError:
            return removed
        for d in entries:
            if d.name == TEMPLATES or not d.is_dir() or d.resolve() in keep_resolved:
                continue
            if (d / IMAGE_NAME).exists() and not os.path.ismount(d / MOUNT_NAME):
                shutil.rmtree(d, ignore_errors=True)
                removed.append(d)
        return removed
