"""An ASGI wrapper that refuses request bodies over a size limit before any handler reads them.

Handlers (and request signing, which reads every body) may then trust the body to fit in memory. A body
with a ``Content-Length`` over the limit is answered 413 at once; a chunked body without one is buffered
up to the limit and refused the moment it passes it.
"""

from __future__ import annotations

import json

from starlette.types import ASGIApp, Message, Receive, Scope, Send

from ai.backend.common.problems import problem_document


async def _send_413(send: Send, limit: int) -> None:
    body = json.dumps(
        problem_document(
            413,
            "request-too-large",
            "Request body too large",
            f"The request body exceeds the server's limit of {limit} bytes.",
        )
    ).encode()
    headers = [
        (b"content-type", b"application/problem+json"),
        (b"content-length", str(len(body)).encode()),
        (b"connection", b"close"),
    ]
    await send({"type": "http.response.start", "status": 413, "headers": headers})
    await send({"type": "http.response.body", "body": body})


class BodyLimitMiddleware:
    """Refuse HTTP request bodies larger than ``limit`` bytes with a 413 problem."""

    def __init__(self, app: ASGIApp, limit: int) -> None:
        self.app = app
        self.limit = limit

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return
        length: int | None = None
        for name, value in scope.get("headers", []):
            if name == b"content-length":
                try:
                    length = int(value)
                except ValueError:
                    length = None
                break
        if length is not None:
            if length > self.limit:
                await _send_413(send, self.limit)
                return
            await self.app(scope, receive, send)
            return
        # No length given (chunked): read it here, up to the limit, then replay it to the app.
        chunks: list[Message] = []
        size = 0
        while True:
            message = await receive()
            if message["type"] != "http.request":
                chunks.append(message)
                break
            size += len(message.get("body", b""))
            if size > self.limit:
                await _send_413(send, self.limit)
                return
            chunks.append(message)
            if not message.get("more_body", False):
                break

        async def replay() -> Message:
            if chunks:
                return chunks.pop(0)
            return await receive()

        await self.app(scope, replay, send)
