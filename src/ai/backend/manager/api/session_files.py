"""Session file endpoints: /session/:id/upload, /session/:id/files and /session/:id/download.

The manager only validates and forwards: names are checked here (a path under /home/work, no ``..``, no NUL or
control characters, not too long), the agent owning the session's main kernel does the transfer through the
Docker archive API with its own symlink guards (``ai.backend.agent.files``), and listing is done by the runner
inside the container, as the kernel user.
"""

from __future__ import annotations

import io
import json
import re
import secrets
import tarfile
from email.message import Message
from typing import Any
from urllib.parse import quote, unquote

from fastapi import APIRouter, Depends, Request, Response

from ai.backend.common.problems import InvalidAPIParameters, ProblemError

from ..auth import AuthContext
from ..models import SessionRow
from ..registry import SessionNotRunning, SessionRegistry
from ..sessions.status import SessionStatus as S
from .bodies import DocumentedRoute, Field, LaterStr, RawParams, body_of, given
from .deps import auth_required, json_body, registry
from .session import requested_session

router = APIRouter(route_class=DocumentedRoute)


class ListFilesParams(RawParams):
    path: LaterStr = Field(None, description="A directory of the session (the working directory when not given).")


WORKDIR = "/home/work"
MAX_UPLOAD_FILES = 20
MAX_UPLOAD_FILE_SIZE = 1024 * 1024
#: Room for the multipart headers around 20 files of 1 MiB; a bigger body is refused before it is parsed.
UPLOAD_BODY_LIMIT = MAX_UPLOAD_FILES * (MAX_UPLOAD_FILE_SIZE + 8192) + 8192
MAX_DOWNLOAD_FILES = 5
MAX_DOWNLOAD_BYTES = 64 * 1024 * 1024
MAX_PATH_BYTES = 4095 - len(WORKDIR) - 1  # PATH_MAX, counting the /home/work/ prefix and the final NUL
MAX_NAME_BYTES = 255
_AIOHTTP_QUOTED = re.compile(r"(?:[A-Za-z0-9_.~-]|%[0-9A-Fa-f]{2})+")


class DownloadTooLarge(ProblemError):
    status, slug, title = 413, "payload-too-large", "The requested files are too large"


def session_relpath(raw: object, *, what: str = "path", for_file: bool = False) -> str:
    """Normalize a path inside the session (absolute under /home/work, or relative to it) to a relative one.

    ``""`` stands for /home/work itself, which ``for_file`` (an upload name) refuses. Raises a 400 problem for
    ``..`` components, NUL and control characters, paths outside /home/work, empty and over-long names.
    """
    if not isinstance(raw, str):
        raise InvalidAPIParameters(f"The {what} must be a string.")
    if not raw.strip():
        raise InvalidAPIParameters(f"The {what} is empty.")
    if any(ord(c) < 0x20 or ord(c) == 0x7F for c in raw):
        raise InvalidAPIParameters(f"The {what} {raw!r} contains NUL or control characters.")
    try:
        raw.encode("utf-8")
    except UnicodeEncodeError:
        raise InvalidAPIParameters(f"The {what} {raw!r} is not valid Unicode.") from None
    parts = [p for p in raw.split("/") if p not in ("", ".")]
    if ".." in parts:
        raise InvalidAPIParameters(f"The {what} {raw!r} contains '..'; only paths under {WORKDIR} are allowed.")
    if raw.startswith("/"):
        if parts[:2] != ["home", "work"]:
            raise InvalidAPIParameters(f"The {what} {raw!r} is outside {WORKDIR}; only paths under it are allowed.")
        parts = parts[2:]
    if for_file:
        if not parts:
            raise InvalidAPIParameters(f"The {what} {raw!r} does not name a file under {WORKDIR}.")
        if raw.endswith(("/", "/.")):
            raise InvalidAPIParameters(f"The {what} {raw!r} names a directory, not a file.")
    rel = "/".join(parts)
    if any(len(p.encode()) > MAX_NAME_BYTES for p in parts):
        raise InvalidAPIParameters(f"A component of the {what} is longer than {MAX_NAME_BYTES} bytes.")
    if len(rel.encode()) > MAX_PATH_BYTES:
        raise InvalidAPIParameters(f"The {what} is longer than {MAX_PATH_BYTES} bytes.")
    return rel


def _header(name: str, value: str) -> Message:
    msg = Message()
    msg[name] = value
    return msg


def parse_form_files(body: bytes, content_type: str) -> list[tuple[str, bytes]]:
    """The ``(filename, content)`` of each part of a ``multipart/form-data`` body (all parts must be files)."""
    ctype = _header("content-type", content_type)
    boundary = ctype.get_boundary() if ctype.get_content_type() == "multipart/form-data" else None
    if not boundary or len(boundary) > 200:
        raise InvalidAPIParameters("Uploads must be sent as multipart/form-data with a boundary.")
    delim = b"--" + boundary.encode("latin-1", "replace")
    if body.startswith(delim):
        pos = len(delim)
    else:
        start = body.find(b"\r\n" + delim)
        if start < 0:
            raise InvalidAPIParameters("The multipart body has no part.")
        pos = start + 2 + len(delim)
    sep = b"\r\n" + delim
    files: list[tuple[str, bytes]] = []
    while not body.startswith(b"--", pos):
        eol = body.find(b"\r\n", pos)
        end = body.find(sep, eol + 2) if eol >= 0 else -1
        if end < 0 or body[pos:eol].strip(b" \t"):
            raise InvalidAPIParameters("The multipart body is malformed or truncated.")
        files.append(_parse_part(body[eol + 2 : end]))
        if len(files) > MAX_UPLOAD_FILES:
            raise InvalidAPIParameters(f"At most {MAX_UPLOAD_FILES} files can be uploaded at once.")
        pos = end + len(sep)
    return files


def _parse_part(part: bytes) -> tuple[str, bytes]:
    if part.startswith(b"\r\n"):
        head, content = b"", part[2:]
    else:
        head, found, content = part.partition(b"\r\n\r\n")
        if not found:
            raise InvalidAPIParameters("A multipart part has no end of headers.")
    try:
        lines = head.decode("utf-8").split("\r\n") if head else []
    except UnicodeDecodeError:
        raise InvalidAPIParameters("Multipart headers (file names) must be UTF-8.") from None
    disposition = next(
        (v.strip() for k, _, v in (ln.partition(":") for ln in lines) if k.strip().lower() == "content-disposition"), ""
    )
    filename = _header("content-disposition", disposition).get_filename() if disposition else None
    if filename is None:
        raise InvalidAPIParameters("Every part of an upload must be a file with a filename.")
    return _unquote_filename(filename), content


def _unquote_filename(name: str) -> str:
    """Undo aiohttp's quoting of multipart filenames (``dir%2Fa.txt``), which the upstream SDK sends.

    aiohttp percent-encodes everything but ``A-Za-z0-9_.-~``; a name made of those and ``%XX`` only is read
    as such. Other names (httpx, browsers) are taken as they are.
    """
    if "%" not in name or not _AIOHTTP_QUOTED.fullmatch(name):
        return name
    try:
        return unquote(name, errors="strict")
    except UnicodeDecodeError:
        return name


def _transport_tar(files: list[tuple[str, bytes]]) -> bytes:
    """The files as a tar for the agent (names relative to /home/work; ownership and modes are the agent's)."""
    buf = io.BytesIO()
    with tarfile.open(fileobj=buf, mode="w", format=tarfile.PAX_FORMAT) as tf:
        for name, content in files:
            info = tarfile.TarInfo(name)
            info.size = len(content)
            tf.addfile(info, io.BytesIO(content))
    return buf.getvalue()


def multipart_mixed(parts: list[tuple[str, bytes]]) -> tuple[bytes, str]:
    """A ``multipart/mixed`` body of tar archives and its content type."""
    boundary = secrets.token_hex(16)
    while any(boundary.encode() in data for _, data in parts):
        boundary = secrets.token_hex(16)
    chunks: list[bytes] = []
    for name, data in parts:
        fallback = "".join(c if 0x20 < ord(c) < 0x7F and c not in '"\\' else "_" for c in name)
        chunks.append(
            f"--{boundary}\r\nContent-Type: application/x-tar\r\n"
            f"Content-Disposition: attachment; filename=\"{fallback}\"; filename*=UTF-8''{quote(name)}\r\n\r\n".encode()
        )
        chunks.extend((data, b"\r\n"))
    chunks.append(f"--{boundary}--\r\n".encode())
    return b"".join(chunks), f"multipart/mixed; boundary={boundary}"


def _require_running(session: SessionRow) -> None:
    if session.status != S.RUNNING:
        raise SessionNotRunning(
            f"Session {session.name!r} is {session.status}, not RUNNING; its files are not reachable."
        )


def _upload_too_large() -> InvalidAPIParameters:
    return InvalidAPIParameters(
        f"The upload is too large: at most {MAX_UPLOAD_FILES} files of "
        f"{MAX_UPLOAD_FILE_SIZE} bytes each can be sent at once."
    )


async def _upload_size_guard(request: Request) -> None:
    """Refuse an oversized upload by its Content-Length, before the body is read (this runs before auth)."""
    length = request.headers.get("content-length", "")
    if length.isdigit() and int(length) > UPLOAD_BODY_LIMIT:
        raise _upload_too_large()


@router.post("/session/{ref}/upload")
async def upload(
    ref: str,
    request: Request,
    _: None = Depends(_upload_size_guard),
    ctx: AuthContext = Depends(auth_required),
    reg: SessionRegistry = Depends(registry),
) -> Response:
    """Write the uploaded files under the session's /home/work (204); nothing is written on a 4xx answer."""
    session = await requested_session(reg, ctx, ref, request)
    _require_running(session)
    body = await request.body()
    if len(body) > UPLOAD_BODY_LIMIT:
        raise _upload_too_large()
    parts = parse_form_files(body, request.headers.get("content-type", ""))
    if not parts:
        raise InvalidAPIParameters("No file was uploaded.")
    files: list[tuple[str, bytes]] = []
    for raw, content in parts:
        name = session_relpath(raw, what="file name", for_file=True)
        if len(content) > MAX_UPLOAD_FILE_SIZE:
            raise InvalidAPIParameters(
                f"{raw!r} is {len(content)} bytes; each file may have at most {MAX_UPLOAD_FILE_SIZE} bytes."
            )
        files.append((name, content))
    names = [n for n, _ in files]
    dup = next((n for n in names if names.count(n) > 1), None)
    if dup is not None:
        raise InvalidAPIParameters(f"{dup!r} is uploaded more than once.")
    await reg.kernel_call_raw(session, "PUT", "/files", content=_transport_tar(files), content_type="application/x-tar")
    return Response(status_code=204)


@router.get("/session/{ref}/files")
async def list_files(
    ref: str,
    request: Request,
    ctx: AuthContext = Depends(auth_required),
    reg: SessionRegistry = Depends(registry),
    given_params: ListFilesParams = Depends(body_of(ListFilesParams)),
) -> dict[str, Any]:
    """Entries of a directory of the session (``files`` is a JSON string, as documented)."""
    params = given(given_params)
    raw = params.get("path")
    rel = session_relpath(WORKDIR if raw is None else raw)
    session = await requested_session(reg, ctx, ref, request)
    _require_running(session)
    res = await reg.kernel_call(session, "POST", "/list-files", json={"path": rel})
    return {
        "files": json.dumps(res.get("files", [])),
        "folder_path": res.get("folder_path"),
        "errors": res.get("errors") or "",
        "truncated": bool(res.get("truncated")),
    }


@router.get("/session/{ref}/download")
async def download(
    ref: str, request: Request, ctx: AuthContext = Depends(auth_required), reg: SessionRegistry = Depends(registry)
) -> Response:
    """One tar archive per requested path, as a ``multipart/mixed`` body."""
    raw: Any = request.query_params.getlist("files")
    if not raw:
        raw = (await json_body(request)).get("files")
    if isinstance(raw, str):
        raw = [raw]
    if not isinstance(raw, list) or not raw:
        raise InvalidAPIParameters("'files' must list the paths to download.")
    if len(raw) > MAX_DOWNLOAD_FILES:
        raise InvalidAPIParameters(f"At most {MAX_DOWNLOAD_FILES} files can be downloaded at once; got {len(raw)}.")
    rels = [session_relpath(f, what="file path") for f in raw]
    session = await requested_session(reg, ctx, ref, request)
    _require_running(session)
    parts: list[tuple[str, bytes]] = []
    total = 0
    for rel in rels:
        remaining = MAX_DOWNLOAD_BYTES - total
        if remaining <= 0:
            raise DownloadTooLarge(f"The requested files exceed {MAX_DOWNLOAD_BYTES} bytes in all.")
        answer = await reg.kernel_call_raw(session, "GET", "/archive", params={"path": rel, "max_bytes": remaining})
        total += len(answer.content)
        parts.append(((rel.rsplit("/", 1)[-1] or "work") + ".tar", answer.content))
    content, content_type = multipart_mixed(parts)
    return Response(content, media_type=content_type)
