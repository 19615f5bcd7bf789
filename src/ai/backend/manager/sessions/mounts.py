"""Which virtual folders a new session mounts, where, and with what permission.

The folders named in ``config.mounts`` must be reachable by the session's owner (own, shared with
them, or of their project) and ready; the owner's dot-named folders (``.local``, ``.ssh``...) are
mounted too, at ``/home/work/<name>``. A mount is read-only when the owner's permission is ``ro`` or
when ``ro`` was asked for in ``mount_options``; asking for more than the owner has is refused.
"""

from __future__ import annotations

import dataclasses
import uuid
from typing import Any

from sqlalchemy.ext.asyncio import AsyncSession

from ai.backend.common.problems import Conflict, Forbidden

from ..auth import AuthContext
from ..models import VFolderRow
from ..vfolders import PERM_RANK, Access, accessible
from .mount_paths import container_path


class FolderNotReady(Conflict):
    slug, title = "vfolder-not-ready", "The virtual folder is busy"


def owner_context(
    ctx: AuthContext, *, access_key: str, user_uuid: uuid.UUID, email: str, role: str, domain_name: str
) -> AuthContext:
    """The caller's context as seen from the session owner (an admin acting with ``owner_access_key``)."""
    if access_key == ctx.access_key:
        return ctx
    return dataclasses.replace(
        ctx,
        access_key=access_key,
        user_uuid=user_uuid,
        email=email,
        role=role,
        domain_name=domain_name,
        is_admin=role in ("admin", "superadmin"),
    )


async def resolve_mounts(
    db: AsyncSession,
    owner: AuthContext,
    names: list[str],
    paths: dict[str, str],
    perms: dict[str, str],
    group_id: uuid.UUID,
) -> list[dict[str, Any]]:
    """The session's mounts as ``[{vfid, name, host, mount_path, permission}]`` (4xx problems when refused)."""
    # Without folders asked for, only the owner's dot-folders (mounted automatically) matter: one query.
    reach = (
        await accessible(db, owner, where=VFolderRow.name.startswith("."), own_only=True)
        if not names
        else await accessible(db, owner)
    )

    # The same preference as folder lookups: own folders, then shared ones, then the project's.
    def pick(name: str) -> Access | None:
        for bucket in (
            [a for a in reach if a.vf.ownership_type == "user" and a.is_owner],
            [a for a in reach if a.vf.ownership_type == "user" and not a.is_owner],
            [a for a in reach if a.vf.ownership_type == "group" and a.vf.group == group_id],
            [a for a in reach if a.vf.ownership_type == "group"],
        ):
            for a in bucket:
                if a.vf.name == name or a.vf.id.hex == name or str(a.vf.id) == name:
                    return a
        return None

    out: list[dict[str, Any]] = []
    chosen: set[uuid.UUID] = set()
    for name in names:
        a = pick(name)
        if a is None:
            raise Forbidden(f"Cannot mount folder {name!r}: no such virtual folder that the session's owner may use.")
        out.append(_mount(a, paths[name], perms.get(name)))
        chosen.add(a.vf.id)
    taken = {m["mount_path"] for m in out}
    for a in reach:
        if a.vf.ownership_type == "user" and a.is_owner and a.vf.name.startswith(".") and a.vf.id not in chosen:
            path = container_path(a.vf.name, None)
            if path not in taken and a.vf.status == "ready":
                out.append(_mount(a, path, None))
    return out


def _mount(a: Access, path: str, asked: str | None) -> dict[str, Any]:
    if a.vf.status != "ready":
        raise FolderNotReady(f"Folder {a.vf.name!r} is {a.vf.status}; it cannot be mounted now.")
    perm = a.permission
    if asked is not None:
        if PERM_RANK[asked] > PERM_RANK[perm]:
            raise Forbidden(f"Folder {a.vf.name!r} is shared with you as {perm!r}; it cannot be mounted as {asked!r}.")
        perm = asked
    return {"vfid": a.vf.id.hex, "name": a.vf.name, "host": a.vf.host, "mount_path": path, "permission": perm}
