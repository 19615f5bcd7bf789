"""Kernel runner: the in-container supervisor that the agent talks to.

Started inside the container as::

    python3 -I /opt/backend.ai/ai/backend/kernel/runner.py \\
        --socket /run/backend.ai/ipc/runner.sock --runtime-type python [--flush-timeout 1.0]

It listens on a Unix socket and answers length-prefixed JSON requests (see
``protocol.py`` and ``docs/runner-protocol.md``): ``ping``, ``execute``,
``interrupt``, ``complete``, ``restart``, ``shutdown``, ``list_files``, ``pty_open`` (terminals,
see ``pty_session.py``) and ``get_apps``, ``start_service``, ``shutdown_service`` (the kernel's apps, see
``services.py``).  Query-mode code runs
in a long-lived child process (``repl.py``) so that globals persist; batch-mode
commands run with ``/bin/sh -c``.  Runs are executed one at a time in FIFO order.

Only the standard library is used: the runner runs with whatever Python the
kernel image provides.  When it is PID 1 it forks and the parent stays behind as
a minimal init that reaps orphans and forwards termination signals.
"""

from __future__ import annotations

import sys
from pathlib import Path

# `python3 -I` does not put the script's directory on sys.path; make the
# `ai.backend.kernel` namespace importable from the tree this file lives in.
sys.path.insert(0, str(Path(__file__).absolute().parents[3]))

import argparse  # noqa: E402
import asyncio  # noqa: E402
import codecs  # noqa: E402
import contextlib  # noqa: E402
import json  # noqa: E402
import logging  # noqa: E402
import mmap  # noqa: E402
import os  # noqa: E402
import secrets  # noqa: E402
import signal  # noqa: E402
import socket  # noqa: E402
import stat  # noqa: E402
import struct  # noqa: E402
import subprocess  # noqa: E402
import tempfile  # noqa: E402
from collections import deque  # noqa: E402
from collections.abc import Awaitable, Callable  # noqa: E402
from typing import Any, NoReturn  # noqa: E402

from ai.backend.kernel import query_runtimes  # noqa: E402
from ai.backend.kernel.output_files import OutputWatcher  # noqa: E402
from ai.backend.kernel.processes import killpg_quietly, wait_process  # noqa: E402
from ai.backend.kernel.protocol import ProtocolError, cap_completions, encode, read_message  # noqa: E402
from ai.backend.kernel.pty_session import PtyError, PtyManager  # noqa: E402
from ai.backend.kernel.services import SERVICE_DEFS_DIR, ServiceManager  # noqa: E402

log = logging.getLogger("ai.backend.kernel.runner")

#: Characters per stream and per execute response (rest-api.md §8.3): beyond it the first
#: CONSOLE_HEAD and the last CONSOLE_TAIL characters are kept, with a note of how many were cut.
CONSOLE_LIMIT = 524_288
CONSOLE_HEAD = CONSOLE_LIMIT // 2
CONSOLE_TAIL = CONSOLE_LIMIT - CONSOLE_HEAD
FEATURES = ["query", "batch", "user-input"]
REPL_PATH = Path(__file__).absolute().with_name("repl.py")
DEFAULT_OOM_FILES = ("/sys/fs/cgroup/memory/memory.oom_control", "/sys/fs/cgroup/memory.events")
DEFAULT_BUILD: dict[str, str] = {
    "c": "gcc -Wall *.c -o main -pthread -lm -lrt -ldl",
    "cpp": "g++ -Wall *.cpp -o main -pthread -lm -lrt -ldl",
}
DEFAULT_EXEC: dict[str, str] = {
    "python": "python3 main.py",
    "c": "./main",
    "cpp": "./main",
    "nodejs": "node main.js",
    "lua": "lua5.3 main.lua",
}
#: Console item types besides stdout/stderr (rest-api.md §8.3); never merged with their neighbours.
RICH_ITEM_TYPES = ("media", "html", "log")
#: Characters of rich items per execute response; later ones are replaced by a note.
RICH_LIMIT = 16 * 1024 * 1024
#: Seconds between the SIGINT and the SIGKILL of an interrupted query of a non-Python runtime.
QUERY_KILL_GRACE = 1.0
#: Environment variables meant for the runner only; never passed to user code.
RUNNER_ENV_PREFIX = "BACKENDAI_RUNNER_"
#: How long to keep reading a finished batch step's pipes (background jobs may hold them).
PIPE_GRACE_SECONDS = 0.2
MAX_KEPT_RUNS = 256
CHILD_START_TIMEOUT = 30.0
COMPLETE_TIMEOUT = 5.0
#: Bytes of the memory shared with the REPL child for console items it has not sent yet
#: (its sends come at 64 Ki characters, so at most 256 KiB of UTF-8 plus one write of that size).
JOURNAL_SIZE = 1 << 20
JOURNAL_HEADER = struct.Struct("<QI")
JOURNAL_RECORD = struct.Struct("<cI")


def _journal_fd() -> int:
    """A file of :data:`JOURNAL_SIZE` bytes to share with the REPL child (memfd, else an unlinked temp file)."""
    memfd_create = getattr(os, "memfd_create", None)
    fd = -1
    if memfd_create is not None:
        with contextlib.suppress(OSError):
            fd = memfd_create("bai-console-journal")
    if fd < 0:
        with tempfile.TemporaryFile() as f:
            fd = os.dup(f.fileno())
    os.ftruncate(fd, JOURNAL_SIZE)
    return fd


def read_journal(journal: mmap.mmap | bytes, last_epoch: int) -> list[Any]:
    """Console items of a REPL child's journal that no frame up to ``last_epoch`` carried (see repl._Journal)."""
    epoch, length = JOURNAL_HEADER.unpack_from(journal, 0)
    if epoch <= last_epoch:
        return []  # the frame of this epoch arrived; the child died before it started the next
    items: list[Any] = []
    pos, end = JOURNAL_HEADER.size, min(JOURNAL_HEADER.size + length, len(journal))
    while pos + JOURNAL_RECORD.size <= end:
        kind, size = JOURNAL_RECORD.unpack_from(journal, pos)
        pos += JOURNAL_RECORD.size
        data = bytes(journal[pos : pos + size])
        pos += size
        if kind == b"o" or kind == b"e":
            items.append(["stdout" if kind == b"o" else "stderr", data.decode("utf-8", "replace")])
        elif kind == b"r":
            with contextlib.suppress(ValueError):
                item = json.loads(data)
                if isinstance(item, list) and len(item) == 2 and item[0] in RICH_ITEM_TYPES:
                    items.append(item)
    return items


class RequestError(Exception):
    """A request that cannot be served; reported as ``{"error": message}``."""


# --------------------------------------------------------------------------------------
# Process helpers
# --------------------------------------------------------------------------------------


def read_oom_kills(paths: list[str]) -> int | None:
    """Sum of the ``oom_kill`` counters in the given cgroup files, None if unreadable."""
    total: int | None = None
    for path in paths:
        try:
            with open(path) as f:
                for line in f:
                    key, _, value = line.partition(" ")
                    if key == "oom_kill":
                        total = (total or 0) + int(value)
        except (OSError, ValueError):
            continue
    return total


def child_environ() -> dict[str, str]:
    """The environment for user code: the runner's minus runner-only variables."""
    return {k: v for k, v in os.environ.items() if not k.startswith(RUNNER_ENV_PREFIX)}


def run_timeout(opts: dict[str, Any]) -> float | None:
    """The ``timeout`` execute option in seconds (a positive number), else None."""
    value = opts.get("timeout")
    if isinstance(value, bool) or not isinstance(value, (int, float)) or value <= 0:
        return None
    return float(value)


def signal_name(sig: int) -> str:
    try:
        return signal.Signals(sig).name
    except ValueError:
        return f"signal {sig}"


# --------------------------------------------------------------------------------------
# Runs
# --------------------------------------------------------------------------------------


class Run:
    """One run (query snippet or batch job) and the output not yet sent to the agent.

    Output accumulates in the *open segment*; a status change (``waiting-input``,
    ``clean-finished``, ``build-finished``, ``finished``) closes the segment into a
    ready response.  An execute call pops the oldest ready response or, after the
    flush timeout, takes the open segment as ``continued``.
    """

    def __init__(self, run_id: str, mode: str, code: str, opts: dict[str, Any] | None) -> None:
        self.run_id = run_id
        self.mode = mode
        self.code = code
        self.opts = opts or {}
        self.ready: deque[dict[str, Any]] = deque()
        # The open segment: (stream, chunks) pairs, joined only when taken, so that a
        # stream of small writes does not cost quadratic string copying.
        self.console: list[tuple[str, list[Any]]] = []
        self.counts = {"stdout": 0, "stderr": 0}
        # Per stream, once its head is full: the latest CONSOLE_TAIL characters and how many were cut.
        self.tails: dict[str, deque[str]] = {}
        self.tail_sizes: dict[str, int] = {}
        self.cut: dict[str, int] = {}
        self.rich_chars = 0
        #: Called at ``finished`` for the run's ``files`` (see output_files.py).
        self.collect_files: Callable[[], list[dict[str, Any]]] | None = None
        self.waiting_input = False
        self.input_is_password = False
        self.finished = False
        self.timed_out = False
        self.end_note = ""
        self.call_lock = asyncio.Lock()
        self._waiter: asyncio.Future[None] | None = None

    def _append(self, stream: str, text: str) -> None:
        if self.console and self.console[-1][0] == stream:
            self.console[-1][1].append(text)
        else:
            self.console.append((stream, [text]))

    def add_output(self, stream: str, text: Any, note: bool = False) -> None:
        """Append console text, enforcing the per-response limit.

        Past the first :data:`CONSOLE_HEAD` characters of a stream in one response, only the
        latest :data:`CONSOLE_TAIL` are kept (they end the response, after a note of how much
        was cut).  ``note`` marks runner messages, which bypass the cap.
        """
        if not isinstance(text, str) or not text:
            return
        if note or stream not in self.counts:
            self._append(stream, text)
            return
        count = self.counts[stream]
        if count + len(text) <= CONSOLE_HEAD:  # the common case: a size check
            self.counts[stream] = count + len(text)
            self._append(stream, text)
            return
        room = CONSOLE_HEAD - count
        if room > 0:
            self.counts[stream] = CONSOLE_HEAD
            self._append(stream, text[:room])
            text = text[room:]
        self._add_tail(stream, text)

    def _add_tail(self, stream: str, text: str) -> None:
        tail = self.tails.setdefault(stream, deque())
        if len(text) >= CONSOLE_TAIL:
            self.cut[stream] = self.cut.get(stream, 0) + self.tail_sizes.get(stream, 0) + len(text) - CONSOLE_TAIL
            tail.clear()
            tail.append(text[-CONSOLE_TAIL:])
            self.tail_sizes[stream] = CONSOLE_TAIL
            return
        tail.append(text)
        size = self.tail_sizes.get(stream, 0) + len(text)
        excess = size - CONSOLE_TAIL
        while excess > 0:
            first = tail[0]
            if len(first) <= excess:
                tail.popleft()
                drop = len(first)
            else:
                tail[0] = first[excess:]
                drop = excess
            excess -= drop
            size -= drop
            self.cut[stream] = self.cut.get(stream, 0) + drop
        self.tail_sizes[stream] = size

    def add_items(self, items: list[Any]) -> None:
        """Append console items ``[[stream, text], ...]`` (and rich items) from the REPL child."""
        for item in items:
            if isinstance(item, list) and len(item) == 2 and isinstance(item[0], str):
                if item[0] in RICH_ITEM_TYPES:
                    self.add_rich(item[0], item[1])
                else:
                    self.add_output(item[0], item[1])

    def add_rich(self, kind: str, value: Any) -> None:
        """Append one ``media``/``html``/``log`` item as it is, within the per-response budget."""
        size = len(json.dumps(value))
        if self.rich_chars + size > RICH_LIMIT:
            self.add_output(
                "stderr",
                f"[a {kind} item of {size} characters was dropped: over {RICH_LIMIT} "
                "characters of rich output in one response]\n",
                note=True,
            )
            return
        self.rich_chars += size
        self.console.append((kind, [value]))

    def _result(self, status: str, exit_code: int | None, options: dict[str, Any] | None) -> dict[str, Any]:
        for stream, tail in self.tails.items():
            cut = self.cut.get(stream, 0)
            if cut:
                self._append(
                    stream,
                    f"\n[output truncated: {stream} exceeded {CONSOLE_LIMIT} characters in this"
                    f" response; {cut} characters cut here, the first {CONSOLE_HEAD} and the"
                    f" last {CONSOLE_TAIL} are kept]\n",
                )
            self._append(stream, "".join(tail))
        result = {
            "runId": self.run_id,
            "status": status,
            "exitCode": exit_code,
            "console": [
                [stream, chunks[0] if stream in RICH_ITEM_TYPES else "".join(chunks)] for stream, chunks in self.console
            ],
            "options": options,
            "files": [],
        }
        self.console = []
        self.counts = {"stdout": 0, "stderr": 0}
        if self.tails:
            self.tails, self.tail_sizes, self.cut = {}, {}, {}
        self.rich_chars = 0
        return result

    def checkpoint(
        self,
        status: str,
        exit_code: int | None,
        options: dict[str, Any] | None = None,
        **extra: Any,
    ) -> None:
        """Close the open segment with ``status`` and wake a waiting execute call."""
        if status == "finished" and self.end_note:
            self.add_output("stderr", self.end_note, note=True)
        result = self._result(status, exit_code, options)
        if status == "finished" and self.collect_files is not None:
            try:
                result["files"] = self.collect_files()
            except Exception:
                log.exception("collecting the .output files of run %s failed", self.run_id)
        result.update(extra)
        if status == "finished" and self.timed_out:
            result["status"] = "exec-timeout"
            result["exitCode"] = None
        self.ready.append(result)
        if status == "finished":
            self.finished = True
        self.wake()

    def take_continued(self) -> dict[str, Any]:
        return self._result("continued", None, None)

    def take_waiting(self) -> dict[str, Any]:
        return self._result("waiting-input", None, {"is_password": self.input_is_password})

    def wake(self) -> None:
        if self._waiter is not None and not self._waiter.done():
            self._waiter.set_result(None)

    async def wait_change(self, timeout: float) -> None:
        """Wait until a segment closes or ``timeout`` seconds pass."""
        loop = asyncio.get_running_loop()
        fut: asyncio.Future[None] = loop.create_future()
        self._waiter = fut

        def _timeout() -> None:
            if not fut.done():
                fut.set_result(None)

        handle = loop.call_later(timeout, _timeout)
        try:
            await fut
        finally:
            handle.cancel()
            self._waiter = None


# --------------------------------------------------------------------------------------
# The query-mode REPL child
# --------------------------------------------------------------------------------------


class ReplChild:
    """Handle of one ``repl.py`` process and the socket pair connected to it."""

    def __init__(self, workdir: str, env: dict[str, str], on_exit: Callable[[ReplChild], None]) -> None:
        self._workdir = workdir
        self._env = env
        self._on_exit = on_exit
        self.proc: subprocess.Popen[bytes] | None = None
        # Bound by the run using the child.  Called synchronously, output first, so
        # that a run's state always matches the output it has received.
        self.sink: Callable[[list[Any]], None] | None = None
        self.on_event: Callable[[dict[str, Any]], None] | None = None
        self.alive = False
        self.expected_exit = False
        self.returncode: int | None = None
        self._writer: asyncio.StreamWriter | None = None
        self._ready: asyncio.Future[None] = asyncio.get_running_loop().create_future()
        self._closed: asyncio.Future[int] = asyncio.get_running_loop().create_future()
        self._completions: dict[int, asyncio.Future[list[str]]] = {}
        self._next_rid = 0
        self._task: asyncio.Task[None] | None = None
        # What the child has not sent yet survives it (see repl._Journal): the shared journal and our
        # copies of the read ends of its stdout/stderr pipes, read only once it is gone.
        self._journal: mmap.mmap | None = None
        self._last_epoch = -1
        self._pipes: list[tuple[int, str]] = []

    @property
    def pid(self) -> int | None:
        return self.proc.pid if self.proc is not None else None

    async def start(self) -> None:
        """Spawn the child and wait until it reports ready."""
        parent_sock, child_sock = socket.socketpair()
        journal_fd = _journal_fd()
        pipes = [*os.pipe(), *os.pipe()]
        child_fds = [child_sock.fileno(), journal_fd, *pipes]
        try:
            self._journal = mmap.mmap(journal_fd, JOURNAL_SIZE)
            self.proc = subprocess.Popen(
                [
                    sys.executable,
                    "-I",
                    str(REPL_PATH),
                    "--fd",
                    str(child_sock.fileno()),
                    "--journal-fd",
                    str(journal_fd),
                    "--pipe-fds",
                    ",".join(map(str, pipes)),
                ],
                stdin=subprocess.DEVNULL,
                cwd=self._workdir,
                env=self._env,
                pass_fds=tuple(child_fds),
                start_new_session=True,  # own process group: interrupts and kills hit its subprocesses
            )
        except BaseException:
            parent_sock.close()
            for fd in (pipes[0], pipes[2]):
                os.close(fd)
            raise
        finally:
            child_sock.close()
            for fd in (journal_fd, pipes[1], pipes[3]):
                os.close(fd)
        self._pipes = [(pipes[0], "stdout"), (pipes[2], "stderr")]
        self.alive = True
        reader, self._writer = await asyncio.open_unix_connection(sock=parent_sock, limit=1 << 20)
        self._task = asyncio.create_task(self._read_loop(reader))
        try:
            await asyncio.wait_for(asyncio.shield(self._ready), CHILD_START_TIMEOUT)
        except BaseException:
            self.expected_exit = True
            self.kill()
            raise

    async def _read_loop(self, reader: asyncio.StreamReader) -> None:
        try:
            while True:
                msg = await read_message(reader)
                if msg is None:
                    break
                self._dispatch(msg)
        except (ConnectionError, ProtocolError, OSError) as e:
            log.warning("connection to the REPL child failed: %s", e)
        finally:
            self.alive = False  # from now on _get_child() starts a fresh one
            if self._writer is not None:
                self._writer.close()
            assert self.proc is not None
            if self.proc.poll() is None:
                self.kill()  # it closed the socket but lives on: useless now
            rc = await wait_process(self.proc)
            self.returncode = rc
            self._recover_unsent()
            if not self._ready.done():
                self._ready.set_exception(RuntimeError(f"the REPL process exited with code {rc}"))
                self._ready.exception()  # mark retrieved; start() re-raises through wait_for
            for fut in self._completions.values():
                if not fut.done():
                    fut.set_result([])
            self._completions.clear()
            if self.on_event is not None:
                self.on_event({"t": "died", "rc": rc})
            if not self._closed.done():
                self._closed.set_result(rc)
            self._on_exit(self)

    def _recover_unsent(self) -> None:
        """Pass on what the dead child wrote but never sent: its journal, then its pipes' contents."""
        items: list[Any] = []
        if self._journal is not None:
            try:
                items = read_journal(self._journal, self._last_epoch)
            except Exception:  # a journal scribbled over by user code must not break the run's end
                log.exception("reading the console journal of the REPL child failed")
            self._journal.close()
            self._journal = None
        for fd, name in self._pipes:
            data = bytearray()
            with contextlib.suppress(OSError):
                os.set_blocking(fd, False)
                while len(data) < JOURNAL_SIZE:
                    chunk = os.read(fd, 65536)
                    if not chunk:
                        break
                    data += chunk
            os.close(fd)
            if data:
                items.append([name, data.decode("utf-8", "replace")])
        self._pipes = []
        if items and self.sink is not None:
            self.sink(items)

    def _dispatch(self, msg: dict[str, Any]) -> None:
        epoch = msg.get("e")
        if type(epoch) is int:
            self._last_epoch = epoch
        items = msg.get("items")
        if items and self.sink is not None:
            self.sink(items)
        kind = msg.get("t")
        if kind in ("done", "waiting"):
            if self.on_event is not None:
                self.on_event(msg)
        elif kind == "completion":
            fut = self._completions.pop(msg.get("rid", -1), None)
            if fut is not None and not fut.done():
                fut.set_result(cap_completions(msg.get("result")))
        elif kind == "ready":
            if not self._ready.done():
                self._ready.set_result(None)

    async def send(self, msg: dict[str, Any]) -> None:
        """Send a command; a dead child is reported through ``on_event`` instead."""
        if self._writer is None or not self.alive:
            return
        try:
            self._writer.write(encode(msg))
            await self._writer.drain()
        except (ConnectionError, OSError) as e:
            log.debug("sending to the REPL child failed: %s", e)

    async def complete(self, code: str, opts: dict[str, Any] | None) -> list[str]:
        """Ask the child for completions of ``code`` (empty on timeout)."""
        self._next_rid += 1
        rid = self._next_rid
        fut: asyncio.Future[list[str]] = asyncio.get_running_loop().create_future()
        self._completions[rid] = fut
        try:
            await self.send({"t": "complete", "rid": rid, "code": code, "opts": opts})
            return await asyncio.wait_for(fut, COMPLETE_TIMEOUT)
        except TimeoutError:
            return []
        finally:
            self._completions.pop(rid, None)

    def kill(self) -> None:
        """SIGKILL the child's whole process group."""
        if self.proc is not None:
            killpg_quietly(self.proc.pid, signal.SIGKILL)

    async def wait_closed(self) -> int:
        return await asyncio.shield(self._closed)


# --------------------------------------------------------------------------------------
# The supervisor
# --------------------------------------------------------------------------------------


class Supervisor:
    """Serves agent requests on the Unix socket and executes runs in FIFO order."""

    def __init__(
        self,
        socket_path: str,
        runtime_type: str,
        flush_timeout: float,
        workdir: str,
        oom_files: list[str],
        runtime_path: str = sys.executable,
        service_defs_dir: str = SERVICE_DEFS_DIR,
    ) -> None:
        self.socket_path = socket_path
        self.runtime_type = runtime_type
        self.flush_timeout = flush_timeout
        self.workdir = workdir
        self.oom_files = oom_files
        self.env = child_environ()
        self.runs: dict[str, Run] = {}
        self.queue: asyncio.Queue[Run] = asyncio.Queue()
        self.active: Run | None = None
        self.active_child: ReplChild | None = None
        self.active_proc: subprocess.Popen[bytes] | None = None
        self.batch_interrupted = False
        self._query_scratch: str | None = None  # source files of non-Python queries
        self._child_fut: asyncio.Future[ReplChild] | None = None
        self._restart_lock = asyncio.Lock()
        self._stop = asyncio.Event()
        self._stopping = False
        self._conns: dict[asyncio.StreamWriter, asyncio.Task[Any] | None] = {}
        self._tasks: set[asyncio.Task[Any]] = set()
        self._ops: dict[str, Callable[[dict[str, Any]], Awaitable[dict[str, Any]]]] = {
            "ping": self.op_ping,
            "execute": self.op_execute,
            "interrupt": self.op_interrupt,
            "complete": self.op_complete,
            "restart": self.op_restart,
            "shutdown": self.op_shutdown,
            "list_files": self.op_list_files,
            "pty_open": self.op_pty_open,
            "get_apps": self.op_get_apps,
            "start_service": self.op_start_service,
            "shutdown_service": self.op_shutdown_service,
        }
        self.ptys = PtyManager(os.path.dirname(os.path.abspath(socket_path)), workdir)
        # Reads self.env at each start, so a pooled container's `restart` environ reaches its apps.
        self.services = ServiceManager(workdir, self.env, runtime_path=runtime_path, defs_dir=service_defs_dir)

    def _spawn_task(self, coro: Awaitable[Any]) -> asyncio.Task[Any]:
        task = asyncio.ensure_future(coro)
        self._tasks.add(task)
        task.add_done_callback(self._tasks.discard)
        return task

    # -- lifecycle ------------------------------------------------------------------------

    async def serve(self) -> int:
        """Listen until ``shutdown`` or SIGTERM/SIGINT; returns the exit code."""
        sock_dir = os.path.dirname(os.path.abspath(self.socket_path))
        os.makedirs(sock_dir, exist_ok=True)
        with contextlib.suppress(FileNotFoundError):
            if stat.S_ISSOCK(os.lstat(self.socket_path).st_mode):
                os.unlink(self.socket_path)  # stale socket of a previous runner
        server = await asyncio.start_unix_server(self._on_connection, path=self.socket_path, limit=1 << 20)
        try:
            os.chmod(self.socket_path, 0o660)
            loop = asyncio.get_running_loop()
            for sig in (signal.SIGTERM, signal.SIGINT):
                loop.add_signal_handler(sig, self.stop)
            if self.runtime_type not in query_runtimes.RUNTIMES:
                self._spawn_child()  # the Python REPL; other runtimes start a process per query
            worker = asyncio.create_task(self._worker())
            log.info("listening on %s (runtime %s)", self.socket_path, self.runtime_type)
            await self._stop.wait()
            worker.cancel()
        finally:
            self._stopping = True
            server.close()
            await self._cleanup()
            with contextlib.suppress(FileNotFoundError):
                os.unlink(self.socket_path)
        return 0

    def stop(self) -> None:
        """Request a clean exit."""
        self._stopping = True
        self._stop.set()

    async def _cleanup(self) -> None:
        await self.services.close()  # the apps do not outlive the runner
        fut = self._child_fut
        if fut is not None and fut.done() and not fut.cancelled() and fut.exception() is None:
            child = fut.result()
            child.expected_exit = True
            child.kill()
            with contextlib.suppress(asyncio.TimeoutError):
                await asyncio.wait_for(child.wait_closed(), 2.0)
        if self.active_proc is not None:
            killpg_quietly(self.active_proc.pid, signal.SIGKILL)
        for task in list(self._tasks):
            task.cancel()
        for writer in list(self._conns):
            writer.close()  # the handlers see EOF and return on their own
        pending = [t for t in (*self._tasks, *self._conns.values()) if t is not None]
        if pending:
            await asyncio.wait(pending, timeout=2.0)

    # -- the REPL child -----------------------------------------------------------------------

    def _spawn_child(self) -> None:
        loop = asyncio.get_running_loop()
        fut: asyncio.Future[ReplChild] = loop.create_future()
        self._child_fut = fut

        async def _start() -> None:
            child = ReplChild(self.workdir, self.env, self._on_child_exit)
            try:
                await child.start()
            except asyncio.CancelledError:
                child.expected_exit = True
                child.kill()
                fut.cancel()
                raise
            except Exception as e:
                log.error("cannot start the REPL child: %s", e)
                fut.set_exception(e)
                fut.exception()  # retrieved here; callers see it via _get_child()
            else:
                if self._stopping:
                    child.expected_exit = True
                    child.kill()
                fut.set_result(child)

        self._spawn_task(_start())

    async def _get_child(self) -> ReplChild:
        """The live REPL child, starting a new one if the current one is gone."""
        while True:
            fut = self._child_fut
            if fut is None or (
                fut.done() and (fut.cancelled() or fut.exception() is not None or not fut.result().alive)
            ):
                self._spawn_child()
                fut = self._child_fut
                assert fut is not None
            child = await asyncio.shield(fut)  # raises if the fresh one failed to start
            if child.alive:
                return child

    def _on_child_exit(self, child: ReplChild) -> None:
        if self._stopping or child.expected_exit:
            return
        fut = self._child_fut
        if fut is not None and fut.done() and not fut.cancelled() and fut.exception() is None:
            if fut.result() is child:
                log.warning("the REPL child exited (%s); starting a fresh one", child.returncode)
                self._spawn_child()

    # -- connections ---------------------------------------------------------------------------

    async def _on_connection(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        self._conns[writer] = asyncio.current_task()
        handlers: set[asyncio.Task[None]] = set()
        try:
            while True:
                try:
                    msg = await read_message(reader)
                except ProtocolError as e:
                    # A client that sends garbage cannot be trusted to stay in sync.
                    with contextlib.suppress(ConnectionError, OSError):
                        writer.write(encode({"id": None, "error": f"protocol error: {e}"}))
                    break
                except (ConnectionError, OSError):
                    break
                if msg is None:
                    break
                task = asyncio.create_task(self._handle(msg, writer))
                handlers.add(task)
                task.add_done_callback(handlers.discard)
        finally:
            self._conns.pop(writer, None)
            for task in handlers:
                task.cancel()
            writer.close()

    async def _handle(self, msg: dict[str, Any], writer: asyncio.StreamWriter) -> None:
        op = msg.get("op")
        handler = self._ops.get(op) if isinstance(op, str) else None
        try:
            if handler is None:
                raise RequestError(f"unknown op: {op!r}")
            body = await handler(msg)
        except RequestError as e:
            body = {"error": str(e)}
        except asyncio.CancelledError:
            raise
        except Exception as e:
            log.exception("error while handling %r", op)
            body = {"error": f"internal error: {e!r}"}
        response = {"id": msg.get("id"), **body}
        try:
            writer.write(encode(response))
            await writer.drain()
        except (ConnectionError, OSError, RuntimeError):
            pass
        if op == "shutdown" and "error" not in body:
            self.stop()

    # -- ops -------------------------------------------------------------------------------------

    async def op_ping(self, msg: dict[str, Any]) -> dict[str, Any]:
        return {"ok": True, "runtime_type": self.runtime_type, "features": list(FEATURES)}

    async def op_shutdown(self, msg: dict[str, Any]) -> dict[str, Any]:
        return {"ok": True}

    async def op_execute(self, msg: dict[str, Any]) -> dict[str, Any]:
        mode = msg.get("mode")
        code = msg.get("code")
        code = "" if code is None else code
        if not isinstance(code, str):
            raise RequestError("code must be a string")
        opts = msg.get("opts")
        if opts is not None and not isinstance(opts, dict):
            raise RequestError("opts must be an object or null")
        raw_id = msg.get("run_id")
        if raw_id is not None and not isinstance(raw_id, str | int):
            raise RequestError("run_id must be a string or null")
        run_id = None if raw_id is None else str(raw_id)

        if mode in ("query", "batch"):
            run = self.runs.get(run_id) if run_id is not None else None
            if run is None or (run.finished and not run.ready):
                run = Run(run_id or secrets.token_hex(8), mode, code, opts)
                self._register(run)
                self.queue.put_nowait(run)
            # else: the same run id again while it is still going acts like "continue"
        elif mode == "continue":
            run = self._lookup(run_id)
        elif mode in ("input", "user-input"):
            run = self._lookup(run_id)
            if not (run.waiting_input and self.active is run and self.active_child is not None):
                raise RequestError(f"run {run.run_id} is not waiting for input")
            run.waiting_input = False
            await self.active_child.send({"t": "input", "text": code})
        else:
            raise RequestError(f"unknown execute mode: {mode!r}")
        return await self._collect(run)

    def _register(self, run: Run) -> None:
        self.runs[run.run_id] = run
        if len(self.runs) > MAX_KEPT_RUNS:
            # Forget the oldest finished runs whose results nobody collected.
            for rid, old in list(self.runs.items()):
                if len(self.runs) <= MAX_KEPT_RUNS:
                    break
                if old.finished:
                    del self.runs[rid]

    def _lookup(self, run_id: str | None) -> Run:
        if run_id is None:
            raise RequestError("run_id is required for this mode")
        run = self.runs.get(run_id)
        if run is None:
            raise RequestError(f"unknown run: {run_id}")
        return run

    async def _collect(self, run: Run) -> dict[str, Any]:
        """Wait for the run's next status or the flush timeout, whichever is first."""
        async with run.call_lock:
            loop = asyncio.get_running_loop()
            deadline = loop.time() + self.flush_timeout
            while not run.ready:
                remaining = deadline - loop.time()
                if remaining <= 0:
                    # Asked again while the run still waits for input: repeat that.
                    return run.take_waiting() if run.waiting_input else run.take_continued()
                await run.wait_change(remaining)
            result = run.ready.popleft()
            if run.finished and not run.ready and self.runs.get(run.run_id) is run:
                del self.runs[run.run_id]
            return result

    async def op_interrupt(self, msg: dict[str, Any]) -> dict[str, Any]:
        run = self.active
        if run is not None:
            if run.mode == "batch":
                self.batch_interrupted = True
                if self.active_proc is not None:
                    killpg_quietly(self.active_proc.pid, signal.SIGINT)
            elif self.active_proc is not None:  # a query of a non-Python runtime: SIGINT, then SIGKILL
                proc = self.active_proc
                killpg_quietly(proc.pid, signal.SIGINT)

                def kill_if_still_running() -> None:
                    if self.active_proc is proc:
                        killpg_quietly(proc.pid, signal.SIGKILL)

                asyncio.get_running_loop().call_later(QUERY_KILL_GRACE, kill_if_still_running)
            elif self.active_child is not None:
                await self.active_child.send({"t": "interrupt"})
        return {"ok": True}

    async def op_complete(self, msg: dict[str, Any]) -> dict[str, Any]:
        code = msg.get("code") or ""
        opts = msg.get("opts")
        if not isinstance(code, str):
            raise RequestError("code must be a string")
        if self.runtime_type in query_runtimes.RUNTIMES:
            return {"result": []}  # no completion for these runtimes
        try:
            child = await asyncio.wait_for(self._get_child(), COMPLETE_TIMEOUT)
        except (TimeoutError, RuntimeError):
            return {"result": []}
        result = await child.complete(code, opts if isinstance(opts, dict) else None)
        return {"result": result}

    async def op_restart(self, msg: dict[str, Any]) -> dict[str, Any]:
        environ = msg.get("environ")
        if environ is not None:
            # A pre-started (pooled) container gets its session's environment this way.
            if not isinstance(environ, dict) or not all(
                isinstance(k, str) and isinstance(v, str) for k, v in environ.items()
            ):
                raise RequestError("'environ' must map names to string values")
            self.env.update(environ)
        if self.runtime_type in query_runtimes.RUNTIMES:
            return {"ok": True}  # nothing persists between their queries
        async with self._restart_lock:
            try:
                old: ReplChild | None = await self._get_child()
            except Exception:
                old = None
            if old is not None:
                old.expected_exit = True
                old.kill()
                await old.wait_closed()
            try:
                await self._get_child()
            except Exception as e:
                raise RequestError(f"cannot start a fresh Python process: {e}") from e
        return {"ok": True}

    async def op_pty_open(self, msg: dict[str, Any]) -> dict[str, Any]:
        """Start a login shell on a new terminal; answers the socket name (in the ipc dir) serving it."""
        try:
            name = await self.ptys.open(self.env, msg.get("rows"), msg.get("cols"))
        except PtyError as e:
            raise RequestError(str(e)) from None
        return {"socket": name}

    async def op_get_apps(self, msg: dict[str, Any]) -> dict[str, Any]:
        """The apps this kernel can start: the intrinsic ones and the image's service definitions."""
        return {"apps": await asyncio.to_thread(self.services.list_apps)}

    async def op_start_service(self, msg: dict[str, Any]) -> dict[str, Any]:
        """Start an app unless it runs: ``{"status": "started" | "running" | "failed", "error"?}``."""
        return await self.services.start(msg.get("name"), msg.get("ports"), msg.get("protocol"), msg.get("options"))

    async def op_shutdown_service(self, msg: dict[str, Any]) -> dict[str, Any]:
        """Stop an app: ``{"status": "stopped" | "not-running"}``."""
        return await self.services.shutdown(msg.get("name"))

    async def op_list_files(self, msg: dict[str, Any]) -> dict[str, Any]:
        """List a directory under the work dir (lstat: symlinks are entries, never followed out of it)."""
        raw = msg.get("path") or self.workdir
        if not isinstance(raw, str) or "\x00" in raw:
            raise RequestError("path must be a string")
        folder = os.path.normpath(os.path.join(self.workdir, raw))
        root = os.path.realpath(self.workdir)
        real = os.path.realpath(folder)
        if real != root and not real.startswith(root + os.sep):
            return {
                "status": "outside",
                "folder_path": folder,
                "detail": f"{folder} leads outside {self.workdir} through a symbolic link",
            }
        limit = 10_000

        def scan() -> dict[str, Any]:
            entries: list[dict[str, Any]] = []
            truncated = False
            try:
                with os.scandir(real) as it:
                    for entry in it:
                        if len(entries) >= limit:
                            truncated = True
                            break
                        try:
                            st = entry.stat(follow_symlinks=False)
                        except OSError:
                            continue  # removed while listing
                        item: dict[str, Any] = {
                            "filename": entry.name,
                            "size": st.st_size,
                            "mode": stat.filemode(st.st_mode),
                            "mtime": st.st_mtime,
                            "ctime": st.st_ctime,
                            "atime": st.st_atime,
                            "is_dir": stat.S_ISDIR(st.st_mode),
                            "is_symlink": stat.S_ISLNK(st.st_mode),
                        }
                        if item["is_symlink"]:
                            with contextlib.suppress(OSError):
                                item["link_target"] = os.readlink(entry.path)
                        entries.append(item)
            except FileNotFoundError:
                return {"status": "not-found", "folder_path": folder, "detail": f"No such directory: {folder}"}
            except NotADirectoryError:
                return {"status": "not-a-directory", "folder_path": folder, "detail": f"Not a directory: {folder}"}
            except PermissionError:
                return {"status": "denied", "folder_path": folder, "detail": f"Permission denied: {folder}"}
            entries.sort(key=lambda e: e["filename"])
            return {"status": "ok", "folder_path": folder, "files": entries, "errors": "", "truncated": truncated}

        return await asyncio.to_thread(scan)

    # -- execution ---------------------------------------------------------------------------------

    async def _worker(self) -> None:
        while True:
            run = await self.queue.get()
            if self.runs.get(run.run_id) is not run:
                continue  # evicted before its turn
            self.active = run
            run.collect_files = OutputWatcher(self.workdir).collect
            try:
                await self._run_with_timeout(run)
            except asyncio.CancelledError:
                raise
            except Exception as e:
                log.exception("run %s failed", run.run_id)
                if not run.finished:
                    run.add_output("stderr", f"[runner error: {e!r}]\n", note=True)
                    run.checkpoint("finished", -1)
            finally:
                self.active = None
                self.active_child = None
                self.active_proc = None

    async def _run_with_timeout(self, run: Run) -> None:
        """Run ``run``; past its ``timeout`` option (seconds) kill what it started and end it as ``exec-timeout``."""
        body = self._run_batch(run) if run.mode == "batch" else self._run_query(run)
        timeout = run_timeout(run.opts)
        if timeout is None:
            await body
            return
        task = asyncio.ensure_future(body)
        done, _ = await asyncio.wait({task}, timeout=timeout)
        if not done:
            run.timed_out = True
            # Added when the run ends, after what the killed code wrote (recovered after the kill).
            run.end_note = f"\n[execution timed out after {timeout:g} s and was killed]\n"
            self.batch_interrupted = True  # later batch steps do not run
            if self.active_proc is not None:
                killpg_quietly(self.active_proc.pid, signal.SIGKILL)
            if self.active_child is not None:
                self.active_child.expected_exit = True
                self.active_child.kill()
            try:
                await asyncio.wait_for(task, 10.0)
            except TimeoutError:
                log.warning("run %s did not stop after its timeout", run.run_id)
        else:
            task.result()
        if not run.finished:
            run.checkpoint("finished", None)

    async def _run_query(self, run: Run) -> None:
        if self.runtime_type in query_runtimes.RUNTIMES:
            command, self._query_scratch = query_runtimes.prepare_query(
                self.runtime_type, run.code, self._query_scratch
            )
            run.checkpoint("finished", await self._run_shell(run, command, batch=False))
            return
        try:
            child = await self._get_child()
        except Exception as e:
            run.add_output("stderr", f"[cannot start the Python process: {e}]\n", note=True)
            run.checkpoint("finished", -1)
            return
        oom_before = read_oom_kills(self.oom_files)
        over: asyncio.Future[None] = asyncio.get_running_loop().create_future()

        def on_event(event: dict[str, Any]) -> None:
            kind = event["t"]
            if kind == "waiting":
                run.waiting_input = True
                run.input_is_password = bool(event.get("pw"))
                run.checkpoint("waiting-input", None, {"is_password": run.input_is_password})
                return
            run.waiting_input = False
            if kind == "done":
                exit_code = event.get("exit")
                run.checkpoint("finished", exit_code if isinstance(exit_code, int) else 0)
            else:  # "died"
                self._report_death(run, child, int(event["rc"]), oom_before)
            if not over.done():
                over.set_result(None)

        child.sink = run.add_items
        child.on_event = on_event
        self.active_child = child
        try:
            await child.send({"t": "run", "code": run.code})
            await over
        finally:
            child.sink = None
            child.on_event = None

    def _report_death(self, run: Run, child: ReplChild, rc: int, oom_before: int | None) -> None:
        lost = "a fresh Python process has been started; global variables were lost"
        if child.expected_exit:
            if not run.timed_out:  # a timeout says so itself
                run.add_output("stderr", "\n[the Python process was restarted; this run was aborted]\n", note=True)
            run.checkpoint("finished", rc if rc < 0 else -1)
        elif rc < 0:
            sig = -rc
            oom_after = read_oom_kills(self.oom_files)
            oom = oom_before is not None and oom_after is not None and oom_after > oom_before
            cause = " by the out-of-memory killer (the container's memory limit was exceeded)" if oom else ""
            run.add_output(
                "stderr",
                f"\n[the Python process was killed by {signal_name(sig)}{cause}; {lost}]\n",
                note=True,
            )
            run.checkpoint("finished", rc, killed={"signal": sig, "oom": oom})
        else:
            run.add_output("stderr", f"\n[the Python process exited with code {rc}; {lost}]\n", note=True)
            run.checkpoint("finished", rc)

    def _resolve_command(self, step: str, value: Any) -> str | None:
        if not isinstance(value, str) or not value.strip():
            return None
        if value.strip() == "*":
            if step == "build":
                return DEFAULT_BUILD.get(self.runtime_type)
            if step == "exec":
                return DEFAULT_EXEC.get(self.runtime_type)
            return None  # the default clean step does nothing, to avoid accidental deletion
        return value

    async def _run_batch(self, run: Run) -> None:
        self.batch_interrupted = False
        build_ok = True
        for step, status in (("clean", "clean-finished"), ("build", "build-finished"), ("exec", "finished")):
            if self.batch_interrupted:
                build_ok = False  # an interrupt skips every later step
            if step == "exec" and not build_ok:
                run.checkpoint("finished", 127)
                return
            if self.batch_interrupted:
                run.checkpoint(status, 130)
                continue
            command = self._resolve_command(step, run.opts.get(step))
            if command is None:
                run.checkpoint(status, 0)
                continue
            rc = await self._run_shell(run, command)
            if step == "build" and rc != 0:
                build_ok = False
            run.checkpoint(status, rc)

    async def _run_shell(self, run: Run, command: str, batch: bool = True) -> int:
        """Run one batch step (or a query of a non-Python runtime) with ``/bin/sh -c``, streaming into ``run``."""
        env = dict(self.env)
        if batch:
            env["_BACKEND_BATCH_MODE"] = "1"
        env.setdefault("PYTHONUNBUFFERED", "1")  # stream python programs' output as it happens
        proc = subprocess.Popen(
            ["/bin/sh", "-c", command],
            stdin=subprocess.DEVNULL,
            stdout=subprocess.PIPE,
            stderr=subprocess.PIPE,
            cwd=self.workdir,
            env=env,
            start_new_session=True,
        )
        self.active_proc = proc
        loop = asyncio.get_running_loop()
        assert proc.stdout is not None and proc.stderr is not None
        pipes = {proc.stdout.fileno(): ("stdout", proc.stdout), proc.stderr.fileno(): ("stderr", proc.stderr)}
        decoders = {fd: codecs.getincrementaldecoder("utf-8")(errors="replace") for fd in pipes}
        eof: asyncio.Future[None] = loop.create_future()
        open_fds = set(pipes)

        def close_pipe(fd: int) -> None:
            loop.remove_reader(fd)
            tail = decoders[fd].decode(b"", final=True)
            if tail:
                run.add_output(pipes[fd][0], tail)
            pipes[fd][1].close()
            open_fds.discard(fd)
            if not open_fds and not eof.done():
                eof.set_result(None)

        def on_readable(fd: int) -> None:
            while fd in open_fds:
                try:
                    data = os.read(fd, 65536)
                except BlockingIOError:
                    return
                except OSError:
                    data = b""
                if not data:
                    close_pipe(fd)
                    return
                text = decoders[fd].decode(data)
                if text:
                    run.add_output(pipes[fd][0], text)

        for fd in pipes:
            os.set_blocking(fd, False)
            loop.add_reader(fd, on_readable, fd)
        try:
            rc = await wait_process(proc)
            if open_fds:
                # Whatever the step wrote is in the pipes by now; only background
                # jobs can keep them open, and they must not hold the run.
                with contextlib.suppress(asyncio.TimeoutError):
                    await asyncio.wait_for(asyncio.shield(eof), PIPE_GRACE_SECONDS)
                for fd in list(open_fds):
                    on_readable(fd)
                    if fd in open_fds:
                        close_pipe(fd)
        except BaseException:
            killpg_quietly(proc.pid, signal.SIGKILL)
            for fd in list(open_fds):
                close_pipe(fd)
            raise
        finally:
            self.active_proc = None
        return 128 - rc if rc < 0 else rc


# --------------------------------------------------------------------------------------
# Entry point
# --------------------------------------------------------------------------------------


def make_undumpable() -> bool:
    """``prctl(PR_SET_DUMPABLE, 0)``: user code (same uid, no CAP_SYS_PTRACE) can then neither
    ptrace this process nor open its ``/proc/<pid>/mem``, ``fd/`` or ``environ``, so it cannot take
    over the connection to the agent.  Children get it back at ``execve``."""
    try:
        import ctypes

        libc = ctypes.CDLL(None, use_errno=True)
        if libc.prctl(4, 0, 0, 0, 0) != 0:  # PR_SET_DUMPABLE
            raise OSError(ctypes.get_errno(), "prctl(PR_SET_DUMPABLE) failed")
    except (ImportError, OSError, AttributeError) as e:
        log.warning("cannot protect the runner from tracing: %s", e)
        return False
    return True


def run_as_init(child_pid: int) -> NoReturn:
    """Stay behind as PID 1: reap every orphan, forward signals, exit with the child."""

    def forward(signum: int, frame: object) -> None:
        with contextlib.suppress(ProcessLookupError):
            os.kill(child_pid, signum)

    for sig in (signal.SIGTERM, signal.SIGINT, signal.SIGHUP):
        signal.signal(sig, forward)
    while True:
        try:
            pid, status = os.wait()
        except ChildProcessError:
            os._exit(0)
        if pid == child_pid:
            code = os.waitstatus_to_exitcode(status)
            os._exit(128 - code if code < 0 else code)


def parse_args(argv: list[str] | None = None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(description="Backend.AI kernel runner")
    parser.add_argument("--socket", required=True, help="Unix socket path to listen on")
    parser.add_argument("--runtime-type", default="python", help="python, c, cpp, ...")
    parser.add_argument(
        "--flush-timeout",
        type=float,
        default=1.0,
        help="seconds an execute call waits before returning 'continued'",
    )
    parser.add_argument("--workdir", default=None, help="working directory for user code (default: cwd)")
    parser.add_argument(
        "--oom-events-file",
        action="append",
        default=None,
        help="cgroup file with an 'oom_kill N' line (repeatable; default: cgroup v1 and v2 paths)",
    )
    parser.add_argument(
        "--runtime-path",
        default=sys.executable,
        help="the image's ai.backend.runtime-path, {runtime_path} in service definitions (default: this Python)",
    )
    parser.add_argument("--service-defs-dir", default=SERVICE_DEFS_DIR, help="where the image's service-defs are")
    parser.add_argument("--reaper", action="store_true", help="act as init even when not PID 1")
    parser.add_argument("--debug", action="store_true", help="verbose logging to stderr")
    return parser.parse_args(argv)


def main(argv: list[str] | None = None) -> int:
    """Start the runner; returns its exit code."""
    args = parse_args(argv)
    make_undumpable()  # before the fork: the init process is protected too
    if os.getpid() == 1 or args.reaper:
        pid = os.fork()
        if pid > 0:
            run_as_init(pid)
    logging.basicConfig(
        level=logging.DEBUG if args.debug else logging.WARNING,
        format="kernel-runner %(levelname)s: %(message)s",
    )
    workdir = os.path.abspath(args.workdir or os.getcwd())
    supervisor = Supervisor(
        socket_path=args.socket,
        runtime_type=args.runtime_type,
        flush_timeout=max(0.0, args.flush_timeout),
        workdir=workdir,
        oom_files=list(args.oom_events_file or DEFAULT_OOM_FILES),
        runtime_path=args.runtime_path,
        service_defs_dir=args.service_defs_dir,
    )
    return asyncio.run(supervisor.serve())


if __name__ == "__main__":
    sys.exit(main())
