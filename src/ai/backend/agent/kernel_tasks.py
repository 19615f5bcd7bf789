"""Work the agent does inside a kernel besides user requests: dotfiles, bootstrap scripts and batch tasks.

All of it goes through the kernel runner (as the unprivileged kernel user) or the Docker archive API
(resolved inside the container's root), never through host paths.
"""

from __future__ import annotations

import io
import logging
import secrets
import tarfile
import time
from collections import deque
from collections.abc import Awaitable, Callable, Iterable, Sequence
from dataclasses import dataclass
from pathlib import PurePosixPath
from typing import Any

log = logging.getLogger(__name__)

#: Where the agent puts a session's bootstrap script inside the container.
BOOTSTRAP_PATH = "/tmp/.backend.ai-bootstrap.sh"
#: Kept per kernel: the tail of its batch-task and bootstrap output.
TASK_LOG_LIMIT = 1 << 20
#: Of a container's own log (the runner's messages) in a logs answer: the last lines Docker is asked
#: for (it splits lines at 16 KiB) and the characters kept of them.
CONTAINER_LOG_LINES = 2000
CONTAINER_LOG_LIMIT = 1 << 20


def log_tail(text: str, limit: int) -> str:
    """The last ``limit`` characters of ``text``, after a note saying how many were cut."""
    if len(text) <= limit:
        return text
    return f"[log truncated: {len(text) - limit} earlier characters cut]\n" + text[-limit:]


WORKDIR = PurePosixPath("/home/work")

RunnerCall = Callable[..., Awaitable[dict[str, Any]]]


class TaskLog:
    """The most recent :data:`TASK_LOG_LIMIT` characters of a kernel's task output."""

    def __init__(self, limit: int = TASK_LOG_LIMIT) -> None:
        self._chunks: deque[str] = deque()
        self._size = 0
        self._limit = limit

    def write(self, text: str) -> None:
        if not text:
            return
        self._chunks.append(text)
        self._size += len(text)
        while self._size > self._limit and self._chunks:
            extra = self._size - self._limit
            head = self._chunks[0]
            if len(head) <= extra:
                self._chunks.popleft()
                self._size -= len(head)
            else:
                self._chunks[0] = head[extra:]
                self._size -= extra

    def text(self) -> str:
        return "".join(self._chunks)


@dataclass
class BatchOutcome:
    """How a batch run ended: its exit code (None when killed by its timeout) and whether it timed out."""

    exit_code: int | None
    timed_out: bool


async def drive_batch(
    call: RunnerCall, opts: dict[str, Any], sink: Callable[[str], None], *, run_id: str | None = None
) -> BatchOutcome:
    """Run one batch job through the runner until it finishes, feeding its console text to ``sink``."""
    rid = run_id or f"agent-{secrets.token_hex(6)}"
    res = await call("execute", mode="batch", run_id=rid, code="", opts=opts)
    while True:
        for item in res.get("console") or []:
            if isinstance(item, list) and len(item) == 2 and isinstance(item[1], str):
                sink(item[1])
        status = res.get("status")
        if status in ("finished", "exec-timeout"):
            code = res.get("exitCode")
            return BatchOutcome(code if isinstance(code, int) else None, status == "exec-timeout")
        res = await call("execute", mode="continue", run_id=rid, code="", opts=None)


def dotfile_path(path: str) -> PurePosixPath:
    """The absolute in-container path of a dotfile (relative paths are under /home/work)."""
    p = PurePosixPath(path)
    full = p if p.is_absolute() else WORKDIR / p
    if ".." in full.parts:
        raise ValueError(f"dotfile path {path!r} may not contain '..'")
    return full


def tar_archive(
    dirs: Iterable[str | tuple[str, int]], files: Iterable[tuple[str, bytes, int]], uid: int, gid: int
) -> bytes:
    """A tar for the Docker archive API: directories (mode 0755 unless given as ``(name, mode)``) and regular
    files ``(name, content, mode)``, all owned by ``uid:gid``; names are relative to where Docker extracts it."""
    buf = io.BytesIO()
    now = int(time.time())
    with tarfile.open(fileobj=buf, mode="w", format=tarfile.PAX_FORMAT) as tar:
        for entry in dirs:
            d, mode = entry if isinstance(entry, tuple) else (entry, 0o755)
            info = tarfile.TarInfo(d + "/")
            info.type, info.mode, info.uid, info.gid, info.mtime = tarfile.DIRTYPE, mode, uid, gid, now
            tar.addfile(info)
        for name, data, mode in files:
            info = tarfile.TarInfo(name)
            info.size, info.mode, info.uid, info.gid, info.mtime = len(data), mode & 0o7777, uid, gid, now
            tar.addfile(info, io.BytesIO(data))
    return buf.getvalue()


def files_tar(files: Sequence[tuple[PurePosixPath, bytes, int]], uid: int, gid: int) -> bytes:
    """A tar (extracted at ``/``) of files at absolute paths, with their missing parents below /home/work."""
    dirs = sorted(
        {
            parent
            for path, _, _ in files
            for parent in path.parents
            if parent.is_relative_to(WORKDIR) and parent != WORKDIR
        },
        key=lambda p: len(p.parts),
    )
    return tar_archive(
        [str(d.relative_to("/")) for d in dirs],
        [(str(path.relative_to("/")), data, mode) for path, data, mode in files],
        uid,
        gid,
    )


def parse_perm(perm: Any, default: int = 0o644) -> int:
    """An octal permission string such as ``"755"`` (or an int) as a mode."""
    if isinstance(perm, int) and not isinstance(perm, bool):
        return perm & 0o777
    if isinstance(perm, str) and perm.strip():
        try:
            return int(perm.strip(), 8) & 0o777
        except ValueError:
            return default
    return default
