"""The client-facing API (``[api.client]``, port 6021): streamed downloads and tus 1.0.0 resumable uploads.

Clients authenticate with the JWT the manager obtained for them (``?token=``); a token names one
operation on one path of one folder. Nothing here buffers a whole file: downloads are read in 1 MiB
chunks with back-pressure from the socket, upload bodies are appended to the partial file as they arrive.
"""

from __future__ import annotations

import asyncio
import logging
import os
import re
import urllib.parse
from collections.abc import AsyncIterator
from typing import Any

from fastapi import FastAPI, Request
from fastapi.responses import Response
from starlette.middleware.cors import CORSMiddleware
from starlette.requests import ClientDisconnect
from starlette.types import Receive, Scope, Send

from ai.backend.common.problems import (
    AuthorizationFailed,
    Conflict,
    Forbidden,
    InvalidAPIParameters,
    ProblemError,
)

from .archive import stream_zip
from .context import StorageContext, install_error_handlers
from .tokens import TokenError, decode_token
from .volumes.base import AbstractVolume, DownloadTarget, PayloadTooLarge, normalize_vfid

__all__ = ["create_client_app"]

log = logging.getLogger("ai.backend.storage.client")

TUS_VERSION = "1.0.0"
CHUNK = 1 << 20
# Bytes gathered from the request body before one write to disk.
WRITE_BATCH = 1 << 20
_IOV_MAX = 512  # well under the kernel's limit of buffers per writev
LOCK_WAIT_S = 15.0
_RANGE_RE = re.compile(r"^bytes=(\d*)-(\d*)$")


class PreconditionFailed(ProblemError):
    status, slug, title = 412, "precondition-failed", "Unsupported tus version"


class UnsupportedMediaType(ProblemError):
    status, slug, title = 415, "unsupported-media-type", "Unsupported media type"


class RangeNotSatisfiable(ProblemError):
    status, slug, title = 416, "range-not-satisfiable", "Range not satisfiable"


def _tus_headers(**extra: str) -> dict[str, str]:
    return {"Tus-Resumable": TUS_VERSION, "Cache-Control": "no-store", **extra}


def _claims(request: Request, ctx: StorageContext, op: str) -> tuple[dict[str, Any], AbstractVolume, str]:
    token = request.query_params.get("token")
    if not token:
        raise AuthorizationFailed("a ?token= query parameter is required")
    try:
        claims = decode_token(token, ctx.config.storage_proxy.secret, op=op)
    except TokenError as e:
        cls = Forbidden if e.status == 403 else AuthorizationFailed
        raise cls(str(e)) from None
    if not isinstance(claims.get("relpath"), str):
        raise AuthorizationFailed("malformed token")
    return claims, ctx.volume(claims.get("volume")), normalize_vfid(claims.get("vfid"))


def _content_disposition(filename: str) -> str:
    ascii_name = filename.encode("ascii", "replace").decode().replace('"', "_").replace("\\", "_")
    quoted = urllib.parse.quote(filename.encode("utf-8", "surrogateescape"), safe="")
    return f"attachment; filename=\"{ascii_name}\"; filename*=UTF-8''{quoted}"


def _parse_range(header: str | None, size: int) -> tuple[int, int] | None:
    """The inclusive byte range of a single ``Range: bytes=a-b``; None for a whole-file answer."""
    if not header:
        return None
    m = _RANGE_RE.match(header.strip())
    if m is None:
        return None  # multiple or unknown ranges: answer the whole file, as RFC 9110 allows
    first, last = m.group(1), m.group(2)
    if first == "" and last == "":
        return None
    if first == "":
        n = int(last)
        if n == 0 or size == 0:
            raise RangeNotSatisfiable(f"the file has {size} bytes")
        return max(size - n, 0), size - 1
    start = int(first)
    end = size - 1 if last == "" else min(int(last), size - 1)
    if start >= size or (last != "" and int(last) < start):
        raise RangeNotSatisfiable(f"the file has {size} bytes")
    return start, end


class _RawResponse(Response):
    """A response that writes its own ASGI messages (FastAPI passes Response instances through untouched)."""

    def __init__(self) -> None:  # no body, and no Content-Length computed from an empty one
        self.background = None


class FileStream(_RawResponse):
    """An ASGI response that sends ``length`` bytes of ``fd`` from ``offset`` and always closes ``fd``."""

    def __init__(self, target: DownloadTarget, status: int, headers: dict[str, str], offset: int, length: int):
        super().__init__()
        self.target = target
        self.status = status
        self.fields = headers
        self.offset = offset
        self.length = length

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        loop = asyncio.get_running_loop()
        fd = self.target.fd
        try:
            await send({"type": "http.response.start", "status": self.status,
                        "headers": [(k.lower().encode(), v.encode()) for k, v in self.fields.items()]})
            pos, end = self.offset, self.offset + self.length
            while pos < end:
                data = await loop.run_in_executor(None, os.pread, fd, min(CHUNK, end - pos), pos)
                if not data:
                    break  # the file shrank meanwhile: the client sees a short body
                pos += len(data)
                await send({"type": "http.response.body", "body": data, "more_body": pos < end})
            if pos < end or self.length == 0:
                await send({"type": "http.response.body", "body": b"", "more_body": False})
        except OSError:
            pass  # the client went away
        finally:
            self.target.close()


class ZipStream(_RawResponse):
    """An ASGI response streaming a zip of a directory (see :mod:`.archive`)."""

    def __init__(self, chunks: AsyncIterator[bytes], headers: dict[str, str]) -> None:
        super().__init__()
        self.chunks = chunks
        self.fields = headers

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        try:
            await send({"type": "http.response.start", "status": 200,
                        "headers": [(k.lower().encode(), v.encode()) for k, v in self.fields.items()]})
            async for chunk in self.chunks:
                await send({"type": "http.response.body", "body": chunk, "more_body": True})
            await send({"type": "http.response.body", "body": b"", "more_body": False})
        except OSError:
            pass
        finally:
            await self.chunks.aclose()  # type: ignore[attr-defined]


def create_client_app(ctx: StorageContext) -> FastAPI:
    """The client-facing application (routes: see docs/storage-proxy.md)."""
    app = FastAPI(title="Backend.AI storage proxy (client API)", docs_url=None, redoc_url=None, openapi_url=None)
    app.state.ctx = ctx
    install_error_handlers(app)
    # Browsers upload and download directly; tokens travel in the URL (no cookies), so any origin is fine.
    app.add_middleware(
        CORSMiddleware, allow_origins=["*"], allow_methods=["GET", "HEAD", "POST", "PATCH", "OPTIONS"],
        allow_headers=["*"],
        expose_headers=["Upload-Offset", "Upload-Length", "Location", "Tus-Resumable", "Tus-Version",
                        "Tus-Extension", "Tus-Max-Size", "Content-Range", "Content-Disposition"],
    )
    sp = ctx.config.storage_proxy

    @app.get("/")
    async def status() -> dict[str, Any]:
        return {"status": "ok", "node_id": sp.node_id, "api_version": 1}

    # ------------------------------------------------------------------------------------------ download

    @app.api_route("/download", methods=["GET", "HEAD"])
    async def download(request: Request) -> Any:
        claims, vol, vfid = _claims(request, ctx, "download")
        target = await vol.open_download(vfid, claims["relpath"])
        try:
            if target.is_dir:
                if not claims.get("archive"):
                    raise InvalidAPIParameters("this is a directory: ask for an archive download")
                headers = {"Content-Type": "application/zip",
                           "Content-Disposition": _content_disposition((target.name or "folder") + ".zip"),
                           "Cache-Control": "no-store"}
                if request.method == "HEAD":
                    return Response(status_code=200, headers=headers)
                fd, target.fd = target.fd, -1  # handed over to the archive thread
                return ZipStream(stream_zip(fd), headers)
            size = target.st.st_size
            rng = _parse_range(request.headers.get("range"), size)
            headers = {"Content-Type": "application/octet-stream", "Accept-Ranges": "bytes",
                       "Content-Disposition": _content_disposition(target.name), "Cache-Control": "no-store"}
            if rng is None:
                status, offset, length = 200, 0, size
            else:
                status, offset, length = 206, rng[0], rng[1] - rng[0] + 1
                headers["Content-Range"] = f"bytes {rng[0]}-{rng[1]}/{size}"
            headers["Content-Length"] = str(length)
            if request.method == "HEAD":
                return Response(status_code=status, headers=headers)
            stream, target = FileStream(target, status, headers, offset, length), None  # type: ignore[assignment]
            return stream
        except RangeNotSatisfiable as e:
            e.headers = {"Content-Range": f"bytes */{target.st.st_size}"}  # type: ignore[attr-defined]
            raise
        finally:
            if target is not None:
                target.close()

    # ------------------------------------------------------------------------------------------ tus upload

    @app.options("/upload")
    async def upload_options() -> Response:
        return Response(status_code=204, headers={
            "Tus-Resumable": TUS_VERSION, "Tus-Version": TUS_VERSION, "Tus-Extension": "creation",
            "Tus-Max-Size": str(sp.max_upload_size),
        })

    def upload_claims(request: Request) -> tuple[AbstractVolume, str, str, str, int]:
        claims, vol, vfid = _claims(request, ctx, "upload")
        session, size = claims.get("session"), claims.get("size")
        if not isinstance(session, str) or not isinstance(size, int) or isinstance(size, bool) or size < 0:
            raise AuthorizationFailed("malformed upload token")
        tus = request.headers.get("tus-resumable")
        if tus is not None and tus != TUS_VERSION:
            exc = PreconditionFailed(f"this server speaks tus {TUS_VERSION}")
            exc.headers = {"Tus-Version": TUS_VERSION}  # type: ignore[attr-defined]
            raise exc
        return vol, vfid, claims["relpath"], session, size

    async def locked(session: str) -> asyncio.Lock:
        lock = ctx.upload_lock(session)
        try:
            await asyncio.wait_for(lock.acquire(), LOCK_WAIT_S)
        except TimeoutError:
            raise Conflict("another request of this upload is still in progress") from None
        return lock

    def offset_of(vol: AbstractVolume, session: str) -> int:
        done = ctx.completed.get(session)
        return done if done is not None else vol.upload_size(session)

    @app.head("/upload")
    async def upload_head(request: Request) -> Response:
        vol, _, _, session, size = upload_claims(request)
        lock = await locked(session)
        try:
            offset = offset_of(vol, session)
        finally:
            lock.release()
        return Response(status_code=200, headers=_tus_headers(**{"Upload-Offset": str(offset),
                                                                 "Upload-Length": str(size)}))

    @app.post("/upload")
    async def upload_create(request: Request) -> Response:
        vol, vfid, relpath, session, size = upload_claims(request)
        given = request.headers.get("upload-length")
        if given is not None and given.strip() != str(size):
            raise InvalidAPIParameters(f"Upload-Length must be {size}, the size this upload was granted for")
        lock = await locked(session)
        try:
            if session not in ctx.completed:
                fd, offset = vol.upload_fd(session)
                os.close(fd)
                if size == 0:
                    await vol.finish_upload(vfid, relpath, session, 0)
                    ctx.mark_completed(session, 0)
        finally:
            lock.release()
        return Response(status_code=201, headers=_tus_headers(Location=str(request.url)))

    @app.patch("/upload")
    async def upload_patch(request: Request) -> Response:
        vol, vfid, relpath, session, size = upload_claims(request)
        ctype = request.headers.get("content-type", "").split(";")[0].strip().lower()
        if ctype != "application/offset+octet-stream":
            raise UnsupportedMediaType("PATCH bodies must be Content-Type: application/offset+octet-stream")
        try:
            offset = int(request.headers.get("upload-offset", ""))
            if offset < 0:
                raise ValueError
        except ValueError:
            raise InvalidAPIParameters("an Upload-Offset header (a byte count) is required") from None
        lock = await locked(session)
        try:
            current = offset_of(vol, session)
            if offset != current or session in ctx.completed:
                exc = Conflict(f"Upload-Offset is {offset} but {current} bytes have been received")
                exc.headers = _tus_headers(**{"Upload-Offset": str(current)})  # type: ignore[attr-defined]
                raise exc
            clen = request.headers.get("content-length")
            if clen is not None and clen.isdigit() and offset + int(clen) > size:
                raise PayloadTooLarge(f"this upload is {size} bytes; {offset + int(clen)} would be too many")
            new_offset = await _append(request, vol, session, offset, size)
            if new_offset == size:
                await vol.finish_upload(vfid, relpath, session, size)
                ctx.mark_completed(session, size)
        finally:
            lock.release()
        return Response(status_code=204, headers=_tus_headers(**{"Upload-Offset": str(new_offset)}))

    return app


def _write_all(fd: int, chunks: list[bytes]) -> None:
    """Write ``chunks`` in one ``writev`` (no joining copy); finishes a short write piece by piece."""
    done = os.writev(fd, chunks)
    total = sum(len(c) for c in chunks)
    if done == total:
        return
    rest = memoryview(b"".join(chunks))[done:]
    while rest:
        rest = rest[os.write(fd, rest):]


async def _append(request: Request, vol: AbstractVolume, session: str, offset: int, size: int) -> int:
    """Append the request body to the session's partial file; the new offset.

    On a dropped connection the bytes received so far are kept (the client resumes from ``HEAD``); a body
    that would go past ``size`` is refused whole (the file is cut back to ``offset``).
    """
    loop = asyncio.get_running_loop()
    fd, current = vol.upload_fd(session)
    written = 0
    pending: list[bytes] = []
    pending_len = 0
    try:
        try:
            async for chunk in request.stream():
                if not chunk:
                    continue
                if offset + written + pending_len + len(chunk) > size:
                    os.ftruncate(fd, offset)
                    raise PayloadTooLarge(f"this upload is {size} bytes; the body goes past that")
                pending.append(chunk)
                pending_len += len(chunk)
                if pending_len >= WRITE_BATCH or len(pending) >= _IOV_MAX:
                    batch, pending = pending, []
                    await loop.run_in_executor(None, _write_all, fd, batch)
                    written += pending_len
                    pending_len = 0
        except ClientDisconnect:
            log.info("upload %s: connection dropped at %d bytes", session[:8], offset + written + pending_len)
        if pending:
            await loop.run_in_executor(None, _write_all, fd, pending)
            written += pending_len
    finally:
        os.close(fd)
    return offset + written
