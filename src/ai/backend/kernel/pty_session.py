"""Terminals for the kernel runner: a login shell on a pseudo-terminal, served on its own Unix socket.

The runner's ``pty_open`` op calls :meth:`PtyManager.open`, which starts ``/bin/bash -l`` (``/bin/sh``
when bash is missing) on a fresh pseudo-terminal in the work dir and listens on
``<ipc dir>/pty-<random>.sock`` (mode 0600) for exactly one connection: the agent's. Both directions
use the tiny framing below; the socket is closed when the shell exits, and closing it (or a ``close``
frame) kills every process of the terminal's session, so nothing outlives the terminal.

Framing: one kind byte, a 4-byte big-endian payload length, the payload.

========  =========  ===================================================================
kind      direction  payload
========  =========  ===================================================================
``o``     to agent   raw bytes the terminal produced
``e``     to agent   a UTF-8 error message (the terminal stays usable)
``i``     to runner  raw bytes to type
``r``     to runner  rows and columns, two big-endian unsigned shorts (TIOCSWINSZ)
``R``     to runner  restart: kill the shell's whole session and start a fresh shell
``c``     to runner  close the terminal
========  =========  ===================================================================

Only the standard library is used (this runs inside arbitrary kernel images).
"""

from __future__ import annotations

import asyncio
import contextlib
import errno
import fcntl
import logging
import os
import secrets
import shutil
import signal
import struct
import subprocess
import termios
from typing import Any

from ai.backend.kernel.processes import wait_process

__all__ = [
    "KIND_CLOSE",
    "KIND_ERROR",
    "KIND_OUTPUT",
    "KIND_RESIZE",
    "KIND_RESTART",
    "KIND_STDIN",
    "MAX_FRAME",
    "MAX_PTYS",
    "FrameDecoder",
    "FrameError",
    "PtyError",
    "PtyManager",
    "PtySession",
    "decode_resize",
    "encode_frame",
    "encode_resize",
    "read_frame",
    "session_pids",
]

log = logging.getLogger("ai.backend.kernel.pty")

KIND_OUTPUT = b"o"
KIND_ERROR = b"e"
KIND_STDIN = b"i"
KIND_RESIZE = b"r"
KIND_RESTART = b"R"
KIND_CLOSE = b"c"
KINDS = frozenset({KIND_OUTPUT, KIND_ERROR, KIND_STDIN, KIND_RESIZE, KIND_RESTART, KIND_CLOSE})
_HEADER = struct.Struct(">cI")
_SIZE = struct.Struct(">HH")
#: Largest payload of one frame; a bigger announced length means a corrupt or hostile peer.
MAX_FRAME = 1 << 20
#: Terminals one runner serves at once.
MAX_PTYS = 8
#: Typed bytes waiting for the shell to read them; input beyond this is refused with an error frame.
MAX_PENDING_STDIN = 4 << 20
#: How long the runner waits for the agent to connect to a new terminal's socket.
CONNECT_TIMEOUT = 30.0
READ_CHUNK = 65536
DEFAULT_ROWS, DEFAULT_COLS = 24, 80
MAX_DIMENSION = 1000


class FrameError(ValueError):
    """A frame could not be encoded or decoded."""


class PtyError(Exception):
    """A terminal could not be opened."""


def encode_frame(kind: bytes, payload: bytes = b"") -> bytes:
    """One frame: the kind byte, the payload length and the payload."""
    if kind not in KINDS:
        raise FrameError(f"unknown frame kind {kind!r}")
    if len(payload) > MAX_FRAME:
        raise FrameError(f"frame payload too large ({len(payload)} bytes)")
    return _HEADER.pack(kind, len(payload)) + payload


def encode_resize(rows: int, cols: int) -> bytes:
    """The payload of a resize frame."""
    if not (1 <= rows <= MAX_DIMENSION and 1 <= cols <= MAX_DIMENSION):
        raise FrameError(f"terminal size {rows}x{cols} is out of range 1..{MAX_DIMENSION}")
    return _SIZE.pack(rows, cols)


def decode_resize(payload: bytes) -> tuple[int, int]:
    """``(rows, cols)`` from a resize frame's payload."""
    if len(payload) != _SIZE.size:
        raise FrameError(f"a resize payload has {_SIZE.size} bytes, not {len(payload)}")
    rows, cols = _SIZE.unpack(payload)
    if not (1 <= rows <= MAX_DIMENSION and 1 <= cols <= MAX_DIMENSION):
        raise FrameError(f"terminal size {rows}x{cols} is out of range 1..{MAX_DIMENSION}")
    return rows, cols


class FrameDecoder:
    """Incremental decoder: :meth:`feed` bytes as they arrive, get the completed ``(kind, payload)`` frames."""

    def __init__(self) -> None:
        self._buf = bytearray()

    def feed(self, data: bytes) -> list[tuple[bytes, bytes]]:
        """Consume ``data``; raises :class:`FrameError` on an unknown kind or an oversized frame."""
        self._buf += data
        frames: list[tuple[bytes, bytes]] = []
        while len(self._buf) >= _HEADER.size:
            kind, length = _HEADER.unpack_from(self._buf)
            if kind not in KINDS:
                raise FrameError(f"unknown frame kind {kind!r}")
            if length > MAX_FRAME:
                raise FrameError(f"announced frame size {length} exceeds the limit")
            end = _HEADER.size + length
            if len(self._buf) < end:
                break
            frames.append((kind, bytes(self._buf[_HEADER.size : end])))
            del self._buf[:end]
        return frames

    @property
    def pending(self) -> int:
        """Bytes of an incomplete frame held back."""
        return len(self._buf)


async def read_frame(reader: asyncio.StreamReader) -> tuple[bytes, bytes] | None:
    """Read one frame; ``None`` when the peer closed the stream (also in the middle of a frame)."""
    try:
        header = await reader.readexactly(_HEADER.size)
        kind, length = _HEADER.unpack(header)
        if kind not in KINDS:
            raise FrameError(f"unknown frame kind {kind!r}")
        if length > MAX_FRAME:
            raise FrameError(f"announced frame size {length} exceeds the limit")
        payload = await reader.readexactly(length) if length else b""
    except asyncio.IncompleteReadError:
        return None
    return kind, payload


# --------------------------------------------------------------------------------------
# Processes of a terminal
# --------------------------------------------------------------------------------------


def session_pids(sid: int, proc_root: str = "/proc") -> list[int]:
    """Live (non-zombie) processes whose session id is ``sid``, read from ``/proc/<pid>/stat``."""
    pids: list[int] = []
    try:
        names = os.listdir(proc_root)
    except OSError:
        return pids
    for name in names:
        if not name.isdigit():
            continue
        try:
            with open(os.path.join(proc_root, name, "stat"), "rb") as f:
                stat = f.read()
        except OSError:
            continue  # gone meanwhile
        # "pid (comm) state ppid pgrp session ..."; comm may contain spaces and parentheses.
        fields = stat[stat.rfind(b")") + 2 :].split()
        if len(fields) >= 4 and fields[0] != b"Z" and fields[3] == str(sid).encode():
            pids.append(int(name))
    return pids


def kill_session(sid: int, proc_root: str = "/proc") -> None:
    """SIGKILL every process of session ``sid`` (repeated: a process may fork while we look)."""
    with contextlib.suppress(ProcessLookupError, PermissionError):
        os.killpg(sid, signal.SIGKILL)
    for _ in range(20):
        pids = session_pids(sid, proc_root)
        if not pids:
            return
        for pid in pids:
            with contextlib.suppress(ProcessLookupError, PermissionError):
                os.kill(pid, signal.SIGKILL)


def _become_terminal_owner() -> None:
    # Runs in the child after setsid(): make the pty (already fd 0) its controlling terminal, so that
    # job control and Ctrl-C work in the shell.
    fcntl.ioctl(0, termios.TIOCSCTTY, 0)


def set_winsize(fd: int, rows: int, cols: int) -> None:
    """Set a terminal's size (on the master, this also sends SIGWINCH to its foreground job)."""
    fcntl.ioctl(fd, termios.TIOCSWINSZ, struct.pack("HHHH", rows, cols, 0, 0))


def spawn_on_pty(
    argv: list[str], env: dict[str, str], cwd: str, rows: int, cols: int
) -> tuple[subprocess.Popen[bytes], int]:
    """Start ``argv`` as the leader of a new session on a fresh pseudo-terminal of ``rows`` x ``cols``, the
    terminal being its controlling terminal; returns the process and the (non-blocking) master fd."""
    master, slave = os.openpty()
    try:
        set_winsize(slave, rows, cols)
        os.set_blocking(master, False)
        proc = subprocess.Popen(
            argv,
            stdin=slave,
            stdout=slave,
            stderr=slave,
            cwd=cwd,
            env=env,
            close_fds=True,
            start_new_session=True,
            preexec_fn=_become_terminal_owner,
        )
    except BaseException:
        os.close(master)
        raise
    finally:
        os.close(slave)  # the child holds the only copies: EIO on the master once they are all gone
    return proc, master


def find_shell() -> list[str]:
    """The shell command line: a bash login shell, else ``/bin/sh``."""
    bash = "/bin/bash" if os.access("/bin/bash", os.X_OK) else shutil.which("bash")
    return [bash, "-l"] if bash else ["/bin/sh", "-l"]


def _wake(fut: asyncio.Future[None]) -> None:
    if not fut.done():
        fut.set_result(None)


class _Shell:
    """One shell on one pseudo-terminal (a restart makes a new one)."""

    def __init__(self, argv: list[str], env: dict[str, str], workdir: str, rows: int, cols: int) -> None:
        self.proc, self.master = spawn_on_pty(argv, env, workdir, rows, cols)
        self.closed = False

    def kill(self) -> None:
        """Kill the shell and everything started in its session."""
        kill_session(self.proc.pid)

    def close(self) -> None:
        if not self.closed:
            self.closed = True
            os.close(self.master)


class PtySession:
    """A terminal: a shell, its socket and the relay between them."""

    def __init__(self, manager: PtyManager, env: dict[str, str], rows: int, cols: int) -> None:
        self.manager = manager
        self.env = env
        self.rows, self.cols = rows, cols
        self.name = f"pty-{secrets.token_hex(8)}.sock"
        self.path = os.path.join(manager.ipc_dir, self.name)
        self.shell: _Shell | None = None
        self._server: asyncio.AbstractServer | None = None
        self._connected = asyncio.Event()
        self._writer: asyncio.StreamWriter | None = None
        self._stdin = bytearray()
        self._closed = False
        self._task: asyncio.Task[None] | None = None
        self._out_task: asyncio.Task[None] | None = None
        self._exit_task: asyncio.Task[None] | None = None

    # -- setup ---------------------------------------------------------------------------

    async def start(self) -> None:
        """Listen on the socket (0600) and start the shell; the relay runs in the background."""
        old_umask = os.umask(0o177)  # never a moment where others could connect
        try:
            self._server = await asyncio.start_unix_server(self._on_connection, path=self.path, limit=MAX_FRAME)
        finally:
            os.umask(old_umask)
        os.chmod(self.path, 0o600)
        try:
            self._spawn()
        except (OSError, subprocess.SubprocessError) as e:
            await self.close()
            raise PtyError(f"cannot start a shell: {e}") from e
        self._task = asyncio.ensure_future(self._wait_for_agent())

    def _spawn(self) -> None:
        self.shell = _Shell(find_shell(), self.env, self.manager.workdir, self.rows, self.cols)
        self._stdin.clear()
        loop = asyncio.get_running_loop()
        shell = self.shell
        self._exit_task = loop.create_task(self._watch_exit(shell))
        if self._writer is not None:
            self._out_task = loop.create_task(self._pump_output(shell, self._writer))

    async def _wait_for_agent(self) -> None:
        try:
            await asyncio.wait_for(self._connected.wait(), CONNECT_TIMEOUT)
        except TimeoutError:
            log.warning("nobody connected to %s; closing it", self.name)
            await self.close()

    async def _on_connection(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        if self._writer is not None or self._closed:
            writer.close()  # one client per terminal
            return
        self._writer = writer
        self._connected.set()
        # The listening socket is no longer needed: nobody else may attach to this terminal.
        if self._server is not None:
            self._server.close()
        with contextlib.suppress(FileNotFoundError):
            os.unlink(self.path)
        if self.shell is not None and not self.shell.closed:
            self._out_task = asyncio.get_running_loop().create_task(self._pump_output(self.shell, writer))
        try:
            await self._read_requests(reader)
        finally:
            await self.close()

    # -- agent → terminal ---------------------------------------------------------------------

    async def _read_requests(self, reader: asyncio.StreamReader) -> None:
        while not self._closed:
            try:
                frame = await read_frame(reader)
            except FrameError as e:
                self._send(KIND_ERROR, f"protocol error: {e}".encode())
                return
            except (ConnectionError, OSError):
                return
            if frame is None:
                return
            kind, payload = frame
            if kind == KIND_STDIN:
                self._type(payload)
            elif kind == KIND_RESIZE:
                try:
                    self.rows, self.cols = decode_resize(payload)
                except FrameError as e:
                    self._send(KIND_ERROR, str(e).encode())
                    continue
                if self.shell is not None and not self.shell.closed:
                    with contextlib.suppress(OSError):
                        set_winsize(self.shell.master, self.rows, self.cols)  # also SIGWINCH to the foreground
            elif kind == KIND_RESTART:
                await self.restart()
            elif kind == KIND_CLOSE:
                return
            else:
                self._send(KIND_ERROR, f"unexpected frame kind {kind!r}".encode())

    def _type(self, data: bytes) -> None:
        shell = self.shell
        if shell is None or shell.closed or not data:
            return
        if len(self._stdin) + len(data) > MAX_PENDING_STDIN:
            self._send(KIND_ERROR, b"input dropped: the terminal is not reading its input")
            return
        was_empty = not self._stdin
        self._stdin += data
        if was_empty:
            self._flush_stdin(shell)

    def _flush_stdin(self, shell: _Shell) -> None:
        loop = asyncio.get_running_loop()
        while self._stdin and shell is self.shell and not shell.closed:
            try:
                n = os.write(shell.master, self._stdin)
            except BlockingIOError:
                # The terminal's input queue is full; continue once the shell reads some.
                loop.add_writer(shell.master, self._on_writable, shell)
                return
            except OSError:
                self._stdin.clear()
                return
            del self._stdin[:n]
        with contextlib.suppress(ValueError, OSError):
            loop.remove_writer(shell.master)

    def _on_writable(self, shell: _Shell) -> None:
        loop = asyncio.get_running_loop()
        with contextlib.suppress(ValueError, OSError):
            loop.remove_writer(shell.master)
        self._flush_stdin(shell)

    # -- terminal → agent ---------------------------------------------------------------------

    def _send(self, kind: bytes, payload: bytes) -> None:
        writer = self._writer
        if writer is None or writer.is_closing():
            return
        with contextlib.suppress(ConnectionError, OSError, RuntimeError):
            writer.write(encode_frame(kind, payload))

    async def _read_master(self, shell: _Shell) -> bytes:
        """Next output of the shell's terminal; ``b""`` once nothing can write to it any more."""
        loop = asyncio.get_running_loop()
        while True:
            try:
                return os.read(shell.master, READ_CHUNK)
            except BlockingIOError:
                pass
            except OSError as e:
                if e.errno == errno.EIO:
                    return b""  # every process holding the terminal is gone
                raise
            fut: asyncio.Future[None] = loop.create_future()
            loop.add_reader(shell.master, _wake, fut)
            try:
                await fut
            finally:
                with contextlib.suppress(ValueError, OSError):
                    loop.remove_reader(shell.master)

    async def _pump_output(self, shell: _Shell, writer: asyncio.StreamWriter) -> None:
        with contextlib.suppress(ConnectionError, OSError, RuntimeError):
            while not shell.closed:
                data = await self._read_master(shell)
                if not data:
                    return
                writer.write(encode_frame(KIND_OUTPUT, data))
                await writer.drain()  # a slow client slows the shell down instead of filling memory

    def _drain_master(self, shell: _Shell) -> None:
        """Forward what the terminal still holds (the last words of an exiting shell)."""
        for _ in range(64):
            try:
                data = os.read(shell.master, READ_CHUNK)
            except OSError:
                return
            if not data:
                return
            self._send(KIND_OUTPUT, data)

    async def _watch_exit(self, shell: _Shell) -> None:
        await wait_process(shell.proc)
        if shell is not self.shell or self._closed:
            return  # replaced by a restart, or closing anyway
        # The shell ended by itself (``exit``): its terminal ends with it, and so do its leftovers.
        shell.kill()
        if self._out_task is not None:
            self._out_task.cancel()
        self._drain_master(shell)
        await self.close()

    # -- lifecycle ---------------------------------------------------------------------------------

    async def restart(self) -> None:
        """Kill the shell's whole session and start a fresh shell (same size, same environment)."""
        old = self.shell
        if old is not None:
            self.shell = None
            if self._out_task is not None:
                self._out_task.cancel()
            old.kill()
            with contextlib.suppress(Exception):
                await asyncio.wait_for(wait_process(old.proc), 5.0)
            self._forget(old)
        if self._closed:
            return
        try:
            self._spawn()
        except (OSError, subprocess.SubprocessError) as e:
            self._send(KIND_ERROR, f"cannot restart the shell: {e}".encode())
            await self.close()

    def _forget(self, shell: _Shell) -> None:
        loop = asyncio.get_running_loop()
        if not shell.closed:
            with contextlib.suppress(ValueError, OSError):
                loop.remove_reader(shell.master)
            with contextlib.suppress(ValueError, OSError):
                loop.remove_writer(shell.master)
        shell.close()

    async def close(self) -> None:
        """Kill the shell and its session, close the socket; idempotent."""
        if self._closed:
            return
        self._closed = True
        self.manager.sessions.pop(self.name, None)
        if self._server is not None:
            self._server.close()
        with contextlib.suppress(FileNotFoundError):
            os.unlink(self.path)
        shell, self.shell = self.shell, None
        for task in (self._out_task, self._exit_task):
            if task is not None and task is not asyncio.current_task():
                task.cancel()
        if shell is not None:
            shell.kill()
            with contextlib.suppress(Exception):
                await asyncio.wait_for(wait_process(shell.proc), 5.0)  # reaped: no zombie left behind
            self._forget(shell)
        writer, self._writer = self._writer, None
        if writer is not None:
            with contextlib.suppress(ConnectionError, OSError, RuntimeError):
                await writer.drain()
            writer.close()
        if self._task is not None and self._task is not asyncio.current_task():
            self._task.cancel()


class PtyManager:
    """The runner's open terminals (at most :data:`MAX_PTYS`)."""

    def __init__(self, ipc_dir: str, workdir: str, limit: int = MAX_PTYS) -> None:
        self.ipc_dir = ipc_dir
        self.workdir = workdir
        self.limit = limit
        self.sessions: dict[str, PtySession] = {}

    async def open(self, env: dict[str, str], rows: Any = None, cols: Any = None) -> str:
        """Start a terminal with ``env`` (plus ``TERM=xterm-256color``); returns its socket's file name."""
        if len(self.sessions) >= self.limit:
            raise PtyError(f"too many open terminals (at most {self.limit}); close one first")
        r = DEFAULT_ROWS if rows is None else rows
        c = DEFAULT_COLS if cols is None else cols
        if not (isinstance(r, int) and isinstance(c, int) and 1 <= r <= MAX_DIMENSION and 1 <= c <= MAX_DIMENSION):
            raise PtyError(f"rows and cols must be integers in 1..{MAX_DIMENSION}")
        shell_env = dict(env)
        shell_env["TERM"] = "xterm-256color"
        shell_env.setdefault("HOME", self.workdir)
        session = PtySession(self, shell_env, r, c)
        self.sessions[session.name] = session
        try:
            await session.start()
        except BaseException:
            self.sessions.pop(session.name, None)
            raise
        return session.name

    async def close_all(self) -> None:
        """Close every terminal (the runner is shutting down)."""
        for session in list(self.sessions.values()):
            await session.close()
