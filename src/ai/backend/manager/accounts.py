"""Account operations shared by the GraphQL mutations and the operator CLI: users and keypairs.

They validate, write in the caller's transaction (without committing) and raise
:class:`~ai.backend.common.problems.ProblemError` subclasses for bad input.
"""

from __future__ import annotations

import re
import uuid
from collections.abc import Sequence

from sqlalchemy import insert, select
from sqlalchemy.ext.asyncio import AsyncSession

from ai.backend.common.problems import Conflict, InvalidAPIParameters, NotFound

from .models import DomainRow, KeyPairResourcePolicyRow, KeyPairRow, ProjectRow, UserRow, group_members
from .passwords import generate_keypair, hash_password

ROLES = ("superadmin", "admin", "user", "monitor")
STATUSES = ("active", "inactive", "deleted", "before-verification")
MIN_PASSWORD, MAX_PASSWORD = 8, 72
DEFAULT_RATE_LIMIT = 10000
_EMAIL_RE = re.compile(r"^[^@\s]+@[^@\s]+$")


def check_email(value: str) -> str:
    if len(value) > 64 or not _EMAIL_RE.match(value):
        raise InvalidAPIParameters(f"{value!r} is not a valid e-mail address (at most 64 characters).")
    return value


def check_password(password: str) -> str:
    if len(password) < MIN_PASSWORD:
        raise InvalidAPIParameters(f"The password must have at least {MIN_PASSWORD} characters.")
    if len(password.encode()) > MAX_PASSWORD:  # bcrypt only reads the first 72 bytes
        raise InvalidAPIParameters(f"The password must have at most {MAX_PASSWORD} bytes.")
    return password


def check_choice(value: str, choices: Sequence[str], what: str) -> str:
    if value not in choices:
        raise InvalidAPIParameters(f"{what} must be one of {', '.join(choices)}; got {value!r}.")
    return value


async def resolve_groups(db: AsyncSession, group_ids: Sequence[str], domain_name: str) -> list[uuid.UUID]:
    """Group ids (UUIDs, or names in ``domain_name``) checked to exist in that domain."""
    gids: list[uuid.UUID] = []
    for ref in group_ids:
        try:
            gids.append(uuid.UUID(str(ref)))
            continue
        except ValueError:
            pass
        gid = (
            await db.execute(select(ProjectRow.id).where(ProjectRow.name == ref, ProjectRow.domain_name == domain_name))
        ).scalar_one_or_none()
        if gid is None:
            raise NotFound(f"No group named {ref!r} in domain {domain_name!r}.")
        gids.append(gid)
    if not gids:
        return []
    rows = (await db.execute(select(ProjectRow.id, ProjectRow.domain_name).where(ProjectRow.id.in_(gids)))).all()
    known = {gid: dom for gid, dom in rows}
    missing = [str(g) for g in gids if g not in known]
    if missing:
        raise NotFound(f"No such groups: {', '.join(missing)}.")
    foreign = [str(g) for g in gids if known[g] != domain_name]
    if foreign:
        raise InvalidAPIParameters(f"Groups outside domain {domain_name!r}: {', '.join(foreign)}.")
    return list(dict.fromkeys(gids))


async def add_keypair(
    db: AsyncSession,
    user: UserRow,
    *,
    is_active: bool = True,
    is_admin: bool = False,
    resource_policy: str = "default",
    rate_limit: int = DEFAULT_RATE_LIMIT,
) -> KeyPairRow:
    """A new keypair for ``user``; the first one becomes the user's main keypair."""
    if await db.get(KeyPairResourcePolicyRow, resource_policy) is None:
        raise NotFound(f"No such keypair resource policy: {resource_policy!r}.")
    if rate_limit < 0:
        raise InvalidAPIParameters(f"rate_limit must not be negative, got {rate_limit}.")
    has_main = (
        await db.execute(
            select(KeyPairRow.access_key).where(KeyPairRow.user == user.uuid, KeyPairRow.is_main.is_(True))
        )
    ).first()
    ak, sk = generate_keypair()
    kp = KeyPairRow(
        access_key=ak,
        secret_key=sk,
        user_id=user.email,
        user=user.uuid,
        is_active=is_active,
        is_admin=is_admin,
        is_main=has_main is None,
        resource_policy=resource_policy,
        rate_limit=rate_limit,
    )
    db.add(kp)
    await db.flush()
    return kp


async def add_user(
    db: AsyncSession,
    *,
    email: str,
    password: str,
    domain_name: str = "default",
    role: str = "user",
    status: str = "active",
    username: str | None = None,
    full_name: str | None = None,
    description: str | None = None,
    need_password_change: bool = False,
    group_ids: Sequence[str] = (),
) -> tuple[UserRow, KeyPairRow]:
    """A new user with its main keypair (admin flag from the role, policy ``default``)."""
    check_email(email)
    check_password(password)
    check_choice(role, ROLES, "role")
    check_choice(status, STATUSES, "status")
    username = username or email
    if await db.get(DomainRow, domain_name) is None:
        raise NotFound(f"No such domain: {domain_name!r}.")
    if (await db.execute(select(UserRow.uuid).where(UserRow.email == email))).first():
        raise Conflict(f"A user with e-mail {email!r} already exists.")
    if (await db.execute(select(UserRow.uuid).where(UserRow.username == username))).first():
        raise Conflict(f"The username {username!r} is taken.")
    gids = await resolve_groups(db, group_ids, domain_name)
    user = UserRow(
        email=email,
        username=username,
        password=hash_password(password),
        need_password_change=need_password_change,
        full_name=full_name,
        description=description,
        status=status,
        role=role,
        domain_name=domain_name,
    )
    db.add(user)
    await db.flush()
    kp = await add_keypair(db, user, is_active=status == "active", is_admin=role in ("superadmin", "admin"))
    if gids:
        await db.execute(insert(group_members), [{"group_id": g, "user_id": user.uuid} for g in gids])
    return user, kp
