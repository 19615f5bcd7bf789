"""The session lifecycle after admission: starting placed sessions, destroying, recording ends, restarting,
and what a manager finds after a restart or learns from its agents' reconciliation reports."""

from __future__ import annotations

import asyncio
import logging
import uuid
from datetime import timedelta
from typing import Any

from sqlalchemy import select, update

from ai.backend.common.contracts.agent import RESTART_PATH

from ..agent_client import AgentRPC
from ..background import Spawn
from ..events import EventBus
from ..models import KernelRow, SessionRow
from ..models.base import utcnow
from .events import publish_session_event
from .kernel_proxy import SessionNotRunning
from .launcher import Launcher
from .limits import ActivityTracker
from .status import ACTIVE, HAS_CONTAINER, KERNEL_GOING, QUEUED, STARTING, TERMINAL, check_transition
from .status import SessionStatus as S
from .store import SessionStore, release_slots, set_status

log = logging.getLogger("ai.backend.manager.sessions")

# Reasons of the ends that crash recovery and reconciliation record.
CREATION_INTERRUPTED = "creation-interrupted"
MANAGER_RESTARTED = "manager-restarted"
CONTAINER_LOST = "container-lost"
# The statuses only the manager that entered them moves on (``SessionRow.manager_id``): recovered when it is gone.
TRANSITIONAL = (S.SCHEDULED, S.PREPARING, S.PULLING, S.TERMINATING, S.RESTARTING)


class Lifecycle:
    """Moves sessions through their statuses after admission (see :mod:`.status` for the table)."""

    def __init__(
        self,
        store: SessionStore,
        launcher: Launcher,
        rpc: AgentRPC,
        bus: EventBus,
        wake: asyncio.Event,
        spawn: Spawn,
        activity: ActivityTracker,
        *,
        manager_id: str | None = None,
    ) -> None:
        self.store = store
        self.manager_id = manager_id
        self._launcher = launcher
        self._rpc = rpc
        self._bus = bus
        self._wake = wake
        self._spawn = spawn
        self._activity = activity

    def _publish(self, name: str, session: SessionRow, reason: str | None = None, **extra: Any) -> None:
        publish_session_event(self._bus, name, session, reason, **extra)

    async def start(self, session_id: uuid.UUID) -> None:
        """Start a placed session (see :meth:`.launcher.Launcher.start`), then record an end its kernel
        reported meanwhile (e.g. a quick batch task)."""
        early = await self._launcher.start(session_id)
        if early is not None:
            await self.mark_terminated(session_id, **early)

    async def destroy(self, session: SessionRow, reason: str = "user-requested") -> dict[str, Any]:
        """Destroy a session: cancel it if still pending, else kill its kernels and free resources."""
        stats: dict[str, Any] = {}
        async with self.store.db() as db:
            session = await db.get(SessionRow, session.id, with_for_update=True)  # type: ignore[assignment]
            assert session is not None
            kernels = await self.store.session_kernels(db, session)
            if session.status in QUEUED:
                for kernel in kernels:
                    await release_slots(db, kernel)
                    kernel.status = S.CANCELLED
                set_status(session, S.CANCELLED, reason)
                await db.commit()
                self._publish("session_cancelled", session, reason)
                self._wake.set()
                return stats
            if session.status == S.ERROR:
                # A failed session holds no slots any more; destroying it closes its record, and removes any
                # container its agent still has (e.g. one the agent took back after a crash).
                set_status(session, S.TERMINATED, session.status_info or reason)
                await db.commit()
                await asyncio.gather(*(self._launcher.destroy_kernel_quietly(k) for k in kernels))
                return stats
            if session.status not in ACTIVE:
                return stats
            was_preparing = session.status in STARTING
            set_status(session, S.TERMINATING, reason)
            session.manager_id = self.manager_id
            for kernel in kernels:
                kernel.status = S.TERMINATING
            await db.commit()
        self._publish("session_terminating", session, reason)
        # Also while it is being created: the agent removes a kernel whose creation is under way as soon as
        # it has a container (or when its creation ends), so no container outlives the destroyed session.
        results = await asyncio.gather(*(self._launcher.destroy_kernel_quietly(k) for k in kernels))
        if not was_preparing:  # main1's last stats are the session's
            stats = results[0]
        await self.mark_terminated(session.id, reason, stats=stats)
        return stats

    async def mark_terminated(
        self,
        session_id: uuid.UUID,
        reason: str,
        *,
        stats: dict[str, Any] | None = None,
        exit_code: int | None = None,
        task_log: str | None = None,
        kernel_id: uuid.UUID | None = None,
    ) -> None:
        """Record the end of a session and free its resources (idempotent). ``kernel_id``: the kernel whose
        end was reported (default ``main1``); the other kernels of a cluster session still up are destroyed."""
        async with self.store.db() as db:
            session = await db.get(SessionRow, session_id)
            if session is None or session.status in TERMINAL:
                return
            if session.status in STARTING and self._launcher.defer_end(
                session_id,
                {
                    "reason": reason,
                    "stats": stats,
                    "exit_code": exit_code,
                    "task_log": task_log,
                    "kernel_id": kernel_id,
                },
            ):
                return
            kernels = await self.store.session_kernels(db, session)
            ended = next((k for k in kernels if k.id == kernel_id), kernels[0])
            still_up = [k for k in kernels if k is not ended and k.status not in KERNEL_GOING]
            now = utcnow()
            for kernel in kernels:
                await release_slots(db, kernel)
                kernel.status = S.TERMINATED
                kernel.status_info = reason
                kernel.terminated_at = now
            ended.exit_code = exit_code
            if stats:
                ended.last_stat = stats
            if task_log:
                ended.task_log = task_log
            if session.session_type == "batch" and (exit_code is not None or reason.startswith("task-")):
                session.result = "SUCCESS" if exit_code == 0 and reason != "task-timeout" else "FAILURE"
            set_status(session, S.TERMINATED, reason, exit_code=exit_code)
            await db.commit()
        if len(kernels) > 1:
            self._spawn(self._launcher.teardown(session_id, still_up, kernels))
        self._publish("session_terminated", session, reason, result=session.result)
        self._wake.set()

    # ---- crash recovery and reconciliation -------------------------------------------------------

    async def recover_after_restart(self) -> dict[str, int]:
        """Finish what a previous manager process left half done (run at start, before serving), when this
        manager is the only one of its database: every session in progress is an orphan."""
        return await self.recover_orphans(None)

    async def recover_orphans(self, alive: set[str] | None) -> dict[str, int]:
        """Finish what managers that are gone left half done: the sessions in a transitional status whose
        owner (``manager_id``) is not in ``alive`` (``None``: every owner is gone, as after the restart of the
        only manager), or unknown.

        The starts and destroys in progress died with their manager, and only it would ever have moved their
        sessions on: SCHEDULED sessions (no agent was called yet) are started again; PREPARING and PULLING
        ones end in ERROR (``creation-interrupted``) and TERMINATING ones are recorded TERMINATED, their slots
        given back and their kernels destroyed (what an agent does not hear now it removes at its next
        reconciliation); RESTARTING ones are RUNNING again. Each session is first claimed (its owner set to
        this manager where it is still the one read), so two managers recovering at once never both act on
        it. Returns how many sessions of each status were handled."""
        async with self.store.db() as db:
            found = (
                await db.execute(
                    select(SessionRow.id, SessionRow.status, SessionRow.status_info, SessionRow.manager_id).where(
                        SessionRow.status.in_(TRANSITIONAL)
                    )
                )
            ).all()
            rows: list[tuple[uuid.UUID, str, str | None]] = []
            for sid, status, info, owner in found:
                if alive is not None and owner is not None and owner in alive:
                    continue
                claimed = await db.execute(
                    update(SessionRow)
                    .where(
                        SessionRow.id == sid,
                        SessionRow.status == status,
                        SessionRow.manager_id.is_not_distinct_from(owner),
                    )
                    .values(manager_id=self.manager_id)
                )
                if claimed.rowcount == 1:  # type: ignore[attr-defined]
                    rows.append((sid, status, info))
            restarting = [sid for sid, st, _ in rows if st == S.RESTARTING]
            if restarting:
                back = check_transition(S.RESTARTING, S.RUNNING)
                await db.execute(
                    update(SessionRow)
                    .where(SessionRow.id.in_(restarting), SessionRow.status == S.RESTARTING)
                    .values(status=back)
                )
            await db.commit()
        counts: dict[str, int] = {}
        for sid, status, info in rows:
            counts[status] = counts.get(status, 0) + 1
            if status == S.SCHEDULED:
                self._spawn(self.start(sid))
                continue
            if status == S.RESTARTING:
                continue
            async with self.store.db() as db:
                session = await db.get(SessionRow, sid)
                kernels = await self.store.session_kernels(db, session) if session is not None else []
            if status == S.TERMINATING:
                await self.mark_terminated(sid, info or MANAGER_RESTARTED)
            else:
                await self._launcher.fail_start(
                    sid,
                    CREATION_INTERRUPTED,
                    "The manager creating the session stopped (crashed or restarted) before it was created.",
                )
            if kernels:
                self._spawn(self._launcher.teardown(sid, kernels, kernels))
        if rows:
            log.warning("recovered the sessions that gone manager processes left in progress: %s", counts)
        return counts

    async def reconcile_agents(self, reports: list[tuple[str, list[str]]], grace: float) -> list[list[str]]:
        """The manager's side of agent reconciliation, for many heartbeats at once: ``reports`` are
        ``(agent id, ids of the kernels it runs)``; each gets the ids of its kernels that no live session
        owns on that agent (unknown, ended, or another agent's), whose containers the agent removes.

        The other way round, a kernel recorded RUNNING on an agent for over ``grace`` seconds that the
        agent does not report has lost its container (removed behind the agent's back, or gone while the
        agent was away): its session ends with reason ``container-lost`` and its slots are given back. The
        grace covers a heartbeat that left the agent before the kernel it just created was recorded."""
        wanted: dict[uuid.UUID, str] = {}
        for _, kernel_ids in reports:
            for raw in kernel_ids:
                try:
                    wanted[uuid.UUID(str(raw))] = str(raw)
                except ValueError:
                    pass
        agents = {agent_id for agent_id, _ in reports}
        alive: dict[str, str | None] = {}  # kernel id as reported -> its agent, for the live kernels
        lost: list[tuple[uuid.UUID, uuid.UUID, str]] = []
        cutoff = utcnow() - timedelta(seconds=grace)
        async with self.store.db() as db:
            ids = list(wanted)
            for i in range(0, len(ids), 500):
                alive.update(
                    (wanted[k], agent)
                    for k, agent in (
                        await db.execute(
                            select(KernelRow.id, KernelRow.agent)
                            .join(SessionRow, SessionRow.id == KernelRow.session_id)
                            .where(
                                KernelRow.id.in_(ids[i : i + 500]),
                                KernelRow.status.notin_(TERMINAL),
                                SessionRow.status.notin_(TERMINAL),
                            )
                        )
                    ).all()
                )
            for k, sid, agent in (
                await db.execute(
                    select(KernelRow.id, KernelRow.session_id, KernelRow.agent)
                    .join(SessionRow, SessionRow.id == KernelRow.session_id)
                    .where(
                        KernelRow.agent.in_(agents),
                        KernelRow.status == S.RUNNING,
                        SessionRow.status.in_(HAS_CONTAINER),
                        SessionRow.status_changed < cutoff,
                    )
                )
            ).all():
                if k not in wanted and agent is not None:
                    lost.append((k, sid, agent))
        for k, sid, agent in lost:
            log.warning("kernel %s of session %s is gone from agent %s: ending the session", k, sid, agent)
            self._spawn(self.mark_terminated(sid, CONTAINER_LOST, kernel_id=k))
        return [
            [str(raw) for raw in kernel_ids if alive.get(str(raw), "") != agent_id] for agent_id, kernel_ids in reports
        ]

    async def restart(self, session: SessionRow) -> None:
        """Restart the runners of the session's kernels (globals reset, files kept); RESTARTING meanwhile."""
        async with self.store.db() as db:
            row = await db.get(SessionRow, session.id, with_for_update=True)
            if row is None or row.status != S.RUNNING:
                status = row.status if row is not None else "gone"
                raise SessionNotRunning(f"Session {session.name!r} is {status}, not RUNNING; it cannot restart.")
            set_status(row, S.RESTARTING)
            row.manager_id = self.manager_id
            await db.commit()
        self._publish("session_restarting", row)
        try:
            async with self.store.db() as db:
                kernels = await self.store.session_kernels(db, row)
            self._activity.touch(row.id)
            await asyncio.gather(
                *(
                    self._rpc.call(k.agent_addr, "POST", RESTART_PATH.format(kid=k.id), timeout=600)
                    for k in kernels
                    if k.agent_addr
                )
            )
        finally:
            async with self.store.db() as db:
                row = await db.get(SessionRow, session.id)
                if row is not None and row.status == S.RESTARTING:
                    set_status(row, S.RUNNING)
                    await db.commit()
                    self._publish("session_started", row, "restarted")
