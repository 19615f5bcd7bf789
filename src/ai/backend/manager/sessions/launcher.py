"""The launcher: starting placed sessions on their agents (PREPARING, the cluster network, the kernels,
RUNNING or ERROR), the kernel specs agents get, and tearing kernels down again.

The status writes of sessions starting at the same time are coalesced into shared transactions; at most
``MAX_CONCURRENT_STARTS`` sessions have their kernels created at once.
"""

from __future__ import annotations

import asyncio
import logging
import time
import uuid
from collections.abc import Awaitable, Callable, Mapping
from typing import Any, Literal
from urllib.parse import urlsplit

from sqlalchemy import select

from ai.backend.common.contracts.agent import (
    KERNEL_PATH,
    KERNELS_PATH,
    NETWORK_PATH,
    NETWORKS_PATH,
    FolderMount,
    KernelSpec,
    NetworkSpec,
    RegistryAuth,
)
from ai.backend.common.problems import ServiceUnavailable

from ..agent_client import AgentError, AgentRPC
from ..background import Spawn
from ..batching import Coalescer
from ..db import retry_locked
from ..events import EventBus
from ..models import KernelRow, SessionRow
from ..models.base import utcnow
from ..userconfig import kernel_user_config
from .cluster import KernelSlot, cluster_spec, local_rank, network_name, new_ssh_keypair
from .events import publish_session_event
from .ssh_keys import owner_ssh_keypairs
from .status import START_SETTLED, TERMINAL, status_change
from .status import SessionStatus as S
from .store import (
    SessionStore,
    record_change,
    release_slots,
    sessions_with_kernels,
    set_status,
    update_rows,
)

log = logging.getLogger("ai.backend.manager.sessions")

# Sessions whose kernels are being created at the same time (each waits on its agents).
MAX_CONCURRENT_STARTS = 64
# A started session: its row, its kernels (main1 first) and its owner's dotfiles, bootstrap script and SSH
# keypair.
Prepared = tuple[SessionRow, list[KernelRow], dict[str, Any]]
# Where a folder lives on the hosts: (host, vfid) -> absolute path (the storage proxy answers).
FolderPath = Callable[[str, str], Awaitable[str]]


def advertised_host(created: dict[str, Any], agent_addr: str | None) -> str | None:
    """Where a created kernel's service ports are published: the host its agent answered (``kernel_host``),
    else the host of the agent's RPC address."""
    host = created.get("kernel_host")
    if isinstance(host, str) and host:
        return host[:256]
    return urlsplit(agent_addr or "").hostname or None


class Launcher:
    """Starts sessions the scheduler placed, and removes kernels from their agents."""

    def __init__(
        self,
        store: SessionStore,
        rpc: AgentRPC,
        bus: EventBus,
        wake: asyncio.Event,
        spawn: Spawn,
        *,
        folder_path: FolderPath | None = None,
        docker_registries: Mapping[str, Any] | None = None,
        manager_id: str | None = None,
    ) -> None:
        self.store = store
        self.manager_id = manager_id
        self._rpc = rpc
        self._bus = bus
        self._wake = wake
        self._spawn = spawn
        self._folder_path = folder_path
        # The [docker-registries] of the configuration: credentials agents need to pull their images.
        self._docker_registries = dict(docker_registries or {})
        # Sessions whose kernels are being created, and kernel ends reported meanwhile (see start).
        self._starting: set[uuid.UUID] = set()
        self._early_exits: dict[uuid.UUID, dict[str, Any]] = {}
        # A pass may place thousands of sessions at once; their starts share the database pool and the agents.
        self._start_slots = asyncio.Semaphore(MAX_CONCURRENT_STARTS)
        self._preparing: Coalescer[uuid.UUID, Prepared | None] = Coalescer(self._prepare_batch)
        self._running: Coalescer[
            tuple[SessionRow, dict[uuid.UUID, dict[str, Any]], dict[str, Any]], tuple[SessionRow, bool]
        ] = Coalescer(self._running_batch)

    def _publish(self, name: str, session: SessionRow, reason: str | None = None, **extra: Any) -> None:
        publish_session_event(self._bus, name, session, reason, **extra)

    def defer_end(self, session_id: uuid.UUID, end: dict[str, Any]) -> bool:
        """Keep the end of a session whose kernels are being created (``end``: the keyword arguments of
        ``mark_terminated``) for :meth:`start` to hand back; ``False`` when it is not being started here."""
        if session_id not in self._starting:
            return False
        self._early_exits[session_id] = end
        return True

    async def start(self, session_id: uuid.UUID) -> dict[str, Any] | None:
        """Start a SCHEDULED session: PREPARING, its kernels created on their agents, then RUNNING (or
        ERROR). Returns the end of the session reported while it was starting (see :meth:`defer_end`), which
        the caller records."""
        t0 = time.monotonic()
        self._starting.add(session_id)
        try:
            prepared = await self._preparing.submit(session_id)
            if prepared is not None:  # else no longer SCHEDULED: cancelled meanwhile
                session, kernels, user_config = prepared
                self._publish("session_preparing", session)
                self._publish("session_creating", session)
                async with self._start_slots:
                    created = await self._create_kernels(session, kernels, user_config)
                if created is not None:
                    await self._record_running(session, kernels, created, t0)
        except Exception as e:  # noqa: BLE001 - a session must never stay SCHEDULED or PREPARING for good
            log.exception("starting session %s failed", session_id)
            try:
                await self.fail_start(session_id, "creation-failed", f"The session could not be started: {e}")
            except Exception:  # noqa: BLE001 - the database itself is failing; the log says so above
                log.exception("could not record the failure of session %s", session_id)
        finally:
            self._starting.discard(session_id)
        # The kernel ended (e.g. a quick batch task) before its creation was recorded.
        return self._early_exits.pop(session_id, None)

    async def wait_for_start(self, session_id: uuid.UUID, timeout: float) -> str:
        """Wait until the session is RUNNING or failed; ``"TIMEOUT"`` when ``timeout`` (>0) passes."""
        deadline = time.monotonic() + timeout if timeout > 0 else None
        async with self._bus.subscribe() as q:
            while True:
                async with self.store.db() as db:
                    status = (
                        await db.execute(select(SessionRow.status).where(SessionRow.id == session_id))
                    ).scalar_one()
                if status in START_SETTLED:
                    return status
                remaining = None if deadline is None else deadline - time.monotonic()
                if remaining is not None and remaining <= 0:
                    return "TIMEOUT"
                try:
                    while True:
                        ev = await asyncio.wait_for(q.get(), timeout=min(remaining or 5.0, 5.0))
                        if ev.session_id == str(session_id):
                            break
                except TimeoutError:
                    pass

    async def _prepare_batch(self, ids: list[uuid.UUID]) -> list[Prepared | None]:
        """One transaction for many starts: the sessions still SCHEDULED become PREPARING (with their
        kernels), and each comes back with its kernels and what the agents need of its owner (dotfiles,
        bootstrap script); ``None`` for the others."""

        async def txn() -> list[Prepared | None]:
            async with self.store.db() as db:
                sessions, kernels = await sessions_with_kernels(db, ids)
                users: dict[uuid.UUID, dict[str, Any]] = {}
                ssh_keys = await owner_ssh_keypairs(
                    db, (s.access_key for s in sessions.values() if s.status == S.SCHEDULED)
                )
                now = utcnow()
                out: list[Prepared | None] = []
                session_updates: list[dict[str, Any]] = []
                kernel_updates: list[dict[str, Any]] = []
                for sid in ids:
                    session = sessions.get(sid)
                    if session is None or session.status != S.SCHEDULED or not kernels.get(sid):
                        out.append(None)
                        continue
                    if session.user_uuid not in users:
                        users[session.user_uuid] = await kernel_user_config(db, session.user_uuid, None)
                    config = {
                        **users[session.user_uuid],
                        "bootstrap_script": session.bootstrap_script or users[session.user_uuid]["bootstrap_script"],
                        "ssh_keypair": ssh_keys.get(session.access_key),
                    }
                    # This manager carries the start out: recovery leaves the session alone while it lives.
                    record_change(
                        session,
                        {**status_change(session, S.PREPARING, now), "manager_id": self.manager_id},
                        session_updates,
                    )
                    for k in kernels[sid]:
                        record_change(k, {"status": S.PREPARING}, kernel_updates)
                    out.append((session, kernels[sid], config))
                await update_rows(db, SessionRow, session_updates)
                await update_rows(db, KernelRow, kernel_updates)
                await db.commit()
            return out

        return await retry_locked(txn)

    async def _create_kernels(
        self, session: SessionRow, kernels: list[KernelRow], user_config: dict[str, Any]
    ) -> dict[uuid.UUID, dict[str, Any]] | None:
        """Create the session's kernels on their agents (a cluster's network first, the sub kernels before
        ``main1``); the agents' answers by kernel id, or ``None`` after recording the failure (ERROR)."""
        session_id = session.id
        cluster = len(kernels) > 1
        ssh = new_ssh_keypair(f"{session.name}@backend.ai") if cluster else None
        created: dict[uuid.UUID, dict[str, Any]] = {}
        try:
            mounts = await self._mount_specs(session)
            if cluster:
                assert kernels[0].agent_addr is not None
                network = NetworkSpec(name=network_name(session.id), mode=session.cluster_mode)
                await self._rpc.call(kernels[0].agent_addr, "POST", NETWORKS_PATH, json=network.to_wire(), timeout=120)

            async def create(k: KernelRow) -> None:
                assert k.agent_addr is not None
                spec = self.kernel_spec(session, k, ssh, mounts=mounts, user_config=user_config)
                created[k.id] = await self._rpc.call(
                    k.agent_addr, "POST", KERNELS_PATH, json=spec.to_wire(), timeout=900
                )

            # The sub kernels first: main1's bootstrap script or batch task may expect them to be up.
            for group in (kernels[1:], kernels[:1]):
                results = await asyncio.gather(*(create(k) for k in group), return_exceptions=True)
                failed = next((r for r in results if isinstance(r, BaseException)), None)
                if failed is not None:
                    raise failed
        except Exception as e:  # noqa: BLE001 - any failure becomes the session's ERROR status
            detail = getattr(e, "detail", None) or str(e) or type(e).__name__
            data = getattr(e, "data", None)
            why = data.get("reason") if isinstance(data, dict) else None
            reason = why if isinstance(why, str) and why else "creation-failed"
            log.warning("kernel creation failed for session %s: %s", session_id, detail)
            await self.teardown(session_id, [k for k in kernels if k.id in created], kernels)
            await self.fail_start(session_id, reason, detail)
            return None
        return created

    async def _record_running(
        self, session: SessionRow, kernels: list[KernelRow], created: dict[uuid.UUID, dict[str, Any]], t0: float
    ) -> None:
        """Record created kernels (RUNNING, in a transaction shared with other starts); a session destroyed
        while its kernels were being created has them torn down instead."""
        phases = dict(created.get(kernels[0].id, {}).get("phases") or {})
        phases["total"] = round(time.monotonic() - t0, 4)
        try:
            row, started = await self._running.submit((session, created, phases))
        except Exception as e:  # noqa: BLE001 - the kernels run but cannot be recorded: do not leak them
            log.error("session %s: could not record its start: %s", session.id, e)
            await self.teardown(session.id, kernels, kernels)
            await self.fail_start(session.id, "creation-failed", f"The start could not be recorded: {e}")
            return
        if started:
            self._publish("session_started", row)
        else:
            # Destroyed while it was being created: the destroyer could not reach the containers.
            self._spawn(self.teardown(session.id, kernels, kernels))

    async def _running_batch(
        self, items: list[tuple[SessionRow, dict[uuid.UUID, dict[str, Any]], dict[str, Any]]]
    ) -> list[tuple[SessionRow, bool]]:
        """One transaction for many created sessions: each kernel's container id, service ports and host, and the
        session RUNNING with its creation phases, unless it was destroyed meanwhile (then ``False``)."""
        ids = [row.id for row, _, _ in items]

        async def txn() -> list[tuple[SessionRow, bool]]:
            async with self.store.db() as db:
                sessions, kernels = await sessions_with_kernels(db, ids)
                now = utcnow()
                out: list[tuple[SessionRow, bool]] = []
                session_updates: list[dict[str, Any]] = []
                kernel_updates: list[dict[str, Any]] = []
                for row, created, phases in items:
                    sid = row.id
                    session = sessions.get(sid)
                    if session is None:  # purged meanwhile: nothing to record, its kernels to remove
                        out.append((row, False))
                        continue
                    # Ended meanwhile: destroyed, or failed by the recovery of a manager that took this one for
                    # dead (ADR 0014).
                    destroyed = session.status == S.TERMINATING or session.status in TERMINAL
                    for k in kernels.get(sid, []):
                        info = created.get(k.id) or {}
                        kernel_updates.append(
                            {
                                "b_id": k.id,
                                "container_id": info.get("container_id"),
                                "service_ports": info.get("service_ports", []),
                                "kernel_host": advertised_host(info, k.agent_addr),
                                "status": k.status if destroyed else S.RUNNING,
                            }
                        )
                    if not destroyed:
                        record_change(
                            session, status_change(session, S.RUNNING, now, "", {"phases": phases}), session_updates
                        )
                    out.append((session, not destroyed))
                await update_rows(db, KernelRow, kernel_updates)
                await update_rows(db, SessionRow, session_updates)
                await db.commit()
            return out

        return await retry_locked(txn)

    def kernel_spec(
        self,
        session: SessionRow,
        kernel: KernelRow,
        ssh: tuple[str, str] | None,
        *,
        mounts: list[FolderMount],
        user_config: dict[str, Any],
    ) -> KernelSpec:
        """The creation request of one kernel for its agent: the session's settings, its folder ``mounts`` and
        the owner's dotfiles, bootstrap script and SSH keypair (``user_config``). Only ``main1`` runs a batch
        session's task and gets the owner's SSH keypair."""
        size = session.cluster_size or 1
        main = kernel.cluster_role == "main"
        me = KernelSlot(
            kernel.cluster_role,
            kernel.cluster_idx,
            kernel.cluster_hostname,
            local_rank(kernel.cluster_role, kernel.cluster_idx),
        )
        return KernelSpec(
            kernel_id=str(kernel.id),
            session_id=str(session.id),
            session_name=session.name,
            image=kernel.image,
            slots=kernel.occupied_slots or {},
            environ=session.environ or {},
            session_type=session.session_type if main else "interactive",
            startup_command=session.startup_command if main else None,
            bootstrap_script=user_config.get("bootstrap_script"),
            dotfiles=user_config.get("dotfiles") or [],
            mounts=mounts,
            access_key=session.access_key,
            batch_timeout=session.batch_timeout,
            registry_auth=self._registry_auth(session.image),
            ssh_keypair=user_config.get("ssh_keypair") if main else None,
            preopen_ports=list(session.preopen_ports or []) if main else [],
            **cluster_spec(session.id, session.cluster_mode, size, me, ssh),
        )

    async def fail_start(self, session_id: uuid.UUID, reason: str, detail: str) -> None:
        """Record that a session could not start: ERROR, its kernels' slots given back."""

        async def record() -> SessionRow | None:
            async with self.store.db() as db:
                session = await db.get(SessionRow, session_id)
                assert session is not None
                if session.status in TERMINAL:
                    return None  # destroyed while it was being created: its end is already recorded
                for kernel in await self.store.session_kernels(db, session):
                    await release_slots(db, kernel)
                    kernel.status = S.ERROR
                    kernel.status_info = reason
                set_status(session, S.ERROR, reason, error=detail)
                await db.commit()
            return session

        session = await retry_locked(record)
        if session is None:
            return
        self._publish("session_failure", session, reason, error=detail)
        self._wake.set()

    async def teardown(self, session_id: uuid.UUID, doomed: list[KernelRow], kernels: list[KernelRow]) -> None:
        """Destroy the ``doomed`` kernels on their agents (errors logged), then, for a cluster session (all its
        ``kernels``, main1 first), its network on main1's agent."""
        await asyncio.gather(*(self.destroy_kernel_quietly(k) for k in doomed))
        network_agent = kernels[0].agent_addr if len(kernels) > 1 else None
        if network_agent:
            try:
                await self._rpc.call(network_agent, "DELETE", NETWORK_PATH.format(name=network_name(session_id)))
            except Exception as e:  # noqa: BLE001 - the agent may be gone; it removes leftovers at start
                log.warning("could not remove the network of session %s: %s", session_id, e)

    async def mark_pulling(self, kernel_id: uuid.UUID) -> None:
        """The agent is pulling the image of a kernel being created: the session says PULLING meanwhile."""
        async with self.store.db() as db:
            kernel = await db.get(KernelRow, kernel_id)
            if kernel is None:
                return
            session = await db.get(SessionRow, kernel.session_id)
            if session is None or session.status != S.PREPARING:
                return
            kernel.status = S.PULLING
            set_status(session, S.PULLING)
            await db.commit()
        self._publish("session_pulling", session)

    async def _mount_specs(self, session: SessionRow) -> list[FolderMount]:
        """Bind mounts of the session's folders for the agent: host paths from their storage proxies."""
        out = []
        for m in session.vfolder_mounts or []:
            if self._folder_path is None:
                raise ServiceUnavailable("No storage proxy is configured; folders cannot be mounted.")
            host_path = await self._folder_path(m["host"], m["vfid"])
            mode: Literal["ro", "rw"] = "ro" if m["permission"] == "ro" else "rw"
            out.append(FolderMount(host_path=host_path, container_path=m["mount_path"], mode=mode))
        return out

    def _registry_auth(self, image: str) -> RegistryAuth | None:
        """Pull credentials for an image of a configured registry that has them (sent to the agent only)."""
        host, sep, _ = image.partition("/")
        cfg = self._docker_registries.get(host) if sep else None
        if cfg is None or not getattr(cfg, "username", ""):
            return None
        return RegistryAuth(username=cfg.username, password=cfg.password, serveraddress=host)

    async def destroy_kernel_quietly(self, kernel: KernelRow) -> dict[str, Any]:
        """Destroy a kernel on its agent; its last stats, or ``{}`` when the agent did not answer (logged: the
        container may already be gone)."""
        if not kernel.agent_addr:
            return {}
        try:
            res = await self._rpc.call(kernel.agent_addr, "DELETE", KERNEL_PATH.format(kid=kernel.id))
        except AgentError as e:
            if e.status != 404:  # a 404: gone already (ended by itself, or removed by reconciliation)
                log.warning("could not destroy kernel %s: %s", kernel.id, e)
            return {}
        except Exception as e:  # noqa: BLE001
            log.warning("could not destroy kernel %s: %s", kernel.id, e)
            return {}
        return dict((res or {}).get("stats") or {})
