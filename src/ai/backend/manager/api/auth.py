"""Account endpoints under ``/auth``: password login (for the web server), roles and password changes.

``POST /auth/authorize`` and ``POST /auth/update-password-no-auth`` take no signature; they
are rate-limited per client IP by the rate-limit middleware and answer every wrong
credential with the same 401, spending the same bcrypt time whether or not the user exists.
"""

from __future__ import annotations

from typing import Any

from fastapi import APIRouter, Depends, Request
from pydantic import field_validator
from sqlalchemy import or_, select

from ai.backend.common.problems import AuthorizationFailed, InvalidAPIParameters, TooManyRequests

from ..auth import AuthContext
from ..models import KeyPairRow, ProjectRow, UserRow, group_members
from ..passwords import hash_password, verify_password
from .bodies import AliasChoices, DocumentedRoute, Field, NonEmptyStr, RequestModel, body_of
from .deps import auth_required, json_body, manager_context

router = APIRouter(route_class=DocumentedRoute)

# A valid bcrypt hash of a random string: checking it keeps unknown-user replies as slow as real ones.
_DUMMY_HASH = hash_password("no-such-user-placeholder")
MIN_PASSWORD, MAX_PASSWORD = 8, 72
LOGIN_ATTEMPTS = 30  # per account and rate-limit window


def _check_new_password(password: str) -> None:
    if not (MIN_PASSWORD <= len(password) <= MAX_PASSWORD):
        raise InvalidAPIParameters(f"The new password must have {MIN_PASSWORD} to {MAX_PASSWORD} characters.")


_USERNAME = AliasChoices("username", "user_id")
# Documented, not enforced by the model: the length is checked where it always was (after other fields).
_PASSWORD_LENGTH: dict[str, Any] = {"minLength": MIN_PASSWORD, "maxLength": MAX_PASSWORD}


class AuthorizeBody(RequestModel):
    """``POST /auth/authorize``: a login."""

    type: str = Field("keypair", json_schema_extra={"enum": ["keypair"]})

    @field_validator("type", mode="before")
    @classmethod
    def _type(cls, v: Any) -> str:
        if v != "keypair":
            raise InvalidAPIParameters("Only type 'keypair' is supported.")
        return "keypair"

    domain: NonEmptyStr = "default"
    username: NonEmptyStr = Field(validation_alias=_USERNAME, description="The e-mail address or user name.")
    password: NonEmptyStr


class UpdatePasswordBody(RequestModel):
    """``POST /auth/update-password``: the caller's own password change."""

    old_password: NonEmptyStr
    new_password: NonEmptyStr = Field(json_schema_extra=_PASSWORD_LENGTH)
    new_password2: NonEmptyStr = Field(description="The new password again.")


class UpdatePasswordNoAuthBody(RequestModel):
    """``POST /auth/update-password-no-auth``: a password change with the current password."""

    domain: NonEmptyStr = "default"
    new_password: NonEmptyStr = Field(json_schema_extra=_PASSWORD_LENGTH)
    username: NonEmptyStr = Field(validation_alias=_USERNAME)
    current_password: NonEmptyStr

    @field_validator("new_password", mode="after")
    @classmethod
    def _length(cls, v: str) -> str:
        _check_new_password(v)
        return v


async def _check_credentials(request: Request, domain: str, username: str, password: str) -> UserRow:
    limiter = manager_context(request).rate_limiter
    verdict = await limiter.hit(f"login:{domain}:{username.lower()}", LOGIN_ATTEMPTS)
    if verdict.exceeded:
        limiter.on_refusal("login")
        # Per account, not per IP: the web server logs everyone in from one address.
        raise TooManyRequests(
            f"Too many login attempts for this account; wait up to {verdict.window // 60} minutes and try again."
        )
    async with manager_context(request).db() as db:
        user = (
            (
                await db.execute(
                    select(UserRow).where(
                        or_(UserRow.email == username, UserRow.username == username), UserRow.domain_name == domain
                    )
                )
            )
            .scalars()
            .first()
        )
    if user is None:
        verify_password(password, _DUMMY_HASH)
        raise AuthorizationFailed("Wrong domain, username or password.")
    if not verify_password(password, user.password) or user.status != "active":
        raise AuthorizationFailed("Wrong domain, username or password, or the account is not active.")
    return user


@router.post("/auth/authorize")
async def authorize(request: Request, body: AuthorizeBody = Depends(body_of(AuthorizeBody))) -> dict[str, Any]:
    """Exchange a username and password for the user's main keypair (what the web server does at login)."""
    user = await _check_credentials(request, body.domain, body.username, body.password)
    async with manager_context(request).db() as db:
        keypair = (
            (
                await db.execute(
                    select(KeyPairRow)
                    .where(KeyPairRow.user == user.uuid, KeyPairRow.is_active.is_(True))
                    .order_by(KeyPairRow.is_main.desc(), KeyPairRow.created_at)
                )
            )
            .scalars()
            .first()
        )
    if keypair is None:
        raise AuthorizationFailed("This account has no active keypair; ask an administrator.")
    return {
        "data": {
            "access_key": keypair.access_key,
            "secret_key": keypair.secret_key,
            "role": user.role,
            "status": user.status,
            "need_password_change": user.need_password_change,
        }
    }


@router.get("/auth/role")
async def role(request: Request, ctx: AuthContext = Depends(auth_required)) -> dict[str, Any]:
    """The caller's global, domain and (with ``?group=``) group roles."""
    group_role = None
    group = request.query_params.get("group")
    if group:
        async with manager_context(request).db() as db:
            member = (
                await db.execute(
                    select(ProjectRow.id)
                    .join(group_members, group_members.c.group_id == ProjectRow.id)
                    .where(
                        group_members.c.user_id == ctx.user_uuid,
                        ProjectRow.domain_name == ctx.domain_name,
                        or_(ProjectRow.name == group, ProjectRow.id.in_(_as_uuid_list(group))),
                    )
                )
            ).first()
        group_role = "user" if member else None
        if ctx.role in ("superadmin", "admin"):
            group_role = "admin"
    return {
        "global_role": "superadmin" if ctx.role == "superadmin" else "user",
        "domain_role": "admin" if ctx.role in ("superadmin", "admin") else "user",
        "group_role": group_role,
    }


def _as_uuid_list(value: str) -> list[Any]:
    import uuid

    try:
        return [uuid.UUID(value)]
    except ValueError:
        return []


@router.post("/auth/update-password")
async def update_password(
    request: Request,
    ctx: AuthContext = Depends(auth_required),
    body: UpdatePasswordBody = Depends(body_of(UpdatePasswordBody)),
) -> dict[str, Any]:
    """Change the caller's own password; the old one must be given."""
    old, new = body.old_password, body.new_password
    if new != body.new_password2:
        raise InvalidAPIParameters("The new password and its confirmation differ.")
    _check_new_password(new)
    async with manager_context(request).db() as db:
        user = await db.get(UserRow, ctx.user_uuid)
        if user is None or not verify_password(old, user.password):
            raise AuthorizationFailed("The old password is wrong.")
        user.password = hash_password(new)
        user.need_password_change = False
        await db.commit()
    return {}


@router.post("/auth/update-password-no-auth")
async def update_password_no_auth(
    request: Request, body: UpdatePasswordNoAuthBody = Depends(body_of(UpdatePasswordNoAuthBody))
) -> dict[str, Any]:
    """Change a password with the current one (for accounts whose password must be changed first)."""
    new = body.new_password
    user = await _check_credentials(request, body.domain, body.username, body.current_password)
    if new == body.current_password:
        raise InvalidAPIParameters("The new password must differ from the current one.")
    async with manager_context(request).db() as db:
        row = await db.get(UserRow, user.uuid)
        if row is not None:
            row.password = hash_password(new)
            row.need_password_change = False
            await db.commit()
    return {}


@router.api_route("/auth/test", methods=["GET", "POST"])
async def test(request: Request, ctx: AuthContext = Depends(auth_required)) -> dict[str, Any]:
    """Echo ``echo`` back: a signed round trip to check credentials."""
    body = await json_body(request)
    return {"authorized": "yes", "echo": body.get("echo"), "access_key": ctx.access_key}
