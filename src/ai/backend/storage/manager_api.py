"""The manager-facing API (``[api.manager]``, port 6022): folder and file operations, transfer tokens.

Every request must carry ``X-BackendAI-Storage-Auth-Token: <[api.manager].secret>`` (else 403). Bodies are
JSON (also on the ``GET`` routes, as upstream does; query parameters are accepted there too).
"""

from __future__ import annotations

import json
import logging
from typing import Any, TypeVar

from fastapi import FastAPI, Request
from fastapi.responses import Response
from pydantic import BaseModel

from ai.backend.common.contracts import parse_wire
from ai.backend.common.contracts.storage import (
    AUTH_HEADER,
    CloneFolder,
    CreateFolder,
    DeleteBody,
    DownloadBody,
    FolderRef,
    ListBody,
    MkdirBody,
    MoveBody,
    RenameBody,
    SetQuota,
    UploadBody,
)
from ai.backend.common.logs import RequestIdMiddleware
from ai.backend.common.metrics import MetricsMiddleware
from ai.backend.common.problems import Forbidden, InvalidAPIParameters
from ai.backend.common.web import SharedSecretMiddleware, install_problem_handlers

from .context import StorageContext, get_ctx
from .tokens import issue_token
from .volumes.base import AbstractVolume, PayloadTooLarge, normalize_vfid
from .volumes.safepath import split_relpath

__all__ = ["AUTH_HEADER", "create_manager_app"]

log = logging.getLogger("ai.backend.storage")
API_VERSION = 1
M = TypeVar("M", bound=BaseModel)


async def _parse(request: Request, model: type[M]) -> M:
    raw = await request.body()
    data: Any
    if raw.strip():
        try:
            data = json.loads(raw)
        except (ValueError, UnicodeDecodeError, RecursionError):
            raise InvalidAPIParameters("the request body is not valid JSON (or is nested too deeply)") from None
    elif request.method in ("GET", "HEAD"):
        data = dict(request.query_params)
    else:
        data = {}
    return parse_wire(model, data, "request body")


def _folder(ctx: StorageContext, body: FolderRef) -> tuple[AbstractVolume, str]:
    return ctx.volume(body.volume), normalize_vfid(body.vfid)


def _no_content() -> Response:
    return Response(status_code=204)


def create_manager_app(ctx: StorageContext) -> FastAPI:
    """The manager-facing application (routes: see docs/storage-proxy.md)."""
    app = FastAPI(title="Backend.AI storage proxy (manager API)", docs_url=None, redoc_url=None, openapi_url=None)
    app.state.ctx = ctx
    install_problem_handlers(
        app, internal_title="Storage proxy error", internal_detail=lambda e: type(e).__name__, logger=log
    )
    app.add_middleware(
        SharedSecretMiddleware,
        header=AUTH_HEADER,
        secret=ctx.config.api.manager.secret,
        refusal=Forbidden(f"missing or wrong {AUTH_HEADER} header"),
    )
    app.add_middleware(RequestIdMiddleware)
    # Outside the secret check, which would refuse a scraper from an allowed address without it.
    access = ctx.config.metrics.access(ctx.config.api.manager.secret)
    app.add_middleware(MetricsMiddleware, metrics=lambda: ctx.metrics, access=access)
    sp = ctx.config.storage_proxy

    @app.get("/")
    async def status() -> dict[str, Any]:
        return {"status": "ok", "node_id": sp.node_id, "api_version": API_VERSION}

    @app.get("/volumes")
    async def volumes(request: Request) -> dict[str, Any]:
        return {"volumes": [v.info() for v in get_ctx(request).volumes.values()]}

    @app.post("/folder/create")
    async def create_folder(request: Request) -> Response:
        body = await _parse(request, CreateFolder)
        vol, vfid = _folder(ctx, body)
        await vol.create_folder(vfid, body.options.quota if body.options else None)
        return _no_content()

    @app.post("/folder/delete")
    async def delete_folder(request: Request) -> Response:
        body = await _parse(request, FolderRef)
        vol, vfid = _folder(ctx, body)
        await vol.delete_folder(vfid)
        return _no_content()

    @app.post("/folder/clone")
    async def clone_folder(request: Request) -> Response:
        body = await _parse(request, CloneFolder)
        src = ctx.volume(body.volume)
        dst = ctx.volume(body.dst_volume or body.volume)
        dst_vfid = body.dst_vfid or body.new_vfid
        if dst_vfid is None:
            raise InvalidAPIParameters("dst_vfid is required")
        src_vfid, dst_vfid = normalize_vfid(body.src_vfid, "src_vfid"), normalize_vfid(dst_vfid, "dst_vfid")
        if src is dst and src_vfid == dst_vfid:
            raise InvalidAPIParameters("cannot clone a folder onto itself")
        await src.clone_folder(src_vfid, dst, dst_vfid)
        return _no_content()

    @app.api_route("/folder/mount", methods=["GET", "POST"])
    async def mount(request: Request) -> dict[str, Any]:
        vol, vfid = _folder(ctx, await _parse(request, FolderRef))
        return {"path": await vol.mount_path(vfid)}

    @app.api_route("/folder/usage", methods=["GET", "POST"])
    async def usage(request: Request) -> dict[str, Any]:
        vol, vfid = _folder(ctx, await _parse(request, FolderRef))
        u = await vol.usage(vfid)
        return {"file_count": u.file_count, "used_bytes": u.used_bytes}

    @app.get("/folder/quota")
    async def get_quota(request: Request) -> dict[str, Any]:
        vol, vfid = _folder(ctx, await _parse(request, FolderRef))
        return {"size_bytes": await vol.get_quota(vfid)}

    @app.post("/folder/quota")
    async def set_quota(request: Request) -> Response:
        body = await _parse(request, SetQuota)
        vol, vfid = _folder(ctx, body)
        await vol.set_quota(vfid, body.size_bytes)
        return _no_content()

    @app.post("/folder/file/mkdir")
    async def mkdir(request: Request) -> Response:
        body = await _parse(request, MkdirBody)
        vol, vfid = _folder(ctx, body)
        await vol.mkdir(vfid, body.relpath, parents=body.parents, exist_ok=body.exist_ok)
        return _no_content()

    @app.post("/folder/file/list")
    async def list_files(request: Request) -> dict[str, Any]:
        body = await _parse(request, ListBody)
        vol, vfid = _folder(ctx, body)
        items, truncated = await vol.list_dir(vfid, body.relpath, sp.scandir_limit)
        return {"items": items, "truncated": truncated}

    @app.post("/folder/file/rename")
    async def rename(request: Request) -> Response:
        body = await _parse(request, RenameBody)
        vol, vfid = _folder(ctx, body)
        await vol.rename(vfid, body.relpath, body.new_name)
        return _no_content()

    @app.post("/folder/file/move")
    async def move(request: Request) -> Response:
        body = await _parse(request, MoveBody)
        vol, vfid = _folder(ctx, body)
        await vol.move(vfid, body.src_relpath, body.dst_relpath)
        return _no_content()

    @app.post("/folder/file/delete")
    async def delete_files(request: Request) -> Response:
        body = await _parse(request, DeleteBody)
        vol, vfid = _folder(ctx, body)
        await vol.delete_files(vfid, list(body.relpaths), recursive=body.recursive)
        return _no_content()

    @app.post("/folder/file/upload")
    async def upload(request: Request) -> dict[str, Any]:
        body = await _parse(request, UploadBody)
        vol, vfid = _folder(ctx, body)
        if body.size > sp.max_upload_size:
            raise PayloadTooLarge(f"{body.size} bytes is more than max-upload-size ({sp.max_upload_size})")
        relpath = await vol.check_upload(vfid, body.relpath, body.size)
        claims = {"op": "upload", "volume": vol.name, "vfid": vfid, "relpath": relpath, "size": body.size}
        return {"token": issue_token(claims, sp.secret, sp.session_expire)}

    @app.post("/folder/file/download")
    async def download(request: Request) -> dict[str, Any]:
        body = await _parse(request, DownloadBody)
        vol, vfid = _folder(ctx, body)
        target = await vol.open_download(vfid, body.relpath)
        is_dir = target.is_dir
        target.close()
        if is_dir and not body.archive:
            raise InvalidAPIParameters(
                f"{body.relpath or 'the folder root'} is a directory: set archive=true to download it as a zip"
            )
        relpath = "/".join(split_relpath(body.relpath))
        claims = {"op": "download", "volume": vol.name, "vfid": vfid, "relpath": relpath, "archive": body.archive}
        return {"token": issue_token(claims, sp.secret, sp.session_expire)}

    return app
