"""Keypair authentication of API requests (HMAC signatures, date window, version header).

Keypair rows are cached so that a signed call costs no database query: a cached row is used only while
the ``accounts`` generation (:mod:`.generations`) it was read under is current, and every committed change
to the keypairs or users tables, by any manager or the ``backend.ai mgr`` CLI, moves that generation on.
So a deactivated keypair, a new rate limit or role applies to the very next request, on every manager.
"""

from __future__ import annotations

import hashlib
import hmac
import uuid
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from typing import TYPE_CHECKING, NamedTuple

from dateutil.parser import isoparse
from dateutil.parser import parse as parse_date
from sqlalchemy import select
from sqlalchemy.ext.asyncio import AsyncSession, async_sessionmaker
from starlette.requests import HTTPConnection, Request

from ai.backend.common.auth import BODY_HASH_HEADER, AuthHeaderError, make_signature, parse_authorization
from ai.backend.common.logs import access_key_var
from ai.backend.common.problems import AuthorizationFailed, InvalidAuthParameters

from .generations import GenerationCache, GenerationReader
from .models import KeyPairRow, UserRow

if TYPE_CHECKING:
    from .context import ManagerContext

ACCOUNTS = "accounts"  # the generation group of the keypairs and users tables


class KeypairRecord(NamedTuple):
    """What authentication needs to know about a keypair and its owner."""

    secret_key: str
    is_active: bool
    is_admin: bool
    resource_policy: str
    rate_limit: int
    user_uuid: uuid.UUID
    email: str
    role: str
    domain_name: str
    status: str


_KEYPAIR_QUERY = select(
    KeyPairRow.secret_key,
    KeyPairRow.is_active,
    KeyPairRow.is_admin,
    KeyPairRow.resource_policy,
    KeyPairRow.rate_limit,
    UserRow.uuid,
    UserRow.email,
    UserRow.role,
    UserRow.domain_name,
    UserRow.status,
).join(UserRow, UserRow.uuid == KeyPairRow.user)


async def lookup_keypair(
    db_factory: async_sessionmaker[AsyncSession],
    gens: GenerationReader,
    cache: GenerationCache[str, KeypairRecord],
    access_key: str,
) -> KeypairRecord | None:
    """The keypair's row (None if unknown): from ``cache`` while the accounts generation is unchanged."""
    gen = await gens.current(ACCOUNTS)
    record = cache.get(access_key, gen)
    if record is not None:
        return record
    async with db_factory() as db:
        row = (await db.execute(_KEYPAIR_QUERY.where(KeyPairRow.access_key == access_key))).first()
    if row is None:
        cache.discard(access_key)
        return None
    record = KeypairRecord._make(row)
    cache.put(access_key, gen, record)
    return record


@dataclass(frozen=True)
class AuthContext:
    """Who is calling: the keypair's owner and what it may do."""

    access_key: str
    user_uuid: uuid.UUID
    email: str
    role: str
    domain_name: str
    is_admin: bool
    resource_policy: str
    api_version: str
    rate_limit: int = 0

    @property
    def is_superadmin(self) -> bool:
        return self.role == "superadmin"


def _parse_date(raw: str) -> datetime:
    try:
        try:
            d = datetime.fromisoformat(raw)  # what every client sends; dateutil's parsers are slower
        except ValueError:
            try:
                d = isoparse(raw)
            except ValueError:
                d = parse_date(raw)
        if d.tzinfo is None:
            d = d.replace(tzinfo=UTC)
        # A UTC offset of a day or more (which dateutil accepts) fails only when the date is compared.
        return d.astimezone(UTC)
    except (ValueError, OverflowError):
        raise InvalidAuthParameters(f"The date header is not a valid date: {raw!r}.") from None


def _header(request: HTTPConnection, *names: str) -> tuple[str, str] | None:
    for name in names:
        value = request.headers.get(name)
        if value is not None:
            return name, value
    return None


async def authenticate(request: HTTPConnection, mgr: ManagerContext) -> AuthContext:
    """Verify the request's signature and return its :class:`AuthContext`, or raise a 4xx problem."""
    auth_value = request.headers.get("authorization")
    if not auth_value:
        raise AuthorizationFailed("Authorization header is missing.")
    try:
        parsed = parse_authorization(auth_value)
    except AuthHeaderError as e:
        raise InvalidAuthParameters(f"Malformed Authorization header. {e}") from None
    date_hdr = _header(request, "date", "x-backendai-date", "x-sorna-date")
    if date_hdr is None:
        raise InvalidAuthParameters("Date or X-BackendAI-Date header is missing.")
    version_hdr = _header(request, "x-backendai-version", "x-sorna-version")
    if version_hdr is None:
        raise InvalidAuthParameters("X-BackendAI-Version header is missing.")
    date = _parse_date(date_hdr[1])
    skew = timedelta(seconds=mgr.config.manager.allowed_date_skew)
    now = datetime.now(UTC)
    if not (now - skew < date < now + skew):
        raise AuthorizationFailed(
            f"The request date {date_hdr[1]!r} is outside the allowed window of ±{int(skew.total_seconds())} s "
            "around the server time; check your clock."
        )
    row = await lookup_keypair(mgr.db, mgr.generations, mgr.keypairs, parsed.access_key)
    if row is None:
        raise AuthorizationFailed("Unknown access key.")
    secret_key, kp_active, kp_admin, resource_policy, rate_limit, user_uuid, email, user_role, domain, status = row
    if not kp_active or status != "active":
        raise AuthorizationFailed("The keypair or its user is inactive.")
    scope = request.scope
    raw_path = scope.get("raw_path") or scope["path"].encode()
    path_with_query = raw_path.decode("latin-1")
    if scope.get("query_string"):
        path_with_query += "?" + scope["query_string"].decode("latin-1")
    host = request.headers.get("host", "")
    fwd = request.headers.get("x-forwarded-url")
    if fwd and mgr.config.manager.is_trusted_proxy(request.client.host if request.client else None):
        from urllib.parse import urlsplit

        parts = urlsplit(fwd)
        host = parts.netloc
        path_with_query = parts.path + (f"?{parts.query}" if parts.query else "")
    method = request.scope.get("method", "GET")  # WebSocket handshakes are signed as GET
    body_sha256 = request.headers.get(BODY_HASH_HEADER)
    # GET requests may carry a JSON body too (parameters of the file listings, §14 item 8).
    read_body = method not in ("GET", "HEAD") or body_sha256 is not None
    body = await request.body() if isinstance(request, Request) and read_body else b""
    if body_sha256 is not None and not hmac.compare_digest(
        body_sha256.strip().lower(), hashlib.sha256(body).hexdigest()
    ):
        raise AuthorizationFailed(f"The request body does not match its {BODY_HASH_HEADER} header.")
    expected = make_signature(
        method=method,
        path_with_query=path_with_query,
        date_header=date_hdr[1],
        date=date,
        host=host,
        # Like aiohttp (the reference server), a missing Content-Type reads as application/octet-stream;
        # the upstream client signs WebSocket handshakes that way.
        content_type=request.headers.get("content-type") or "application/octet-stream",
        version=version_hdr[1],
        secret_key=secret_key,
        hash_type=parsed.hash_type,
        body=body,
        version_header_name=version_hdr[0].lower(),
        body_sha256=body_sha256,
    )
    if not hmac.compare_digest(expected, parsed.signature):
        raise AuthorizationFailed("Signature mismatch: check the secret key and the signed headers.")
    # Admin powers need both an admin user and a privileged keypair; an admin's plain keypair acts as a user.
    role = user_role if kp_admin or user_role not in ("superadmin", "admin") else "user"
    is_admin = role in ("superadmin", "admin")
    access_key_var.set(parsed.access_key)  # on this request's log lines from now on
    return AuthContext(
        access_key=parsed.access_key,
        user_uuid=user_uuid,
        email=email,
        role=role,
        domain_name=domain,
        is_admin=is_admin,
        resource_policy=resource_policy,
        api_version=version_hdr[1],
        rate_limit=rate_limit,
    )
