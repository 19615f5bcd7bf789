"""Session file endpoints (upload, list, download) against real containers, including symlink attacks."""

from __future__ import annotations

import io
import json
import secrets
import subprocess
import sys
import tarfile
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import httpx
import pytest

from ai.backend.client.func.session import _split_multipart
from ai.backend.common.auth import sign_request_headers
from ai.backend.testutils.problems import problem

from .conftest import ADMIN, USER, Cluster

pytestmark = pytest.mark.docker

CLI = [sys.executable, "-m", "ai.backend.client.cli"]
MiB = 1024 * 1024


def _send(
    cluster: Cluster, method: str, path: str, content: bytes | None, content_type: str, who: dict[str, Any] = USER
) -> httpx.Response:
    host = cluster.endpoint.split("//", 1)[1]
    h = sign_request_headers(
        method=method,
        path_with_query=path,
        host=host,
        content_type=content_type,
        version="v6.20220615",
        access_key=who["access_key"],
        secret_key=who["secret_key"],
    )
    return httpx.request(method, cluster.endpoint + path, headers=h, content=content, timeout=120)


def _upload(
    cluster: Cluster, sess: str, files: list[tuple[str, bytes]], who: dict[str, Any] = USER, query: str = ""
) -> httpx.Response:
    req = httpx.Request("POST", "http://x/", files=[("src", (n, c, "application/octet-stream")) for n, c in files])
    return _send(cluster, "POST", f"/session/{sess}/upload{query}", req.read(), req.headers["content-type"], who)


def _raw_upload(cluster: Cluster, sess: str, files: list[tuple[str, bytes]]) -> httpx.Response:
    """An upload with the file names as given (httpx would percent-escape control characters)."""
    boundary = "b" + secrets.token_hex(8)
    body = (
        b"".join(
            f'--{boundary}\r\nContent-Disposition: form-data; name="src"; filename="{n}"\r\n\r\n'.encode() + c + b"\r\n"
            for n, c in files
        )
        + f"--{boundary}--\r\n".encode()
    )
    return _send(cluster, "POST", f"/session/{sess}/upload", body, f"multipart/form-data; boundary={boundary}")


def _stdout(cluster: Cluster, sess: str, code: str) -> str:
    """Run ``code`` in the session; assert it finished and return what it printed."""
    result = cluster.exec(sess, code)
    assert result["status"] == "finished", result
    return "".join(text for kind, text in result["console"] if kind == "stdout")


def _py(cluster: Cluster, sess: str, expr: str) -> Any:
    """The value of a Python expression evaluated in the session (JSON round trip)."""
    return json.loads(_stdout(cluster, sess, f"import os, json, stat\nprint(json.dumps({expr}))"))


def _tars(r: httpx.Response) -> list[tarfile.TarFile]:
    assert r.status_code == 200, r.text
    ctype = r.headers["content-type"]
    assert ctype.startswith("multipart/mixed"), ctype
    return [tarfile.open(fileobj=io.BytesIO(p)) for p in _split_multipart(r.content, ctype)]


def _container(cluster: Cluster, sess: str) -> str:
    cid = cluster.request("GET", f"/session/{sess}").json()["containerId"]
    assert cid
    return str(cid)


def _root_sh(cid: str, script: str) -> str:
    """Run a shell script in the container as root (the test's view, not the user's)."""
    p = subprocess.run(
        ["docker", "exec", "-u", "0", cid, "sh", "-c", script], capture_output=True, text=True, timeout=60
    )
    return p.stdout


@pytest.fixture
def session(cluster: Cluster) -> Iterator[str]:
    name = "sf-" + secrets.token_hex(4)
    r = cluster.request("POST", "/session", {"image": "python", "name": name})
    assert r.status_code == 201 and r.json()["status"] == "RUNNING", r.text
    yield name
    cluster.request("DELETE", f"/session/{name}")


def test_upload_nested_overwrite_and_execute(cluster: Cluster, session: str) -> None:
    r = _upload(
        cluster,
        session,
        [("a.txt", b"first\n"), ("dir/sub/b.txt", b"\x00\x01binary\r\n"), ("/home/work/abs.txt", b"absolute")],
    )
    assert r.status_code == 204, r.text
    assert _stdout(cluster, session, "print(open('a.txt').read(), end='')") == "first\n"
    assert _py(cluster, session, "open('dir/sub/b.txt','rb').read().hex()") == b"\x00\x01binary\r\n".hex()
    assert _py(cluster, session, "open('abs.txt').read()") == "absolute"
    owners = _py(
        cluster,
        session,
        "[(p, os.stat(p).st_uid, os.stat(p).st_gid, oct(stat.S_IMODE(os.stat(p).st_mode)))"
        " for p in ('a.txt', 'dir', 'dir/sub', 'dir/sub/b.txt')]",
    )
    assert owners == [
        ["a.txt", 1000, 1000, "0o644"],
        ["dir", 1000, 1000, "0o755"],
        ["dir/sub", 1000, 1000, "0o755"],
        ["dir/sub/b.txt", 1000, 1000, "0o644"],
    ]
    # The user can write into the created directories and overwrite uploaded files.
    _stdout(cluster, session, "open('dir/sub/mine.txt', 'w').write('ok')")
    r = _upload(cluster, session, [("a.txt", b"second"), ("dir/sub/c.txt", b"c")])
    assert r.status_code == 204, r.text
    assert _py(cluster, session, "[open(p).read() for p in ('a.txt', 'dir/sub/c.txt', 'dir/sub/mine.txt')]") == [
        "second",
        "c",
        "ok",
    ]
    # Exactly 1 MiB is allowed.
    assert _upload(cluster, session, [("big.bin", b"z" * MiB)]).status_code == 204
    assert _py(cluster, session, "os.path.getsize('big.bin')") == MiB


def test_upload_limits_write_nothing(cluster: Cluster, session: str) -> None:
    p = problem(_upload(cluster, session, [(f"many{i}.txt", b"x") for i in range(21)]), 400)
    assert "20" in p["detail"]
    p = problem(_upload(cluster, session, [("small.txt", b"s"), ("huge.bin", b"z" * (MiB + 1))]), 400)
    assert "huge.bin" in p["detail"]
    p = problem(_upload(cluster, session, [("ok.txt", b"s"), ("dup.txt", b"1"), ("./dup.txt", b"2")]), 400)
    assert "more than once" in p["detail"]
    p = problem(_upload(cluster, session, [("x", b"1"), ("x/y", b"2")]), 400)
    p = problem(_send(cluster, "POST", f"/session/{session}/upload", b"{}", "application/json"), 400)
    assert "multipart" in p["detail"]
    left = _py(cluster, session, "sorted(os.listdir('.'))")
    assert not [n for n in left if n.startswith(("many", "small", "huge", "ok", "dup", "x"))], left


@pytest.mark.parametrize(
    "bad",
    [
        "../escape.txt",
        "a/../../escape.txt",
        "/etc/escape.txt",
        "/home/workx/e.txt",
        "",
        "bad\x01name",
        "d/" + "n" * 256,
        "/home/work",
        "dir/",
    ],
)
def test_upload_bad_names(cluster: Cluster, session: str, bad: str) -> None:
    p = problem(_raw_upload(cluster, session, [("fine.txt", b"1"), (bad, b"2")]), 400)
    assert p["title"] == "Invalid API parameters"
    assert _py(cluster, session, "[os.path.exists(p) for p in ('fine.txt', '../escape.txt', '/etc/escape.txt')]") == [
        False,
        False,
        False,
    ]


def test_symlinks_cannot_escape(cluster: Cluster, session: str) -> None:
    marker = "bai-pwn-" + secrets.token_hex(4)
    cid = _container(cluster, session)
    _stdout(
        cluster,
        session,
        "os = __import__('os')\nos.mkdir('realdir')\nos.symlink('/', 'root')\n"
        "os.symlink('/etc', 'etc2')\nos.symlink('/etc/shadow', 'sh')\n"
        "os.symlink('/etc/shadow', 'sh2')\nos.symlink('realdir', 'inner')",
    )
    shadow_before = _root_sh(cid, "stat -c '%s %Y %i' /etc/shadow")
    assert shadow_before.strip()
    for name in (
        f"root/tmp/{marker}",
        f"etc2/{marker}",
        f"root/etc/{marker}",
        f"inner/{marker}",
        f"root/home/work/{marker}",
    ):
        p = problem(_upload(cluster, session, [("innocent.txt", b"1"), (name, b"pwned")]), 400)
        assert p["type"].endswith("/symlink-refused"), p
        assert "symbolic link" in p["detail"]
    # Nothing was written: not in the container's root-owned places, not on the host, not the innocent file.
    found = _root_sh(
        cid,
        f"ls -d /tmp/{marker} /etc/{marker} /home/work/{marker} /home/work/realdir/{marker} "
        "/home/work/innocent.txt 2>/dev/null",
    )
    assert found == ""
    assert not Path("/tmp", marker).exists() and not Path("/etc", marker).exists()
    # A symlink as the last component is replaced by the uploaded file; its target is untouched.
    assert _upload(cluster, session, [("sh", b"replaced")]).status_code == 204
    assert _py(cluster, session, "[os.path.islink('sh'), open('sh').read()]") == [False, "replaced"]
    assert _root_sh(cid, "stat -c '%s %Y %i' /etc/shadow") == shadow_before
    # Downloads do not pass through symlinked directories either (dockerd would read as root).
    for path in ("root/etc/shadow", "etc2/shadow", "inner/x", "/home/work/root/home/work/sh"):
        r = cluster.request("GET", f"/session/{session}/download?files={path}")
        assert problem(r, 400)["type"].endswith("/symlink-refused"), path
    # ... and a link itself comes as a link, without the content of its target.
    for name, target in (("sh2", "/etc/shadow"), ("inner", "realdir"), ("root", "/")):
        (tf,) = _tars(cluster.request("GET", f"/session/{session}/download?files={name}"))
        (member,) = tf.getmembers()
        assert member.issym() and member.linkname == target and member.size == 0
    # Listing does not follow a symlinked directory out of /home/work.
    p = problem(cluster.request("GET", f"/session/{session}/files?path=root"), 400)
    assert "outside" in p["detail"]
    listing = cluster.request("GET", f"/session/{session}/files").json()
    entries = {e["filename"]: e for e in json.loads(listing["files"])}
    assert entries["root"]["mode"].startswith("l") and entries["root"]["is_symlink"] is True
    assert entries["root"]["link_target"] == "/" and entries["root"]["is_dir"] is False


def test_symlink_swap_race_is_contained(cluster: Cluster, session: str) -> None:
    """A process in the container swaps a directory and a symlink to /etc as fast as it can during uploads."""
    marker = "bai-race-" + secrets.token_hex(4)
    cid = _container(cluster, session)
    # renameat2(RENAME_EXCHANGE) swaps the two names atomically: "race" always exists, half of the time as a
    # real directory and half of the time as a symlink to /etc.
    loop = (
        "import ctypes, os, time\nos.mkdir('race')\nos.symlink('/etc', 'race_other')\n"
        "swap = ctypes.CDLL(None, use_errno=True).renameat2\n"
        "end = time.time() + 90\n"
        "while time.time() < end and not os.path.exists('stop'):\n"
        "    for _ in range(10000):\n"
        "        assert swap(-100, b'race', -100, b'race_other', 2) == 0, ctypes.get_errno()\n"
    )
    _stdout(
        cluster,
        session,
        f"import subprocess, sys\nsubprocess.Popen([sys.executable, '-c', {loop!r}], start_new_session=True)",
    )
    statuses = set()
    for _ in range(25):
        r = _upload(cluster, session, [(f"race/{marker}", b"pwned")])
        statuses.add(r.status_code)
        assert r.status_code in (204, 400), r.text
    _stdout(cluster, session, "open('stop', 'w').close()")
    assert _root_sh(cid, f"ls /etc/{marker} 2>/dev/null") == ""
    assert not Path("/etc", marker).exists()


def test_list_files(cluster: Cluster, session: str) -> None:
    assert _upload(cluster, session, [("top.txt", b"12345"), ("dir/inner.txt", b"abc")]).status_code == 204
    _stdout(cluster, session, "import os\nos.symlink('top.txt', 'link')")
    r = cluster.request("GET", f"/session/{session}/files")
    assert r.status_code == 200, r.text
    body = r.json()
    assert body["folder_path"] == "/home/work" and body["errors"] == ""
    assert isinstance(body["files"], str)
    entries = {e["filename"]: e for e in json.loads(body["files"])}
    assert {"top.txt", "dir", "link", ".bashrc"} <= set(entries)
    top = entries["top.txt"]
    assert set(top) >= {"filename", "size", "mode", "mtime", "ctime", "atime", "is_dir"}
    assert top["size"] == 5 and top["mode"] == "-rw-r--r--" and top["is_dir"] is False
    assert isinstance(top["mtime"], float)
    assert entries["dir"]["mode"] == "drwxr-xr-x" and entries["dir"]["is_dir"] is True
    assert entries["link"]["mode"] == "lrwxrwxrwx" and entries["link"]["link_target"] == "top.txt"
    for path in ("dir", "/home/work/dir", "./dir/"):
        r = cluster.request("GET", f"/session/{session}/files?path={path}")
        assert r.status_code == 200, r.text
        assert r.json()["folder_path"] == "/home/work/dir"
        assert [e["filename"] for e in json.loads(r.json()["files"])] == ["inner.txt"]
    # The path may come in a JSON body as well.
    r = cluster.request("GET", f"/session/{session}/files", {"path": "dir"})
    assert r.json()["folder_path"] == "/home/work/dir"
    problem(cluster.request("GET", f"/session/{session}/files?path=nope"), 404)
    problem(cluster.request("GET", f"/session/{session}/files?path=top.txt"), 400)
    problem(cluster.request("GET", f"/session/{session}/files?path=../"), 400)
    problem(cluster.request("GET", f"/session/{session}/files?path=/etc"), 400)


def test_download(cluster: Cluster, session: str) -> None:
    files = [("a.txt", b"alpha"), ("d/one.txt", b"1"), ("d/sub/two.txt", b"22")]
    assert _upload(cluster, session, files).status_code == 204
    (tf,) = _tars(cluster.request("GET", f"/session/{session}/download?files=a.txt"))
    assert tf.getnames() == ["a.txt"]
    f = tf.extractfile("a.txt")
    assert f is not None and f.read() == b"alpha"
    tars = _tars(cluster.request("GET", f"/session/{session}/download?files=d&files=/home/work/d/sub/two.txt"))
    assert len(tars) == 2
    assert sorted(m.name for m in tars[0].getmembers() if m.isfile()) == ["d/one.txt", "d/sub/two.txt"]
    f = tars[1].extractfile("two.txt")
    assert f is not None and f.read() == b"22"
    # The file list may come in a JSON body too.
    (tf,) = _tars(cluster.request("GET", f"/session/{session}/download", {"files": ["d/one.txt"]}))
    assert tf.getnames() == ["one.txt"]
    p = problem(cluster.request("GET", f"/session/{session}/download?" + "&".join(["files=a.txt"] * 6)), 400)
    assert "5" in p["detail"]
    problem(cluster.request("GET", f"/session/{session}/download?files=missing.txt"), 404)
    p = problem(cluster.request("GET", f"/session/{session}/download?files=a.txt/x"), 400)
    assert "not a directory" in p["detail"]
    problem(cluster.request("GET", f"/session/{session}/download?files=../../etc/passwd"), 400)
    problem(cluster.request("GET", f"/session/{session}/download?files=/etc/passwd"), 400)
    problem(cluster.request("GET", f"/session/{session}/download"), 400)
    # More than 64 MiB in all is refused (a sparse file: cheap to make, not to send).
    _stdout(cluster, session, "f = open('huge.bin', 'wb')\nf.truncate(65 * 1024 * 1024)\nf.close()")
    p = problem(cluster.request("GET", f"/session/{session}/download?files=huge.bin"), 413)
    assert "bytes" in p["detail"]


def test_ownership_delegation_and_state(cluster: Cluster, session: str) -> None:
    # Another user (here the admin acting for themselves) does not see the session at all.
    problem(_upload(cluster, session, [("x.txt", b"1")], who=ADMIN), 404)
    problem(cluster.request("GET", f"/session/{session}/files", who=ADMIN), 404)
    problem(cluster.request("GET", f"/session/{session}/download?files=x", who=ADMIN), 404)
    # An admin may act for the owner with owner_access_key.
    ak = USER["access_key"]
    r = _upload(cluster, session, [("by-admin.txt", b"hi")], who=ADMIN, query=f"?owner_access_key={ak}")
    assert r.status_code == 204, r.text
    r = cluster.request("GET", f"/session/{session}/files?owner_access_key={ak}", who=ADMIN)
    assert "by-admin.txt" in r.json()["files"]
    # A regular user may not use owner_access_key for someone else.
    adm = ADMIN["access_key"]
    problem(cluster.request("GET", f"/session/{session}/files?owner_access_key={adm}"), 403)
    # Once the session is terminated, its files are gone.
    assert cluster.request("DELETE", f"/session/{session}").status_code == 200
    for r in (
        _upload(cluster, session, [("late.txt", b"1")]),
        cluster.request("GET", f"/session/{session}/files"),
        cluster.request("GET", f"/session/{session}/download?files=by-admin.txt"),
    ):
        assert r.status_code in (404, 409), r.text
        assert r.headers["content-type"].startswith("application/problem+json")


def test_cli_upload_ls_download_round_trip(cluster: Cluster, session: str, tmp_path: Path) -> None:
    src = tmp_path / "src"
    (src / "pkg").mkdir(parents=True)
    (src / "main.py").write_text("print('hello from main')\n")
    (src / "pkg" / "data.txt").write_bytes(b"payload\n")

    def cli(*args: str, cwd: Path = tmp_path) -> subprocess.CompletedProcess[str]:
        return subprocess.run([*CLI, *args], env=cluster.env(), capture_output=True, text=True, timeout=120, cwd=cwd)

    p = cli("upload", session, "main.py", "pkg/data.txt", cwd=src)
    assert p.returncode == 0, p.stderr
    assert _stdout(cluster, session, "import runpy\n_ = runpy.run_path('main.py')") == "hello from main\n"
    p = cli("ls", session)
    assert p.returncode == 0, p.stderr
    assert "main.py" in p.stdout and "pkg" in p.stdout and "-rw-r--r--" in p.stdout
    p = cli("--output", "json", "ls", session, "pkg")
    assert p.returncode == 0, p.stderr
    listed = json.loads(p.stdout)
    assert listed["folder_path"] == "/home/work/pkg"
    assert [(f["filename"], f["size"]) for f in listed["files"]] == [("data.txt", 8)]
    dest = tmp_path / "out"
    p = cli("download", session, "main.py", "pkg", "--dest", str(dest))
    assert p.returncode == 0, p.stderr
    assert (dest / "main.py").read_text() == "print('hello from main')\n"
    assert (dest / "pkg" / "data.txt").read_bytes() == b"payload\n"
    # A link to an absolute path is downloaded but not extracted (the client's tar "data" filter).
    _stdout(cluster, session, "import os\nos.symlink('/', 'rootlink')")
    p = cli("download", session, "rootlink", "--dest", str(dest))
    assert p.returncode != 0 and "Refused to extract" in p.stderr, p.stderr
    assert not (dest / "rootlink").exists()
    # Failures: one line on stderr and a non-zero exit.
    for args in (
        ("ls", session, "no-such-dir"),
        ("download", session, "no-such-file"),
        ("download", session, "../../etc/passwd"),
    ):
        p = cli(*args)
        assert p.returncode != 0, (args, p.stdout)
        assert len(p.stderr.strip().splitlines()) == 1 and "Traceback" not in p.stderr, p.stderr
