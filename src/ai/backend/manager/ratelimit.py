"""Rolling-window rate limiting (15 minutes by default) and per-keypair API usage counters.

Authenticated calls count against their access key (limit: the keypair's ``rate_limit``);
calls without credentials and calls whose authentication fails count against the client IP,
so a stranger cannot use up somebody else's budget by sending unsigned requests with their
access key. Successful and failed calls both count, as the API documentation says.

Two stores: in process memory (the embedded default, one manager) and Redis sorted sets
(production; counters shared by every manager).
"""

from __future__ import annotations

import secrets
import time
from collections import defaultdict, deque
from collections.abc import Awaitable, Callable
from dataclasses import dataclass
from typing import Any, Protocol

from sqlalchemy import update
from sqlalchemy.ext.asyncio import AsyncSession, async_sessionmaker
from starlette.types import ASGIApp, Message, Receive, Scope, Send

from ai.backend.common.problems import TooManyRequests

from .counters import PendingCounts
from .models import KeyPairRow
from .models.base import utcnow

WINDOW_SECONDS = 15 * 60


@dataclass(frozen=True)
class Verdict:
    """The outcome of counting one call."""

    limit: int
    remaining: int
    window: int

    @property
    def exceeded(self) -> bool:
        return self.limit > 0 and self.remaining < 0

    def headers(self) -> list[tuple[bytes, bytes]]:
        return [
            (b"x-ratelimit-limit", str(self.limit).encode()),
            (b"x-ratelimit-remaining", str(max(self.remaining, 0)).encode()),
            (b"x-ratelimit-window", str(self.window).encode()),
        ]


def _not_counted(scope: str) -> None:
    pass


class RateLimiter(Protocol):
    window: int
    # Called with "ip", "keypair" or "login" whenever a call is refused for its limit (the metrics).
    on_refusal: Callable[[str], None]

    async def hit(self, key: str, limit: int) -> Verdict:
        """Count one call for ``key`` and say whether it is within ``limit`` (≤ 0: unlimited)."""
        ...

    async def close(self) -> None: ...


class MemoryRateLimiter:
    """Timestamps per key in process memory; each key keeps at most ``limit + 1`` of them."""

    def __init__(self, window: int = WINDOW_SECONDS) -> None:
        self.window = window
        self.on_refusal: Callable[[str], None] = _not_counted
        self._hits: dict[str, deque[float]] = defaultdict(deque)
        self._calls = 0

    async def hit(self, key: str, limit: int) -> Verdict:
        now = time.monotonic()
        q = self._hits[key]
        cutoff = now - self.window
        while q and q[0] <= cutoff:
            q.popleft()
        q.append(now)
        if limit > 0:
            while len(q) > limit + 1:
                q.popleft()
        self._calls += 1
        if self._calls % 10000 == 0:
            self._sweep(cutoff)
        return Verdict(limit, limit - len(q), self.window)

    def _sweep(self, cutoff: float) -> None:
        for key in [k for k, q in self._hits.items() if not q or q[-1] <= cutoff]:
            del self._hits[key]

    async def close(self) -> None:
        self._hits.clear()


# Drop what fell out of the window, add this call, keep at most limit+1 entries, and count.
_REDIS_HIT = """
local key, now, window, limit, member = KEYS[1], tonumber(ARGV[1]), tonumber(ARGV[2]), tonumber(ARGV[3]), ARGV[4]
redis.call('ZREMRANGEBYSCORE', key, '-inf', now - window)
redis.call('ZADD', key, now, member)
if limit > 0 then
  local n = redis.call('ZCARD', key)
  if n > limit + 1 then redis.call('ZREMRANGEBYRANK', key, 0, n - limit - 2) end
end
redis.call('EXPIRE', key, window)
return redis.call('ZCARD', key)
"""


class RedisRateLimiter:
    """Sorted sets in Redis (``ratelimit:<key>``), updated atomically by one Lua script."""

    def __init__(self, url: str, window: int = WINDOW_SECONDS, prefix: str = "ratelimit:") -> None:
        import redis.asyncio as aioredis

        self.window = window
        self.prefix = prefix
        self.on_refusal: Callable[[str], None] = _not_counted
        # A pool that waits for a free connection instead of failing a burst of calls.
        pool = aioredis.BlockingConnectionPool.from_url(url, max_connections=64, timeout=10)
        self._redis: Any = aioredis.Redis(connection_pool=pool)
        self._script: Any = self._redis.register_script(_REDIS_HIT)

    async def hit(self, key: str, limit: int) -> Verdict:
        member = f"{time.time():.6f}:{secrets.token_hex(4)}"
        count = int(await self._script(keys=[self.prefix + key], args=[time.time(), self.window, limit, member]))
        return Verdict(limit, limit - count, self.window)

    async def close(self) -> None:
        await self._redis.aclose()


def make_rate_limiter(
    redis_url: str | None, window: int = WINDOW_SECONDS, on_refusal: Callable[[str], None] = _not_counted
) -> RateLimiter:
    limiter: RateLimiter = RedisRateLimiter(redis_url, window) if redis_url else MemoryRateLimiter(window)
    limiter.on_refusal = on_refusal
    return limiter


class ApiUsage:
    """Calls per access key, kept in memory and added to ``keypairs.num_queries`` every few seconds."""

    def __init__(self) -> None:
        self._counts: PendingCounts[str] = PendingCounts()

    def count(self, access_key: str) -> None:
        self._counts.count(access_key)

    def pending(self, access_key: str) -> int:
        return self._counts.pending(access_key)

    async def flush(self, db_factory: async_sessionmaker[AsyncSession]) -> None:
        async def write(counts: dict[str, int]) -> None:
            now = utcnow()
            async with db_factory() as db:
                for ak, n in counts.items():
                    # Usage counters: cached keypair rows need not be re-read (see generations.py).
                    await db.execute(
                        update(KeyPairRow)
                        .where(KeyPairRow.access_key == ak)
                        .values(num_queries=KeyPairRow.num_queries + n, last_used=now)
                        .execution_options(generation_neutral=True)
                    )
                await db.commit()

        await self._counts.flush(write)


class RateLimitMiddleware:
    """Counts calls without credentials per client IP and adds the ``X-RateLimit-*`` headers.

    Authenticated calls are counted by :func:`enforce_keypair_limit` once the signature is
    verified; it leaves its verdict in ``scope["state"]`` for this middleware to report. A call
    that presented credentials but failed authentication is counted against the client IP.
    """

    def __init__(
        self,
        app: ASGIApp,
        get_limiter: Callable[[], RateLimiter | None],
        anonymous_limit: Callable[[], int],
        exempt_prefixes: tuple[str, ...] = ("/internal/",),
    ) -> None:
        self.app = app
        self._limiter = get_limiter
        self._anon_limit = anonymous_limit
        self._exempt = exempt_prefixes

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        limiter = self._limiter()
        if scope["type"] != "http" or limiter is None or scope["path"].startswith(self._exempt):
            await self.app(scope, receive, send)
            return
        has_credentials = any(name == b"authorization" for name, _ in scope.get("headers", []))
        ip = (scope.get("client") or ("unknown", 0))[0]
        verdict: Verdict | None = None
        if not has_credentials:
            verdict = await limiter.hit("ip:" + ip, self._anon_limit())
            if verdict.exceeded:
                limiter.on_refusal("ip")
                await _too_many(verdict)(scope, receive, send)
                return
        state = scope.setdefault("state", {})

        async def send_with_headers(message: Message) -> None:
            nonlocal verdict
            if message["type"] == "http.response.start":
                v: Verdict | None = state.get("ratelimit") or verdict
                if v is None and message.get("status") == 401:
                    # Failed authentication: charge the caller's IP, not the access key it named.
                    v = await limiter.hit("ip:" + ip, self._anon_limit())
                if v is not None:
                    headers = [h for h in message.get("headers", []) if not h[0].startswith(b"x-ratelimit-")]
                    message = dict(message, headers=headers + v.headers())
            await send(message)

        await self.app(scope, receive, send_with_headers)


def _too_many(verdict: Verdict) -> Callable[[Scope, Receive, Send], Awaitable[None]]:
    from fastapi.responses import JSONResponse

    exc = TooManyRequests(
        f"More than {verdict.limit} calls in the last {verdict.window // 60} minutes; slow down and retry later."
    )
    resp = JSONResponse(exc.body(), status_code=429, media_type="application/problem+json")
    for name, value in verdict.headers():
        resp.headers[name.decode()] = value.decode()
    return resp


async def enforce_keypair_limit(
    state: dict[str, Any], limiter: RateLimiter | None, access_key: str, limit: int
) -> None:
    """Count an authenticated call against its access key; raise 429 past the keypair's limit."""
    if limiter is None:
        return
    verdict = await limiter.hit("ak:" + access_key, limit)
    state["ratelimit"] = verdict
    if verdict.exceeded:
        limiter.on_refusal("keypair")
        raise TooManyRequests(
            f"Access key {access_key} made more than {limit} calls in the last "
            f"{verdict.window // 60} minutes; slow down and retry later."
        )
