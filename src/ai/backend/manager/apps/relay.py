"""The TCP relay of an app stream (``tcpproxy``/``httpproxy``, spec §2.1): one accepted WebSocket carries one
TCP connection to the app's published port, both ways, in BINARY frames.

* client → app: every BINARY frame is written to the connection (TEXT frames are not part of the protocol
  and are ignored, as upstream does); WebSocket pings are answered by the server itself;
* app → client: reads of up to 256 KiB, each sent as one BINARY frame;
* close codes: the app refused the connection 1013 (try again later: it may still be starting), the app
  closed it (EOF) 1001, any other failure 1011, the session ended 1001.

Each packet counts as activity of the session (idle timeouts).
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import uuid
from collections.abc import Callable

from starlette.websockets import WebSocket, WebSocketDisconnect

from .circuits import CircuitRegistry
from .launch import AppEndpoint

__all__ = ["CHUNK_SIZE", "relay"]

log = logging.getLogger(__name__)

CHUNK_SIZE = 256 * 1024
CONNECT_TIMEOUT = 10.0
# WebSocket close codes (RFC 6455 §7.4.1 and the IANA registry).
NORMAL, GOING_AWAY, INTERNAL_ERROR, TRY_AGAIN_LATER = 1000, 1001, 1011, 1013


class _ClientGone(Exception):
    """The WebSocket client went away (its errors are told apart from the app connection's)."""


async def _client_to_app(ws: WebSocket, writer: asyncio.StreamWriter, on_packet: Callable[[], None]) -> None:
    while True:
        try:
            msg = await ws.receive()
        except (WebSocketDisconnect, RuntimeError, OSError) as e:
            raise _ClientGone from e
        if msg["type"] == "websocket.disconnect":
            raise _ClientGone
        data = msg.get("bytes")
        if data is None:
            continue
        on_packet()
        writer.write(data)
        await writer.drain()


async def _app_to_client(ws: WebSocket, reader: asyncio.StreamReader, on_packet: Callable[[], None]) -> None:
    while True:
        data = await reader.read(CHUNK_SIZE)
        if not data:
            return
        on_packet()
        try:
            await ws.send_bytes(data)
        except (WebSocketDisconnect, RuntimeError, OSError) as e:
            raise _ClientGone from e


async def _pump(
    ws: WebSocket, reader: asyncio.StreamReader, writer: asyncio.StreamWriter, on_packet: Callable[[], None]
) -> tuple[int, str]:
    """Copy both ways until one side ends; the close code and reason for the client (``NORMAL`` when the
    client itself went away: nothing is left to close)."""
    up = asyncio.ensure_future(_client_to_app(ws, writer, on_packet))
    down = asyncio.ensure_future(_app_to_client(ws, reader, on_packet))
    try:
        done, _ = await asyncio.wait({up, down}, return_when=asyncio.FIRST_COMPLETED)
    finally:
        for t in (up, down):
            t.cancel()
        await asyncio.gather(up, down, return_exceptions=True)
    first = down if down in done else up
    exc = first.exception()
    if exc is None:  # only the app's side ends without an error: EOF
        return GOING_AWAY, "The app closed the connection."
    if isinstance(exc, _ClientGone):
        return NORMAL, ""
    return INTERNAL_ERROR, f"The connection to the app failed: {type(exc).__name__}."


async def relay(
    ws: WebSocket,
    endpoint: AppEndpoint,
    *,
    circuits: CircuitRegistry,
    session_id: uuid.UUID,
    on_packet: Callable[[], None],
) -> None:
    """Connect to the app and relay until either side ends or the session does; ``ws`` is accepted."""
    try:
        reader, writer = await asyncio.wait_for(
            asyncio.open_connection(endpoint.host, endpoint.host_port), CONNECT_TIMEOUT
        )
    except ConnectionRefusedError:
        await _close(ws, TRY_AGAIN_LATER, f"The app {endpoint.app.name!r} refused the connection.")
        return
    except (OSError, TimeoutError) as e:
        await _close(ws, INTERNAL_ERROR, f"Cannot connect to the app {endpoint.app.name!r}: {type(e).__name__}.")
        return
    on_packet()
    task = asyncio.ensure_future(_pump(ws, reader, writer, on_packet))
    code, reason = NORMAL, ""
    try:
        with circuits.track(session_id, endpoint.app.name, task) as circuit:
            await asyncio.wait({task})
            if task.cancelled():
                code, reason = GOING_AWAY, f"The session ended ({circuit.closed_by or 'closed'})."
            elif task.exception() is not None:
                log.warning("app stream of session %s failed: %r", session_id, task.exception())
                code, reason = INTERNAL_ERROR, "The app stream failed."
            else:
                code, reason = task.result()
    finally:
        task.cancel()  # the handler itself was cancelled (server shutdown): stop the copying too
        writer.close()
        with contextlib.suppress(OSError):
            await writer.wait_closed()
    if code != NORMAL:
        await _close(ws, code, reason)


async def _close(ws: WebSocket, code: int, reason: str) -> None:
    with contextlib.suppress(WebSocketDisconnect, RuntimeError, OSError):
        await ws.close(code=code, reason=reason[:120])
