"""The storage proxy over real HTTP: a real proxy process (``launch_storage_proxy``), real files.

Covers every manager route, the manager secret, tus uploads (resume after a dropped connection, offset
mismatch, size and quota limits, concurrency), downloads (Range, archives), token refusals, and symlink
escapes planted directly in a folder on disk.
"""

from __future__ import annotations

import base64
import hashlib
import hmac
import io
import json
import os
import socket
import stat
import threading
import time
import uuid
import zipfile
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import httpx
import pytest

from ai.backend.testutils.problems import problem
from ai.backend.testutils.storage import StorageProxy, launch_storage_proxy

TUS = {"Tus-Resumable": "1.0.0"}
PATCH_HEADERS = {**TUS, "Content-Type": "application/offset+octet-stream"}
IS_ROOT = os.geteuid() == 0


@pytest.fixture(scope="module")
def proxy(tmp_path_factory: pytest.TempPathFactory) -> Iterator[StorageProxy]:
    sp = launch_storage_proxy(tmp_path_factory.mktemp("storage"), scandir_limit=50, max_upload_size="512m")
    try:
        yield sp
    finally:
        sp.shutdown()


@pytest.fixture(scope="module")
def outside(tmp_path_factory: pytest.TempPathFactory) -> Path:
    d = tmp_path_factory.mktemp("outside")
    (d / "secret.txt").write_text("top secret")
    return d


def _ok(r: httpx.Response, status: int = 204) -> httpx.Response:
    assert r.status_code == status, (r.status_code, r.text)
    return r


def new_folder(sp: StorageProxy, quota: int | None = None) -> str:
    vfid = str(uuid.uuid4())
    _ok(sp.request("POST", "/folder/create", {"volume": sp.volume, "vfid": vfid, "options": {"quota": quota}}))
    return vfid


def body(sp: StorageProxy, vfid: str, **kw: Any) -> dict[str, Any]:
    return {"volume": sp.volume, "vfid": vfid, **kw}


def upload_token(sp: StorageProxy, vfid: str, relpath: str, size: int) -> str:
    r = _ok(sp.request("POST", "/folder/file/upload", body(sp, vfid, relpath=relpath, size=size)), 200)
    return str(r.json()["token"])


def download_token(sp: StorageProxy, vfid: str, relpath: str, archive: bool = False) -> str:
    r = _ok(sp.request("POST", "/folder/file/download", body(sp, vfid, relpath=relpath, archive=archive)), 200)
    return str(r.json()["token"])


def tus_upload(sp: StorageProxy, token: str, data: bytes, chunk: int = 1 << 20) -> None:
    url = sp.client_url + "/upload"
    with httpx.Client(timeout=60) as c:
        offset = int(c.head(url, params={"token": token}, headers=TUS).headers["upload-offset"])
        while offset < len(data):
            part = data[offset : offset + chunk]
            r = _ok(
                c.patch(
                    url, params={"token": token}, content=part, headers={**PATCH_HEADERS, "Upload-Offset": str(offset)}
                )
            )
            offset = int(r.headers["upload-offset"])
        if not data:
            _ok(c.patch(url, params={"token": token}, content=b"", headers={**PATCH_HEADERS, "Upload-Offset": "0"}))


def upload(sp: StorageProxy, vfid: str, relpath: str, data: bytes) -> None:
    tus_upload(sp, upload_token(sp, vfid, relpath, len(data)), data)


def download(sp: StorageProxy, vfid: str, relpath: str, archive: bool = False, **kw: Any) -> httpx.Response:
    return httpx.get(
        sp.client_url + "/download", params={"token": download_token(sp, vfid, relpath, archive)}, timeout=60, **kw
    )


def forge(sp: StorageProxy, claims: dict[str, Any], secret: str | None = None) -> str:
    def b64(raw: bytes) -> str:
        return base64.urlsafe_b64encode(raw).rstrip(b"=").decode()

    h = b64(json.dumps({"alg": "HS256", "typ": "JWT"}).encode())
    p = b64(json.dumps(claims).encode())
    sig = hmac.new((secret or sp.jwt_secret).encode(), f"{h}.{p}".encode(), hashlib.sha256).digest()
    return f"{h}.{p}.{b64(sig)}"


# ---------------------------------------------------------------------------------------------- manager API


def test_status_volumes_and_the_manager_secret(proxy: StorageProxy) -> None:
    r = _ok(proxy.request("GET", "/"), 200).json()
    assert r == {"status": "ok", "node_id": "local", "api_version": 1}
    vols = _ok(proxy.request("GET", "/volumes"), 200).json()["volumes"]
    assert vols == [
        {
            "name": "volume1",
            "backend": "vfs",
            "path": str(proxy.volume_path),
            "fsprefix": "",
            "capabilities": ["vfolder", "quota"],
        }
    ]
    vfid = new_folder(proxy)
    routes = [
        ("GET", "/"),
        ("GET", "/volumes"),
        ("POST", "/folder/create"),
        ("POST", "/folder/delete"),
        ("POST", "/folder/clone"),
        ("GET", "/folder/mount"),
        ("GET", "/folder/usage"),
        ("GET", "/folder/quota"),
        ("POST", "/folder/quota"),
        ("POST", "/folder/file/mkdir"),
        ("POST", "/folder/file/list"),
        ("POST", "/folder/file/rename"),
        ("POST", "/folder/file/move"),
        ("POST", "/folder/file/delete"),
        ("POST", "/folder/file/upload"),
        ("POST", "/folder/file/download"),
    ]
    for method, path in routes:
        for headers in (
            {},
            {"X-BackendAI-Storage-Auth-Token": "wrong"},
            {"X-BackendAI-Storage-Auth-Token": proxy.secret + "x"},
        ):
            r = httpx.request(method, proxy.manager_url + path, json=body(proxy, vfid, relpath="x"), headers=headers)
            problem(r, 403)
    assert Path(proxy.folder_path(vfid)).is_dir()  # the refused delete did nothing
    # The two APIs live on separate sockets: neither serves the other's routes.
    assert (
        httpx.post(
            proxy.client_url + "/folder/delete", json=body(proxy, vfid), headers=proxy.manager_headers()
        ).status_code
        == 404
    )
    assert httpx.get(proxy.manager_url + "/download", headers=proxy.manager_headers()).status_code == 404


def test_folder_lifecycle(proxy: StorageProxy) -> None:
    vfid = new_folder(proxy, quota=1 << 20)
    problem(proxy.request("POST", "/folder/create", body(proxy, vfid)), 409)
    mount = _ok(proxy.request("GET", "/folder/mount", body(proxy, vfid)), 200).json()["path"]
    assert mount == str(proxy.folder_path(vfid)) and os.path.isabs(mount)
    st = os.stat(mount)
    assert stat.S_IMODE(st.st_mode) == 0o755
    if IS_ROOT:
        assert (st.st_uid, st.st_gid) == (1000, 1000)
    assert _ok(proxy.request("GET", "/folder/quota", body(proxy, vfid)), 200).json() == {"size_bytes": 1 << 20}
    _ok(proxy.request("POST", "/folder/quota", body(proxy, vfid, size_bytes=None)))
    assert _ok(proxy.request("GET", "/folder/quota", body(proxy, vfid)), 200).json() == {"size_bytes": None}
    problem(proxy.request("POST", "/folder/quota", body(proxy, vfid, size_bytes=-1)), 400)
    problem(proxy.request("POST", "/folder/quota", body(proxy, vfid, size_bytes="10")), 400)
    upload(proxy, vfid, "a/one.bin", b"1" * 1000)
    upload(proxy, vfid, "two.bin", b"2" * 234)
    usage = _ok(proxy.request("GET", "/folder/usage", body(proxy, vfid)), 200).json()
    assert usage == {"file_count": 3, "used_bytes": 1234}
    # Clone: a full copy, on completion.
    dst = str(uuid.uuid4())
    _ok(
        proxy.request(
            "POST",
            "/folder/clone",
            {"volume": proxy.volume, "src_vfid": vfid, "dst_volume": proxy.volume, "dst_vfid": dst},
        )
    )
    assert (proxy.folder_path(dst) / "a" / "one.bin").read_bytes() == b"1" * 1000
    problem(
        proxy.request(
            "POST",
            "/folder/clone",
            {"volume": proxy.volume, "src_vfid": vfid, "dst_volume": proxy.volume, "dst_vfid": dst},
        ),
        409,
    )
    problem(
        proxy.request(
            "POST",
            "/folder/clone",
            {"volume": proxy.volume, "src_vfid": str(uuid.uuid4()), "dst_vfid": str(uuid.uuid4())},
        ),
        404,
    )
    # Delete (recursive), then everything about the folder is 404.
    _ok(proxy.request("POST", "/folder/delete", body(proxy, vfid)))
    assert not proxy.folder_path(vfid).exists()
    for method, path in [
        ("POST", "/folder/delete"),
        ("GET", "/folder/mount"),
        ("GET", "/folder/usage"),
        ("GET", "/folder/quota"),
        ("POST", "/folder/file/list"),
    ]:
        problem(proxy.request(method, path, body(proxy, vfid)), 404)
    assert (proxy.folder_path(dst) / "two.bin").exists()
    # Bad input.
    problem(proxy.request("POST", "/folder/create", body(proxy, "../../etc")), 400)
    problem(proxy.request("POST", "/folder/create", {"volume": "nope", "vfid": str(uuid.uuid4())}), 404)
    problem(proxy.request("POST", "/folder/create", {"vfid": str(uuid.uuid4())}), 400)
    r = httpx.post(proxy.manager_url + "/folder/create", content=b"{not json", headers=proxy.manager_headers())
    problem(r, 400)


def test_file_operations(proxy: StorageProxy) -> None:
    vfid = new_folder(proxy)
    root = proxy.folder_path(vfid)
    _ok(proxy.request("POST", "/folder/file/mkdir", body(proxy, vfid, relpath="d1")))
    problem(proxy.request("POST", "/folder/file/mkdir", body(proxy, vfid, relpath="d1")), 409)
    _ok(proxy.request("POST", "/folder/file/mkdir", body(proxy, vfid, relpath="d1", exist_ok=True)))
    problem(proxy.request("POST", "/folder/file/mkdir", body(proxy, vfid, relpath="x/y/z")), 404)
    _ok(proxy.request("POST", "/folder/file/mkdir", body(proxy, vfid, relpath="x/y/z", parents=True)))
    assert (root / "x" / "y" / "z").is_dir()
    upload(proxy, vfid, "d1/f.txt", b"hello")
    items = _ok(proxy.request("POST", "/folder/file/list", body(proxy, vfid, relpath="d1")), 200).json()["items"]
    assert [(i["name"], i["type"], i["stat"]["size"]) for i in items] == [("f.txt", "FILE", 5)]
    assert items[0]["stat"]["modified"].endswith("+00:00") and stat.S_ISREG(items[0]["stat"]["mode"])
    problem(proxy.request("POST", "/folder/file/list", body(proxy, vfid, relpath="d1/f.txt")), 400)
    problem(proxy.request("POST", "/folder/file/list", body(proxy, vfid, relpath="nope")), 404)
    # scandir-limit (50 in this proxy) caps a listing.
    for i in range(55):
        (root / "x" / f"n{i:02d}").write_text("")
    listing = _ok(proxy.request("POST", "/folder/file/list", body(proxy, vfid, relpath="x")), 200).json()
    assert len(listing["items"]) == 50 and listing["truncated"] is True
    # rename: a single new name; refuses paths and existing names.
    _ok(proxy.request("POST", "/folder/file/rename", body(proxy, vfid, relpath="d1/f.txt", new_name="g.txt")))
    assert (root / "d1" / "g.txt").read_text() == "hello"
    problem(proxy.request("POST", "/folder/file/rename", body(proxy, vfid, relpath="d1/g.txt", new_name="a/b")), 400)
    problem(proxy.request("POST", "/folder/file/rename", body(proxy, vfid, relpath="d1/g.txt", new_name="..")), 400)
    problem(proxy.request("POST", "/folder/file/rename", body(proxy, vfid, relpath="d1/missing", new_name="z")), 404)
    upload(proxy, vfid, "d1/h.txt", b"h")
    problem(proxy.request("POST", "/folder/file/rename", body(proxy, vfid, relpath="d1/g.txt", new_name="h.txt")), 409)
    # move: anywhere in the folder (parents created), never over an existing entry, never into itself.
    _ok(
        proxy.request(
            "POST", "/folder/file/move", body(proxy, vfid, src_relpath="d1/g.txt", dst_relpath="new/place/g.txt")
        )
    )
    assert (root / "new" / "place" / "g.txt").read_text() == "hello"
    problem(
        proxy.request(
            "POST", "/folder/file/move", body(proxy, vfid, src_relpath="d1/h.txt", dst_relpath="new/place/g.txt")
        ),
        409,
    )
    problem(
        proxy.request("POST", "/folder/file/move", body(proxy, vfid, src_relpath="x", dst_relpath="x/y/inside")), 400
    )
    # delete: files, directories only with recursive, all-or-nothing validation.
    problem(proxy.request("POST", "/folder/file/delete", body(proxy, vfid, relpaths=["d1/h.txt", "x"])), 400)
    assert (root / "d1" / "h.txt").exists()
    _ok(proxy.request("POST", "/folder/file/delete", body(proxy, vfid, relpaths=["d1/h.txt", "x"], recursive=True)))
    assert not (root / "x").exists() and not (root / "d1" / "h.txt").exists()
    problem(proxy.request("POST", "/folder/file/delete", body(proxy, vfid, relpaths=["d1/h.txt"])), 404)
    problem(proxy.request("POST", "/folder/file/delete", body(proxy, vfid, relpaths=[])), 400)
    problem(proxy.request("POST", "/folder/file/delete", body(proxy, vfid, relpaths=["."], recursive=True)), 400)
    assert root.is_dir()


# ---------------------------------------------------------------------------------------------- tus upload


def test_tus_upload_protocol(proxy: StorageProxy) -> None:
    vfid = new_folder(proxy)
    url = proxy.client_url + "/upload"
    r = _ok(httpx.options(url), 204)
    assert r.headers["tus-resumable"] == "1.0.0" and r.headers["tus-version"] == "1.0.0"
    assert "creation" in r.headers["tus-extension"] and int(r.headers["tus-max-size"]) == 512 << 20
    data = os.urandom(3 * 1024 * 1024 + 17)
    token = upload_token(proxy, vfid, "deep/dir/blob.bin", len(data))
    q = {"token": token}
    r = _ok(httpx.post(url, params=q, headers={**TUS, "Upload-Length": str(len(data))}), 201)
    assert r.headers["location"].endswith(token)
    problem(httpx.post(url, params=q, headers={**TUS, "Upload-Length": "5"}), 400)
    r = _ok(httpx.head(url, params=q, headers=TUS), 200)
    assert (r.headers["upload-offset"], r.headers["upload-length"]) == ("0", str(len(data)))
    assert r.headers["cache-control"] == "no-store"
    # Wrong offset: 409, with the real offset; wrong content type: 415; wrong tus version: 412.
    r = problem(httpx.patch(url, params=q, content=b"x", headers={**PATCH_HEADERS, "Upload-Offset": "7"}), 409)
    r2 = httpx.patch(url, params=q, content=b"x", headers={**PATCH_HEADERS, "Upload-Offset": "7"})
    assert r2.headers["upload-offset"] == "0"
    problem(
        httpx.patch(url, params=q, content=b"x", headers={**TUS, "Upload-Offset": "0", "Content-Type": "text/plain"}),
        415,
    )
    problem(
        httpx.patch(
            url, params=q, content=b"x", headers={**PATCH_HEADERS, "Upload-Offset": "0", "Tus-Resumable": "0.2.2"}
        ),
        412,
    )
    problem(httpx.patch(url, params=q, content=b"x", headers={**PATCH_HEADERS, "Upload-Offset": "abc"}), 400)
    # Part 1, then a body that would go past the size (413: nothing of it is kept), then the rest.
    first = 1024 * 1024
    r = _ok(httpx.patch(url, params=q, content=data[:first], headers={**PATCH_HEADERS, "Upload-Offset": "0"}))
    assert r.headers["upload-offset"] == str(first)

    def too_much() -> Iterator[bytes]:  # streamed without Content-Length: refused while reading
        yield data[first:]
        yield b"extra"

    problem(httpx.patch(url, params=q, content=too_much(), headers={**PATCH_HEADERS, "Upload-Offset": str(first)}), 413)
    assert httpx.head(url, params=q).headers["upload-offset"] == str(first)
    assert not (proxy.folder_path(vfid) / "deep").exists()  # nothing is in place before the end
    _ok(httpx.patch(url, params=q, content=data[first:], headers={**PATCH_HEADERS, "Upload-Offset": str(first)}))
    target = proxy.folder_path(vfid) / "deep" / "dir" / "blob.bin"
    assert target.read_bytes() == data
    if IS_ROOT:
        for p in (target, target.parent, target.parent.parent):
            assert (p.stat().st_uid, p.stat().st_gid) == (1000, 1000)
    # Complete: HEAD says so, a repeated last PATCH is a conflict, and nothing is left in .upload.
    assert httpx.head(url, params=q).headers["upload-offset"] == str(len(data))
    problem(httpx.patch(url, params=q, content=b"", headers={**PATCH_HEADERS, "Upload-Offset": "0"}), 409)
    assert os.listdir(proxy.volume_path / ".upload") == []
    # An existing file is replaced; an empty upload creates an empty file.
    upload(proxy, vfid, "deep/dir/blob.bin", b"replaced")
    assert target.read_bytes() == b"replaced"
    upload(proxy, vfid, "empty", b"")
    assert (proxy.folder_path(vfid) / "empty").read_bytes() == b""
    # A directory cannot be replaced by an upload.
    problem(proxy.request("POST", "/folder/file/upload", body(proxy, vfid, relpath="deep", size=1)), 409)
    problem(proxy.request("POST", "/folder/file/upload", body(proxy, vfid, relpath="", size=1)), 400)
    problem(proxy.request("POST", "/folder/file/upload", body(proxy, vfid, relpath="f", size=600 << 20)), 413)


def test_tus_resume_after_a_dropped_connection(proxy: StorageProxy) -> None:
    vfid = new_folder(proxy)
    data = os.urandom(5 * 1024 * 1024 + 333)
    token = upload_token(proxy, vfid, "resumed.bin", len(data))
    port = int(proxy.client_url.rsplit(":", 1)[1])
    sent = 3 * 1024 * 1024 + 100  # not a multiple of the proxy's write batch
    with socket.create_connection(("127.0.0.1", port)) as s:
        head = (
            f"PATCH /upload?token={token} HTTP/1.1\r\nHost: 127.0.0.1\r\nTus-Resumable: 1.0.0\r\n"
            f"Content-Type: application/offset+octet-stream\r\nUpload-Offset: 0\r\n"
            f"Content-Length: {len(data)}\r\n\r\n"
        )
        s.sendall(head.encode() + data[:sent])
        time.sleep(0.5)
    # The bytes that arrived are kept; HEAD waits for the interrupted request to finish writing them.
    url = proxy.client_url + "/upload"
    deadline = time.monotonic() + 10
    while True:
        offset = int(httpx.head(url, params={"token": token}).headers["upload-offset"])
        if offset == sent or time.monotonic() > deadline:
            break
        time.sleep(0.1)
    assert offset == sent
    assert not (proxy.folder_path(vfid) / "resumed.bin").exists()
    _ok(
        httpx.patch(
            url, params={"token": token}, content=data[offset:], headers={**PATCH_HEADERS, "Upload-Offset": str(offset)}
        )
    )
    assert (
        hashlib.sha256((proxy.folder_path(vfid) / "resumed.bin").read_bytes()).digest() == hashlib.sha256(data).digest()
    )


def test_a_new_token_for_the_same_path_starts_over(proxy: StorageProxy) -> None:
    vfid = new_folder(proxy)
    url = proxy.client_url + "/upload"
    t1 = upload_token(proxy, vfid, "same.bin", 10)
    _ok(httpx.patch(url, params={"token": t1}, content=b"12345", headers={**PATCH_HEADERS, "Upload-Offset": "0"}))
    t2 = upload_token(proxy, vfid, "same.bin", 10)
    assert httpx.head(url, params={"token": t2}).headers["upload-offset"] == "0"
    assert httpx.head(url, params={"token": t1}).headers["upload-offset"] == "5"
    tus_upload(proxy, t2, b"abcdefghij")
    assert (proxy.folder_path(vfid) / "same.bin").read_bytes() == b"abcdefghij"


def test_quota_limits_uploads(proxy: StorageProxy) -> None:
    vfid = new_folder(proxy, quota=10_000)
    doc = problem(proxy.request("POST", "/folder/file/upload", body(proxy, vfid, relpath="big", size=10_001)), 413)
    assert "quota" in doc["detail"]
    upload(proxy, vfid, "a", b"a" * 6000)
    problem(proxy.request("POST", "/folder/file/upload", body(proxy, vfid, relpath="b", size=5000)), 413)
    # Replacing a file only needs room for the growth.
    upload(proxy, vfid, "a", b"a" * 9000)
    # Two tokens granted while there was room: the one completing last is refused and leaves nothing.
    t1 = upload_token(proxy, vfid, "c1", 600)
    t2 = upload_token(proxy, vfid, "c2", 600)
    tus_upload(proxy, t1, b"1" * 600)
    r = httpx.patch(
        proxy.client_url + "/upload",
        params={"token": t2},
        content=b"2" * 600,
        headers={**PATCH_HEADERS, "Upload-Offset": "0"},
    )
    problem(r, 413)
    assert not (proxy.folder_path(vfid) / "c2").exists()
    # A token never lets more than its size in, whatever the quota.
    _ok(proxy.request("POST", "/folder/quota", body(proxy, vfid, size_bytes=None)))
    t3 = upload_token(proxy, vfid, "d", 3)
    problem(
        httpx.patch(
            proxy.client_url + "/upload",
            params={"token": t3},
            content=b"12345",
            headers={**PATCH_HEADERS, "Upload-Offset": "0"},
        ),
        413,
    )
    assert httpx.head(proxy.client_url + "/upload", params={"token": t3}).headers["upload-offset"] == "0"


def test_tokens_are_checked(proxy: StorageProxy) -> None:
    vfid = new_folder(proxy)
    upload(proxy, vfid, "mine.txt", b"mine")
    upload(proxy, vfid, "other.txt", b"other")
    dl = proxy.client_url + "/download"
    up = proxy.client_url + "/upload"
    good = download_token(proxy, vfid, "mine.txt")
    assert httpx.get(dl, params={"token": good}).content == b"mine"
    problem(httpx.get(dl), 401)
    problem(httpx.get(dl, params={"token": "garbage"}), 401)
    claims = {
        "op": "download",
        "volume": proxy.volume,
        "vfid": uuid.UUID(vfid).hex,
        "relpath": "mine.txt",
        "archive": False,
        "session": "ab" * 16,
        "exp": int(time.time()) - 60,
    }
    problem(httpx.get(dl, params={"token": forge(proxy, claims)}), 401)  # expired
    claims["exp"] = int(time.time()) + 60
    assert httpx.get(dl, params={"token": forge(proxy, claims)}).content == b"mine"  # same, unexpired: fine
    problem(httpx.get(dl, params={"token": forge(proxy, claims, "not-the-secret")}), 401)
    # A token names one path: swapping the path in it breaks the signature.
    h, p, s = good.split(".")
    payload = json.loads(base64.urlsafe_b64decode(p + "=" * (-len(p) % 4)))
    payload["relpath"] = "other.txt"
    p2 = base64.urlsafe_b64encode(json.dumps(payload).encode()).rstrip(b"=").decode()
    problem(httpx.get(dl, params={"token": f"{h}.{p2}.{s}"}), 401)
    # The other operation: 403 either way.
    utok = upload_token(proxy, vfid, "mine.txt", 4)
    problem(httpx.get(dl, params={"token": utok}), 403)
    assert httpx.head(up, params={"token": good}).status_code == 403  # (a HEAD answer has no body)
    problem(
        httpx.patch(up, params={"token": good}, content=b"evil", headers={**PATCH_HEADERS, "Upload-Offset": "0"}), 403
    )
    assert (proxy.folder_path(vfid) / "mine.txt").read_bytes() == b"mine"


# ---------------------------------------------------------------------------------------------- download


def test_download_ranges(proxy: StorageProxy) -> None:
    vfid = new_folder(proxy)
    data = os.urandom(3 * 1024 * 1024 + 5)
    upload(proxy, vfid, "dir/ünï cödé.bin", data)
    token = download_token(proxy, vfid, "dir/ünï cödé.bin")
    dl = proxy.client_url + "/download"
    r = _ok(httpx.get(dl, params={"token": token}), 200)
    assert r.content == data and r.headers["accept-ranges"] == "bytes"
    assert "filename*=UTF-8''%C3%BCn%C3%AF%20c%C3%B6d%C3%A9.bin" in r.headers["content-disposition"]
    cases = {
        "bytes=0-9": (0, 9),
        "bytes=100-": (100, len(data) - 1),
        "bytes=-7": (len(data) - 7, len(data) - 1),
        f"bytes=5-{len(data) + 100}": (5, len(data) - 1),
    }
    for rng, (a, b) in cases.items():
        r = _ok(httpx.get(dl, params={"token": token}, headers={"Range": rng}), 206)
        assert r.content == data[a : b + 1], rng
        assert r.headers["content-range"] == f"bytes {a}-{b}/{len(data)}"
    r = problem(httpx.get(dl, params={"token": token}, headers={"Range": f"bytes={len(data)}-"}), 416)
    assert (
        httpx.get(dl, params={"token": token}, headers={"Range": "bytes=99999999-"}).headers["content-range"]
        == f"bytes */{len(data)}"
    )
    r = _ok(httpx.head(dl, params={"token": token}), 200)
    assert r.headers["content-length"] == str(len(data)) and r.content == b""
    # If-Range: the validators of the current file give the range; stale ones give the whole file.
    etag, modified = r.headers["etag"], r.headers["last-modified"]
    for validator in (etag, modified):
        r = _ok(httpx.get(dl, params={"token": token}, headers={"Range": "bytes=0-9", "If-Range": validator}), 206)
        assert r.content == data[:10]
    r = _ok(httpx.get(dl, params={"token": token}, headers={"Range": "bytes=0-9", "If-Range": '"stale"'}), 200)
    assert r.content == data
    upload(proxy, vfid, "dir/ünï cödé.bin", data[::-1])  # same size, new content
    r = _ok(httpx.get(dl, params={"token": token}, headers={"Range": "bytes=0-9", "If-Range": etag}), 200)
    assert r.content == data[::-1] and r.headers["etag"] != etag
    # A directory needs archive=true (refused when the token is asked for).
    problem(proxy.request("POST", "/folder/file/download", body(proxy, vfid, relpath="dir")), 400)
    problem(proxy.request("POST", "/folder/file/download", body(proxy, vfid, relpath="missing")), 404)


def test_archive_download(proxy: StorageProxy, outside: Path) -> None:
    vfid = new_folder(proxy)
    upload(proxy, vfid, "tree/a.txt", b"A" * 1000)
    upload(proxy, vfid, "tree/sub/b.bin", os.urandom(2_500_000))
    root = proxy.folder_path(vfid)
    (root / "tree" / "empty").mkdir()
    (root / "tree" / "link-out").symlink_to(outside)
    (root / "tree" / "link-secret").symlink_to(outside / "secret.txt")
    os.mkfifo(root / "tree" / "fifo")
    r = _ok(download(proxy, vfid, "tree", archive=True), 200)
    assert r.headers["content-type"] == "application/zip"
    assert 'filename="tree.zip"' in r.headers["content-disposition"]
    zf = zipfile.ZipFile(io.BytesIO(r.content))
    assert zf.testzip() is None
    assert sorted(zf.namelist()) == ["a.txt", "empty/", "sub/", "sub/b.bin"]
    assert zf.read("sub/b.bin") == (root / "tree" / "sub" / "b.bin").read_bytes()
    assert b"top secret" not in r.content
    # The whole folder as an archive.
    r = _ok(download(proxy, vfid, "", archive=True), 200)
    names = zipfile.ZipFile(io.BytesIO(r.content)).namelist()
    assert "tree/a.txt" in names and not any("link" in n or "fifo" in n for n in names)


def test_planted_symlink_escapes_are_refused(proxy: StorageProxy, outside: Path) -> None:
    """Links planted directly in the folder (as code in a session would) never reach outside it."""
    vfid = new_folder(proxy)
    other = new_folder(proxy)
    upload(proxy, other, "private.txt", b"someone else's")
    root = proxy.folder_path(vfid)
    (root / "dir").mkdir()
    (root / "out").symlink_to(outside)
    (root / "secret").symlink_to(outside / "secret.txt")
    (root / "slash").symlink_to("/")
    (root / "neighbour").symlink_to(proxy.folder_path(other))
    (root / "dir" / "up").symlink_to("../..")
    before = sorted(os.listdir(outside))
    for link in ("out", "slash", "neighbour", "dir/up"):
        for kw in (
            {"relpath": link + "/secret.txt"},
            {"relpath": link + "/private.txt"},
            {"relpath": link, "archive": True},
        ):
            problem(proxy.request("POST", "/folder/file/download", body(proxy, vfid, **kw)), 400)
        problem(proxy.request("POST", "/folder/file/list", body(proxy, vfid, relpath=link)), 400)
        problem(proxy.request("POST", "/folder/file/upload", body(proxy, vfid, relpath=link + "/x", size=1)), 400)
        problem(proxy.request("POST", "/folder/file/mkdir", body(proxy, vfid, relpath=link + "/x", parents=True)), 400)
        problem(
            proxy.request(
                "POST", "/folder/file/delete", body(proxy, vfid, relpaths=[link + "/secret.txt"], recursive=True)
            ),
            400,
        )
        problem(
            proxy.request(
                "POST", "/folder/file/move", body(proxy, vfid, src_relpath="secret", dst_relpath=link + "/moved")
            ),
            400,
        )
    problem(proxy.request("POST", "/folder/file/download", body(proxy, vfid, relpath="secret")), 400)
    # A token issued while "dir" was a directory, used after it was swapped for a link: still refused.
    token = download_token(proxy, vfid, "dir", archive=True)
    upload(proxy, vfid, "dir2/file", b"x")
    utoken = upload_token(proxy, vfid, "dir2/planted.txt", 5)
    os.rename(root / "dir", root / "dir.old")
    (root / "dir").symlink_to(outside)
    problem(httpx.get(proxy.client_url + "/download", params={"token": token}), 400)
    (root / "dir2" / "file").unlink()
    (root / "dir2").rmdir()
    (root / "dir2").symlink_to(outside)
    problem(
        httpx.patch(
            proxy.client_url + "/upload",
            params={"token": utoken},
            content=b"12345",
            headers={**PATCH_HEADERS, "Upload-Offset": "0"},
        ),
        400,
    )
    # Deleting the links deletes links only.
    _ok(
        proxy.request(
            "POST", "/folder/file/delete", body(proxy, vfid, relpaths=["out", "neighbour", "dir"], recursive=True)
        )
    )
    assert sorted(os.listdir(outside)) == before and (outside / "secret.txt").read_text() == "top secret"
    assert (proxy.folder_path(other) / "private.txt").read_bytes() == b"someone else's"
    # Usage does not follow links either.
    assert _ok(proxy.request("GET", "/folder/usage", body(proxy, vfid)), 200).json()["used_bytes"] == 0


def test_concurrent_uploads(proxy: StorageProxy) -> None:
    vfid = new_folder(proxy)
    blobs = {f"c/{i}.bin": os.urandom(1_500_000 + i) for i in range(8)}
    errors: list[BaseException] = []

    def run(rel: str, data: bytes) -> None:
        try:
            upload(proxy, vfid, rel, data)
        except BaseException as e:  # reported below
            errors.append(e)

    threads = [threading.Thread(target=run, args=item) for item in blobs.items()]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    assert not errors, errors
    for rel, data in blobs.items():
        assert (proxy.folder_path(vfid) / rel).read_bytes() == data
    # Two PATCHes of one session at the same time: one wins, the other gets 409 (the offset moved).
    data = os.urandom(4 * 1024 * 1024)
    token = upload_token(proxy, vfid, "race.bin", len(data))
    results: list[int] = []

    def patch() -> None:
        r = httpx.patch(
            proxy.client_url + "/upload",
            params={"token": token},
            content=data,
            headers={**PATCH_HEADERS, "Upload-Offset": "0"},
            timeout=60,
        )
        results.append(r.status_code)

    racers = [threading.Thread(target=patch) for _ in range(2)]
    for t in racers:
        t.start()
    for t in racers:
        t.join()
    assert sorted(results) == [204, 409]
    assert (proxy.folder_path(vfid) / "race.bin").read_bytes() == data


def test_memory_stays_flat_for_large_transfers(proxy: StorageProxy) -> None:
    """256 MiB up (one streamed PATCH) and down: the proxy's RSS grows by far less than the file."""
    size = 256 * 1024 * 1024
    vfid = new_folder(proxy)
    token = upload_token(proxy, vfid, "big.bin", size)
    status = Path(f"/proc/{proxy.pid}/status")

    def rss() -> int:
        line = next(x for x in status.read_text().splitlines() if x.startswith("VmRSS:"))
        return int(line.split()[1]) * 1024

    base = rss()
    peak = base
    block = os.urandom(1 << 20)

    def body_chunks() -> Iterator[bytes]:
        nonlocal peak
        for i in range(size // len(block)):
            if i % 16 == 0:
                peak = max(peak, rss())
            yield block

    r = httpx.patch(
        proxy.client_url + "/upload",
        params={"token": token},
        content=body_chunks(),
        headers={**PATCH_HEADERS, "Upload-Offset": "0", "Content-Length": str(size)},
        timeout=120,
    )
    _ok(r)
    got = 0
    with httpx.stream(
        "GET", proxy.client_url + "/download", timeout=120, params={"token": download_token(proxy, vfid, "big.bin")}
    ) as resp:
        for chunk in resp.iter_bytes(1 << 20):
            got += len(chunk)
            if got % (16 << 20) < len(chunk):
                peak = max(peak, rss())
    assert got == size
    assert peak - base < 64 * 1024 * 1024, (base, peak)
