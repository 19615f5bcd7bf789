"""The agent's RPC server (for the manager) and its heartbeat loop."""

from __future__ import annotations

import asyncio
import logging
import platform
import sys
import time
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager, suppress
from typing import Any

from fastapi import FastAPI, Request, WebSocket
from fastapi.responses import JSONResponse, Response

from ai.backend.common.config import server_setup
from ai.backend.common.contracts import agent as api
from ai.backend.common.contracts import parse_wire
from ai.backend.common.contracts.agent import (
    Heartbeat,
    KernelCreated,
    KernelEvent,
    KernelSpec,
    NetworkSpec,
    ServiceShutdown,
    ServiceStart,
)
from ai.backend.common.logs import RequestIdMiddleware, bind_process
from ai.backend.common.problems import AuthorizationFailed, InvalidAPIParameters, ProblemError
from ai.backend.common.web import SharedSecretMiddleware, install_problem_handlers, serve
from ai.backend.kernel.protocol import cap_completions

from .accelerators import AcceleratorManager, PluginError, load_plugins
from .backends.base import KernelBackend
from .backends.docker.backend import DockerBackend
from .backends.docker.files import KernelFiles
from .backends.dummy import DummyBackend
from .cluster_kernels import check_network_name
from .config import AgentConfig
from .manager_client import EXIT_REPORT_TRIES, ManagerClient
from .metrics import AgentMetrics, install_metrics
from .pty_relay import serve_pty
from .resources import detect_capacity
from .stats import HostStats

log = logging.getLogger("ai.backend.agent")
VERSION = "0.1.0"
# How long the RPC server keeps an idle connection: longer than the manager's pool keeps one (30 s), so the
# manager always closes first and never sends a request on a connection the agent is closing (uvicorn's
# default of 5 s made such a race fail a session start now and then under load).
RPC_KEEP_ALIVE = 75


class Agent:
    """Glue between the backend, the manager and the RPC app."""

    def __init__(
        self, config: AgentConfig, accelerators: AcceleratorManager | None = None, metrics: AgentMetrics | None = None
    ) -> None:
        self.config = config
        self.metrics = metrics if metrics is not None else AgentMetrics(process=False)
        self.accelerators = accelerators if accelerators is not None else load_plugins(config)
        self.capacity = detect_capacity(config.resource) + self.accelerators.available_slots()
        self.manager = ManagerClient(config.agent.manager_urls, config.agent.cluster_secret)
        self.backend: KernelBackend
        # File transfers go through Docker; a dummy agent has no container to read from.
        self.files: KernelFiles | None = None
        if config.agent.backend == "dummy":
            self.backend = DummyBackend(config, self.on_kernel_exit, self.on_kernel_event, self.accelerators)
        else:
            docker = DockerBackend(config, self.on_kernel_exit, self.on_kernel_event, self.accelerators)
            self.backend, self.files = docker, KernelFiles(docker)
        self.host_stats = HostStats()
        # Kernels whose creation is under way, and those of them destroyed meanwhile (the manager's destroy, or
        # reconciliation): the creation removes what it made when it ends (a creation token, so to speak).
        self.creating: set[str] = set()
        self.cancelled: set[str] = set()
        # Whether the manager has reconciled this process's kernels yet (asked for in the heartbeats until then).
        self.reconciled = False
        self.metrics.watch(lambda: len(self.backend.kernels), lambda: len(self.creating))

    async def create_kernel(self, spec: KernelSpec) -> KernelCreated:
        """Create a kernel; one destroyed while it was being created is removed, and the creation fails."""
        kid = spec.kernel_id
        if kid in self.creating:
            raise InvalidAPIParameters(f"Kernel {kid} is already being created on this agent.")
        self.creating.add(kid)
        started = time.monotonic()
        try:
            result = await self.backend.create_kernel(spec)
            self.metrics.kernel_created(result.phases, time.monotonic() - started)
        finally:
            self.creating.discard(kid)
            cancelled = kid in self.cancelled
            self.cancelled.discard(kid)
        if cancelled:
            await self._destroy_quietly(kid)
            raise KernelCreationCancelled(f"Kernel {kid} was destroyed while it was being created.")
        return result

    async def destroy_kernel(self, kid: str) -> dict[str, Any]:
        """Remove a kernel (its last stats), also one being created: its container goes as soon as it has
        one, else when the creation ends."""
        if kid in self.creating:
            self.cancelled.add(kid)
            if kid not in self.backend.kernels:
                return {}
        return await self.backend.destroy_kernel(kid)

    async def _destroy_quietly(self, kid: str) -> None:
        try:
            await self.destroy_kernel(kid)
        except ProblemError:
            pass  # already gone
        except Exception:  # noqa: BLE001 - a removal that failed is tried again at the next reconciliation
            log.exception("could not remove kernel %s", kid)

    async def remove_stale(self, stale: list[str] | None) -> None:
        """Remove the kernels that the manager says no live session owns (its heartbeat answer)."""
        if stale is None:
            return
        self.reconciled = True
        for kid in stale:
            if kid in self.backend.kernels or kid in self.creating:
                log.warning("kernel %s belongs to no live session on the manager: removing it", kid)
                await self._destroy_quietly(kid)

    async def on_kernel_exit(
        self,
        kernel_id: str,
        reason: str,
        exit_code: int | None,
        *,
        stats: dict[str, Any] | None = None,
        task_log: str | None = None,
    ) -> None:
        """Tell the manager that a kernel ended by itself (tried a few times: the report is idempotent)."""
        log.info("kernel %s ended: %s (exit code %s)", kernel_id, reason, exit_code)
        event = KernelEvent(kernel_id=kernel_id, reason=reason, exit_code=exit_code, stats=stats, task_log=task_log)
        try:
            await self.manager.kernel_event(event, tries=EXIT_REPORT_TRIES)
        except ProblemError as e:
            log.warning("could not report the end of kernel %s: %s", kernel_id, e.detail)

    async def on_kernel_event(self, kernel_id: str, event: str) -> None:
        """Tell the manager about a step of a kernel's creation (``pulling``); best effort."""
        try:
            await self.manager.kernel_event(KernelEvent(kernel_id=kernel_id, event=event))
        except ProblemError as e:
            log.warning("could not report %s of kernel %s: %s", event, kernel_id, e.detail)

    async def heartbeat_once(self) -> None:
        """Send one heartbeat, and remove the kernels the manager's answer says are stale."""
        hb = Heartbeat(
            id=self.config.agent.id,
            addr=self.config.rpc_addr(),
            scaling_group=self.config.agent.scaling_group,
            region=self.config.agent.region,
            available_slots=self.capacity.to_json(),
            version=VERSION,
            slot_types=self.accelerators.slot_types(),
            compute_plugins=self.accelerators.metadata(),
            architecture=platform.machine(),
            images=await self.backend.list_images(),
            kernels=list(self.backend.kernels),
            live_stat=self.host_stats.sample(),
            kernel_stats=await self.backend.live_stats(),
            # A restarted agent took back containers the manager may have ended: it asks for reconciliation.
            reconcile=None if self.reconciled else True,
        )
        answer = await self.manager.heartbeat(hb)
        await self.remove_stale(answer.stale_kernels)

    async def heartbeat_loop(self) -> None:
        while True:
            try:
                await self.heartbeat_once()
            except ProblemError as e:
                log.warning("heartbeat to the manager at %s failed (%s): %s", self.manager.base_url, e.status, e.detail)
            await asyncio.sleep(self.config.agent.heartbeat_interval)


async def _json(request: Request) -> Any:
    """The request's JSON body (a 400 when it is not JSON)."""
    try:
        return await request.json()
    except ValueError:
        raise InvalidAPIParameters("The body must be JSON.") from None


class KernelCreationCancelled(ProblemError):
    status, slug, title = 409, "kernel-creation-cancelled", "The kernel was destroyed while it was being created"


def create_app(config: AgentConfig, accelerators: AcceleratorManager | None = None) -> FastAPI:
    """The agent's RPC application (``accelerators``: the loaded compute plugins, else loaded here)."""

    @asynccontextmanager
    async def lifespan(app: FastAPI) -> AsyncIterator[None]:
        agent = Agent(config, accelerators, metrics)
        app.state.agent = agent
        await agent.backend.start()
        hb = asyncio.create_task(agent.heartbeat_loop())
        try:
            yield
        finally:
            hb.cancel()
            with suppress(asyncio.CancelledError):
                await hb
            await agent.backend.close()
            await agent.manager.close()

    app = FastAPI(title="Backend.AI agent RPC", lifespan=lifespan, docs_url=None, redoc_url=None, openapi_url=None)

    install_problem_handlers(
        app,
        internal_slug="agent-error",
        internal_title="Agent error",
        internal_detail=lambda e: f"{type(e).__name__}: {e}",
        logger=log,
    )
    # WebSocket routes (the pty) check the secret themselves.
    app.add_middleware(
        SharedSecretMiddleware,
        header=api.CLUSTER_SECRET_HEADER,
        secret=config.agent.cluster_secret,
        refusal=AuthorizationFailed("Bad or missing cluster secret."),
    )
    app.add_middleware(RequestIdMiddleware)  # the manager's request id (X-Request-ID) on this agent's logs
    metrics = install_metrics(app, config)  # after (outside) the secret check: see agent/metrics.py

    def backend(request: Request) -> KernelBackend:
        b: KernelBackend = request.app.state.agent.backend
        return b

    @app.get(api.HEALTH_PATH)
    async def health(request: Request) -> dict[str, Any]:
        return {"id": config.agent.id, "kernels": len(backend(request).kernels)}

    @app.post(api.KERNELS_PATH)
    async def create_kernel(request: Request) -> dict[str, Any]:
        spec = parse_wire(KernelSpec, await request.json(), "kernel spec")
        agent: Agent = request.app.state.agent
        return (await agent.create_kernel(spec)).to_wire()

    @app.delete(api.KERNEL_PATH)
    async def destroy_kernel(kid: str, request: Request) -> dict[str, Any]:
        agent: Agent = request.app.state.agent
        return {"stats": await agent.destroy_kernel(kid)}

    @app.post(api.NETWORKS_PATH)
    async def create_network(request: Request) -> dict[str, Any]:
        """The private network of a cluster session: ``{"name": "bai-cluster-<session id>", "mode"}``."""
        body = parse_wire(NetworkSpec, await request.json())
        return await backend(request).create_network(check_network_name(body.name), body.mode or "single-node")

    @app.delete(api.NETWORK_PATH)
    async def remove_network(name: str, request: Request) -> dict[str, Any]:
        return {"removed": await backend(request).remove_network(check_network_name(name))}

    @app.post(api.EXECUTE_PATH)
    async def execute(kid: str, request: Request) -> JSONResponse:
        body = await request.json()
        result = await backend(request).runner_request(
            kid,
            "execute",
            mode=body.get("mode", "query"),
            run_id=body.get("run_id"),
            code=body.get("code", ""),
            opts=body.get("opts"),
        )
        return JSONResponse(result)  # plain JSON from the runner: no response-model encoding on the hot path

    @app.post(api.INTERRUPT_PATH)
    async def interrupt(kid: str, request: Request) -> dict[str, Any]:
        return await backend(request).runner_request(kid, "interrupt")

    @app.post(api.COMPLETE_PATH)
    async def complete(kid: str, request: Request) -> dict[str, Any]:
        body = await request.json()
        res = await backend(request).runner_request(
            kid, "complete", code=body.get("code", ""), opts=body.get("opts") or {}
        )
        return {"result": cap_completions(res.get("result"))}  # the runner is not trusted to have capped it

    @app.post(api.RESTART_PATH)
    async def restart(kid: str, request: Request) -> dict[str, Any]:
        return await backend(request).runner_request(kid, "restart")

    @app.post(api.SERVICE_START_PATH)
    async def start_service(kid: str, request: Request) -> dict[str, Any]:
        """Start an app of the kernel: ``{"name", "options": {"envs", "arguments"}}`` → ``{"status", "host",
        "ports"}`` (ADR 0012)."""
        body = parse_wire(ServiceStart, await _json(request))
        return await backend(request).start_service(kid, body.name, body.options)

    @app.post(api.SERVICE_SHUTDOWN_PATH)
    async def shutdown_service(kid: str, request: Request) -> dict[str, Any]:
        """Stop an app of the kernel: ``{"name"}`` → ``{"status": "stopped" | "not-running"}``."""
        body = parse_wire(ServiceShutdown, await _json(request))
        return await backend(request).shutdown_service(kid, body.name)

    @app.websocket(api.PTY_PATH)
    async def pty(ws: WebSocket, kid: str) -> None:
        """A terminal in the kernel (see pty_relay.py); checks the cluster secret itself."""
        await serve_pty(ws, ws.app.state.agent.backend, kid, config.agent.cluster_secret)

    @app.get(api.LOGS_PATH)
    async def logs(kid: str, request: Request) -> dict[str, Any]:
        return {"logs": await backend(request).logs(kid)}

    # Session files (see files.py); paths are relative to /home/work, normalized by the manager.
    def files(request: Request) -> KernelFiles:
        f: KernelFiles | None = request.app.state.agent.files
        if f is None:
            raise InvalidAPIParameters("The dummy agent backend has no kernel files.")
        return f

    @app.put(api.FILES_PATH)
    async def upload_files(kid: str, request: Request) -> dict[str, Any]:
        """Body: a tar of regular files to write under /home/work."""
        return {"written": await files(request).upload(kid, await request.body())}

    @app.get(api.ARCHIVE_PATH)
    async def download_file(kid: str, request: Request, path: str = "", max_bytes: int = 64 * 1024 * 1024) -> Response:
        """A tar archive of one file or directory under /home/work."""
        data = await files(request).download(kid, path, max_bytes)
        return Response(data, media_type="application/x-tar")

    @app.post(api.LIST_FILES_PATH)
    async def list_files(kid: str, request: Request) -> dict[str, Any]:
        body = await request.json()
        return await files(request).list_files(kid, str(body.get("path") or ""))

    return app


def main(argv: list[str] | None = None) -> None:
    """Run the agent: ``python -m ai.backend.agent.server [-f agent.toml]``."""
    config, debug = server_setup(AgentConfig, "agent", "agent", argv)
    bind_process(agent_id=config.agent.id)
    try:
        accelerators = load_plugins(config)
    except PluginError as e:
        print(f"agent: {e}", file=sys.stderr)
        sys.exit(2)
    serve(
        create_app(config, accelerators),
        config.agent.rpc_listen_host,
        config.agent.rpc_listen_port,
        debug=debug,
        timeout_keep_alive=RPC_KEEP_ALIVE,
    )


if __name__ == "__main__":
    main()
