"""Keypair request signing (HMAC), shared by the client SDK and the manager.

The wire format follows the documented Backend.AI scheme as the upstream servers implement it:

* signing key = HMAC(HMAC(secret_key, "YYYYMMDD" of the request date), host)
* string to sign = METHOD, path with query, raw date header, ``host:``, ``content-type:``,
  ``x-backendai-version:`` and the hex hash of the body, joined by newlines.
* From API v4.20181215 on the body is not hashed: the hash of ``b""`` is used, so that
  multipart and streaming bodies can be signed without buffering them.

An extension of ours closes the replay hole that leaves (a captured request replayed with another body
within the date window): a client may send :data:`BODY_HASH_HEADER` with the body's SHA-256; the line
``x-backendai-body-sha256:<hex>`` is then appended to the string to sign, and the server checks the
body against it. Stripping the header changes the string to sign, so the signature no longer matches.
"""

from __future__ import annotations

import hashlib
import hmac
import re
from dataclasses import dataclass
from datetime import UTC, datetime

# Header carrying the shared cluster secret between the manager and its agents.
CLUSTER_SECRET_HEADER = "X-BackendAI-Cluster-Secret"
# Optional: the hex SHA-256 of the request body, signed with the request (see the module docstring).
BODY_HASH_HEADER = "X-BackendAI-Body-SHA256"

__all__ = [
    "BODY_HASH_HEADER",
    "CLUSTER_SECRET_HEADER",
    "AuthHeaderError",
    "ParsedAuthorization",
    "body_hash_exempt",
    "make_signature",
    "parse_authorization",
    "sign_request_headers",
]

_AUTH_RE = re.compile(
    r"^(?P<type>BackendAI|Sorna)\s+signMethod=HMAC-(?P<hash>[A-Za-z0-9_-]+)\s*,\s*"
    r"credential=(?P<ak>[^:\s]+):(?P<sig>[0-9a-fA-F]+)\s*$"
)
_WS = " \t\r\n"


class AuthHeaderError(ValueError):
    """The Authorization header is malformed."""


@dataclass(frozen=True)
class ParsedAuthorization:
    """The parts of a ``BackendAI signMethod=..., credential=AK:SIG`` header."""

    auth_type: str
    hash_type: str
    access_key: str
    signature: str


#: Hashes an HMAC can be made with (the SHAKE functions of ``hashlib.algorithms_guaranteed`` cannot).
HMAC_HASHES = frozenset(
    {
        "md5",
        "sha1",
        "sha224",
        "sha256",
        "sha384",
        "sha512",
        "sha3_224",
        "sha3_256",
        "sha3_384",
        "sha3_512",
        "blake2b",
        "blake2s",
    }
)


def parse_authorization(value: str) -> ParsedAuthorization:
    """Parse an Authorization header value, raising :class:`AuthHeaderError` if malformed."""
    m = _AUTH_RE.match(value.strip(_WS))
    if m is None:
        raise AuthHeaderError("Expected 'BackendAI signMethod=HMAC-SHA256, credential=<access-key>:<signature>'.")
    hash_type = m.group("hash").lower()
    if hash_type not in HMAC_HASHES:
        raise AuthHeaderError(f"Unsupported signature hash: HMAC-{m.group('hash')}.")
    return ParsedAuthorization(m.group("type"), hash_type, m.group("ak"), m.group("sig").lower())


def body_hash_exempt(api_version: str) -> bool:
    """Whether requests of this API version sign the hash of an empty body (v4.20181215+)."""
    m = re.match(r"^v(\d+)\.(\d{8})", api_version)
    if m is None:
        return True
    return (int(m.group(1)), m.group(2)) >= (4, "20181215")


def make_signature(
    *,
    method: str,
    path_with_query: str,
    date_header: str,
    date: datetime,
    host: str,
    content_type: str,
    version: str,
    secret_key: str,
    hash_type: str = "sha256",
    body: bytes = b"",
    version_header_name: str = "x-backendai-version",
    body_sha256: str | None = None,
) -> str:
    """Compute the hex HMAC signature of a request.

    ``date_header`` is the raw header string placed in the string to sign; ``date`` is its
    parsed value (its UTC calendar day keys the signing key). ``body`` is hashed only for API
    versions older than v4.20181215. ``body_sha256`` (the value of :data:`BODY_HASH_HEADER`, when the
    request has one) is signed as an extra line.
    """
    hash_fn = getattr(hashlib, hash_type)
    payload = b"" if body_hash_exempt(version) else body
    body_digest = hash_fn(payload).hexdigest()
    ctype = content_type.split(";", 1)[0].strip(_WS).lower()
    lines = [
        method.upper(),
        path_with_query,
        date_header.strip(_WS),
        f"host:{host.strip(_WS)}",
        f"content-type:{ctype}",
        f"{version_header_name}:{version.strip(_WS)}",
        body_digest,
    ]
    if body_sha256 is not None:
        lines.append(f"{BODY_HASH_HEADER.lower()}:{body_sha256.strip(_WS).lower()}")
    str_to_sign = "\n".join(lines).encode("utf8")
    if date.tzinfo is not None:
        date = date.astimezone(UTC)
    k1 = hmac.new(secret_key.encode("utf8"), date.strftime("%Y%m%d").encode("utf8"), hash_fn).digest()
    signing_key = hmac.new(k1, host.strip(_WS).encode("utf8"), hash_fn).digest()
    return hmac.new(signing_key, str_to_sign, hash_fn).hexdigest()


def sign_request_headers(
    *,
    method: str,
    path_with_query: str,
    host: str,
    content_type: str,
    version: str,
    access_key: str,
    secret_key: str,
    now: datetime | None = None,
    hash_type: str = "sha256",
    body: bytes = b"",
    sign_body: bool = False,
) -> dict[str, str]:
    """Return the ``Date``, ``X-BackendAI-Version`` and ``Authorization`` headers for a request; with
    ``sign_body`` also :data:`BODY_HASH_HEADER` for ``body``, covered by the signature."""
    date = now or datetime.now(UTC)
    date_header = date.isoformat()
    body_sha256 = hashlib.sha256(body).hexdigest() if sign_body else None
    sig = make_signature(
        method=method,
        path_with_query=path_with_query,
        date_header=date_header,
        date=date,
        host=host,
        content_type=content_type,
        version=version,
        secret_key=secret_key,
        hash_type=hash_type,
        body=body,
        body_sha256=body_sha256,
    )
    headers = {
        "Date": date_header,
        "X-BackendAI-Version": version,
        "Content-Type": content_type,
        "Authorization": f"BackendAI signMethod=HMAC-{hash_type.upper()}, credential={access_key}:{sig}",
    }
    if body_sha256 is not None:
        headers[BODY_HASH_HEADER] = body_sha256
    return headers
