"""Agent-side client for the in-container kernel runner.

One :class:`RunnerClient` keeps one long-lived Unix-socket connection to a
runner (``ai/backend/kernel/runner.py``) and multiplexes any number of
concurrent requests over it: each request carries an integer ``id`` and the
runner's response echoes it.  See ``docs/runner-protocol.md``.

Example::

    client = RunnerClient()
    await client.connect("/path/to/ipc/runner.sock", timeout=30)
    result = await client.execute("query", "print(1)", run_id="r1")
    await client.close()
"""

from __future__ import annotations

import asyncio
import itertools
import logging
import os
import stat
from collections import OrderedDict
from types import TracebackType
from typing import Any

from ai.backend.kernel.protocol import FrameTooLarge, ProtocolError, encode, read_message

__all__ = ["MAX_FRAME_SIZE", "RunnerClient", "RunnerConnectionError"]

log = logging.getLogger(__name__)

_READ_LIMIT = 1 << 20
#: The largest frame taken from a runner (a kernel's code may have taken it over).  An execute answer
#: holds at most 2 x 512 Ki console characters (up to 12 bytes each as escaped JSON), 16 Mi characters
#: of rich items and 5 MiB of files as data: URIs (~7 MiB): about 35 MiB at worst.
MAX_FRAME_SIZE = 48 * 1024 * 1024
#: Answers to requests the agent gave up on (cancelled calls) that may still arrive; any other
#: frame is unsolicited and closes the connection.
_ABANDONED_KEPT = 4096
_RETRYABLE = (FileNotFoundError, ConnectionRefusedError, PermissionError)


class RunnerConnectionError(ConnectionError):
    """The runner cannot be reached, or the connection to it was lost."""


async def _open_socket_nofollow(path: str) -> tuple[asyncio.StreamReader, asyncio.StreamWriter]:
    """Connect to the Unix socket at ``path`` itself, never through a symlink.

    The socket lives in a directory the kernel user owns: a symlink planted there must not send the
    agent (root) to a host socket, so the entry is opened with ``O_PATH | O_NOFOLLOW``, must be a
    socket, and the connection goes through that inode (``/proc/self/fd/N``).
    """
    fd = os.open(path, os.O_PATH | os.O_NOFOLLOW | os.O_CLOEXEC)
    try:
        if not stat.S_ISSOCK(os.fstat(fd).st_mode):
            raise RunnerConnectionError(f"{path} is not a socket")
        return await asyncio.open_unix_connection(f"/proc/self/fd/{fd}", limit=_READ_LIMIT)
    finally:
        os.close(fd)


class _Untrusted(Exception):
    """The runner sent what no honest runner sends (a frame over the limit, an unsolicited frame)."""


class RunnerClient:
    """A multiplexing request/response client for one kernel runner."""

    def __init__(self) -> None:
        self.path: str | None = None
        self._reader: asyncio.StreamReader | None = None
        self._writer: asyncio.StreamWriter | None = None
        self._pending: dict[int, asyncio.Future[dict[str, Any]]] = {}
        self._ids = itertools.count(1)
        self._recv_task: asyncio.Task[None] | None = None
        self._closed = True
        self._close_reason = "not connected"
        self._abandoned: OrderedDict[int, None] = OrderedDict()
        self._max_frame = MAX_FRAME_SIZE

    @classmethod
    async def open(cls, path: str | os.PathLike[str], timeout: float = 30.0) -> RunnerClient:
        """Create a client and :meth:`connect` it."""
        client = cls()
        await client.connect(path, timeout=timeout)
        return client

    @property
    def closed(self) -> bool:
        """True before :meth:`connect`, after :meth:`close` and once the runner went away."""
        return self._closed

    async def connect(self, path: str | os.PathLike[str], timeout: float = 30.0) -> None:
        """Connect to the runner's socket, retrying until it accepts or ``timeout`` passes.

        Retrying covers a container that has just started and whose runner has
        not created (or not yet opened) its socket.
        """
        if not self._closed:
            raise RuntimeError("already connected")
        self.path = os.fspath(path)
        loop = asyncio.get_running_loop()
        deadline = loop.time() + timeout
        delay = 0.005
        while True:
            try:
                reader, writer = await _open_socket_nofollow(self.path)
                break
            except _RETRYABLE as e:
                remaining = deadline - loop.time()
                if remaining <= 0:
                    raise RunnerConnectionError(f"cannot connect to the runner at {self.path}: {e}") from e
                await asyncio.sleep(min(delay, remaining))
                # A starting runner usually binds within tens of milliseconds: keep the poll short.
                delay = min(delay * 2, 0.01)
            except OSError as e:
                raise RunnerConnectionError(f"cannot connect to the runner at {self.path}: {e}") from e
        self._reader, self._writer = reader, writer
        self._closed = False
        self._close_reason = "the connection to the runner was closed"
        self._recv_task = asyncio.create_task(self._recv_loop(reader))

    async def request(self, op: str, **fields: Any) -> dict[str, Any]:
        """Send ``{"op": op, **fields}`` and return the runner's response.

        Error replies are returned as they are (``{"id": .., "error": "message"}``);
        only a lost connection raises :class:`RunnerConnectionError`.  Cancelling
        the call abandons its response.
        """
        if "id" in fields:
            raise ValueError("'id' is assigned by the client")
        if self._closed or self._writer is None:
            raise RunnerConnectionError(self._close_reason)
        rid = next(self._ids)
        fut: asyncio.Future[dict[str, Any]] = asyncio.get_running_loop().create_future()
        self._pending[rid] = fut
        try:
            try:
                self._writer.write(encode({"id": rid, "op": op, **fields}))
                await self._writer.drain()
            except (ConnectionError, OSError) as e:
                self._shutdown(f"the connection to the runner failed: {e}")
                raise RunnerConnectionError(self._close_reason) from e
            return await fut
        finally:
            if self._pending.pop(rid, None) is not None and (fut.cancelled() or not fut.done()):
                # Given up on (cancelled): its answer may still come and is no protocol violation.
                self._abandoned[rid] = None
                if len(self._abandoned) > _ABANDONED_KEPT:
                    self._abandoned.popitem(last=False)

    async def ping(self) -> dict[str, Any]:
        """``ping``: runtime type and features of the runner."""
        return await self.request("ping")

    async def execute(
        self,
        mode: str,
        code: str = "",
        run_id: str | None = None,
        opts: dict[str, Any] | None = None,
    ) -> dict[str, Any]:
        """``execute``: returns an Execution Result Object (plus ``id``)."""
        return await self.request("execute", mode=mode, code=code, run_id=run_id, opts=opts)

    async def close(self) -> None:
        """Close the connection; pending requests fail with :class:`RunnerConnectionError`."""
        if self._writer is None:
            self._closed = True
            return
        writer = self._writer
        self._shutdown("the client was closed")
        try:
            await writer.wait_closed()
        except (ConnectionError, OSError):
            pass
        task, self._recv_task = self._recv_task, None
        if task is not None and task is not asyncio.current_task():
            task.cancel()
            try:
                await task
            except asyncio.CancelledError:
                pass

    async def __aenter__(self) -> RunnerClient:
        return self

    async def __aexit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        await self.close()

    # -- internals ----------------------------------------------------------------------

    async def _recv_loop(self, reader: asyncio.StreamReader) -> None:
        reason = "the runner closed the connection"
        try:
            while True:
                try:  # a frame over MAX_FRAME_SIZE is refused before its body is read
                    msg = await read_message(reader, self._max_frame)
                except FrameTooLarge as e:
                    raise _Untrusted(str(e)) from None
                if msg is None:
                    break
                rid = msg.get("id")
                fut = self._pending.get(rid) if type(rid) is int else None
                if fut is not None and not fut.done():
                    fut.set_result(msg)
                elif type(rid) is int and rid in self._abandoned:
                    del self._abandoned[rid]  # the late answer of a call given up on
                else:
                    raise _Untrusted(f"an unsolicited frame (id {str(rid)[:32]!r})")
        except _Untrusted as e:
            reason = f"the runner sent {e}; the connection was closed"
            log.error("runner at %s sent %s; closing the connection", self.path, e)
        except ProtocolError as e:
            reason = f"protocol error from the runner: {e}"
        except (ConnectionError, OSError) as e:
            reason = f"the connection to the runner failed: {e}"
        finally:
            self._shutdown(reason)

    def _shutdown(self, reason: str) -> None:
        if self._closed and self._writer is None:
            return
        self._closed = True
        self._close_reason = reason
        if self._writer is not None:
            self._writer.close()
            self._writer = None
        self._reader = None
        for fut in self._pending.values():
            if not fut.done():
                fut.set_exception(RunnerConnectionError(reason))
        self._pending.clear()
