"""Upload/download session tokens: JWT (RFC 7519) signed with HS256, implemented on :mod:`hmac`.

Only ``{"alg": "HS256", "typ": "JWT"}`` headers are accepted (never ``none`` or another algorithm), the
signature is compared in constant time, and ``exp`` is mandatory.
"""

from __future__ import annotations

import base64
import binascii
import hashlib
import hmac
import json
import secrets
import time
from typing import Any

__all__ = ["TokenError", "TokenExpired", "TokenInvalid", "TokenWrongOp", "decode_token", "issue_token"]

_HEADER = {"alg": "HS256", "typ": "JWT"}
# Clock skew tolerated between the proxy instances that issue and check a token.
LEEWAY_S = 5.0


class TokenError(Exception):
    """A token was refused; ``status`` is the HTTP status to answer (401 or 403)."""

    status = 401


class TokenInvalid(TokenError):
    """Malformed, badly signed or with an unexpected algorithm."""


class TokenExpired(TokenError):
    """Past its ``exp``."""


class TokenWrongOp(TokenError):
    """Valid, but for another operation (an upload token on the download route, ...)."""

    status = 403


def _b64e(raw: bytes) -> str:
    return base64.urlsafe_b64encode(raw).rstrip(b"=").decode("ascii")


def _b64d(text: str) -> bytes:
    if not text or any(c not in "ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789-_" for c in text):
        raise TokenInvalid("malformed token")
    try:
        return base64.urlsafe_b64decode(text + "=" * (-len(text) % 4))
    except (binascii.Error, ValueError):
        raise TokenInvalid("malformed token") from None


def _sign(signing_input: bytes, secret: str) -> bytes:
    return hmac.new(secret.encode(), signing_input, hashlib.sha256).digest()


def issue_token(claims: dict[str, Any], secret: str, lifetime_s: float, *, now: float | None = None) -> str:
    """A signed token carrying ``claims`` plus ``iat``, ``exp`` and (when absent) a random ``session``."""
    now = time.time() if now is None else now
    body = dict(claims)
    body.setdefault("session", secrets.token_hex(16))
    body["iat"] = int(now)
    body["exp"] = int(now + lifetime_s)
    head = _b64e(json.dumps(_HEADER, separators=(",", ":")).encode())
    payload = _b64e(json.dumps(body, separators=(",", ":"), ensure_ascii=True).encode())
    signing_input = f"{head}.{payload}".encode("ascii")
    return f"{head}.{payload}.{_b64e(_sign(signing_input, secret))}"


def decode_token(token: str, secret: str, *, op: str, now: float | None = None) -> dict[str, Any]:
    """The claims of a valid, unexpired token for ``op``; raises a :class:`TokenError` otherwise."""
    if not isinstance(token, str) or len(token) > 8192:
        raise TokenInvalid("malformed token")
    parts = token.split(".")
    if len(parts) != 3:
        raise TokenInvalid("malformed token")
    head_b, payload_b, sig_b = parts
    sig = _b64d(sig_b)
    expected = _sign(f"{head_b}.{payload_b}".encode("ascii"), secret)
    if not hmac.compare_digest(sig, expected):
        raise TokenInvalid("bad token signature")
    try:
        header = json.loads(_b64d(head_b))
        claims = json.loads(_b64d(payload_b))
    except (ValueError, UnicodeDecodeError):
        raise TokenInvalid("malformed token") from None
    if not isinstance(header, dict) or header.get("alg") != "HS256" or not isinstance(claims, dict):
        raise TokenInvalid("unsupported token algorithm")
    exp = claims.get("exp")
    if not isinstance(exp, int | float) or isinstance(exp, bool):
        raise TokenInvalid("the token has no expiry")
    now = time.time() if now is None else now
    if now > exp + LEEWAY_S:
        raise TokenExpired("the token has expired")
    if claims.get("op") != op:
        raise TokenWrongOp(f"this is not a {op} token")
    return claims
