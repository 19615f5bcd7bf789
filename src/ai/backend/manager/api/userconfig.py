"""Per-user configuration: ``/user-config/dotfiles`` and ``/user-config/bootstrap-script``.

The wire format follows upstream 22.03: ``POST``/``PATCH`` take ``{"path", "data", "permission"}``
(``permission`` as an octal string like ``"755"``); ``GET`` lists ``[{"path", "permission", "data"}]`` or, with
``?path=``, answers one file; ``DELETE ?path=``. Admins may act for another user with ``owner_access_key``.
Limits and path rules are in :mod:`ai.backend.manager.userconfig`.
"""

from __future__ import annotations

from typing import Any

from fastapi import APIRouter, Depends
from sqlalchemy import select
from sqlalchemy.exc import IntegrityError

from ai.backend.common.problems import Conflict, InvalidAPIParameters, NotFound

from ..auth import AuthContext
from ..models import DotfileRow, KeyPairRow, UserRow
from ..models.base import utcnow
from ..registry import SessionRegistry
from ..userconfig import (
    MAX_DOTFILES,
    MAX_TOTAL_BYTES,
    check_bootstrap_script,
    check_dotfile_path,
    check_permission,
    dotfile_bytes,
)
from .bodies import AliasChoices, DocumentedRoute, Field, LaterStr, RequestModel, body_of
from .deps import auth_required, registry

router = APIRouter(prefix="/user-config", route_class=DocumentedRoute)


class OwnerParams(RequestModel):
    """Admins may act for another user's keypair."""

    null_is_absent = False  # the handlers check each value themselves, as they always did

    owner_access_key: LaterStr = None


class DotfileBody(OwnerParams):
    """A dotfile: its path under the home directory, its content and its mode (e.g. ``644``)."""

    path: LaterStr = None
    data: LaterStr = None
    permission: LaterStr = Field(
        None, description="The file mode in octal, e.g. 644.", validation_alias=AliasChoices("permission", "perm")
    )


class DotfilePathParams(OwnerParams):
    """Which dotfile (``?path=``)."""

    path: LaterStr = None


class BootstrapScriptBody(OwnerParams):
    """The bootstrap script ("" clears it)."""

    script: LaterStr = None


class DotfileNotFound(NotFound):
    slug, title = "dotfile-not-found", "No such dotfile"


class DotfileAlreadyExists(Conflict):
    slug, title = "dotfile-already-exists", "The dotfile already exists"


async def _owner_uuid(reg: SessionRegistry, ctx: AuthContext, body: dict[str, Any]) -> Any:
    oak = body.get("owner_access_key")
    if oak is not None and not isinstance(oak, str):
        raise InvalidAPIParameters("'owner_access_key' must be a string.")
    owner_ak = await reg.resolve_owner(ctx, oak)
    if owner_ak == ctx.access_key:
        return ctx.user_uuid
    async with reg.db() as db:
        return (await db.execute(select(KeyPairRow.user).where(KeyPairRow.access_key == owner_ak))).scalar_one()


def _data(body: dict[str, Any]) -> str:
    data = body.get("data")
    if not isinstance(data, str):
        raise InvalidAPIParameters("'data' (the file content as a string) is required.")
    return data


async def _save(reg: SessionRegistry, ctx: AuthContext, body: dict[str, Any], *, create: bool) -> None:
    """Create or update one dotfile, keeping the per-user count and size limits."""
    path = check_dotfile_path(body.get("path"))
    data = _data(body)
    perm = check_permission(body.get("permission", body.get("perm")))
    owner = await _owner_uuid(reg, ctx, body)
    async with reg.db() as db:
        # Lock the owner's row so that concurrent writes cannot overshoot the limits together.
        await db.execute(select(UserRow.uuid).where(UserRow.uuid == owner).with_for_update())
        rows = (await db.execute(select(DotfileRow).where(DotfileRow.user_uuid == owner))).scalars().all()
        current = next((r for r in rows if r.path == path), None)
        if create and current is not None:
            raise DotfileAlreadyExists(f"A dotfile {path!r} already exists; update it instead.")
        if not create and current is None:
            raise DotfileNotFound(f"There is no dotfile {path!r}.")
        if create and len(rows) >= MAX_DOTFILES:
            raise InvalidAPIParameters(f"You already have {len(rows)} dotfiles, the most allowed.")
        used = sum(dotfile_bytes(r.path, r.data) for r in rows if r is not current)
        if used + dotfile_bytes(path, data) > MAX_TOTAL_BYTES:
            raise InvalidAPIParameters(
                f"The dotfiles would take {used + dotfile_bytes(path, data)} bytes, more than the "
                f"{MAX_TOTAL_BYTES // 1024} KiB allowed per user ({used} bytes used by the others)."
            )
        if current is None:
            db.add(DotfileRow(user_uuid=owner, path=path, permission=perm, data=data))
        else:
            current.data = data
            current.permission = perm
            current.modified_at = utcnow()
        try:
            await db.commit()
        except IntegrityError:
            raise DotfileAlreadyExists(f"A dotfile {path!r} already exists; update it instead.") from None


@router.post("/dotfiles")
async def create_dotfile(
    ctx: AuthContext = Depends(auth_required),
    reg: SessionRegistry = Depends(registry),
    body: DotfileBody = Depends(body_of(DotfileBody)),
) -> dict[str, Any]:
    """Add a dotfile (409 if the path exists)."""
    await _save(reg, ctx, body.model_dump(), create=True)
    return {}


@router.patch("/dotfiles")
async def update_dotfile(
    ctx: AuthContext = Depends(auth_required),
    reg: SessionRegistry = Depends(registry),
    body: DotfileBody = Depends(body_of(DotfileBody)),
) -> dict[str, Any]:
    """Replace a dotfile's content and mode (404 if there is none at that path)."""
    await _save(reg, ctx, body.model_dump(), create=False)
    return {}


@router.get("/dotfiles", response_model=None)
async def list_or_get_dotfiles(
    ctx: AuthContext = Depends(auth_required),
    reg: SessionRegistry = Depends(registry),
    params: DotfilePathParams = Depends(body_of(DotfilePathParams)),
) -> list[dict[str, Any]] | dict[str, Any]:
    """All dotfiles, or the one at ``?path=``."""
    body = params.model_dump()
    owner = await _owner_uuid(reg, ctx, body)
    async with reg.db() as db:
        if body.get("path"):
            path = check_dotfile_path(body["path"])
            row = (
                await db.execute(select(DotfileRow).where(DotfileRow.user_uuid == owner, DotfileRow.path == path))
            ).scalar_one_or_none()
            if row is None:
                raise DotfileNotFound(f"There is no dotfile {path!r}.")
            # Upstream answers a single file with "perm"; "permission" matches the listing.
            return {"path": row.path, "permission": row.permission, "perm": row.permission, "data": row.data}
        rows = (
            (await db.execute(select(DotfileRow).where(DotfileRow.user_uuid == owner).order_by(DotfileRow.path)))
            .scalars()
            .all()
        )
    return [{"path": r.path, "permission": r.permission, "data": r.data} for r in rows]


@router.delete("/dotfiles")
async def delete_dotfile(
    ctx: AuthContext = Depends(auth_required),
    reg: SessionRegistry = Depends(registry),
    params: DotfilePathParams = Depends(body_of(DotfilePathParams)),
) -> dict[str, Any]:
    """Remove the dotfile at ``?path=``."""
    body = params.model_dump()
    path = check_dotfile_path(body.get("path"))
    owner = await _owner_uuid(reg, ctx, body)
    async with reg.db() as db:
        row = (
            await db.execute(select(DotfileRow).where(DotfileRow.user_uuid == owner, DotfileRow.path == path))
        ).scalar_one_or_none()
        if row is None:
            raise DotfileNotFound(f"There is no dotfile {path!r}.")
        await db.delete(row)
        await db.commit()
    return {"success": True}


@router.get("/bootstrap-script")
async def get_bootstrap_script(
    ctx: AuthContext = Depends(auth_required),
    reg: SessionRegistry = Depends(registry),
    params: OwnerParams = Depends(body_of(OwnerParams)),
) -> str:
    """The user's bootstrap script as a JSON string ("" when none is set)."""
    owner = await _owner_uuid(reg, ctx, params.model_dump())
    async with reg.db() as db:
        script = (await db.execute(select(UserRow.bootstrap_script).where(UserRow.uuid == owner))).scalar_one_or_none()
    return script or ""


@router.post("/bootstrap-script")
async def set_bootstrap_script(
    ctx: AuthContext = Depends(auth_required),
    reg: SessionRegistry = Depends(registry),
    params: BootstrapScriptBody = Depends(body_of(BootstrapScriptBody)),
) -> dict[str, Any]:
    """Set the script run in each new session that has no bootstrap script of its own ("" clears it)."""
    body = params.model_dump(exclude_unset=True)
    if "script" not in body:
        raise InvalidAPIParameters("'script' is required (an empty string clears it).")
    script = check_bootstrap_script(body["script"])
    owner = await _owner_uuid(reg, ctx, body)
    async with reg.db() as db:
        user = await db.get(UserRow, owner)
        assert user is not None
        user.bootstrap_script = script
        await db.commit()
    return {}
