"""The ``ttyd`` intrinsic app: a web terminal in the browser (ADR 0012, decision 2).

A small HTTP/1.1 and WebSocket (RFC 6455) server, started by the runner as::

    python3 -I /opt/backend.ai/ai/backend/kernel/webterm.py --host 0.0.0.0 --port 7681

``GET`` of any path serves the page: xterm.js and its fit addon (Debian's ``libjs-xterm``, from
``/usr/share/javascript/xterm``) and ``webterm.js``.  Every URL in the page is relative, so the page works
under any path prefix behind a reverse proxy; a path ending in ``/ws`` is the terminal's WebSocket.  Each
WebSocket runs ``tmux new-session -A -s main`` on a pseudo-terminal, so every tab shows the same tmux
session (a login shell when tmux is missing).

WebSocket messages, browser to server, are text: ``i<typed text>`` or ``r<rows>,<cols>`` (a resize);
server to browser, binary: what the terminal printed.  Messages are limited to :data:`MAX_MESSAGE` bytes
(the page sends pastes in smaller pieces).

There is no authentication here: the port is reachable only through the authenticated proxies.  A
browser's WebSocket must come from the page's own origin (``Origin`` matching ``Host`` or
``X-Forwarded-Host``), so another site open in the same browser cannot drive the terminal.

Only the standard library is used; this runs inside arbitrary kernel images as the unprivileged user.
"""

from __future__ import annotations

import argparse
import asyncio
import base64
import contextlib
import errno
import hashlib
import logging
import os
import shutil
import signal
import struct
import subprocess
import sys
from pathlib import Path
from urllib.parse import urlsplit

# `python3 -I` does not put the script's directory on sys.path; the tree it lives in holds its siblings.
sys.path.insert(0, str(Path(__file__).absolute().parents[3]))

from ai.backend.kernel.pty_session import set_winsize, spawn_on_pty  # noqa: E402

__all__ = [
    "MAX_MESSAGE",
    "WebSocket",
    "WebSocketClosed",
    "WebTerm",
    "main",
    "terminal_command",
]

log = logging.getLogger("ai.backend.kernel.webterm")

XTERM_DIR = "/usr/share/javascript/xterm"
WS_GUID = b"258EAFA5-E914-47DA-95CA-C5AB0DC85B11"
#: Request line and headers, in bytes.
MAX_HEADER = 16 * 1024
#: One WebSocket message from the browser (a frame, or the fragments of one message together).
MAX_MESSAGE = 256 * 1024
#: Typed text the page puts in one message; pastes are split into pieces of this many characters.
CLIENT_CHUNK = 16 * 1024
#: Terminals open at once (each one is a process, and the kernel has a process limit).
MAX_TERMINALS = 32
PING_INTERVAL = 30.0
HEADER_TIMEOUT = 30.0
READ_CHUNK = 65536
MAX_DIMENSION = 1000

OP_CONT, OP_TEXT, OP_BINARY, OP_CLOSE, OP_PING, OP_PONG = 0x0, 0x1, 0x2, 0x8, 0x9, 0xA

#: Runs before anything else in the page: a page opened without the trailing slash (``/prefix/ttyd``)
#: would resolve its relative URLs against the prefix's parent, so the slash is added first.
FIX_BASE_JS = (
    "(function(){var p=location.pathname;"
    "if(p.slice(-1)!=='/'&&p.split('/').pop().indexOf('.')<0)"
    "history.replaceState(null,'',p+'/'+location.search+location.hash);})();"
)
FIX_BASE_HASH = base64.b64encode(hashlib.sha256(FIX_BASE_JS.encode()).digest()).decode()

PAGE = f"""<!doctype html>
<html lang="en">
<head>
<meta charset="utf-8">
<meta name="viewport" content="width=device-width, initial-scale=1">
<title>Terminal</title>
<script>{FIX_BASE_JS}</script>
<link rel="stylesheet" href="xterm.css">
<style>
html, body {{ height: 100%; margin: 0; background: #000; overflow: hidden; }}
#terminal {{ position: absolute; top: 0; left: 0; right: 0; bottom: 20px; padding: 2px 0 0 4px; }}
#status {{ position: absolute; left: 0; right: 0; bottom: 0; height: 20px; line-height: 20px; padding: 0 8px;
  font: 12px sans-serif; color: #aaa; background: #1c1c1c; white-space: nowrap; overflow: hidden; }}
#status.error {{ color: #f88; }}
</style>
</head>
<body>
<div id="terminal"></div>
<div id="status">Connecting...</div>
<script src="xterm.js"></script>
<script src="xterm-addon-fit.js"></script>
<script src="webterm.js"></script>
</body>
</html>
"""

CLIENT_JS = """(function () {
  "use strict";
  var status = document.getElementById("status");
  var HINT = "Select to copy \\u00b7 Ctrl+Shift+C copy \\u00b7 Ctrl+Shift+V paste";
  function show(text, error) { status.textContent = text; status.className = error ? "error" : ""; }
  if (typeof Terminal === "undefined" || typeof FitAddon === "undefined") {
    show("xterm.js is missing from this image (Debian package libjs-xterm)", true);
    return;
  }
  var term = new Terminal({
    cursorBlink: true, scrollback: 5000, fontSize: 14,
    fontFamily: 'Menlo, Consolas, "DejaVu Sans Mono", "Liberation Mono", monospace'
  });
  var fit = new FitAddon.FitAddon();
  term.loadAddon(fit);
  term.open(document.getElementById("terminal"));
  fit.fit();
  var url = new URL("ws", location.href);
  url.protocol = url.protocol === "https:" ? "wss:" : "ws:";
  url.search = ""; url.hash = "";
  var ws = null, ended = false;
  function send(text) { if (ws && ws.readyState === WebSocket.OPEN) ws.send(text); }
  function sendInput(data) {
    var CHUNK = @CHUNK@;
    for (var i = 0; i < data.length;) {
      var end = Math.min(i + CHUNK, data.length);
      var code = data.charCodeAt(end - 1);
      if (end < data.length && code >= 0xD800 && code <= 0xDBFF) end -= 1;  // keep surrogate pairs whole
      send("i" + data.slice(i, end));
      i = end;
    }
  }
  function sendSize() { send("r" + term.rows + "," + term.cols); }
  function connect() {
    ended = false;
    ws = new WebSocket(url.href);
    ws.binaryType = "arraybuffer";
    ws.onopen = function () { show(HINT); sendSize(); term.focus(); };
    ws.onmessage = function (ev) {
      term.write(typeof ev.data === "string" ? ev.data : new Uint8Array(ev.data));
    };
    ws.onclose = function (ev) {
      ended = true;
      show("Disconnected" + (ev.reason ? ": " + ev.reason : "") + ". Press Enter to reconnect.", true);
    };
  }
  term.onData(function (data) {
    if (ended) {
      if (data === "\\r") { term.reset(); connect(); }
      return;
    }
    sendInput(data);
  });
  term.onBinary(function (data) { sendInput(data); });
  term.onResize(sendSize);
  window.addEventListener("resize", function () { fit.fit(); });

  function fallbackCopy(text) {
    var ta = document.createElement("textarea");
    ta.value = text;
    ta.style.position = "fixed"; ta.style.top = "0"; ta.style.opacity = "0";
    document.body.appendChild(ta);
    ta.select();
    try { document.execCommand("copy"); } catch (e) { /* nothing else to try */ }
    document.body.removeChild(ta);
    term.focus();
  }
  function copy(text) {
    if (!text) return;
    // The asynchronous clipboard needs a secure context (https or localhost); plain http gets execCommand.
    if (navigator.clipboard && window.isSecureContext) {
      navigator.clipboard.writeText(text).catch(function () { fallbackCopy(text); });
    } else {
      fallbackCopy(text);
    }
  }
  document.getElementById("terminal").addEventListener("mouseup", function () { copy(term.getSelection()); });
  term.attachCustomKeyEventHandler(function (ev) {
    if (ev.type !== "keydown" || !ev.ctrlKey || !ev.shiftKey) return true;
    if (ev.code === "KeyC") { copy(term.getSelection()); ev.preventDefault(); return false; }
    // Left to the browser, which pastes into xterm.js' text area (and so to the terminal).
    if (ev.code === "KeyV") return false;
    return true;
  });
  connect();
})();
""".replace("@CHUNK@", str(CLIENT_CHUNK))

#: The static files of the page besides webterm.js: content type and path under the xterm.js directory.
STATIC: dict[str, tuple[str, str]] = {
    "xterm.js": ("text/javascript; charset=utf-8", "xterm.js"),
    "xterm.css": ("text/css; charset=utf-8", "xterm.css"),
    "xterm-addon-fit.js": ("text/javascript; charset=utf-8", "addons/fit/xterm-addon-fit.js"),
}
CSP = (
    "default-src 'none'; "
    f"script-src 'self' 'sha256-{FIX_BASE_HASH}'; "
    # xterm.js' DOM renderer writes <style> elements of its own.
    "style-src 'self' 'unsafe-inline'; "
    "connect-src 'self'; font-src 'self' data:; img-src 'self' data:; "
    "frame-ancestors 'self'; base-uri 'none'; form-action 'none'"
)
REASONS = {
    101: "Switching Protocols",
    200: "OK",
    400: "Bad Request",
    403: "Forbidden",
    404: "Not Found",
    405: "Method Not Allowed",
    426: "Upgrade Required",
    431: "Request Header Fields Too Large",
    503: "Service Unavailable",
}


# --------------------------------------------------------------------------------------
# WebSocket framing (RFC 6455, server side)
# --------------------------------------------------------------------------------------


class WebSocketClosed(Exception):
    """The peer closed the WebSocket, broke the protocol or went away."""

    def __init__(self, code: int = 1006, reason: str = "") -> None:
        super().__init__(f"{code} {reason}".strip())
        self.code = code
        self.reason = reason


def accept_key(key: str) -> str:
    """The ``Sec-WebSocket-Accept`` answer to a ``Sec-WebSocket-Key``."""
    return base64.b64encode(hashlib.sha1(key.encode("ascii") + WS_GUID).digest()).decode("ascii")


def encode_frame(opcode: int, payload: bytes, mask: bytes | None = None) -> bytes:
    """One final frame (servers send unmasked frames; ``mask`` is for clients, such as the tests)."""
    n = len(payload)
    head = bytearray([0x80 | opcode])
    mask_bit = 0x80 if mask is not None else 0
    if n < 126:
        head.append(mask_bit | n)
    elif n < 1 << 16:
        head.append(mask_bit | 126)
        head += struct.pack(">H", n)
    else:
        head.append(mask_bit | 127)
        head += struct.pack(">Q", n)
    if mask is None:
        return bytes(head) + payload
    return bytes(head) + mask + _unmask(payload, mask)


def _unmask(data: bytes, mask: bytes) -> bytes:
    # XOR with the 4-byte mask repeated, done as one big integer operation rather than byte by byte.
    if not data:
        return b""
    repeated = (mask * (len(data) // 4 + 1))[: len(data)]
    return (int.from_bytes(data, "big") ^ int.from_bytes(repeated, "big")).to_bytes(len(data), "big")


class WebSocket:
    """The server end of one WebSocket connection."""

    def __init__(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        self.reader = reader
        self.writer = writer
        self.closed = False
        self._send_lock = asyncio.Lock()

    async def send(self, opcode: int, payload: bytes) -> None:
        if self.closed:
            raise WebSocketClosed(1006, "already closed")
        async with self._send_lock:
            try:
                self.writer.write(encode_frame(opcode, payload))
                await self.writer.drain()
            except (ConnectionError, OSError) as e:
                self.closed = True
                raise WebSocketClosed(1006, str(e)) from None

    async def close(self, code: int = 1000, reason: str = "") -> None:
        if self.closed:
            return
        with contextlib.suppress(WebSocketClosed):
            await self.send(OP_CLOSE, struct.pack(">H", code) + reason.encode("utf-8")[:120])
        self.closed = True

    async def _read_frame(self) -> tuple[bool, int, bytes]:
        try:
            b0, b1 = await self.reader.readexactly(2)
            fin, rsv, opcode = bool(b0 & 0x80), b0 & 0x70, b0 & 0x0F
            masked, length = bool(b1 & 0x80), b1 & 0x7F
            if rsv:
                raise WebSocketClosed(1002, "no extension was negotiated")
            if not masked:
                raise WebSocketClosed(1002, "client frames must be masked")
            if opcode >= 0x8 and (not fin or length > 125):
                raise WebSocketClosed(1002, "bad control frame")
            if length == 126:
                (length,) = struct.unpack(">H", await self.reader.readexactly(2))
            elif length == 127:
                (length,) = struct.unpack(">Q", await self.reader.readexactly(8))
            if length > MAX_MESSAGE:
                raise WebSocketClosed(1009, f"a message is limited to {MAX_MESSAGE} bytes")
            mask = await self.reader.readexactly(4)
            payload = _unmask(await self.reader.readexactly(length), mask)
        except (asyncio.IncompleteReadError, ConnectionError, OSError):
            raise WebSocketClosed(1006, "connection lost") from None
        return fin, opcode, payload

    async def receive(self) -> tuple[int, bytes]:
        """The next text or binary message; answers pings, raises :class:`WebSocketClosed` at the end."""
        parts: list[bytes] = []
        size = 0
        first_opcode: int | None = None
        while True:
            try:
                fin, opcode, payload = await self._read_frame()
            except WebSocketClosed as e:
                if e.code != 1006:
                    await self.close(e.code, e.reason)
                raise
            if opcode == OP_PING:
                await self.send(OP_PONG, payload)
                continue
            if opcode == OP_PONG:
                continue
            if opcode == OP_CLOSE:
                code = struct.unpack(">H", payload[:2])[0] if len(payload) >= 2 else 1005
                await self.close(1000 if code == 1005 else code)
                raise WebSocketClosed(code, payload[2:].decode("utf-8", "replace"))
            if opcode not in (OP_CONT, OP_TEXT, OP_BINARY) or (opcode == OP_CONT) != (first_opcode is not None):
                await self.close(1002, "unexpected frame")
                raise WebSocketClosed(1002, "unexpected frame")
            if first_opcode is None:
                first_opcode = opcode
            size += len(payload)
            if size > MAX_MESSAGE:
                await self.close(1009, f"a message is limited to {MAX_MESSAGE} bytes")
                raise WebSocketClosed(1009, "message too big")
            parts.append(payload)
            if fin:
                return first_opcode, b"".join(parts)


# --------------------------------------------------------------------------------------
# The terminal behind one WebSocket
# --------------------------------------------------------------------------------------


def terminal_command(use_tmux: bool = True, tmux_socket: str | None = None) -> list[str]:
    """``tmux new-session -A -s main`` (one session shared by every tab), else a login shell."""
    tmux = shutil.which("tmux") if use_tmux else None
    if tmux:
        socket_args = ["-L", tmux_socket] if tmux_socket else []
        return [tmux, *socket_args, "-2", "new-session", "-A", "-s", "main"]
    for shell in ("/bin/bash", "/bin/sh"):
        if os.access(shell, os.X_OK):
            return [shell, "-l"]
    return ["sh", "-l"]


class Terminal:
    """One process on a fresh pseudo-terminal."""

    def __init__(self, argv: list[str], env: dict[str, str], cwd: str, rows: int = 24, cols: int = 80) -> None:
        self.proc, self.master = spawn_on_pty(argv, env, cwd, rows, cols)

    async def _wait_fd(self, writable: bool) -> None:
        loop = asyncio.get_running_loop()
        fut: asyncio.Future[None] = loop.create_future()

        def ready() -> None:
            if not fut.done():
                fut.set_result(None)

        add, remove = (loop.add_writer, loop.remove_writer) if writable else (loop.add_reader, loop.remove_reader)
        add(self.master, ready)
        try:
            await fut
        finally:
            remove(self.master)

    async def read(self) -> bytes:
        """What the terminal printed next; ``b""`` once it is gone."""
        while True:
            try:
                return os.read(self.master, READ_CHUNK)
            except BlockingIOError:
                await self._wait_fd(writable=False)
            except OSError as e:
                if e.errno == errno.EIO:
                    return b""
                raise

    async def write(self, data: bytes) -> None:
        """Type ``data``; waits while the terminal's input buffer is full (backpressure on the browser)."""
        view = memoryview(data)
        while view:
            try:
                n = os.write(self.master, view)
                view = view[n:]
            except BlockingIOError:
                await self._wait_fd(writable=True)

    def resize(self, rows: int, cols: int) -> None:
        set_winsize(self.master, rows, cols)

    async def close(self) -> None:
        """Hang up: closing the master sends SIGHUP (a tmux client detaches, a shell ends its jobs);
        whatever is left of the process group is killed."""
        with contextlib.suppress(OSError):
            os.close(self.master)
        with contextlib.suppress(ProcessLookupError, PermissionError):
            os.killpg(self.proc.pid, signal.SIGHUP)
        with contextlib.suppress(subprocess.TimeoutExpired):
            await asyncio.to_thread(self.proc.wait, 1.0)
        with contextlib.suppress(ProcessLookupError, PermissionError):
            os.killpg(self.proc.pid, signal.SIGKILL)
        await asyncio.to_thread(self.proc.wait)


def parse_resize(text: str) -> tuple[int, int] | None:
    """``(rows, cols)`` of a resize message body ``"<rows>,<cols>"``; None when malformed."""
    rows_s, _, cols_s = text.partition(",")
    if not (rows_s.isdigit() and cols_s.isdigit()):
        return None
    rows, cols = int(rows_s), int(cols_s)
    if not (1 <= rows <= MAX_DIMENSION and 1 <= cols <= MAX_DIMENSION):
        return None
    return rows, cols


# --------------------------------------------------------------------------------------
# The HTTP server
# --------------------------------------------------------------------------------------


class WebTerm:
    """The web terminal's server: the page, its static files and one terminal per WebSocket."""

    def __init__(
        self,
        argv: list[str],
        env: dict[str, str] | None = None,
        cwd: str | None = None,
        xterm_dir: str = XTERM_DIR,
    ) -> None:
        self.argv = argv
        self.env = dict(os.environ if env is None else env)
        self.env["TERM"] = "xterm-256color"  # what xterm.js is (the images set TERM=xterm)
        self.cwd = cwd or self.env.get("HOME") or os.getcwd()
        self.xterm_dir = Path(xterm_dir)
        self.terminals = 0
        self._static: dict[str, bytes] = {}
        self._tasks: set[asyncio.Task[None]] = set()

    async def close(self) -> None:
        """End every connection (and so every terminal)."""
        for task in list(self._tasks):
            task.cancel()
        if self._tasks:
            await asyncio.wait(list(self._tasks), timeout=5.0)

    async def handle(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        """The connection handler for ``asyncio.start_server``."""
        task = asyncio.current_task()
        if task is not None:
            self._tasks.add(task)
        try:
            await self._handle(reader, writer)
        except (ConnectionError, OSError, asyncio.IncompleteReadError):
            pass
        except asyncio.CancelledError:
            pass  # close(): the connection ends here, its terminal was cleaned up on the way
        except Exception:
            log.exception("error while serving a request")
        finally:
            if task is not None:
                self._tasks.discard(task)
            writer.close()
            with contextlib.suppress(ConnectionError, OSError):
                await writer.wait_closed()

    async def _handle(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        try:
            head = await asyncio.wait_for(reader.readuntil(b"\r\n\r\n"), HEADER_TIMEOUT)
        except asyncio.LimitOverrunError:
            await self._respond(writer, 431, b"request headers too large\n")
            return
        except (asyncio.IncompleteReadError, TimeoutError):
            return
        lines = head.decode("latin-1").split("\r\n")
        parts = lines[0].split(" ")
        if len(parts) != 3 or not parts[1].startswith("/") or parts[2] not in ("HTTP/1.1", "HTTP/1.0"):
            await self._respond(writer, 400, b"bad request line\n")
            return
        method, target, _ = parts
        headers: dict[str, str] = {}
        for line in lines[1:]:
            if not line:
                continue
            name, sep, value = line.partition(":")
            if not sep or not name or name != name.strip():
                await self._respond(writer, 400, b"bad header line\n")
                return
            key = name.lower()
            headers[key] = f"{headers[key]}, {value.strip()}" if key in headers else value.strip()
        path = urlsplit(target).path
        leaf = path.rsplit("/", 1)[-1]
        if method not in ("GET", "HEAD"):
            await self._respond(writer, 405, b"only GET and HEAD\n", extra={"Allow": "GET, HEAD"})
            return
        if leaf == "ws":
            await self._websocket(reader, writer, headers)
        elif leaf == "webterm.js":
            await self._respond(
                writer, 200, CLIENT_JS.encode(), "text/javascript; charset=utf-8", head=method == "HEAD"
            )
        elif leaf in STATIC:
            body = self._read_static(leaf)
            if body is None:
                await self._respond(writer, 404, f"{leaf} is not installed\n".encode(), head=method == "HEAD")
            else:
                ctype = STATIC[leaf][0]
                cache = {"Cache-Control": "max-age=86400"}
                await self._respond(writer, 200, body, ctype, head=method == "HEAD", extra=cache)
        elif leaf == "favicon.ico":
            await self._respond(writer, 404, b"", head=method == "HEAD")
        else:
            await self._respond(writer, 200, PAGE.encode(), "text/html; charset=utf-8", head=method == "HEAD")

    def _read_static(self, leaf: str) -> bytes | None:
        if leaf not in self._static:
            try:
                self._static[leaf] = (self.xterm_dir / STATIC[leaf][1]).read_bytes()
            except OSError:
                return None
        return self._static[leaf]

    async def _respond(
        self,
        writer: asyncio.StreamWriter,
        status: int,
        body: bytes,
        ctype: str = "text/plain; charset=utf-8",
        head: bool = False,
        extra: dict[str, str] | None = None,
    ) -> None:
        fields = {
            "Content-Type": ctype,
            "Content-Length": str(len(body)),
            "Connection": "close",
            "Cache-Control": "no-store",
            "X-Content-Type-Options": "nosniff",
            "Referrer-Policy": "no-referrer",
            "Content-Security-Policy": CSP,
            **(extra or {}),
        }
        lines = [f"HTTP/1.1 {status} {REASONS.get(status, 'Error')}", *(f"{k}: {v}" for k, v in fields.items())]
        writer.write(("\r\n".join(lines) + "\r\n\r\n").encode("latin-1") + (b"" if head else body))
        await writer.drain()

    @staticmethod
    def _same_origin(headers: dict[str, str]) -> bool:
        origin = headers.get("origin")
        if origin is None:
            return True  # not a browser (a browser always sends Origin with a WebSocket)
        hosts = {headers.get("host", "").lower()}
        forwarded = headers.get("x-forwarded-host")
        if forwarded:
            hosts.add(forwarded.split(",")[0].strip().lower())
        return urlsplit(origin).netloc.lower() in hosts

    async def _websocket(
        self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter, headers: dict[str, str]
    ) -> None:
        if (
            "websocket" not in headers.get("upgrade", "").lower()
            or "upgrade" not in headers.get("connection", "").lower()
        ):
            await self._respond(writer, 426, b"a WebSocket upgrade is expected here\n", extra={"Upgrade": "websocket"})
            return
        key = headers.get("sec-websocket-key", "")
        try:
            valid_key = len(base64.b64decode(key, validate=True)) == 16
        except ValueError:
            valid_key = False
        if headers.get("sec-websocket-version") != "13" or not valid_key:
            await self._respond(writer, 400, b"bad WebSocket handshake\n", extra={"Sec-WebSocket-Version": "13"})
            return
        if not self._same_origin(headers):
            await self._respond(writer, 403, b"cross-origin WebSocket refused\n")
            return
        if self.terminals >= MAX_TERMINALS:
            await self._respond(writer, 503, b"too many terminals open\n")
            return
        writer.write(
            (
                "HTTP/1.1 101 Switching Protocols\r\nUpgrade: websocket\r\nConnection: Upgrade\r\n"
                f"Sec-WebSocket-Accept: {accept_key(key)}\r\n\r\n"
            ).encode("latin-1")
        )
        await writer.drain()
        ws = WebSocket(reader, writer)
        try:
            term = Terminal(self.argv, self.env, self.cwd)
        except OSError as e:
            await ws.close(1011, f"cannot start the terminal: {e.strerror}")
            return
        self.terminals += 1
        try:
            await self._relay(ws, term)
        finally:
            self.terminals -= 1
            await term.close()

    async def _relay(self, ws: WebSocket, term: Terminal) -> None:
        async def output() -> None:
            while data := await term.read():
                await ws.send(OP_BINARY, data)
            await ws.close(1000, "the terminal exited")

        async def keepalive() -> None:
            # Idle connections must not look dead to the proxies in between.
            while True:
                await asyncio.sleep(PING_INTERVAL)
                await ws.send(OP_PING, b"")

        async def input_() -> None:
            while True:
                opcode, payload = await ws.receive()
                if opcode != OP_TEXT:
                    continue
                kind, body = payload[:1], payload[1:]
                if kind == b"i":
                    await term.write(body)  # the UTF-8 the browser sent, as typed
                elif kind == b"r":
                    size = parse_resize(body.decode("ascii", "replace"))
                    if size is not None:
                        term.resize(*size)

        tasks = [asyncio.ensure_future(c) for c in (output(), input_(), keepalive())]
        try:
            await asyncio.wait(tasks, return_when=asyncio.FIRST_COMPLETED)
        finally:
            for t in tasks:
                t.cancel()
            results = await asyncio.gather(*tasks, return_exceptions=True)
            for r in results:
                if isinstance(r, Exception) and not isinstance(r, WebSocketClosed):
                    log.warning("terminal relay: %r", r)
            await ws.close(1000)


async def serve(host: str, port: int, webterm: WebTerm) -> None:
    """Serve until the process is terminated."""
    server = await asyncio.start_server(webterm.handle, host, port, limit=MAX_HEADER, reuse_address=True)
    log.info("web terminal on %s:%d", host, port)
    async with server:
        await server.serve_forever()


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description="Backend.AI web terminal (the ttyd app)")
    parser.add_argument("--host", default="0.0.0.0")
    parser.add_argument("--port", type=int, default=7681)
    parser.add_argument("--no-tmux", action="store_true", help="a plain login shell per tab")
    parser.add_argument("--tmux-socket", default=None, help="tmux -L NAME (default: tmux's own socket)")
    parser.add_argument("--xterm-dir", default=XTERM_DIR, help="where xterm.js and its addons are")
    args = parser.parse_args(argv)
    logging.basicConfig(level=logging.INFO, format="webterm %(levelname)s: %(message)s")
    webterm = WebTerm(terminal_command(not args.no_tmux, args.tmux_socket), xterm_dir=args.xterm_dir)
    with contextlib.suppress(KeyboardInterrupt):
        asyncio.run(serve(args.host, args.port, webterm))
    return 0


if __name__ == "__main__":
    sys.exit(main())
