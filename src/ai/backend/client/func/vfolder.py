"""``VFolder``: virtual folders (``/folders``), their files, sharing and transfers through the storage proxy.

The manager answers metadata calls itself and hands out a storage-proxy URL plus a short-lived
token for each upload (``request-upload``) and download (``request-download``); the bytes then go
directly between the client and the storage proxy (tus uploads, ``Range``-resumable downloads;
see :mod:`ai.backend.client.transfer`).
"""

from __future__ import annotations

import builtins
import os
from collections.abc import Callable, Mapping, Sequence
from pathlib import Path, PurePosixPath
from typing import Any
from urllib.parse import quote

from ..exceptions import BackendClientError
from ..request import Request
from ..session import api_session
from ..transfer import (
    DEFAULT_CHUNK_SIZE,
    ProgressLine,
    TusSessionGone,
    UploadStateStore,
    apply_address_map,
    download_file,
    human_bytes,
    safe_join,
    tus_head,
    tus_upload,
    with_token,
)
from .base import BaseFunction, api_function

__all__ = ("VFolder", "decode_file_list")

USAGE_MODES = ("general", "data", "model")
PERMISSIONS = ("ro", "rw", "wd")


def _session() -> Any:
    session = api_session.get()
    if session is None:
        raise RuntimeError("API functions must be called inside the context of a valid API session")
    return session


async def _json(rqst: Request) -> Any:
    async with rqst.fetch() as resp:
        if resp.status == 204 or not resp.content:
            return None
        return await resp.json()


def _request(method: str, path: str, body: Any = None, params: Mapping[str, Any] | None = None) -> Request:
    rqst = Request(method, path, params=params)
    if body is not None:
        rqst.set_json(body)
    return rqst


def decode_file_list(files: Any) -> list[dict[str, Any]]:
    """The ``files`` of a file list answer: a list, or (as upstream sends it) a JSON-encoded string of one."""
    import json

    if files is None or files == "":
        return []
    if isinstance(files, str):
        try:
            files = json.loads(files)
        except json.JSONDecodeError as e:
            raise BackendClientError(f"Unexpected file list (not JSON): {e}") from None
    if not isinstance(files, list):
        raise BackendClientError(f"Unexpected file list: {type(files).__name__}, not a list")
    return [f for f in files if isinstance(f, dict)]


def _clean_vfolder_path(path: str | PurePosixPath) -> str:
    """A path inside a folder, relative to its root (``"/a/b"`` and ``"./a/b"`` → ``"a/b"``, root → ``"."``)."""
    text = str(path).replace("\\", "/")
    parts = [p for p in PurePosixPath(text).parts if p not in ("/", ".", "")]
    return "/".join(parts) if parts else "."


def _local_files(files: Sequence[str | Path], basedir: str | Path | None) -> list[tuple[Path, str]]:
    """``(local file, target path in the folder)`` for the given files and directories.

    Directories contribute every regular file below them (symlinked directories are not followed).
    A relative name is looked up under *basedir* first (as the 22.03 SDK does), then in the current
    directory.  Targets are relative to *basedir*; without one, to the current directory, or for a
    path outside it, to the path's parent (so ``/tmp/x.csv`` becomes ``x.csv``).
    """
    explicit = basedir is not None
    base = Path(basedir).resolve() if basedir is not None else Path.cwd().resolve()
    out: list[tuple[Path, str]] = []
    seen: set[str] = set()
    for f in files:
        p = Path(f)
        if explicit and not p.is_absolute() and (base / p).exists():
            p = base / p  # the 22.03 SDK takes relative names relative to basedir; else they are the caller's
        p = p.absolute()
        if not p.exists():
            raise BackendClientError(f"No such file or directory: {f}")
        root = base
        resolved_parent = Path(os.path.normpath(p))
        if not resolved_parent.is_relative_to(base):
            if explicit:
                raise BackendClientError(f'"{f}" is outside of the base directory "{base}"')
            root = resolved_parent.parent
        entries: list[Path]
        if p.is_dir():
            entries = []
            for dirpath, dirnames, filenames in os.walk(p, followlinks=False):
                dirnames.sort()
                entries.extend(Path(dirpath) / name for name in sorted(filenames))
            entries = [e for e in entries if e.is_file()]
        elif p.is_file():
            entries = [p]
        else:
            raise BackendClientError(f'"{f}" is neither a regular file nor a directory')
        for entry in entries:
            rel = Path(os.path.normpath(entry)).relative_to(root).as_posix()
            if rel not in seen:
                seen.add(rel)
                out.append((entry, rel))
    return out


class VFolder(BaseFunction):
    """A virtual folder, addressed by its name (as ``/folders/:name`` does)."""

    def __init__(self, name: str, id: str | None = None) -> None:
        self.name = name
        self.id = id

    def __repr__(self) -> str:
        return f"<{type(self).__name__} name={self.name!r}>"

    def _path(self, suffix: str = "") -> str:
        return f"/folders/{quote(self.name, safe='')}{suffix}"

    # ---- folders ----

    @api_function
    @classmethod
    async def create(
        cls,
        name: str,
        host: str | None = None,
        unmanaged_path: str | None = None,
        group: str | None = None,
        usage_mode: str = "general",
        permission: str = "rw",
        quota: str | int | None = "0",
        cloneable: bool = False,
    ) -> dict[str, Any]:
        """Create a folder on *host* (default: the server's default host); with *group* (an ID or a
        name) it belongs to that group.  *quota* is in bytes (``"0"``: none).  Returns the new folder.
        """
        body: dict[str, Any] = {
            "name": name,
            "host": host,
            "usage_mode": usage_mode,
            "permission": permission,
            "cloneable": cloneable,
        }
        if unmanaged_path:
            body["unmanaged_path"] = unmanaged_path
        if group:
            body["group"] = group
        if quota not in (None, "", "0", 0):
            body["quota"] = int(quota) if isinstance(quota, int) or str(quota).isdigit() else quota
        data = await _json(_request("POST", "/folders", body))
        return dict(data) if isinstance(data, Mapping) else {"name": name, "host": host}

    @api_function
    @classmethod
    async def delete_by_id(cls, oid: str) -> Any:
        """Delete the folder with this ID."""
        return await _json(_request("DELETE", "/folders", {"id": oid}))

    @api_function
    @classmethod
    async def list(cls, list_all: bool = False, group: str | None = None) -> builtins.list[dict[str, Any]]:
        """Your folders, those shared with you and those of your groups (*list_all*: everybody's,
        superadmins only); *group* limits group folders to that group's."""
        params: dict[str, Any] = {}
        if list_all:
            params["all"] = True
        if group:
            params["group_id"] = group
        data = await _json(_request("GET", "/folders", params=params or None))
        if not isinstance(data, list):
            raise BackendClientError(f"Unexpected folder list response: {data!r}")
        return data

    @api_function
    @classmethod
    async def list_hosts(cls) -> dict[str, Any]:
        """``{"default": host, "allowed": [hosts]}``: where you may create folders."""
        data = await _json(_request("GET", "/folders/_/hosts"))
        return dict(data) if isinstance(data, Mapping) else {"default": None, "allowed": []}

    @api_function
    @classmethod
    async def list_all_hosts(cls) -> dict[str, Any]:
        """Every folder host the storage proxies offer (superadmins)."""
        return dict(await _json(_request("GET", "/folders/_/all_hosts")) or {})

    @api_function
    @classmethod
    async def list_allowed_types(cls) -> builtins.list[str]:
        """The folder ownership types you may create (``user``, ``group``)."""
        data = await _json(_request("GET", "/folders/_/allowed_types"))
        return [str(t) for t in data] if isinstance(data, list) else []

    @api_function
    async def info(self) -> dict[str, Any]:
        """This folder's details (``id``, ``host``, ``permission``, ``num_files``, ...)."""
        data = await _json(_request("GET", self._path()))
        if not isinstance(data, Mapping):
            raise BackendClientError(f"Unexpected folder info response: {data!r}")
        return dict(data)

    @api_function
    async def delete(self) -> Any:
        """Delete this folder and all its files (irreversible)."""
        return await _json(_request("DELETE", self._path()))

    @api_function
    async def rename(self, new_name: str) -> Any:
        """Rename this folder (this object follows the new name)."""
        result = await _json(_request("POST", self._path("/rename"), {"new_name": new_name}))
        self.name = new_name
        return result

    @api_function
    async def update_options(
        self, name: str | None = None, permission: str | None = None, cloneable: bool | None = None
    ) -> Any:
        """Change the default share *permission* and/or the *cloneable* flag."""
        body: dict[str, Any] = {}
        if permission is not None:
            body["permission"] = permission
        if cloneable is not None:
            body["cloneable"] = cloneable
        target = VFolder(name) if name else self
        return await _json(_request("POST", target._path("/update-options"), body))

    @api_function
    async def clone(
        self,
        target_name: str,
        target_host: str | None = None,
        usage_mode: str = "general",
        permission: str = "rw",
        cloneable: bool = False,
    ) -> dict[str, Any]:
        """Copy this (cloneable) folder into a new folder *target_name* on *target_host* (default: the
        source's).  The copy runs on the server as a background task: the answer (the new folder) carries
        its ``bgtask_id``, and the folder is usable once the task is done."""
        body: dict[str, Any] = {
            "target_name": target_name,
            "target_host": target_host,
            "usage_mode": usage_mode,
            "permission": permission,
            "cloneable": cloneable,
        }
        data = await _json(_request("POST", self._path("/clone"), body))
        return dict(data) if isinstance(data, Mapping) else {"name": target_name}

    # ---- files ----

    @api_function
    async def list_files(self, path: str = ".") -> dict[str, Any]:
        """The entries of a directory in this folder: ``{"files": [{"filename", "size", "mode",
        "mtime", ...}], ...}``."""
        data = await _json(_request("GET", self._path("/files"), params={"path": _clean_vfolder_path(path)}))
        if not isinstance(data, Mapping):
            raise BackendClientError(f"Unexpected file list response: {data!r}")
        result = dict(data)
        result["files"] = decode_file_list(result.get("files"))
        return result

    @api_function
    async def mkdir(self, path: str, parents: bool | None = None, exist_ok: bool = False) -> Any:
        """Create the directory *path*; with *parents*, missing parents too (not given: the server's
        default, which creates them)."""
        body: dict[str, Any] = {"path": _clean_vfolder_path(path), "exist_ok": exist_ok}
        if parents is not None:
            body["parents"] = parents
        return await _json(_request("POST", self._path("/mkdir"), body))

    @api_function
    async def rename_file(self, target_path: str, new_name: str, is_dir: bool | None = None) -> Any:
        """Rename the file or directory *target_path* to *new_name* (a name, not a path), in place."""
        body: dict[str, Any] = {"target_path": _clean_vfolder_path(target_path), "new_name": new_name}
        if is_dir is not None:
            body["is_dir"] = is_dir
        return await _json(_request("POST", self._path("/rename-file"), body))

    @api_function
    async def move_file(self, src_path: str, dst_path: str) -> Any:
        """Move *src_path* to *dst_path* inside this folder."""
        body = {"src": _clean_vfolder_path(src_path), "dst": _clean_vfolder_path(dst_path)}
        return await _json(_request("POST", self._path("/move-file"), body))

    @api_function
    async def delete_files(self, files: Sequence[str], recursive: bool = False) -> Any:
        """Delete files (and, with *recursive*, directories) of this folder (irreversible)."""
        body = {"files": [_clean_vfolder_path(f) for f in files], "recursive": recursive}
        return await _json(_request("DELETE", self._path("/delete-files"), body))

    @api_function
    async def request_download(self, filename: str, archive: bool = False) -> dict[str, Any]:
        """A storage-proxy ``{"token", "url"}`` to download *filename* (with *archive*, a directory as zip)."""
        body = {"path": _clean_vfolder_path(filename), "archive": archive}
        data = await _json(_request("POST", self._path("/request-download"), body))
        if not isinstance(data, Mapping) or "token" not in data or "url" not in data:
            raise BackendClientError(f"Unexpected request-download response: {data!r}")
        return dict(data)

    @api_function
    async def request_upload(self, path: str, size: int) -> dict[str, Any]:
        """A storage-proxy ``{"token", "url"}`` to upload *size* bytes to *path*."""
        body = {"path": _clean_vfolder_path(path), "size": size}
        data = await _json(_request("POST", self._path("/request-upload"), body))
        if not isinstance(data, Mapping) or "token" not in data or "url" not in data:
            raise BackendClientError(f"Unexpected request-upload response: {data!r}")
        return dict(data)

    @api_function
    async def upload(
        self,
        files: Sequence[str | Path],
        *,
        basedir: str | Path | None = None,
        chunk_size: int = DEFAULT_CHUNK_SIZE,
        address_map: Mapping[str, str] | None = None,
        show_progress: bool = False,
        on_chunk: Callable[[str, int], None] | None = None,
        state_dir: str | Path | None = None,
    ) -> builtins.list[dict[str, Any]]:
        """Upload local files (directories: every file below them) into this folder.

        Target paths are the files' paths relative to *basedir* (default: the current directory;
        a file outside it goes to the folder's root).  Existing files are overwritten.  Each file
        goes with tus in *chunk_size* pieces; an unfinished upload (the call failed or was killed)
        is resumed from the server's offset when the same file is uploaded again (see
        :class:`~ai.backend.client.transfer.UploadStateStore`, kept under *state_dir*).
        ``on_chunk(target, offset)`` is called after each acknowledged chunk.  Returns one
        ``{"path", "size", "resumed_from"}`` per file.
        """
        session = _session()
        amap = {**session.config.storage_proxy_address_map, **(address_map or {})}
        pairs = _local_files(files, basedir)
        store = UploadStateStore(Path(state_dir) if state_dir is not None else None)
        store.prune()
        total = sum(p.stat().st_size for p, _ in pairs)
        progress = ProgressLine(f"Uploading to {self.name}", total, show_progress)
        results: list[dict[str, Any]] = []
        try:
            for local, target in pairs:
                try:
                    results.append(
                        await self._upload_one(session, local, target, amap, chunk_size, progress, on_chunk, store)
                    )
                except OSError as e:  # a local file that cannot be read
                    raise BackendClientError(f"Cannot read {local}: {e.strerror or e}") from e
        finally:
            progress.close()
        return results

    async def _upload_one(
        self,
        session: Any,
        local: Path,
        target: str,
        amap: Mapping[str, str],
        chunk_size: int,
        progress: ProgressLine,
        on_chunk: Callable[[str, int], None] | None,
        store: UploadStateStore,
    ) -> dict[str, Any]:
        st = local.stat()
        key = store.make_key(
            str(session.config.endpoint), session.config.access_key, self.name, target, st.st_size, st.st_mtime_ns
        )
        saved = store.load(key)
        start_done = progress.done

        def _chunk(offset: int) -> None:
            if on_chunk is not None:
                on_chunk(target, offset)

        for attempt in range(2):
            if saved is None:
                info = await self._orig_request_upload(target, st.st_size)  # type: ignore[attr-defined]
                url = with_token(apply_address_map(str(info["url"]), amap), str(info["token"]))
                store.save(key, url, str(info["token"]), folder=self.name, path=target, local=str(local))
            else:
                url = str(saved["url"])
            try:
                if saved is not None:
                    offset, _ = await tus_head(session.http_client, url)
                    if offset:
                        progress.note(
                            f"Resuming the upload of {target} at {human_bytes(offset)} of {human_bytes(st.st_size)}"
                        )
                result = await tus_upload(
                    session.http_client,
                    url,
                    local,
                    size=st.st_size,
                    chunk_size=chunk_size,
                    progress=progress,
                    on_chunk=_chunk,
                )
            except TusSessionGone:
                store.drop(key)
                progress.set(start_done)
                if saved is None or attempt:
                    raise
                saved = None  # the remembered upload expired or finished: start a fresh one
                continue
            store.drop(key)
            return {"path": target, "size": st.st_size, "resumed_from": result.resumed_from}
        raise BackendClientError(f"Could not upload {local}")  # not reached

    @api_function
    async def download(
        self,
        relative_paths: Sequence[str],
        *,
        basedir: str | Path | None = None,
        chunk_size: int = DEFAULT_CHUNK_SIZE,
        show_progress: bool = False,
        address_map: Mapping[str, str] | None = None,
        resume: bool = True,
    ) -> builtins.list[dict[str, Any]]:
        """Download files or directories of this folder into *basedir* (default: the current directory).

        Each path keeps its place relative to the folder root (``a/b.txt`` → ``basedir/a/b.txt``);
        a directory comes as a zip archive and is extracted there (the root, ``.``, into *basedir*
        itself).  Nothing is ever written outside *basedir*.  A download that broke is resumed with
        ``Range`` (*resume*).  Returns one ``{"path", "local_path", "size", "files"}`` per path.
        """
        del chunk_size  # downloads stream in small pieces; kept for the 22.03 signature
        session = _session()
        amap = {**session.config.storage_proxy_address_map, **(address_map or {})}
        base = Path(basedir).resolve() if basedir is not None else Path.cwd().resolve()
        base.mkdir(parents=True, exist_ok=True)
        results: list[dict[str, Any]] = []
        progress = ProgressLine(f"Downloading from {self.name}", None, show_progress)
        try:
            for relpath in relative_paths:
                clean = _clean_vfolder_path(relpath)
                dest = base if clean == "." else safe_join(base, clean)
                # the root is extracted into basedir itself, so its partial archive lies inside basedir
                partial = base / f".{self.name.lstrip('.')}.bai-partial" if dest == base else None
                info = await self._orig_request_download(clean, archive=True)  # type: ignore[attr-defined]
                url = with_token(apply_address_map(str(info["url"]), amap), str(info["token"]))
                try:
                    result = await download_file(
                        session.http_client, url, dest, base=base, progress=progress, resume=resume, partial=partial
                    )
                except OSError as e:  # the destination cannot be written
                    raise BackendClientError(f"Cannot write {e.filename or dest}: {e.strerror or e}") from e
                results.append(
                    {
                        "path": clean,
                        "local_path": str(result.path),
                        "size": result.size,
                        "resumed_from": result.resumed_from,
                        "archive": result.is_archive,
                        "files": result.files,
                    }
                )
        finally:
            progress.close()
        return results

    # ---- sharing ----

    @api_function
    async def invite(self, perm: str, emails: Sequence[str]) -> dict[str, Any]:
        """Invite users (by email) to this folder with permission *perm* (``ro``, ``rw``, ``wd``)."""
        data = await _json(_request("POST", self._path("/invite"), {"perm": perm, "emails": list(emails)}))
        return dict(data) if isinstance(data, Mapping) else {}

    @api_function
    @classmethod
    async def invitations(cls) -> builtins.list[dict[str, Any]]:
        """The pending invitations you received."""
        data = await _json(_request("GET", "/folders/invitations/list"))
        items = data.get("invitations") if isinstance(data, Mapping) else data
        return list(items or [])

    @api_function
    @classmethod
    async def sent_invitations(cls) -> builtins.list[dict[str, Any]]:
        """The pending invitations you sent."""
        data = await _json(_request("GET", "/folders/invitations/list-sent"))
        items = data.get("invitations") if isinstance(data, Mapping) else data
        return list(items or [])

    @api_function
    @classmethod
    async def accept_invitation(cls, inv_id: str) -> Any:
        """Accept an invitation: the folder is then shared with you."""
        return await _json(_request("POST", "/folders/invitations/accept", {"inv_id": inv_id}))

    @api_function
    @classmethod
    async def delete_invitation(cls, inv_id: str) -> Any:
        """Reject (or, as its sender, withdraw) an invitation."""
        return await _json(_request("DELETE", "/folders/invitations/delete", {"inv_id": inv_id}))

    @api_function
    @classmethod
    async def update_invitation(cls, inv_id: str, perm: str) -> Any:
        """Change the permission of an invitation you sent that is still pending."""
        return await _json(_request("POST", f"/folders/invitations/update/{quote(inv_id, safe='')}", {"perm": perm}))

    @api_function
    async def share(self, perm: str, emails: Sequence[str]) -> dict[str, Any]:
        """Share this group folder with users directly, overriding their permission."""
        body = {"permission": perm, "emails": list(emails)}
        data = await _json(_request("POST", self._path("/share"), body))
        return dict(data) if isinstance(data, Mapping) else {}

    @api_function
    async def unshare(self, emails: Sequence[str]) -> dict[str, Any]:
        """Take back the direct share of this group folder from users."""
        data = await _json(_request("DELETE", self._path("/unshare"), {"emails": list(emails)}))
        return dict(data) if isinstance(data, Mapping) else {}

    @api_function
    async def leave(self) -> Any:
        """Stop using a folder shared with you (not your own, not a group folder)."""
        return await _json(_request("POST", self._path("/leave")))
