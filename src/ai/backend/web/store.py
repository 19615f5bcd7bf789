"""Where login sessions and failed-login counters live: process memory or Redis.

Session ids are the cookie values; the store keys them by their SHA-256 so that a copy of the store (a
Redis dump) holds no cookie that would log anyone in.
"""

from __future__ import annotations

import abc
import hashlib
import json
import time
from typing import Any

__all__ = ["MemoryStore", "RedisStore", "Store", "make_store"]

_PREFIX = "backendai:web:"


def _key(kind: str, name: str) -> str:
    digest = hashlib.sha256(name.encode("utf-8")).hexdigest()
    return f"{_PREFIX}{kind}:{digest}"


class Store(abc.ABC):
    """Login sessions (JSON objects with a lifetime) and sliding failure counters."""

    @abc.abstractmethod
    async def get_session(self, sid: str) -> dict[str, Any] | None:
        """The session ``sid`` if it exists and has not expired."""

    @abc.abstractmethod
    async def put_session(self, sid: str, data: dict[str, Any], ttl: int) -> None:
        """Store session ``sid`` for ``ttl`` seconds."""

    @abc.abstractmethod
    async def delete_session(self, sid: str) -> None:
        """Forget session ``sid``."""

    @abc.abstractmethod
    async def failures(self, name: str) -> int:
        """The failures counted for ``name`` (0 once its window has passed)."""

    @abc.abstractmethod
    async def add_failure(self, name: str, window: int) -> int:
        """Count one failure for ``name``, restart its window, and return the new count."""

    @abc.abstractmethod
    async def touch_failures(self, name: str, window: int) -> None:
        """Restart the window of ``name`` without counting (a refused attempt keeps the block going)."""

    @abc.abstractmethod
    async def clear_failures(self, name: str) -> None:
        """Forget the failures of ``name``."""

    @abc.abstractmethod
    async def flush(self) -> None:
        """Forget every session and counter of this server."""

    async def close(self) -> None:  # noqa: B027 - only the Redis store has anything to release
        """Release connections."""


class MemoryStore(Store):
    """The all-in-one's store: dictionaries with expiry times, in this process only."""

    def __init__(self) -> None:
        self._data: dict[str, tuple[float, Any]] = {}

    def _get(self, key: str) -> Any:
        item = self._data.get(key)
        if item is None:
            return None
        if item[0] <= time.monotonic():
            del self._data[key]
            return None
        return item[1]

    def _sweep(self) -> None:
        # Expired entries are dropped lazily; a full sweep now and then bounds the memory of abandoned ones.
        if len(self._data) % 1024 == 0:
            now = time.monotonic()
            for k in [k for k, (exp, _) in self._data.items() if exp <= now]:
                del self._data[k]

    async def get_session(self, sid: str) -> dict[str, Any] | None:
        value = self._get(_key("session", sid))
        return dict(value) if value is not None else None

    async def put_session(self, sid: str, data: dict[str, Any], ttl: int) -> None:
        self._sweep()
        self._data[_key("session", sid)] = (time.monotonic() + ttl, dict(data))

    async def delete_session(self, sid: str) -> None:
        self._data.pop(_key("session", sid), None)

    async def failures(self, name: str) -> int:
        return int(self._get(_key("fail", name)) or 0)

    async def add_failure(self, name: str, window: int) -> int:
        self._sweep()
        count = int(self._get(_key("fail", name)) or 0) + 1
        self._data[_key("fail", name)] = (time.monotonic() + window, count)
        return count

    async def touch_failures(self, name: str, window: int) -> None:
        count = self._get(_key("fail", name))
        if count:
            self._data[_key("fail", name)] = (time.monotonic() + window, count)

    async def clear_failures(self, name: str) -> None:
        self._data.pop(_key("fail", name), None)

    async def flush(self) -> None:
        self._data.clear()


class RedisStore(Store):
    """Sessions shared by several webservers (and surviving restarts) in Redis, with Redis expiry."""

    def __init__(self, url: str) -> None:
        import redis.asyncio as aioredis

        self._redis = aioredis.Redis.from_url(url, decode_responses=True)

    async def get_session(self, sid: str) -> dict[str, Any] | None:
        raw = await self._redis.get(_key("session", sid))
        if raw is None:
            return None
        value = json.loads(raw)
        return value if isinstance(value, dict) else None

    async def put_session(self, sid: str, data: dict[str, Any], ttl: int) -> None:
        await self._redis.set(_key("session", sid), json.dumps(data), ex=ttl)

    async def delete_session(self, sid: str) -> None:
        await self._redis.delete(_key("session", sid))

    async def failures(self, name: str) -> int:
        return int(await self._redis.get(_key("fail", name)) or 0)

    async def add_failure(self, name: str, window: int) -> int:
        key = _key("fail", name)
        # INCR is atomic, so failures racing on several webservers are all counted.
        async with self._redis.pipeline(transaction=True) as pipe:
            pipe.incr(key)
            pipe.expire(key, window)
            count, _ = await pipe.execute()
        return int(count)

    async def touch_failures(self, name: str, window: int) -> None:
        await self._redis.expire(_key("fail", name), window)

    async def clear_failures(self, name: str) -> None:
        await self._redis.delete(_key("fail", name))

    async def flush(self) -> None:
        # Only this server's keys: the Redis database may be shared with the manager's rate limiter.
        async for key in self._redis.scan_iter(match=_PREFIX + "*", count=500):
            await self._redis.delete(key)

    async def close(self) -> None:
        await self._redis.aclose()


def make_store(redis_url: str) -> Store:
    """A :class:`RedisStore` for a URL, else a :class:`MemoryStore`."""
    return RedisStore(redis_url) if redis_url else MemoryStore()
