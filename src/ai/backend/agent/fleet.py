"""Many dummy agents in one process: ``python -m ai.backend.agent.fleet -f fleet.toml --count N
--base-port P --id-prefix i-dummy-``.

``fleet.toml`` is an ordinary agent.toml; every agent of the fleet uses it with ``backend = "dummy"``,
its own id (``<prefix><index>``, from 1) and, with ``--scaling-groups a,b``, a scaling group taken
round-robin. One HTTP server on ``--base-port`` serves all of them: agent ``X`` answers under the path
prefix ``/a/X`` and advertises ``http://<host>:<port>/a/X`` (the manager appends its RPC paths to the
advertised address), so a thousand agents cost one socket, not a thousand.

Each agent stands for a host of its own, so each publishes its kernels' apps on a loopback address of its
own (agent ``i`` on ``127.1.0.0 + i``, see :func:`loopback_host`) unless ``[container] bind-host`` or
``advertised-host`` is set: the agents hand out the same host ports, as separate hosts would. The agents start one after
another, ``heartbeat-interval / N`` apart, which spreads their heartbeats evenly over the interval.
"""

from __future__ import annotations

import argparse
import asyncio
import logging
import sys
from collections.abc import Sequence
from contextlib import AsyncExitStack
from typing import Any

from fastapi import FastAPI
from fastapi.responses import JSONResponse
from starlette.types import Receive, Scope, Send

from ai.backend.common.config import load_config_or_exit
from ai.backend.common.problems import NotFound

from .accelerators import PluginError, load_plugins
from .config import AgentConfig
from .server import RPC_KEEP_ALIVE, create_app

log = logging.getLogger("ai.backend.agent.fleet")
PREFIX = "/a/"


class FleetRouter:
    """An ASGI app that hands ``/a/<agent-id>/...`` to that agent's app with the prefix removed."""

    def __init__(self, apps: dict[str, FastAPI]) -> None:
        self.apps = apps

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] == "lifespan":
            return  # the agents' lifespans are run by run_fleet
        path: str = scope["path"]
        agent_id, _, rest = path[len(PREFIX) :].partition("/") if path.startswith(PREFIX) else ("", "", "")
        app = self.apps.get(agent_id)
        if app is None:
            if scope["type"] == "http":
                exc = NotFound(f"No agent {agent_id!r} in this fleet.")
                await JSONResponse(exc.body(), status_code=404, media_type="application/problem+json")(
                    scope, receive, send
                )
            return
        await app({**scope, "path": "/" + rest, "raw_path": ("/" + rest).encode()}, receive, send)


def loopback_host(index: int) -> str:
    """The loopback address of the ``index``-th agent (from 1) of a fleet: ``127.1.0.1``, ``127.1.0.2``, …
    (all of 127.0.0.0/8 is the loopback interface on Linux)."""
    n = (1 << 16) + index
    return f"127.{(n >> 16) & 255}.{(n >> 8) & 255}.{n & 255}"


def fleet_configs(
    base: AgentConfig, *, count: int, port: int, id_prefix: str, scaling_groups: Sequence[str] = ()
) -> list[AgentConfig]:
    """The configuration of each agent of a fleet, derived from ``base``."""
    host = base.agent.rpc_listen_host
    default_apps_host = base.container.bind_host == "127.0.0.1" and not base.container.advertised_host
    out = []
    for i in range(1, count + 1):
        agent_id = f"{id_prefix}{i}"
        agent = base.agent.model_copy(
            update={
                "id": agent_id,
                "backend": "dummy",
                "rpc_listen_port": port,
                "advertised_addr": f"http://{host}:{port}{PREFIX}{agent_id}",
                "scaling_group": scaling_groups[(i - 1) % len(scaling_groups)]
                if scaling_groups
                else base.agent.scaling_group,
            }
        )
        update: dict[str, Any] = {"agent": agent}
        if default_apps_host:
            update["container"] = base.container.model_copy(update={"bind_host": loopback_host(i)})
        out.append(base.model_copy(update=update))
    return out


async def run_fleet(configs: list[AgentConfig], host: str, port: int) -> None:
    """Serve every agent of ``configs`` on ``host:port`` until cancelled."""
    import uvicorn

    apps: dict[str, FastAPI] = {}
    async with AsyncExitStack() as stack:
        server = uvicorn.Server(
            uvicorn.Config(
                FleetRouter(apps),
                host=host,
                port=port,
                log_level="warning",
                access_log=False,
                lifespan="off",
                timeout_keep_alive=RPC_KEEP_ALIVE,
            )
        )
        serving = asyncio.create_task(server.serve())
        for cfg in configs:
            app = create_app(cfg, load_plugins(cfg))
            await stack.enter_async_context(app.router.lifespan_context(app))
            apps[cfg.agent.id] = app
            # Spread the heartbeats over the interval instead of sending them all at once.
            await asyncio.sleep(cfg.agent.heartbeat_interval / len(configs))
        log.info("fleet of %d dummy agents serving on %s:%d", len(configs), host, port)
        try:
            await serving
        finally:
            server.should_exit = True


def main(argv: list[str] | None = None) -> None:
    """Run a fleet of dummy agents (see the module docstring)."""
    parser = argparse.ArgumentParser(prog="backend.ai-agent-fleet")
    parser.add_argument("-f", "--config", help="path to the agent.toml every agent of the fleet uses")
    parser.add_argument("--count", type=int, required=True, help="number of agents")
    parser.add_argument("--base-port", type=int, required=True, help="the port serving all agents")
    parser.add_argument("--id-prefix", default="i-dummy-", help="agent ids are <prefix><index>")
    parser.add_argument("--scaling-groups", default="", help="comma-separated, assigned round-robin")
    parser.add_argument("--debug", action="store_true")
    args = parser.parse_args(argv)
    if args.count < 1 or not 1 <= args.base_port <= 65535:
        print("fleet: --count must be >= 1 and --base-port a TCP port", file=sys.stderr)
        sys.exit(2)
    base = load_config_or_exit(AgentConfig, "agent", args.config, "fleet")
    logging.basicConfig(
        level=logging.DEBUG if args.debug else logging.WARNING, format="%(asctime)s %(levelname)s %(name)s: %(message)s"
    )
    groups = [g.strip() for g in args.scaling_groups.split(",") if g.strip()]
    configs = fleet_configs(
        base, count=args.count, port=args.base_port, id_prefix=args.id_prefix, scaling_groups=groups
    )
    try:
        asyncio.run(run_fleet(configs, base.agent.rpc_listen_host, args.base_port))
    except PluginError as e:
        print(f"fleet: {e}", file=sys.stderr)
        sys.exit(2)
    except KeyboardInterrupt:
        pass


if __name__ == "__main__":
    main()
