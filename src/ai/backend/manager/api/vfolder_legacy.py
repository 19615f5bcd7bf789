"""The v4 (19.09 client) file routes of virtual folders, which predate the storage proxy's direct transfers.

``POST /folders/:name/upload`` (``multipart/form-data``, one part per file, the part's filename the path in the
folder), ``GET /folders/:name/download`` (``files``; answers ``multipart/mixed`` with one part per file, named
by its base name, and ``X-TOTAL-PAYLOADS-LENGTH``), and the underscore spellings ``rename_file`` and
``delete_files``. The manager moves the bytes itself, through the folder's storage proxy (a token from its
manager API, then its client API), with the same path checks and permissions as the current routes: reads
need ``ro``, writes ``rw``. Bodies are bounded: at most :data:`MAX_FILES` files, an upload body of at most
:data:`UPLOAD_BODY_LIMIT` bytes and a download of at most :data:`DOWNLOAD_LIMIT` bytes (413 beyond).
"""

from __future__ import annotations

import posixpath
import secrets
from collections.abc import AsyncIterator
from urllib.parse import quote

from fastapi import APIRouter, Depends, Request
from fastapi.responses import JSONResponse, StreamingResponse

from ai.backend.common.problems import InvalidAPIParameters, ProblemError

from ..auth import AuthContext
from ..storage_client import FolderQuotaExceeded
from ..vfolders import check_relpath, parse_str_list
from . import vfolders
from .bodies import DocumentedRoute, Field, LaterStrs, RawParams, body_of, given
from .deps import auth_required
from .session_files import MAX_UPLOAD_FILES, parse_form_files

router = APIRouter(prefix="/folders", route_class=DocumentedRoute)


class DownloadParams(RawParams):
    files: LaterStrs = Field(None, description="Paths of files in the folder.")


MAX_FILES = MAX_UPLOAD_FILES  # files per upload or download call
UPLOAD_BODY_LIMIT = 32 * 1024 * 1024
DOWNLOAD_LIMIT = 1024 * 1024 * 1024


class PayloadTooLarge(ProblemError):
    status, slug, title = 413, "payload-too-large", "The transfer is too large"


async def _upload_size_guard(request: Request) -> None:
    """Refuse an oversized upload by its Content-Length, before the body is read."""
    length = request.headers.get("content-length", "")
    if length.isdigit() and int(length) > UPLOAD_BODY_LIMIT:
        raise _too_large_upload()


def _too_large_upload() -> PayloadTooLarge:
    return PayloadTooLarge(
        f"A v4 upload body may have at most {UPLOAD_BODY_LIMIT} bytes; send bigger files "
        "through request-upload (the storage proxy's tus API)."
    )


async def _read_capped(request: Request, limit: int) -> bytes:
    chunks: list[bytes] = []
    size = 0
    async for chunk in request.stream():
        size += len(chunk)
        if size > limit:
            raise _too_large_upload()
        chunks.append(chunk)
    return b"".join(chunks)


@router.post("/{name}/upload", status_code=201)
async def upload(
    name: str, request: Request, _: None = Depends(_upload_size_guard), ctx: AuthContext = Depends(auth_required)
) -> JSONResponse:
    """Write each file part to its path in the folder (201); a refused call writes nothing."""
    body = await _read_capped(request, UPLOAD_BODY_LIMIT)
    parts = parse_form_files(body, request.headers.get("content-type", ""))
    if not parts:
        raise InvalidAPIParameters("No file was uploaded.")
    files = [(check_relpath(raw, "filename", allow_root=False), content) for raw, content in parts]
    names = [n for n, _ in files]
    dup = next((n for n in names if names.count(n) > 1), None)
    if dup is not None:
        raise InvalidAPIParameters(f"{dup!r} is uploaded more than once.")
    a = await vfolders._for_files(request, ctx, name, "rw", "uploading")
    storage = vfolders._storage(request)
    total = sum(len(c) for _, c in files)
    if a.vf.quota is not None:
        used = int((await storage.usage(a.vf.host, a.vf.id)).get("used_bytes") or 0)
        if used + total > a.vf.quota:
            raise FolderQuotaExceeded(
                f"{total} bytes do not fit in the folder's quota ({a.vf.quota} bytes, {used} used)."
            )
    for path, content in files:
        await storage.put_file(a.vf.host, a.vf.id, path, content)
    return JSONResponse({"files": names}, status_code=201)


def _part_head(boundary: str, filename: str, size: int) -> bytes:
    fallback = "".join(c if 0x20 < ord(c) < 0x7F and c not in '"\\' else "_" for c in filename)
    return (
        f"--{boundary}\r\nContent-Type: application/octet-stream\r\nContent-Length: {size}\r\n"
        f"Content-Disposition: attachment; filename=\"{fallback}\"; filename*=UTF-8''{quote(filename)}\r\n\r\n"
    ).encode()


@router.get("/{name}/download")
async def download(
    name: str,
    request: Request,
    ctx: AuthContext = Depends(auth_required),
    params: DownloadParams = Depends(body_of(DownloadParams)),
) -> StreamingResponse:
    """The ``files`` as ``multipart/mixed``, one part per file named by its base name (directories are 400)."""
    body = given(params)
    raw = body.get("files")
    paths = [raw] if isinstance(raw, str) else parse_str_list(body, "files")
    files = [check_relpath(p, "files", allow_root=False) for p in paths]
    if not files:
        raise InvalidAPIParameters("'files' (a list of paths) is required.")
    if len(files) > MAX_FILES:
        raise InvalidAPIParameters(f"At most {MAX_FILES} files can be downloaded at once; got {len(files)}.")
    a = await vfolders._for_files(request, ctx, name, "ro", "downloading")
    storage = vfolders._storage(request)
    host = a.vf.host
    items: list[tuple[str, str, int]] = []  # (base name, token, size)
    for path in files:
        token = await storage.download_token(host, a.vf.id, path, archive=False)
        items.append((posixpath.basename(path), token, await storage.file_size(host, token)))
    total = sum(size for _, _, size in items)
    if total > DOWNLOAD_LIMIT:
        raise PayloadTooLarge(
            f"The files have {total} bytes; a v4 download may have at most {DOWNLOAD_LIMIT} "
            "bytes (use request-download for bigger files)."
        )
    boundary = secrets.token_hex(16)

    async def stream() -> AsyncIterator[bytes]:
        for filename, token, size in items:
            yield _part_head(boundary, filename, size)
            async for chunk in storage.stream_file(host, token):
                yield chunk
            yield b"\r\n"
        yield f"--{boundary}--\r\n".encode()

    return StreamingResponse(
        stream(), media_type=f"multipart/mixed; boundary={boundary}", headers={"X-TOTAL-PAYLOADS-LENGTH": str(total)}
    )


@router.post("/{name}/rename_file")
async def rename_file(
    name: str,
    request: Request,
    ctx: AuthContext = Depends(auth_required),
    params: vfolders.RenameFileBody = Depends(body_of(vfolders.RenameFileBody)),
) -> JSONResponse:
    """The v4 spelling of ``rename-file``."""
    return await vfolders.rename_file(name, request, ctx, params)


@router.delete("/{name}/delete_files")
@router.post("/{name}/delete_files")
async def delete_files(
    name: str,
    request: Request,
    ctx: AuthContext = Depends(auth_required),
    params: vfolders.DeleteFilesBody = Depends(body_of(vfolders.DeleteFilesBody)),
) -> JSONResponse:
    """The v4 spelling of ``delete-files``."""
    return await vfolders.delete_files(name, request, ctx, params)
