"""The event bus: session lifecycle and background-task events fan out to waiters and SSE subscribers.

:class:`EventBus` delivers within one manager process (the embedded default). :class:`RedisEventBus`
does the same and also forwards every event over Redis pub/sub, so the subscribers of all managers that
share the Redis database see the events of all of them. ``publish`` stays synchronous and never waits
for Redis: local subscribers get the event at once and a background task forwards it.
"""

from __future__ import annotations

import asyncio
import json
import logging
import uuid
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager, suppress
from dataclasses import dataclass, field
from typing import Any

log = logging.getLogger(__name__)

OUTBOX_SIZE = 10_000
FLUSH_TIMEOUT = 2.0  # seconds given to forwarding the last events on shutdown
RECONNECT_DELAY = 1.0


@dataclass(frozen=True)
class Event:
    """One event with its JSON data.

    ``session_id`` is the subject: the session UUID of ``session_*`` events, the task UUID of
    ``bgtask_*`` events.
    """

    name: str
    session_id: str
    data: dict[str, Any] = field(default_factory=dict)


class EventBus:
    """Broadcasts every event to all current subscribers; slow subscribers drop their oldest events."""

    def __init__(self, queue_size: int = 1024) -> None:
        self._subscribers: set[asyncio.Queue[Event]] = set()
        self._queue_size = queue_size

    @property
    def subscriber_count(self) -> int:
        """How many subscriptions are open (an SSE stream holds one while it runs)."""
        return len(self._subscribers)

    def publish(self, event: Event) -> None:
        """Deliver ``event`` to every subscriber (and to other managers, see :class:`RedisEventBus`)."""
        self._deliver(event)

    def _deliver(self, event: Event) -> None:
        for q in list(self._subscribers):
            if q.full():
                q.get_nowait()
            q.put_nowait(event)

    @asynccontextmanager
    async def subscribe(self, queue_size: int | None = None) -> AsyncIterator[asyncio.Queue[Event]]:
        """A queue that receives every event published while the context is open (holding ``queue_size``
        events at most, the bus's default size unless given; the oldest are dropped beyond)."""
        q: asyncio.Queue[Event] = asyncio.Queue(queue_size or self._queue_size)
        self._subscribers.add(q)
        try:
            yield q
        finally:
            self._subscribers.discard(q)

    async def start(self) -> None:
        """Start background work (none for the in-process bus)."""

    async def close(self) -> None:
        """Stop background work (none for the in-process bus)."""


def _redis_db(url: str) -> int:
    from redis.asyncio.connection import parse_url

    return int(parse_url(url).get("db", 0) or 0)


class RedisEventBus(EventBus):
    """An :class:`EventBus` whose events also travel over Redis pub/sub between managers.

    Pub/sub channels ignore Redis database numbers, so the channel name carries the database number:
    managers configured with the same ``[redis] url`` share events, other deployments on the same
    Redis server (another database) do not. Each bus tags what it sends with a random origin id and
    ignores its own messages when they come back.
    """

    def __init__(self, url: str, queue_size: int = 1024, channel: str | None = None) -> None:
        super().__init__(queue_size)
        self.url = url
        self.channel = channel or f"backendai:events:db{_redis_db(url)}"
        self.origin = uuid.uuid4().hex
        self._outbox: asyncio.Queue[Event] = asyncio.Queue(OUTBOX_SIZE)
        self._redis: Any = None
        self._tasks: list[asyncio.Task[None]] = []
        self._listening = asyncio.Event()

    def publish(self, event: Event) -> None:
        self._deliver(event)
        try:
            self._outbox.put_nowait(event)
        except asyncio.QueueFull:
            log.warning(
                "event outbox full; event %s for %s not forwarded to other managers", event.name, event.session_id
            )

    async def start(self) -> None:
        """Connect to Redis and start forwarding and receiving events."""
        import redis.asyncio as aioredis

        self._redis = aioredis.Redis.from_url(self.url, socket_connect_timeout=5)
        self._tasks = [asyncio.create_task(self._pump()), asyncio.create_task(self._listen())]

    async def wait_listening(self, timeout: float = 10.0) -> None:
        """Wait until the pub/sub subscription is active (events from other managers arrive)."""
        await asyncio.wait_for(self._listening.wait(), timeout)

    async def close(self) -> None:
        """Forward what is still queued (briefly), then disconnect."""
        with suppress(TimeoutError):
            await asyncio.wait_for(self._outbox.join(), FLUSH_TIMEOUT)
        for t in self._tasks:
            t.cancel()
        for t in self._tasks:
            with suppress(asyncio.CancelledError):
                await t
        self._tasks = []
        if self._redis is not None:
            await self._redis.aclose()
            self._redis = None

    def _encode(self, event: Event) -> str:
        return json.dumps(
            {"origin": self.origin, "name": event.name, "subject": event.session_id, "data": event.data}, default=str
        )

    async def _pump(self) -> None:
        while True:
            event = await self._outbox.get()
            try:
                for attempt in range(3):
                    try:
                        await self._redis.publish(self.channel, self._encode(event))
                        break
                    except Exception as e:  # noqa: BLE001 - a Redis failure must not stop the pump
                        log.warning("forwarding event %s to Redis failed (attempt %d): %s", event.name, attempt + 1, e)
                        await asyncio.sleep(RECONNECT_DELAY * (attempt + 1))
            finally:
                self._outbox.task_done()

    async def _listen(self) -> None:
        while True:
            pubsub = self._redis.pubsub(ignore_subscribe_messages=True)
            try:
                await pubsub.subscribe(self.channel)
                self._listening.set()
                async for msg in pubsub.listen():
                    if msg.get("type") == "message":
                        self._receive(msg.get("data"))
            except asyncio.CancelledError:
                raise
            except Exception as e:  # noqa: BLE001 - reconnect on any Redis failure
                self._listening.clear()
                log.warning("event subscription to Redis lost (%s); reconnecting", e)
                await asyncio.sleep(RECONNECT_DELAY)
            finally:
                with suppress(Exception):
                    await pubsub.aclose()

    def _receive(self, raw: Any) -> None:
        try:
            doc = json.loads(raw)
            if doc.get("origin") == self.origin:
                return
            event = Event(str(doc["name"]), str(doc["subject"]), dict(doc.get("data") or {}))
        except (ValueError, KeyError, TypeError, AttributeError) as e:
            log.warning("ignoring a malformed event from Redis: %s", e)
            return
        self._deliver(event)


def make_event_bus(redis_url: str | None) -> EventBus:
    """The bus for a manager: over Redis when ``[redis] url`` is configured, else in-process."""
    return RedisEventBus(redis_url) if redis_url else EventBus()
