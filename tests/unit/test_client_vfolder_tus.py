"""The client's storage-proxy transfers against an in-test fake of the wire protocol (httpx MockTransport).

Uploads: tus chunking and streaming, resuming from the server's offset (within a call after a broken
connection and across calls through the upload state file), offset-mismatch (409) resynchronization,
expired upload sessions, and progress accounting.  Downloads: ``Range`` resume, servers that ignore
``Range``, and zip archives whose entries try to leave the destination directory.
"""

from __future__ import annotations

import io
import json
import os
import secrets
import stat
import zipfile
from pathlib import Path
from typing import Any

import httpx
import pytest

from ai.backend.client.config import APIConfig
from ai.backend.client.exceptions import BackendClientError
from ai.backend.client.session import AsyncSession
from ai.backend.client.transfer import (
    ProgressLine,
    TusSessionGone,
    UploadStateStore,
    apply_address_map,
    download_file,
    safe_join,
    tus_upload,
)

KiB = 1024
PROXY = "http://proxy.test:6021"


class RecordingProgress(ProgressLine):
    """A progress line that remembers every value it showed."""

    def __init__(self, total: int | None = None) -> None:
        super().__init__("test", total, False)
        self.values: list[int] = []

    def set(self, done: int) -> None:
        super().set(done)
        self.values.append(done)


class FakeStorage:
    """The tus 1.0.0 core protocol as docs/storage-proxy.md describes it, plus a fake manager endpoint."""

    def __init__(self) -> None:
        self.uploads: dict[str, dict[str, Any]] = {}  # token -> {"size", "data": bytearray, "path"}
        self.files: dict[str, bytes] = {}  # completed uploads by path
        self.patches: list[tuple[int, int]] = []  # (Upload-Offset, bytes received) per PATCH
        self.received = 0  # bytes that arrived in PATCH bodies
        self.max_piece = 0
        self.request_uploads = 0
        self.break_after: int | None = None  # break the connection after this many bytes of one PATCH
        self.stale_head: int | None = None  # answer this offset to the next HEAD
        self.heads = 0
        self.conflicts = 0

    def new_upload(self, path: str, size: int, prefix: bytes = b"") -> str:
        token = secrets.token_hex(8)
        self.uploads[token] = {"size": size, "data": bytearray(prefix), "path": path}
        return token

    async def handler(self, request: httpx.Request) -> httpx.Response:
        if request.url.path.startswith("/folders/"):
            return await self._manager(request)
        if request.url.path != "/upload":
            return httpx.Response(404)
        token = request.url.params.get("token", "")
        up = self.uploads.get(token)
        if up is None:
            return httpx.Response(404, json={"title": "Unknown upload session"})
        if request.headers.get("Tus-Resumable") != "1.0.0":
            return httpx.Response(412)
        if request.method == "HEAD":
            self.heads += 1
            offset = len(up["data"])
            if self.stale_head is not None:
                offset, self.stale_head = self.stale_head, None
            return httpx.Response(200, headers={"Upload-Offset": str(offset), "Upload-Length": str(up["size"])})
        if request.method != "PATCH":
            return httpx.Response(405)
        assert request.headers["Content-Type"] == "application/offset+octet-stream"
        if int(request.headers["Upload-Offset"]) != len(up["data"]):
            self.conflicts += 1
            return httpx.Response(409, json={"title": "Offset mismatch"})
        got = 0
        async for piece in request.stream:  # type: ignore[union-attr]
            self.max_piece = max(self.max_piece, len(piece))
            if self.break_after is not None and got + len(piece) > self.break_after:
                keep = self.break_after - got
                up["data"] += piece[:keep]  # a real server keeps what arrived before the break
                self.received += keep
                self.patches.append((int(request.headers["Upload-Offset"]), got + keep))
                self.break_after = None
                raise httpx.WriteError("connection reset by peer")
            up["data"] += piece
            got += len(piece)
            self.received += len(piece)
        self.patches.append((int(request.headers["Upload-Offset"]), got))
        if len(up["data"]) > up["size"]:
            return httpx.Response(413)
        if len(up["data"]) == up["size"]:
            self.files[up["path"]] = bytes(up["data"])
            del self.uploads[token]
        return httpx.Response(204, headers={"Upload-Offset": str(len(up["data"])), "Tus-Resumable": "1.0.0"})

    async def _manager(self, request: httpx.Request) -> httpx.Response:
        if request.url.path.endswith("/request-upload"):
            self.request_uploads += 1
            body = json.loads(await request.aread())
            token = self.new_upload(body["path"], int(body["size"]))
            return httpx.Response(200, json={"token": token, "url": f"{PROXY}/upload"})
        return httpx.Response(404)


class StreamingTransport(httpx.AsyncBaseTransport):
    """Like ``httpx.MockTransport`` but hands the handler the request body unread, piece by piece
    as the client produces it (MockTransport reads it all first)."""

    def __init__(self, handler: Any) -> None:
        self.handler = handler

    async def handle_async_request(self, request: httpx.Request) -> httpx.Response:
        return await self.handler(request)


def mock_client(handler: Any) -> httpx.AsyncClient:
    return httpx.AsyncClient(transport=StreamingTransport(handler))


def make_file(path: Path, size: int) -> bytes:
    data = os.urandom(size)
    path.write_bytes(data)
    return data


@pytest.fixture
def fake() -> FakeStorage:
    return FakeStorage()


@pytest.fixture
def client(fake: FakeStorage) -> httpx.AsyncClient:
    return mock_client(fake.handler)


# ---- tus_upload ----


async def test_fresh_upload_is_chunked_and_streamed(
    tmp_path: Path, fake: FakeStorage, client: httpx.AsyncClient
) -> None:
    chunk = 64 * KiB
    size = 5 * chunk + 123
    data = make_file(tmp_path / "f.bin", size)
    token = fake.new_upload("f.bin", size)
    progress = RecordingProgress(size)
    acks: list[int] = []
    result = await tus_upload(
        client,
        f"{PROXY}/upload?token={token}",
        tmp_path / "f.bin",
        size=size,
        chunk_size=chunk,
        progress=progress,
        on_chunk=acks.append,
    )
    assert fake.files["f.bin"] == data
    assert fake.patches == [(i * chunk, chunk) for i in range(5)] + [(5 * chunk, 123)]
    assert acks == [chunk, 2 * chunk, 3 * chunk, 4 * chunk, 5 * chunk, size]
    assert (result.resumed_from, result.sent) == (0, size)
    assert progress.done == size and max(progress.values) == size
    assert fake.received == size


async def test_large_chunk_is_sent_in_small_pieces(
    tmp_path: Path, fake: FakeStorage, client: httpx.AsyncClient
) -> None:
    size = 3 * 1024 * KiB
    data = make_file(tmp_path / "big.bin", size)
    token = fake.new_upload("big.bin", size)
    await tus_upload(client, f"{PROXY}/upload?token={token}", tmp_path / "big.bin", size=size)
    assert fake.files["big.bin"] == data
    assert fake.patches == [(0, size)]  # one 16 MiB chunk at most ...
    assert fake.max_piece <= 256 * KiB  # ... read from disk and sent a piece at a time


async def test_upload_resumes_from_the_server_offset(
    tmp_path: Path, fake: FakeStorage, client: httpx.AsyncClient
) -> None:
    size = 300 * KiB
    data = make_file(tmp_path / "f.bin", size)
    have = 100 * KiB + 7
    token = fake.new_upload("f.bin", size, prefix=data[:have])
    progress = RecordingProgress(size)
    result = await tus_upload(
        client, f"{PROXY}/upload?token={token}", tmp_path / "f.bin", size=size, chunk_size=128 * KiB, progress=progress
    )
    assert fake.files["f.bin"] == data
    assert fake.received == size - have  # only the missing bytes were sent
    assert fake.patches[0] == (have, 128 * KiB)
    assert (result.resumed_from, result.sent) == (have, size - have)
    assert progress.values[0] == have and progress.done == size


async def test_broken_connection_mid_chunk_resumes_in_the_same_call(
    tmp_path: Path, fake: FakeStorage, client: httpx.AsyncClient
) -> None:
    size = 400 * KiB
    data = make_file(tmp_path / "f.bin", size)
    token = fake.new_upload("f.bin", size)
    fake.break_after = 150 * KiB  # the first PATCH breaks after 150 KiB of its 256 KiB
    progress = RecordingProgress(size)
    await tus_upload(
        client, f"{PROXY}/upload?token={token}", tmp_path / "f.bin", size=size, chunk_size=256 * KiB, progress=progress
    )
    assert fake.files["f.bin"] == data
    assert fake.patches[0] == (0, 150 * KiB)
    assert fake.patches[1][0] == 150 * KiB  # continued exactly where the server stopped
    assert fake.received == size  # no byte sent twice into the file
    assert fake.heads >= 2
    assert max(progress.values) <= size and progress.done == size


async def test_offset_mismatch_resynchronizes(tmp_path: Path, fake: FakeStorage, client: httpx.AsyncClient) -> None:
    size = 200 * KiB
    data = make_file(tmp_path / "f.bin", size)
    have = 64 * KiB
    token = fake.new_upload("f.bin", size, prefix=data[:have])
    fake.stale_head = 0  # the first HEAD lies, so the first PATCH uses a wrong offset
    await tus_upload(client, f"{PROXY}/upload?token={token}", tmp_path / "f.bin", size=size, chunk_size=64 * KiB)
    assert fake.conflicts == 1
    assert fake.files["f.bin"] == data
    assert fake.received == size - have


async def test_upload_of_an_empty_file(tmp_path: Path, fake: FakeStorage, client: httpx.AsyncClient) -> None:
    (tmp_path / "empty").write_bytes(b"")
    token = fake.new_upload("empty", 0)
    await tus_upload(client, f"{PROXY}/upload?token={token}", tmp_path / "empty", size=0)
    assert fake.files["empty"] == b""
    assert fake.patches == [(0, 0)]


async def test_unknown_session_and_wrong_length(tmp_path: Path, fake: FakeStorage, client: httpx.AsyncClient) -> None:
    make_file(tmp_path / "f.bin", 10)
    with pytest.raises(TusSessionGone):
        await tus_upload(client, f"{PROXY}/upload?token=nope", tmp_path / "f.bin", size=10)
    token = fake.new_upload("f.bin", 11)
    with pytest.raises(TusSessionGone, match="expects 11 bytes"):
        await tus_upload(client, f"{PROXY}/upload?token={token}", tmp_path / "f.bin", size=10)
    assert fake.patches == []


async def test_too_many_failures_give_up_with_one_line(tmp_path: Path, fake: FakeStorage) -> None:
    make_file(tmp_path / "f.bin", 100 * KiB)
    token = fake.new_upload("f.bin", 100 * KiB)

    async def always_breaks(request: httpx.Request) -> httpx.Response:
        if request.method == "PATCH":
            raise httpx.WriteError("broken pipe")
        return await fake.handler(request)

    client = mock_client(always_breaks)
    with pytest.raises(BackendClientError, match="failed after 2 retries.*run the same upload again") as ei:
        await tus_upload(client, f"{PROXY}/upload?token={token}", tmp_path / "f.bin", size=100 * KiB, max_retries=2)
    assert "\n" not in str(ei.value)


# ---- VFolder.upload: resuming across calls through the state file ----


def _session(fake: FakeStorage) -> AsyncSession:
    config = APIConfig(
        endpoint="http://manager.test:8081", access_key="AKIAFAKE", secret_key="s" * 40, endpoint_type="api"
    )
    sess = AsyncSession(config=config, proxy_mode=True)
    sess.http_client = mock_client(fake.handler)
    return sess


class Interrupt(Exception):
    pass


async def test_interrupted_upload_resumes_in_the_next_call(tmp_path: Path, fake: FakeStorage) -> None:
    chunk = 64 * KiB
    src = tmp_path / "src"
    src.mkdir()
    data = make_file(src / "data.bin", 5 * chunk + 10)
    state = tmp_path / "state"

    def stop_after_two(target: str, offset: int) -> None:
        if offset >= 2 * chunk:
            raise Interrupt  # as if the process was killed after two chunks

    async with _session(fake) as api:
        with pytest.raises(Interrupt):
            await api.VFolder("f").upload(
                [src / "data.bin"], basedir=src, chunk_size=chunk, on_chunk=stop_after_two, state_dir=state
            )
        assert fake.request_uploads == 1
        assert len(list(state.glob("*.json"))) == 1  # the unfinished upload is remembered
        (token,) = fake.uploads
        assert len(fake.uploads[token]["data"]) == 2 * chunk
        fake.received = 0
        results = await api.VFolder("f").upload([src / "data.bin"], basedir=src, chunk_size=chunk, state_dir=state)
    assert fake.request_uploads == 1  # the same upload session was continued
    assert results == [{"path": "data.bin", "size": len(data), "resumed_from": 2 * chunk}]
    assert fake.received == len(data) - 2 * chunk  # only the rest was sent
    assert fake.files["data.bin"] == data
    assert list(state.glob("*.json")) == []  # forgotten once complete


async def test_expired_remembered_upload_starts_over(tmp_path: Path, fake: FakeStorage) -> None:
    src = tmp_path / "src"
    src.mkdir()
    data = make_file(src / "a.bin", 100 * KiB)
    state = tmp_path / "state"

    async with _session(fake) as api:
        with pytest.raises(Interrupt):
            await api.VFolder("f").upload(
                [src / "a.bin"],
                basedir=src,
                chunk_size=32 * KiB,
                state_dir=state,
                on_chunk=lambda t, o: (_ for _ in ()).throw(Interrupt()),
            )
        fake.uploads.clear()  # the server forgot it (token expired)
        fake.received = 0
        results = await api.VFolder("f").upload([src / "a.bin"], basedir=src, chunk_size=32 * KiB, state_dir=state)
    assert fake.request_uploads == 2
    assert results[0]["resumed_from"] == 0 and fake.received == len(data)
    assert fake.files["a.bin"] == data


async def test_changed_file_does_not_resume(tmp_path: Path, fake: FakeStorage) -> None:
    src = tmp_path / "src"
    src.mkdir()
    make_file(src / "a.bin", 100 * KiB)
    state = tmp_path / "state"
    async with _session(fake) as api:
        with pytest.raises(Interrupt):
            await api.VFolder("f").upload(
                [src / "a.bin"],
                basedir=src,
                chunk_size=32 * KiB,
                state_dir=state,
                on_chunk=lambda t, o: (_ for _ in ()).throw(Interrupt()),
            )
        data = make_file(src / "a.bin", 100 * KiB + 1)  # another size: another key
        results = await api.VFolder("f").upload([src / "a.bin"], basedir=src, chunk_size=32 * KiB, state_dir=state)
    assert fake.request_uploads == 2 and results[0]["resumed_from"] == 0
    assert fake.files["a.bin"] == data


async def test_directory_upload_keeps_relative_paths(
    tmp_path: Path, fake: FakeStorage, monkeypatch: pytest.MonkeyPatch
) -> None:
    tree = tmp_path / "tree"
    (tree / "sub" / "deeper").mkdir(parents=True)
    a = make_file(tree / "a.txt", 10)
    b = make_file(tree / "sub" / "deeper" / "b.txt", 20)
    (tree / "link").symlink_to(tmp_path, target_is_directory=True)  # not followed
    monkeypatch.chdir(tmp_path)
    async with _session(fake) as api:
        results = await api.VFolder("f").upload(["tree"], state_dir=tmp_path / "state")
    assert sorted(r["path"] for r in results) == ["tree/a.txt", "tree/sub/deeper/b.txt"]
    assert fake.files == {"tree/a.txt": a, "tree/sub/deeper/b.txt": b}


def test_state_store_forgets_expired_tokens(tmp_path: Path) -> None:
    import base64

    store = UploadStateStore(tmp_path)
    claims = base64.urlsafe_b64encode(json.dumps({"exp": 1}).encode()).decode().rstrip("=")
    store.save("old", "http://x/upload?token=t", f"h.{claims}.s")
    store.save("new", "http://x/upload?token=t", "not-a-jwt")
    assert store.load("old") is None and not (tmp_path / "old.json").exists()
    assert store.load("new") is not None
    assert stat.S_IMODE((tmp_path / "new.json").stat().st_mode) == 0o600  # the token is a credential
    assert store.make_key("e", "ak", "f", "p", 1, 2) != store.make_key("e", "ak", "f", "p", 1, 3)


# ---- downloads ----


class FakeDownloads:
    def __init__(
        self, body: bytes, *, content_type: str = "application/octet-stream", honor_range: bool = True
    ) -> None:
        self.body = body
        self.content_type = content_type
        self.honor_range = honor_range
        self.ranges: list[str | None] = []
        self.break_after: int | None = None

    async def handler(self, request: httpx.Request) -> httpx.Response:
        rng = request.headers.get("Range")
        self.ranges.append(rng)
        start = 0
        if rng and self.honor_range:
            start = int(rng.removeprefix("bytes=").split("-")[0])
            if start >= len(self.body):
                return httpx.Response(416)
        body = self.body[start:]
        headers = {"Content-Type": self.content_type, "Content-Length": str(len(body))}
        status = 200
        if start:
            status = 206
            headers["Content-Range"] = f"bytes {start}-{len(self.body) - 1}/{len(self.body)}"
        if self.break_after is not None:
            cut, self.break_after = self.break_after, None

            async def broken() -> Any:
                yield body[:cut]
                raise httpx.ReadError("connection reset")

            return httpx.Response(status, headers=headers, content=broken())
        return httpx.Response(status, headers=headers, content=body)


async def test_download_resumes_a_partial_file(tmp_path: Path) -> None:
    body = os.urandom(300 * KiB)
    fake = FakeDownloads(body)
    client = mock_client(fake.handler)
    partial = tmp_path / ".out.bin.bai-partial"
    partial.write_bytes(body[: 100 * KiB])
    (tmp_path / ".out.bin.bai-partial.json").write_text(json.dumps({"total": len(body)}))
    progress = RecordingProgress()
    result = await download_file(
        client, f"{PROXY}/download?token=t", tmp_path / "out.bin", base=tmp_path, progress=progress
    )
    assert (tmp_path / "out.bin").read_bytes() == body
    assert fake.ranges == [f"bytes={100 * KiB}-"]
    assert result.resumed_from == 100 * KiB and not partial.exists()
    assert progress.values[0] == 100 * KiB and progress.done == len(body)
    assert sorted(p.name for p in tmp_path.iterdir()) == ["out.bin"]  # no partial or state file left


async def test_download_starts_over_when_the_file_changed(tmp_path: Path) -> None:
    body = os.urandom(300 * KiB)
    fake = FakeDownloads(body)
    client = mock_client(fake.handler)
    (tmp_path / ".out.bin.bai-partial").write_bytes(os.urandom(100 * KiB))  # of an older, bigger version
    (tmp_path / ".out.bin.bai-partial.json").write_text(json.dumps({"total": len(body) + 1}))
    result = await download_file(client, f"{PROXY}/download?token=t", tmp_path / "out.bin", base=tmp_path)
    assert (tmp_path / "out.bin").read_bytes() == body
    assert fake.ranges == [f"bytes={100 * KiB}-", None] and result.resumed_from == 0


async def test_unrecorded_partial_file_is_not_trusted(tmp_path: Path) -> None:
    body = os.urandom(64 * KiB)
    fake = FakeDownloads(body)
    (tmp_path / ".out.bin.bai-partial").write_bytes(b"x" * 1000)  # no record of what it belongs to
    await download_file(mock_client(fake.handler), f"{PROXY}/download?token=t", tmp_path / "out.bin", base=tmp_path)
    assert (tmp_path / "out.bin").read_bytes() == body and fake.ranges == [None]


async def test_download_survives_a_broken_connection(tmp_path: Path) -> None:
    body = os.urandom(200 * KiB)
    fake = FakeDownloads(body)
    fake.break_after = 50 * KiB
    client = mock_client(fake.handler)
    await download_file(client, f"{PROXY}/download?token=t", tmp_path / "out.bin", base=tmp_path)
    assert (tmp_path / "out.bin").read_bytes() == body
    assert fake.ranges == [None, f"bytes={50 * KiB}-"]


async def test_download_restarts_when_range_is_ignored(tmp_path: Path) -> None:
    body = os.urandom(50 * KiB)
    fake = FakeDownloads(body, honor_range=False)
    client = mock_client(fake.handler)
    (tmp_path / ".out.bin.bai-partial").write_bytes(b"stale bytes")
    (tmp_path / ".out.bin.bai-partial.json").write_text(json.dumps({"total": len(body)}))
    await download_file(client, f"{PROXY}/download?token=t", tmp_path / "out.bin", base=tmp_path)
    assert fake.ranges == ["bytes=11-"]
    assert (tmp_path / "out.bin").read_bytes() == body  # not the stale prefix plus the whole body


async def test_download_refuses_a_folder_error(tmp_path: Path) -> None:
    async def refuse(request: httpx.Request) -> httpx.Response:
        return httpx.Response(403, json={"title": "Invalid token", "detail": "expired"})

    client = mock_client(refuse)
    with pytest.raises(BackendClientError, match="403 Forbidden \\(Invalid token: expired\\)"):
        await download_file(client, f"{PROXY}/download?token=t", tmp_path / "out.bin", base=tmp_path)
    assert list(tmp_path.iterdir()) == []  # nothing written


def _zip(entries: list[tuple[str, bytes, int]]) -> bytes:
    buf = io.BytesIO()
    with zipfile.ZipFile(buf, "w") as zf:
        for name, data, mode in entries:
            info = zipfile.ZipInfo(name)
            info.external_attr = mode << 16
            zf.writestr(info, data)
    return buf.getvalue()


async def test_directory_archive_is_extracted_inside_the_destination(tmp_path: Path) -> None:
    body = _zip(
        [("a.txt", b"A", 0o100644), ("sub/b.txt", b"B", 0o100600), ("evil-link", b"/etc/passwd", stat.S_IFLNK | 0o777)]
    )
    fake = FakeDownloads(body, content_type="application/zip")
    client = mock_client(fake.handler)
    result = await download_file(client, f"{PROXY}/download?token=t", tmp_path / "dir", base=tmp_path)
    assert result.is_archive and sorted(result.files) == ["dir/a.txt", "dir/sub/b.txt"]
    assert (tmp_path / "dir" / "sub" / "b.txt").read_bytes() == b"B"
    assert not (tmp_path / "dir" / "evil-link").exists()  # symlink entries are never created
    assert not (tmp_path / ".dir.bai-partial").exists()


@pytest.mark.parametrize("name", ["../escape.txt", "/abs.txt", "sub/../../escape.txt", "a\\..\\b"])
async def test_archive_entries_leaving_the_destination_are_refused(tmp_path: Path, name: str) -> None:
    base = tmp_path / "base"
    base.mkdir()
    fake = FakeDownloads(_zip([(name, b"x", 0o100644)]), content_type="application/zip")
    client = mock_client(fake.handler)
    with pytest.raises(BackendClientError, match="Refused"):
        await download_file(client, f"{PROXY}/download?token=t", base / "dir", base=base)
    assert not (tmp_path / "escape.txt").exists() and not Path("/abs.txt").exists()


def test_safe_join(tmp_path: Path) -> None:
    outside = tmp_path / "outside"
    outside.mkdir()
    base = tmp_path / "base"
    base.mkdir()
    (base / "link").symlink_to(outside, target_is_directory=True)
    assert safe_join(base, "a/b.txt") == base / "a" / "b.txt"
    assert safe_join(base, "./a//b.txt") == base / "a" / "b.txt"
    for bad in ("../x", "/etc/passwd", "a/../../x", "", ".", "a\x00b", "link/x"):
        with pytest.raises(BackendClientError):
            safe_join(base, bad)


def test_address_map() -> None:
    url = "http://10.0.0.5:6021/upload?token=abc"
    assert apply_address_map(url, None) == url
    assert apply_address_map(url, {"http://10.0.0.5:6021": "https://proxy.example.com"}) == (
        "https://proxy.example.com/upload?token=abc"
    )
    assert apply_address_map(url, {"10.0.0.5:6021": "localhost:7000"}) == "http://localhost:7000/upload?token=abc"
    assert apply_address_map(url, {"http://10.0.0.5:6021/upload": "http://x/u"}) == "http://x/u?token=abc"
    assert apply_address_map(url, {"http://other:1": "http://x"}) == url
