"""Query-mode child of the kernel runner: runs user Python code with persistent globals.

The supervisor (``runner.py``) starts this script as ``python -I repl.py --fd N``
where ``N`` is one end of a Unix socket pair.  Messages on it use the framing of
``protocol.py`` (loaded by file path so that no ``ai`` package ever appears in the
user's ``sys.modules``).

Supervisor -> child: ``{"t": "run", "code"}``, ``{"t": "input", "text"}``,
``{"t": "interrupt"}``, ``{"t": "complete", "rid", "code", "opts"}``.

Child -> supervisor: ``{"t": "ready", "pid"}``, ``{"t": "out", "items"}``,
``{"t": "waiting", "pw", "items"}``, ``{"t": "done", "exit", "items"}``,
``{"t": "completion", "rid", "result"}``.  ``items`` are console items
(``[stream, text]``, and the rich ``["media", [mime, content]]``, ``["html", html]`` and
``["log", [level, timestamp, logger, message]]``) in the exact order they were emitted.

Threads: the main thread only executes user code.  Helper threads (command reader,
output flusher, fd-1/2 reader) block SIGINT so that an interrupt always lands in
the main thread as ``KeyboardInterrupt``.
"""

from __future__ import annotations

import argparse
import ast
import builtins
import codecs
import datetime
import functools
import getpass
import importlib.abc
import importlib.machinery
import importlib.util
import io
import json
import logging
import mmap
import os
import queue
import re
import select
import signal
import socket
import struct
import sys
import threading
import traceback
import types
from collections.abc import Callable
from pathlib import Path
from typing import Any

_THIS_FILE = __file__
_MAIN_IDENT = threading.get_ident()
_TEXT_STREAMS = ("stdout", "stderr")
#: The directory holding the ``ai`` namespace package (``/opt/backend.ai`` in a container).
_KERNEL_ROOT = str(Path(__file__).absolute().parents[3])
#: matplotlib backends that cannot open windows; ``plt.show()`` sends their figures as images.
_NON_INTERACTIVE_BACKENDS = {"agg", "cairo", "pdf", "pgf", "ps", "svg", "template"}
_LOG_LEVELS = {"DEBUG": "debug", "INFO": "info", "WARNING": "warning", "ERROR": "error", "CRITICAL": "fatal"}


def _item_size(value: Any) -> int:
    if isinstance(value, str):
        return len(value)
    if isinstance(value, list):
        return sum(_item_size(v) for v in value)
    return 16


def _load_sibling(filename: str, module_name: str) -> types.ModuleType:
    # Loaded by path under a private name: importing it as ``ai.backend.kernel.<name>``
    # would put a namespace package ``ai`` into sys.modules and shadow a user package `ai`.
    path = Path(__file__).with_name(filename)
    spec = importlib.util.spec_from_file_location(module_name, path)
    if spec is None or spec.loader is None:
        raise ImportError(f"cannot load {path}")
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


_protocol = _load_sibling("protocol.py", "_backendai_runner_protocol")


def _block_sigint() -> None:
    """Keep SIGINT away from helper threads so it interrupts the main thread."""
    signal.pthread_sigmask(signal.SIG_BLOCK, {signal.SIGINT})


class _SigState:
    """Interrupt bookkeeping for the main thread.

    ``critical`` counts nested runner-internal sections of the main thread (writing
    to the console buffer, sending a frame).  A KeyboardInterrupt raised there could
    lose output or corrupt a frame, so it is deferred to the end of the section.
    """

    running = False
    critical = 0
    deferred = False


def _enter_critical() -> None:
    if threading.get_ident() == _MAIN_IDENT:
        _SigState.critical += 1


def _leave_critical() -> None:
    if threading.get_ident() == _MAIN_IDENT:
        _SigState.critical -= 1
        if _SigState.critical == 0 and _SigState.deferred:
            _SigState.deferred = False
            if _SigState.running:
                raise KeyboardInterrupt


def _on_sigint(signum: int, frame: types.FrameType | None) -> None:
    if not _SigState.running:
        return  # a late interrupt between runs must not kill the REPL loop
    if _SigState.critical:
        _SigState.deferred = True
        return
    raise KeyboardInterrupt


class _Channel:
    """The socket to the supervisor; frames are sent atomically under a lock."""

    def __init__(self, sock: socket.socket) -> None:
        self._sock = sock
        self._lock = threading.Lock()

    def send(self, msg: dict[str, Any]) -> None:
        data = _protocol.encode(msg)
        with self._lock:
            try:
                self._sock.sendall(data)
            except OSError:
                os._exit(70)  # the supervisor is gone; nobody is left to report to

    def recv(self) -> dict[str, Any] | None:
        try:
            msg: dict[str, Any] | None = _protocol.recv_message_blocking(self._sock)
        except OSError:
            return None
        return msg


class _Journal:
    """Console items not yet sent, mirrored into memory shared with the supervisor.

    A process killed by SIGKILL (the OOM killer, a timeout), ``os._exit`` or a crash loses
    what it buffered; the supervisor maps the same memory and, once the process is gone,
    takes back the records the last frame it received did not carry.  Layout: a header
    (epoch of the next frame, bytes of records), then records (kind byte, length, payload:
    UTF-8 text for ``o``/``e``, JSON ``[kind, value]`` for ``r``).  Every frame carrying
    items says its epoch (``"e"``); the journal restarts at the next epoch once it is sent.
    """

    HEADER = struct.Struct("<QI")
    RECORD = struct.Struct("<cI")
    _set_length = struct.Struct("<I").pack_into
    KINDS = {"stdout": b"o", "stderr": b"e"}
    __slots__ = ("_mm", "_size", "_end", "epoch")

    def __init__(self, fd: int) -> None:
        self._mm = mmap.mmap(fd, os.fstat(fd).st_size)
        os.close(fd)
        self._size = len(self._mm)
        self.epoch = 0
        self._end = self.HEADER.size
        self.HEADER.pack_into(self._mm, 0, 0, 0)

    def add(self, name: str, value: Any) -> bool:
        """Record one item; False if it does not fit (the caller then sends everything at once)."""
        # Every write() comes here: kept to a few operations (about 1 us for a short text).
        kind = self.KINDS.get(name)
        if kind is None:
            kind, data = b"r", json.dumps([name, value]).encode("ascii")
        else:
            try:
                data = value.encode()
            except UnicodeEncodeError:  # lone surrogates
                data = value.encode("utf-8", "surrogatepass")
        start = self._end
        end = start + 5 + len(data)
        if end > self._size:
            return False
        mm = self._mm
        mm[start:end] = kind + len(data).to_bytes(4, "little") + data
        self._end = end
        # The length last: a process killed in between leaves only whole records behind.
        self._set_length(mm, 8, end - 12)
        return True

    def sent(self) -> None:
        """The frame of ``epoch`` is out: start the next epoch empty."""
        self.epoch += 1
        self._end = self.HEADER.size
        self.HEADER.pack_into(self._mm, 0, self.epoch, 0)


class _Capture:
    """Ordered console buffer shared by every writer in the process.

    ``sys.stdout``/``sys.stderr`` writes are appended directly; bytes written to
    file descriptors 1 and 2 (C extensions, ``os.system``) arrive through pipes and
    are drained before each Python-level write, which keeps the order exact in the
    common case of a subprocess that has exited before the next ``print``.
    Buffered items go to the supervisor when 64 KiB accumulate, shortly after the
    first unsent write (coalescing), and together with ``waiting``/``done``.
    """

    COALESCE_SECONDS = 0.02
    FLUSH_AT = 64 * 1024

    def __init__(self, chan: _Channel, journal: _Journal | None = None) -> None:
        self._chan = chan
        self._journal = journal
        # Reentrant: a finalizer run by the GC inside a locked section may print.
        self._lock = threading.RLock()
        self._cond = threading.Condition(self._lock)
        self._items: list[tuple[str, list[str]]] = []
        self._size = 0
        self._fds: dict[int, tuple[str, codecs.IncrementalDecoder]] = {}
        self._eof: set[int] = set()
        self._quick_poll = select.poll()

    def start(self, redirect_fds: bool = True, pipes: list[int] | None = None) -> None:
        """Redirect fds 1/2 into pipes and start the helper threads.

        ``pipes`` (read, write, read, write) come from the supervisor, which keeps the read
        ends too: what is still in them when this process dies is not lost.
        """
        if redirect_fds:
            for i, (fd, name) in enumerate(((1, "stdout"), (2, "stderr"))):
                r, w = (pipes[2 * i], pipes[2 * i + 1]) if pipes else os.pipe()
                os.dup2(w, fd)  # inheritable: subprocesses of user code write here too
                os.close(w)
                os.set_blocking(r, False)
                self._fds[r] = (name, codecs.getincrementaldecoder("utf-8")(errors="replace"))
                self._quick_poll.register(r, select.POLLIN)
            threading.Thread(target=self._fd_reader, name="bai-fd-reader", daemon=True).start()
        threading.Thread(target=self._flusher, name="bai-flusher", daemon=True).start()

    # -- called with the lock held -------------------------------------------------

    def _append_locked(self, name: str, text: str) -> None:
        was_empty = not self._items
        if self._items and self._items[-1][0] == name:
            self._items[-1][1].append(text)
        else:
            self._items.append((name, [text]))
        self._size += len(text)
        journal = self._journal
        if (journal is not None and not journal.add(name, text)) or self._size >= self.FLUSH_AT:
            self._send_out_locked()
        elif was_empty:
            self._cond.notify()

    def _take_locked(self) -> list[list[Any]]:
        items = [[name, "".join(parts) if name in _TEXT_STREAMS else parts[0]] for name, parts in self._items]
        self._items = []
        self._size = 0
        return items

    def _send_locked(self, msg: dict[str, Any]) -> None:
        """Send ``msg`` with every buffered item (and the journal's epoch)."""
        msg["items"] = self._take_locked()
        journal = self._journal
        if journal is None:
            self._chan.send(msg)
            return
        msg["e"] = journal.epoch
        self._chan.send(msg)
        journal.sent()

    def _send_out_locked(self) -> None:
        if self._items:
            self._send_locked({"t": "out"})

    def _read_fd_locked(self, fd: int) -> None:
        name, decoder = self._fds[fd]
        while True:
            try:
                data = os.read(fd, 65536)
            except BlockingIOError:
                return
            except OSError:
                data = b""
            if not data:
                self._eof.add(fd)
                try:
                    self._quick_poll.unregister(fd)
                except KeyError:
                    pass
                return
            text = decoder.decode(data)
            if text:
                self._append_locked(name, text)

    def _drain_fds_locked(self) -> None:
        if self._fds:
            for fd, _events in self._quick_poll.poll(0):
                self._read_fd_locked(fd)

    # -- public ----------------------------------------------------------------------

    def write(self, name: str, text: str) -> None:
        """Append console text of stream ``name`` (any thread)."""
        if not text:
            return
        # Hot path (every print() calls this twice): critical-section bookkeeping is
        # inlined and the common "same stream as the last item" case is short.
        is_main = threading.get_ident() == _MAIN_IDENT
        if is_main:
            _SigState.critical += 1
        try:
            with self._lock:
                if self._fds and self._quick_poll.poll(0):
                    self._drain_fds_locked()
                items = self._items
                if items and items[-1][0] == name and len(text) <= self.FLUSH_AT:
                    items[-1][1].append(text)
                    self._size += len(text)
                    journal = self._journal
                    if (journal is not None and not journal.add(name, text)) or self._size >= self.FLUSH_AT:
                        self._send_out_locked()
                elif len(text) <= self.FLUSH_AT:
                    self._append_locked(name, text)
                else:  # keep single frames reasonably small
                    for i in range(0, len(text), self.FLUSH_AT):
                        self._append_locked(name, text[i : i + self.FLUSH_AT])
        finally:
            if is_main:
                _SigState.critical -= 1
                if _SigState.deferred and _SigState.critical == 0:
                    _SigState.deferred = False
                    if _SigState.running:
                        raise KeyboardInterrupt

    def add_item(self, kind: str, value: Any) -> None:
        """Append one rich console item (``media``, ``html``, ``log``) after everything written so far."""
        _enter_critical()
        try:
            with self._lock:
                self._drain_fds_locked()
                was_empty = not self._items
                self._items.append((kind, [value]))  # never merged with a neighbour
                self._size += _item_size(value)
                journal = self._journal
                if (journal is not None and not journal.add(kind, value)) or self._size >= self.FLUSH_AT:
                    self._send_out_locked()
                elif was_empty:
                    self._cond.notify()
        finally:
            _leave_critical()

    def emit(self, msg: dict[str, Any]) -> None:
        """Send ``msg`` carrying every console item written before it."""
        _enter_critical()
        try:
            with self._lock:
                self._drain_fds_locked()
                self._send_locked(msg)
        finally:
            _leave_critical()

    # -- helper threads ----------------------------------------------------------------

    def _flusher(self) -> None:
        _block_sigint()
        with self._cond:
            while True:
                while not self._items:
                    self._cond.wait()
                self._cond.wait(self.COALESCE_SECONDS)
                self._send_out_locked()

    def _fd_reader(self) -> None:
        _block_sigint()
        poller = select.poll()
        for fd in self._fds:
            poller.register(fd, select.POLLIN)
        remaining = set(self._fds)
        while remaining:
            for fd, _events in poller.poll():
                with self._lock:
                    self._read_fd_locked(fd)
                if fd in self._eof:
                    poller.unregister(fd)
                    remaining.discard(fd)


class _ConsoleStream(io.TextIOBase):
    """Replacement for ``sys.stdout``/``sys.stderr`` feeding the console buffer."""

    encoding = "utf-8"
    errors = "strict"

    def __init__(self, capture: _Capture, name: str, fd: int) -> None:
        super().__init__()
        self._capture = capture
        self._name = name
        self._fd = fd
        self.buffer = _BinaryConsole(self)

    @property
    def name(self) -> str:
        return f"<{self._name}>"

    def write(self, s: str) -> int:
        if not isinstance(s, str):
            raise TypeError(f"write() argument must be str, not {type(s).__name__}")
        if s:
            self._capture.write(self._name, s)
        return len(s)

    def writable(self) -> bool:
        return True

    def flush(self) -> None:
        pass  # the console buffer is pushed to the supervisor by the flusher thread

    def isatty(self) -> bool:
        return False

    def fileno(self) -> int:
        return self._fd  # writes through the fd are captured by the pipe readers

    def close(self) -> None:
        pass  # closing would silence the rest of the session


class _BinaryConsole(io.RawIOBase):
    """``sys.stdout.buffer`` equivalent: decodes UTF-8 bytes into the text stream."""

    def __init__(self, text: _ConsoleStream) -> None:
        super().__init__()
        self._text = text
        self._decoder = codecs.getincrementaldecoder("utf-8")(errors="replace")

    def writable(self) -> bool:
        return True

    def write(self, b: Any) -> int:
        data = bytes(b)
        text = self._decoder.decode(data)
        if text:
            self._text.write(text)
        return len(data)

    def fileno(self) -> int:
        return self._text.fileno()

    def close(self) -> None:
        pass


class _Stdin(io.TextIOBase):
    """``sys.stdin`` replacement: each line read becomes a user-input request."""

    encoding = "utf-8"
    errors = "strict"

    def __init__(self, repl: _Repl) -> None:
        super().__init__()
        self._repl = repl

    def readable(self) -> bool:
        return True

    def readline(self, size: int | None = -1) -> str:  # type: ignore[override]
        return self._repl.request_input("", False) + "\n"

    def read(self, size: int | None = -1) -> str:
        return self.readline()

    def isatty(self) -> bool:
        return False

    def fileno(self) -> int:
        return 0

    def close(self) -> None:
        pass  # site's exit()/quit() close stdin before raising SystemExit


def _strip_runner_frames(te: traceback.TracebackException, seen: set[int] | None = None) -> None:
    """Remove frames of this file from a traceback (and its chained exceptions)."""
    seen = set() if seen is None else seen
    if id(te) in seen:
        return
    seen.add(id(te))
    te.stack = traceback.StackSummary.from_list([f for f in te.stack if f.filename != _THIS_FILE])
    for chained in (te.__cause__, te.__context__):
        if chained is not None:
            _strip_runner_frames(chained, seen)
    for sub in getattr(te, "exceptions", None) or ():
        _strip_runner_frames(sub, seen)


def _load_rlcompleter() -> types.ModuleType:
    # rlcompleter imports readline, which may write terminal escapes and is not
    # needed for Completer; hide it during the import only.
    saved = sys.modules.get("readline")
    sys.modules["readline"] = None  # type: ignore[assignment]
    try:
        import rlcompleter
    finally:
        if saved is None:
            del sys.modules["readline"]
        else:
            sys.modules["readline"] = saved
    return rlcompleter


_TOKEN_RE = re.compile(r"[A-Za-z_][\w.]*$|$")


class _Repl:
    """Executes runs in the main thread and serves commands in a reader thread."""

    def __init__(self, chan: _Channel, capture: _Capture) -> None:
        self.chan = chan
        self.capture = capture
        self.main_module = types.ModuleType("__main__")
        self.main_module.__dict__["__builtins__"] = builtins
        self.ns: dict[str, Any] = self.main_module.__dict__
        self._runs: queue.SimpleQueue[str] = queue.SimpleQueue()
        self._inputs: queue.SimpleQueue[str] = queue.SimpleQueue()
        self._completer_mod = _load_rlcompleter()
        self.run_pending = False
        self.interrupt_requested = False

    # -- user-input ----------------------------------------------------------------------

    def request_input(self, prompt: str, password: bool) -> str:
        """Ask the client for a line of input (``waiting-input``) and wait for it."""
        if not self.run_pending:
            raise EOFError("no run is active to receive input")
        if prompt:
            self.capture.write("stdout", prompt)
        self.capture.emit({"t": "waiting", "pw": password})
        return self._inputs.get()

    def input(self, prompt: object = "") -> str:
        """Replacement for :func:`builtins.input`."""
        return self.request_input(str(prompt), False)

    def getpass(self, prompt: str = "Password: ", stream: object = None) -> str:
        """Replacement for :func:`getpass.getpass`."""
        return self.request_input(str(prompt), True)

    # -- completion ------------------------------------------------------------------------

    def complete(self, code: str) -> list[str]:
        """Completion candidates for the identifier/attribute path before the cursor."""
        m = _TOKEN_RE.search(code)
        text = m.group(0) if m else ""
        if not text:
            return []
        completer = self._completer_mod.Completer(self.ns)
        result: list[str] = []
        seen: set[str] = set()
        for state in range(10_000):
            cand = completer.complete(text, state)
            if cand is None:
                break
            # rlcompleter decorates: "print(", "len()", "import ", "try:"
            cand = cand.rstrip(" :")
            if cand.endswith("()"):
                cand = cand[:-2]
            elif cand.endswith("("):
                cand = cand[:-1]
            if cand not in seen:
                seen.add(cand)
                result.append(cand)
        return list(_protocol.cap_completions(result))

    # -- command reader thread ---------------------------------------------------------------

    def reader(self) -> None:
        _block_sigint()
        while True:
            msg = self.chan.recv()
            if msg is None:
                os._exit(0)  # the supervisor went away
            kind = msg.get("t")
            if kind == "run":
                self.run_pending = True
                self._runs.put(str(msg.get("code") or ""))
            elif kind == "input":
                self._inputs.put(str(msg.get("text") or ""))
            elif kind == "interrupt":
                if self.run_pending:
                    # Covers an interrupt that arrives before the code starts running.
                    self.interrupt_requested = True
                    try:
                        # The whole group, like a terminal's Ctrl-C: subprocesses too.
                        os.killpg(os.getpgrp(), signal.SIGINT)
                    except OSError:
                        os.kill(os.getpid(), signal.SIGINT)
            elif kind == "complete":
                try:
                    result = self.complete(str(msg.get("code") or ""))
                except Exception:  # completion must never take the REPL down
                    result = []
                self.chan.send({"t": "completion", "rid": msg.get("rid"), "result": result})
            elif kind == "exit":
                os._exit(0)

    # -- main thread ---------------------------------------------------------------------------

    def loop(self) -> None:
        """Execute queued runs forever."""
        while True:
            try:
                code = self._runs.get()
                self.execute(code)
            except KeyboardInterrupt:
                continue  # a stray interrupt outside user code

    def execute(self, code: str) -> None:
        """Run one snippet and report ``done`` (always, even on runner errors)."""
        exit_code = 0
        try:
            try:
                _SigState.running = True
                if self.interrupt_requested:
                    raise KeyboardInterrupt
                self._run_user_code(code)
            finally:
                _SigState.running = False
        except SystemExit as e:
            exit_code = self._system_exit_code(e)
        except BaseException as e:
            self._report(e)
        finally:
            self.run_pending = False
            self.interrupt_requested = False
            _SigState.deferred = False
        self.capture.emit({"t": "done", "exit": exit_code})

    def _run_user_code(self, code: str) -> None:
        tree = ast.parse(code, "<input>", "exec")
        last: ast.Interactive | None = None
        if tree.body and isinstance(tree.body[-1], ast.Expr):
            # Like an interactive prompt / notebook cell: echo the last expression's value.
            last = ast.Interactive(body=[tree.body.pop()])
        if tree.body:
            exec(compile(tree, "<input>", "exec", dont_inherit=True), self.ns)
        if last is not None:
            exec(compile(last, "<input>", "single", dont_inherit=True), self.ns)

    def _system_exit_code(self, e: SystemExit) -> int:
        code = e.code
        if code is None:
            return 0
        if isinstance(code, int):
            return code
        self.capture.write("stderr", f"{code}\n")
        return 1

    def _report(self, e: BaseException) -> None:
        try:
            sys.last_type, sys.last_value, sys.last_traceback = type(e), e, e.__traceback__
            te = traceback.TracebackException(type(e), e, e.__traceback__, compact=True)
            _strip_runner_frames(te)
            text = "".join(te.format())
        except Exception:  # e.g. an exception whose __str__ raises
            text = f"{type(e).__name__}: <unprintable exception>\n"
        self.capture.write("stderr", text)


# --------------------------------------------------------------------------------------
# Rich console items: media/html (display helpers, matplotlib) and log records
# --------------------------------------------------------------------------------------


class _LogItemHandler(logging.Handler):
    """Turns ``logging`` records into ``log`` console items ``[level, timestamp, logger, message]``."""

    def __init__(self, capture: _Capture) -> None:
        super().__init__(logging.NOTSET)
        self._capture = capture

    @staticmethod
    def level_name(levelno: int) -> str:
        """The console level for a numeric logging level (custom levels round down)."""
        for threshold, name in (
            (logging.CRITICAL, "fatal"),
            (logging.ERROR, "error"),
            (logging.WARNING, "warning"),
            (logging.INFO, "info"),
        ):
            if levelno >= threshold:
                return name
        return "debug"

    def emit(self, record: logging.LogRecord) -> None:
        try:
            message = record.getMessage()
            if record.exc_info:
                message += "\n" + logging.Formatter().formatException(record.exc_info)
            if record.stack_info:
                message += "\n" + record.stack_info
            # timezone.utc rather than datetime.UTC: kernel images may have a Python older than 3.11.
            stamp = datetime.datetime.fromtimestamp(record.created, datetime.timezone.utc).isoformat()  # noqa: UP017
            self._capture.add_item("log", [self.level_name(record.levelno), stamp, record.name, message])
        except KeyboardInterrupt:
            raise
        except Exception:
            self.handleError(record)


def _setup_logging(capture: _Capture) -> None:
    # Unconfigured logging (no handler anywhere) ends at logging.lastResort, which
    # normally prints warnings to stderr: make that the console's log items, for every
    # level the logger lets through.  basicConfig() without a destination (also called
    # implicitly by logging.info() & co.) logs to the console the same way; an explicit
    # stream, file or handler list is the user's choice and is left alone.
    logging.lastResort = _LogItemHandler(capture)
    original = logging.basicConfig

    @functools.wraps(original)
    def basic_config(**kwargs: Any) -> None:
        if not any(k in kwargs for k in ("filename", "stream", "handlers")):
            kwargs["handlers"] = [_LogItemHandler(capture)]
        original(**kwargs)

    logging.basicConfig = basic_config


class _HookedLoader(importlib.abc.Loader):
    """Delegates to the real loader and runs a hook on the module once it is executed."""

    def __init__(self, loader: Any, hook: Callable[[types.ModuleType], None]) -> None:
        self._loader = loader
        self._hook = hook

    def create_module(self, spec: importlib.machinery.ModuleSpec) -> types.ModuleType | None:
        module: types.ModuleType | None = self._loader.create_module(spec)
        return module

    def exec_module(self, module: types.ModuleType) -> None:
        self._loader.exec_module(module)
        try:
            self._hook(module)
        except Exception:  # a failed patch must not break the user's import
            pass

    def __getattr__(self, name: str) -> Any:
        return getattr(self._loader, name)


class _PostImportHooks(importlib.abc.MetaPathFinder):
    """Runs a hook right after one of the named modules is imported (e.g. ``matplotlib.pyplot``)."""

    def __init__(self, hooks: dict[str, Callable[[types.ModuleType], None]]) -> None:
        self._hooks = hooks
        self._busy: set[str] = set()

    def find_spec(self, fullname: str, path: Any, target: types.ModuleType | None = None) -> Any:
        hook = self._hooks.get(fullname)
        if hook is None or fullname in self._busy:
            return None
        self._busy.add(fullname)
        try:
            spec = importlib.util.find_spec(fullname)  # the other finders, not this one again
        finally:
            self._busy.discard(fullname)
        if spec is not None and spec.loader is not None:
            spec.loader = _HookedLoader(spec.loader, hook)
        return spec


def _patch_pyplot(display: types.ModuleType, pyplot: types.ModuleType) -> None:
    """Make ``plt.show()`` send every open figure as a PNG ``media`` item (non-interactive backends)."""
    original: Callable[..., Any] = getattr(pyplot, "show")  # noqa: B009 (a module without stubs)

    @functools.wraps(original)
    def show(*args: Any, **kwargs: Any) -> Any:
        import matplotlib

        if str(matplotlib.get_backend()).lower() not in _NON_INTERACTIVE_BACKENDS:
            return original(*args, **kwargs)
        for num in pyplot.get_fignums():
            display.display_media("image/png", display.figure_to_png(pyplot.figure(num)))
        pyplot.close("all")  # shown once, like a notebook's inline backend
        return None

    setattr(pyplot, "show", show)  # noqa: B010


def _setup_rich_output(capture: _Capture) -> None:
    # The helper module users import as ``ai.backend.kernel.display``: the kernel root goes
    # last on sys.path so that `ai` stays a namespace package a user's own `ai` wins over.
    if _KERNEL_ROOT not in sys.path:
        sys.path.append(_KERNEL_ROOT)
    display = _load_sibling("display.py", "_backendai_display")
    hooks = types.ModuleType(display.HOOK_MODULE)
    hooks.emit = capture.add_item  # type: ignore[attr-defined]
    sys.modules[display.HOOK_MODULE] = hooks
    _setup_logging(capture)
    # No display in a container: matplotlib renders with Agg and plt.show() sends images.
    os.environ.setdefault("MPLBACKEND", "Agg")
    sys.meta_path.insert(0, _PostImportHooks({"matplotlib.pyplot": functools.partial(_patch_pyplot, display)}))


def _fix_sys_path() -> None:
    # -I dropped the working directory, PYTHONPATH and the user site-packages;
    # restore what a plain `python3` started in the work dir would see, so that
    # uploaded modules and `pip install --user` packages can be imported.
    sys.path.insert(0, "")
    extra = [p for p in os.environ.get("PYTHONPATH", "").split(os.pathsep) if p]
    sys.path[1:1] = extra
    try:
        import site

        user_site = site.getusersitepackages()
        if os.path.isdir(user_site) and user_site not in sys.path:
            site.addsitedir(user_site)
    except Exception:
        pass


def main(argv: list[str] | None = None) -> None:
    """Entry point of the REPL child."""
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--fd", type=int, required=True, help="socket fd connected to the supervisor")
    parser.add_argument("--no-fd-capture", action="store_true", help=argparse.SUPPRESS)
    parser.add_argument("--journal-fd", type=int, default=None, help="shared memory for unsent console items")
    parser.add_argument("--pipe-fds", default=None, help="stdout/stderr pipes from the supervisor: r,w,r,w")
    args = parser.parse_args(argv)

    sock = socket.socket(fileno=args.fd)
    os.set_inheritable(args.fd, False)  # user subprocesses must not hold it open
    chan = _Channel(sock)

    for stream in (sys.stdout, sys.stderr):
        if stream is not None:
            stream.flush()
    journal = None
    if args.journal_fd is not None:
        os.set_inheritable(args.journal_fd, False)
        journal = _Journal(args.journal_fd)
    pipes = [int(fd) for fd in args.pipe_fds.split(",")] if args.pipe_fds else None
    for fd in pipes or ():
        os.set_inheritable(fd, False)  # only fds 1/2 (dup2'ed write ends) are for user subprocesses
    capture = _Capture(chan, journal)
    capture.start(redirect_fds=not args.no_fd_capture, pipes=pipes)
    repl = _Repl(chan, capture)

    # The original objects were opened with closefd=False, so dropping them is safe;
    # the __std*__ aliases are replaced too because libraries use them as fallbacks.
    sys.stdout = _ConsoleStream(capture, "stdout", 1)
    sys.stderr = _ConsoleStream(capture, "stderr", 2)
    sys.stdin = _Stdin(repl)
    for alias, stream in (("__stdout__", sys.stdout), ("__stderr__", sys.stderr), ("__stdin__", sys.stdin)):
        setattr(sys, alias, stream)
    builtins.input = repl.input
    getpass.getpass = repl.getpass
    sys.argv = [""]
    sys.modules["__main__"] = repl.main_module
    _fix_sys_path()
    _setup_rich_output(capture)
    signal.signal(signal.SIGINT, _on_sigint)

    threading.Thread(target=repl.reader, name="bai-reader", daemon=True).start()
    chan.send({"t": "ready", "pid": os.getpid()})
    repl.loop()


if __name__ == "__main__":
    main()
