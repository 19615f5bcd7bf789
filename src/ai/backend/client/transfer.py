"""File transfers with the storage proxy: progress lines, resumable tus uploads and resumable downloads.

Uploads speak tus 1.0.0 (core protocol): ``HEAD`` tells how many bytes the server holds, ``PATCH``
sends the next chunk from that offset.  Chunks are streamed from disk in small pieces, so no
transfer ever holds a whole file (or a whole chunk) in memory.  An upload that breaks continues
from the server's offset, within the same call (a few retries) and across calls: the token and
URL of an unfinished upload are kept in a small state file (see :class:`UploadStateStore`).

Downloads are written to a hidden partial file next to the destination and renamed when complete;
a partial file left by a broken download is resumed with ``Range``.  Directory downloads arrive as
zip archives, which are extracted without ever writing outside the destination directory.
"""

from __future__ import annotations

import asyncio
import base64
import contextlib
import hashlib
import io
import json
import os
import stat
import sys
import time
import zipfile
from collections.abc import AsyncIterator, Callable, Mapping
from dataclasses import dataclass
from pathlib import Path, PurePosixPath
from typing import Any
from urllib.parse import urlsplit, urlunsplit

import httpx

from .exceptions import BackendClientError

__all__ = (
    "DEFAULT_CHUNK_SIZE",
    "DownloadResult",
    "ProgressLine",
    "ProgressReader",
    "TusSessionGone",
    "UploadResult",
    "UploadStateStore",
    "apply_address_map",
    "download_file",
    "extract_zip",
    "human_bytes",
    "safe_join",
    "tus_head",
    "tus_upload",
)

DEFAULT_CHUNK_SIZE = 16 * 1024 * 1024
"""The size of one tus ``PATCH`` (16 MiB, as the 22.03 SDK's ``DEFAULT_CHUNK_SIZE``)."""
_PIECE = 256 * 1024  # what is read from disk (and sent) at a time
TUS_VERSION = "1.0.0"
_MAX_RETRIES = 3
_MAX_RESYNCS = 5
_GONE_STATUSES = frozenset({401, 403, 404, 410})


def human_bytes(n: float) -> str:
    """``1536`` → ``"1.5 KiB"``."""
    for unit in ("B", "KiB", "MiB", "GiB"):
        if n < 1024 or unit == "GiB":
            return f"{n:.0f} {unit}" if unit == "B" else f"{n:.1f} {unit}"
        n /= 1024
    return f"{n:.1f} GiB"


class ProgressLine:
    """A one-line byte counter on stderr, drawn only when stderr is a terminal.

    ``done`` counts the bytes whatever the terminal; :meth:`note` prints a status line whenever
    progress was requested (``enabled``), so logs of non-interactive runs still say what happened.
    """

    def __init__(self, label: str, total: int | None, enabled: bool) -> None:
        self.label = label
        self.total = total
        self.done = 0
        self.requested = enabled
        self.enabled = enabled and _isatty()
        self._last_pct = -1

    def update(self, n: int) -> None:
        """Count *n* more bytes."""
        self.set(self.done + n)

    def set(self, done: int) -> None:
        """Set the byte count (e.g. back to the server's offset after a failed chunk)."""
        self.done = done
        if not self.enabled:
            return
        pct = int(self.done * 100 / self.total) if self.total else 0
        if pct == self._last_pct and self.total:
            return
        self._last_pct = pct
        total = f" / {human_bytes(self.total)} ({pct}%)" if self.total else ""
        sys.stderr.write(f"\r\x1b[2K{self.label}: {human_bytes(self.done)}{total}")
        sys.stderr.flush()

    def note(self, message: str) -> None:
        """Print a status line (``∙ message``) on stderr if progress was requested."""
        if not self.requested:
            return
        if self.enabled:
            sys.stderr.write("\r\x1b[2K")
        sys.stderr.write(f"∙ {message}\n")
        sys.stderr.flush()
        self._last_pct = -1

    def close(self) -> None:
        """Erase the line."""
        if self.enabled:
            sys.stderr.write("\r\x1b[2K")
            sys.stderr.flush()


def _isatty() -> bool:
    try:
        return sys.stderr.isatty()
    except ValueError:
        return False


class ProgressReader(io.RawIOBase):
    """Wraps a binary file and reports the bytes read to a :class:`ProgressLine`."""

    def __init__(self, path: Path, progress: ProgressLine) -> None:
        super().__init__()
        self._file = open(path, "rb")  # noqa: SIM115 - closed by close()
        self._progress = progress
        self.name = str(path)

    def readable(self) -> bool:
        return True

    def seekable(self) -> bool:
        return True

    def fileno(self) -> int:
        return self._file.fileno()

    def seek(self, offset: int, whence: int = os.SEEK_SET) -> int:
        return self._file.seek(offset, whence)

    def tell(self) -> int:
        return self._file.tell()

    def read(self, size: int | None = -1) -> bytes:
        data = self._file.read(-1 if size is None else size)
        self._progress.update(len(data))
        return data

    def readinto(self, buffer: Any) -> int:
        data = self.read(len(buffer))
        buffer[: len(data)] = data
        return len(data)

    def close(self) -> None:
        self._file.close()
        super().close()


# ---- storage proxy addresses ----


def apply_address_map(url: str, address_map: Mapping[str, str] | None) -> str:
    """Rewrite a storage-proxy URL the manager handed out (``BACKEND_OVERRIDE_STORAGE_PROXY``).

    A key matches either the whole URL (without its query) or its ``scheme://host[:port]``
    origin; the value replaces that part.  Unmatched URLs are returned unchanged.
    """
    if not address_map:
        return url
    parts = urlsplit(url)
    bare = urlunsplit((parts.scheme, parts.netloc, parts.path, "", ""))
    if bare in address_map:
        new = address_map[bare]
        return f"{new}?{parts.query}" if parts.query else new
    origin = f"{parts.scheme}://{parts.netloc}"
    for key in (origin, parts.netloc):
        if key in address_map:
            target = address_map[key].rstrip("/")
            if "://" not in target:
                target = f"{parts.scheme}://{target}"
            return target + urlunsplit(("", "", parts.path, parts.query, ""))
    return url


def with_token(url: str, token: str) -> str:
    """The URL with ``token=`` added to its query string."""
    from urllib.parse import quote

    sep = "&" if "?" in url else "?"
    return f"{url}{sep}token={quote(token, safe='')}"


def _problem_text(resp: httpx.Response) -> str:
    """A one-line description of an error answer (RFC 7807 title/detail when there is one)."""
    detail = ""
    try:
        body = json.loads(resp.content)
        if isinstance(body, dict):
            title = body.get("title") or ""
            more = body.get("detail") or body.get("msg") or ""
            detail = f"{title}: {more}" if title and more and more != title else str(title or more)
    except (ValueError, httpx.ResponseNotRead):
        with contextlib.suppress(httpx.ResponseNotRead):
            detail = resp.text.strip()[:200]
    detail = " ".join(detail.split())
    return f"{resp.status_code} {resp.reason_phrase}" + (f" ({detail})" if detail else "")


def _describe(exc: BaseException) -> str:
    return str(exc).strip() or type(exc).__name__


# ---- uploads (tus) ----


class TusSessionGone(BackendClientError):
    """The upload session behind a token no longer exists (expired, finished or refused)."""


@dataclass
class UploadResult:
    """What one :func:`tus_upload` did."""

    size: int
    resumed_from: int
    """The server's offset when this call started (0 for a fresh upload)."""
    sent: int
    """Bytes this call sent that the server kept."""


def _tus_headers(extra: Mapping[str, str] | None = None) -> dict[str, str]:
    headers = {"Tus-Resumable": TUS_VERSION}
    if extra:
        headers.update(extra)
    return headers


def _int_header(resp: httpx.Response, name: str) -> int | None:
    value = resp.headers.get(name)
    if value is None:
        return None
    try:
        n = int(value)
    except ValueError:
        return None
    return n if n >= 0 else None


async def tus_head(client: httpx.AsyncClient, url: str) -> tuple[int, int | None]:
    """``(Upload-Offset, Upload-Length)`` of a tus upload; :class:`TusSessionGone` if it is gone."""
    try:
        resp = await client.head(url, headers=_tus_headers())
    except httpx.HTTPError as e:
        raise BackendClientError(f"Cannot reach the storage proxy: {_describe(e)}") from e
    if resp.status_code in _GONE_STATUSES:
        raise TusSessionGone(f"The upload session is gone: {resp.status_code} {resp.reason_phrase}")
    if not 200 <= resp.status_code < 300:
        raise BackendClientError(f"The storage proxy refused the upload status query: {_problem_text(resp)}")
    offset = _int_header(resp, "Upload-Offset")
    if offset is None:
        raise BackendClientError("The storage proxy did not say how much of the upload it has (no Upload-Offset)")
    return offset, _int_header(resp, "Upload-Length")


async def _file_pieces(path: Path, offset: int, length: int, progress: ProgressLine | None) -> AsyncIterator[bytes]:
    """Yield *length* bytes of *path* from *offset*, a piece at a time (reading off the event loop)."""
    loop = asyncio.get_running_loop()
    with open(path, "rb") as f:
        f.seek(offset)
        left = length
        while left > 0:
            piece = await loop.run_in_executor(None, f.read, min(_PIECE, left))
            if not piece:
                raise BackendClientError(f"{path} got shorter while it was being uploaded")
            left -= len(piece)
            if progress is not None:
                progress.update(len(piece))
            yield piece


async def tus_upload(
    client: httpx.AsyncClient,
    url: str,
    path: Path,
    *,
    size: int,
    chunk_size: int = DEFAULT_CHUNK_SIZE,
    progress: ProgressLine | None = None,
    on_chunk: Callable[[int], None] | None = None,
    max_retries: int = _MAX_RETRIES,
) -> UploadResult:
    """Upload *path* (*size* bytes) to the tus endpoint *url* (which carries the token).

    Starts at the server's offset (so a broken upload resumes), sends ``PATCH`` chunks of
    *chunk_size* bytes, resynchronizes with ``HEAD`` on an offset mismatch (409) or a broken
    connection (at most *max_retries* times in a row), and calls ``on_chunk(new_offset)`` after
    each chunk the server acknowledged.  Raises :class:`TusSessionGone` when the server no longer
    knows the upload, :class:`BackendClientError` for other failures.
    """
    if chunk_size <= 0:
        raise ValueError("chunk_size must be positive")
    offset, length = await tus_head(client, url)
    if length is not None and length != size:
        raise TusSessionGone(f"The upload session expects {length} bytes, but the file has {size}")
    if offset > size:
        raise TusSessionGone(f"The server holds {offset} bytes of a {size}-byte file")
    resumed_from = offset
    if progress is not None:
        progress.set(progress.done + offset)
    base_done = (progress.done - offset) if progress is not None else 0
    failures = 0
    resyncs = 0
    first = True
    while offset < size or (first and size == 0):
        first = False
        n = min(chunk_size, size - offset)
        headers = _tus_headers(
            {
                "Upload-Offset": str(offset),
                "Content-Type": "application/offset+octet-stream",
                "Content-Length": str(n),
            }
        )
        try:
            resp = await client.patch(url, headers=headers, content=_file_pieces(path, offset, n, progress))
        except httpx.TransportError as e:
            failures += 1
            if failures > max_retries:
                raise BackendClientError(
                    f"Uploading {path.name} failed after {max_retries} retries: {_describe(e)}; "
                    "run the same upload again to resume it"
                ) from e
            await asyncio.sleep(min(0.2 * 2**failures, 2.0))
            offset, _ = await tus_head(client, url)
            if progress is not None:
                progress.set(base_done + offset)
            continue
        if resp.status_code == 409:
            # Our idea of the offset was wrong (e.g. a chunk arrived although its answer was lost).
            resyncs += 1
            if resyncs > _MAX_RESYNCS:
                raise BackendClientError(f"The storage proxy keeps refusing the upload offset: {_problem_text(resp)}")
            offset, _ = await tus_head(client, url)
            if progress is not None:
                progress.set(base_done + offset)
            continue
        if resp.status_code in _GONE_STATUSES:
            raise TusSessionGone(f"The upload session is gone: {_problem_text(resp)}")
        if not 200 <= resp.status_code < 300:
            raise BackendClientError(f"The storage proxy refused the upload of {path.name}: {_problem_text(resp)}")
        new_offset = _int_header(resp, "Upload-Offset")
        if new_offset is None:
            new_offset = offset + n
        if new_offset < offset or new_offset > size:
            raise BackendClientError(f"The storage proxy answered a bad Upload-Offset ({new_offset})")
        offset = new_offset
        failures = 0
        if progress is not None:
            progress.set(base_done + offset)
        if on_chunk is not None:
            on_chunk(offset)
    return UploadResult(size=size, resumed_from=resumed_from, sent=size - resumed_from)


# ---- the state of unfinished uploads ----


def _cache_dir() -> Path:
    base = os.environ.get("XDG_CACHE_HOME") or str(Path.home() / ".cache")
    return Path(base) / "backend.ai" / "uploads"


def _jwt_expiry(token: str) -> float | None:
    """The ``exp`` claim of a JWT, read without verifying it (only to forget expired uploads)."""
    try:
        payload = token.split(".")[1]
        claims = json.loads(base64.urlsafe_b64decode(payload + "=" * (-len(payload) % 4)))
        exp = claims.get("exp") if isinstance(claims, dict) else None
        return float(exp) if isinstance(exp, (int, float)) else None
    except (IndexError, ValueError, UnicodeDecodeError):
        return None


class UploadStateStore:
    """Where unfinished uploads are remembered: one small JSON file per upload.

    The key is (API endpoint, access key, folder, target path, file size, file mtime), so a
    changed local file or another target never resumes a stale upload.  An entry holds the
    storage-proxy URL and token; it is removed when the upload completes, when the server no
    longer knows it, or when the token has expired (its ``exp`` claim; one day if it has none).
    The default directory is ``$XDG_CACHE_HOME/backend.ai/uploads`` (``~/.cache/...``).
    """

    DEFAULT_TTL = 24 * 3600

    def __init__(self, directory: Path | None = None) -> None:
        self.directory = directory if directory is not None else _cache_dir()

    @staticmethod
    def make_key(endpoint: str, access_key: str, folder: str, path: str, size: int, mtime_ns: int) -> str:
        """The file name stem of an upload's state."""
        raw = json.dumps([endpoint, access_key, folder, path, size, mtime_ns])
        return hashlib.sha256(raw.encode()).hexdigest()[:40]

    def _file(self, key: str) -> Path:
        return self.directory / f"{key}.json"

    def load(self, key: str) -> dict[str, Any] | None:
        """The saved ``{"url", "token", "expires"}`` of an unfinished upload, unless expired."""
        f = self._file(key)
        try:
            data = json.loads(f.read_text())
        except (OSError, ValueError):
            return None
        if not isinstance(data, dict) or not isinstance(data.get("url"), str) or not isinstance(data.get("token"), str):
            self.drop(key)
            return None
        if float(data.get("expires") or 0) <= time.time() + 30:
            self.drop(key)
            return None
        return data

    def save(self, key: str, url: str, token: str, **extra: Any) -> None:
        """Remember an upload (best effort: an unwritable cache only loses resumability)."""
        expires = _jwt_expiry(token) or time.time() + self.DEFAULT_TTL
        data = {"url": url, "token": token, "expires": expires, "saved": time.time(), **extra}
        try:
            self.directory.mkdir(parents=True, exist_ok=True, mode=0o700)
            tmp = self._file(key).with_suffix(".tmp")
            fd = os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)  # the token is a credential
            with os.fdopen(fd, "w") as fh:
                json.dump(data, fh)
            os.replace(tmp, self._file(key))
        except OSError:
            pass

    def drop(self, key: str) -> None:
        """Forget an upload."""
        with contextlib.suppress(OSError):
            self._file(key).unlink()

    def prune(self) -> None:
        """Remove the entries whose token has expired."""
        try:
            entries = list(self.directory.glob("*.json"))
        except OSError:
            return
        for f in entries:
            self.load(f.stem)


# ---- downloads ----


def safe_join(base: Path, relpath: str) -> Path:
    """``base / relpath`` for a path named by the server, refusing anything that leaves *base*.

    Absolute paths, ``..`` components, NUL and backslashes are refused, and so is a target that
    a symlink already in *base* would redirect outside it.
    """
    if "\x00" in relpath or "\\" in relpath:
        raise BackendClientError(f"Refused the unsafe path {relpath!r} from the server")
    pure = PurePosixPath(relpath)
    parts = [p for p in pure.parts if p not in ("", ".", "/")]
    if pure.is_absolute() or any(p == ".." for p in parts) or not parts:
        raise BackendClientError(f"Refused the unsafe path {relpath!r} from the server")
    target = base.joinpath(*parts)
    base_real = base.resolve()
    # resolve() follows symlinks that exist already; a planted or pre-existing one must not lead out.
    if not target.resolve().is_relative_to(base_real):
        raise BackendClientError(f"Refused to write {relpath!r}: it would land outside {base}")
    return target


@dataclass
class DownloadResult:
    """What :func:`download_file` wrote."""

    path: Path
    """The file written, or the directory an archive was extracted into."""
    size: int
    """Bytes received (the archive's size for a directory)."""
    resumed_from: int
    is_archive: bool
    files: list[str]
    """The files written (relative to the destination directory)."""


def _partial_path(dest: Path) -> Path:
    return dest.with_name(f".{dest.name}.bai-partial")


def _content_range(value: str | None) -> tuple[int, int | None] | None:
    """``"bytes 100-199/200"`` → ``(100, 200)`` (total None for ``*``)."""
    if not value or not value.startswith("bytes "):
        return None
    span, _, total = value[6:].partition("/")
    try:
        return int(span.split("-", 1)[0]), (int(total) if total.strip() not in ("", "*") else None)
    except ValueError:
        return None


class _PartialMeta:
    """What is known about a partial download (a JSON file beside it): the whole size and the validators,
    so that a resumed download never stitches bytes of two versions of a file together."""

    def __init__(self, partial: Path) -> None:
        self.path = partial.with_name(partial.name + ".json")

    def load(self) -> dict[str, Any]:
        try:
            data = json.loads(self.path.read_text())
        except (OSError, ValueError):
            return {}
        return data if isinstance(data, dict) else {}

    def save(self, total: int | None, resp: httpx.Response) -> None:
        data = {"total": total, "etag": resp.headers.get("etag"), "last_modified": resp.headers.get("last-modified")}
        with contextlib.suppress(OSError):
            self.path.write_text(json.dumps(data))

    def drop(self) -> None:
        with contextlib.suppress(OSError):
            self.path.unlink()


async def download_file(
    client: httpx.AsyncClient,
    url: str,
    dest: Path,
    *,
    base: Path,
    progress: ProgressLine | None = None,
    resume: bool = True,
    partial: Path | None = None,
    max_retries: int = _MAX_RETRIES,
) -> DownloadResult:
    """Download *url* (which carries the token) to *dest*, which must be *base* or lie inside it.

    The body goes to a hidden *partial* file (default: next to *dest*), which is renamed to *dest*
    once complete.  A partial file left over by a broken download is resumed with ``Range`` when
    the server's file still has the same size (and the same ``ETag``/``Last-Modified``, sent as
    ``If-Range``, when the server gives them); otherwise the download starts over.  A zip answer
    (a directory) is extracted into the directory *dest* instead.
    """
    if dest != base:
        dest.parent.mkdir(parents=True, exist_ok=True)
        if not dest.parent.resolve().is_relative_to(base.resolve()):
            raise BackendClientError(f"Refused to write {dest}: it lies outside {base}")
    if partial is None:
        partial = _partial_path(dest)
    meta = _PartialMeta(partial)
    known = meta.load()
    if not resume or not known.get("total"):
        # without a record of what the partial file belongs to, it cannot be trusted
        partial.unlink(missing_ok=True)
        meta.drop()
        known = {}
    resumed_from: int | None = None
    failures = 0
    while True:
        have = partial.stat().st_size if partial.exists() else 0
        headers: dict[str, str] = {"Accept-Encoding": "identity"}  # byte offsets must be those of the file
        if have > 0:
            headers["Range"] = f"bytes={have}-"
            validator = known.get("etag") or known.get("last_modified")
            if validator:
                headers["If-Range"] = str(validator)
        try:
            async with client.stream("GET", url, headers=headers) as resp:
                if resp.status_code == 416 and have > 0:
                    # The partial file does not fit the server's file (it changed); start over.
                    partial.unlink(missing_ok=True)
                    known = {}
                    continue
                if not 200 <= resp.status_code < 300:
                    await resp.aread()
                    raise BackendClientError(f"The storage proxy refused the download: {_problem_text(resp)}")
                length = _int_header(resp, "Content-Length")
                crange = _content_range(resp.headers.get("content-range")) if resp.status_code == 206 else None
                append = crange is not None and crange[0] == have and have > 0
                total = crange[1] if crange is not None else length
                if append and known.get("total") not in (None, total):
                    # Same offset, another size: the file changed since the partial download.
                    partial.unlink(missing_ok=True)
                    known = {}
                    continue
                start = have if append else 0
                if resumed_from is None:
                    resumed_from = start
                    if start and progress is not None:
                        progress.note(f"Resuming the download of {dest.name} at {human_bytes(start)}")
                if progress is not None:
                    progress.total = (start + length) if length is not None else None
                    progress.set(start)
                content_type = resp.headers.get("content-type", "").split(";", 1)[0].strip().lower()
                is_zip = content_type == "application/zip"
                if is_zip or total is None:
                    meta.drop()  # archives are made on the fly: they cannot be resumed
                else:
                    meta.save(total, resp)
                    known = meta.load()
                with open(partial, "ab" if append else "wb") as f:
                    async for piece in resp.aiter_bytes():  # no re-chunking: keep every byte that arrived
                        f.write(piece)
                        if progress is not None:
                            progress.update(len(piece))
                got = partial.stat().st_size
                if length is not None and got != start + length:
                    raise httpx.ReadError(f"the connection closed after {got} of {start + length} bytes")
        except httpx.TransportError as e:
            failures += 1
            if failures > max_retries:
                raise BackendClientError(
                    f"Downloading {dest.name} failed after {max_retries} retries: {_describe(e)}; "
                    "run the same download again to resume it"
                ) from e
            await asyncio.sleep(min(0.2 * 2**failures, 2.0))
            continue
        break
    meta.drop()
    if is_zip:
        try:
            files = extract_zip(partial, dest, base=base, progress=progress)
        finally:
            partial.unlink(missing_ok=True)
        return DownloadResult(dest, got, resumed_from or 0, True, files)
    if dest == base or (dest.is_dir() and not dest.is_symlink()):
        partial.unlink(missing_ok=True)
        raise BackendClientError(f"Cannot save the file {dest.name}: {dest} is a directory")
    os.replace(partial, dest)
    return DownloadResult(dest, got, resumed_from or 0, False, [dest.relative_to(base).as_posix()])


def extract_zip(archive: Path, dest: Path, *, base: Path, progress: ProgressLine | None = None) -> list[str]:
    """Extract *archive* into the directory *dest* (inside *base*); return the files written.

    Entry names are checked with :func:`safe_join`: an entry that would leave *dest* (absolute,
    ``..``, through a symlink) fails the extraction; symlink entries are skipped, never created.
    """
    dest.mkdir(parents=True, exist_ok=True)
    if not dest.resolve().is_relative_to(base.resolve()):
        raise BackendClientError(f"Refused to extract into {dest}: it lies outside {base}")
    written: list[str] = []
    try:
        with zipfile.ZipFile(archive) as zf:
            for info in zf.infolist():
                mode = info.external_attr >> 16
                if stat.S_ISLNK(mode):
                    if progress is not None:
                        progress.note(f"Skipped the symbolic link {info.filename} in the archive")
                    continue
                name = info.filename.rstrip("/")
                if not name:
                    continue
                target = safe_join(dest, name)
                if info.is_dir():
                    target.mkdir(parents=True, exist_ok=True)
                    continue
                target.parent.mkdir(parents=True, exist_ok=True)
                safe_join(dest, name)  # again, now that the parents exist
                if target.is_symlink():
                    target.unlink()
                with zf.open(info) as src, open(target, "wb") as out:
                    while piece := src.read(_PIECE):
                        out.write(piece)
                if mode & 0o777:
                    with contextlib.suppress(OSError):
                        os.chmod(target, (mode & 0o777) | stat.S_IRUSR | stat.S_IWUSR)
                written.append(target.relative_to(base).as_posix())
    except zipfile.BadZipFile as e:
        raise BackendClientError(f"The downloaded archive is broken: {e}") from None
    return written
