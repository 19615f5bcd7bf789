"""The client's ``text/event-stream`` parser (:mod:`ai.backend.client.sse`)."""

from __future__ import annotations

import httpx
import pytest

from ai.backend.client.exceptions import BackendClientError
from ai.backend.client.sse import SSEMessage, SSEParser, SSEResponse


def parse_all(*chunks: bytes | str) -> list[SSEMessage]:
    p = SSEParser()
    out: list[SSEMessage] = []
    for c in chunks:
        out.extend(p.feed(c))
    out.extend(p.close())
    return out


def test_named_events_with_json_data_and_comments() -> None:
    stream = b': keep-alive\n\nevent: session_started\ndata: {"sessionId": "x"}\n\nevent: server_close\ndata: {}\n\n'
    msgs = parse_all(stream)
    assert [(m.event, m.data) for m in msgs] == [("session_started", '{"sessionId": "x"}'), ("server_close", "{}")]
    assert msgs[0].json() == {"sessionId": "x"}


def test_unnamed_event_is_message_and_multiline_data_is_joined() -> None:
    msgs = parse_all("data: first\ndata:second\ndata:  third\n\n")
    assert msgs == [SSEMessage("message", "first\nsecond\n third")]


@pytest.mark.parametrize("eol", ["\n", "\r\n", "\r"])
def test_every_line_ending(eol: str) -> None:
    text = eol.join(["event: a", "data: 1", "", "event: b", "data: 2", "", ""])
    assert [(m.event, m.data) for m in parse_all(text)] == [("a", "1"), ("b", "2")]


def test_split_anywhere_even_inside_crlf_and_utf8() -> None:
    raw = 'event: ü\r\ndata: {"m": "한글"}\r\n\r\n'.encode()
    whole = parse_all(raw)
    for i in range(1, len(raw)):
        assert parse_all(raw[:i], raw[i:]) == whole, i
    assert parse_all(*[raw[i : i + 1] for i in range(len(raw))]) == whole
    assert whole[0].event == "ü" and whole[0].json() == {"m": "한글"}


def test_cr_then_lf_in_next_chunk_is_one_line_end() -> None:
    p = SSEParser()
    assert p.feed("data: x\r") == []
    assert p.feed("\n\r\n") == [SSEMessage("message", "x")]


def test_id_retry_and_bom() -> None:
    msgs = parse_all("\ufeffid: 7\nretry: 2500\nevent: e\ndata: d\n\nretry: nope\ndata: e\n\n")
    assert msgs[0] == SSEMessage("e", "d", id="7", retry=2500)
    assert msgs[1] == SSEMessage("message", "e", id="7", retry=None)  # the id persists, bad retry ignored


def test_incomplete_event_and_empty_data_are_not_dispatched() -> None:
    assert parse_all("event: lonely\n\n") == []  # no data lines
    assert parse_all("data: cut off\n") == []  # the stream ended before the empty line
    assert parse_all("data: x\r\r") == [SSEMessage("message", "x")]  # a trailing CR still ends the event


def test_field_without_colon_and_unknown_fields() -> None:
    assert parse_all("data\nfoo: bar\n\n") == [SSEMessage("message", "")]


def test_bad_json_is_a_client_error() -> None:
    with pytest.raises(BackendClientError, match="malformed JSON"):
        SSEMessage("x", "{nope").json()


class _Bytes(httpx.AsyncByteStream):
    def __init__(self, *chunks: bytes) -> None:
        self.chunks = chunks

    async def __aiter__(self):  # type: ignore[no-untyped-def]
        for c in self.chunks:
            yield c


def _resp(*chunks: bytes) -> httpx.Response:
    return httpx.Response(200, headers={"content-type": "text/event-stream"}, stream=_Bytes(*chunks))


async def test_response_reconnects_until_server_close() -> None:
    later = [_resp(b"event: b\ndata: 2\n\nevent: server_close\ndata: {}\n\nevent: c\ndata: 3\n\n")]
    calls = 0

    async def connector() -> httpx.Response:
        nonlocal calls
        calls += 1
        return later.pop(0)

    first = _resp(b"retry: 10\n\nevent: a\ndata: 1\n", b"\n")
    resp = SSEResponse(None, first, connector=connector)
    got = [(m.event, m.data) async for m in resp]
    assert got == [("a", "1"), ("b", "2"), ("server_close", "{}")] and calls == 1
    # Without auto-reconnection the stream just ends with the connection.
    resp = SSEResponse(None, _resp(b"event: a\ndata: 1\n\n"), connector=connector, auto_reconnect=False)
    assert [m.event async for m in resp] == ["a"] and calls == 1
