"""The storage proxy process: ``python -m ai.backend.storage.server [-f storage-proxy.toml]``.

Two servers share one event loop, each on its own socket, so a client can never reach a manager route (and
the reverse) whatever path it asks for: uvicorn serves the manager-facing API (``[api.manager]``, FastAPI),
and aiohttp the client-facing data path (``[api.client]``, see :mod:`.client_api`), started from uvicorn's
lifespan. The loop is asyncio's own (not uvloop): its ``loop.sendfile`` is the zero-copy download path.
"""

from __future__ import annotations

import argparse
import asyncio
import concurrent.futures
import json
import logging
import os
import resource
import socket
import sys
from contextlib import suppress
from pathlib import Path

from aiohttp import web
from starlette.types import Receive, Scope, Send

from ai.backend.common.config import ConfigError, load_config
from ai.backend.common.logs import setup_logging
from ai.backend.common.web import serve

from .client_api import start_client_server
from .config import StorageProxyConfig
from .context import StorageContext
from .manager_api import create_manager_app

__all__ = ["StorageProxyApp", "main"]

log = logging.getLogger("ai.backend.storage")
CLEANUP_INTERVAL_S = 600.0


class StorageProxyApp:
    """The manager app (an ASGI app for uvicorn) plus the start-up/shutdown of the shared state and client API."""

    def __init__(self, config: StorageProxyConfig, ready_file: str | None = None) -> None:
        self.config = config
        self.ctx = StorageContext(config)
        self.manager_app = create_manager_app(self.ctx)
        self.client_port = config.api.client.service_addr.port
        self.manager_port = config.api.manager.service_addr.port
        self.ready_file = ready_file
        self._cleanup: asyncio.Task[None] | None = None
        self._client_sock: socket.socket | None = None
        self._client_runner: web.AppRunner | None = None

    def bind(self) -> list[socket.socket]:
        """Bind both listening sockets (port 0 picks a free port; the real ports are kept)."""
        socks = []
        for addr in (self.config.api.client.service_addr, self.config.api.manager.service_addr):
            family = socket.AF_INET6 if ":" in addr.host else socket.AF_INET
            s = socket.socket(family, socket.SOCK_STREAM)
            s.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
            s.bind((addr.host, addr.port))
            s.listen(1024)
            s.set_inheritable(True)
            socks.append(s)
        self.client_port = socks[0].getsockname()[1]
        self.manager_port = socks[1].getsockname()[1]
        self._client_sock = socks[0]
        return socks[1:]  # uvicorn's: the client socket is served by aiohttp from startup()

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] == "lifespan":
            await self._lifespan(receive, send)
            return
        await self.manager_app(scope, receive, send)

    async def _lifespan(self, receive: Receive, send: Send) -> None:
        while True:
            message = await receive()
            if message["type"] == "lifespan.startup":
                try:
                    await self.startup()
                except Exception as e:
                    log.exception("start-up failed")
                    await send({"type": "lifespan.startup.failed", "message": str(e)})
                    return
                await send({"type": "lifespan.startup.complete"})
            elif message["type"] == "lifespan.shutdown":
                await self.shutdown()
                await send({"type": "lifespan.shutdown.complete"})
                return

    async def startup(self) -> None:
        loop = asyncio.get_running_loop()
        # File work runs in threads; a long clone or usage scan must not starve transfers of workers.
        loop.set_default_executor(concurrent.futures.ThreadPoolExecutor(64, thread_name_prefix="storage-io"))
        await self.ctx.open()
        self.ctx.cleanup_uploads()
        if self._client_sock is not None:
            self._client_runner = await start_client_server(self.ctx, self._client_sock)
        self._cleanup = asyncio.create_task(self._cleanup_loop())
        log.info(
            "storage proxy %s: client API on port %d, manager API on port %d, volumes: %s",
            self.config.storage_proxy.node_id,
            self.client_port,
            self.manager_port,
            ", ".join(f"{v.name} ({v.backend}: {v.path})" for v in self.ctx.volumes.values()),
        )
        if self.ready_file:
            tmp = Path(self.ready_file + ".tmp")
            tmp.write_text(
                json.dumps({"pid": os.getpid(), "client_port": self.client_port, "manager_port": self.manager_port})
            )
            tmp.rename(self.ready_file)

    async def shutdown(self) -> None:
        if self._client_runner is not None:
            await self._client_runner.cleanup()
        if self._cleanup is not None:
            self._cleanup.cancel()
            with suppress(asyncio.CancelledError):
                await self._cleanup
        await self.ctx.close()

    async def _cleanup_loop(self) -> None:
        while True:
            await asyncio.sleep(CLEANUP_INTERVAL_S)
            try:
                removed = await asyncio.get_running_loop().run_in_executor(None, self.ctx.cleanup_uploads)
                if removed:
                    log.info("removed %d expired partial uploads", removed)
            except OSError as e:
                log.warning("cleaning up partial uploads failed: %s", e)


def _raise_fd_limit() -> None:
    """Walks hold a descriptor or two per directory level; allow many."""
    soft, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
    want = hard if hard != resource.RLIM_INFINITY else 65536
    if soft < want:
        with suppress(ValueError, OSError):
            resource.setrlimit(resource.RLIMIT_NOFILE, (min(want, 1 << 20), hard))


def main(argv: list[str] | None = None) -> None:
    """Run the storage proxy."""
    parser = argparse.ArgumentParser(prog="backend.ai-storage-proxy")
    parser.add_argument("-f", "--config", help="path to storage-proxy.toml")
    parser.add_argument("--debug", action="store_true")
    parser.add_argument("--ready-file", help=argparse.SUPPRESS)  # tests: ports are written here once serving
    args = parser.parse_args(argv)
    try:
        config = load_config(StorageProxyConfig, "storage-proxy", args.config)
        app = StorageProxyApp(config, args.ready_file)
    except (ConfigError, ValueError) as e:
        print(f"storage-proxy: {e}", file=sys.stderr)
        sys.exit(2)
    setup_logging(config.logging, debug=args.debug)
    _raise_fd_limit()
    try:
        socks = app.bind()
    except OSError as e:
        print(f"storage-proxy: cannot listen: {e}", file=sys.stderr)
        sys.exit(2)
    # loop="asyncio": uvloop has no loop.sendfile, which the client API's downloads rely on.
    serve(app, sockets=socks, debug=args.debug, lifespan="on", loop="asyncio", timeout_keep_alive=30)


if __name__ == "__main__":
    main()
