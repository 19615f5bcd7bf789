"""Session files in a kernel container: upload and download through the Docker archive API, listing via the runner.

Docker resolves archive paths inside the container's own root filesystem, so a symlink in ``/home/work`` can
never reach the host. But dockerd does the work as root, and it follows symlinks in the *middle* of a path: with
``/home/work/x -> /etc`` a plain archive upload of ``x/passwd`` replaces the container's ``/etc/passwd``, and a
download of ``x/shadow`` reads a file the user cannot read (both verified on Docker 20.10). So each transfer
freezes the container (``pause``), checks with Docker's lstat-like path stat that every existing directory on the
way is a real directory under ``/home/work`` (not a symlink), does the transfer and thaws the container. While
it is frozen nothing inside can swap a checked directory for a symlink.

A symlink as the *last* path component is harmless: an upload replaces the link itself with the uploaded file,
and a download archives the link (not its target).
"""

from __future__ import annotations

import asyncio
import base64
import io
import json
import logging
import posixpath
import tarfile
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

from aiodocker.exceptions import DockerError

from ai.backend.common.problems import (
    Conflict,
    Forbidden,
    InvalidAPIParameters,
    NotFound,
    ProblemError,
    ServiceUnavailable,
)

from ...kernel_tasks import tar_archive

if TYPE_CHECKING:
    from .backend import DockerBackend

WORKDIR = "/home/work"
#: Sanity limits; the manager enforces the API limits (20 files of 1 MiB) before anything reaches an agent.
MAX_UPLOAD_FILES = 20
MAX_UPLOAD_FILE_SIZE = 1024 * 1024
#: Go's os.FileMode bits, as Docker reports them in the path stat header.
_MODE_DIR = 1 << 31
_MODE_SYMLINK = 1 << 27
_STAT_HEADER = "X-Docker-Container-Path-Stat"
_READ_CHUNK = 256 * 1024
_PAUSE_ATTEMPTS = 8

log = logging.getLogger(__name__)


class PayloadTooLarge(ProblemError):
    status, slug, title = 413, "payload-too-large", "The requested files are too large"


class SymlinkRefused(InvalidAPIParameters):
    slug, title = "symlink-refused", "The path goes through a symbolic link"


@dataclass(frozen=True)
class PathStat:
    """What Docker's archive HEAD says about a path (the last component is not followed)."""

    name: str
    size: int
    mode: int
    link_target: str

    @property
    def is_dir(self) -> bool:
        return bool(self.mode & _MODE_DIR)

    @property
    def is_symlink(self) -> bool:
        return bool(self.mode & _MODE_SYMLINK)


def check_relpath(rel: str) -> list[str]:
    """The components of a normalized path relative to /home/work; 400 for anything else.

    The manager has normalized the path already; this only refuses what must never reach Docker.
    """
    if rel == "":
        return []
    parts = rel.split("/")
    if rel.startswith("/") or "\x00" in rel or any(p in ("", ".", "..") for p in parts):
        raise InvalidAPIParameters(f"Not a normalized path under {WORKDIR}: {rel!r}.")
    return parts


def _abs(parts: list[str]) -> str:
    return posixpath.join(WORKDIR, *parts)


class KernelFiles:
    """File transfers for the kernels of one :class:`DockerBackend`."""

    def __init__(self, backend: DockerBackend) -> None:
        self.backend = backend
        self._locks: dict[str, asyncio.Lock] = {}

    def _container_id(self, kid: str) -> str:
        state = self.backend.kernels.get(kid)
        if state is None or state.destroying:
            raise NotFound(f"Kernel {kid} does not exist on this agent.")
        return state.container_id

    # -- Docker calls ------------------------------------------------------------------------------------

    async def _post(self, path: str) -> None:
        async with self.backend.docker._query(path, method="POST"):
            pass

    @asynccontextmanager
    async def _frozen(self, cid: str) -> AsyncIterator[None]:
        """Pause the container for the duration (one transfer per container at a time)."""
        if len(self._locks) > 64:
            # Forget the locks of containers that are gone.
            live = {k.container_id for k in self.backend.kernels.values()}
            self._locks = {k: v for k, v in self._locks.items() if k in live}
        lock = self._locks.setdefault(cid, asyncio.Lock())
        async with lock:
            await self._pause(cid)
            try:
                yield
            finally:
                # Shielded: a cancelled transfer must not leave the container frozen.
                await asyncio.shield(self._unpause(cid))

    async def _unpause(self, cid: str) -> None:
        for attempt in range(_PAUSE_ATTEMPTS):
            try:
                await self._post(f"containers/{cid}/unpause")
                return
            except DockerError as e:
                if e.status in (404, 409):
                    return  # removed meanwhile, or no longer paused
                log.warning("unpausing container %s failed (%s); attempt %d", cid[:12], e.message, attempt + 1)
                await asyncio.sleep(0.05 * (attempt + 1))
        log.error("container %s stays paused: Docker refused to unpause it", cid[:12])

    async def _pause(self, cid: str) -> None:
        for attempt in range(_PAUSE_ATTEMPTS):
            try:
                await self._post(f"containers/{cid}/pause")
                return
            except DockerError as e:
                if e.status == 409 and "already paused" in str(e.message):
                    return  # left over from an interrupted transfer: go on, and thaw it afterwards
                if e.status in (404, 409):
                    raise Conflict(f"The kernel container is not running: {e.message}") from None
                # runc gives up freezing a busy cgroup now and then ("unable to freeze"); it thaws it again.
                log.info("pausing container %s failed (%s); attempt %d", cid[:12], e.message, attempt + 1)
                await asyncio.sleep(0.05 * (attempt + 1))
        raise ServiceUnavailable("The session's container could not be frozen for a safe file transfer; try again.")

    async def _stat(self, cid: str, path: str) -> PathStat | None:
        """Docker's stat of ``path`` in the container (symlinks before the last component are followed)."""
        docker = self.backend.docker
        await docker._check_version()  # resolves the API version the URL carries
        url = docker._canonicalize_url(f"containers/{cid}/archive", versioned_api=True)
        async with docker.session.request("HEAD", url, params={"path": path}) as resp:
            if resp.status == 404:
                return None
            if resp.status != 200:
                raise InvalidAPIParameters(f"Cannot inspect {path!r} in the container (Docker answered {resp.status}).")
            raw = resp.headers.get(_STAT_HEADER, "")
        try:
            doc = json.loads(base64.b64decode(raw))
            return PathStat(str(doc["name"]), int(doc["size"]), int(doc["mode"]), str(doc.get("linkTarget") or ""))
        except (ValueError, KeyError, TypeError):
            raise ProblemError(f"Docker sent an unreadable stat of {path!r}.") from None

    async def _check_dirs(self, cid: str, dirs: list[list[str]]) -> set[str]:
        """Check that each existing directory (relative, parents listed before children) is a real directory.

        Returns the relative paths of those that do not exist yet; 400 for a symlink or a non-directory.
        """
        top = await self._stat(cid, WORKDIR)
        if top is None or not top.is_dir or top.is_symlink:
            raise Conflict(f"{WORKDIR} is not a directory in this container.")
        missing: set[str] = set()
        for parts in dirs:
            rel = "/".join(parts)
            if "/".join(parts[:-1]) in missing:
                missing.add(rel)
                continue
            st = await self._stat(cid, _abs(parts))
            if st is None:
                missing.add(rel)
            elif st.is_symlink:
                raise SymlinkRefused(
                    f"{_abs(parts)} is a symbolic link (to {st.link_target!r}); session file "
                    "transfers do not follow symbolic links."
                )
            elif not st.is_dir:
                raise InvalidAPIParameters(f"{_abs(parts)} exists and is not a directory.")
        return missing

    # -- upload ------------------------------------------------------------------------------------------

    @staticmethod
    def _read_upload(data: bytes) -> list[tuple[list[str], bytes]]:
        try:
            with tarfile.open(fileobj=io.BytesIO(data), mode="r:") as tf:
                members = tf.getmembers()
                if len(members) > MAX_UPLOAD_FILES:
                    raise InvalidAPIParameters(f"At most {MAX_UPLOAD_FILES} files can be uploaded at once.")
                files: list[tuple[list[str], bytes]] = []
                for m in members:
                    if not m.isreg() or m.size > MAX_UPLOAD_FILE_SIZE:
                        raise InvalidAPIParameters(f"Upload entry {m.name!r} is not an acceptable regular file.")
                    parts = check_relpath(m.name)
                    if not parts:
                        raise InvalidAPIParameters("An upload entry has no name.")
                    f = tf.extractfile(m)
                    assert f is not None
                    files.append((parts, f.read()))
        except tarfile.TarError as e:
            raise InvalidAPIParameters(f"The upload archive is broken: {e}.") from None
        return files

    def _build_tar(self, dirs: list[str], files: list[tuple[list[str], bytes]]) -> bytes:
        """The archive Docker extracts: owned by the kernel user, sane modes, directories and regular files only."""
        cc = self.backend.config.container
        return tar_archive(
            dirs, [("/".join(parts), content, 0o644) for parts, content in files], cc.kernel_uid, cc.kernel_gid
        )

    async def upload(self, kid: str, data: bytes) -> list[str]:
        """Write the regular files of the tar ``data`` (paths relative to /home/work) into the kernel.

        Missing directories are created (owned by the kernel user), existing files (and symlinks in their place)
        are replaced; nothing is written when a check fails.
        """
        files = self._read_upload(data)
        names = {"/".join(p) for p, _ in files}
        if len(names) != len(files):
            raise InvalidAPIParameters("The same file name appears more than once.")
        dir_set = {"/".join(p[:i]) for p, _ in files for i in range(1, len(p))}
        clash = sorted(names & dir_set)
        if clash:
            raise InvalidAPIParameters(f"{clash[0]!r} is uploaded both as a file and as a directory.")
        dirs = sorted((d.split("/") for d in dir_set), key=lambda p: (len(p), p))
        cid = self._container_id(kid)
        async with self._frozen(cid):
            missing = await self._check_dirs(cid, dirs)
            for parts, _ in files:
                if "/".join(parts[:-1]) in missing:
                    continue
                st = await self._stat(cid, _abs(parts))
                if st is not None and st.is_dir and not st.is_symlink:
                    raise InvalidAPIParameters(f"{_abs(parts)} is a directory; a file cannot replace it.")
            new_dirs = [d for d in ("/".join(p) for p in dirs) if d in missing]
            archive = self._build_tar(new_dirs, files)
            try:
                async with self.backend.docker._query(
                    f"containers/{cid}/archive",
                    method="PUT",
                    data=archive,
                    params={"path": WORKDIR, "noOverwriteDirNonDir": "true"},
                    headers={"Content-Type": "application/x-tar"},
                ):
                    pass
            except DockerError as e:
                raise InvalidAPIParameters(f"Docker refused to write the files: {e.message}") from None
        return sorted(names)

    # -- download ----------------------------------------------------------------------------------------

    async def download(self, kid: str, rel: str, max_bytes: int) -> bytes:
        """A tar archive of one file or directory (relative to /home/work) of the kernel, at most ``max_bytes``."""
        parts = check_relpath(rel)
        path = _abs(parts)
        cid = self._container_id(kid)
        async with self._frozen(cid):
            missing = await self._check_dirs(cid, [parts[:i] for i in range(1, len(parts))])
            if missing or (parts and await self._stat(cid, path) is None):
                raise NotFound(f"No such file or directory in the session: {path}.")
            chunks: list[bytes] = []
            total = 0
            try:
                async with self.backend.docker._query(f"containers/{cid}/archive", params={"path": path}) as resp:
                    async for chunk in resp.content.iter_chunked(_READ_CHUNK):
                        total += len(chunk)
                        if total > max_bytes:
                            raise PayloadTooLarge(
                                f"The requested files exceed {max_bytes} bytes in all; download fewer or smaller files."
                            )
                        chunks.append(chunk)
            except DockerError as e:
                if e.status == 404:
                    raise NotFound(f"No such file or directory in the session: {path}.") from None
                raise
        return b"".join(chunks)

    # -- listing -----------------------------------------------------------------------------------------

    async def list_files(self, kid: str, rel: str) -> dict[str, Any]:
        """Entries of a directory under /home/work, read by the runner (as the kernel user)."""
        path = _abs(check_relpath(rel))
        resp = await self.backend.runner_request(kid, "list_files", path=path)
        status = resp.get("status")
        if status == "ok":
            return {
                "files": resp.get("files", []),
                "folder_path": resp.get("folder_path", path),
                "errors": resp.get("errors", ""),
                "truncated": bool(resp.get("truncated")),
            }
        detail = str(resp.get("detail") or status)
        if status == "not-found":
            raise NotFound(detail)
        if status == "denied":
            raise Forbidden(detail)
        if status == "outside":
            raise SymlinkRefused(detail)
        raise InvalidAPIParameters(detail)
