"""The v4 (19.09 client) routes: folder file upload/download/rename_file/delete_files through the storage proxy,
and ``/stream/kernel/_/events``, with real HTTP against the ``cluster`` fixture (and the official 19.09 CLI when
it is installed)."""

from __future__ import annotations

import json
import os
import re
import secrets
import subprocess
from pathlib import Path
from typing import Any
from urllib.parse import unquote

import httpx
import pytest

from ai.backend.common.auth import sign_request_headers
from ai.backend.manager.api.vfolder_legacy import UPLOAD_BODY_LIMIT
from ai.backend.testutils.problems import problem

from .conftest import ADMIN, USER, Cluster

CLI_1909 = Path.home() / ".cache/backend.ai-compat/19.09/bin/backend.ai"
V4 = "v4.20190615"


def _send(
    cluster: Cluster,
    method: str,
    path: str,
    content: bytes | None,
    content_type: str,
    who: dict[str, Any] = USER,
    headers: dict[str, str] | None = None,
) -> httpx.Response:
    host = cluster.endpoint.split("//", 1)[1]
    h = sign_request_headers(
        method=method,
        path_with_query=path,
        host=host,
        content_type=content_type,
        version=V4,
        access_key=who["access_key"],
        secret_key=who["secret_key"],
    )
    h["Content-Type"] = content_type
    h.update(headers or {})
    return httpx.request(method, cluster.endpoint + path, headers=h, content=content, timeout=120)


def _json(cluster: Cluster, method: str, path: str, body: Any, who: dict[str, Any] = USER) -> httpx.Response:
    return _send(cluster, method, path, json.dumps(body).encode(), "application/json", who)


def _upload(
    cluster: Cluster, folder: str, files: list[tuple[str, bytes]], who: dict[str, Any] = USER
) -> httpx.Response:
    boundary = "b" + secrets.token_hex(8)
    body = (
        b"".join(
            f'--{boundary}\r\nContent-Disposition: form-data; name="src"; filename="{n}"\r\n'
            "Content-Type: application/octet-stream\r\n\r\n".encode()
            + c
            + b"\r\n"
            for n, c in files
        )
        + f"--{boundary}--\r\n".encode()
    )
    return _send(cluster, "POST", f"/folders/{folder}/upload", body, f"multipart/form-data; boundary={boundary}", who)


def _download(cluster: Cluster, folder: str, files: list[str], who: dict[str, Any] = USER) -> httpx.Response:
    return _json(cluster, "GET", f"/folders/{folder}/download", {"files": files}, who)


def _parts(r: httpx.Response) -> list[tuple[str, bytes]]:
    """The (filename, content) of each part of a multipart/mixed answer; ``filename*`` is read first, as
    aiohttp's MultipartReader (the 19.09 client's) does."""
    m = re.search(r'boundary="?([^";]+)"?', r.headers["content-type"])
    assert m is not None
    delim = b"--" + m.group(1).encode()
    out = []
    for chunk in r.content.split(b"\r\n" + delim)[0:]:
        chunk = chunk[len(delim) :] if chunk.startswith(delim) else chunk
        if chunk.startswith(b"--"):
            break
        head, _, payload = chunk[2:].partition(b"\r\n\r\n")
        headers = head.decode()
        assert "content-encoding" not in headers.lower()
        star = re.search(r"filename\*=UTF-8''([^;\s]+)", headers)
        plain = re.search(r'filename="([^"]*)"', headers)
        name = unquote(star.group(1)) if star else plain.group(1) if plain else ""
        length = re.search(r"Content-Length: (\d+)", headers)
        assert length is None or int(length.group(1)) == len(payload)
        out.append((name, payload))
    return out


def _listing(cluster: Cluster, folder: str, path: str = "", who: dict[str, Any] = USER) -> dict[str, Any]:
    r = cluster.request("GET", f"/folders/{folder}/files", {"path": path}, who=who)
    assert r.status_code == 200, r.text
    files = r.json()["files"]
    return {f["filename"]: f for f in (json.loads(files) if isinstance(files, str) else files)}


def _new_folder(cluster: Cluster, who: dict[str, Any] = USER, quota: str | None = None) -> str:
    assert cluster.storage is not None
    name = f"legacy-{secrets.token_hex(4)}"
    body: dict[str, Any] = {"name": name, "host": cluster.storage.host}
    if quota is not None:
        body["quota"] = quota
    r = cluster.request("POST", "/folders", body, who=who)
    assert r.status_code == 201, r.text
    return name


def _delete_folder(cluster: Cluster, name: str, who: dict[str, Any] = USER) -> None:
    cluster.request("DELETE", f"/folders/{name}", who=who)


def test_upload_download_rename_delete_round_trip(cluster: Cluster) -> None:
    folder = _new_folder(cluster)
    try:
        blob = os.urandom(300_000) + b"--" + b"\r\n--boundary-like\r\n"
        r = _upload(
            cluster,
            folder,
            [("a.txt", b"hello\n"), ("sub/dir/b.bin", blob), ("empty", b""), ("\ud55c\uae00.txt", "유니코드".encode())],
        )
        assert r.status_code == 201, r.text
        assert set(_listing(cluster, folder)) == {"a.txt", "sub", "empty", "한글.txt"}
        assert _listing(cluster, folder, "sub/dir")["b.bin"]["size"] == len(blob)

        r = _download(cluster, folder, ["a.txt", "sub/dir/b.bin", "empty", "한글.txt"])
        assert r.status_code == 200, r.text
        assert r.headers["content-type"].startswith("multipart/mixed")
        assert int(r.headers["X-TOTAL-PAYLOADS-LENGTH"]) == 6 + len(blob) + len("유니코드".encode())
        assert _parts(r) == [("a.txt", b"hello\n"), ("b.bin", blob), ("empty", b""), ("한글.txt", "유니코드".encode())]

        r = _json(cluster, "POST", f"/folders/{folder}/rename_file", {"target_path": "a.txt", "new_name": "c.txt"})
        assert r.status_code == 200, r.text
        assert r.json() == {}
        assert "c.txt" in _listing(cluster, folder) and "a.txt" not in _listing(cluster, folder)

        r = _json(
            cluster, "DELETE", f"/folders/{folder}/delete_files", {"files": ["c.txt", "empty"], "recursive": False}
        )
        assert r.status_code == 200, r.text
        r = _json(cluster, "DELETE", f"/folders/{folder}/delete_files", {"files": ["sub"], "recursive": True})
        assert r.status_code == 200, r.text
        assert set(_listing(cluster, folder)) == {"한글.txt"}
    finally:
        _delete_folder(cluster, folder)


def test_bad_input_is_refused_and_changes_nothing(cluster: Cluster) -> None:
    folder = _new_folder(cluster)
    theirs = _new_folder(cluster, who=ADMIN)
    small = _new_folder(cluster, quota="1k")
    try:
        assert _upload(cluster, folder, [("keep.txt", b"keep")]).status_code == 201
        before = _listing(cluster, folder)
        # Traversal, absolute paths, the root: 400, and no file of the batch is written.
        for bad in ("../escape.txt", "/etc/x", "a/../../x", ".", "x\x01y"):
            doc = problem(_upload(cluster, folder, [("ok.txt", b"1"), (bad, b"2")]), 400)
            assert "filename" in doc["detail"]
        for bad in ("../keep.txt", "/keep.txt"):
            problem(_download(cluster, folder, [bad]), 400)
            problem(
                _json(cluster, "POST", f"/folders/{folder}/rename_file", {"target_path": bad, "new_name": "z"}), 400
            )
            problem(_json(cluster, "DELETE", f"/folders/{folder}/delete_files", {"files": [bad]}), 400)
        problem(
            _json(cluster, "POST", f"/folders/{folder}/rename_file", {"target_path": "keep.txt", "new_name": "../z"}),
            400,
        )
        problem(_upload(cluster, folder, [("d.txt", b"1"), ("d.txt", b"2")]), 400)
        problem(_send(cluster, "POST", f"/folders/{folder}/upload", b"{}", "application/json"), 400)
        problem(_download(cluster, folder, []), 400)
        # Missing files and directories.
        problem(_download(cluster, folder, ["nope.txt"]), 404)
        assert _upload(cluster, folder, [("dir/inner.txt", b"x")]).status_code == 201
        problem(_download(cluster, folder, ["dir"]), 400)
        # Missing folder, another user's folder: 404, as for the current routes.
        for name in (f"missing-{secrets.token_hex(3)}", theirs):
            problem(_upload(cluster, name, [("x.txt", b"x")]), 404)
            problem(_download(cluster, name, ["x.txt"]), 404)
            problem(
                _json(cluster, "POST", f"/folders/{name}/rename_file", {"target_path": "x.txt", "new_name": "y"}), 404
            )
            problem(_json(cluster, "DELETE", f"/folders/{name}/delete_files", {"files": ["x.txt"]}), 404)
        assert _listing(cluster, theirs, who=ADMIN) == {}
        # Quota and body size: 413 problems.
        doc = problem(_upload(cluster, small, [("big.bin", b"x" * 2048)]), 413)
        assert "quota" in doc["detail"]
        assert _listing(cluster, small) == {}
        problem(
            _send(
                cluster,
                "POST",
                f"/folders/{folder}/upload",
                b"x" * (UPLOAD_BODY_LIMIT + 1),
                "multipart/form-data; boundary=x",
            ),
            413,
        )
        after = _listing(cluster, folder)
        assert set(after) == set(before) | {"dir"} and after["keep.txt"]["size"] == 4
    finally:
        for name, who in ((folder, USER), (theirs, ADMIN), (small, USER)):
            _delete_folder(cluster, name, who)


def test_read_only_share_may_download_but_not_write(cluster: Cluster) -> None:
    folder = _new_folder(cluster, who=ADMIN)
    try:
        assert _upload(cluster, folder, [("r.txt", b"read me")], who=ADMIN).status_code == 201
        r = cluster.request(
            "POST", f"/folders/{folder}/share", {"permission": "ro", "emails": [USER["email"]]}, who=ADMIN
        )
        if r.status_code >= 400:  # user folders are shared by invitation
            r = cluster.request(
                "POST", f"/folders/{folder}/invite", {"perm": "ro", "emails": [USER["email"]]}, who=ADMIN
            )
            assert r.status_code == 200, r.text
            invs = cluster.request("GET", "/folders/invitations/list").json()["invitations"]
            inv = next(i for i in invs if i["vfolder_name"] == folder)
            assert cluster.request("POST", "/folders/invitations/accept", {"inv_id": inv["id"]}).status_code == 200
        r = _download(cluster, folder, ["r.txt"])
        assert r.status_code == 200, r.text
        assert _parts(r) == [("r.txt", b"read me")]
        problem(_upload(cluster, folder, [("w.txt", b"w")]), 404)
        problem(_json(cluster, "DELETE", f"/folders/{folder}/delete_files", {"files": ["r.txt"]}), 404)
        assert set(_listing(cluster, folder, who=ADMIN)) == {"r.txt"}
    finally:
        _delete_folder(cluster, folder, ADMIN)


@pytest.mark.skipif(not CLI_1909.exists(), reason="the official 19.09 client is not installed")
def test_official_1909_cli_round_trip(cluster: Cluster, tmp_path: Path) -> None:
    folder = _new_folder(cluster)
    env = cluster.env(USER)

    def cli(*args: str, cwd: Path = tmp_path, stdin: str = "") -> str:
        p = subprocess.run(
            [str(CLI_1909), *args], cwd=cwd, env=env, input=stdin, capture_output=True, text=True, timeout=120
        )
        assert p.returncode == 0, p.stdout + p.stderr
        return p.stdout + p.stderr

    try:
        src = tmp_path / "src"
        (src / "d").mkdir(parents=True)
        (src / "one.txt").write_bytes(b"one\n")
        (src / "d" / "two.bin").write_bytes(os.urandom(70_000))
        cli("vfolder", "upload", folder, "one.txt", "d/two.bin", cwd=src)
        assert set(_listing(cluster, folder)) == {"one.txt", "d"}
        out = tmp_path / "out"
        out.mkdir()
        cli("vfolder", "download", folder, "one.txt", "d/two.bin", cwd=out)
        assert (out / "one.txt").read_bytes() == b"one\n"
        assert (out / "two.bin").read_bytes() == (src / "d" / "two.bin").read_bytes()
        cli("vfolder", "rename-file", folder, "one.txt", "uno.txt")
        cli("vfolder", "rm", folder, "uno.txt", stdin="y\n")
        assert set(_listing(cluster, folder)) == {"d"}
    finally:
        _delete_folder(cluster, folder)


def _events(cluster: Cluster, query: str, who: dict[str, Any] = USER) -> tuple[int, str]:
    path = f"/stream/kernel/_/events?{query}"
    host = cluster.endpoint.split("//", 1)[1]
    h = sign_request_headers(
        method="GET",
        path_with_query=path,
        host=host,
        content_type="application/json",
        version=V4,
        access_key=who["access_key"],
        secret_key=who["secret_key"],
    )
    with httpx.stream("GET", cluster.endpoint + path, headers=h, timeout=60) as r:
        text = ""
        for chunk in r.iter_text():
            text += chunk
            if "server_close" in text:
                break
        return r.status_code, text


def test_v4_session_events_route(cluster: Cluster) -> None:
    name = f"legacy-ev-{secrets.token_hex(3)}"
    r = _json(cluster, "POST", "/kernel/create", {"lang": "python", "clientSessionToken": name})
    assert r.status_code == 201, r.text
    r = cluster.request("DELETE", f"/session/{name}")
    assert r.status_code == 200, r.text
    # A session that is over: its final event and server_close at once.
    status, text = _events(cluster, f"sessionId={name}")
    assert status == 200 and "event: session_terminated" in text and "event: server_close" in text, text
    data = [json.loads(line[5:]) for line in text.splitlines() if line.startswith("data:")]
    assert any(d.get("sessionName") == name for d in data)
    status, body = _events(cluster, "sessionId=no-such-session")
    assert status == 404 and json.loads(body)["status"] == 404
