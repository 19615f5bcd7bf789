"""The client-facing API (``[api.client]``, port 6021): streamed downloads and tus 1.0.0 resumable uploads.

Clients authenticate with the JWT the manager obtained for them (``?token=``); a token names one
operation on one path of one folder. This API is the data path, so it is served by aiohttp rather than
the ASGI stack of the manager API: file downloads go out with ``sendfile`` from the descriptor that
:meth:`AbstractVolume.open_download` opened (zero-copy, no Python per chunk), and upload bodies are taken
from aiohttp's reader in whatever pieces arrived and written to the partial file with one ``writev`` per
few MiB. Nothing buffers a whole file.
"""

from __future__ import annotations

import asyncio
import contextlib
import fcntl
import logging
import os
import re
from email.utils import formatdate
from typing import Any
from urllib.parse import quote

from aiohttp import web
from aiohttp.web_exceptions import HTTPException

from ai.backend.common.logs import install_request_ids
from ai.backend.common.metrics import aiohttp_metrics_middleware
from ai.backend.common.problems import (
    AuthorizationFailed,
    Conflict,
    Forbidden,
    InvalidAPIParameters,
    ProblemError,
    problem_document,
)

from .archive import stream_zip
from .context import StorageContext
from .tokens import TokenError, decode_token
from .volumes.base import AbstractVolume, DownloadTarget, PayloadTooLarge, normalize_vfid

__all__ = ["create_client_app", "start_client_server"]

log = logging.getLogger("ai.backend.storage.client")

TUS_VERSION = "1.0.0"
# Bytes gathered from the request body before one write to disk (one writev of the pieces as received).
WRITE_BATCH = 1 << 20
_IOV_MAX = 512  # well under the kernel's limit of buffers per writev
# How much of a request body aiohttp buffers before it stops reading the socket (back-pressure).
READ_BUFSIZE = 1 << 20
# PATCH bodies at least this long (with a Content-Length) are spliced from the socket into the file.
SPLICE_MIN = 1 << 20
PIPE_SIZE = 1 << 20  # the default limit (/proc/sys/fs/pipe-max-size) for an unprivileged process
F_SETPIPE_SZ = 1031  # fcntl.F_SETPIPE_SZ (Python 3.10+ names it, but only where the platform headers do)
_SPLICE_NONBLOCK = 2  # SPLICE_F_NONBLOCK
BODY_IDLE_S = 120.0  # a spliced body that stalls this long counts as a dropped connection
_SPLICED = "storage.spliced"  # request key: the body bypassed the HTTP parser, so the connection must close
LOCK_WAIT_S = 15.0
KEEPALIVE_S = 30.0
_RANGE_RE = re.compile(r"^bytes=(\d*)-(\d*)$")
_CORS_METHODS = ("GET", "HEAD", "POST", "PATCH", "OPTIONS")
_CORS_EXPOSE = ", ".join(
    (
        "Upload-Offset",
        "Upload-Length",
        "Location",
        "Tus-Resumable",
        "Tus-Version",
        "Tus-Extension",
        "Tus-Max-Size",
        "Content-Range",
        "Content-Disposition",
        "ETag",
        "Last-Modified",
        "X-Request-ID",
    )
)
_CTX: web.AppKey[StorageContext] = web.AppKey("ctx", StorageContext)


class PreconditionFailed(ProblemError):
    status, slug, title = 412, "precondition-failed", "Unsupported tus version"


class UnsupportedMediaType(ProblemError):
    status, slug, title = 415, "unsupported-media-type", "Unsupported media type"


class RangeNotSatisfiable(ProblemError):
    status, slug, title = 416, "range-not-satisfiable", "Range not satisfiable"


def _tus_headers(**extra: str) -> dict[str, str]:
    return {"Tus-Resumable": TUS_VERSION, "Cache-Control": "no-store", **extra}


def _problem(doc: dict[str, Any], status: int, headers: dict[str, str] | None = None) -> web.Response:
    return web.json_response(doc, status=status, content_type="application/problem+json", headers=headers)


def _claims(request: web.Request, ctx: StorageContext, op: str) -> tuple[dict[str, Any], AbstractVolume, str]:
    token = request.query.get("token")
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
    quoted = quote(filename.encode("utf-8", "surrogateescape"), safe="")
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


# ---------------------------------------------------------------------------------------------- middleware


@web.middleware
async def _errors(request: web.Request, handler: Any) -> web.StreamResponse:
    """RFC 7807 answers for problems, unknown routes and unexpected errors (logged, 500)."""
    resp = await _handle(request, handler)
    if request.get(_SPLICED) and not resp.prepared:
        resp.force_close()  # aiohttp's parser did not see the body; see _splice_body
    return resp


async def _handle(request: web.Request, handler: Any) -> web.StreamResponse:
    try:
        resp: web.StreamResponse = await handler(request)
        return resp
    except ProblemError as e:
        # A problem may carry response headers in a ``headers`` attribute (the tus routes use it).
        return _problem(e.body(), e.status, getattr(e, "headers", None))
    except HTTPException as e:
        if e.status < 400:
            raise
        slug = e.reason.lower().replace(" ", "-")
        return _problem(
            problem_document(e.status, slug, e.reason),
            e.status,
            {k: v for k, v in e.headers.items() if k.lower() == "allow"},
        )
    except (asyncio.CancelledError, ConnectionError):
        raise
    except Exception as e:
        log.exception("unhandled error on %s %s", request.method, request.path)
        return _problem(problem_document(500, "internal-error", "Storage proxy error", type(e).__name__), 500)


@web.middleware
async def _cors_preflight(request: web.Request, handler: Any) -> web.StreamResponse:
    """Answer CORS preflights: browsers upload and download directly, and tokens are not cookies."""
    wanted = request.headers.get("Access-Control-Request-Method")
    if request.method != "OPTIONS" or "Origin" not in request.headers or wanted is None:
        resp: web.StreamResponse = await handler(request)
        return resp
    headers = {
        "Access-Control-Allow-Origin": "*",
        "Access-Control-Allow-Methods": ", ".join(_CORS_METHODS),
        "Access-Control-Max-Age": "600",
        "Vary": "Origin",
    }
    if asked := request.headers.get("Access-Control-Request-Headers"):
        headers["Access-Control-Allow-Headers"] = asked
    if wanted.upper() not in _CORS_METHODS:
        return web.Response(status=400, text="Disallowed CORS method", headers=headers)
    return web.Response(status=200, text="OK", headers=headers)


async def _cors_headers(request: web.Request, response: web.StreamResponse) -> None:
    # on_response_prepare: also reaches streamed responses, whose headers go out before the handler ends.
    if "Origin" in request.headers:
        response.headers["Access-Control-Allow-Origin"] = "*"
        response.headers["Access-Control-Expose-Headers"] = _CORS_EXPOSE


# ---------------------------------------------------------------------------------------------- download


async def _send_file(
    request: web.Request, target: DownloadTarget, status: int, headers: dict[str, str], offset: int, length: int
) -> web.StreamResponse:
    """Send ``length`` bytes of the open file from ``offset`` with ``sendfile`` (the caller closes it)."""
    resp = web.StreamResponse(status=status, headers=headers)
    await resp.prepare(request)  # a StreamResponse sends its headers now, before the file's bytes
    transport = request.transport
    if length and transport is not None and not transport.is_closing():
        # The descriptor opened by open_download (never the path); closefd=False: target.close() owns it.
        with open(target.fd, "rb", buffering=0, closefd=False) as f:
            try:
                await asyncio.get_running_loop().sendfile(transport, f, offset, length)
            except ConnectionError:
                return resp  # the client went away
            request.app[_CTX].metrics.bytes_down.inc(length)
    await resp.write_eof()
    return resp


async def _send_zip(request: web.Request, fd: int, headers: dict[str, str]) -> web.StreamResponse:
    chunks = stream_zip(fd)
    try:
        resp = web.StreamResponse(status=200, headers=headers)
        resp.enable_chunked_encoding()
        await resp.prepare(request)
        sent = request.app[_CTX].metrics.bytes_down
        async for chunk in chunks:
            await resp.write(chunk)
            sent.inc(len(chunk))
        await resp.write_eof()
        return resp
    except ConnectionError:
        return resp
    finally:
        await chunks.aclose()  # type: ignore[attr-defined]


async def download(request: web.Request) -> web.StreamResponse:
    """``GET``/``HEAD /download?token=``: a file (``Range``, ``If-Range``) or a zip stream of a directory."""
    ctx = request.app[_CTX]
    claims, vol, vfid = _claims(request, ctx, "download")
    target = await vol.open_download(vfid, claims["relpath"])
    try:
        if target.is_dir:
            if not claims.get("archive"):
                raise InvalidAPIParameters("this is a directory: ask for an archive download")
            headers = {
                "Content-Type": "application/zip",
                "Content-Disposition": _content_disposition((target.name or "folder") + ".zip"),
                "Cache-Control": "no-store",
            }
            if request.method == "HEAD":
                return web.Response(status=200, headers=headers)
            fd, target.fd = target.fd, -1  # handed over to the archive thread
            return await _send_zip(request, fd, headers)
        size = target.st.st_size
        etag = f'"{target.st.st_ino:x}-{target.st.st_mtime_ns:x}-{size:x}"'
        last_modified = formatdate(target.st.st_mtime, usegmt=True)
        if_range = request.headers.get("If-Range")
        # A resumed download of a file that changed meanwhile gets the whole new file (RFC 9110 §13.1.5).
        use_range = if_range is None or if_range in (etag, last_modified)
        try:
            rng = _parse_range(request.headers.get("Range"), size) if use_range else None
        except RangeNotSatisfiable as e:
            e.headers = {"Content-Range": f"bytes */{size}"}  # type: ignore[attr-defined]
            raise
        headers = {
            "Content-Type": "application/octet-stream",
            "Accept-Ranges": "bytes",
            "Content-Disposition": _content_disposition(target.name),
            "Cache-Control": "no-store",
            "ETag": etag,
            "Last-Modified": last_modified,
        }
        if rng is None:
            status, offset, length = 200, 0, size
        else:
            status, offset, length = 206, rng[0], rng[1] - rng[0] + 1
            headers["Content-Range"] = f"bytes {rng[0]}-{rng[1]}/{size}"
        headers["Content-Length"] = str(length)
        if request.method == "HEAD":
            return web.Response(status=status, headers=headers)
        return await _send_file(request, target, status, headers, offset, length)
    finally:
        target.close()


# ---------------------------------------------------------------------------------------------- tus upload


def _upload_claims(request: web.Request, ctx: StorageContext) -> tuple[AbstractVolume, str, str, str, int]:
    claims, vol, vfid = _claims(request, ctx, "upload")
    session, size = claims.get("session"), claims.get("size")
    if not isinstance(session, str) or not isinstance(size, int) or isinstance(size, bool) or size < 0:
        raise AuthorizationFailed("malformed upload token")
    tus = request.headers.get("Tus-Resumable")
    if tus is not None and tus != TUS_VERSION:
        exc = PreconditionFailed(f"this server speaks tus {TUS_VERSION}")
        exc.headers = {"Tus-Version": TUS_VERSION}  # type: ignore[attr-defined]
        raise exc
    return vol, vfid, claims["relpath"], session, size


async def _locked(ctx: StorageContext, session: str) -> asyncio.Lock:
    lock = ctx.upload_lock(session)
    try:
        await asyncio.wait_for(lock.acquire(), LOCK_WAIT_S)
    except TimeoutError:
        raise Conflict("another request of this upload is still in progress") from None
    return lock


def _offset_of(ctx: StorageContext, vol: AbstractVolume, session: str) -> int:
    done = ctx.completed.get(session)
    return done if done is not None else vol.upload_size(session)


async def upload_options(request: web.Request) -> web.Response:
    return web.Response(
        status=204,
        headers={
            "Tus-Resumable": TUS_VERSION,
            "Tus-Version": TUS_VERSION,
            "Tus-Extension": "creation",
            "Tus-Max-Size": str(request.app[_CTX].config.storage_proxy.max_upload_size),
        },
    )


async def upload_head(request: web.Request) -> web.Response:
    ctx = request.app[_CTX]
    vol, vfid, relpath, session, size = _upload_claims(request, ctx)
    lock = await _locked(ctx, session)
    try:
        offset = _offset_of(ctx, vol, session)
        if offset == size and size > 0 and session not in ctx.completed:
            # Every byte is here but the upload was never moved into place: a proxy process stopped (kill -9,
            # a crash) between its last write and the move. A resuming client hears "complete" and sends
            # nothing more, so the move happens now (under the lock, as the last PATCH would have done it).
            log.info(
                "upload %s: complete but not in place (the proxy stopped before moving it); moving it now", session[:8]
            )
            await vol.finish_upload(vfid, relpath, session, size)
            ctx.mark_completed(session, size)
    finally:
        lock.release()
    return web.Response(status=200, headers=_tus_headers(**{"Upload-Offset": str(offset), "Upload-Length": str(size)}))


async def upload_create(request: web.Request) -> web.Response:
    ctx = request.app[_CTX]
    vol, vfid, relpath, session, size = _upload_claims(request, ctx)
    given = request.headers.get("Upload-Length")
    if given is not None and given.strip() != str(size):
        raise InvalidAPIParameters(f"Upload-Length must be {size}, the size this upload was granted for")
    lock = await _locked(ctx, session)
    try:
        if session not in ctx.completed:
            fd, _ = vol.upload_fd(session)
            os.close(fd)
            if size == 0:
                await vol.finish_upload(vfid, relpath, session, 0)
                ctx.mark_completed(session, 0)
    finally:
        lock.release()
    return web.Response(status=201, headers=_tus_headers(Location=str(request.url)))


async def upload_patch(request: web.Request) -> web.Response:
    ctx = request.app[_CTX]
    vol, vfid, relpath, session, size = _upload_claims(request, ctx)
    ctype = request.headers.get("Content-Type", "").split(";")[0].strip().lower()
    if ctype != "application/offset+octet-stream":
        raise UnsupportedMediaType("PATCH bodies must be Content-Type: application/offset+octet-stream")
    try:
        offset = int(request.headers.get("Upload-Offset", ""))
        if offset < 0:
            raise ValueError
    except ValueError:
        raise InvalidAPIParameters("an Upload-Offset header (a byte count) is required") from None
    lock = await _locked(ctx, session)
    try:
        current = _offset_of(ctx, vol, session)
        if offset != current or session in ctx.completed:
            exc = Conflict(f"Upload-Offset is {offset} but {current} bytes have been received")
            exc.headers = _tus_headers(**{"Upload-Offset": str(current)})  # type: ignore[attr-defined]
            raise exc
        clen = request.content_length
        if clen is not None and offset + clen > size:
            raise PayloadTooLarge(f"this upload is {size} bytes; {offset + clen} would be too many")
        new_offset = await _append(request, vol, session, offset, size)
        ctx.metrics.bytes_up.inc(new_offset - offset)
        if new_offset == size:
            await vol.finish_upload(vfid, relpath, session, size)
            ctx.mark_completed(session, size)
    finally:
        lock.release()
    return web.Response(status=204, headers=_tus_headers(**{"Upload-Offset": str(new_offset)}))


def _write_all(fd: int, chunks: list[bytes]) -> None:
    """Write ``chunks`` in one ``writev`` (no joining copy); finishes a short write piece by piece."""
    done = os.writev(fd, chunks)
    total = sum(len(c) for c in chunks)
    if done == total:
        return
    rest = memoryview(b"".join(chunks))[done:]
    while rest:
        rest = rest[os.write(fd, rest) :]


async def _append(request: web.Request, vol: AbstractVolume, session: str, offset: int, size: int) -> int:
    """Append the request body to the session's partial file; the new offset.

    On a dropped connection the bytes received so far are kept (the client resumes from ``HEAD``); a body
    that would go past ``size`` is refused whole (the file is cut back to ``offset``).
    """
    fd, _ = vol.upload_fd(session)
    try:
        if _can_splice(request):
            return offset + await _splice_body(request, fd, offset, session)
        return offset + await _read_body(request, fd, offset, size, session)
    finally:
        os.close(fd)


async def _read_body(request: web.Request, fd: int, offset: int, size: int, session: str) -> int:
    """The general path (any body, also chunked): aiohttp's pieces gathered and written with ``writev``."""
    body = request.content
    written = 0
    pending: list[bytes] = []
    pending_len = 0
    try:
        while True:
            chunk = await body.readany()
            if not chunk:
                break
            if offset + written + pending_len + len(chunk) > size:
                os.ftruncate(fd, offset)
                raise PayloadTooLarge(f"this upload is {size} bytes; the body goes past that")
            pending.append(chunk)
            pending_len += len(chunk)
            if pending_len >= WRITE_BATCH or len(pending) >= _IOV_MAX:
                # Written on the loop: a page-cache write of a few MiB takes well under a millisecond, while
                # a hop to a thread and back costs more (GIL hand-over waits) than it saves.
                _write_all(fd, pending)
                written += pending_len
                pending, pending_len = [], 0
    except (ConnectionError, asyncio.IncompleteReadError) as e:
        _dropped(session, offset + written + pending_len, e)
    except Exception as e:  # aiohttp's payload errors (body cut short) have no common public base
        if type(e).__module__.split(".")[0] != "aiohttp":
            raise
        _dropped(session, offset + written + pending_len, e)
    if pending:
        _write_all(fd, pending)
        written += pending_len
    return written


def _dropped(session: str, at: int, e: BaseException) -> None:
    log.info("upload %s: connection dropped at %d bytes (%s)", session[:8], at, type(e).__name__)


def _can_splice(request: web.Request) -> bool:
    """Whether the body can be moved socket → pipe → file by the kernel (a plain TCP socket, a known length)."""
    length = request.content_length
    if not hasattr(os, "splice") or length is None or length < SPLICE_MIN:
        return False
    if "chunked" in request.headers.get("Transfer-Encoding", "").lower():
        return False
    transport = request.transport
    return (
        transport is not None
        and not transport.is_closing()
        and transport.get_extra_info("sslcontext") is None
        and transport.get_extra_info("socket") is not None
    )


async def _splice_body(request: web.Request, fd: int, offset: int, session: str) -> int:
    """Move the ``Content-Length`` body from the socket into ``fd`` at ``offset`` without copying it through Python.

    What aiohttp already read is written first; then the transport stops reading, and the rest of the body
    goes socket → pipe → file with ``splice`` (one copy, in the kernel). aiohttp's parser never sees those
    bytes, so the connection is closed after the answer (``Connection: close``); the body is marked read.
    Returns the bytes written (fewer than the length when the client went away).
    """
    loop = asyncio.get_running_loop()
    transport = request.transport
    assert transport is not None and request.content_length is not None
    body = request.content
    # The descriptor is this request's own: positioned writes, and splice() refuses O_APPEND files.
    fcntl.fcntl(fd, fcntl.F_SETFL, fcntl.fcntl(fd, fcntl.F_GETFL) & ~os.O_APPEND)
    left = request.content_length
    pos = offset
    try:
        buffered = body.read_nowait(left)
    except RuntimeError:
        buffered = b""
    # Synchronously after the read, so no data_received can come in between; the EOF first, since marking it
    # resumes reading. From here on, nothing in aiohttp reads this connection again.
    body.feed_eof()
    transport.pause_reading()
    request[_SPLICED] = True
    while buffered:
        n = os.pwrite(fd, buffered, pos)
        pos += n
        left -= n
        buffered = buffered[n:]
    sock_fd = os.dup(transport.get_extra_info("socket").fileno())  # the loop refuses readers on the transport's fd
    rpipe, wpipe = os.pipe2(os.O_CLOEXEC)
    try:
        with contextlib.suppress(OSError):
            fcntl.fcntl(wpipe, F_SETPIPE_SZ, PIPE_SIZE)
        while left > 0:
            try:
                n = os.splice(sock_fd, wpipe, min(left, PIPE_SIZE), flags=_SPLICE_NONBLOCK)
            except BlockingIOError:
                if not await _readable(loop, sock_fd):
                    log.info("upload %s: no data for %d s", session[:8], int(BODY_IDLE_S))
                    break
                continue
            except ConnectionError as e:
                _dropped(session, pos, e)
                break
            if n == 0:
                _dropped(session, pos, ConnectionResetError("end of stream"))
                break
            left -= n
            while n:
                m = os.splice(rpipe, fd, n, offset_dst=pos)
                pos += m
                n -= m
    finally:
        os.close(sock_fd)
        os.close(rpipe)
        os.close(wpipe)
    return pos - offset


async def _readable(loop: asyncio.AbstractEventLoop, fd: int) -> bool:
    """Wait until ``fd`` is readable (or has hung up); False after BODY_IDLE_S of silence."""
    fut: asyncio.Future[None] = loop.create_future()

    def ready() -> None:
        if not fut.done():  # the callback can fire again before the reader is removed
            fut.set_result(None)

    loop.add_reader(fd, ready)
    try:
        await asyncio.wait_for(fut, BODY_IDLE_S)
        return True
    except TimeoutError:
        return False
    finally:
        loop.remove_reader(fd)


# ---------------------------------------------------------------------------------------------- app


async def status(request: web.Request) -> web.Response:
    sp = request.app[_CTX].config.storage_proxy
    return web.json_response({"status": "ok", "node_id": sp.node_id, "api_version": 1})


def create_client_app(ctx: StorageContext) -> web.Application:
    """The client-facing application (routes: see docs/storage-proxy.md)."""
    app = web.Application(middlewares=[aiohttp_metrics_middleware(ctx.metrics, None), _cors_preflight, _errors])
    app[_CTX] = ctx
    app.on_response_prepare.append(_cors_headers)
    install_request_ids(app)
    app.router.add_get("/", status)  # add_get also answers HEAD
    app.router.add_get("/download", download)
    app.router.add_route("OPTIONS", "/upload", upload_options)
    app.router.add_route("HEAD", "/upload", upload_head)
    app.router.add_post("/upload", upload_create)
    app.router.add_patch("/upload", upload_patch)
    return app


async def start_client_server(ctx: StorageContext, sock: Any) -> web.AppRunner:
    """Serve the client API on the bound listening socket ``sock`` in the running loop; cleanup() stops it."""
    runner = web.AppRunner(
        create_client_app(ctx),
        access_log=None,
        keepalive_timeout=KEEPALIVE_S,
        read_bufsize=READ_BUFSIZE,
        handle_signals=False,
    )
    await runner.setup()
    site = web.SockSite(runner, sock)
    await site.start()
    return runner
