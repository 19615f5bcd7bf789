"""The manager's shared services, built completely at start-up: one typed, frozen :class:`ManagerContext`.

Everything a handler, a background loop or a GraphQL resolver shares lives here, with its type; nothing is
attached to the application later. Handlers get it through the ``Ctx`` dependency (``api/deps.py``).
"""

from __future__ import annotations

import uuid
from contextlib import suppress
from dataclasses import dataclass
from typing import TYPE_CHECKING

from sqlalchemy.ext.asyncio import AsyncEngine, AsyncSession, async_sessionmaker

from . import generations
from .agent_client import AgentRPC
from .agents.heartbeats import AgentHeartbeats
from .agents.live_stats import AgentLiveStats, KernelLiveStats
from .apps.appproxy import AppProxyClient
from .apps.circuits import CircuitRegistry
from .auth import KeypairRecord
from .bgtask import BackgroundTaskRegistry, make_bgtask_registry
from .config import ManagerConfig
from .db import create_engine, session_factory
from .events import EventBus, make_event_bus
from .generations import GenerationCache, GenerationReader
from .images import ImageInventory
from .metrics import ManagerMetrics
from .presence import Presence, make_presence, new_manager_id
from .ratelimit import ApiUsage, RateLimiter, make_rate_limiter
from .registry import SessionRegistry
from .sessions.limits import RedisActivityStore
from .storage_client import StorageClient

if TYPE_CHECKING:  # the GraphQL layer imports the API dependencies, which import this module
    from .api.gql import GraphQLRuntime


@dataclass(frozen=True, slots=True, kw_only=True)
class ManagerContext:
    """The manager's shared services (one per process)."""

    config: ManagerConfig
    engine: AsyncEngine
    db: async_sessionmaker[AsyncSession]
    # Table generations: what cached rows were read under (see generations.py).
    generations: GenerationReader
    bus: EventBus
    bgtasks: BackgroundTaskRegistry
    rpc: AgentRPC
    storage: StorageClient
    registry: SessionRegistry
    heartbeats: AgentHeartbeats
    rate_limiter: RateLimiter
    api_usage: ApiUsage
    # Keypairs by access key, while the accounts generation is unchanged (authentication reads it per call).
    keypairs: GenerationCache[str, KeypairRecord]
    images: ImageInventory
    agent_stats: AgentLiveStats
    kernel_stats: KernelLiveStats
    graphql: GraphQLRuntime
    # The app streams open in this process, and the browser-facing app proxy (None: not configured).
    circuits: CircuitRegistry
    appproxy: AppProxyClient | None
    # The Prometheus registry of this manager (GET /metrics; see metrics.py).
    metrics: ManagerMetrics
    # This manager among the others of its database: its id, the leader election (ADR 0014).
    presence: Presence

    async def close(self) -> None:
        """Release what the services hold (at shutdown, after the background loops stopped)."""
        await self.presence.close()
        await self.registry.flush_query_counts()
        with suppress(Exception):  # Redis may be gone at shutdown: the uses of the last seconds are lost
            await self.registry.activity.flush()
        await self.api_usage.flush(self.db)
        await self.bgtasks.shutdown()
        await self.registry.activity.close()
        await self.bus.close()
        await self.rate_limiter.close()
        await self.generations.close()
        await self.rpc.close()
        await self.storage.close()
        if self.appproxy is not None:
            await self.appproxy.close()
        await self.engine.dispose()


async def build_context(config: ManagerConfig) -> ManagerContext:
    """Build every shared service for ``config`` (connections are opened here or on first use)."""
    from .api.gql import GraphQLRuntime
    from .api.root import MANAGER_VERSION

    engine = create_engine(config.db_url())
    db = session_factory(engine)
    metrics = ManagerMetrics(db)
    # Before anything commits: changes must reach the other managers' caches (generations.py).
    gens = generations.propagating_reader(config.manager.state_dir, config.redis.url or None)
    rpc = AgentRPC(config.manager.cluster_secret)
    bus = make_event_bus(config.redis.url or None)
    await bus.start()
    storage = StorageClient(config.storage_proxies)

    async def folder_path(host: str, vfid: str) -> str:
        return await storage.mount_path(host, uuid.UUID(str(vfid)))

    manager_id = new_manager_id()
    registry = SessionRegistry(
        db,
        rpc,
        bus,
        generations=gens,
        docker_registries=dict(config.docker_registries),
        folder_path=folder_path if config.storage_proxies else None,
        manager_id=manager_id,
        # Idle timeouts see the use of a session on every manager (checked by the leader only).
        activity_store=RedisActivityStore(config.redis.url) if config.redis.url else None,
    )
    presence = make_presence(
        db,
        config.db_url(),
        config.redis.url or None,
        manager_id=manager_id,
        address=config.manager.public_address(),
        version=MANAGER_VERSION,
        on_wake=registry.schedule_event.set,
    )
    images = ImageInventory()
    agent_stats, kernel_stats = AgentLiveStats(), KernelLiveStats()
    grace = config.manager.reconcile_grace
    heartbeats = AgentHeartbeats(
        db,
        gens,
        images=images,
        agent_stats=agent_stats,
        kernel_stats=kernel_stats,
        reconcile=lambda reports: registry.reconcile_agents(reports, grace),
        reconcile_interval=config.manager.reconcile_interval,
        on_capacity_change=registry.agents_changed,
        on_join=registry.schedule_event.set,
    )
    return ManagerContext(
        config=config,
        engine=engine,
        db=db,
        generations=gens,
        bus=bus,
        bgtasks=make_bgtask_registry(
            bus,
            config.redis.url or None,
            manager_id=manager_id,
            alive=presence.alive if presence.shared else None,
        ),
        rpc=rpc,
        storage=storage,
        registry=registry,
        heartbeats=heartbeats,
        rate_limiter=make_rate_limiter(
            config.redis.url or None, config.manager.rate_limit_window, on_refusal=metrics.rate_limited
        ),
        api_usage=ApiUsage(),
        keypairs=GenerationCache(),
        images=images,
        agent_stats=agent_stats,
        kernel_stats=kernel_stats,
        graphql=GraphQLRuntime.for_config(config),
        circuits=CircuitRegistry(),
        appproxy=AppProxyClient(config.appproxy) if config.appproxy is not None else None,
        metrics=metrics,
        presence=presence,
    )
