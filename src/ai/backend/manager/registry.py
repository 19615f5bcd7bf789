"""The session services composed: one :class:`SessionRegistry` per manager, through which the API, the
scheduler and the background loops reach the session store, admission, the launcher, the lifecycle and
the kernel proxy (``manager/sessions/``). It holds no logic of its own.

Where a session is admitted: :mod:`.sessions.admission`; scheduled: :mod:`.scheduler`; started:
:mod:`.sessions.launcher`; ended: :mod:`.sessions.lifecycle`; its statuses: :mod:`.sessions.status`.
"""

from __future__ import annotations

import asyncio
from collections.abc import Mapping
from typing import Any

from sqlalchemy.ext.asyncio import AsyncSession, async_sessionmaker

from .agent_client import AgentRPC
from .background import BackgroundTasks
from .events import EventBus
from .generations import GenerationReader
from .sessions.admission import Admission, new_session_name
from .sessions.kernel_proxy import KernelProxy, SessionNotRunning, session_age_ms
from .sessions.launcher import FolderPath, Launcher
from .sessions.lifecycle import CONTAINER_LOST, CREATION_INTERRUPTED, MANAGER_RESTARTED, Lifecycle
from .sessions.limits import ActivityStore, ActivityTracker
from .sessions.store import SessionStore

__all__ = [
    "CONTAINER_LOST",
    "CREATION_INTERRUPTED",
    "MANAGER_RESTARTED",
    "SessionNotRunning",
    "SessionRegistry",
    "new_session_name",
    "session_age_ms",
]


class SessionRegistry:
    """The session services of one manager, built together; the methods are theirs, named here once."""

    def __init__(
        self,
        db: async_sessionmaker[AsyncSession],
        rpc: AgentRPC,
        bus: EventBus,
        *,
        generations: GenerationReader | None = None,
        docker_registries: Mapping[str, Any] | None = None,
        folder_path: FolderPath | None = None,
        manager_id: str | None = None,
        activity_store: ActivityStore | None = None,
    ) -> None:
        self.db = db
        # This manager process (ADR 0014): recorded on the sessions whose start or end it carries out.
        self.manager_id = manager_id
        self.rpc = rpc
        self.bus = bus
        # Set when sessions wait for the scheduler (new ones, freed slots, agents joining).
        self.schedule_event = asyncio.Event()
        self.activity = ActivityTracker(activity_store)
        self._background = BackgroundTasks()
        self.spawn = self._background.spawn
        self.store = SessionStore(db, generations)
        self.admission = Admission(self.store, bus, self.schedule_event)
        self.launcher = Launcher(
            self.store,
            rpc,
            bus,
            self.schedule_event,
            self.spawn,
            folder_path=folder_path,
            docker_registries=docker_registries,
            manager_id=manager_id,
        )
        self.lifecycle = Lifecycle(
            self.store,
            self.launcher,
            rpc,
            bus,
            self.schedule_event,
            self.spawn,
            self.activity,
            manager_id=manager_id,
        )
        self.kernels = KernelProxy(self.store, rpc, self.activity)
        # Lookups (store).
        self.resolve_owner = self.store.resolve_owner
        self.find_session = self.store.find_session
        self.find_session_and_kernel = self.store.find_session_and_kernel
        self.find_session_and_kernel_cached = self.store.find_session_and_kernel_cached
        self.main_kernel = self.store.main_kernel
        self.session_kernels = self.store.session_kernels
        self.rename = self.store.rename
        # Creation (admission) and waiting for a start (launcher).
        self.create_session = self.admission.create_session
        self.agents_changed = self.admission.agents_changed
        self.wait_for_start = self.launcher.wait_for_start
        self.mark_pulling = self.launcher.mark_pulling
        # The rest of the lifecycle.
        self.start_session = self.lifecycle.start
        self.destroy = self.lifecycle.destroy
        self.mark_terminated = self.lifecycle.mark_terminated
        self.restart = self.lifecycle.restart
        self.recover_after_restart = self.lifecycle.recover_after_restart
        self.recover_orphans = self.lifecycle.recover_orphans
        self.reconcile_agents = self.lifecycle.reconcile_agents
        # Calls into kernels (kernel proxy).
        self.kernel_call = self.kernels.kernel_call
        self.kernel_call_raw = self.kernels.kernel_call_raw
        self.count_query = self.kernels.count_query
        self.flush_query_counts = self.kernels.flush_query_counts
        self.unflushed_queries = self.kernels.unflushed_queries
