"""The manager's client of the storage proxies' manager-facing API (``docs/storage-proxy.md``).

The manager never touches folder files: creating, deleting, cloning and every file operation is a call
to the proxy that serves the folder's host (``"<proxy>:<volume>"``), through the peer-client base
(:mod:`ai.backend.common.peer`: one keep-alive pool) with the request bodies of
:mod:`ai.backend.common.contracts.storage`. A problem answered by the proxy is raised again as a problem with
the same status (400, 404, 409, 413), a proxy that cannot be reached as a 503, and anything else it fails with
as a 502. No call is retried: the callers answer a user, who may try again.
"""

from __future__ import annotations

import logging
import time
import uuid
from collections.abc import AsyncIterator, Mapping
from datetime import datetime
from typing import Any

from pydantic import BaseModel

from ai.backend.common.contracts.storage import (
    AUTH_HEADER,
    CloneFolder,
    CreateFolder,
    DeleteBody,
    DownloadBody,
    FolderOptions,
    FolderRef,
    ListBody,
    MkdirBody,
    MoveBody,
    RenameBody,
    SetQuota,
    StorageBody,
    UploadBody,
)
from ai.backend.common.peer import PeerAnswer, PeerClient, problem_fields
from ai.backend.common.problems import (
    Conflict,
    InvalidAPIParameters,
    NotFound,
    ProblemError,
    ServiceUnavailable,
)

from .config import StorageProxySection

log = logging.getLogger(__name__)

VOLUMES_TTL = 10.0  # seconds a proxy's volume list is reused
USAGE_TTL = 3.0  # seconds a folder's usage is reused ("not real-time", §11.5)
_TIMEOUT = 30.0  # seconds of waiting for an answer (connecting: CONNECT_TIMEOUT of the peer base)
_LONG_TIMEOUT = 24 * 3600.0  # clone and delete answer when the work is done


class FolderQuotaExceeded(ProblemError):
    status, slug, title = 413, "vfolder-quota-exceeded", "The folder's quota is exceeded"


class StorageProxyUnavailable(ServiceUnavailable):
    slug, title = "storage-proxy-unavailable", "The storage proxy is unavailable"


class StorageProxyFailed(ProblemError):
    status, slug, title = 502, "storage-proxy-error", "The storage proxy failed to handle the request"


class UnknownStorageHost(InvalidAPIParameters):
    slug, title = "unknown-vfolder-host", "Unknown storage host"


_BY_STATUS: dict[int, type[ProblemError]] = {
    400: InvalidAPIParameters,
    404: NotFound,
    409: Conflict,
    413: FolderQuotaExceeded,
}


def split_host(host: str) -> tuple[str, str]:
    """``"<proxy>:<volume>"`` → (proxy, volume); 400 when malformed."""
    proxy, sep, volume = host.partition(":")
    if not sep or not proxy or not volume:
        raise UnknownStorageHost(f"The storage host {host!r} is not of the form '<proxy>:<volume>'.")
    return proxy, volume


def _epoch(value: Any) -> int | None:
    if isinstance(value, int | float):
        return int(value)
    if isinstance(value, str):
        try:
            return int(datetime.fromisoformat(value).timestamp())
        except ValueError:
            return None
    return None


def file_entry(item: Mapping[str, Any]) -> dict[str, Any]:
    """A proxy listing item as the Virtual Folder File Object (§2.17) plus ``type`` and ``symlink_target``."""
    stat = item.get("stat") or {}
    mtime = _epoch(stat.get("modified"))
    out: dict[str, Any] = {
        "filename": item.get("name"),
        "type": item.get("type"),
        "mode": stat.get("mode"),
        "size": stat.get("size"),
        "ctime": _epoch(stat.get("created")),
        "mtime": mtime,
        "atime": mtime,  # the proxy does not report access times
    }
    if item.get("symlink_target") is not None:
        out["symlink_target"] = item["symlink_target"]
    return out


class _ProxyPeer(PeerClient):
    """Calls to storage proxies at full URLs; ``target`` is the proxy's name in ``[storage-proxies]``."""

    peer = "storage proxy"

    def unreachable(self, target: str, exc: BaseException) -> ProblemError:
        return StorageProxyUnavailable(f"The storage proxy {target!r} is unreachable: {type(exc).__name__}.")

    def timed_out(self, target: str, method: str, path: str) -> ProblemError:
        return StorageProxyUnavailable(f"The storage proxy {target!r} did not answer {method} {_route(path)} in time.")

    def malformed(self, target: str, method: str, path: str) -> ProblemError:
        return StorageProxyFailed(f"The storage proxy {target!r} answered {method} {_route(path)} with non-JSON.")

    def refused(self, target: str, method: str, path: str, answer: PeerAnswer) -> ProblemError:
        doc = problem_fields(answer.body)
        detail = str(doc.get("detail") or doc.get("title") or answer.reason) if doc else answer.reason
        cls = _BY_STATUS.get(answer.status)
        if cls is not None:
            return cls(detail)
        if answer.status in (401, 403):
            log.error("storage proxy %s refused the manager's secret (%s %s)", target, method, _route(path))
            return StorageProxyFailed(
                f"The storage proxy {target!r} refused the manager's credentials; check [storage-proxies] secret."
            )
        log.warning("storage proxy %s answered %s %s with %d: %s", target, method, _route(path), answer.status, detail)
        return StorageProxyFailed(f"The storage proxy {target!r} failed: {detail}")


def _route(url: str) -> str:
    """The path of a proxy URL, for messages (``http://host:port/folder/create`` → ``/folder/create``)."""
    return "/" + url.split("://", 1)[-1].partition("/")[2]


class StorageClient:
    """Calls to the configured storage proxies, addressed by folder host."""

    def __init__(self, proxies: Mapping[str, StorageProxySection]) -> None:
        self.proxies = dict(proxies)
        # The manager API, and the client-facing API for the manager's own transfers (fewer connections).
        self._manager_api = _ProxyPeer(limit_per_host=64, keepalive_timeout=30.0, default_timeout=_TIMEOUT)
        self._client_api = _ProxyPeer(limit_per_host=16, keepalive_timeout=30.0, default_timeout=_TIMEOUT)
        self._volumes: dict[str, tuple[float, list[dict[str, Any]]]] = {}
        self._usage: dict[uuid.UUID, tuple[float, dict[str, Any]]] = {}

    # --- plumbing ---------------------------------------------------------------------------------

    def _proxy(self, name: str) -> StorageProxySection:
        cfg = self.proxies.get(name)
        if cfg is None:
            raise UnknownStorageHost(f"No storage proxy named {name!r} is configured.")
        return cfg

    async def request(
        self,
        proxy: str,
        method: str,
        path: str,
        body: StorageBody | Mapping[str, Any] | None = None,
        *,
        timeout: float | None = None,
    ) -> Any:
        """One call to ``proxy``'s manager API; the decoded JSON answer (None for 204)."""
        cfg = self._proxy(proxy)
        doc = body.to_wire() if isinstance(body, BaseModel) else dict(body) if body is not None else None
        return await self._manager_api.call(
            method,
            cfg.manager_api.rstrip("/") + path,
            doc,
            timeout=timeout or _TIMEOUT,
            headers={AUTH_HEADER: cfg.secret},
            target=proxy,
        )

    async def close(self) -> None:
        await self._manager_api.close()
        await self._client_api.close()

    # --- volumes and hosts ------------------------------------------------------------------------

    async def volumes(self, proxy: str) -> list[dict[str, Any]]:
        """The volumes of ``proxy`` (cached for a few seconds)."""
        hit = self._volumes.get(proxy)
        if hit is not None and hit[0] > time.monotonic():
            return hit[1]
        doc = await self.request(proxy, "GET", "/volumes")
        vols = [v for v in (doc or {}).get("volumes", []) if isinstance(v, dict) and isinstance(v.get("name"), str)]
        self._volumes[proxy] = (time.monotonic() + VOLUMES_TTL, vols)
        return vols

    async def all_hosts(self) -> dict[str, dict[str, Any]]:
        """Every host of every reachable proxy → its volume info (unreachable proxies are skipped)."""
        out: dict[str, dict[str, Any]] = {}
        for proxy in self.proxies:
            try:
                vols = await self.volumes(proxy)
            except ProblemError as e:
                log.warning("cannot list the volumes of storage proxy %s: %s", proxy, e.detail)
                continue
            for v in vols:
                out[f"{proxy}:{v['name']}"] = v
        return out

    async def check_host(self, host: str) -> None:
        """400 unless ``host`` names a volume of a configured proxy (503 if that proxy is down)."""
        proxy, volume = split_host(host)
        self._proxy(proxy)
        if not any(v["name"] == volume for v in await self.volumes(proxy)):
            raise UnknownStorageHost(f"The storage proxy {proxy!r} has no volume {volume!r}.")

    def client_url(self, host: str, op: str) -> str:
        """The client-facing URL of ``op`` (``upload`` / ``download``) on the proxy serving ``host``."""
        return f"{self._proxy(split_host(host)[0]).client_api}/{op}"

    # --- folders ----------------------------------------------------------------------------------

    async def _folder_call(
        self,
        host: str,
        method: str,
        path: str,
        model: type[FolderRef],
        vfid: uuid.UUID,
        *,
        timeout: float | None = None,
        **fields: Any,
    ) -> Any:
        proxy, volume = split_host(host)
        return await self.request(proxy, method, path, model(volume=volume, vfid=vfid.hex, **fields), timeout=timeout)

    async def create_folder(self, host: str, vfid: uuid.UUID, quota: int | None) -> None:
        await self._folder_call(host, "POST", "/folder/create", CreateFolder, vfid, options=FolderOptions(quota=quota))

    async def delete_folder(self, host: str, vfid: uuid.UUID) -> None:
        self._usage.pop(vfid, None)
        await self._folder_call(host, "POST", "/folder/delete", FolderRef, vfid, timeout=_LONG_TIMEOUT)

    async def clone_folder(self, src_host: str, src: uuid.UUID, dst_host: str, dst: uuid.UUID) -> None:
        proxy, volume = split_host(src_host)
        dst_proxy, dst_volume = split_host(dst_host)
        if dst_proxy != proxy:
            raise InvalidAPIParameters(
                f"A folder can only be cloned to a volume of the same storage proxy ({proxy!r})."
            )
        await self.request(
            proxy,
            "POST",
            "/folder/clone",
            CloneFolder(volume=volume, src_vfid=src.hex, dst_volume=dst_volume, dst_vfid=dst.hex),
            timeout=_LONG_TIMEOUT,
        )

    async def set_quota(self, host: str, vfid: uuid.UUID, size_bytes: int | None) -> None:
        await self._folder_call(host, "POST", "/folder/quota", SetQuota, vfid, size_bytes=size_bytes)

    async def mount_path(self, host: str, vfid: uuid.UUID) -> str:
        doc = await self._folder_call(host, "GET", "/folder/mount", FolderRef, vfid)
        path = (doc or {}).get("path")
        if not isinstance(path, str) or not path:
            raise StorageProxyFailed("The storage proxy answered no mount path.")
        return path

    async def usage(self, host: str, vfid: uuid.UUID) -> dict[str, Any]:
        """``{"file_count", "used_bytes"}`` of a folder (cached for a few seconds)."""
        hit = self._usage.get(vfid)
        if hit is not None and hit[0] > time.monotonic():
            return hit[1]
        doc = await self._folder_call(host, "GET", "/folder/usage", FolderRef, vfid) or {}
        self._usage[vfid] = (time.monotonic() + USAGE_TTL, doc)
        if len(self._usage) > 10000:
            now = time.monotonic()
            self._usage = {k: v for k, v in self._usage.items() if v[0] > now}
        return dict(doc)

    # --- files ------------------------------------------------------------------------------------

    async def list_files(self, host: str, vfid: uuid.UUID, relpath: str) -> tuple[list[dict[str, Any]], bool]:
        """The entries of ``relpath`` as File Objects, and whether the proxy cut the listing short."""
        doc = await self._folder_call(host, "POST", "/folder/file/list", ListBody, vfid, relpath=relpath) or {}
        return [file_entry(i) for i in doc.get("items", []) if isinstance(i, dict)], bool(doc.get("truncated"))

    async def mkdir(self, host: str, vfid: uuid.UUID, relpath: str, *, parents: bool, exist_ok: bool) -> None:
        self._usage.pop(vfid, None)
        await self._folder_call(
            host, "POST", "/folder/file/mkdir", MkdirBody, vfid, relpath=relpath, parents=parents, exist_ok=exist_ok
        )

    async def rename_file(self, host: str, vfid: uuid.UUID, relpath: str, new_name: str) -> None:
        await self._folder_call(
            host, "POST", "/folder/file/rename", RenameBody, vfid, relpath=relpath, new_name=new_name
        )

    async def move_file(self, host: str, vfid: uuid.UUID, src: str, dst: str) -> None:
        await self._folder_call(host, "POST", "/folder/file/move", MoveBody, vfid, src_relpath=src, dst_relpath=dst)

    async def delete_files(self, host: str, vfid: uuid.UUID, relpaths: list[str], *, recursive: bool) -> None:
        self._usage.pop(vfid, None)
        await self._folder_call(
            host, "POST", "/folder/file/delete", DeleteBody, vfid, relpaths=relpaths, recursive=recursive
        )

    async def upload_token(self, host: str, vfid: uuid.UUID, relpath: str, size: int) -> str:
        self._usage.pop(vfid, None)
        doc = await self._folder_call(host, "POST", "/folder/file/upload", UploadBody, vfid, relpath=relpath, size=size)
        return _token(doc)

    async def download_token(self, host: str, vfid: uuid.UUID, relpath: str, *, archive: bool) -> str:
        doc = await self._folder_call(
            host, "POST", "/folder/file/download", DownloadBody, vfid, relpath=relpath, archive=archive
        )
        return _token(doc)

    # --- the client-facing API, for the manager's own transfers (the v4 upload/download routes) --------

    def _client_url(self, host: str, op: str) -> tuple[str, str]:
        proxy = split_host(host)[0]
        return proxy, self._proxy(proxy).client_api.rstrip("/") + op

    async def _client_call(
        self,
        host: str,
        method: str,
        path: str,
        token: str,
        headers: Mapping[str, str] | None = None,
        content: bytes | None = None,
    ) -> PeerAnswer:
        proxy, url = self._client_url(host, path)
        answer = await self._client_api.request(
            method, url, params={"token": token}, headers=headers, data=content, target=proxy
        )
        if answer.status >= 400:
            raise self._client_api.refused(proxy, method, url, answer)
        return answer

    async def put_file(self, host: str, vfid: uuid.UUID, relpath: str, content: bytes) -> None:
        """Write ``content`` to ``relpath`` (an upload token, then a tus creation and one ``PATCH``)."""
        token = await self.upload_token(host, vfid, relpath, len(content))
        tus = {"Tus-Resumable": "1.0.0"}
        await self._client_call(host, "POST", "/upload", token, {**tus, "Upload-Length": str(len(content))})
        if content:
            await self._client_call(
                host,
                "PATCH",
                "/upload",
                token,
                {**tus, "Upload-Offset": "0", "Content-Type": "application/offset+octet-stream"},
                content,
            )
        self._usage.pop(vfid, None)

    async def file_size(self, host: str, token: str) -> int:
        """The size of the file a download token names (``HEAD`` on the proxy)."""
        answer = await self._client_call(host, "HEAD", "/download", token)
        try:
            return int(answer.headers.get("content-length", ""))
        except ValueError:
            raise StorageProxyFailed("The storage proxy answered no Content-Length for a download.") from None

    async def stream_file(self, host: str, token: str) -> AsyncIterator[bytes]:
        """The bytes of the file a download token names, as the proxy sends them."""
        proxy, url = self._client_url(host, "/download")
        async for chunk in self._client_api.stream(
            "GET", url, params={"token": token}, timeout=_LONG_TIMEOUT, target=proxy
        ):
            yield chunk


def _token(doc: Any) -> str:
    token = (doc or {}).get("token") if isinstance(doc, dict) else None
    if not isinstance(token, str) or not token:
        raise StorageProxyFailed("The storage proxy answered no token.")
    return token
