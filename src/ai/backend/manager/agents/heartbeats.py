"""Agent heartbeats: registering an agent and refreshing its row, its images, its live statistics, and the
reconciliation of its kernels against the sessions the manager knows.

A heartbeat that repeats what this manager last wrote for the agent only refreshes ``last_heartbeat`` (the
fast path, coalesced across agents); anything else rewrites the agent's row and, when they changed, its
images (the full path).
"""

from __future__ import annotations

import hashlib
import json
import time
from collections.abc import Awaitable, Callable
from typing import Any

from sqlalchemy import select, update
from sqlalchemy.ext.asyncio import AsyncSession, async_sessionmaker

from ai.backend.common.contracts import parse_wire
from ai.backend.common.contracts.agent import Heartbeat
from ai.backend.common.problems import InvalidAPIParameters
from ai.backend.common.types import ResourceSlot, SlotTypeError

from ..batching import Coalescer
from ..db import retry_locked
from ..generations import GenerationReader
from ..images import ImageInventory, register_images
from ..models import AgentRow, ScalingGroupRow
from ..models.base import utcnow
from .live_stats import AgentLiveStats, KernelLiveStats
from .status import AgentStatus

# A heartbeat that repeats what this manager last wrote for the agent only refreshes ``last_heartbeat``;
# the whole row (and the agent's images) is written again at least this often anyway, so that what
# another manager wrote meanwhile cannot stay overridden for long.
FULL_WRITE_EVERY = 30.0

# Reconciles the kernels agents report (agent id, kernel ids) into the stale ones of each agent.
Reconcile = Callable[[list[tuple[str, list[str]]]], Awaitable[list[list[str]]]]


def _hash(value: Any) -> str:
    return hashlib.blake2b(json.dumps(value, sort_keys=True, default=str).encode(), digest_size=16).hexdigest()


def heartbeat_digest(body: dict[str, Any]) -> str:
    """What a heartbeat says about the agent (everything but its live state: statistics and the list of
    its kernels, which the manager does not store, and a request for reconciliation), as a short hash."""
    return _hash({k: v for k, v in body.items() if k not in ("live_stat", "kernel_stats", "kernels", "reconcile")})


def compute_plugins(plugins: Any, slot_types: Any) -> dict[str, Any]:
    """The agent's compute plugins (name → metadata with ``slot_types``), checked; a bare ``slot_types``
    without plugin metadata is kept under the name ``agent``."""
    if plugins is None:
        plugins = {"agent": {"slot_types": slot_types}} if slot_types else {}
    if not isinstance(plugins, dict) or not all(isinstance(m, dict) for m in plugins.values()):
        raise SlotTypeError("compute_plugins must map plugin names to objects")
    for name, meta in plugins.items():
        types = meta.get("slot_types") or {}
        if not isinstance(types, dict) or not all(v in ("count", "bytes", "unique") for v in types.values()):
            raise SlotTypeError(f"slot_types of {name} must map slot names to count, bytes or unique")
        ResourceSlot.from_user_input({k: 0 for k in types})  # checks the names
    return plugins


class AgentHeartbeats:
    """Receives the agents' heartbeats: registration, capacity, images, live statistics, reconciliation.

    ``on_capacity_change`` is told when an agent joins, comes back or changes its slots or scaling group
    (capacity caches); ``on_join`` when one joins or comes back (the scheduler may place waiting sessions).
    """

    def __init__(
        self,
        db: async_sessionmaker[AsyncSession],
        generations: GenerationReader,
        *,
        images: ImageInventory,
        agent_stats: AgentLiveStats,
        kernel_stats: KernelLiveStats,
        reconcile: Reconcile,
        reconcile_interval: float,
        on_capacity_change: Callable[[], None],
        on_join: Callable[[], None],
    ) -> None:
        self._db = db
        self._generations = generations
        self._images = images
        self._agent_stats = agent_stats
        self._kernel_stats = kernel_stats
        self._reconcile_interval = reconcile_interval
        self._on_capacity_change = on_capacity_change
        self._on_join = on_join
        # Per agent: the digest of the last heartbeat written in full here, and when (monotonic).
        self._written: dict[str, tuple[str, float]] = {}
        # Per agent: when (monotonic) its kernels were last reconciled by this manager.
        self._reconciled: dict[str, float] = {}
        # Per agent: the digest of the images last written to the catalogue for it, and the catalogue's
        # generation right after.
        self._images_written: dict[str, tuple[str, tuple[Any, ...]]] = {}
        # The fast path's writes, coalesced: the refreshes of heartbeats arriving together (a thousand agents
        # send a hundred a second) are one transaction.
        self._refresher: Coalescer[tuple[str, str], bool] = Coalescer(
            lambda items: retry_locked(lambda: self._refresh_txn(items))
        )
        self._reconciler: Coalescer[tuple[str, list[str]], list[str]] = Coalescer(reconcile)

    async def receive(self, body: dict[str, Any]) -> dict[str, Any]:
        """Handle one heartbeat; the answer carries ``stale_kernels`` when it reconciles the agent's kernels."""
        hb = parse_wire(Heartbeat, body, "heartbeat")
        agent_id = hb.id
        digest = heartbeat_digest(body)
        if not await self._refresh_only(hb, digest):
            await self._register(hb)
            self._written[agent_id] = (digest, time.monotonic())
        self._agent_stats.update(agent_id, hb.live_stat)
        self._kernel_stats.update(agent_id, hb.kernel_stats)
        answer: dict[str, Any] = {"ok": True}
        stale = await self._reconcile(hb)
        if stale is not None:
            answer["stale_kernels"] = stale
        return answer

    async def _refresh_only(self, hb: Heartbeat, digest: str) -> bool:
        """The fast path: when the heartbeat repeats the last one fully written here (and recently), touch
        ``last_heartbeat`` of the still-ALIVE agent (at the same address). ``False`` when the full path must
        run."""
        last = self._written.get(hb.id)
        if last is None or last[0] != digest or time.monotonic() - last[1] > FULL_WRITE_EVERY:
            return False
        return await self._refresher.submit((hb.id, hb.addr))

    async def _refresh_txn(self, items: list[tuple[str, str]]) -> list[bool]:
        # SELECT … FOR UPDATE keeps the agents from changing between the check (still ALIVE, same address)
        # and the UPDATE.
        async with self._db() as db:
            alive = dict(
                (
                    await db.execute(
                        select(AgentRow.id, AgentRow.addr)
                        .where(AgentRow.id.in_({a for a, _ in items}), AgentRow.status == AgentStatus.ALIVE)
                        .with_for_update()
                    )
                ).all()
            )
            ok = [alive.get(agent_id) == addr for agent_id, addr in items]
            fresh = {agent_id for (agent_id, _), good in zip(items, ok, strict=True) if good}
            if fresh:
                await db.execute(
                    update(AgentRow).where(AgentRow.id.in_(fresh)).values(last_heartbeat=utcnow(), lost_at=None)
                )
            await db.commit()
        return ok

    async def _reconcile(self, hb: Heartbeat) -> list[str] | None:
        """The reconciliation contract: an agent lists its kernels (``kernels``) in every heartbeat, and at
        most every ``reconcile-interval`` seconds (at once when it asks with ``reconcile: true``, as it does
        after starting, and for the first heartbeat this manager process sees of it) the answer says which
        of them no live session owns on that agent (``stale_kernels``); the agent removes their containers.
        ``None`` when not due: the other heartbeats cost no query."""
        if hb.kernels is None:
            return None
        now = time.monotonic()
        last = self._reconciled.get(hb.id)
        if last is not None and now - last < self._reconcile_interval and hb.reconcile is not True:
            return None
        self._reconciled[hb.id] = now
        return await self._reconciler.submit((hb.id, list(hb.kernels)))

    async def _register(self, hb: Heartbeat) -> None:
        """The full path: check the heartbeat's slots and plugins, then write the agent's whole row and its
        images."""
        agent_id, addr, sgroup = hb.id, hb.addr, hb.scaling_group
        try:
            slots = ResourceSlot.from_user_input(hb.available_slots).to_json()
            plugins = compute_plugins(hb.compute_plugins, hb.slot_types)
        except SlotTypeError as e:
            raise InvalidAPIParameters(f"Malformed heartbeat: {e}.") from None
        joined = reshaped = False
        async with self._db() as db:
            if await db.get(ScalingGroupRow, sgroup) is None:
                raise InvalidAPIParameters(f"Unknown scaling group {sgroup!r}.")
            agent = await db.get(AgentRow, agent_id)
            now = utcnow()
            if agent is None:
                agent = AgentRow(id=agent_id, addr=addr, scaling_group=sgroup, first_contact=now, occupied_slots={})
                db.add(agent)
                joined = True
            else:
                joined = agent.status != AgentStatus.ALIVE or agent.addr != addr
                reshaped = agent.available_slots != slots or agent.scaling_group != sgroup
            if agent.status != AgentStatus.ALIVE:
                agent.status_changed = now
            agent.status = AgentStatus.ALIVE
            agent.addr = addr
            agent.scaling_group = sgroup
            agent.available_slots = slots
            agent.last_heartbeat = now
            agent.lost_at = None
            agent.version = hb.version
            agent.architecture = hb.architecture
            agent.region = hb.region
            agent.compute_plugins = plugins
            images_said: tuple[str, tuple[Any, ...]] | None = None
            if hb.images is not None:
                # The catalogue is written only if this agent's images changed, or the catalogue did since
                # this manager last wrote them for it (all agents report the same images, every 30 s at least).
                images_said = (_hash(hb.images), await self._generations.current("images"))
                if self._images_written.get(agent_id) != images_said:
                    await register_images(db, hb.images)
            await db.commit()
        if images_said is not None:
            # The generation after this commit: a catalogue change of our own counts as seen.
            self._images_written[agent_id] = (images_said[0], await self._generations.current("images"))
        if hb.images is not None:
            self._images.update(agent_id, hb.images)
        if joined or reshaped:
            self._on_capacity_change()
        if joined:
            self._on_join()
