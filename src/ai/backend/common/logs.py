"""Logs of every server: the ``[logging]`` config section, the text and JSON formats, the per-request context
(request id, access key, session id) and the request ids themselves.

Named ``logs`` rather than ``logging`` so that nobody ever imports this module in place of the standard one.

A request id is taken from the request's ``X-Request-ID`` header when it is sane (1 to 64 characters of
``[A-Za-z0-9._-]``), else made up; it is answered in the ``X-Request-ID`` response header, put in every
problem document (:func:`~ai.backend.common.problems.problem_document` reads :data:`request_id_var`), written
on every log line of the request, and passed on to the peers a request calls (manager → agent, manager →
storage proxy, webserver → manager), so one id follows a call through every component.

The context lives in :mod:`contextvars`: a middleware sets the request id at the start of each request
(:class:`RequestIdMiddleware` for the ASGI servers, :func:`install_request_ids` for the aiohttp ones), the
manager's authentication sets the access key and its session lookups the session id; tasks started during a
request inherit them. Process-wide fields (the agent's id) are set once with :func:`bind_process`.
"""

from __future__ import annotations

import json
import logging
import os
import re
import sys
from collections.abc import Awaitable, Callable
from contextvars import ContextVar
from datetime import UTC, datetime
from typing import IO, Any, Literal

from aiohttp import ClientHandlerType, ClientRequest, ClientResponse, web
from pydantic import BaseModel, ConfigDict, Field, field_validator

__all__ = [
    "REQUEST_ID_HEADER",
    "JSONFormatter",
    "LoggingSection",
    "RequestIdMiddleware",
    "TextFormatter",
    "access_key_var",
    "bind_process",
    "forward_request_id",
    "install_request_ids",
    "new_request_id",
    "parse_request_id",
    "request_id_var",
    "session_id_var",
    "setup_logging",
]

REQUEST_ID_HEADER = "X-Request-ID"
_HEADER_BYTES = REQUEST_ID_HEADER.lower().encode()
_SANE = re.compile(r"[A-Za-z0-9._-]{1,64}")
_SANE_BYTES = re.compile(rb"[A-Za-z0-9._-]{1,64}")

#: The id of the request being handled (None outside requests).
request_id_var: ContextVar[str | None] = ContextVar("request_id", default=None)
#: The access key of the authenticated caller (set by the manager once the signature is verified).
access_key_var: ContextVar[str | None] = ContextVar("access_key", default=None)
#: The session the request is about (set by the manager when it finds or creates the session).
session_id_var: ContextVar[str | None] = ContextVar("session_id", default=None)

#: Fields of a request's context, as they are named in JSON log lines.
_CONTEXT: tuple[tuple[str, ContextVar[str | None]], ...] = (
    ("request_id", request_id_var),
    ("access_key", access_key_var),
    ("session_id", session_id_var),
)
#: Fields of the whole process (``agent_id``): see :func:`bind_process`.
_process_fields: dict[str, str] = {}


def bind_process(**fields: str) -> None:
    """Fields written on every JSON log line of this process from now on (e.g. ``agent_id``)."""
    _process_fields.update({k: v for k, v in fields.items() if v})


def parse_request_id(value: str | bytes | None) -> str | None:
    """``value`` if it is a sane request id (1–64 characters of ``[A-Za-z0-9._-]``), else None."""
    if value is None:
        return None
    if isinstance(value, bytes):
        return value.decode("ascii") if _SANE_BYTES.fullmatch(value) else None
    return value if _SANE.fullmatch(value) else None


def new_request_id() -> str:
    """A fresh request id: 16 random hex digits (unique enough to find one request in the logs)."""
    return os.urandom(8).hex()


# ------------------------------------------------------------------------------------------- formats


def _context_fields(record: logging.LogRecord) -> dict[str, str]:
    # ``log.info(..., extra={"session_id": ...})`` names a field for one line; the context fills in the rest.
    fields: dict[str, str] = {}
    for name, var in _CONTEXT:
        value = getattr(record, name, None) or var.get()
        if value:
            fields[name] = str(value)
    return fields


class JSONFormatter(logging.Formatter):
    """One JSON object per line: ``time`` (ISO 8601, UTC), ``level``, ``logger``, ``message``, the context
    fields that are known (``request_id``, ``access_key``, ``session_id``, ``agent_id``) and ``exception``
    (the formatted traceback) when the record carries one."""

    def format(self, record: logging.LogRecord) -> str:
        stamp = datetime.fromtimestamp(record.created, UTC).isoformat(timespec="milliseconds")
        doc: dict[str, Any] = {
            "time": stamp.replace("+00:00", "Z"),
            "level": record.levelname,
            "logger": record.name,
            "message": record.getMessage(),
        }
        doc.update(_context_fields(record))
        for name, value in _process_fields.items():
            doc.setdefault(name, getattr(record, name, None) or value)
        if record.exc_info:
            if not record.exc_text:
                record.exc_text = self.formatException(record.exc_info)
        if record.exc_text:
            doc["exception"] = record.exc_text
        if record.stack_info:
            doc["stack"] = self.formatStack(record.stack_info)
        return json.dumps(doc, ensure_ascii=False, default=str)


class TextFormatter(logging.Formatter):
    """``time LEVEL logger: message``, with the request's context in brackets when there is one (the
    process-wide fields are left out: they are the same on every line)."""

    def __init__(self) -> None:
        super().__init__("%(asctime)s %(levelname)s %(name)s: %(message)s")

    def format(self, record: logging.LogRecord) -> str:
        line = super().format(record)
        fields = _context_fields(record)
        if not fields:
            return line
        context = " [" + " ".join(f"{k}={v}" for k, v in fields.items()) + "]"
        # After the message, before a traceback: the context stays on the line that says what happened.
        head, sep, tail = line.partition("\n")
        return head + context + sep + tail


# -------------------------------------------------------------------------------------------- config

_LEVELS = ("DEBUG", "INFO", "WARNING", "ERROR", "CRITICAL")


class LoggingSection(BaseModel):
    """The ``[logging]`` table every component's config has.

    ``format``: ``"text"`` (the default, for people) or ``"json"`` (one object per line, for log collectors);
    ``level``: the lowest level written (``--debug`` makes it ``DEBUG``). Upstream's own keys (``drivers``,
    ``pkg-ns``, ``console``, ``file``, ``logstash``, ``graylog``) are accepted and ignored, so upstream's
    sample configs still load; anything else is an error, as in the other sections.
    """

    model_config = ConfigDict(extra="forbid", populate_by_name=True)

    format: Literal["text", "json"] = "text"
    level: str = "INFO"
    drivers: Any = None
    pkg_ns: Any = Field(default=None, alias="pkg-ns")
    console: Any = None
    file: Any = None
    logstash: Any = None
    graylog: Any = None

    @field_validator("level", mode="before")
    @classmethod
    def _level(cls, v: Any) -> str:
        name = str(v).upper()
        name = "WARNING" if name == "WARN" else name
        if name not in _LEVELS:
            raise ValueError(f"unknown level {v!r}: use one of {', '.join(lv.lower() for lv in _LEVELS)}")
        return name


def setup_logging(section: LoggingSection | None = None, *, debug: bool = False, stream: IO[str] | None = None) -> None:
    """Send the root logger's records to ``stream`` (stderr) in the section's format and level; ``debug``
    lowers the level to ``DEBUG``. Replaces the handlers the root logger had."""
    section = section or LoggingSection()
    handler = logging.StreamHandler(stream if stream is not None else sys.stderr)
    handler.setFormatter(JSONFormatter() if section.format == "json" else TextFormatter())
    logging.basicConfig(level=logging.DEBUG if debug else section.level, handlers=[handler], force=True)


# --------------------------------------------------------------------------------------------- ASGI


class RequestIdMiddleware:
    """The request id of each HTTP request or WebSocket of an ASGI app: from ``X-Request-ID`` if sane, else
    new; set in :data:`request_id_var` and answered in ``X-Request-ID``. Add it last (outermost), so that the
    problems the other middlewares answer carry it too.

    A plain ASGI wrapper (one header scan and one header appended) for the manager's hot path. When the app
    raises, the id stays set: the server's error handler, outside every middleware, logs and answers with it.
    """

    def __init__(self, app: Callable[..., Awaitable[None]]) -> None:
        self.app = app

    async def __call__(self, scope: dict[str, Any], receive: Any, send: Any) -> None:
        kind = scope["type"]
        if kind != "http" and kind != "websocket":
            await self.app(scope, receive, send)
            return
        rid: str | None = None
        for name, value in scope.get("headers", ()):
            if name == _HEADER_BYTES:
                rid = parse_request_id(value)
                break
        if rid is None:
            rid = new_request_id()
        token = request_id_var.set(rid)
        if kind == "websocket":
            await self.app(scope, receive, send)
            request_id_var.reset(token)
            return
        header = (_HEADER_BYTES, rid.encode())

        async def send_with_id(message: dict[str, Any]) -> None:
            if message["type"] == "http.response.start":
                message = {**message, "headers": [*message.get("headers", ()), header]}
            await send(message)

        await self.app(scope, receive, send_with_id)
        request_id_var.reset(token)


# ------------------------------------------------------------------------------------------- aiohttp

REQUEST_ID_KEY = web.RequestKey("request_id", str)


@web.middleware
async def request_id_middleware(request: web.Request, handler: Any) -> web.StreamResponse:
    """The aiohttp form of :class:`RequestIdMiddleware` (the header is added by :func:`_answer_request_id`)."""
    rid = parse_request_id(request.headers.get(REQUEST_ID_HEADER)) or new_request_id()
    request[REQUEST_ID_KEY] = rid
    # aiohttp may handle the requests of one connection in one task: nothing of the previous one stays.
    tokens = [(request_id_var, request_id_var.set(rid))]
    tokens += [(var, var.set(None)) for var in (access_key_var, session_id_var)]
    resp: web.StreamResponse = await handler(request)
    # Reset only after an answer: when the handler raises, aiohttp's own error log line still has the id.
    for var, token in reversed(tokens):
        var.reset(token)
    return resp


async def _answer_request_id(request: web.Request, response: web.StreamResponse) -> None:
    # on_response_prepare: streamed answers and WebSockets send their headers before the handler returns.
    rid = request.get(REQUEST_ID_KEY)
    if rid is not None:
        response.headers[REQUEST_ID_HEADER] = rid


def install_request_ids(app: web.Application) -> None:
    """Request ids for an aiohttp application: its outermost middleware and the response header."""
    app.middlewares.insert(0, request_id_middleware)
    app.on_response_prepare.append(_answer_request_id)


async def forward_request_id(request: ClientRequest, handler: ClientHandlerType) -> ClientResponse:
    """An aiohttp client middleware: the current request id goes with the calls made while handling it."""
    rid = request_id_var.get()
    if rid is not None:
        request.headers[REQUEST_ID_HEADER] = rid
    return await handler(request)
