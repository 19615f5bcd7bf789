"""Server-sent events (``text/event-stream``): an incremental parser and the streaming response classes.

:class:`SSEParser` turns received bytes into :class:`SSEMessage` objects following the HTML
event-stream rules (``event``/``data``/``id``/``retry`` fields, ``:`` comments, any of CRLF, LF or CR
as line ends, multi-line data joined with ``\\n``). :func:`connect_events` opens a signed request as
an :class:`SSEContextManager`::

    async with AsyncSession():
        async with connect_events(Request("GET", "/events/session", params={"name": "*"})) as resp:
            async for ev in resp:
                print(ev.event, ev.json())

Iteration ends after the server's ``server_close`` event (which is yielded). When the connection
drops before that, the response reconnects after the ``retry`` delay (5 s unless the server sets
one) unless ``auto_reconnect=False``; a refused reconnection raises ``BackendAPIError``.
"""

from __future__ import annotations

import asyncio
import codecs
import json
import re
from collections.abc import AsyncIterator, Awaitable, Callable, Iterator
from dataclasses import dataclass
from typing import Any, Literal

import httpx

from .exceptions import BackendClientError
from .request import BaseResponse, FetchContextManager, Request
from .session import Session

__all__ = ("SSEContextManager", "SSEMessage", "SSEParser", "SSEResponse", "SyncSSEResponse", "connect_events")

DEFAULT_RETRY = 5.0  # seconds before reconnecting
SERVER_CLOSE = "server_close"
_EOL = re.compile(r"\r\n|\r|\n")


@dataclass(frozen=True)
class SSEMessage:
    """One event: its type (``message`` unless named), its data lines joined by ``\\n``, its id and the
    reconnection delay in milliseconds it set, if any."""

    event: str
    data: str
    id: str | None = None
    retry: int | None = None

    def json(self) -> Any:
        """The data parsed as JSON."""
        try:
            return json.loads(self.data)
        except json.JSONDecodeError as e:
            raise BackendClientError(f"The {self.event!r} event carries malformed JSON data: {e}") from None


class SSEParser:
    """An incremental ``text/event-stream`` parser: :meth:`feed` bytes, get the completed messages."""

    def __init__(self) -> None:
        self._decoder = codecs.getincrementaldecoder("utf-8")(errors="replace")
        self._buf = ""
        self._started = False
        self._event = ""
        self._data: list[str] = []
        self._retry: int | None = None
        self.last_event_id: str | None = None
        self.retry: int | None = None  # the latest reconnection delay (ms) the stream asked for

    def feed(self, chunk: bytes | str) -> list[SSEMessage]:
        """Consume ``chunk`` and return the messages it completed."""
        text = self._decoder.decode(chunk) if isinstance(chunk, bytes) else chunk
        if not self._started and text:
            self._started = True
            text = text.removeprefix("\ufeff")
        self._buf += text
        out: list[SSEMessage] = []
        while True:
            m = _EOL.search(self._buf)
            if m is None:
                break
            if m.group() == "\r" and m.end() == len(self._buf):
                break  # the "\n" of a CRLF may be in the next chunk
            line, self._buf = self._buf[: m.start()], self._buf[m.end() :]
            msg = self._line(line)
            if msg is not None:
                out.append(msg)
        return out

    def close(self) -> list[SSEMessage]:
        """End of stream: the lines still buffered are processed (a CR held back for a possible CRLF ends
        its line); an unterminated line and an event without its closing empty line are dropped."""
        out: list[SSEMessage] = []
        rest = self._buf + self._decoder.decode(b"", final=True)
        self._buf = ""
        for line in _EOL.split(rest)[:-1]:
            msg = self._line(line)
            if msg is not None:
                out.append(msg)
        self._event, self._data, self._retry = "", [], None
        return out

    def _line(self, line: str) -> SSEMessage | None:
        if not line:
            return self._dispatch()
        if line.startswith(":"):
            return None  # a comment (keep-alive)
        name, sep, value = line.partition(":")
        if sep and value.startswith(" "):
            value = value[1:]
        if name == "event":
            self._event = value
        elif name == "data":
            self._data.append(value)
        elif name == "id":
            if "\0" not in value:
                self.last_event_id = value or None
        elif name == "retry":
            if value.isdigit():
                self._retry = self.retry = int(value)
        return None

    def _dispatch(self) -> SSEMessage | None:
        event, data, retry = self._event, self._data, self._retry
        self._event, self._data, self._retry = "", [], None
        if not data:
            return None  # nothing to deliver: an event without data lines is discarded
        return SSEMessage(event=event or "message", data="\n".join(data), id=self.last_event_id, retry=retry)


class SSEResponse(BaseResponse):
    """An open event stream; iterate it (``async for ev in resp``) for :class:`SSEMessage` objects."""

    def __init__(
        self,
        session: Any,
        raw_response: httpx.Response,
        *,
        connector: Callable[[], Awaitable[httpx.Response]],
        auto_reconnect: bool = True,
        default_retry: float = DEFAULT_RETRY,
    ) -> None:
        super().__init__(session, raw_response)
        self._connector = connector
        self._auto_reconnect = auto_reconnect
        self._retry = default_retry

    async def fetch_events(self) -> AsyncIterator[SSEMessage]:
        """Yield the events until (and including) ``server_close``, reconnecting when allowed."""
        while True:
            parser = SSEParser()
            try:
                async for chunk in self._raw.aiter_bytes():
                    for msg in parser.feed(chunk):
                        yield msg
                        if msg.event == SERVER_CLOSE:
                            return
                for msg in parser.close():
                    yield msg
                    if msg.event == SERVER_CLOSE:
                        return
            except httpx.HTTPError as e:
                if not self._auto_reconnect:
                    raise BackendClientError(f"The event stream was interrupted: {e or type(e).__name__}") from e
            if parser.retry is not None:
                self._retry = parser.retry / 1000
            if not self._auto_reconnect:
                return
            await asyncio.sleep(self._retry)
            self._raw = await self._connector()

    def __aiter__(self) -> AsyncIterator[SSEMessage]:
        return self.fetch_events()


class SyncSSEResponse:
    """The event stream under a blocking :class:`~ai.backend.client.session.Session` (``for ev in resp``)."""

    def __init__(self, session: Session, response: SSEResponse) -> None:
        self._session = session
        self._response = response

    @property
    def status(self) -> int:
        return self._response.status

    @property
    def headers(self) -> Any:
        return self._response.headers

    def __iter__(self) -> Iterator[SSEMessage]:
        return self._session.worker_thread.execute_generator(self._response.fetch_events())


class SSEContextManager:
    """Opens the event stream of a :class:`~ai.backend.client.request.Request` on entry and closes it
    on exit; ``async with`` under an ``AsyncSession``, ``with`` under a ``Session``.

    A 4xx/5xx answer raises ``BackendAPIError`` on entry (before any event).
    """

    def __init__(self, request: Request, *, auto_reconnect: bool = True, default_retry: float = DEFAULT_RETRY) -> None:
        self.request = request
        self.auto_reconnect = auto_reconnect
        self.default_retry = default_retry
        self._fetch: FetchContextManager | None = None

    async def _connect(self) -> httpx.Response:
        await self._release()
        self.request.headers["Accept"] = "text/event-stream"
        self._fetch = FetchContextManager(self.request, stream=True)
        resp = await self._fetch.__aenter__()
        if resp.content_type != "text/event-stream":
            await self._release()
            raise BackendClientError(f"The server did not answer with an event stream (got {resp.content_type!r}).")
        return resp.raw_response

    async def _release(self) -> None:
        fetch, self._fetch = self._fetch, None
        if fetch is not None:
            await fetch.__aexit__(None, None, None)

    async def __aenter__(self) -> SSEResponse:
        raw = await self._connect()
        return SSEResponse(
            self.request.session,
            raw,
            connector=self._connect,
            auto_reconnect=self.auto_reconnect,
            default_retry=self.default_retry,
        )

    async def __aexit__(self, *exc_info: object) -> Literal[False]:
        await self._release()
        return False

    def __enter__(self) -> SyncSSEResponse:
        session = self.request.session
        if not isinstance(session, Session):
            raise RuntimeError("Use 'async with' to listen to events under an AsyncSession")
        return SyncSSEResponse(session, session.worker_thread.execute(self.__aenter__()))

    def __exit__(self, *exc_info: object) -> Literal[False]:
        session = self.request.session
        assert isinstance(session, Session)
        session.worker_thread.execute(self.__aexit__())
        return False


def connect_events(
    request: Request, *, auto_reconnect: bool = True, default_retry: float = DEFAULT_RETRY
) -> SSEContextManager:
    """Open ``request`` as an event stream (see :class:`SSEContextManager`)."""
    return SSEContextManager(request, auto_reconnect=auto_reconnect, default_retry=default_retry)
