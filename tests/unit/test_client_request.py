"""Unit tests of request building and signing, errors and the API-function dispatch (no server)."""

from __future__ import annotations

import hashlib
import io
import os
from collections.abc import AsyncIterator

import pytest
from dateutil.parser import isoparse

from ai.backend.client.config import APIConfig, set_config
from ai.backend.client.exceptions import BackendAPIError
from ai.backend.client.func.base import BaseFunction, api_function
from ai.backend.client.func.session import ComputeSession
from ai.backend.client.request import AttachedFile, Request
from ai.backend.client.session import AsyncSession, Session, api_session
from ai.backend.common.auth import BODY_HASH_HEADER, make_signature, parse_authorization

AK = "AKIAIOSFODNN7EXAMPLE"
SK = "wJalrXUtnFEMI/K7MDENG/bPxRfiCYEXAMPLEKEY"


@pytest.fixture(autouse=True)
def clean_env(monkeypatch: pytest.MonkeyPatch) -> None:
    for key in list(os.environ):
        if key.startswith(("BACKEND_", "SORNA_")):
            monkeypatch.delenv(key)
    set_config(None)


def _config(**kwargs: object) -> APIConfig:
    args: dict[str, object] = {
        "endpoint": "http://127.0.0.1:8081",
        "access_key": AK,
        "secret_key": SK,
        "domain": "mydomain",
    }
    args.update(kwargs)
    return APIConfig(**args)  # type: ignore[arg-type]


def _verify(req: object, secret: str = SK) -> None:
    """Recompute the signature of a built httpx.Request from what is actually sent."""
    import httpx

    assert isinstance(req, httpx.Request)
    auth = parse_authorization(req.headers["authorization"])
    assert auth.access_key == AK
    body_sha256 = req.headers.get(BODY_HASH_HEADER)
    if body_sha256 is not None:  # the body is signed: the header must be its hash
        assert body_sha256 == hashlib.sha256(req.read()).hexdigest()
    expected = make_signature(
        method=req.method,
        path_with_query=req.url.raw_path.decode("ascii"),
        date_header=req.headers["date"],
        date=isoparse(req.headers["date"]),
        host=req.headers["host"],
        content_type=req.headers["content-type"],
        version=req.headers["x-backendai-version"],
        secret_key=secret,
        body_sha256=body_sha256,
    )
    assert auth.signature == expected


async def test_signed_headers_and_query_merge() -> None:
    async with AsyncSession(config=_config(), proxy_mode=True) as sess:
        rqst = Request("GET", "/session/abc?x=1", params={"owner_access_key": "AK2", "forced": True})
        req = rqst.build(sess.http_client)
    assert req.url.raw_path == b"/session/abc?x=1&owner_access_key=AK2&forced=true"
    assert req.headers["x-backendai-version"] == "v6.20220615"
    assert req.headers["x-backendai-domain"] == "mydomain"
    assert req.headers["host"] == "127.0.0.1:8081"
    assert req.headers["content-type"] == "text/plain"
    assert req.headers["authorization"].startswith("BackendAI signMethod=HMAC-SHA256, credential=" + AK + ":")
    _verify(req)


async def test_signature_fails_with_another_secret() -> None:
    async with AsyncSession(config=_config(), proxy_mode=True) as sess:
        req = Request("GET", "/").build(sess.http_client)
    with pytest.raises(AssertionError):
        _verify(req, secret="another-secret")


async def test_signs_the_quoted_path_that_is_sent() -> None:
    async with AsyncSession(config=_config(endpoint="http://localhost:8081/api/"), proxy_mode=True) as sess:
        req = Request("POST", "/session/a b", params={"q": "x y"}).build(sess.http_client)
    assert req.url.raw_path == b"/api/session/a%20b?q=x+y"
    _verify(req)


async def test_json_body_is_signed_with_its_content_type() -> None:
    async with AsyncSession(config=_config(), proxy_mode=True) as sess:
        rqst = Request("POST", "/session")
        rqst.set_json({"image": "python", "name": "mysess"})
        req = rqst.build(sess.http_client)
    assert req.headers["content-type"] == "application/json"
    assert req.read() == b'{"image": "python", "name": "mysess"}'
    _verify(req)


async def test_multipart_upload_is_signed() -> None:
    async with AsyncSession(config=_config(), proxy_mode=True) as sess:
        rqst = Request("POST", "/session/mysess/upload")
        rqst.attach_files([AttachedFile("sub/dir/a.txt", io.BytesIO(b"hello"), "application/octet-stream")])
        req = rqst.build(sess.http_client)
        body = req.read()
    assert req.headers["content-type"].startswith("multipart/form-data; boundary=")
    assert b'name="src"; filename="sub/dir/a.txt"' in body
    assert b"hello" in body
    _verify(req)


async def test_anonymous_requests_are_unsigned() -> None:
    async with AsyncSession(config=_config(access_key=""), proxy_mode=True) as sess:
        req = Request("GET", "/").build(sess.http_client)
    assert "authorization" not in req.headers
    assert "date" in req.headers
    assert req.headers["x-backendai-version"] == "v6.20220615"


async def test_session_mode_uses_func_prefix_without_signature() -> None:
    async with AsyncSession(config=_config(endpoint_type="session"), proxy_mode=True) as sess:
        req = Request("GET", "/session/abc").build(sess.http_client)
        server_req = Request("GET", "/server/login-check").build(sess.http_client)
    assert req.url.raw_path == b"/func/session/abc"
    assert server_req.url.raw_path == b"/server/login-check"
    assert "authorization" not in req.headers


async def test_override_api_version() -> None:
    async with AsyncSession(config=_config(), proxy_mode=True) as sess:
        sess.api_version = (5, "20191215")
        req = Request("GET", "/").build(sess.http_client)
        req2 = Request("GET", "/", override_api_version="v4.20190615").build(sess.http_client)
    assert req.headers["x-backendai-version"] == "v5.20191215"
    assert req2.headers["x-backendai-version"] == "v4.20190615"
    _verify(req)


def test_request_outside_session() -> None:
    assert api_session.get() is None
    with pytest.raises(RuntimeError):
        Request("GET", "/")


def test_api_function_outside_session() -> None:
    with pytest.raises(RuntimeError, match="API session"):
        ComputeSession.hello()  # type: ignore[unused-coroutine]
    with pytest.raises(RuntimeError, match="API session"):
        ComputeSession("mysess").get_info()  # type: ignore[unused-coroutine]


class _Echo(BaseFunction):
    @api_function
    @classmethod
    async def who(cls, value: int) -> tuple[str, int, bool]:
        return cls.__name__, value, api_session.get() is not None

    @api_function
    async def twice(self, value: int) -> int:
        return value * 2

    @api_function
    @classmethod
    async def count(cls, n: int) -> AsyncIterator[int]:
        for i in range(n):
            yield i


class _SubEcho(_Echo):
    pass


def test_sync_session_dispatch() -> None:
    with Session(config=_config(), proxy_mode=True) as sess:
        assert api_session.get() is sess
        assert _Echo.who(1) == ("_Echo", 1, True)  # runs on the worker loop, sees the session
        assert _SubEcho.who(2) == ("_SubEcho", 2, True)  # classmethods bind to the subclass
        assert _Echo().twice(21) == 42
        assert list(_Echo.count(3)) == [0, 1, 2]  # type: ignore[call-overload]
    assert api_session.get() is None
    assert sess.closed
    assert not sess.worker_thread.is_alive()


async def test_async_session_dispatch() -> None:
    async with AsyncSession(config=_config(), proxy_mode=True):
        assert await _Echo.who(3) == ("_Echo", 3, True)
        assert await _Echo().twice(2) == 4
        assert [i async for i in _Echo.count(2)] == [0, 1]
    assert api_session.get() is None


def test_session_function_attributes() -> None:
    sess = AsyncSession(config=_config(), proxy_mode=True)
    assert sess.ComputeSession is ComputeSession
    assert issubclass(sess.Kernel, ComputeSession)
    assert sess.api_version == (6, "20220615")


def test_backend_api_error_from_problem_body() -> None:
    body = (
        b'{"type": "https://api.backend.ai/probs/session-not-found", "title": "Not found", '
        b'"detail": "Session \'abc\' does not exist."}'
    )
    e = BackendAPIError(404, "Not Found", body)
    assert e.status == 404
    assert e.reason == "Not Found"
    assert e.data["title"] == "Not found"
    assert str(e) == "Not found: Session 'abc' does not exist. (404)"


def test_backend_api_error_from_non_json_body() -> None:
    e = BackendAPIError(502, "Bad Gateway", "<html>upstream\n down</html>")
    assert e.data["type"].endswith("generic-error")
    assert e.data["content"] == "<html>upstream\n down</html>"
    assert str(e) == "Bad Gateway: <html>upstream down</html> (502)"


def test_backend_api_error_graphql_errors() -> None:
    e = BackendAPIError(
        400,
        "Bad Request",
        {
            "type": "https://api.backend.ai/probs/graphql-error",
            "title": "GraphQL-generated error",
            "data": [{"message": "Cannot query field 'x'."}, {"message": "Another."}],
        },
    )
    assert str(e) == "GraphQL-generated error: Cannot query field 'x'.; Another. (400)"


async def test_bodies_in_memory_are_signed_and_can_be_left_unsigned() -> None:
    async with AsyncSession(config=_config(), proxy_mode=True) as sess:
        rqst = Request("POST", "/session")
        rqst.set_json({"image": "python"})
        req = rqst.build(sess.http_client)
    assert req.headers[BODY_HASH_HEADER] == hashlib.sha256(b'{"image": "python"}').hexdigest()
    _verify(req)
    async with AsyncSession(config=_config(sign_body=False), proxy_mode=True) as sess:
        rqst = Request("POST", "/session")
        rqst.set_json({"image": "python"})
        req = rqst.build(sess.http_client)
    assert BODY_HASH_HEADER not in req.headers  # the upstream scheme, for servers that do not know the header
    _verify(req)
