"""The manager's HTTP server: app factory, error handling, URL compatibility and background tasks."""

from __future__ import annotations

import asyncio
import logging
from collections.abc import AsyncIterator, Awaitable, Callable, Coroutine
from contextlib import asynccontextmanager, suppress
from typing import Any

from fastapi import FastAPI

from ai.backend.common.config import server_setup
from ai.backend.common.logs import RequestIdMiddleware
from ai.backend.common.types import BinarySize
from ai.backend.common.web import install_problem_handlers

from .agents.health import check_agents
from .api import (
    agent_callbacks,
    appproxy,
    auth,
    cluster,
    events,
    gql,
    registries,
    resource,
    root,
    session,
    session_apps,
    session_files,
    ssh_keypair,
    status,
    stream,
    template,
    usage_stats,
    userconfig,
    vfolder_legacy,
    vfolders,
)
from .api.middleware import CompatPathMiddleware
from .api.spec import serve_spec_aliases
from .apps.endings import close_apps_of_ended_sessions
from .body_limit import BodyLimitMiddleware
from .config import ManagerConfig
from .context import ManagerContext, build_context
from .metrics import install_metrics
from .presence import ManagerRefused, Roles, watch_orphans
from .ratelimit import RateLimiter, RateLimitMiddleware
from .scheduler import Scheduler
from .sessions.limits import enforce_session_limits

log = logging.getLogger("ai.backend.manager")


async def _periodic(interval: float, fn: Callable[[], Awaitable[Any]]) -> None:
    while True:
        await asyncio.sleep(interval)
        try:
            await fn()
        except Exception:  # noqa: BLE001 - keep the housekeeping loop alive
            log.exception("periodic task %s failed", getattr(fn, "__name__", fn))


def create_app(config: ManagerConfig) -> FastAPI:
    """Build the manager application for ``config``; its services (:class:`ManagerContext`) are built when
    it starts serving and are ``app.state.ctx`` from then on."""

    @asynccontextmanager
    async def lifespan(app: FastAPI) -> AsyncIterator[None]:
        ctx = await build_context(config)
        app.state.ctx = ctx
        presence, registry = ctx.presence, ctx.registry
        try:
            await presence.start()
        except ManagerRefused as e:
            log.error("%s", e)
            await ctx.close()
            raise
        # Before serving: sessions that gone managers (a crashed predecessor) left half started or half
        # destroyed move on now; those of other live managers are theirs (ADR 0014).
        if presence.shared:
            await registry.recover_orphans(await presence.alive())
        else:
            await registry.recover_after_restart()

        def leader_loops() -> list[Coroutine[Any, Any, Any]]:
            """What one manager of the database runs: the leader (the only manager without PostgreSQL+Redis)."""
            registry.schedule_event.set()  # a first pass at once
            loops = [
                Scheduler(
                    ctx.db,
                    registry.schedule_event,
                    lambda sid: registry.spawn(registry.start_session(sid)),
                    on_pass=ctx.metrics.scheduler_pass_seconds.observe,
                    owner=presence.manager_id,
                ).run(),
                _periodic(
                    5.0, lambda: check_agents(ctx.db, registry.mark_terminated, config.manager.heartbeat_timeout)
                ),
                _periodic(config.manager.session_limit_check_interval, lambda: enforce_session_limits(registry)),
            ]
            if presence.shared:
                loops.append(watch_orphans(presence, registry.recover_orphans))
            return loops

        roles = Roles(leader_loops, lambda: [presence.forward_wakes(registry.schedule_event)])
        tasks = [
            asyncio.create_task(_periodic(2.0, lambda: ctx.api_usage.flush(ctx.db))),
            asyncio.create_task(_periodic(2.0, registry.flush_query_counts)),
            asyncio.create_task(_periodic(2.0, registry.activity.flush)),  # no-op without Redis
            asyncio.create_task(close_apps_of_ended_sessions(ctx.bus, ctx.circuits, ctx.appproxy, registry.spawn)),
            asyncio.create_task(presence.run(roles)),
        ]
        try:
            yield
        finally:
            for t in tasks:
                t.cancel()
            for t in tasks:
                with suppress(asyncio.CancelledError):
                    await t
            await roles.stop()
            await ctx.close()

    app = FastAPI(
        title="Backend.AI manager (open implementation)",
        version=root.MANAGER_VERSION,
        lifespan=lifespan,
        docs_url="/docs",
        openapi_url="/openapi.json",
        redoc_url=None,
    )
    serve_spec_aliases(app, "/spec")  # the document's first home, still linked from older docs
    install_problem_handlers(app, logger=log)
    for r in (
        root.router,
        auth.router,
        ssh_keypair.router,
        template.router,
        session_files.router,
        session.router,
        session_apps.router,
        gql.router,
        agent_callbacks.router,
        appproxy.router,
        status.router,
        stream.router,
        resource.router,
        usage_stats.router,
        events.router,
        userconfig.router,
        registries.router,
        vfolders.router,
        vfolder_legacy.router,
        cluster.router,
    ):
        app.include_router(r)

    def limiter() -> RateLimiter | None:
        ctx: ManagerContext | None = getattr(app.state, "ctx", None)
        return None if ctx is None else ctx.rate_limiter

    app.add_middleware(
        RateLimitMiddleware, get_limiter=limiter, anonymous_limit=lambda: config.manager.anonymous_rate_limit
    )
    install_metrics(app, config)  # between these two: sees the rate limiter's 429s and the rewritten routes
    app.add_middleware(CompatPathMiddleware)
    app.add_middleware(BodyLimitMiddleware, limit=int(BinarySize.parse(config.manager.max_request_body)))
    # Outermost: the problems of the other middlewares (413, 429, 404 of a version prefix) carry the id too.
    app.add_middleware(RequestIdMiddleware)

    return app


def main(argv: list[str] | None = None) -> None:
    """Run the manager: ``python -m ai.backend.manager.server [-f manager.toml]``."""
    import uvicorn

    config, debug = server_setup(ManagerConfig, "manager", "manager", argv)
    uvicorn.run(
        create_app(config),
        host=config.manager.service_addr_host,
        port=config.manager.service_addr_port,
        log_level="debug" if debug else "warning",
        access_log=debug,
        log_config=None,  # uvicorn's records go through the root logger's handler (JSON stays JSON)
        loop="auto",
        http="auto",
        # Open SSE streams never end by themselves: cut them (clients reconnect) instead of hanging.
        timeout_graceful_shutdown=5,
        ssl_certfile=config.manager.ssl_cert or None,
        ssl_keyfile=config.manager.ssl_key or None,
    )


if __name__ == "__main__":
    main()
