"""The apps of the dummy backend's kernels: tiny real servers on the kernels' host ports, so that the manager's
stream proxy and the app proxy can be tested without containers.

* an ``http`` app answers every ``GET`` with a small JSON document naming the app, the kernel and the port
  (``{"app", "kernel_id", "container_port", "path"}``), and echoes the messages of a WebSocket opened on any
  path (what a web terminal does);
* a ``tcp`` app echoes what it receives.
"""

from __future__ import annotations

import asyncio
from typing import Protocol

from aiohttp import WSMsgType, web

__all__ = ["AppServer", "serve_app"]


class AppServer(Protocol):
    async def close(self) -> None: ...


class _HttpApp:
    def __init__(self, runner: web.ServerRunner) -> None:
        self._runner = runner

    async def close(self) -> None:
        await self._runner.cleanup()


class _TcpApp:
    def __init__(self, server: asyncio.Server, conns: set[asyncio.StreamWriter]) -> None:
        self._server, self._conns = server, conns

    async def close(self) -> None:
        self._server.close()
        for writer in list(self._conns):
            writer.close()  # wait_closed() would wait for clients that keep the connection open
        await self._server.wait_closed()


async def _serve_http(host: str, port: int, app: str, kernel_id: str, container_port: int) -> AppServer:
    async def handle(request: web.BaseRequest) -> web.StreamResponse:
        if request.headers.get("Upgrade", "").lower() == "websocket":
            ws = web.WebSocketResponse()
            await ws.prepare(request)  # type: ignore[arg-type]  # works with the low-level server's requests
            async for msg in ws:
                if msg.type == WSMsgType.TEXT:
                    await ws.send_str(msg.data)
                elif msg.type == WSMsgType.BINARY:
                    await ws.send_bytes(msg.data)
            return ws
        doc = {"app": app, "kernel_id": kernel_id, "container_port": container_port, "path": request.path}
        return web.json_response(doc)

    runner = web.ServerRunner(web.Server(handle), handle_signals=False)
    await runner.setup()
    try:
        await web.TCPSite(runner, host, port, reuse_address=True).start()
    except BaseException:
        await runner.cleanup()
        raise
    return _HttpApp(runner)


async def _serve_tcp(host: str, port: int) -> AppServer:
    conns: set[asyncio.StreamWriter] = set()

    async def echo(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        conns.add(writer)
        try:
            while data := await reader.read(65536):
                writer.write(data)
                await writer.drain()
        except ConnectionError:
            pass
        finally:
            conns.discard(writer)
            writer.close()

    server = await asyncio.start_server(echo, host, port, reuse_address=True)
    return _TcpApp(server, conns)


async def serve_app(protocol: str, host: str, port: int, *, app: str, kernel_id: str, container_port: int) -> AppServer:
    """Start the server of one port of a dummy app on ``host:port`` (``OSError`` when it cannot listen)."""
    if protocol == "http":
        return await _serve_http(host, port, app, kernel_id, container_port)
    return await _serve_tcp(host, port)
