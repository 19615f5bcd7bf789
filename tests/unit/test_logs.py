"""Structured logs and request ids (``ai.backend.common.logs``): the JSON and text formats, the ``[logging]``
section, request-id parsing, the ASGI and aiohttp middlewares, the problem documents and the CLI's line."""

from __future__ import annotations

import io
import json
import logging
import re
from collections.abc import Iterator
from datetime import datetime

import httpx
import pytest
from aiohttp import web
from aiohttp.test_utils import TestClient, TestServer
from fastapi import FastAPI

from ai.backend.common import logs
from ai.backend.common.logs import (
    JSONFormatter,
    LoggingSection,
    RequestIdMiddleware,
    TextFormatter,
    access_key_var,
    bind_process,
    forward_request_id,
    install_request_ids,
    new_request_id,
    parse_request_id,
    request_id_var,
    session_id_var,
    setup_logging,
)
from ai.backend.common.peer import _with_request_id
from ai.backend.common.problems import InvalidAPIParameters, problem_document
from ai.backend.common.web import install_problem_handlers

SANE = re.compile(r"[A-Za-z0-9._-]{1,64}")


def _record(msg: str = "hello %s", args: tuple[object, ...] = ("world",), **kw: object) -> logging.LogRecord:
    rec = logging.LogRecord("ai.backend.test", logging.WARNING, __file__, 1, msg, args, None)
    for k, v in kw.items():
        setattr(rec, k, v)
    return rec


@pytest.fixture(autouse=True)
def _clean_context() -> Iterator[None]:
    """Each test starts outside any request and without process fields."""
    tokens = [(v, v.set(None)) for v in (request_id_var, access_key_var, session_id_var)]
    saved = dict(logs._process_fields)
    logs._process_fields.clear()
    yield
    logs._process_fields.clear()
    logs._process_fields.update(saved)
    for var, token in reversed(tokens):
        var.reset(token)


# ------------------------------------------------------------------------------------------- formats


def test_json_line_shape_without_context() -> None:
    line = JSONFormatter().format(_record())
    assert "\n" not in line
    doc = json.loads(line)
    assert set(doc) == {"time", "level", "logger", "message"}
    assert doc["level"] == "WARNING" and doc["logger"] == "ai.backend.test" and doc["message"] == "hello world"
    assert doc["time"].endswith("Z")
    assert datetime.fromisoformat(doc["time"].replace("Z", "+00:00")).utcoffset().total_seconds() == 0  # type: ignore[union-attr]


def test_json_line_carries_the_context_and_process_fields() -> None:
    request_id_var.set("req-1")
    access_key_var.set("AKIATEST")
    session_id_var.set("5e55")
    bind_process(agent_id="i-agent")
    doc = json.loads(JSONFormatter().format(_record()))
    assert doc["request_id"] == "req-1"
    assert doc["access_key"] == "AKIATEST"
    assert doc["session_id"] == "5e55"
    assert doc["agent_id"] == "i-agent"


def test_json_extra_fields_name_a_context_for_one_line() -> None:
    request_id_var.set("req-ctx")
    doc = json.loads(JSONFormatter().format(_record(session_id="from-extra", request_id="req-extra")))
    assert doc["session_id"] == "from-extra" and doc["request_id"] == "req-extra"


def test_json_exception_is_formatted_and_multiline_messages_stay_one_line() -> None:
    try:
        raise ValueError("bad\nthing")
    except ValueError:
        import sys

        rec = _record("first\nsecond", ())
        rec.exc_info = sys.exc_info()
    line = JSONFormatter().format(rec)
    assert "\n" not in line
    doc = json.loads(line)
    assert doc["message"] == "first\nsecond"
    assert doc["exception"].startswith("Traceback (most recent call last):")
    assert "ValueError: bad\nthing" in doc["exception"]


def test_json_survives_unserializable_extras_and_unicode() -> None:
    request_id_var.set("r")
    doc = json.loads(JSONFormatter().format(_record("%s", ("café ☕",))))
    assert doc["message"] == "café ☕"


def test_text_format_puts_the_context_after_the_message() -> None:
    fmt = TextFormatter()
    assert "[" not in fmt.format(_record())
    request_id_var.set("req-9")
    access_key_var.set("AK")
    bind_process(agent_id="i-x")  # the same on every line: left out of text
    try:
        raise RuntimeError("boom")
    except RuntimeError:
        import sys

        rec = _record()
        rec.exc_info = sys.exc_info()
    out = fmt.format(rec)
    first, rest = out.split("\n", 1)
    assert first.endswith("ai.backend.test: hello world [request_id=req-9 access_key=AK]"), first
    assert "agent_id" not in out and rest.startswith("Traceback")


def test_setup_logging_json_and_level() -> None:
    root = logging.getLogger()
    saved = (root.handlers[:], root.level)
    try:
        buf = io.StringIO()
        setup_logging(LoggingSection(format="json", level="warning"), stream=buf)
        logging.getLogger("ai.backend.t").info("hidden")
        request_id_var.set("abc")
        logging.getLogger("ai.backend.t").warning("shown")
        lines = buf.getvalue().splitlines()
        assert len(lines) == 1 and json.loads(lines[0])["message"] == "shown"
        assert json.loads(lines[0])["request_id"] == "abc"
        buf = io.StringIO()
        setup_logging(LoggingSection(format="json", level="error"), debug=True, stream=buf)
        assert root.level == logging.DEBUG
    finally:
        root.handlers[:] = saved[0]
        root.setLevel(saved[1])


# -------------------------------------------------------------------------------------------- config


def test_logging_section_defaults_and_spellings() -> None:
    s = LoggingSection.model_validate({})
    assert s.format == "text" and s.level == "INFO"
    assert LoggingSection.model_validate({"level": "warn"}).level == "WARNING"
    assert LoggingSection.model_validate({"level": "Debug"}).level == "DEBUG"
    # Upstream's keys load (and do nothing).
    up = {"level": "INFO", "drivers": ["console"], "pkg-ns": {"ai.backend": "INFO"}, "console": {"colored": True}}
    assert LoggingSection.model_validate(up).format == "text"
    for bad in ({"format": "xml"}, {"level": "loud"}, {"colour": True}):
        with pytest.raises(ValueError):
            LoggingSection.model_validate(bad)


def test_every_component_config_has_a_logging_section() -> None:
    from ai.backend.agent.config import AgentConfig
    from ai.backend.appproxy.config import AppProxyConfig
    from ai.backend.manager.config import ManagerConfig
    from ai.backend.storage.config import StorageProxyConfig
    from ai.backend.web.config import WebConfig

    section = {"logging": {"format": "json", "level": "debug"}}
    for model, base in (
        (ManagerConfig, {}),
        (AgentConfig, {}),
        (WebConfig, {}),
        (StorageProxyConfig, {}),
        (AppProxyConfig, {"appproxy": {"secret": "x" * 16}}),
    ):
        conf = model.model_validate({**base, **section})
        assert conf.logging.format == "json" and conf.logging.level == "DEBUG", model  # type: ignore[attr-defined]
        assert model.model_validate(base).logging.format == "text"  # type: ignore[attr-defined]
        with pytest.raises(ValueError):
            model.model_validate({**base, "logging": {"format": "yaml"}})


# --------------------------------------------------------------------------------------- request ids


@pytest.mark.parametrize(
    "value",
    ["a", "req-123", "A.b_c-9", "x" * 64, b"bytes-id", "0f3e9a7c2b1d4e5f"],
)
def test_sane_request_ids_are_kept(value: str | bytes) -> None:
    got = parse_request_id(value)
    assert got == (value.decode() if isinstance(value, bytes) else value)


@pytest.mark.parametrize(
    "value",
    [None, "", "x" * 65, "has space", "semi;colon", "new\nline", "ünï", "a/b", "<script>", b"\xff\xfe", "a\x00"],
)
def test_insane_request_ids_are_refused(value: str | bytes | None) -> None:
    assert parse_request_id(value) is None


def test_new_request_ids_are_sane_and_distinct() -> None:
    ids = {new_request_id() for _ in range(1000)}
    assert len(ids) == 1000
    assert all(SANE.fullmatch(i) for i in ids)


def test_problem_documents_carry_the_request_id_only_in_a_request() -> None:
    assert "request_id" not in problem_document(400, "x", "X")
    request_id_var.set("rid-7")
    assert problem_document(400, "x", "X")["request_id"] == "rid-7"
    assert InvalidAPIParameters("nope").body()["request_id"] == "rid-7"


def test_peer_calls_forward_the_request_id() -> None:
    assert _with_request_id(None) is None
    assert _with_request_id({"A": "1"}) == {"A": "1"}
    request_id_var.set("rid-peer")
    assert _with_request_id(None) == {"X-Request-ID": "rid-peer"}
    assert _with_request_id({"A": "1"}) == {"A": "1", "X-Request-ID": "rid-peer"}


# ----------------------------------------------------------------------------------- ASGI middleware


def _asgi_app(records: list[logging.LogRecord]) -> FastAPI:
    logger = logging.getLogger("ai.backend.test.asgi")
    logger.setLevel(logging.DEBUG)

    class Keep(logging.Handler):
        def emit(self, record: logging.LogRecord) -> None:
            record.request_id = request_id_var.get()  # as the formatter would read it
            records.append(record)

    logger.handlers[:] = [Keep()]
    logger.propagate = False
    app = FastAPI()
    install_problem_handlers(app, logger=logger)

    @app.get("/ok")
    async def ok() -> dict[str, str | None]:
        return {"rid": request_id_var.get()}

    @app.get("/bad")
    async def bad() -> None:
        raise InvalidAPIParameters("wrong")

    @app.get("/crash")
    async def crash() -> None:
        raise RuntimeError("kaput")

    app.add_middleware(RequestIdMiddleware)
    return app


async def test_asgi_request_ids_echoed_generated_and_in_problems() -> None:
    records: list[logging.LogRecord] = []
    transport = httpx.ASGITransport(app=_asgi_app(records), raise_app_exceptions=False)
    async with httpx.AsyncClient(transport=transport, base_url="http://t") as c:
        r = await c.get("/ok", headers={"X-Request-ID": "my-id.1"})
        assert r.headers["x-request-id"] == "my-id.1" and r.json() == {"rid": "my-id.1"}
        r = await c.get("/ok", headers={"X-Request-ID": "no good!"})
        rid = r.headers["x-request-id"]
        assert rid != "no good!" and SANE.fullmatch(rid) and r.json() == {"rid": rid}
        r = await c.get("/ok")
        assert SANE.fullmatch(r.headers["x-request-id"])
        assert len(r.headers.get_list("x-request-id")) == 1

        r = await c.get("/bad", headers={"X-Request-ID": "bad-1"})
        assert r.status_code == 400 and r.headers["x-request-id"] == "bad-1"
        assert r.json()["request_id"] == "bad-1"
        r = await c.get("/nowhere", headers={"X-Request-ID": "nf-1"})
        assert r.status_code == 404 and r.json()["request_id"] == "nf-1" and r.headers["x-request-id"] == "nf-1"
        r = await c.get("/crash", headers={"X-Request-ID": "crash-1"})
        assert r.status_code == 500 and r.json()["request_id"] == "crash-1"
        assert r.headers.get_list("x-request-id") == ["crash-1"]
    by_id = {rec.request_id: rec for rec in records}  # type: ignore[attr-defined]
    assert by_id["bad-1"].levelno == logging.DEBUG and "invalid-api-params" in by_id["bad-1"].getMessage()
    assert by_id["crash-1"].levelno == logging.ERROR and by_id["crash-1"].exc_info is not None


# -------------------------------------------------------------------------------- aiohttp middleware


async def test_aiohttp_request_ids_and_forwarding() -> None:
    from aiohttp import ClientSession

    seen: list[str | None] = []

    async def echo(request: web.Request) -> web.StreamResponse:
        seen.append(request.headers.get("X-Request-ID"))
        return web.json_response({"rid": request_id_var.get()})

    async def streamed(request: web.Request) -> web.StreamResponse:
        resp = web.StreamResponse()
        await resp.prepare(request)  # headers out before the handler returns
        await resp.write(b"x")
        return resp

    async def problem(request: web.Request) -> web.StreamResponse:
        return web.json_response(problem_document(400, "x", "X"), status=400)

    peer = web.Application()
    peer.router.add_get("/echo", echo)
    async with TestServer(peer) as peer_server:

        async def calls_peer(request: web.Request) -> web.StreamResponse:
            async with ClientSession(middlewares=(forward_request_id,)) as s:
                async with s.get(peer_server.make_url("/echo")) as r:
                    return web.json_response(await r.json())

        app = web.Application()
        install_request_ids(app)
        app.router.add_get("/calls", calls_peer)
        app.router.add_get("/stream", streamed)
        app.router.add_get("/problem", problem)
        async with TestClient(TestServer(app)) as client:
            r = await client.get("/calls", headers={"X-Request-ID": "web-1"})
            assert r.headers["X-Request-ID"] == "web-1" and seen == ["web-1"]
            r = await client.get("/stream", headers={"X-Request-ID": "bad id"})
            rid = r.headers["X-Request-ID"]
            assert SANE.fullmatch(rid) and rid != "bad id"
            r = await client.get("/problem", headers={"X-Request-ID": "p-1"})
            assert (await r.json())["request_id"] == "p-1" and r.headers["X-Request-ID"] == "p-1"
            # Nothing of a request stays for the next one on the same connection.
            assert request_id_var.get() is None


# ------------------------------------------------------------------------------------------- the CLI


def test_cli_prints_the_request_id_of_a_server_error(capsys: pytest.CaptureFixture[str]) -> None:
    from ai.backend.client.cli.core import _handle_exception
    from ai.backend.client.exceptions import BackendAPIError

    body = {"type": "https://api.backend.ai/probs/x", "title": "Nope", "detail": "no such thing", "request_id": "r-42"}
    assert _handle_exception(BackendAPIError(404, "Not Found", body)) == 1
    err = capsys.readouterr().err.splitlines()
    assert len(err) == 1, err  # errors stay one line
    assert "Nope: no such thing (404)" in err[0] and err[0].endswith("[request id: r-42]")
    # A server that sends none (upstream's): no such line.
    assert _handle_exception(BackendAPIError(404, "Not Found", {"title": "Nope"})) == 1
    assert "request id" not in capsys.readouterr().err
