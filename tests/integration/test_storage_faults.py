"""Crashes around folder uploads, with real processes: a storage proxy and a manager (no agent needed).

* ``kill -9`` of the storage proxy in the middle of a tus ``PATCH`` (raw requests, and our SDK): started again
  with the same configuration, it reports with ``HEAD`` exactly the bytes it had written, the upload goes on from
  there and the file in the folder is byte-identical to the original.
* A crash after the last byte was written but before the upload was moved into the folder: the ``HEAD`` that
  a resuming client sends moves it into place (before, the client was told "complete" and the file never appeared).
* While the proxy is down the manager answers folder calls with a 503 ``storage-proxy-unavailable`` problem (not a
  500), and answers them normally once it is back.
* ``kill -9`` of the manager during an upload does not disturb it: the token and the proxy carry it.

Convergence is awaited by polling with a deadline (``wait_until``), never by plain sleeps.
"""

from __future__ import annotations

import asyncio
import base64
import hashlib
import json
import os
import threading
import time
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any, cast

import httpx
import pytest

from ai.backend.client.config import APIConfig
from ai.backend.client.exceptions import BackendClientError
from ai.backend.client.session import Session
from ai.backend.client.transfer import UploadResult, UploadStateStore, tus_upload, with_token
from ai.backend.manager.fixtures import USER
from ai.backend.testutils.cluster import Cluster, launch_manager
from ai.backend.testutils.problems import problem
from ai.backend.testutils.processes import wait_until
from ai.backend.testutils.storage import StorageProxy, launch_storage_proxy

MiB = 1024 * 1024
TUS = {"Tus-Resumable": "1.0.0"}
PATCH_HEADERS = {**TUS, "Content-Type": "application/offset+octet-stream"}


class Stack:
    def __init__(self, manager: Cluster, proxy: StorageProxy) -> None:
        self.manager = manager
        self.proxy = proxy

    def ok(self, method: str, path: str, body: Any = None, status: int = 200) -> Any:
        r = self.manager.request(method, path, body, timeout=60)
        assert r.status_code == status, f"{method} {path}: {r.status_code} {r.text}"
        return r.json() if r.content else None

    def folder(self, name: str) -> str:
        return str(self.ok("POST", "/folders", {"name": name}, status=201)["id"])

    def request_upload(self, folder: str, path: str, size: int) -> tuple[str, str]:
        """(url, token) of a tus upload of ``size`` bytes to ``path``."""
        info = self.ok("POST", f"/folders/{folder}/request-upload", {"path": path, "size": size})
        return str(info["url"]), str(info["token"])

    def download(self, folder: str, path: str) -> bytes:
        info = self.ok("POST", f"/folders/{folder}/request-download", {"path": path})
        r = httpx.get(info["url"], params={"token": info["token"]}, timeout=60)
        assert r.status_code == 200, r.text
        return r.content

    def partial(self, token: str) -> Path:
        """The proxy's partial file of the upload ``token`` grants (``<volume>/.upload/<session>``)."""
        payload = token.split(".")[1]
        claims = json.loads(base64.urlsafe_b64decode(payload + "=" * (-len(payload) % 4)))
        return self.proxy.volume_path / ".upload" / str(claims["session"])

    def sdk_upload(
        self,
        folder: str,
        local: Path,
        chunk_size: int,
        state_dir: Path,
        on_chunk: Callable[[str, int], None] | None = None,
    ) -> list[dict[str, Any]]:
        """``VFolder(folder).upload([local])`` with the synchronous SDK (the decorated method runs the call)."""
        with Session(config=self.config()) as api:
            results = api.VFolder(folder).upload(
                [local], basedir=local.parent, chunk_size=chunk_size, on_chunk=on_chunk, state_dir=state_dir
            )
        return cast(list[dict[str, Any]], results)

    def config(self) -> APIConfig:
        return APIConfig(
            endpoint=self.manager.endpoint,
            access_key=USER["access_key"],
            secret_key=USER["secret_key"],
            endpoint_type="api",
        )


@pytest.fixture(scope="module")
def stack(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Stack]:
    state = tmp_path_factory.mktemp("storage-faults")
    proxy = launch_storage_proxy(state / "storage")
    try:
        manager = launch_manager(
            state / "manager", manager_toml=proxy.manager_toml(), settings={"default-vfolder-host": proxy.host}
        )
    except Exception:
        proxy.shutdown()
        raise
    try:
        yield Stack(manager, proxy)
    finally:
        manager.shutdown()
        proxy.shutdown()


@pytest.fixture
def up(stack: Stack) -> Stack:
    """The module's stack with both servers running (a previous test may have left one killed)."""
    if stack.proxy.proc.poll() is not None:
        stack.proxy.restart()
    if "manager" not in stack.manager.procs:
        stack.manager.start("manager")
    stack.manager.wait_ready()
    return stack


def _size(path: Path) -> int:
    try:
        return path.stat().st_size
    except FileNotFoundError:
        return -1


def _head(url: str, token: str) -> httpx.Response:
    return httpx.head(url, params={"token": token}, headers=TUS, timeout=30)


def _digest(data: bytes) -> str:
    return hashlib.sha256(data).hexdigest()


class PausedSender(threading.Thread):
    """One tus ``PATCH`` of ``data`` from offset 0, sent in 1 MiB pieces; after ``pause_at`` bytes it waits (the
    test kills the proxy meanwhile), then tries to send the rest. Whatever happens is kept in ``outcome``."""

    def __init__(self, url: str, token: str, data: bytes, pause_at: int) -> None:
        super().__init__(daemon=True)
        self.url, self.token, self.data, self.pause_at = url, token, data, pause_at
        self.resume = threading.Event()
        self.outcome: str = ""

    def _body(self) -> Iterator[bytes]:
        for start in range(0, len(self.data), MiB):
            if start == self.pause_at:
                self.resume.wait(60)
            yield self.data[start : start + MiB]

    def run(self) -> None:
        try:
            r = httpx.patch(
                self.url,
                params={"token": self.token},
                content=self._body(),
                headers={**PATCH_HEADERS, "Upload-Offset": "0", "Content-Length": str(len(self.data))},
                timeout=60,
            )
            self.outcome = f"answered {r.status_code}"
        except httpx.HTTPError as e:
            self.outcome = f"failed: {type(e).__name__}"


def test_proxy_killed_mid_patch_resumes_from_head_after_restart(up: Stack) -> None:
    s = up
    s.folder("crash-raw")
    data = os.urandom(40 * MiB + 4321)
    url, token = s.request_upload("crash-raw", "big.bin", len(data))
    partial = s.partial(token)
    sender = PausedSender(url, token, data, pause_at=24 * MiB)
    sender.start()
    # Kill while the body is still arriving: at least 12 MiB written, up to 24 MiB sent.
    wait_until(
        "part of the body on the proxy's disk",
        lambda: _size(partial),
        lambda n: n >= 12 * MiB,
        timeout=60,
        interval=0.005,
    )
    s.proxy.kill()
    sender.resume.set()
    sender.join(60)
    assert sender.outcome.startswith("failed"), sender.outcome  # the PATCH never got its answer
    written = _size(partial)
    assert 12 * MiB <= written <= 24 * MiB, written

    s.proxy.restart()
    head = _head(url, token)
    assert head.status_code == 200, head.text
    offset = int(head.headers["Upload-Offset"])
    assert offset == written, (offset, written)  # exactly what is on disk: nothing lost, nothing invented
    assert int(head.headers["Upload-Length"]) == len(data)
    # The offset the client believed in (everything it had sent) is refused and the true one is named.
    r = httpx.patch(
        url,
        params={"token": token},
        content=data[24 * MiB :],
        headers={**PATCH_HEADERS, "Upload-Offset": str(24 * MiB)},
        timeout=60,
    )
    if offset != 24 * MiB:
        assert r.status_code == 409 and r.headers["Upload-Offset"] == str(offset), (r.status_code, r.headers)
        r = httpx.patch(
            url,
            params={"token": token},
            content=data[offset:],
            headers={**PATCH_HEADERS, "Upload-Offset": str(offset)},
            timeout=60,
        )
    assert r.status_code == 204, r.text
    assert r.headers["Upload-Offset"] == str(len(data))
    assert _head(url, token).headers["Upload-Offset"] == str(len(data))
    got = s.download("crash-raw", "big.bin")
    assert len(got) == len(data) and _digest(got) == _digest(data)
    assert not partial.exists()
    print(
        f"\n[proxy kill -9 mid-PATCH] {written / MiB:.1f} MiB of {len(data) / MiB:.1f} MiB on disk at the kill; "
        f"HEAD after restart: {offset}; resumed and byte-identical"
    )


def test_proxy_killed_during_an_sdk_upload_resumes_with_the_sdk(up: Stack, tmp_path: Path) -> None:
    s = up
    s.folder("crash-sdk")
    work = tmp_path / "w"
    work.mkdir()
    data = os.urandom(24 * MiB + 77)
    (work / "big.bin").write_bytes(data)
    cache = tmp_path / "uploads"
    killed: dict[str, int] = {}

    def kill_mid_chunk(target: str, offset: int) -> None:
        # After the first acknowledged 4 MiB chunk: kill the proxy once the next chunk is partly on its disk.
        if killed:
            return
        (state_file,) = cache.glob("*.json")
        saved = UploadStateStore(cache).load(state_file.stem)
        assert saved is not None
        partial = s.partial(str(saved["token"]))

        def killer() -> None:
            wait_until(
                "the next chunk to arrive",
                lambda: _size(partial),
                lambda n: n > offset + MiB,
                timeout=30,
                interval=0.002,
            )
            s.proxy.kill()
            killed["at"] = _size(partial)

        threading.Thread(target=killer, daemon=True).start()
        killed["acked"] = offset

    with pytest.raises(BackendClientError) as failed:
        s.sdk_upload("crash-sdk", work / "big.bin", 4 * MiB, cache, kill_mid_chunk)
    assert "storage proxy" in str(failed.value).lower() or "retries" in str(failed.value), failed.value
    assert killed.get("at", 0) > killed["acked"], killed
    (state_file,) = cache.glob("*.json")  # the SDK remembers the unfinished upload
    saved = UploadStateStore(cache).load(state_file.stem)
    assert saved is not None

    s.proxy.restart()
    head = httpx.head(str(saved["url"]), headers=TUS, timeout=30)
    assert int(head.headers["Upload-Offset"]) == killed["at"], (head.headers, killed)
    results = s.sdk_upload("crash-sdk", work / "big.bin", 4 * MiB, cache)
    assert results == [{"path": "big.bin", "size": len(data), "resumed_from": killed["at"]}]
    assert list(cache.glob("*.json")) == []
    got = s.download("crash-sdk", "big.bin")
    assert _digest(got) == _digest(data)
    print(
        f"\n[proxy kill -9 during SDK upload] acked {killed['acked'] / MiB:.0f} MiB, {killed['at'] / MiB:.1f} MiB "
        f"on disk at the kill; the SDK resumed from {results[0]['resumed_from']}"
    )


def test_crash_between_the_last_byte_and_the_move_into_place(up: Stack, tmp_path: Path) -> None:
    """A ``kill -9`` after the proxy wrote the last byte but before it moved the upload into the folder leaves
    the whole body in ``.upload/<session>`` and nothing in the folder. The resuming client's ``HEAD`` hears
    "complete", so that ``HEAD`` must be what puts the file in place."""
    s = up
    s.folder("crash-final")
    data = os.urandom(16 * MiB + 5)
    url, token = s.request_upload("crash-final", "final.bin", len(data))
    partial = s.partial(token)
    sender = PausedSender(url, token, data, pause_at=8 * MiB)
    sender.start()
    wait_until(
        "the first half on the proxy's disk", lambda: _size(partial), lambda n: n == 8 * MiB, timeout=60, interval=0.005
    )
    s.proxy.kill()
    sender.resume.set()
    sender.join(60)
    # What the dead proxy would have written had the rest of the body arrived before the kill.
    with open(partial, "ab") as f:
        f.write(data[8 * MiB :])
    s.proxy.restart()
    # The SDK's tus client sees nothing left to send and reports success; the file must be there.
    local = tmp_path / "final.bin"
    local.write_bytes(data)

    async def resume() -> UploadResult:
        async with httpx.AsyncClient(timeout=60) as client:
            return await tus_upload(client, with_token(url, token), local, size=len(data))

    result = asyncio.run(resume())
    assert (result.resumed_from, result.sent) == (len(data), 0), result
    listing = json.loads(s.ok("GET", "/folders/crash-final/files", {"path": ""})["files"])
    assert {f["filename"]: f["size"] for f in listing} == {"final.bin": len(data)}, listing
    assert _digest(s.download("crash-final", "final.bin")) == _digest(data)
    assert not partial.exists()
    assert _head(url, token).headers["Upload-Offset"] == str(len(data))  # still "complete", not 0


def test_manager_answers_503_while_the_proxy_is_down_and_recovers(up: Stack) -> None:
    s = up
    s.folder("while-down")
    s.ok("POST", "/folders/while-down/mkdir", {"path": "d"}, status=201)
    calls: list[tuple[str, str, Any]] = [
        ("GET", "/folders/while-down/files", {"path": ""}),
        ("POST", "/folders/while-down/request-upload", {"path": "x.bin", "size": 10}),
        ("POST", "/folders/while-down/request-download", {"path": "d", "archive": True}),
        ("POST", "/folders/while-down/mkdir", {"path": "e"}),
        ("POST", "/folders", {"name": "created-while-down"}),
    ]
    s.proxy.kill()
    t0 = time.monotonic()
    for method, path, body in calls:
        r = s.manager.request(method, path, body, timeout=60)
        problem(r, 503, slug="storage-proxy-unavailable")
        assert "storage proxy" in r.json()["detail"].lower(), r.json()
    answered_in = time.monotonic() - t0
    assert answered_in < 15, answered_in  # refused connections are answered at once, not after timeouts
    # Calls that need no proxy keep working: the folder list, and the host list (an unreachable proxy is skipped
    # once its cached volume list has expired).
    assert "while-down" in {f["name"] for f in s.ok("GET", "/folders")}
    s.ok("GET", "/folders/_/hosts")
    # Nothing was half-created: the refused creation left no folder row behind.
    assert "created-while-down" not in {f["name"] for f in s.ok("GET", "/folders")}
    assert s.manager.procs["manager"].poll() is None
    assert "Traceback" not in (s.manager.state / "manager.log").read_text(errors="replace")[-20000:]

    s.proxy.restart()
    wait_until(
        "the folder calls to succeed again",
        lambda: [s.manager.request(m, p, b, timeout=60).status_code for m, p, b in calls[:4]],
        lambda codes: all(c in (200, 201) for c in codes),
        timeout=30,
        interval=0.3,
    )
    s.folder("created-after")
    assert s.proxy.host in s.ok("GET", "/folders/_/hosts")["allowed"]
    print(f"\n[proxy down] {len(calls)} folder calls answered 503 in {answered_in:.2f} s")


def test_manager_killed_during_an_upload_does_not_disturb_it(up: Stack, tmp_path: Path) -> None:
    s = up
    vfid = s.folder("mgr-crash")
    work = tmp_path / "w"
    work.mkdir()
    data = os.urandom(20 * MiB + 11)
    (work / "big.bin").write_bytes(data)
    offsets: list[int] = []

    def kill_manager(target: str, offset: int) -> None:
        if not offsets:
            s.manager.kill("manager")  # after the first chunk: the token and the proxy carry the rest
        offsets.append(offset)

    results = s.sdk_upload("mgr-crash", work / "big.bin", 2 * MiB, tmp_path / "uploads", kill_manager)
    assert results == [{"path": "big.bin", "size": len(data), "resumed_from": 0}]
    assert offsets[-1] == len(data) and len(offsets) == 11, offsets
    assert "manager" not in s.manager.procs  # it stayed dead during the whole upload
    # The file is in place before the manager is back (read on the volume).
    assert _digest((s.proxy.folder_path(vfid) / "big.bin").read_bytes()) == _digest(data)

    s.manager.start("manager")
    s.manager.wait_ready()
    assert _digest(s.download("mgr-crash", "big.bin")) == _digest(data)
