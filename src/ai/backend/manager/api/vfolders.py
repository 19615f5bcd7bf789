"""``/folders``: virtual folders, their files (through the storage proxies), invitations, sharing and cloning.

Parameters come from the JSON body or, for every method, the query string (§14 items 8 and 36). Folder ids
are answered as hyphenated UUIDs and accepted in any UUID spelling; ``:name`` may be a folder's name or id.
Who may do what: :mod:`ai.backend.manager.vfolders`. The files themselves never pass through the manager:
the manager checks the caller's rights and asks the folder's storage proxy to do the work, or for a
short-lived token the client takes to the proxy's upload/download URL.
"""

from __future__ import annotations

import json
import uuid
from typing import Any

from fastapi import APIRouter, Depends, Request, Response
from fastapi.responses import JSONResponse
from sqlalchemy import delete, select
from sqlalchemy.exc import IntegrityError
from sqlalchemy.ext.asyncio import AsyncSession

from ai.backend.common.problems import Forbidden, InvalidAPIParameters, NotFound, ProblemError
from ai.backend.common.types import BinarySize, SlotTypeError

from ..auth import AuthContext
from ..bgtask import ProgressReporter
from ..models import ProjectRow, UserRow, VFolderInvitationRow, VFolderPermissionRow, VFolderRow, group_members
from ..models.base import utcnow
from ..storage_client import StorageClient, split_host
from ..vfolders import (
    Access,
    VFolderBusy,
    VFolderExists,
    VFolderNotFound,
    accessible,
    all_folders,
    allowed_hosts,
    check_count_limit,
    check_file_name,
    check_folder_name,
    check_host_allowed,
    check_name_free,
    check_permission,
    check_relpath,
    check_usage_mode,
    find_folder,
    folder_item,
    folder_quota,
    member_group_ids,
    parse_bool,
    parse_int,
    parse_str_list,
    parse_uuid,
    policy_of,
    sessions_using,
)
from .bodies import (
    DocumentedRoute,
    Field,
    LaterBool,
    LaterInt,
    LaterStr,
    LaterStrOrInt,
    LaterStrs,
    RawParams,
    body_of,
    given,
)
from .deps import auth_required, manager_context

router = APIRouter(prefix="/folders", route_class=DocumentedRoute)


# --- parameters (documented here, checked by the handlers and the helpers of ..vfolders) -------------------


class GroupParams(RawParams):
    group_id: LaterStr = Field(None, description="A project (group) id or name.")
    group: LaterStr = Field(None, description="The same as group_id (older clients).")


class ListFoldersParams(GroupParams):
    all: LaterBool = Field(None, description="Every folder (superadmins).")


class CreateFolderBody(GroupParams):
    name: LaterStr = None
    host: LaterStr = None
    folder_host: LaterStr = None
    usage_mode: LaterStr = Field(None, json_schema_extra={"enum": ["general", "model", "data"]})
    permission: LaterStr = Field(None, json_schema_extra={"enum": ["ro", "rw", "wd"]})
    cloneable: LaterBool = None
    quota: LaterStrOrInt = Field(None, description="Bytes, or a size such as 10g.")
    unmanaged_path: LaterStr = None


class SharedListParams(RawParams):
    vfolder_id: LaterStr = None


class UpdateSharedBody(RawParams):
    vfolder: LaterStr = None
    user: LaterStr = None
    perm: LaterStr = None


class FolderIdBody(RawParams):
    id: LaterStr = None


class RenameFolderBody(RawParams):
    new_name: LaterStr = None


class UpdateOptionsBody(RawParams):
    permission: LaterStr = None
    cloneable: LaterBool = None


class ListFilesParams(RawParams):
    path: LaterStr = None
    folder_path: LaterStr = None


class RequestUploadBody(RawParams):
    path: LaterStr = None
    size: LaterInt = None


class RequestDownloadBody(RawParams):
    path: LaterStr = None
    archive: LaterBool = None


class MkdirBody(RawParams):
    path: LaterStrs = None
    parents: LaterBool = None
    exist_ok: LaterBool = None


class DeleteFilesBody(RawParams):
    files: LaterStrs = None
    recursive: LaterBool = None


class RenameFileBody(RawParams):
    target_path: LaterStr = None
    new_name: LaterStr = None


class MoveFileBody(RawParams):
    src: LaterStr = None
    src_path: LaterStr = None
    dst: LaterStr = None
    dst_path: LaterStr = None


class PermissionParams(RawParams):
    perm: LaterStr = Field(None, json_schema_extra={"enum": ["ro", "rw", "wd"]})
    permission: LaterStr = Field(None, json_schema_extra={"enum": ["ro", "rw", "wd"]})


class InviteBody(PermissionParams):
    emails: LaterStrs = None
    user_ids: LaterStrs = None


class InvitationRefBody(RawParams):
    inv_id: LaterStr = None
    invitation_id: LaterStr = None


class UpdateInvitationBody(InvitationRefBody, PermissionParams):
    pass


class ShareBody(PermissionParams):
    emails: LaterStrs = None


class UnshareBody(RawParams):
    emails: LaterStrs = None


class CloneBody(RawParams):
    target_name: LaterStr = None
    usage_mode: LaterStr = None
    permission: LaterStr = None
    cloneable: LaterBool = None
    target_host: LaterStr = None
    folder_host: LaterStr = None


class InvitationNotFound(NotFound):
    slug, title = "vfolder-invitation-not-found", "No such invitation"


def _storage(request: Request) -> StorageClient:
    return manager_context(request).storage


def _db(request: Request) -> AsyncSession:
    session: AsyncSession = manager_context(request).db()
    return session


async def _find(request: Request, ctx: AuthContext, name: str) -> Access:
    async with _db(request) as db:
        return await find_folder(db, ctx, name)


def _text(body: dict[str, Any], key: str, *aliases: str) -> str | None:
    for k in (key, *aliases):
        value = body.get(k)
        if value is not None:
            if not isinstance(value, str):
                raise InvalidAPIParameters(f"'{k}' must be a string.")
            return value
    return None


def _quota(body: dict[str, Any]) -> int | None:
    raw = body.get("quota")
    if raw is None or raw == "":
        return None
    if isinstance(raw, str):
        try:
            return max(int(BinarySize.parse(raw)), 0)
        except SlotTypeError as e:
            raise InvalidAPIParameters(f"'quota': {e}.") from None
    return parse_int(body, "quota")


async def _resolve_group(db: AsyncSession, ctx: AuthContext, ref: str) -> ProjectRow:
    """A group by id or by name (in the caller's domain); 404 when unknown."""
    group: ProjectRow | None = None
    try:
        group = await db.get(ProjectRow, uuid.UUID(ref))
    except ValueError:
        group = (
            await db.execute(
                select(ProjectRow).where(ProjectRow.name == ref, ProjectRow.domain_name == ctx.domain_name)
            )
        ).scalar_one_or_none()
    if group is None or (not ctx.is_superadmin and group.domain_name != ctx.domain_name):
        raise NotFound(f"No group {ref!r} in your domain.")
    return group


async def _reload(request: Request, ctx: AuthContext, vfid: uuid.UUID) -> dict[str, Any]:
    async with _db(request) as db:
        return folder_item(await find_folder(db, ctx, str(vfid)))


# --- listing and hosts -----------------------------------------------------------------------------------


@router.get("")
async def list_folders(
    request: Request,
    ctx: AuthContext = Depends(auth_required),
    params: ListFoldersParams = Depends(body_of(ListFoldersParams)),
) -> JSONResponse:
    """The caller's folders: own, shared with the caller and of the caller's groups (``all``: every folder)."""
    body = given(params)
    list_all = parse_bool(body, "all", False)
    raw_gid = body.get("group_id", body.get("group"))
    gid = parse_uuid(raw_gid, "group_id") if raw_gid not in (None, "") else None
    if list_all and not ctx.is_superadmin:
        raise Forbidden("Only superadmins may list every folder ('all').")
    async with _db(request) as db:
        found = await (all_folders if list_all else accessible)(db, ctx, group_id=gid)
    return JSONResponse([folder_item(a) for a in found])


@router.get("/_/hosts")
async def list_hosts(
    request: Request, ctx: AuthContext = Depends(auth_required), params: GroupParams = Depends(body_of(GroupParams))
) -> JSONResponse:
    """The hosts the caller may create folders on, and the default one."""
    body = given(params)
    raw_gid = body.get("group_id", body.get("group"))
    storage = _storage(request)
    existing = await storage.all_hosts()
    async with _db(request) as db:
        gid = None
        if raw_gid not in (None, ""):
            gid = (await _resolve_group(db, ctx, str(raw_gid))).id
            if not ctx.is_admin and gid not in await member_group_ids(db, ctx.user_uuid):
                raise NotFound(f"No group {raw_gid!r} that you are a member of.")
        allowed = set(existing) if ctx.is_superadmin else await allowed_hosts(db, ctx, gid) & set(existing)
    default: str | None = manager_context(request).config.manager.default_vfolder_host
    if default not in allowed:
        default = min(allowed) if allowed else None
    return JSONResponse(
        {
            "default": default,
            "allowed": sorted(allowed),
            "volume_info": {
                h: {"backend": existing[h].get("backend"), "capabilities": existing[h].get("capabilities", [])}
                for h in sorted(allowed)
            },
        }
    )


@router.get("/_/all-hosts")
@router.get("/_/all_hosts")
async def list_all_hosts(request: Request, ctx: AuthContext = Depends(auth_required)) -> JSONResponse:
    """Every host of every reachable storage proxy (superadmins)."""
    if not ctx.is_superadmin:
        raise Forbidden("Only superadmins may list every storage host.")
    existing = await _storage(request).all_hosts()
    default = manager_context(request).config.manager.default_vfolder_host
    return JSONResponse({"default": default if default in existing else None, "allowed": sorted(existing)})


@router.get("/_/allowed-types")
@router.get("/_/allowed_types")
async def list_allowed_types(ctx: AuthContext = Depends(auth_required)) -> JSONResponse:
    """The ownership types of folders this server creates."""
    return JSONResponse(["user", "group"])


# --- creating ------------------------------------------------------------------------------------------


@router.post("")
async def create(
    request: Request,
    ctx: AuthContext = Depends(auth_required),
    params: CreateFolderBody = Depends(body_of(CreateFolderBody)),
) -> JSONResponse:
    """Create a folder (a group folder with ``group_id``; domain admins and superadmins only)."""
    body = given(params)
    name = check_folder_name(body.get("name"))
    host = _text(body, "host", "folder_host") or manager_context(request).config.manager.default_vfolder_host
    usage_mode = check_usage_mode(body.get("usage_mode"))
    permission = check_permission(body.get("permission"), default="rw")
    cloneable = parse_bool(body, "cloneable", False)
    requested_quota = _quota(body)
    if body.get("unmanaged_path"):
        raise InvalidAPIParameters("Unmanaged folders ('unmanaged_path') are not supported.")
    group_ref = _text(body, "group_id", "group")
    storage = _storage(request)
    async with _db(request) as db:
        group = await _resolve_group(db, ctx, group_ref) if group_ref else None
        if group is not None and not (
            ctx.is_superadmin or (ctx.role == "admin" and group.domain_name == ctx.domain_name)
        ):
            raise Forbidden(
                "Only domain admins (for the groups of their domain) and superadmins may create group folders."
            )
        await storage.check_host(host)
        await check_host_allowed(db, ctx, host, group.id if group else None)
        policy = await policy_of(db, ctx)
        if group is None:
            await check_count_limit(db, ctx, policy)
            await check_name_free(db, name, user=ctx.user_uuid)
        else:
            await check_name_free(db, name, group=group.id)
        quota = folder_quota(requested_quota, policy)
        vf = VFolderRow(
            host=host,
            name=name,
            usage_mode=usage_mode,
            permission=permission,
            ownership_type="group" if group else "user",
            user=None if group else ctx.user_uuid,
            group=group.id if group else None,
            creator=ctx.email,
            cloneable=cloneable,
            status="performing",
            quota=quota,
        )
        db.add(vf)
        try:
            await db.commit()
        except IntegrityError:
            raise VFolderExists(f"A folder named {name!r} already exists.") from None
    try:
        await storage.create_folder(host, vf.id, quota)
    except BaseException:
        async with _db(request) as db:
            await db.execute(delete(VFolderRow).where(VFolderRow.id == vf.id))
            await db.commit()
        raise
    async with _db(request) as db:
        row = await db.get(VFolderRow, vf.id)
        assert row is not None
        row.status = vf.status = "ready"
        await db.commit()
    owner = Access(vf, "wd", True, True, None if group else ctx.email, group.name if group else None)
    return JSONResponse(folder_item(owner), status_code=201)


# --- one folder --------------------------------------------------------------------------------------


@router.get("/_/shared")
async def list_shared(
    request: Request,
    ctx: AuthContext = Depends(auth_required),
    params: SharedListParams = Depends(body_of(SharedListParams)),
) -> JSONResponse:
    """Users that the caller's folders (those the caller manages) are shared with."""
    body = given(params)
    raw = body.get("vfolder_id")
    async with _db(request) as db:
        managed = [a for a in await accessible(db, ctx) if a.manage]
        if raw not in (None, ""):
            vid = parse_uuid(raw, "vfolder_id")
            managed = [a for a in managed if a.vf.id == vid]
            if not managed:
                raise VFolderNotFound(f"No folder {raw!r} that you manage.")
        by_id = {a.vf.id: a for a in managed}
        rows = (
            (
                await db.execute(
                    select(VFolderPermissionRow, UserRow.email)
                    .join(UserRow, UserRow.uuid == VFolderPermissionRow.user)
                    .where(VFolderPermissionRow.vfolder.in_(list(by_id)))
                    .order_by(UserRow.email)
                )
            ).all()
            if by_id
            else []
        )
    out = []
    for perm, email in rows:
        vf = by_id[perm.vfolder].vf
        to = {"uuid": str(perm.user), "email": email}
        out.append(
            {
                "vfolder_id": str(vf.id),
                "vfolder_name": vf.name,
                "status": vf.status,
                "owner": str(vf.user or vf.group),
                "type": vf.ownership_type,
                "shared_by": ctx.email,
                "shared_to": to,
                "shared-to": to,
                "perm": perm.permission,
            }
        )
    return JSONResponse(out)


@router.post("/_/shared")
async def update_shared(
    request: Request,
    ctx: AuthContext = Depends(auth_required),
    params: UpdateSharedBody = Depends(body_of(UpdateSharedBody)),
) -> JSONResponse:
    """Change (``perm``) or remove (``perm: null``) the permission of a user sharing one of the caller's folders."""
    body = given(params)
    if body.get("vfolder") in (None, "") or body.get("user") in (None, ""):
        raise InvalidAPIParameters("'vfolder' and 'user' (UUIDs) are required.")
    vid = parse_uuid(body["vfolder"], "vfolder")
    uid = parse_uuid(body["user"], "user")
    perm = check_permission(body["perm"], "perm") if body.get("perm") is not None else None
    async with _db(request) as db:
        if not any(a.vf.id == vid and a.manage for a in await accessible(db, ctx)):
            raise VFolderNotFound(f"No folder {str(vid)!r} that you manage.")
        row = await db.get(VFolderPermissionRow, (vid, uid))
        if row is None:
            raise NotFound(f"The folder is not shared with user {str(uid)!r}.")
        if perm is None:
            await db.delete(row)
        else:
            row.permission = perm
        await db.commit()
    return JSONResponse({"msg": "success"})


@router.get("/{name}")
async def info(name: str, request: Request, ctx: AuthContext = Depends(auth_required)) -> JSONResponse:
    """The folder's details with its usage from the storage proxy (cached for a few seconds)."""
    a = await _find(request, ctx, name)
    item = folder_item(a)
    usage: dict[str, Any] = {}
    if a.vf.status == "ready":
        usage = await _storage(request).usage(a.vf.host, a.vf.id)
    files, used = usage.get("file_count"), usage.get("used_bytes")
    item.update(
        num_files=files,
        numFiles=files,
        used_bytes=used,
        cur_size=used,
        created=item["created_at"],
        usage={"file_count": files, "used_bytes": used},
        default_permission=a.vf.permission,
    )
    return JSONResponse(item)


async def _delete_folder(request: Request, a: Access) -> Response:
    a.require_manage("delete it")
    a.require_status("ready")
    vf = a.vf
    async with _db(request) as db:
        users = await sessions_using(db, [vf.id])
        if users:
            raise VFolderBusy(
                f"The folder {vf.name!r} is mounted by active sessions ({', '.join(users[:5])}); terminate them first."
            )
        row = await db.get(VFolderRow, vf.id)
        if row is None or row.status != "ready":
            raise VFolderBusy(f"The folder {vf.name!r} is busy; try again later.")
        row.status = "deleting"
        await db.commit()
    try:
        await _storage(request).delete_folder(vf.host, vf.id)
    except NotFound:
        pass  # already gone from the volume
    except BaseException:
        async with _db(request) as db:
            row = await db.get(VFolderRow, vf.id)
            if row is not None:
                row.status = "ready"
                await db.commit()
        raise
    async with _db(request) as db:
        await db.execute(delete(VFolderInvitationRow).where(VFolderInvitationRow.vfolder == vf.id))
        await db.execute(delete(VFolderPermissionRow).where(VFolderPermissionRow.vfolder == vf.id))
        await db.execute(delete(VFolderRow).where(VFolderRow.id == vf.id))
        await db.commit()
    return Response(status_code=204)


@router.delete("/{name}")
async def delete_folder(name: str, request: Request, ctx: AuthContext = Depends(auth_required)) -> Response:
    """Delete the folder and all its files (refused while an active session mounts it)."""
    return await _delete_folder(request, await _find(request, ctx, name))


@router.delete("")
async def delete_by_id(
    request: Request, ctx: AuthContext = Depends(auth_required), params: FolderIdBody = Depends(body_of(FolderIdBody))
) -> Response:
    """``DELETE /folders {"id"}``: delete a folder by id (the SDK's ``delete_by_id``)."""
    body = given(params)
    if body.get("id") in (None, ""):
        raise InvalidAPIParameters("'id' (the folder id) is required.")
    return await _delete_folder(request, await _find(request, ctx, str(parse_uuid(body["id"], "id"))))


@router.post("/{name}/rename")
async def rename(
    name: str,
    request: Request,
    ctx: AuthContext = Depends(auth_required),
    params: RenameFolderBody = Depends(body_of(RenameFolderBody)),
) -> JSONResponse:
    """Rename the folder (``new_name``); 201 as documented."""
    body = given(params)
    new_name = check_folder_name(body.get("new_name"), "new_name")
    async with _db(request) as db:
        a = await find_folder(db, ctx, name)
        a.require_manage("rename it")
        a.require_status("ready")
        await check_name_free(db, new_name, user=a.vf.user, group=a.vf.group, exclude=a.vf.id)
        row = await db.get(VFolderRow, a.vf.id)
        assert row is not None
        row.name = new_name
        try:
            await db.commit()
        except IntegrityError:
            raise VFolderExists(f"A folder named {new_name!r} already exists.") from None
    return JSONResponse(await _reload(request, ctx, a.vf.id), status_code=201)


@router.post("/{name}/update-options")
async def update_options(
    name: str,
    request: Request,
    ctx: AuthContext = Depends(auth_required),
    params: UpdateOptionsBody = Depends(body_of(UpdateOptionsBody)),
) -> JSONResponse:
    """Change the folder's default share ``permission`` and/or ``cloneable``."""
    body = given(params)
    perm = check_permission(body["permission"]) if body.get("permission") is not None else None
    cloneable = parse_bool(body, "cloneable", False) if body.get("cloneable") is not None else None
    if perm is None and cloneable is None:
        raise InvalidAPIParameters("Give 'permission' and/or 'cloneable'.")
    async with _db(request) as db:
        a = await find_folder(db, ctx, name)
        a.require_manage("change its options")
        row = await db.get(VFolderRow, a.vf.id)
        assert row is not None
        if perm is not None:
            row.permission = perm
        if cloneable is not None:
            row.cloneable = cloneable
        await db.commit()
    return JSONResponse(await _reload(request, ctx, a.vf.id))


# --- files ---------------------------------------------------------------------------------------------


async def _for_files(request: Request, ctx: AuthContext, name: str, perm: str, action: str) -> Access:
    a = await _find(request, ctx, name)
    a.require(perm, action)
    a.require_status("ready")
    return a


@router.get("/{name}/files")
async def list_files(
    name: str,
    request: Request,
    ctx: AuthContext = Depends(auth_required),
    params: ListFilesParams = Depends(body_of(ListFilesParams)),
) -> JSONResponse:
    """The entries of ``path`` (default: the root) as Virtual Folder File Objects."""
    body = given(params)
    path = check_relpath(_text(body, "path", "folder_path") or "")
    a = await _for_files(request, ctx, name, "ro", "listing files")
    files, truncated = await _storage(request).list_files(a.vf.host, a.vf.id, path)
    # A JSON-encoded string, as upstream: both official CLIs json.loads() it (like the session file list).
    return JSONResponse({"files": json.dumps(files), "folder_path": path, "truncated": truncated})


@router.post("/{name}/request-upload")
async def request_upload(
    name: str,
    request: Request,
    ctx: AuthContext = Depends(auth_required),
    params: RequestUploadBody = Depends(body_of(RequestUploadBody)),
) -> JSONResponse:
    """A token and URL to upload ``size`` bytes to ``path`` on the folder's storage proxy (tus protocol)."""
    body = given(params)
    path = check_relpath(_text(body, "path"), allow_root=False)
    size = parse_int(body, "size", required=True)
    assert size is not None
    a = await _for_files(request, ctx, name, "rw", "uploading")
    storage = _storage(request)
    token = await storage.upload_token(a.vf.host, a.vf.id, path, size)
    return JSONResponse({"token": token, "url": storage.client_url(a.vf.host, "upload")})


@router.post("/{name}/request-download")
async def request_download(
    name: str,
    request: Request,
    ctx: AuthContext = Depends(auth_required),
    params: RequestDownloadBody = Depends(body_of(RequestDownloadBody)),
) -> JSONResponse:
    """A token and URL to download ``path`` (a directory as a zip with ``archive``) from the storage proxy."""
    body = given(params)
    path = check_relpath(_text(body, "path"))
    archive = parse_bool(body, "archive", False)
    a = await _for_files(request, ctx, name, "ro", "downloading")
    storage = _storage(request)
    token = await storage.download_token(a.vf.host, a.vf.id, path, archive=archive)
    return JSONResponse({"token": token, "url": storage.client_url(a.vf.host, "download")})


@router.post("/{name}/mkdir")
async def mkdir(
    name: str,
    request: Request,
    ctx: AuthContext = Depends(auth_required),
    params: MkdirBody = Depends(body_of(MkdirBody)),
) -> JSONResponse:
    """Create the directory ``path`` (or each of a list); ``parents`` (default true) and ``exist_ok``."""
    body = given(params)
    raw = body.get("path")
    paths = [check_relpath(p, allow_root=False) for p in (raw if isinstance(raw, list) else [raw])]
    if not paths:
        raise InvalidAPIParameters("'path' is required.")
    parents = parse_bool(body, "parents", True)
    exist_ok = parse_bool(body, "exist_ok", False)
    a = await _for_files(request, ctx, name, "rw", "creating directories")
    for p in paths:
        await _storage(request).mkdir(a.vf.host, a.vf.id, p, parents=parents, exist_ok=exist_ok)
    return JSONResponse({"results": paths}, status_code=201)


@router.delete("/{name}/delete-files")
@router.post("/{name}/delete-files")
async def delete_files(
    name: str,
    request: Request,
    ctx: AuthContext = Depends(auth_required),
    params: DeleteFilesBody = Depends(body_of(DeleteFilesBody)),
) -> JSONResponse:
    """Delete ``files`` (directories need ``recursive``)."""
    body = given(params)
    files = [check_relpath(p, "files", allow_root=False) for p in parse_str_list(body, "files")]
    if not files:
        raise InvalidAPIParameters("'files' (a list of paths) is required.")
    recursive = parse_bool(body, "recursive", False)
    a = await _for_files(request, ctx, name, "rw", "deleting files")
    await _storage(request).delete_files(a.vf.host, a.vf.id, files, recursive=recursive)
    return JSONResponse({})


@router.post("/{name}/rename-file")
async def rename_file(
    name: str,
    request: Request,
    ctx: AuthContext = Depends(auth_required),
    params: RenameFileBody = Depends(body_of(RenameFileBody)),
) -> JSONResponse:
    """Rename ``target_path`` to ``new_name`` (a name in the same directory)."""
    body = given(params)
    target = check_relpath(_text(body, "target_path"), "target_path", allow_root=False)
    new_name = check_file_name(_text(body, "new_name"))
    a = await _for_files(request, ctx, name, "rw", "renaming files")
    await _storage(request).rename_file(a.vf.host, a.vf.id, target, new_name)
    return JSONResponse({})


@router.post("/{name}/move-file")
async def move_file(
    name: str,
    request: Request,
    ctx: AuthContext = Depends(auth_required),
    params: MoveFileBody = Depends(body_of(MoveFileBody)),
) -> JSONResponse:
    """Move ``src`` to ``dst`` inside the folder."""
    body = given(params)
    src = check_relpath(_text(body, "src", "src_path"), "src", allow_root=False)
    dst = check_relpath(_text(body, "dst", "dst_path"), "dst", allow_root=False)
    a = await _for_files(request, ctx, name, "rw", "moving files")
    await _storage(request).move_file(a.vf.host, a.vf.id, src, dst)
    return JSONResponse({})


# --- invitations ---------------------------------------------------------------------------------------


def _invitation(inv: VFolderInvitationRow, vf_name: str) -> dict[str, Any]:
    return {
        "id": str(inv.id),
        "inviter": inv.inviter,
        "invitee": inv.invitee,
        "perm": inv.permission,
        "permission": inv.permission,
        "state": inv.state,
        "created_at": inv.created_at.isoformat(),
        "modified_at": inv.modified_at.isoformat() if inv.modified_at else None,
        "vfolder_id": str(inv.vfolder),
        "vfolder_name": vf_name,
    }


async def _users_by_email(db: AsyncSession, emails: list[str]) -> dict[str, UserRow]:
    rows = (
        (await db.execute(select(UserRow).where(UserRow.email.in_(emails), UserRow.status == "active"))).scalars().all()
    )
    found = {u.email: u for u in rows}
    missing = [e for e in emails if e not in found]
    if missing:
        raise NotFound(f"No active users with these e-mails: {', '.join(missing)}.")
    return found


@router.post("/{name}/invite")
async def invite(
    name: str,
    request: Request,
    ctx: AuthContext = Depends(auth_required),
    params: InviteBody = Depends(body_of(InviteBody)),
) -> JSONResponse:
    """Invite users (``emails``) to the caller's user folder with ``perm``; users already invited or sharing it
    are skipped."""
    body = given(params)
    perm = check_permission(body.get("perm", body.get("permission")), "perm", default="rw")
    emails = parse_str_list(body, "emails", "user_ids")
    if not emails:
        raise InvalidAPIParameters("'emails' (the invitees) is required.")
    async with _db(request) as db:
        a = await find_folder(db, ctx, name)
        a.require_manage("invite users")
        if ctx.email in emails:
            raise InvalidAPIParameters("You cannot invite yourself.")
        if a.vf.ownership_type != "user":
            raise InvalidAPIParameters("Group folders are not shared by invitation; use POST /folders/:name/share.")
        users = await _users_by_email(db, emails)
        sharing = set(
            (
                await db.execute(select(VFolderPermissionRow.user).where(VFolderPermissionRow.vfolder == a.vf.id))
            ).scalars()
        )
        pending = set(
            (
                await db.execute(
                    select(VFolderInvitationRow.invitee).where(
                        VFolderInvitationRow.vfolder == a.vf.id, VFolderInvitationRow.state == "pending"
                    )
                )
            ).scalars()
        )
        invited: list[str] = []
        for email in emails:
            u = users[email]
            if u.uuid in sharing or u.uuid == a.vf.user or email in pending:
                continue
            db.add(VFolderInvitationRow(vfolder=a.vf.id, inviter=ctx.email, invitee=email, permission=perm))
            invited.append(email)
        await db.commit()
    return JSONResponse({"invited_ids": invited})


async def _invitation_list(request: Request, cond: Any) -> JSONResponse:
    async with _db(request) as db:
        rows = (
            await db.execute(
                select(VFolderInvitationRow, VFolderRow.name)
                .join(VFolderRow, VFolderRow.id == VFolderInvitationRow.vfolder)
                .where(cond, VFolderInvitationRow.state == "pending")
                .order_by(VFolderInvitationRow.created_at)
            )
        ).all()
    return JSONResponse({"invitations": [_invitation(inv, vname) for inv, vname in rows]})


@router.get("/invitations/list")
async def invitations_received(request: Request, ctx: AuthContext = Depends(auth_required)) -> JSONResponse:
    """Pending invitations to the caller."""
    return await _invitation_list(request, VFolderInvitationRow.invitee == ctx.email)


@router.get("/invitations/list-sent")
@router.get("/invitations/list_sent")
async def invitations_sent(request: Request, ctx: AuthContext = Depends(auth_required)) -> JSONResponse:
    """Pending invitations the caller sent."""
    return await _invitation_list(request, VFolderInvitationRow.inviter == ctx.email)


def _inv_id(body: dict[str, Any], given: str | None = None) -> uuid.UUID:
    raw = given if given is not None else body.get("inv_id", body.get("invitation_id"))
    if raw in (None, ""):
        raise InvalidAPIParameters("'inv_id' (the invitation id) is required.")
    try:
        return uuid.UUID(str(raw))
    except ValueError:
        raise InvitationNotFound(f"No invitation {raw!r}.") from None


@router.post("/invitations/accept")
async def accept_invitation(
    request: Request,
    ctx: AuthContext = Depends(auth_required),
    params: InvitationRefBody = Depends(body_of(InvitationRefBody)),
) -> JSONResponse:
    """Accept an invitation: the caller gains its permission on the folder."""
    body = given(params)
    inv_id = _inv_id(body)
    async with _db(request) as db:
        inv = await db.get(VFolderInvitationRow, inv_id)
        if inv is None or inv.invitee != ctx.email or inv.state != "pending":
            raise InvitationNotFound(f"No pending invitation {str(inv_id)!r} to you.")
        vf = await db.get(VFolderRow, inv.vfolder)
        if vf is None:
            raise InvitationNotFound("The folder of this invitation no longer exists.")
        await check_name_free(db, vf.name, user=ctx.user_uuid, exclude=vf.id)
        row = await db.get(VFolderPermissionRow, (vf.id, ctx.user_uuid))
        if row is None:
            db.add(VFolderPermissionRow(vfolder=vf.id, user=ctx.user_uuid, permission=inv.permission))
        else:
            row.permission = inv.permission
        inv.state = "accepted"
        inv.modified_at = utcnow()
        await db.commit()
    return JSONResponse({"msg": f"You now share the folder {vf.name!r} with {inv.permission!r} permission."})


@router.delete("/invitations/delete")
@router.post("/invitations/delete")
async def delete_invitation(
    request: Request,
    ctx: AuthContext = Depends(auth_required),
    params: InvitationRefBody = Depends(body_of(InvitationRefBody)),
) -> JSONResponse:
    """Reject an invitation to the caller, or cancel one the caller sent."""
    body = given(params)
    inv_id = _inv_id(body)
    async with _db(request) as db:
        inv = await db.get(VFolderInvitationRow, inv_id)
        if inv is None or inv.state != "pending" or ctx.email not in (inv.invitee, inv.inviter):
            raise InvitationNotFound(f"No pending invitation {str(inv_id)!r} to or from you.")
        inv.state = "rejected" if inv.invitee == ctx.email else "canceled"
        inv.modified_at = utcnow()
        state = inv.state
        await db.commit()
    return JSONResponse({"msg": f"The invitation is {state}."})


@router.post("/invitations/update/{inv_id}")
async def update_invitation(
    inv_id: str,
    request: Request,
    ctx: AuthContext = Depends(auth_required),
    params: UpdateInvitationBody = Depends(body_of(UpdateInvitationBody)),
) -> JSONResponse:
    """Change the permission (``perm``) of a pending invitation the caller sent."""
    body = given(params)
    iid = _inv_id(body, inv_id)
    if body.get("perm", body.get("permission")) is None:
        raise InvalidAPIParameters("'perm' (the new permission) is required.")
    perm = check_permission(body.get("perm", body.get("permission")), "perm")
    async with _db(request) as db:
        inv = await db.get(VFolderInvitationRow, iid)
        if inv is None or inv.inviter != ctx.email or inv.state != "pending":
            raise InvitationNotFound(f"No pending invitation {inv_id!r} sent by you.")
        inv.permission = perm
        inv.modified_at = utcnow()
        await db.commit()
    return JSONResponse({"msg": f"The invitation now gives {perm!r} permission."})


@router.post("/{name}/leave")
async def leave(name: str, request: Request, ctx: AuthContext = Depends(auth_required)) -> JSONResponse:
    """Stop sharing a user folder someone shared with the caller (not a group folder, not one's own)."""
    async with _db(request) as db:
        a = await find_folder(db, ctx, name)
        if a.vf.ownership_type == "group":
            raise InvalidAPIParameters("Group folders cannot be left; they belong to your project.")
        if a.vf.user == ctx.user_uuid:
            raise InvalidAPIParameters("You own this folder; delete it instead of leaving it.")
        row = await db.get(VFolderPermissionRow, (a.vf.id, ctx.user_uuid))
        if row is None:
            raise VFolderNotFound(f"The folder {name!r} is not shared with you.")
        await db.delete(row)
        await db.commit()
    return JSONResponse({"msg": f"You left the folder {a.vf.name!r}."})


# --- sharing group folders -----------------------------------------------------------------------------


async def _group_folder(db: AsyncSession, ctx: AuthContext, name: str, action: str) -> Access:
    a = await find_folder(db, ctx, name)
    a.require_manage(action)
    if a.vf.ownership_type != "group":
        raise InvalidAPIParameters("Only group folders are shared directly; invite users to a user folder.")
    return a


@router.post("/{name}/share")
async def share(
    name: str,
    request: Request,
    ctx: AuthContext = Depends(auth_required),
    params: ShareBody = Depends(body_of(ShareBody)),
) -> JSONResponse:
    """Give members of the folder's group (``emails``) a ``permission`` that overrides the folder's default."""
    body = given(params)
    if body.get("permission", body.get("perm")) is None:
        raise InvalidAPIParameters("'permission' is required.")
    perm = check_permission(body.get("permission", body.get("perm")))
    emails = parse_str_list(body, "emails")
    if not emails:
        raise InvalidAPIParameters("'emails' is required.")
    async with _db(request) as db:
        a = await _group_folder(db, ctx, name, "share it")
        users = await _users_by_email(db, emails)
        members = set(
            (await db.execute(select(group_members.c.user_id).where(group_members.c.group_id == a.vf.group))).scalars()
        )
        outsiders = [e for e in emails if users[e].uuid not in members]
        if outsiders:
            raise NotFound(f"Not members of the folder's group: {', '.join(outsiders)}.")
        for email in emails:
            row = await db.get(VFolderPermissionRow, (a.vf.id, users[email].uuid))
            if row is None:
                db.add(VFolderPermissionRow(vfolder=a.vf.id, user=users[email].uuid, permission=perm))
            else:
                row.permission = perm
        await db.commit()
    return JSONResponse({"shared_emails": emails}, status_code=201)


@router.delete("/{name}/unshare")
@router.post("/{name}/unshare")
async def unshare(
    name: str,
    request: Request,
    ctx: AuthContext = Depends(auth_required),
    params: UnshareBody = Depends(body_of(UnshareBody)),
) -> JSONResponse:
    """Remove the overriding permissions of ``emails`` (they fall back to the folder's default)."""
    body = given(params)
    emails = parse_str_list(body, "emails")
    if not emails:
        raise InvalidAPIParameters("'emails' is required.")
    async with _db(request) as db:
        a = await _group_folder(db, ctx, name, "unshare it")
        rows = (
            await db.execute(
                select(VFolderPermissionRow, UserRow.email)
                .join(UserRow, UserRow.uuid == VFolderPermissionRow.user)
                .where(VFolderPermissionRow.vfolder == a.vf.id, UserRow.email.in_(emails))
            )
        ).all()
        for row, _ in rows:
            await db.delete(row)
        await db.commit()
    return JSONResponse({"unshared_emails": [email for _, email in rows]})


# --- cloning -------------------------------------------------------------------------------------------


@router.post("/{name}/clone")
async def clone(
    name: str,
    request: Request,
    ctx: AuthContext = Depends(auth_required),
    params: CloneBody = Depends(body_of(CloneBody)),
) -> JSONResponse:
    """Clone a cloneable folder into a new user folder of the caller; the copy runs as a background task
    (``bgtask_id``; the new folder is ``cloning`` until it is done)."""
    body = given(params)
    target_name = check_folder_name(body.get("target_name"), "target_name")
    usage_mode = check_usage_mode(body.get("usage_mode"))
    permission = check_permission(body.get("permission"), default="rw")
    cloneable = parse_bool(body, "cloneable", False)
    storage = _storage(request)
    async with _db(request) as db:
        src = await find_folder(db, ctx, name)
        if not src.vf.cloneable:
            raise Forbidden(f"The folder {src.vf.name!r} may not be cloned (it is not cloneable).")
        src.require_status("ready")
        target_host = _text(body, "target_host", "folder_host") or src.vf.host
        if split_host(target_host)[0] != split_host(src.vf.host)[0]:
            raise InvalidAPIParameters(
                f"A folder can only be cloned to a volume of its own storage proxy ({split_host(src.vf.host)[0]!r})."
            )
        await storage.check_host(target_host)
        await check_host_allowed(db, ctx, target_host, None)
        policy = await policy_of(db, ctx)
        await check_count_limit(db, ctx, policy)
        await check_name_free(db, target_name, user=ctx.user_uuid)
        quota = folder_quota(None, policy)
        vf = VFolderRow(
            host=target_host,
            name=target_name,
            usage_mode=usage_mode,
            permission=permission,
            ownership_type="user",
            user=ctx.user_uuid,
            creator=ctx.email,
            cloneable=cloneable,
            status="cloning",
            quota=quota,
        )
        db.add(vf)
        try:
            await db.commit()
        except IntegrityError:
            raise VFolderExists(f"A folder named {target_name!r} already exists.") from None
    state = manager_context(request)
    src_host, src_id, dst_id = src.vf.host, src.vf.id, vf.id

    async def run(progress: ProgressReporter) -> str:
        await progress.update(0, total=1, message=f"Cloning {src.vf.name!r} into {target_name!r}.")
        try:
            await storage.clone_folder(src_host, src_id, target_host, dst_id)
            await storage.set_quota(target_host, dst_id, quota)  # the clone starts with the source's quota
        except BaseException:
            async with state.db() as db:
                await db.execute(delete(VFolderRow).where(VFolderRow.id == dst_id))
                await db.commit()
            try:
                await storage.delete_folder(target_host, dst_id)
            except ProblemError:
                pass  # nothing was copied
            raise
        async with state.db() as db:
            row = await db.get(VFolderRow, dst_id)
            if row is not None:
                row.status = "ready"
            await db.commit()
        await progress.update(1, message="Cloned.")
        return f"The folder {target_name!r} is ready."

    task_id = await state.bgtasks.start(
        run, name="vfolder-clone", owner_access_key=ctx.access_key, owner_user=str(ctx.user_uuid)
    )
    item = folder_item(Access(vf, "wd", True, True, ctx.email, None))
    item.update(bgtask_id=task_id, task_id=task_id)
    return JSONResponse(item)
