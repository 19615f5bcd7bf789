"""Zip streams of a directory, written by a thread into a bounded queue (never the whole archive in memory).

The tree is walked through descriptors (see :mod:`.volumes.safepath`): symlinks are skipped (a link in a zip
would be extracted by the client as a link pointing wherever its creator wanted), FIFOs, sockets and device
nodes are skipped, regular files are opened without following and read up to the size they had when
listed (a file growing meanwhile cannot break the zip). Entries are stored (no compression: the CPU is the
bottleneck otherwise) and ZIP64 is used for large members and archives.
"""

from __future__ import annotations

import asyncio
import concurrent.futures
import io
import logging
import os
import stat
import threading
import time
import zipfile
from collections.abc import AsyncIterator

from ai.backend.common.problems import NotFound

from .volumes.safepath import PathRefused, iter_tree, open_regular

__all__ = ["stream_zip"]

log = logging.getLogger("ai.backend.storage.archive")

CHUNK = 1 << 20
QUEUE_DEPTH = 4
_END = b""


class _Aborted(Exception):
    """The reader went away; the writer thread stops."""


class _QueueWriter(io.RawIOBase):
    """A write-only, unseekable file whose bytes go to an asyncio queue in ``CHUNK``-sized pieces."""

    def __init__(self, loop: asyncio.AbstractEventLoop, queue: asyncio.Queue[bytes], cancelled: threading.Event):
        super().__init__()
        self.loop = loop
        self.queue = queue
        self.cancelled = cancelled
        self.buf = bytearray()
        self.pos = 0

    def writable(self) -> bool:
        return True

    def tell(self) -> int:
        return self.pos

    def write(self, b: bytes | bytearray | memoryview) -> int:  # type: ignore[override]
        n = len(b)
        self.buf += b
        self.pos += n
        if len(self.buf) >= CHUNK:
            self.push(bytes(self.buf))
            self.buf.clear()
        return n

    def flush(self) -> None:
        pass

    def push(self, chunk: bytes) -> None:
        fut = asyncio.run_coroutine_threadsafe(self.queue.put(chunk), self.loop)
        while True:
            if self.cancelled.is_set():
                fut.cancel()
                raise _Aborted
            try:
                fut.result(timeout=0.5)
                return
            except concurrent.futures.TimeoutError:
                continue

    def finish(self) -> None:
        if self.buf:
            self.push(bytes(self.buf))
            self.buf.clear()


def _write_zip(dir_fd: int, out: _QueueWriter) -> None:
    with zipfile.ZipFile(out, mode="w", compression=zipfile.ZIP_STORED, allowZip64=True) as zf:
        for ev in iter_tree(dir_fd):
            if out.cancelled.is_set():
                raise _Aborted
            if ev.kind == "leave" or ev.st is None:
                continue
            arcname = "/".join(ev.parts).encode("utf-8", "surrogateescape").decode("utf-8", "replace")
            if ev.kind == "too-deep":
                log.warning("archive: not descending into %s (too deep)", arcname)
                continue
            mtime = time.localtime(max(ev.st.st_mtime, 315532800))[:6]  # zip cannot express dates before 1980
            if ev.kind == "enter":
                info = zipfile.ZipInfo(arcname + "/", date_time=mtime)
                info.external_attr = (stat.S_IFDIR | (stat.S_IMODE(ev.st.st_mode) & 0o777)) << 16 | 0x10
                zf.writestr(info, b"")
                continue
            if not stat.S_ISREG(ev.st.st_mode):
                continue  # symlinks, FIFOs, sockets, device nodes
            try:
                fd, st = open_regular(ev.dir_fd, ev.name, arcname)
            except (PathRefused, NotFound):
                continue  # replaced meanwhile
            try:
                info = zipfile.ZipInfo(arcname, date_time=mtime)
                info.external_attr = (stat.S_IFREG | (stat.S_IMODE(st.st_mode) & 0o777)) << 16
                info.compress_type = zipfile.ZIP_STORED
                info.file_size = st.st_size
                remaining = st.st_size
                with zf.open(info, mode="w", force_zip64=st.st_size > 0x7FFF0000) as member:
                    while remaining > 0:
                        data = os.read(fd, min(CHUNK, remaining))
                        if not data:
                            break
                        member.write(data)
                        remaining -= len(data)
                        if out.cancelled.is_set():
                            raise _Aborted
            finally:
                os.close(fd)
    out.finish()


async def stream_zip(dir_fd: int) -> AsyncIterator[bytes]:
    """Yield a zip of the directory ``dir_fd`` (which this generator closes) in chunks of about 1 MiB."""
    loop = asyncio.get_running_loop()
    queue: asyncio.Queue[bytes] = asyncio.Queue(QUEUE_DEPTH)
    cancelled = threading.Event()
    writer = _QueueWriter(loop, queue, cancelled)
    failure: list[BaseException] = []

    def run() -> None:
        try:
            _write_zip(dir_fd, writer)
        except _Aborted:
            pass
        except BaseException as e:  # reported to the reader, which ends the (already started) response
            failure.append(e)
        finally:
            os.close(dir_fd)
            if not cancelled.is_set():
                try:
                    writer.push(_END)
                except _Aborted:
                    pass

    thread = threading.Thread(target=run, name="zip-writer", daemon=True)
    thread.start()
    try:
        while True:
            chunk = await queue.get()
            if chunk is _END or not chunk:
                break
            yield chunk
        if failure:
            log.error("archive failed midway: %r", failure[0])
            raise RuntimeError("archive failed midway") from failure[0]
    finally:
        cancelled.set()
        # Unblock a writer waiting on a full queue so that it sees the cancellation.
        while not queue.empty():
            queue.get_nowait()
        await asyncio.get_running_loop().run_in_executor(None, thread.join, 5.0)
