"""State shared by the two APIs of one storage proxy process: config, volumes, upload bookkeeping."""

from __future__ import annotations

import asyncio
import os
import weakref
from collections import OrderedDict
from typing import Any

from fastapi import Request

from ai.backend.common.problems import NotFound

from .config import StorageProxyConfig
from .metrics import StorageMetrics
from .volumes.base import AbstractVolume
from .volumes.safepath import Owner
from .volumes.vfs import VfsVolume

__all__ = ["StorageContext", "get_ctx"]


BACKENDS: dict[str, type[AbstractVolume]] = {"vfs": VfsVolume}
_COMPLETED_MAX = 10_000


class StorageContext:
    """Everything a request handler needs; created once per process."""

    def __init__(self, config: StorageProxyConfig) -> None:
        self.config = config
        sp = config.storage_proxy
        # Only root can give files away; a proxy run as a normal user keeps them as its own.
        self.owner = Owner(sp.user, sp.group, enabled=os.geteuid() == 0)
        self.volumes: dict[str, AbstractVolume] = {}
        for name, vc in config.volume.items():
            if vc.backend not in BACKENDS:
                raise ValueError(f"volume {name}: unknown backend {vc.backend!r} (known: {', '.join(BACKENDS)})")
            if vc.backend == "vfs":
                self.volumes[name] = VfsVolume(name, vc.path, vc.options, self.owner, sp.max_upload_size)
        self._upload_locks: weakref.WeakValueDictionary[str, asyncio.Lock] = weakref.WeakValueDictionary()
        # Upload sessions completed recently (session -> size), so that HEAD after the last PATCH still says
        # "complete" instead of starting over.
        self.completed: OrderedDict[str, int] = OrderedDict()
        self.metrics = StorageMetrics()

    async def open(self) -> None:
        for vol in self.volumes.values():
            await vol.open()

    async def close(self) -> None:
        for vol in self.volumes.values():
            await vol.close()

    def volume(self, name: Any) -> AbstractVolume:
        vol = self.volumes.get(name) if isinstance(name, str) else None
        if vol is None:
            raise NotFound(f"no such volume: {name!r}")
        return vol

    def upload_lock(self, session: str) -> asyncio.Lock:
        """The lock serialising requests of one upload session (kept while anybody holds a reference)."""
        lock = self._upload_locks.get(session)
        if lock is None:
            lock = asyncio.Lock()
            self._upload_locks[session] = lock
        return lock

    def mark_completed(self, session: str, size: int) -> None:
        self.completed[session] = size
        while len(self.completed) > _COMPLETED_MAX:
            self.completed.popitem(last=False)

    def cleanup_uploads(self) -> int:
        """Remove partial uploads whose tokens have expired."""
        limit = self.config.storage_proxy.session_expire + 60
        removed = 0
        for vol in self.volumes.values():
            if isinstance(vol, VfsVolume):
                removed += vol.cleanup_uploads(limit)
        return removed


def get_ctx(request: Request) -> StorageContext:
    ctx: StorageContext = request.app.state.ctx
    return ctx
