"""The terminal framing (runner ⇄ agent), the manager's client-message validation and the SDK's signed handshake."""

from __future__ import annotations

import asyncio
import base64
import hashlib
import json
import os
import socket
import struct
from pathlib import Path

import httpx
import pytest
from dateutil.parser import isoparse
from websockets.headers import build_host
from websockets.uri import parse_uri

from ai.backend.agent.pty_relay import _control_frame, open_terminal_socket
from ai.backend.client.config import APIConfig
from ai.backend.client.request import Request
from ai.backend.client.session import AsyncSession
from ai.backend.client.ws import build_handshake
from ai.backend.common.auth import BODY_HASH_HEADER, make_signature, parse_authorization
from ai.backend.kernel.pty_session import (
    KIND_CLOSE,
    KIND_ERROR,
    KIND_OUTPUT,
    KIND_RESIZE,
    KIND_RESTART,
    KIND_STDIN,
    MAX_FRAME,
    FrameDecoder,
    FrameError,
    decode_resize,
    encode_frame,
    encode_resize,
    read_frame,
    session_pids,
)
from ai.backend.manager.api.stream import MAX_STDIN_BYTES, parse_pty_message

ALL_KINDS = [KIND_OUTPUT, KIND_ERROR, KIND_STDIN, KIND_RESIZE, KIND_RESTART, KIND_CLOSE]


# ---- runner ⇄ agent framing ----------------------------------------------------------------------


def test_frame_layout() -> None:
    assert encode_frame(KIND_STDIN, b"ls\n") == b"i\x00\x00\x00\x03ls\n"
    assert encode_frame(KIND_RESTART) == b"R\x00\x00\x00\x00"
    assert encode_resize(25, 80) == struct.pack(">HH", 25, 80)


@pytest.mark.parametrize("kind", ALL_KINDS)
def test_roundtrip_every_kind_fed_byte_by_byte(kind: bytes) -> None:
    payload = bytes(range(256)) * 3
    wire = encode_frame(kind, payload) + encode_frame(kind, b"")
    dec = FrameDecoder()
    frames: list[tuple[bytes, bytes]] = []
    for i in range(len(wire)):
        frames += dec.feed(wire[i : i + 1])
    assert frames == [(kind, payload), (kind, b"")]
    assert dec.pending == 0


def test_several_frames_in_one_chunk_and_a_partial_tail() -> None:
    wire = encode_frame(KIND_OUTPUT, b"a") + encode_frame(KIND_ERROR, b"bad") + encode_frame(KIND_OUTPUT, b"tail")
    dec = FrameDecoder()
    assert dec.feed(wire[:-2]) == [(KIND_OUTPUT, b"a"), (KIND_ERROR, b"bad")]
    assert dec.pending == len(encode_frame(KIND_OUTPUT, b"tail")) - 2
    assert dec.feed(wire[-2:]) == [(KIND_OUTPUT, b"tail")]


def test_bad_frames_are_refused() -> None:
    with pytest.raises(FrameError, match="unknown frame kind"):
        FrameDecoder().feed(b"x\x00\x00\x00\x00")
    with pytest.raises(FrameError, match="exceeds"):
        FrameDecoder().feed(b"i" + struct.pack(">I", MAX_FRAME + 1))
    with pytest.raises(FrameError, match="too large"):
        encode_frame(KIND_STDIN, b"x" * (MAX_FRAME + 1))
    with pytest.raises(FrameError, match="unknown"):
        encode_frame(b"z", b"")
    assert FrameDecoder().feed(encode_frame(KIND_STDIN, b"x" * MAX_FRAME))[0][1] == b"x" * MAX_FRAME


@pytest.mark.parametrize(("rows", "cols"), [(0, 80), (24, 0), (1001, 80), (24, 1001), (-1, 5)])
def test_resize_bounds(rows: int, cols: int) -> None:
    with pytest.raises(FrameError):
        encode_resize(rows, cols)
    if rows >= 0 and cols >= 0:
        with pytest.raises(FrameError):
            decode_resize(struct.pack(">HH", rows, cols))


def test_resize_payload() -> None:
    assert decode_resize(encode_resize(1, 1000)) == (1, 1000)
    with pytest.raises(FrameError, match="4 bytes"):
        decode_resize(b"\x00\x18\x00")


async def test_read_frame_from_a_stream() -> None:
    reader = asyncio.StreamReader()
    reader.feed_data(encode_frame(KIND_RESIZE, encode_resize(30, 100)) + encode_frame(KIND_STDIN, b"abc")[:-1])
    reader.feed_eof()
    assert await read_frame(reader) == (KIND_RESIZE, encode_resize(30, 100))
    assert await read_frame(reader) is None  # the stream ended in the middle of a frame
    bad = asyncio.StreamReader()
    bad.feed_data(b"?\x00\x00\x00\x01x")
    with pytest.raises(FrameError):
        await read_frame(bad)


def test_session_pids_reads_proc(tmp_path: Path) -> None:
    def proc(pid: int, comm: str, state: str, sid: int) -> None:
        d = tmp_path / str(pid)
        d.mkdir()
        (d / "stat").write_bytes(f"{pid} ({comm}) {state} 1 {pid} {sid} 0 0 0".encode())

    proc(10, "bash", "S", 10)
    proc(11, "evil) S 1 1 10 (", "S", 99)  # a command name that fakes fields
    proc(12, "sleep", "Z", 10)  # a zombie is already dead
    proc(13, "vim", "T", 10)
    proc(14, "other", "S", 14)
    (tmp_path / "self").mkdir()
    assert sorted(session_pids(10, str(tmp_path))) == [10, 13]
    assert session_pids(99, str(tmp_path)) == [11]
    assert session_pids(10, str(tmp_path / "missing")) == []


# ---- the agent's side ----------------------------------------------------------------------------


def test_agent_control_messages() -> None:
    assert _control_frame('{"type": "resize", "rows": 30, "cols": 100}') == encode_frame(
        KIND_RESIZE, encode_resize(30, 100)
    )
    assert _control_frame('{"type": "restart"}') == encode_frame(KIND_RESTART)
    assert _control_frame('{"type": "close"}') is None
    for bad in ('{"type": "resize", "rows": "30", "cols": 100}', '{"type": "nope"}', "[]", "{"):
        with pytest.raises(ValueError):
            _control_frame(bad)
    with pytest.raises(FrameError):
        _control_frame('{"type": "resize", "rows": 0, "cols": 100}')


async def test_terminal_socket_must_be_a_socket_in_the_ipc_dir(tmp_path: Path) -> None:
    ipc = tmp_path / "ipc"
    ipc.mkdir()
    got: list[bytes] = []

    async def on_conn(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        got.append(await reader.read(5))
        writer.close()

    server = await asyncio.start_unix_server(on_conn, path=str(ipc / "pty-ok.sock"))
    try:
        reader, writer = await open_terminal_socket(ipc, "pty-ok.sock")
        writer.write(b"hello")
        await writer.drain()
        assert await reader.read() == b""
        writer.close()
        assert got == [b"hello"]
        # A symlink planted by the container (e.g. towards a host socket) is not followed.
        host_sock = tmp_path / "host.sock"
        s = socket.socket(socket.AF_UNIX)
        s.bind(str(host_sock))
        s.listen()
        os.symlink(host_sock, ipc / "pty-evil.sock")
        with pytest.raises(ValueError, match="not a socket"):  # O_NOFOLLOW|O_PATH sees the link itself
            await open_terminal_socket(ipc, "pty-evil.sock")
        s.close()
        (ipc / "pty-file.sock").write_text("not a socket")
        with pytest.raises(ValueError, match="not a socket"):
            await open_terminal_socket(ipc, "pty-file.sock")
        for name in ("../host.sock", "runner.sock", "pty-a/b.sock", "pty-.sock"):
            with pytest.raises(ValueError, match="unexpected"):
                await open_terminal_socket(ipc, name)
    finally:
        server.close()


# ---- the manager's validation of client messages --------------------------------------------------


def test_client_messages() -> None:
    assert parse_pty_message(json.dumps({"type": "stdin", "chars": base64.b64encode(b"ls\x03\n").decode()})) == (
        "stdin",
        b"ls\x03\n",
    )
    assert parse_pty_message('{"type": "resize", "rows": 25, "cols": 80}') == ("resize", (25, 80))
    assert parse_pty_message('{"type": "ping"}') == ("ping", None)
    assert parse_pty_message('{"type": "restart"}') == ("restart", None)
    big = base64.b64encode(b"x" * MAX_STDIN_BYTES).decode()
    assert parse_pty_message(json.dumps({"type": "stdin", "chars": big}))[1] == b"x" * MAX_STDIN_BYTES


@pytest.mark.parametrize(
    ("text", "fragment"),
    [
        ("{", "JSON"),
        ('{"type": "ping",}', "JSON"),
        ('"ping"', "object"),
        ('{"type": "stdin", "chars": 5}', "chars"),
        ('{"type": "stdin", "chars": "a*b="}', "base64"),
        ('{"type": "resize", "rows": true, "cols": 80}', "rows"),
        ('{"type": "resize", "rows": 24}', "cols"),
        ('{"type": "resize", "rows": 24, "cols": 1001}', "cols"),
        ('{"type": "resize", "rows": 2.5, "cols": 80}', "rows"),
        ('{"kind": "stdin"}', "unknown message type"),
    ],
)
def test_bad_client_messages(text: str, fragment: str) -> None:
    with pytest.raises(ValueError, match=fragment):
        parse_pty_message(text)


def test_oversized_stdin_is_refused() -> None:
    big = base64.b64encode(b"x" * (MAX_STDIN_BYTES + 3)).decode()
    with pytest.raises(ValueError, match="split"):
        parse_pty_message(json.dumps({"type": "stdin", "chars": big}))


# ---- the SDK's signed handshake -------------------------------------------------------------------


@pytest.mark.parametrize("endpoint", ["http://127.0.0.1:8081", "https://api.example.com", "http://h:80/prefix/"])
async def test_handshake_is_signed_as_sent(endpoint: str) -> None:
    config = APIConfig(endpoint=endpoint, endpoint_type="api", access_key="AKIAEXAMPLE", secret_key="sk-example")
    async with AsyncSession(config=config, proxy_mode=True) as sess:
        rqst = Request("GET", "/stream/session/my.sess/pty", params={"app": "ttyd", "owner_access_key": "AK 2"})
        url, headers = build_handshake(rqst, sess.http_client)
    uri = parse_uri(url)
    assert url.startswith("wss://" if endpoint.startswith("https") else "ws://")
    assert uri.resource_name.endswith("/stream/session/my.sess/pty?app=ttyd&owner_access_key=AK+2")
    assert "host" not in {k.lower() for k in headers}  # websockets sends its own Host
    host = build_host(uri.host, uri.port, uri.secure)
    auth = parse_authorization(headers["Authorization"])
    assert headers["Content-Type"] == "application/octet-stream"
    # The SDK signs the (empty) body of the handshake too: its hash is the header, covered by the signature.
    assert headers[BODY_HASH_HEADER] == hashlib.sha256(b"").hexdigest()
    expected = make_signature(
        method="GET",
        path_with_query=uri.resource_name,
        date_header=headers["Date"],
        date=isoparse(headers["Date"]),
        host=host,
        content_type="application/octet-stream",
        version=headers["X-BackendAI-Version"],
        secret_key="sk-example",
        hash_type=auth.hash_type,
        body_sha256=headers[BODY_HASH_HEADER],
    )
    assert auth.signature == expected and auth.access_key == "AKIAEXAMPLE"


@pytest.mark.parametrize(
    ("url", "host"),
    [
        ("ws://h:80/x", "h"),
        ("ws://h:8080/x", "h:8080"),
        ("wss://h:443/x", "h"),
        ("wss://H.Example:8443/x", "h.example:8443"),
    ],
)
def test_handshake_host_matches_httpx(url: str, host: str) -> None:
    """The Host httpx signs and the Host websockets sends agree (default ports omitted)."""
    uri = parse_uri(url)
    assert build_host(uri.host, uri.port, uri.secure) == host
    assert httpx.Request("GET", url.replace("ws", "http", 1)).headers["host"] == host
