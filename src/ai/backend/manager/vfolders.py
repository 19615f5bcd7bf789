"""Virtual-folder rules: names, paths, hosts, limits, and who may do what with a folder.

Who reaches a folder and with which permission (``ro`` < ``rw`` < ``wd``):

* the owner of a user folder: ``wd``, and may manage it (rename, delete, invite, update options);
* a user it was shared with (an accepted invitation): the invitation's permission;
* a member of the group (project) owning a group folder: the folder's default ``permission``, or the
  permission a ``/share`` gave that user (which overrides it);
* a domain admin, for the group folders of the groups of the domain, and a superadmin, for every group
  folder: ``wd``, and they manage those folders (project admins: ``is_owner`` is true for them);
* by id only (``:name`` may be the folder id): a superadmin reaches any folder, a domain admin any folder of
  the domain, both with ``wd`` and management rights.

File reads (info, listing, download, clone source) need ``ro``; file writes (upload, mkdir, rename, move,
delete files) need ``rw`` ("rw and wd have no difference", §14 item 19, as upstream). Everybody else gets
404 as if the folder did not exist, and a refused operation on a visible folder is a 404 too (§11.17).
"""

from __future__ import annotations

import unicodedata
import uuid
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass
from typing import Any

from sqlalchemy import and_, func, or_, select
from sqlalchemy.ext.asyncio import AsyncSession

from ai.backend.common.problems import Forbidden, InvalidAPIParameters, NotFound, ProblemError, QuotaExceeded

from .auth import AuthContext
from .models import (
    DomainRow,
    KeyPairResourcePolicyRow,
    ProjectRow,
    SessionRow,
    UserRow,
    VFolderPermissionRow,
    VFolderRow,
    group_members,
)
from .models.vfolders import OWNERSHIP_TYPES, PERMISSIONS, USAGE_MODES
from .sessions.params import parse_bool_value
from .sessions.status import ACTIVE

NAME_MAX = 64
PATH_MAX = 4096
COMPONENT_MAX = 255  # bytes, as file systems count them
PERM_RANK = {"ro": 0, "rw": 1, "wd": 2}
# Bidirectional overrides and isolates: they make a name display as something else.
_BIDI = {chr(c) for c in (*range(0x202A, 0x202F), *range(0x2066, 0x206A), 0x200E, 0x200F, 0x061C)}


class VFolderNotFound(NotFound):
    slug, title = "vfolder-not-found", "No such virtual folder"


class VFolderBusy(ProblemError):
    status, slug, title = 409, "vfolder-busy", "The virtual folder is busy"


class VFolderExists(ProblemError):
    status, slug, title = 409, "vfolder-already-exists", "A virtual folder of that name already exists"


class VFolderHostForbidden(Forbidden):
    slug, title = "vfolder-host-not-allowed", "The storage host is not allowed"


# --- input checks ----------------------------------------------------------------------------------------


def _odd_char(ch: str) -> bool:
    cat = unicodedata.category(ch)
    return cat in ("Cc", "Cs", "Cn", "Co") or ch in _BIDI


def check_folder_name(raw: Any, what: str = "name") -> str:
    """A folder name: NFC-normalized, 1–64 characters, no ``/``, not ``.``/``..``, no control or odd characters.
    Dot-names (``.config``) are allowed: they are mounted automatically into the owner's sessions."""
    if not isinstance(raw, str) or not raw:
        raise InvalidAPIParameters(f"'{what}' must be a non-empty string.")
    name = unicodedata.normalize("NFC", raw)
    if name in (".", "..") or "/" in name or "\\" in name:
        raise InvalidAPIParameters(f"'{what}' {raw!r} is not a valid folder name: no '/' or '\\', not '.' or '..'.")
    if len(name) > NAME_MAX:
        raise InvalidAPIParameters(f"'{what}' is too long ({len(name)} characters; at most {NAME_MAX}).")
    if name != name.strip() or any(_odd_char(c) for c in name):
        raise InvalidAPIParameters(
            f"'{what}' {raw!r} has control, unassigned or direction-changing characters, or leading/trailing spaces."
        )
    return name


def check_relpath(raw: Any, what: str = "path", *, allow_root: bool = True) -> str:
    """A path inside a folder, relative to its root: ``"a/b"`` (``""`` is the root). ``..`` components, absolute
    paths, NUL and control characters, unassigned code points, components over 255 bytes are 400."""
    if raw is None:
        raw = ""
    if not isinstance(raw, str):
        raise InvalidAPIParameters(f"'{what}' must be a string.")
    if raw.startswith("/"):
        raise InvalidAPIParameters(f"'{what}' {raw!r} must be relative to the folder root, not absolute.")
    if len(raw.encode("utf-8", "surrogatepass")) > PATH_MAX:
        raise InvalidAPIParameters(f"'{what}' is longer than {PATH_MAX} bytes.")
    parts: list[str] = []
    for part in raw.split("/"):
        if part in ("", "."):
            continue
        if part == "..":
            raise InvalidAPIParameters(f"'{what}' {raw!r} must not contain '..'.")
        if any(_odd_char(c) for c in part):
            raise InvalidAPIParameters(
                f"'{what}' {raw!r} has NUL, control, unassigned or direction-changing characters."
            )
        if len(part.encode("utf-8")) > COMPONENT_MAX:
            raise InvalidAPIParameters(f"'{what}' has a name longer than {COMPONENT_MAX} bytes.")
        parts.append(part)
    if not parts and not allow_root:
        raise InvalidAPIParameters(f"'{what}' must name something inside the folder, not its root.")
    return "/".join(parts)


def check_file_name(raw: Any, what: str = "new_name") -> str:
    """A single file name (no ``/``)."""
    if not isinstance(raw, str) or not raw:
        raise InvalidAPIParameters(f"'{what}' must be a non-empty string.")
    if "/" in raw or raw in (".", ".."):
        raise InvalidAPIParameters(f"'{what}' {raw!r} must be a single name: no '/', not '.' or '..'.")
    return check_relpath(raw, what, allow_root=False)


def check_choice(raw: Any, choices: Sequence[str], what: str, default: str | None = None) -> str:
    if raw is None and default is not None:
        return default
    if raw not in choices:
        raise InvalidAPIParameters(f"'{what}' must be one of {', '.join(choices)}; got {raw!r}.")
    return str(raw)


def check_permission(raw: Any, what: str = "permission", default: str | None = None) -> str:
    return check_choice(raw, PERMISSIONS, what, default)


def check_usage_mode(raw: Any, what: str = "usage_mode") -> str:
    return check_choice(raw, USAGE_MODES, what, "general")


def check_ownership_type(raw: Any) -> str:
    return check_choice(raw, OWNERSHIP_TYPES, "ownership_type")


def parse_bool(body: Mapping[str, Any], key: str, default: bool) -> bool:
    """A boolean parameter; query strings give ``"true"``/``"false"``/``"1"``/``"0"``."""
    value = body.get(key)
    return default if value is None else parse_bool_value(key, value)


def parse_int(body: Mapping[str, Any], key: str, *, required: bool = False, minimum: int = 0) -> int | None:
    value = body.get(key)
    if value is None:
        if required:
            raise InvalidAPIParameters(f"'{key}' is required.")
        return None
    if isinstance(value, bool):
        raise InvalidAPIParameters(f"'{key}' must be an integer, got {value!r}.")
    try:
        n = int(value)
    except (TypeError, ValueError):
        raise InvalidAPIParameters(f"'{key}' must be an integer, got {value!r}.") from None
    if isinstance(value, float) and value != n:
        raise InvalidAPIParameters(f"'{key}' must be an integer, got {value!r}.")
    if n < minimum:
        raise InvalidAPIParameters(f"'{key}' must be at least {minimum}, got {n}.")
    return n


def parse_uuid(raw: Any, what: str) -> uuid.UUID:
    """A UUID in any of its spellings (hyphenated or 32 hex digits)."""
    try:
        return uuid.UUID(str(raw))
    except ValueError:
        raise InvalidAPIParameters(f"'{what}' {raw!r} is not a UUID.") from None


def parse_str_list(body: Mapping[str, Any], key: str, *aliases: str) -> list[str]:
    """A list of strings (a single string counts as a list of one); empty when absent."""
    value: Any = None
    for k in (key, *aliases):
        if body.get(k) is not None:
            value = body[k]
            break
    if value is None:
        return []
    if isinstance(value, str):
        value = [value]
    if not isinstance(value, list) or not all(isinstance(v, str) for v in value):
        raise InvalidAPIParameters(f"'{key}' must be a list of strings.")
    return list(dict.fromkeys(value))


# --- who may reach a folder ------------------------------------------------------------------------------


@dataclass
class Access:
    """A folder as the caller reaches it."""

    vf: VFolderRow
    permission: str  # the caller's effective permission
    is_owner: bool  # the owner of a user folder; an admin of a group folder's project
    manage: bool  # may rename, delete, invite, share and change options
    user_email: str | None = None  # the owning user's e-mail (user folders)
    group_name: str | None = None  # the owning group's name (group folders)

    def require(self, perm: str, action: str) -> None:
        """404 unless the caller's permission is at least ``perm`` (§11.17: no-permission is not-found)."""
        if PERM_RANK[self.permission] < PERM_RANK[perm]:
            raise VFolderNotFound(
                f"You have {self.permission!r} permission on folder {self.vf.name!r}; {action} needs {perm!r}."
            )

    def require_manage(self, action: str) -> None:
        if not self.manage:
            raise VFolderNotFound(
                f"Only the owner of folder {self.vf.name!r} (or an admin of its project) may {action}."
            )

    def require_status(self, *allowed: str) -> None:
        if self.vf.status not in allowed:
            raise VFolderBusy(f"The folder {self.vf.name!r} is {self.vf.status}; try again later.")


def _base() -> Any:
    """Folders with the owner's e-mail, the group's name and the owner's domain."""
    return (
        select(VFolderRow, UserRow.email, ProjectRow.name, func.coalesce(UserRow.domain_name, ProjectRow.domain_name))
        .join(UserRow, UserRow.uuid == VFolderRow.user, isouter=True)
        .join(ProjectRow, ProjectRow.id == VFolderRow.group, isouter=True)
    )


async def member_group_ids(db: AsyncSession, user_uuid: uuid.UUID) -> list[uuid.UUID]:
    rows = await db.execute(select(group_members.c.group_id).where(group_members.c.user_id == user_uuid))
    return [r[0] for r in rows]


def _admin_group_cond(ctx: AuthContext) -> Any:
    """Which group folders the caller administers (None: none)."""
    if ctx.is_superadmin:
        return VFolderRow.group.is_not(None)
    if ctx.role == "admin":
        return and_(VFolderRow.group.is_not(None), ProjectRow.domain_name == ctx.domain_name)
    return None


async def accessible(
    db: AsyncSession, ctx: AuthContext, *, group_id: uuid.UUID | None = None, where: Any = None, own_only: bool = False
) -> list[Access]:
    """Every folder the caller reaches: own first, then shared with the caller, then group folders.
    ``group_id`` narrows the group folders to that group (user folders stay, §11.2); ``where`` is an extra
    condition on the folders (e.g. a name); ``own_only`` stops after the caller's own folders."""
    me = ctx.user_uuid
    out: list[Access] = []
    seen: set[uuid.UUID] = set()
    extra = [where] if where is not None else []
    own = _base().where(VFolderRow.user == me, *extra).order_by(VFolderRow.created_at)
    for vf, email, gname, _ in await db.execute(own):
        out.append(Access(vf, "wd", True, True, email, gname))
        seen.add(vf.id)
    if own_only:
        return out
    shared = (
        _base()
        .add_columns(VFolderPermissionRow.permission)
        .join(
            VFolderPermissionRow, and_(VFolderPermissionRow.vfolder == VFolderRow.id, VFolderPermissionRow.user == me)
        )
        .where(VFolderRow.ownership_type == "user", *extra)
        .order_by(VFolderRow.created_at)
    )
    for vf, email, gname, _, perm in await db.execute(shared):
        if vf.id not in seen:
            out.append(Access(vf, perm, False, False, email, gname))
            seen.add(vf.id)
    conds: list[Any] = [VFolderRow.group.in_(select(group_members.c.group_id).where(group_members.c.user_id == me))]
    admin_cond = _admin_group_cond(ctx)
    if admin_cond is not None:
        conds.append(admin_cond)
    q = _base().where(VFolderRow.ownership_type == "group", or_(*conds), *extra)
    if group_id is not None:
        q = q.where(VFolderRow.group == group_id)
    rows = (await db.execute(q.order_by(VFolderRow.created_at))).all()
    if rows:
        overrides = dict(
            (
                await db.execute(
                    select(VFolderPermissionRow.vfolder, VFolderPermissionRow.permission).where(
                        VFolderPermissionRow.user == me, VFolderPermissionRow.vfolder.in_([r[0].id for r in rows])
                    )
                )
            ).all()
        )
        for vf, email, gname, domain in rows:
            if vf.id in seen:
                continue
            if ctx.is_superadmin or (ctx.role == "admin" and domain == ctx.domain_name):
                out.append(Access(vf, "wd", True, True, email, gname))
            else:
                out.append(Access(vf, overrides.get(vf.id, vf.permission), False, False, email, gname))
            seen.add(vf.id)
    return out


async def all_folders(db: AsyncSession, ctx: AuthContext, *, group_id: uuid.UUID | None = None) -> list[Access]:
    """Every folder (superadmins' ``all=true``): the caller's own reach, then every other folder with ``wd``."""
    out = await accessible(db, ctx, group_id=group_id)
    seen = {a.vf.id for a in out}
    q = _base()
    if group_id is not None:
        q = q.where(or_(VFolderRow.group == group_id, VFolderRow.ownership_type == "user"))
    for vf, email, gname, _ in await db.execute(q.order_by(VFolderRow.created_at)):
        if vf.id not in seen:
            out.append(Access(vf, "wd", False, True, email, gname))
    return out


async def find_folder(db: AsyncSession, ctx: AuthContext, ref: str) -> Access:
    """The folder ``ref`` names for the caller: a name (own folders first, then shared, then group folders) or
    the folder's id. 404 when the caller cannot reach it."""
    name = unicodedata.normalize("NFC", ref)
    reach = await accessible(db, ctx, where=VFolderRow.name == name)
    for bucket in (
        [a for a in reach if a.vf.ownership_type == "user" and a.is_owner],
        [a for a in reach if a.vf.ownership_type == "user" and not a.is_owner],
        [a for a in reach if a.vf.ownership_type == "group"],
    ):
        hits = [a for a in bucket if a.vf.name == name]
        if len(hits) == 1:
            return hits[0]
        if len(hits) > 1:
            groups = ", ".join(f"{a.group_name} ({a.vf.id})" for a in hits)
            raise VFolderExists(f"Several group folders are named {ref!r} ({groups}); use the folder id instead.")
    try:
        vid = uuid.UUID(ref)
    except ValueError:
        raise VFolderNotFound(f"No virtual folder named {ref!r} that you may use.") from None
    for a in await accessible(db, ctx, where=VFolderRow.id == vid):
        return a
    if ctx.is_superadmin or ctx.role == "admin":
        row = (await db.execute(_base().where(VFolderRow.id == vid))).first()
        if row is not None:
            vf, email, gname, domain = row
            if ctx.is_superadmin or domain == ctx.domain_name:
                return Access(vf, "wd", False, True, email, gname)
    raise VFolderNotFound(f"No virtual folder named {ref!r} that you may use.")


# --- creation rules --------------------------------------------------------------------------------------


def _hosts(value: Any) -> set[str]:
    return {h for h in (value or []) if isinstance(h, str)}


async def allowed_hosts(db: AsyncSession, ctx: AuthContext, group_id: uuid.UUID | None = None) -> set[str]:
    """The hosts the caller may create folders on: the union of the domain's, the groups' (the given group, or
    every group the caller is a member of) and the keypair resource policy's ``allowed_vfolder_hosts``."""
    hosts: set[str] = set()
    hosts |= _hosts(
        (
            await db.execute(select(DomainRow.allowed_vfolder_hosts).where(DomainRow.name == ctx.domain_name))
        ).scalar_one_or_none()
    )
    gids = [group_id] if group_id is not None else await member_group_ids(db, ctx.user_uuid)
    if gids:
        for (value,) in await db.execute(select(ProjectRow.allowed_vfolder_hosts).where(ProjectRow.id.in_(gids))):
            hosts |= _hosts(value)
    policy = await db.get(KeyPairResourcePolicyRow, ctx.resource_policy)
    if policy is not None:
        hosts |= _hosts(policy.allowed_vfolder_hosts)
    return hosts


async def check_host_allowed(db: AsyncSession, ctx: AuthContext, host: str, group_id: uuid.UUID | None) -> None:
    """403 unless the caller may use ``host`` (superadmins may use every host)."""
    if ctx.is_superadmin:
        return
    if host not in await allowed_hosts(db, ctx, group_id):
        raise VFolderHostForbidden(
            f"You may not create folders on the storage host {host!r}; see "
            "GET /folders/_/hosts for the hosts you may use."
        )


async def policy_of(db: AsyncSession, ctx: AuthContext) -> KeyPairResourcePolicyRow | None:
    return await db.get(KeyPairResourcePolicyRow, ctx.resource_policy)


async def check_count_limit(db: AsyncSession, ctx: AuthContext, policy: KeyPairResourcePolicyRow | None) -> None:
    """406 when the caller already owns ``max_vfolder_count`` user folders (0: unlimited)."""
    limit = policy.max_vfolder_count if policy is not None else 0
    if limit <= 0:
        return
    count = await db.execute(select(func.count()).select_from(VFolderRow).where(VFolderRow.user == ctx.user_uuid))
    n = int(count.scalar_one())
    if n >= limit:
        raise QuotaExceeded(f"You own {n} folders; your resource policy allows at most {limit} (max_vfolder_count).")


def folder_quota(requested: int | None, policy: KeyPairResourcePolicyRow | None) -> int | None:
    """The quota (bytes) of a new folder: the request's, at most the policy's ``max_vfolder_size`` (0: no limit);
    None means unlimited. 406 when the request asks for more than the policy allows."""
    cap = policy.max_vfolder_size if policy is not None else 0
    want = requested or None
    if cap and cap > 0:
        if want is not None and want > cap:
            raise QuotaExceeded(
                f"A quota of {want} bytes exceeds your resource policy's max_vfolder_size ({cap} bytes)."
            )
        return want or cap
    return want


async def check_name_free(
    db: AsyncSession,
    name: str,
    *,
    user: uuid.UUID | None = None,
    group: uuid.UUID | None = None,
    exclude: uuid.UUID | None = None,
) -> None:
    """409 when the owner (a user, including the folders shared with the user, or a group) already has a
    folder named ``name`` on any host."""
    conds: list[Any] = []
    if user is not None:
        shared = select(VFolderPermissionRow.vfolder).where(VFolderPermissionRow.user == user)
        conds.append(or_(VFolderRow.user == user, and_(VFolderRow.ownership_type == "user", VFolderRow.id.in_(shared))))
    if group is not None:
        conds.append(VFolderRow.group == group)
    q = select(VFolderRow.id).where(VFolderRow.name == name, or_(*conds))
    if exclude is not None:
        q = q.where(VFolderRow.id != exclude)
    if (await db.execute(q.limit(1))).first() is not None:
        raise VFolderExists(f"A folder named {name!r} already exists (names are unique per owner across hosts).")


async def sessions_using(db: AsyncSession, vfids: Iterable[uuid.UUID]) -> list[str]:
    """Names of the active sessions that mount any of the folders ``vfids``."""
    wanted = {v.hex for v in vfids}
    rows = await db.execute(
        select(SessionRow.name, SessionRow.vfolder_mounts).where(
            SessionRow.status.in_(ACTIVE), SessionRow.vfolder_mounts.is_not(None)
        )
    )
    names: list[str] = []
    for name, mounts in rows:
        for m in mounts or []:
            raw = m.get("vfid") if isinstance(m, dict) else None
            try:
                if raw is not None and uuid.UUID(str(raw)).hex in wanted:
                    names.append(name)
                    break
            except ValueError:
                continue
    return names


# --- responses -------------------------------------------------------------------------------------------


def _iso(value: Any) -> str | None:
    return value.isoformat() if value is not None else None


def folder_item(a: Access) -> dict[str, Any]:
    """The Virtual Folder List Item Object (§2.15) with the fields of the examples: ``type`` and
    ``ownership_type`` both, real booleans, ids as hyphenated UUIDs."""
    vf = a.vf
    return {
        "name": vf.name,
        "id": str(vf.id),
        "host": vf.host,
        "usage_mode": vf.usage_mode,
        "created_at": _iso(vf.created_at),
        "last_used": _iso(vf.last_used),
        "is_owner": a.is_owner,
        "permission": a.permission,
        "user": str(vf.user) if vf.user else None,
        "group": str(vf.group) if vf.group else None,
        "creator": vf.creator,
        "user_email": a.user_email,
        "group_name": a.group_name,
        "type": vf.ownership_type,
        "ownership_type": vf.ownership_type,
        "unmanaged_path": vf.unmanaged_path,
        "cloneable": vf.cloneable,
        "status": vf.status,
        "quota": vf.quota,  # bytes; null: unlimited
    }
