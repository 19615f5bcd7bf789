"""Files a run creates or modifies in ``/home/work/.output``: the ``files`` of its ``finished`` result.

This platform has no object storage, so each file's ``url`` is an RFC 2397 ``data:`` URI holding
the file itself (rest-api.md §2.9 names an S3 URL).  Entries are ``{"name": path relative to
.output, "url": "data:<mime>;base64,...", "size": bytes}``; a file over ``MAX_FILE_BYTES``, or one
that would take the run past ``MAX_RUN_BYTES``, is listed with ``"url": null``.

Symbolic links are never followed: linked files and directories inside ``.output`` are skipped,
and nothing is reported when ``.output`` itself is a link.  Only the standard library is used.
"""

from __future__ import annotations

import base64
import mimetypes
import os
import stat
from typing import Any

__all__ = ["MAX_FILE_BYTES", "MAX_FILES", "MAX_RUN_BYTES", "OUTPUT_DIR", "OutputWatcher"]

OUTPUT_DIR = ".output"
MAX_FILE_BYTES = 1024 * 1024
MAX_RUN_BYTES = 5 * 1024 * 1024
#: At most this many entries are scanned and reported per run.
MAX_FILES = 1000

_Stamp = tuple[int, int, int]  # (inode, size, mtime_ns)


def _scan(root: str) -> dict[str, _Stamp]:
    """Regular files under ``root`` (not following links) and their stamps."""
    found: dict[str, _Stamp] = {}
    try:
        if not stat.S_ISDIR(os.lstat(root).st_mode):
            return found
    except OSError:
        return found
    pending = [""]
    while pending and len(found) < MAX_FILES:
        rel_dir = pending.pop()
        try:
            entries = sorted(os.scandir(os.path.join(root, rel_dir)), key=lambda e: e.name)
        except OSError:
            continue
        for entry in entries:
            rel = os.path.join(rel_dir, entry.name) if rel_dir else entry.name
            try:
                if entry.is_dir(follow_symlinks=False):
                    pending.append(rel)
                elif entry.is_file(follow_symlinks=False):
                    st = entry.stat(follow_symlinks=False)
                    found[rel] = (st.st_ino, st.st_size, st.st_mtime_ns)
            except OSError:
                continue
            if len(found) >= MAX_FILES:
                break
    return found


def _open_beneath(root: str, rel: str) -> int:
    """Open ``root/rel`` read-only, refusing a symbolic link at every step of the path."""
    flags = os.O_RDONLY | os.O_NOFOLLOW
    fd = os.open(root, flags | os.O_DIRECTORY)
    try:
        *dirs, last = rel.split(os.sep)
        for part in dirs:
            next_fd = os.open(part, flags | os.O_DIRECTORY, dir_fd=fd)
            os.close(fd)
            fd = next_fd
        return os.open(last, flags | os.O_NONBLOCK, dir_fd=fd)
    finally:
        os.close(fd)


def _read_regular(root: str, rel: str, limit: int) -> bytes | None:
    """The file's bytes if it is still a regular file of at most ``limit`` bytes (never via a link)."""
    try:
        fd = _open_beneath(root, rel)
    except OSError:
        return None
    try:
        st = os.fstat(fd)
        if not stat.S_ISREG(st.st_mode) or st.st_size > limit:
            return None
        chunks = []
        remaining = limit + 1
        while remaining > 0:
            chunk = os.read(fd, min(remaining, 1 << 20))
            if not chunk:
                break
            chunks.append(chunk)
            remaining -= len(chunk)
        data = b"".join(chunks)
        return data if len(data) <= limit else None
    finally:
        os.close(fd)


def _mime(name: str) -> str:
    mime, _ = mimetypes.guess_type(name, strict=False)
    return mime or "application/octet-stream"


class OutputWatcher:
    """Remembers ``.output`` at the start of a run and reports what changed at its end."""

    def __init__(self, workdir: str) -> None:
        self.root = os.path.join(workdir, OUTPUT_DIR)
        try:
            os.mkdir(self.root, 0o755)  # so that user code can simply write into it
        except OSError:
            pass
        self._before = _scan(self.root)

    def collect(self) -> list[dict[str, Any]]:
        """Files created or modified since the watcher was made, as Execution Result File Objects."""
        after = _scan(self.root)
        changed = [name for name, stamp in sorted(after.items()) if self._before.get(name) != stamp]
        self._before = after  # a second collect() reports only newer changes
        budget = MAX_RUN_BYTES
        files: list[dict[str, Any]] = []
        for name in changed:
            size = after[name][1]
            url: str | None = None
            if size <= min(MAX_FILE_BYTES, budget):
                data = _read_regular(self.root, name, min(MAX_FILE_BYTES, budget))
                if data is not None:
                    size = len(data)
                    budget -= size
                    url = f"data:{_mime(name)};base64,{base64.b64encode(data).decode('ascii')}"
            files.append({"name": name, "url": url, "size": size})
        return files
