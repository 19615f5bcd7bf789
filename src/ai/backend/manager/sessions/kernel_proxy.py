"""Forwarding calls to a session's kernels on their agents (execute, files, completion...), with the
activity and execute counters that go with them."""

from __future__ import annotations

import uuid
from datetime import UTC, datetime
from typing import Any

from sqlalchemy import update

from ai.backend.common.contracts.agent import KERNEL_PATH
from ai.backend.common.problems import Conflict, SessionNotFound

from ..agent_client import AgentRPC, RawAnswer
from ..counters import PendingCounts
from ..models import KernelRow, SessionRow
from .limits import ActivityTracker
from .status import SessionStatus as S
from .store import SessionStore


class SessionNotRunning(Conflict):
    slug, title = "session-not-running", "The session is not running"


class KernelProxy:
    """Calls a session's main kernel on its agent; touches the session's activity on each call."""

    def __init__(self, store: SessionStore, rpc: AgentRPC, activity: ActivityTracker) -> None:
        self.store = store
        self._rpc = rpc
        self.activity = activity
        self._query_counts: PendingCounts[uuid.UUID] = PendingCounts()

    async def _main_kernel(self, session: SessionRow, *, check_status: bool, kernel: KernelRow | None) -> KernelRow:
        """The session's main kernel with its agent's address, after counting the call as activity; a 409
        when the session is not RUNNING (``check_status``), a 404 when the kernel has no agent."""
        self.activity.touch(session.id)
        if check_status and session.status != S.RUNNING:
            raise SessionNotRunning(
                f"Session {session.name!r} is {session.status}, not RUNNING; it cannot take this request."
            )
        if kernel is None:
            async with self.store.db() as db:
                kernel = await self.store.main_kernel(db, session)
        if not kernel.agent_addr:
            raise SessionNotFound(f"Session {session.name!r} has no running kernel.")
        return kernel

    async def kernel_call(
        self,
        session: SessionRow,
        method: str,
        op: str,
        json: Any = None,
        timeout: float | None = 600,
        *,
        check_status: bool = True,
        kernel: KernelRow | None = None,
    ) -> Any:
        """Forward a call to the session's main kernel on its agent (``kernel``: that kernel, if already loaded)."""
        kernel = await self._main_kernel(session, check_status=check_status, kernel=kernel)
        assert kernel.agent_addr is not None
        path = KERNEL_PATH.format(kid=kernel.id) + op
        return await self._rpc.call(kernel.agent_addr, method, path, json=json, timeout=timeout)

    async def kernel_call_raw(
        self,
        session: SessionRow,
        method: str,
        op: str,
        *,
        params: dict[str, str | int] | None = None,
        content: bytes | None = None,
        content_type: str | None = None,
        timeout: float | None = 600,
    ) -> RawAnswer:
        """Like :meth:`kernel_call`, for agent endpoints that take or answer raw bytes (session files)."""
        kernel = await self._main_kernel(session, check_status=True, kernel=None)
        assert kernel.agent_addr is not None
        return await self._rpc.call_raw(
            kernel.agent_addr,
            method,
            KERNEL_PATH.format(kid=kernel.id) + op,
            params=params,
            content=content,
            content_type=content_type,
            timeout=timeout,
        )

    def count_query(self, session: SessionRow) -> None:
        self._query_counts.count(session.id)

    async def flush_query_counts(self) -> None:
        """Write the execute counters kept in memory (one write per interval, not per execute)."""

        async def write(counts: dict[uuid.UUID, int]) -> None:
            async with self.store.db() as db:
                for sid, n in counts.items():
                    await db.execute(
                        update(SessionRow)
                        .where(SessionRow.id == sid)
                        .values(num_queries=SessionRow.num_queries + n)
                        .execution_options(generation_neutral=True)  # a counter: cached lookups need not reload
                    )
                await db.commit()

        await self._query_counts.flush(write)

    def unflushed_queries(self, session: SessionRow) -> int:
        """Executions counted in memory and not yet written (or being written) to the session row."""
        return self._query_counts.pending(session.id)


def session_age_ms(session: SessionRow) -> int:
    start = session.status_history.get(S.RUNNING) if session.status_history else None
    begin = datetime.fromisoformat(start) if start else session.created_at
    end = session.terminated_at or datetime.now(UTC)
    return max(int((end - begin).total_seconds() * 1000), 0)
