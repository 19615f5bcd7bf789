"""Name validation and multipart handling of the session file endpoints (no server needed)."""

from __future__ import annotations

import asyncio
import io
import tarfile
from pathlib import Path

import aiohttp
import httpx
import pytest

from ai.backend.agent.backends.docker.files import check_relpath
from ai.backend.common.problems import InvalidAPIParameters
from ai.backend.manager.api.session_files import (
    MAX_NAME_BYTES,
    MAX_PATH_BYTES,
    MAX_UPLOAD_FILES,
    _transport_tar,
    multipart_mixed,
    parse_form_files,
    session_relpath,
)


@pytest.mark.parametrize(
    ("raw", "expected"),
    [
        ("a.txt", "a.txt"),
        ("dir/sub/a.txt", "dir/sub/a.txt"),
        ("./dir//a.txt", "dir/a.txt"),
        ("/home/work/a.txt", "a.txt"),
        ("/home/work/x/y", "x/y"),
        ("/home//work/./z", "z"),
        ("sp ace/ünïcode.txt", "sp ace/ünïcode.txt"),
        ("...", "..."),
        ("a..b", "a..b"),
    ],
)
def test_upload_names_accepted(raw: str, expected: str) -> None:
    assert session_relpath(raw, for_file=True) == expected
    assert check_relpath(expected) == expected.split("/")


@pytest.mark.parametrize(
    ("raw", "why"),
    [
        ("", "empty"),
        ("   ", "empty"),
        ("../etc/passwd", ".."),
        ("a/../../b", ".."),
        ("a/..", ".."),
        ("/home/work/../etc", ".."),
        ("/etc/passwd", "outside"),
        ("/home/workx/a", "outside"),
        ("/home", "outside"),
        ("/", "outside"),
        ("a\x00b", "control"),
        ("a\nb", "control"),
        ("/home/work", "does not name a file"),
        (".", "does not name a file"),
        ("dir/", "names a directory"),
        ("x" * (MAX_NAME_BYTES + 1), "longer than"),
        ("/".join(["d" * 200] * 30), "longer than"),
        ("\udcff", "Unicode"),
    ],
)
def test_upload_names_refused(raw: str, why: str) -> None:
    with pytest.raises(InvalidAPIParameters) as exc:
        session_relpath(raw, what="file name", for_file=True)
    assert exc.value.status == 400
    assert why in str(exc.value.detail)


def test_non_string_and_long_but_valid_names() -> None:
    with pytest.raises(InvalidAPIParameters):
        session_relpath(["a"])
    name = "x" * MAX_NAME_BYTES
    assert session_relpath(name, for_file=True) == name
    # Multi-byte characters count as bytes, as the kernel counts them.
    with pytest.raises(InvalidAPIParameters):
        session_relpath("é" * (MAX_NAME_BYTES // 2 + 1), for_file=True)
    deep = "/".join(["d" * 100] * (MAX_PATH_BYTES // 101))
    assert session_relpath(deep, for_file=True) == deep


def test_listing_and_download_paths_may_name_the_work_dir() -> None:
    assert session_relpath("/home/work") == ""
    assert session_relpath(".") == ""
    assert session_relpath("/home/work/") == ""
    assert session_relpath("sub/") == "sub"
    with pytest.raises(InvalidAPIParameters):
        session_relpath("/tmp")


@pytest.mark.parametrize("rel", ["/abs", "a/../b", "a//b", "./a", "a/", "a\x00b", ".."])
def test_agent_refuses_unnormalized_paths(rel: str) -> None:
    with pytest.raises(InvalidAPIParameters):
        check_relpath(rel)


def _encode(files: list[tuple[str, bytes]]) -> tuple[bytes, str]:
    """A multipart body as httpx (the SDK's HTTP client) sends it."""
    req = httpx.Request("POST", "http://x/", files=[("src", (n, c, "application/octet-stream")) for n, c in files])
    return req.read(), req.headers["content-type"]


def test_parse_form_files_round_trips_binary_content() -> None:
    binary = bytes(range(256)) * 10 + b"\r\n--not-a-boundary\r\n" + b"\r"
    files = [("a.txt", b"hello\n"), ("dir/sub/bin.dat", binary), ("empty", b""), ('q"uote ü.txt', b"\r\n")]
    body, ctype = _encode(files)
    parsed = parse_form_files(body, ctype)
    assert [c for _, c in parsed] == [c for _, c in files]
    assert [n for n, _ in parsed][:3] == ["a.txt", "dir/sub/bin.dat", "empty"]
    assert parsed[3][0] in ('q"uote ü.txt', "q%22uote ü.txt")  # httpx escapes quotes the HTML5 way


def test_parse_form_files_rfc2231_name_and_errors() -> None:
    body = (
        b"--XYZ\r\nContent-Disposition: form-data; name=\"src\"; filename*=UTF-8''d%C3%A9j%C3%A0.txt\r\n\r\n"
        b"data\r\n--XYZ--\r\n"
    )
    assert parse_form_files(body, "multipart/form-data; boundary=XYZ") == [("déjà.txt", b"data")]
    with pytest.raises(InvalidAPIParameters, match="multipart/form-data"):
        parse_form_files(body, "application/json")
    with pytest.raises(InvalidAPIParameters, match="truncated"):
        parse_form_files(body[:-12], "multipart/form-data; boundary=XYZ")
    field = b'--XYZ\r\nContent-Disposition: form-data; name="x"\r\n\r\nvalue\r\n--XYZ--\r\n'
    with pytest.raises(InvalidAPIParameters, match="filename"):
        parse_form_files(field, "multipart/form-data; boundary=XYZ")


def test_parse_form_files_caps_the_number_of_parts() -> None:
    body, ctype = _encode([(f"f{i}", b"x") for i in range(MAX_UPLOAD_FILES + 1)])
    with pytest.raises(InvalidAPIParameters, match=f"At most {MAX_UPLOAD_FILES}"):
        parse_form_files(body, ctype)
    body, ctype = _encode([(f"f{i}", b"x") for i in range(MAX_UPLOAD_FILES)])
    assert len(parse_form_files(body, ctype)) == MAX_UPLOAD_FILES


def test_transport_tar_and_multipart_mixed() -> None:
    data = _transport_tar([("a/b.txt", b"one"), ("c", b"two")])
    with tarfile.open(fileobj=io.BytesIO(data)) as tf:
        assert [(m.name, m.isreg(), m.size) for m in tf.getmembers()] == [("a/b.txt", True, 3), ("c", True, 3)]
    body, ctype = multipart_mixed([("a.tar", b"\x00tar1\r\n"), ("b.tar", b"tar2")])
    assert ctype.startswith("multipart/mixed; boundary=")
    from ai.backend.client.func.session import _split_multipart

    assert _split_multipart(body, ctype) == [b"\x00tar1\r\n", b"tar2"]


async def test_runner_list_files_uses_lstat_and_stays_in_the_work_dir(tmp_path: Path) -> None:
    from ai.backend.kernel.runner import Supervisor

    work = tmp_path / "work"
    (work / "sub").mkdir(parents=True)
    (work / "a.txt").write_bytes(b"12345")
    (work / "root").symlink_to("/")
    (work / "inside").symlink_to(work / "sub")
    sup = Supervisor(str(tmp_path / "s.sock"), "python", 1.0, str(work), [])
    res = await sup.op_list_files({"path": str(work)})
    assert res["status"] == "ok" and res["folder_path"] == str(work) and res["truncated"] is False
    entries = {e["filename"]: e for e in res["files"]}
    assert sorted(entries) == ["a.txt", "inside", "root", "sub"]
    assert entries["a.txt"]["size"] == 5 and entries["a.txt"]["mode"].startswith("-")
    assert entries["sub"]["is_dir"] is True and entries["sub"]["mode"].startswith("d")
    assert entries["root"]["mode"].startswith("l") and entries["root"]["is_dir"] is False
    assert entries["root"]["link_target"] == "/"
    assert (await sup.op_list_files({"path": "root"}))["status"] == "outside"
    assert (await sup.op_list_files({"path": "root/etc"}))["status"] == "outside"
    inside = await sup.op_list_files({"path": "inside"})
    assert inside["status"] == "ok" and inside["folder_path"] == str(work / "inside")
    assert (await sup.op_list_files({"path": "nope"}))["status"] == "not-found"
    assert (await sup.op_list_files({"path": "a.txt"}))["status"] == "not-a-directory"
    assert (await sup.op_list_files({"path": "../"}))["status"] == "outside"


def test_parse_form_files_reads_aiohttp_quoted_names() -> None:
    form = aiohttp.FormData()
    form.add_field("src", b"1", filename="dir/sub/déjà vu.txt", content_type="application/octet-stream")
    form.add_field("src", b"2", filename="..%2Fx", content_type="application/octet-stream")
    payload = form()
    writer = _Sink()
    asyncio.run(payload.write(writer))  # type: ignore[arg-type]
    names = [n for n, _ in parse_form_files(bytes(writer.data), payload.content_type)]
    assert names[0] == "dir/sub/déjà vu.txt"
    # A literal "%2F" sent by aiohttp comes back as itself; a decoded "../" would be refused later anyway.
    assert names[1] == "..%2Fx"
    assert [n for n, _ in parse_form_files(*_encode([("50%off.txt", b""), ("a%2Fb", b"")]))] == ["50%off.txt", "a/b"]
    with pytest.raises(InvalidAPIParameters):
        session_relpath(parse_form_files(*_encode([("..%2Fx", b"")]))[0][0], for_file=True)


class _Sink:
    def __init__(self) -> None:
        self.data = bytearray()

    async def write(self, chunk: bytes) -> None:
        self.data += chunk
