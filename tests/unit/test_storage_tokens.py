"""The storage proxy's HS256 session tokens: round trip, expiry, signature, algorithm and operation checks."""

from __future__ import annotations

import base64
import hashlib
import hmac
import json

import pytest

from ai.backend.storage.tokens import TokenExpired, TokenInvalid, TokenWrongOp, decode_token, issue_token

SECRET = "a-secret-of-the-proxy-0123456789"


def _b64(data: bytes) -> str:
    return base64.urlsafe_b64encode(data).rstrip(b"=").decode()


def _forge(header: dict[str, object], claims: dict[str, object], secret: str = SECRET) -> str:
    h, p = _b64(json.dumps(header).encode()), _b64(json.dumps(claims).encode())
    sig = hmac.new(secret.encode(), f"{h}.{p}".encode(), hashlib.sha256).digest()
    return f"{h}.{p}.{_b64(sig)}"


def test_round_trip_and_standard_jwt_shape() -> None:
    token = issue_token({"op": "upload", "relpath": "a/b.txt", "size": 3}, SECRET, 60, now=1000)
    claims = decode_token(token, SECRET, op="upload", now=1010)
    assert claims["relpath"] == "a/b.txt" and claims["size"] == 3
    assert claims["exp"] == 1060 and claims["iat"] == 1000
    assert len(claims["session"]) == 32  # a random session id is added
    header = json.loads(base64.urlsafe_b64decode(token.split(".")[0] + "=="))
    assert header == {"alg": "HS256", "typ": "JWT"}
    # Independently verifiable as an RFC 7519 HS256 token.
    h, p, s = token.split(".")
    expected = hmac.new(SECRET.encode(), f"{h}.{p}".encode(), hashlib.sha256).digest()
    assert base64.urlsafe_b64decode(s + "=" * (-len(s) % 4)) == expected
    assert issue_token({"op": "upload"}, SECRET, 60) != issue_token({"op": "upload"}, SECRET, 60)


def test_expired_tokens_are_refused() -> None:
    token = issue_token({"op": "download"}, SECRET, 60, now=1000)
    assert decode_token(token, SECRET, op="download", now=1064)["op"] == "download"  # within the leeway
    with pytest.raises(TokenExpired) as e:
        decode_token(token, SECRET, op="download", now=1066)
    assert e.value.status == 401


def test_other_operation_is_forbidden() -> None:
    token = issue_token({"op": "download"}, SECRET, 60)
    with pytest.raises(TokenWrongOp) as e:
        decode_token(token, SECRET, op="upload")
    assert e.value.status == 403


def test_signature_and_tampering() -> None:
    token = issue_token({"op": "download", "relpath": "mine.txt"}, SECRET, 60)
    with pytest.raises(TokenInvalid):
        decode_token(token, "another-secret-0123456789abcdef", op="download")
    h, p, s = token.split(".")
    claims = json.loads(base64.urlsafe_b64decode(p + "=" * (-len(p) % 4)))
    claims["relpath"] = "theirs.txt"
    with pytest.raises(TokenInvalid):
        decode_token(f"{h}.{_b64(json.dumps(claims).encode())}.{s}", SECRET, op="download")
    flipped = s[:-2] + ("A" if s[-2] != "A" else "B") + s[-1]
    with pytest.raises(TokenInvalid):
        decode_token(f"{h}.{p}.{flipped}", SECRET, op="download")


def test_algorithm_none_and_malformed_tokens() -> None:
    claims = {"op": "download", "exp": 2**40}
    none_token = f"{_b64(json.dumps({'alg': 'none'}).encode())}.{_b64(json.dumps(claims).encode())}."
    for bad in (none_token, "", "a.b", "a.b.c.d", "!!!.???.***", "x" * 9000):
        with pytest.raises(TokenInvalid):
            decode_token(bad, SECRET, op="download")
    # Correctly signed, but declaring another algorithm, or without an expiry.
    with pytest.raises(TokenInvalid):
        decode_token(_forge({"alg": "HS512", "typ": "JWT"}, claims), SECRET, op="download")
    with pytest.raises(TokenInvalid):
        decode_token(_forge({"alg": "HS256", "typ": "JWT"}, {"op": "download"}), SECRET, op="download")
    assert decode_token(_forge({"alg": "HS256", "typ": "JWT"}, claims), SECRET, op="download")["op"] == "download"
