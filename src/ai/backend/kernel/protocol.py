"""Message framing shared by the agent, the kernel runner and its REPL child.

Every message is one JSON object, encoded as UTF-8 and preceded by its length
as a 4-byte big-endian unsigned integer.  The module is stdlib-only because it
runs inside arbitrary kernel images (and is loaded by file path in the REPL
child, so it must not import any other ``ai.*`` module).
"""

from __future__ import annotations

import asyncio
import json
import socket
import struct
from typing import Any

__all__ = [
    "HEADER_SIZE",
    "MAX_MESSAGE_SIZE",
    "FrameTooLarge",
    "ProtocolError",
    "cap_completions",
    "decode_body",
    "encode",
    "read_message",
    "recv_message_blocking",
    "send_message_blocking",
    "write_message",
]

_HEADER = struct.Struct(">I")
HEADER_SIZE = _HEADER.size
#: Upper bound for one frame; protects both sides from a corrupt length prefix.
MAX_MESSAGE_SIZE = 256 * 1024 * 1024


#: Completion answers (REPL child, runner, agent and manager alike): candidates per answer,
#: characters per candidate (longer ones are dropped) and characters in all.
COMPLETE_MAX_ITEMS = 1000
COMPLETE_MAX_ITEM_CHARS = 1024
COMPLETE_MAX_CHARS = 65_536


def cap_completions(result: Any) -> list[str]:
    """The completion candidates of ``result`` that fit the limits above (strings only)."""
    out: list[str] = []
    total = 0
    if not isinstance(result, list):
        return out
    for cand in result:
        if not isinstance(cand, str) or len(cand) > COMPLETE_MAX_ITEM_CHARS:
            continue
        total += len(cand)
        if total > COMPLETE_MAX_CHARS or len(out) >= COMPLETE_MAX_ITEMS:
            break
        out.append(cand)
    return out


class ProtocolError(ValueError):
    """A frame could not be encoded or decoded."""


def encode(obj: dict[str, Any]) -> bytes:
    """Serialize ``obj`` into one length-prefixed frame."""
    # ensure_ascii keeps lone surrogates (possible in user-produced text) encodable;
    # pure-ASCII output is still valid UTF-8.
    body = json.dumps(obj, separators=(",", ":")).encode("ascii")
    if len(body) > MAX_MESSAGE_SIZE:
        raise ProtocolError(f"message too large ({len(body)} bytes)")
    return _HEADER.pack(len(body)) + body


def decode_body(body: bytes) -> dict[str, Any]:
    """Parse a frame body (without the length prefix) into a dict."""
    try:
        obj = json.loads(body.decode("utf-8"))
    except (UnicodeDecodeError, json.JSONDecodeError) as e:
        raise ProtocolError(f"malformed message: {e}") from e
    if not isinstance(obj, dict):
        raise ProtocolError("a message must be a JSON object")
    return obj


class FrameTooLarge(ProtocolError):
    """The peer announced a frame over the reader's limit (refused before its body is read)."""


def _check_length(length: int, limit: int = MAX_MESSAGE_SIZE) -> None:
    if length > limit:
        raise FrameTooLarge(f"a frame of {length} bytes, over the limit of {limit}")


async def read_message(reader: asyncio.StreamReader, max_size: int = MAX_MESSAGE_SIZE) -> dict[str, Any] | None:
    """Read one message; return ``None`` when the peer closed the stream.

    A stream that ends in the middle of a frame is treated as closed too: the
    connection is unusable either way. A frame over ``max_size`` is :class:`FrameTooLarge`.
    """
    try:
        header = await reader.readexactly(HEADER_SIZE)
        (length,) = _HEADER.unpack(header)
        _check_length(length, max_size)
        body = await reader.readexactly(length)
    except asyncio.IncompleteReadError:
        return None
    return decode_body(body)


async def write_message(writer: asyncio.StreamWriter, obj: dict[str, Any]) -> None:
    """Write one message and wait until the transport buffer drains."""
    writer.write(encode(obj))
    await writer.drain()


def _recv_exactly(sock: socket.socket, n: int) -> bytes | None:
    buf = bytearray(n)
    view = memoryview(buf)
    got = 0
    while got < n:
        k = sock.recv_into(view[got:])
        if k == 0:
            return None
        got += k
    return bytes(buf)


def recv_message_blocking(sock: socket.socket) -> dict[str, Any] | None:
    """Blocking counterpart of :func:`read_message` for a stream socket."""
    header = _recv_exactly(sock, HEADER_SIZE)
    if header is None:
        return None
    (length,) = _HEADER.unpack(header)
    _check_length(length)
    body = _recv_exactly(sock, length) if length else b""
    if body is None:
        return None
    return decode_body(body)


def send_message_blocking(sock: socket.socket, obj: dict[str, Any]) -> None:
    """Blocking counterpart of :func:`write_message` for a stream socket."""
    sock.sendall(encode(obj))
