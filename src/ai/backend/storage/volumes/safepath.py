"""File operations inside a folder that code in a session controls, done only through directory descriptors.

The proxy runs as root and folders are mounted read-write into untrusted containers, so anything inside a
folder may be a symlink (to ``/``, ``/etc``, another folder), a FIFO, a device node, a hard link, or be
swapped for one of those between two system calls. Therefore:

* a ``relpath`` is split and checked (:func:`split_relpath`): no ``..``, no absolute paths, no NUL or other
  control characters, no empty components; Unicode is normalised to NFC;
* it is resolved one component at a time from an ``O_DIRECTORY | O_NOFOLLOW`` descriptor of the folder
  root (``openat``), so no symlink is ever followed, not even as the last component;
* regular files are opened through an ``O_PATH | O_NOFOLLOW`` descriptor whose type is checked before the
  file is really opened (through ``/proc/self/fd``), so a FIFO or device node is never opened at all;
* recursive walks (delete, clone, usage, archives) hold descriptors, never paths, and never descend into a
  symlink; new files and directories are ``fchown``-ed to the configured owner through their descriptor.

Hard links are harmless here: a link can only point to a file on the same mount inside the container (links
across bind mounts fail with ``EXDEV``), uploads write a new file and rename it over the old name (never
writing through an existing inode), and deletes only remove the name.
"""

from __future__ import annotations

import errno
import itertools
import os
import secrets
import stat
import unicodedata
from collections.abc import Iterator
from dataclasses import dataclass
from typing import NoReturn

from ai.backend.common.problems import Conflict, Forbidden, InvalidAPIParameters, NotFound, ProblemError

__all__ = [
    "MAX_DEPTH",
    "Owner",
    "PathRefused",
    "WalkEvent",
    "check_name",
    "copy_tree",
    "fs_error",
    "iter_tree",
    "copy_file_fd",
    "lstat_at",
    "mkdir_at",
    "open_dir",
    "open_dir_at",
    "open_regular",
    "rmtree_at",
    "split_relpath",
]

DIR_FLAGS = os.O_RDONLY | os.O_DIRECTORY | os.O_NOFOLLOW | os.O_CLOEXEC
MAX_NAME_BYTES = 255
MAX_PATH_BYTES = 4096
# Deepest directory a walk descends into (each level holds two descriptors). Deeper trees are still
# deleted completely (see rmtree_at); usage counts and archives stop there; clones refuse.
MAX_DEPTH = 256
_COPY_CHUNK = 1 << 20


class PathRefused(InvalidAPIParameters):
    """A path that is malformed or would leave the folder (400)."""

    slug, title = "invalid-path", "Invalid or unsafe path"


@dataclass(frozen=True)
class Owner:
    """Who owns what the proxy creates; ``enabled`` is False when the proxy cannot chown (not root)."""

    uid: int
    gid: int
    enabled: bool = True

    def apply(self, fd: int) -> None:
        if self.enabled:
            os.fchown(fd, self.uid, self.gid)

    def apply_link(self, dir_fd: int, name: str) -> None:
        if self.enabled:
            os.chown(name, self.uid, self.gid, dir_fd=dir_fd, follow_symlinks=False)


def check_name(name: str, what: str = "name") -> str:
    """A single path component, NFC-normalised; refuses separators, ``.``/``..``, control characters."""
    if not isinstance(name, str):
        raise PathRefused(f"{what} must be a string")
    name = unicodedata.normalize("NFC", name)
    if name in ("", ".", ".."):
        raise PathRefused(f"{what} {name!r} is not allowed")
    if "/" in name:
        raise PathRefused(f"{what} must be a single name without '/'")
    for ch in name:
        cat = unicodedata.category(ch)
        if cat == "Cc":
            raise PathRefused(f"{what} contains a control character (U+{ord(ch):04X})")
        if cat == "Cs":
            raise PathRefused(f"{what} contains an unpaired surrogate")
    if len(name.encode("utf-8")) > MAX_NAME_BYTES:
        raise PathRefused(f"{what} is longer than {MAX_NAME_BYTES} bytes")
    return name


def split_relpath(relpath: str, *, allow_root: bool = True) -> tuple[str, ...]:
    """The checked components of a folder-relative path (``()`` is the folder root: ``""`` or ``"."``).

    A trailing ``/`` is accepted; ``..``, a leading ``/``, empty or ``.`` components inside the path are not.
    """
    if not isinstance(relpath, str):
        raise PathRefused("relpath must be a string")
    if "\x00" in relpath:
        raise PathRefused("the path contains a NUL character")
    if len(relpath.encode("utf-8", "surrogatepass")) > MAX_PATH_BYTES:
        raise PathRefused(f"the path is longer than {MAX_PATH_BYTES} bytes")
    if relpath.startswith("/"):
        raise PathRefused("the path must be relative to the folder root")
    stripped = relpath[:-1] if relpath.endswith("/") and relpath != "/" else relpath
    if stripped in ("", "."):
        if not allow_root:
            raise PathRefused("this operation needs a path inside the folder, not its root")
        return ()
    parts = stripped.split("/")
    for p in parts:
        if p == "..":
            raise PathRefused("'..' is not allowed in paths")
        if p in ("", "."):
            raise PathRefused("empty or '.' components are not allowed in paths")
    return tuple(check_name(p, "path component") for p in parts)


def fs_error(e: OSError, shown: str) -> NoReturn:
    """Raise the problem matching a failed system call on ``shown`` (a folder-relative path)."""
    code = e.errno
    problem: ProblemError
    if code == errno.ENOENT:
        problem = NotFound(f"no such file or directory: {shown}")
    elif code in (errno.EEXIST, errno.ENOTEMPTY):
        problem = Conflict(f"already exists or not empty: {shown}")
    elif code == errno.ENOTDIR:
        problem = PathRefused(f"not a directory (or a symbolic link): {shown}")
    elif code == errno.ELOOP:
        problem = PathRefused(f"symbolic links are not followed: {shown}")
    elif code == errno.EISDIR:
        problem = Conflict(f"is a directory: {shown}")
    elif code == errno.ENAMETOOLONG:
        problem = PathRefused(f"name too long: {shown}")
    elif code == errno.EINVAL:
        problem = PathRefused(f"invalid operation on {shown} (moving a directory into itself?)")
    elif code == errno.EXDEV:
        problem = PathRefused(f"cannot move across file systems: {shown}")
    elif code in (errno.EACCES, errno.EPERM, errno.EROFS):
        problem = Forbidden(f"permission denied: {shown}")
    elif code in (errno.ENOSPC, errno.EDQUOT):
        problem = Forbidden(f"no space left on the volume: {shown}")
    else:
        raise e
    raise problem from None


def lstat_at(dir_fd: int, name: str) -> os.stat_result | None:
    """``fstatat(..., AT_SYMLINK_NOFOLLOW)``, or None when the name does not exist."""
    try:
        return os.stat(name, dir_fd=dir_fd, follow_symlinks=False)
    except FileNotFoundError:
        return None


def open_dir_at(dir_fd: int, name: str, shown: str | None = None) -> int:
    """A descriptor of the directory ``name`` in ``dir_fd``; a symlink (or anything else) is refused."""
    try:
        return os.open(name, DIR_FLAGS, dir_fd=dir_fd)
    except OSError as e:
        if e.errno == errno.ENOTDIR:
            st = lstat_at(dir_fd, name)
            if st is not None and stat.S_ISLNK(st.st_mode):
                raise PathRefused(f"symbolic links are not followed: {shown or name}") from None
        fs_error(e, shown or name)


def mkdir_at(dir_fd: int, name: str, owner: Owner, mode: int = 0o755, shown: str | None = None) -> int:
    """Create directory ``name`` in ``dir_fd``, chown it, and return its descriptor."""
    try:
        os.mkdir(name, mode, dir_fd=dir_fd)
    except OSError as e:
        fs_error(e, shown or name)
    fd = open_dir_at(dir_fd, name, shown)
    try:
        owner.apply(fd)
        os.fchmod(fd, mode)
    except BaseException:
        os.close(fd)
        raise
    return fd


def open_dir(root_fd: int, parts: tuple[str, ...], *, create: Owner | None = None) -> int:
    """A new descriptor of the directory ``parts`` below ``root_fd``, opened one component at a time.

    With ``create``, missing directories are made (owned by ``create``). The caller closes the result.
    """
    fd = os.dup(root_fd)
    try:
        for i, name in enumerate(parts):
            shown = "/".join(parts[: i + 1])
            try:
                nxt = os.open(name, DIR_FLAGS, dir_fd=fd)
            except FileNotFoundError:
                if create is None:
                    raise NotFound(f"no such directory: {shown}") from None
                try:
                    nxt = mkdir_at(fd, name, create, shown=shown)
                except Conflict:  # created concurrently: open what is there now (still without following)
                    nxt = open_dir_at(fd, name, shown)
            except OSError as e:
                if e.errno == errno.ENOTDIR:
                    st = lstat_at(fd, name)
                    if st is not None and stat.S_ISLNK(st.st_mode):
                        raise PathRefused(f"symbolic links are not followed: {shown}") from None
                fs_error(e, shown)
            os.close(fd)
            fd = nxt
        return fd
    except BaseException:
        os.close(fd)
        raise


def open_regular(dir_fd: int, name: str, shown: str) -> tuple[int, os.stat_result]:
    """Open the regular file ``name`` for reading without following a symlink and without ever opening a
    FIFO, socket or device node (their ``open`` can block or have side effects)."""
    try:
        pfd = os.open(name, os.O_PATH | os.O_NOFOLLOW | os.O_CLOEXEC, dir_fd=dir_fd)
    except OSError as e:
        fs_error(e, shown)
    try:
        st = os.fstat(pfd)
        if stat.S_ISLNK(st.st_mode):
            raise PathRefused(f"is a symbolic link (not followed): {shown}")
        if stat.S_ISDIR(st.st_mode):
            raise PathRefused(f"is a directory: {shown}")
        if not stat.S_ISREG(st.st_mode):
            raise PathRefused(f"not a regular file: {shown}")
        # Re-open the very inode checked above; /proc/self/fd/N of an O_PATH descriptor cannot be redirected.
        fd = os.open(f"/proc/self/fd/{pfd}", os.O_RDONLY | os.O_CLOEXEC)
    finally:
        os.close(pfd)
    st2 = os.fstat(fd)
    if (st2.st_dev, st2.st_ino) != (st.st_dev, st.st_ino) or not stat.S_ISREG(st2.st_mode):
        os.close(fd)
        raise PathRefused(f"the file changed while being opened: {shown}")
    return fd, st2


# ---------------------------------------------------------------------------------------------- walks


@dataclass
class WalkEvent:
    """One step of :func:`iter_tree`.

    ``kind``: ``"entry"`` (a non-directory, or a directory that could not be entered), ``"enter"`` (a directory,
    now open as ``fd``), ``"leave"`` (done with the last entered directory) or ``"too-deep"``. ``dir_fd`` is the
    descriptor of the directory holding ``name``; ``parts`` is the entry's path from the walk's root.
    """

    kind: str
    parts: tuple[str, ...]
    dir_fd: int
    name: str
    st: os.stat_result | None
    fd: int = -1


def iter_tree(root_fd: int, *, max_depth: int = MAX_DEPTH) -> Iterator[WalkEvent]:
    """Walk the tree below ``root_fd`` (pre-order) through descriptors, never following symlinks."""
    stack: list[tuple[int, Iterator[os.DirEntry[str]], tuple[str, ...]]] = []
    top = os.dup(root_fd)
    stack.append((top, os.scandir(top), ()))
    try:
        while stack:
            fd, it, prefix = stack[-1]
            entry = next(it, None)
            if entry is None:
                stack.pop()
                it.close()  # type: ignore[attr-defined]
                os.close(fd)
                if stack:
                    yield WalkEvent("leave", prefix, stack[-1][0], prefix[-1] if prefix else "", None)
                continue
            name = entry.name
            parts = (*prefix, name)
            try:
                st = entry.stat(follow_symlinks=False)
            except FileNotFoundError:
                continue  # removed while we walked
            if not stat.S_ISDIR(st.st_mode):
                yield WalkEvent("entry", parts, fd, name, st)
                continue
            if len(stack) >= max_depth:
                yield WalkEvent("too-deep", parts, fd, name, st)
                continue
            try:
                child = os.open(name, DIR_FLAGS, dir_fd=fd)
            except OSError:
                # Swapped for a symlink or removed after the scan: report it as a plain entry.
                yield WalkEvent("entry", parts, fd, name, lstat_at(fd, name))
                continue
            try:
                child_it = os.scandir(child)
            except OSError:
                os.close(child)
                yield WalkEvent("entry", parts, fd, name, st)
                continue
            stack.append((child, child_it, parts))
            yield WalkEvent("enter", parts, fd, name, st, child)
    finally:
        for fd, it, _ in stack:
            it.close()  # type: ignore[attr-defined]
            os.close(fd)


def rmtree_at(parent_fd: int, name: str, shown: str) -> None:
    """Remove ``name`` (a file, a symlink or a whole directory tree) from ``parent_fd`` through descriptors.

    Trees deeper than :data:`MAX_DEPTH` are cut: the too-deep subdirectory is moved up to the top of the tree
    being removed (a rename on the same file system) and removed from there, so depth never exhausts
    descriptors or the stack.
    """
    try:
        os.unlink(name, dir_fd=parent_fd)
        return
    except IsADirectoryError:
        pass
    except OSError as e:
        fs_error(e, shown)
    top = open_dir_at(parent_fd, name, shown)
    stack: list[tuple[int, str]] = [(top, name)]
    try:
        while stack:
            fd, _ = stack[-1]
            with os.scandir(fd) as it:
                batch = list(itertools.islice(it, 512))
            if not batch:
                _, done_name = stack.pop()
                os.close(fd)
                try:
                    os.rmdir(done_name, dir_fd=stack[-1][0] if stack else parent_fd)
                except FileNotFoundError:
                    pass
                continue
            progress = False
            for entry in batch:
                if not entry.is_dir(follow_symlinks=False):
                    progress |= _unlink_quiet(fd, entry.name)
                    continue
                if len(stack) >= MAX_DEPTH:
                    os.rename(entry.name, f".bai-rm-{secrets.token_hex(8)}", src_dir_fd=fd, dst_dir_fd=top)
                    progress = True
                    continue
                try:
                    child = os.open(entry.name, DIR_FLAGS, dir_fd=fd)
                except OSError as e:
                    if e.errno not in (errno.ENOTDIR, errno.ELOOP, errno.ENOENT):
                        raise
                    progress |= _unlink_quiet(fd, entry.name)  # swapped for a non-directory meanwhile
                    continue
                stack.append((child, entry.name))
                progress = True
                break
            if not progress:
                raise OSError(errno.EBUSY, "cannot remove the entries of a directory")
    except OSError as e:
        fs_error(e, shown)
    finally:
        for fd, _ in stack:
            os.close(fd)


def _unlink_quiet(dir_fd: int, name: str) -> bool:
    """Unlink a non-directory; False when it turned into a directory after the scan (seen on the next one)."""
    try:
        os.unlink(name, dir_fd=dir_fd)
    except FileNotFoundError:
        pass
    except IsADirectoryError:
        return False
    return True


def copy_file_fd(src: int, dst: int, limit: int | None = None) -> int:
    """Copy ``src`` to ``dst`` (both descriptors, from their current offsets); at most ``limit`` bytes."""
    copied = 0
    use_cfr = hasattr(os, "copy_file_range")
    while limit is None or copied < limit:
        want = _COPY_CHUNK * 8 if limit is None else min(_COPY_CHUNK * 8, limit - copied)
        if use_cfr:
            try:
                n = os.copy_file_range(src, dst, want)
            except OSError as e:
                if e.errno not in (errno.EXDEV, errno.ENOSYS, errno.EINVAL, errno.EOPNOTSUPP):
                    raise
                use_cfr = False
                continue
        else:
            data = os.read(src, min(want, _COPY_CHUNK))
            n = len(data)
            view = memoryview(data)
            while view:
                view = view[os.write(dst, view) :]
        if n == 0:
            break
        copied += n
    return copied


def copy_tree(src_root: int, dst_root: int, owner: Owner) -> None:
    """Copy everything below ``src_root`` into the (empty) directory ``dst_root``.

    Directories and regular files are copied (permission bits without setuid/setgid), symlinks are
    copied as links (never followed), FIFOs, sockets and device nodes are skipped. A tree deeper than
    :data:`MAX_DEPTH` is refused (the caller removes the partial copy).
    """
    dst_stack = [os.dup(dst_root)]
    try:
        for ev in iter_tree(src_root):
            shown = "/".join(ev.parts)
            dst = dst_stack[-1]
            if ev.kind == "leave":
                os.close(dst_stack.pop())
                continue
            if ev.kind == "too-deep":
                raise PathRefused(f"the folder is nested too deeply to copy (more than {MAX_DEPTH} levels): {shown}")
            st = ev.st
            if st is None:
                continue
            mode = stat.S_IMODE(st.st_mode) & 0o777
            if ev.kind == "enter":
                dst_stack.append(mkdir_at(dst, ev.name, owner, mode | 0o700, shown))
            elif stat.S_ISLNK(st.st_mode):
                try:
                    target = os.readlink(ev.name, dir_fd=ev.dir_fd)
                except OSError:
                    continue  # replaced meanwhile
                os.symlink(target, ev.name, dir_fd=dst)
                owner.apply_link(dst, ev.name)
            elif stat.S_ISREG(st.st_mode):
                try:
                    sfd, sst = open_regular(ev.dir_fd, ev.name, shown)
                except (PathRefused, NotFound):
                    continue  # replaced by something else meanwhile
                try:
                    dfd = os.open(
                        ev.name, os.O_WRONLY | os.O_CREAT | os.O_EXCL | os.O_NOFOLLOW | os.O_CLOEXEC, 0o600, dir_fd=dst
                    )
                    try:
                        owner.apply(dfd)
                        copy_file_fd(sfd, dfd)
                        os.fchmod(dfd, mode)
                        os.utime(dfd, ns=(sst.st_atime_ns, sst.st_mtime_ns))
                    finally:
                        os.close(dfd)
                finally:
                    os.close(sfd)
            # FIFOs, sockets, device nodes: skipped on purpose.
    except OSError as e:
        fs_error(e, "(clone)")
    finally:
        for fd in dst_stack:
            os.close(fd)
