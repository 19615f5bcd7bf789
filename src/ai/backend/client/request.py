"""Low-level API requests: :class:`Request`, :class:`Response` and file attachments.

A :class:`Request` belongs to the current client session (see
:data:`~ai.backend.client.session.api_session`).  :meth:`Request.fetch` signs the request
with the session's keypair (exactly the path and query string that go on the wire), sends
it, and raises :class:`~ai.backend.client.exceptions.BackendAPIError` for 4xx/5xx answers::

    async with AsyncSession():
        rqst = Request("GET", "/session/mysess")
        async with rqst.fetch() as resp:
            print(await resp.json())
"""

from __future__ import annotations

import json
from collections.abc import AsyncIterator, Mapping, Sequence
from datetime import UTC, datetime
from decimal import Decimal
from pathlib import Path
from typing import IO, Any, Literal, NamedTuple
from urllib.parse import urlencode
from uuid import UUID

import httpx

from ai.backend.common.auth import sign_request_headers

from .config import APIConfig, format_api_version
from .exceptions import BackendAPIError, BackendClientError
from .session import BaseSession, Session, api_session, build_url

__all__ = (
    "AttachedFile",
    "BaseResponse",
    "FetchContextManager",
    "Request",
    "RequestContent",
    "Response",
    "SyncResponse",
)

RequestContent = bytes | bytearray | str | IO[bytes] | None
"""The kinds of request bodies :meth:`Request.set_content` accepts."""

ParamValue = str | int | float | bool | Sequence[str]


class AttachedFile(NamedTuple):
    """A file to send as a multipart part named ``src``.

    ``filename`` may contain a relative path; the server creates parent directories.
    """

    filename: str
    stream: IO[bytes]
    content_type: str


# Methods whose repetition has the effect of one request (RFC 9110, 9.2.2): sent again on another endpoint when
# the connection broke before the answer.
_IDEMPOTENT = frozenset({"GET", "HEAD", "OPTIONS", "PUT", "DELETE"})


def _json_default(obj: Any) -> Any:
    if isinstance(obj, (Path, Decimal, UUID)):
        return str(obj)
    if isinstance(obj, datetime):
        return obj.isoformat()
    if isinstance(obj, (set, frozenset, tuple)):
        return list(obj)
    raise TypeError(f"Object of type {type(obj).__name__} is not JSON serializable")


def _param_str(value: str | int | float | bool) -> str:
    if isinstance(value, bool):
        return "true" if value else "false"
    return str(value)


def _describe(exc: BaseException) -> str:
    text = str(exc).strip()
    return text if text else type(exc).__name__


class Request:
    """An API request bound to the current client session.

    ``path`` is relative to the endpoint and may carry a query string; ``params`` are
    appended to it.  The body defaults to empty; use :meth:`set_json`,
    :meth:`set_content` or :meth:`attach_files` to set one.
    """

    def __init__(
        self,
        method: str = "GET",
        path: str | None = None,
        content: RequestContent = None,
        *,
        content_type: str | None = None,
        params: Mapping[str, ParamValue] | None = None,
        reporthook: Any = None,
        override_api_version: str | None = None,
    ) -> None:
        session = api_session.get()
        if session is None:
            raise RuntimeError("Requests must be made inside the context of a client session")
        self.session: BaseSession = session
        self.config: APIConfig = session.config
        self.method = method.upper()
        self.path = path or ""
        self.params = params
        self.reporthook = reporthook
        self.date: datetime | None = None
        self.api_version = override_api_version or format_api_version(session.api_version)
        self.headers: dict[str, str] = {
            "User-Agent": self.config.user_agent,
            "X-BackendAI-Domain": self.config.domain,
            "X-BackendAI-Version": self.api_version,
        }
        self._content: bytes | IO[bytes] = b""
        self._attached_files: Sequence[AttachedFile] | None = None
        self.content_type = "text/plain"
        self.set_content(content, content_type=content_type)

    @property
    def content(self) -> bytes | IO[bytes]:
        """The encoded request body."""
        return self._content

    def set_content(self, value: RequestContent, *, content_type: str | None = None) -> None:
        """Set the body; the content type is guessed (text/plain or application/octet-stream)."""
        if self._attached_files is not None:
            raise RuntimeError("Cannot set the content because files are already attached")
        if value is None:
            self._content, guessed = b"", "text/plain"
        elif isinstance(value, str):
            self._content, guessed = value.encode("utf-8"), "text/plain"
        elif isinstance(value, (bytes, bytearray)):
            self._content, guessed = bytes(value), "application/octet-stream"
        else:
            self._content, guessed = value, "application/octet-stream"
        self.content_type = content_type if content_type is not None else guessed

    def set_json(self, value: Any) -> None:
        """Set a JSON body (``application/json``)."""
        self.set_content(json.dumps(value, default=_json_default), content_type="application/json")

    def attach_files(self, files: Sequence[AttachedFile]) -> None:
        """Send the given files as a ``multipart/form-data`` body."""
        if self._content:
            raise RuntimeError("Cannot attach files because the content is already set")
        self._attached_files = list(files)
        self.content_type = "multipart/form-data"

    def rel_url(self) -> str:
        """The path (with the query string) relative to the endpoint, before URL normalization."""
        path, _, query = self.path.partition("?")
        path = "/" + path.lstrip("/")
        if self.config.endpoint_type == "session" and not path.startswith("/server"):
            path = "/func" + path
        extra = ""
        if self.params:
            pairs: list[tuple[str, str]] = []
            for key, value in self.params.items():
                if isinstance(value, (list, tuple)):
                    pairs.extend((key, _param_str(v)) for v in value)
                else:
                    pairs.append((key, _param_str(value)))  # type: ignore[arg-type]
            extra = urlencode(pairs)
        query = "&".join(q for q in (query, extra) if q)
        return f"{path}?{query}" if query else path

    def build(self, client: httpx.AsyncClient, *, anonymous: bool = False) -> httpx.Request:
        """Prepare the signed ``httpx.Request`` for the current endpoint.

        The signature covers the path and query string exactly as httpx will send them.
        """
        url = build_url(self.config.endpoint, self.rel_url())
        headers = dict(self.headers)
        if self._attached_files is not None:
            files = [("src", (f.filename, f.stream, f.content_type)) for f in self._attached_files]
            req = client.build_request(self.method, url, headers=headers, files=files)
        else:
            headers["Content-Type"] = self.content_type
            req = client.build_request(self.method, url, headers=headers, content=self._content)
        self.date = datetime.now(UTC)
        if self.config.endpoint_type == "api" and not self.config.is_anonymous and not anonymous:
            # The body is signed too when it is in memory (JSON, bytes, or the small multipart uploads
            # of session files); a streamed file-like body is sent unsigned, as upstream signs none.
            sign_body = self.config.sign_body and (self._attached_files is not None or isinstance(self._content, bytes))
            signed = sign_request_headers(
                method=self.method,
                path_with_query=req.url.raw_path.decode("ascii"),
                host=req.headers["host"],
                content_type=req.headers.get("content-type", ""),
                version=self.api_version,
                access_key=self.config.access_key,
                secret_key=self.config.secret_key,
                now=self.date,
                hash_type=self.config.hash_type,
                body=req.read() if sign_body else b"",
                sign_body=sign_body,
            )
            req.headers.update(signed)
        else:
            req.headers["Date"] = self.date.isoformat()
        return req

    def connect_websocket(self, **kwargs: Any) -> Any:
        """Open this request as a signed WebSocket (see :func:`ai.backend.client.ws.connect_websocket`)."""
        from .ws import connect_websocket

        return connect_websocket(self, **kwargs)

    def connect_events(self, **kwargs: Any) -> Any:
        """Open this request as a Server-Sent Events stream (see :func:`ai.backend.client.sse.connect_events`)."""
        from .sse import connect_events

        return connect_events(self, **kwargs)

    def fetch(self, *, check_status: bool = True, stream: bool = False, anonymous: bool = False) -> FetchContextManager:
        """Send the request; use as ``async with`` (or ``with`` under a sync :class:`Session`).

        The body is read before the context is entered unless *stream* is true.  With
        *check_status*, a non-2xx answer raises :class:`BackendAPIError`.
        """
        return FetchContextManager(self, check_status=check_status, stream=stream, anonymous=anonymous)


class BaseResponse:
    """The parts of a response that do not depend on the session kind."""

    def __init__(self, session: BaseSession, raw_response: httpx.Response) -> None:
        self._session = session
        self._raw = raw_response

    @property
    def session(self) -> BaseSession:
        """The client session that made the request."""
        return self._session

    @property
    def raw_response(self) -> httpx.Response:
        """The underlying ``httpx.Response``."""
        return self._raw

    @property
    def status(self) -> int:
        """The HTTP status code."""
        return self._raw.status_code

    @property
    def reason(self) -> str:
        """The HTTP reason phrase."""
        return self._raw.reason_phrase

    @property
    def headers(self) -> Mapping[str, str]:
        """The response headers."""
        return self._raw.headers

    @property
    def content_type(self) -> str:
        """The media type of the body, without parameters."""
        return self._raw.headers.get("content-type", "").split(";", 1)[0].strip().lower()

    @property
    def content_length(self) -> int | None:
        """The ``Content-Length`` header as an int, if present."""
        value = self._raw.headers.get("content-length")
        return int(value) if value and value.isdigit() else None

    @property
    def content(self) -> bytes:
        """The whole body (not available for unread streaming responses)."""
        try:
            return self._raw.content
        except httpx.ResponseNotRead:
            raise BackendClientError("The streaming response body has not been read yet") from None

    def _decode_json(self, body: bytes) -> Any:
        try:
            return json.loads(body)
        except (json.JSONDecodeError, UnicodeDecodeError) as e:
            raise BackendClientError(
                f"The server sent a malformed JSON response ({self.status} {self.reason}): {e}"
            ) from None


class Response(BaseResponse):
    """A response under :class:`~ai.backend.client.session.AsyncSession` (async readers)."""

    async def read(self) -> bytes:
        """Read and return the whole body."""
        try:
            return await self._raw.aread()
        except httpx.HTTPError as e:
            raise BackendClientError(f"Failed to read the response: {_describe(e)}") from e

    readall = read

    async def text(self) -> str:
        """The body decoded as text."""
        await self.read()
        return self._raw.text

    async def json(self) -> Any:
        """The body parsed as JSON."""
        return self._decode_json(await self.read())

    async def iter_chunks(self, chunk_size: int | None = None) -> AsyncIterator[bytes]:
        """Iterate over the body of a streaming response."""
        try:
            async for chunk in self._raw.aiter_bytes(chunk_size):
                yield chunk
        except httpx.HTTPError as e:
            raise BackendClientError(f"Failed to read the response: {_describe(e)}") from e


class SyncResponse(BaseResponse):
    """A response returned by ``with rqst.fetch()`` under a sync :class:`Session`."""

    def read(self) -> bytes:
        """The whole body."""
        return self.content

    readall = read

    def text(self) -> str:
        """The body decoded as text."""
        return self._raw.text

    def json(self) -> Any:
        """The body parsed as JSON."""
        return self._decode_json(self.content)


class FetchContextManager:
    """Sends a :class:`Request` on entry and closes the response on exit.

    Connection failures fail over to the next configured endpoint; when every
    endpoint fails, :class:`BackendClientError` names the last one tried. An idempotent
    request (GET, HEAD, OPTIONS, PUT, DELETE) with a body held in memory is also sent
    again to the next endpoint when its connection breaks before the answer arrives (a
    manager that died under it); other requests are not repeated, since the server may
    have acted on them.
    """

    def __init__(
        self, request: Request, *, check_status: bool = True, stream: bool = False, anonymous: bool = False
    ) -> None:
        self.request = request
        self.check_status = check_status
        self.stream = stream
        self.anonymous = anonymous
        self._raw: httpx.Response | None = None

    async def _send(self) -> httpx.Response:
        session = self.request.session
        config = session.config
        attempts = len(config.endpoints)
        for attempt in range(attempts):
            endpoint = config.endpoint
            req = self.request.build(session.http_client, anonymous=self.anonymous)
            try:
                return await session.http_client.send(req, stream=True)
            except (httpx.ConnectError, httpx.ConnectTimeout) as e:
                if attempt + 1 < attempts:
                    config.rotate_endpoints()
                    continue
                raise BackendClientError(f"Cannot connect to the API endpoint {endpoint}: {_describe(e)}") from e
            except (httpx.RemoteProtocolError, httpx.ReadError, httpx.WriteError) as e:
                if attempt + 1 < attempts and self._repeatable():
                    config.rotate_endpoints()
                    continue
                raise BackendClientError(f"Request to the API endpoint {endpoint} failed: {_describe(e)}") from e
            except httpx.TimeoutException as e:
                raise BackendClientError(
                    f"Timed out while waiting for the API endpoint {endpoint}: {_describe(e)}"
                ) from e
            except httpx.HTTPError as e:
                raise BackendClientError(f"Request to the API endpoint {endpoint} failed: {_describe(e)}") from e
        raise BackendClientError("No API endpoint is configured")

    def _repeatable(self) -> bool:
        """Whether sending the request again cannot do anything twice: an idempotent method with a body
        that can be read again."""
        req = self.request
        return (
            req.method.upper() in _IDEMPOTENT
            and req._attached_files is None
            and isinstance(req.content, (bytes, bytearray))
        )

    async def __aenter__(self) -> Response:
        raw = await self._send()
        self._raw = raw
        try:
            if self.check_status and not 200 <= raw.status_code < 300:
                body = await raw.aread()
                raise BackendAPIError(raw.status_code, raw.reason_phrase, body)
            if not self.stream:
                await raw.aread()
        except httpx.HTTPError as e:
            await raw.aclose()
            raise BackendClientError(f"Failed to read the response: {_describe(e)}") from e
        except BaseException:
            await raw.aclose()
            raise
        return Response(self.request.session, raw)

    async def __aexit__(self, *exc_info: object) -> Literal[False]:
        if self._raw is not None:
            await self._raw.aclose()
            self._raw = None
        return False

    def __enter__(self) -> SyncResponse:
        session = self.request.session
        if not isinstance(session, Session):
            raise RuntimeError("Use 'async with' to fetch under an AsyncSession")
        self.stream = False
        resp = session.worker_thread.execute(self.__aenter__())
        return SyncResponse(session, resp.raw_response)

    def __exit__(self, *exc_info: object) -> Literal[False]:
        session = self.request.session
        assert isinstance(session, Session)
        session.worker_thread.execute(self.__aexit__())
        return False
