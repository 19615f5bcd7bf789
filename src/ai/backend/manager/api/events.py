"""SSE event streams: ``GET /events/session`` (also ``/stream/session/_/events``) and
``GET /events/background-task``.

Both streams are ``text/event-stream`` with ``event: <name>`` and ``data: <json>`` per event and a
``: keep-alive`` comment line whenever nothing was sent for ``keepalive`` seconds (default 15, a query
parameter of this server). A stream the server ends on purpose (a watched session ended, a task
finished) ends with an ``event: server_close`` (``data: {}``) so that clients with automatic reconnection
(the 22.03 SDK) do not reconnect. Parameters come from the query string or a JSON body; errors in them,
an unknown session or task and refusals are answered as problems before the stream starts.

Background-task events are sent under two names, the 22.03 one first (``bgtask_updated``,
``bgtask_done``, ``bgtask_failed``, ``bgtask_cancelled``: what the 22.03 SDK and CLI listen for) and then
the seed's (``task_updated``, ``task_done``, ``task_failed``, ``task_cancelled``), with the same data;
a client acts on the names it knows and ignores the others.
"""

from __future__ import annotations

import asyncio
import json
import logging
import time
import uuid
from collections import OrderedDict
from collections.abc import AsyncIterator, Awaitable, Callable
from contextlib import AsyncExitStack
from dataclasses import dataclass, field
from typing import Any

from fastapi import APIRouter, Depends, Request
from fastapi.responses import StreamingResponse
from sqlalchemy import select
from starlette.types import Receive, Scope, Send

from ai.backend.common.problems import Forbidden, InvalidAPIParameters, NotFound, SessionNotFound

from ..auth import AuthContext
from ..bgtask import FINAL_EVENTS, UPDATED_EVENT, BackgroundTaskRegistry, TaskInfo
from ..events import Event
from ..models import ProjectRow, SessionRow
from ..models.sessions import select_with_main_kernel
from ..registry import SessionRegistry
from ..sessions.status import TERMINAL
from .deps import auth_required, json_body, manager_context, registry

log = logging.getLogger(__name__)
router = APIRouter()

DEFAULT_KEEPALIVE = 15.0
KEEPALIVE_RANGE = (1.0, 300.0)
SCOPES = ("*", "session", "kernel")
SERVER_CLOSE = b"event: server_close\ndata: {}\n\n"
KEEPALIVE_LINE = b": keep-alive\n\n"
FACTS_CACHE_SIZE = 512
# The kernel-level twin of each session event (sessions have one main kernel).
KERNEL_EVENTS = {
    "session_preparing": "kernel_preparing",
    "session_pulling": "kernel_pulling",
    "session_creating": "kernel_creating",
    "session_started": "kernel_started",
    "session_terminating": "kernel_terminating",
    "session_terminated": "kernel_terminated",
    "session_cancelled": "kernel_cancelled",
}
# The event that reports each dead status, for a watched session that is already over.
TERMINAL_EVENT_OF_STATUS = {
    "TERMINATED": "session_terminated",
    "CANCELLED": "session_cancelled",
    "ERROR": "session_failure",
}
LEGACY_TASK_EVENTS = {
    "bgtask_updated": "task_updated",
    "bgtask_done": "task_done",
    "bgtask_failed": "task_failed",
    "bgtask_cancelled": "task_cancelled",
}


def sse_message(event: str, data: Any) -> bytes:
    """One SSE message: ``event: NAME`` and ``data: JSON``, terminated by an empty line."""
    payload = json.dumps(data, default=str, ensure_ascii=False)
    return f"event: {event}\ndata: {payload}\n\n".encode()


class EventStreamResponse(StreamingResponse):
    """A ``text/event-stream`` response that stops when the client disconnects and then runs ``on_close``
    (which releases the event-bus subscription) however the stream ended."""

    def __init__(self, content: AsyncIterator[bytes], on_close: Callable[[], Awaitable[Any]]) -> None:
        super().__init__(
            content, media_type="text/event-stream", headers={"Cache-Control": "no-cache", "X-Accel-Buffering": "no"}
        )
        self._on_close = on_close

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        stream = self.body_iterator
        done = asyncio.Event()

        async def _stream() -> None:
            try:
                await self.stream_response(send)
            finally:
                done.set()

        async def _disconnect() -> None:
            while True:
                message = await receive()
                if message["type"] == "http.disconnect":
                    return

        try:
            sender = asyncio.create_task(_stream())
            watcher = asyncio.create_task(_disconnect())
            try:
                await asyncio.wait({sender, watcher}, return_when=asyncio.FIRST_COMPLETED)
            finally:
                for t in (sender, watcher):
                    t.cancel()
                await asyncio.gather(sender, watcher, return_exceptions=True)
            if sender.done() and not sender.cancelled() and (exc := sender.exception()) is not None:
                if not isinstance(exc, OSError):
                    raise exc
        finally:
            aclose = getattr(stream, "aclose", None)
            if aclose is not None:
                await aclose()
            await self._on_close()


def _keepalive(params: dict[str, Any]) -> float:
    raw = params.get("keepalive")
    if raw is None:
        return DEFAULT_KEEPALIVE
    try:
        value = float(raw)
    except (TypeError, ValueError):
        raise InvalidAPIParameters(f"'keepalive' must be a number of seconds, got {raw!r}.") from None
    lo, hi = KEEPALIVE_RANGE
    if not lo <= value <= hi:
        raise InvalidAPIParameters(f"'keepalive' must be between {lo:g} and {hi:g} seconds, got {raw!r}.")
    return value


def _str_param(params: dict[str, Any], *names: str) -> str | None:
    for name in names:
        value = params.get(name)
        if value is None or value == "":
            continue
        if not isinstance(value, str):
            raise InvalidAPIParameters(f"'{name}' must be a string.")
        return value
    return None


def _as_uuid(value: str) -> uuid.UUID | None:
    try:
        return uuid.UUID(value)
    except ValueError:
        return None


# ---- session events ----------------------------------------------------------------------------


@dataclass
class SessionFacts:
    """What a session stream needs to know about an event's session."""

    id: uuid.UUID
    name: str
    access_key: str
    user_uuid: uuid.UUID
    domain_name: str
    group_id: uuid.UUID
    status: str
    status_info: str | None
    status_data: dict[str, Any]
    result: str
    kernel_id: uuid.UUID | None = None
    cluster_role: str = "main"
    cluster_idx: int = 1
    exit_code: int | None = None


async def _load_facts(reg: SessionRegistry, session_id: uuid.UUID) -> SessionFacts | None:
    async with reg.db() as db:
        row = (await db.execute(select_with_main_kernel().where(SessionRow.id == session_id))).first()
    if row is None:
        return None
    s, k = row
    return SessionFacts(
        id=s.id,
        name=s.name,
        access_key=s.access_key,
        user_uuid=s.user_uuid,
        domain_name=s.domain_name,
        group_id=s.group_id,
        status=s.status,
        status_info=s.status_info,
        status_data=dict(s.status_data or {}),
        result=s.result or "UNDEFINED",
        kernel_id=k.id if k else None,
        cluster_role=k.cluster_role if k else "main",
        cluster_idx=k.cluster_idx if k else 1,
        exit_code=k.exit_code if k else None,
    )


def visible_to(ctx: AuthContext, f: SessionFacts) -> bool:
    """Users see their own sessions, domain admins their domain's, superadmins all."""
    if ctx.is_superadmin:
        return True
    if ctx.is_admin:
        return f.domain_name == ctx.domain_name
    return f.user_uuid == ctx.user_uuid


@dataclass
class SessionWatch:
    """The filter of one session stream."""

    ctx: AuthContext
    scope: str
    keepalive: float
    session_id: uuid.UUID | None = None  # one session, else all visible ones
    owner: str | None = None  # only this owner's sessions
    group_ids: set[uuid.UUID] | None = None  # only these groups' sessions
    _cache: OrderedDict[str, SessionFacts | None] = field(default_factory=OrderedDict)

    def matches(self, f: SessionFacts) -> bool:
        if self.session_id is not None and f.id != self.session_id:
            return False
        if self.owner is not None and f.access_key != self.owner:
            return False
        if self.group_ids is not None and f.group_id not in self.group_ids:
            return False
        return visible_to(self.ctx, f)

    async def facts(self, reg: SessionRegistry, subject: str, *, refresh: bool = False) -> SessionFacts | None:
        """The facts of a session, cached per stream (re-read for events that end a session)."""
        if not refresh and subject in self._cache:
            self._cache.move_to_end(subject)
            return self._cache[subject]
        sid = _as_uuid(subject)
        f = await _load_facts(reg, sid) if sid is not None else None
        self._cache[subject] = f
        if len(self._cache) > FACTS_CACHE_SIZE:
            self._cache.popitem(last=False)
        return f


def render_session_event(ev: Event, f: SessionFacts, scope: str) -> list[bytes]:
    """The SSE messages for one session event: its kernel twin (scope ``*``/``kernel``), then itself
    (scope ``*``/``session``)."""
    data: dict[str, Any] = {k: v for k, v in ev.data.items() if k not in ("sessionId", "sessionName", "ownerAccessKey")}
    data.update(
        sessionId=str(f.id), sessionName=f.name, ownerAccessKey=f.access_key, reason=ev.data.get("reason") or ""
    )
    ending = ev.name in ("session_terminated", "session_cancelled", "session_failure")
    data["exitCode"] = f.exit_code if ending else None
    if ev.name == "session_terminated":
        data["result"] = ev.data.get("result") or f.result or "UNDEFINED"
    out: list[bytes] = []
    twin = KERNEL_EVENTS.get(ev.name)
    if twin is not None and scope in ("*", "kernel") and f.kernel_id is not None:
        kdata = {k: v for k, v in data.items() if k != "result"}
        kdata.update(kernelId=str(f.kernel_id), clusterRole=f.cluster_role, clusterIdx=f.cluster_idx)
        out.append(sse_message(twin, kdata))
    if scope in ("*", "session"):
        out.append(sse_message(ev.name, data))
    return out


def ends_session(ev: Event, f: SessionFacts) -> bool:
    """Whether nothing more will be published for the session after ``ev``."""
    if ev.name in ("session_terminated", "session_cancelled"):
        return True
    # A creation failure leaves the session in ERROR; a failed batch run ends with session_terminated.
    return ev.name == "session_failure" and f.status in TERMINAL


def terminal_event(f: SessionFacts) -> Event:
    """A stand-in for the event that ended a session that is already over."""
    name = TERMINAL_EVENT_OF_STATUS.get(f.status, "session_terminated")
    data: dict[str, Any] = {"reason": f.status_info or ""}
    if name == "session_terminated":
        data["result"] = f.result
    if name == "session_failure" and f.status_data.get("error"):
        data["error"] = f.status_data["error"]
    return Event(name, str(f.id), data)


async def _group_ids(reg: SessionRegistry, ctx: AuthContext, group: str) -> set[uuid.UUID]:
    gid = _as_uuid(group)
    cond = ProjectRow.id == gid if gid is not None else ProjectRow.name == group
    q = select(ProjectRow.id).where(cond)
    if not ctx.is_superadmin:
        q = q.where(ProjectRow.domain_name == ctx.domain_name)
    async with reg.db() as db:
        ids = set((await db.execute(q)).scalars().all())
    if not ids:
        raise NotFound(f"No such group (project): {group!r}.")
    return ids


async def _resolve_session(
    reg: SessionRegistry, ctx: AuthContext, ref: str, owner_param: str | None, owner: str
) -> SessionFacts:
    sid = _as_uuid(ref)
    facts: SessionFacts | None = None
    if sid is not None and owner_param is None:
        facts = await _load_facts(reg, sid)
        if facts is not None and not visible_to(ctx, facts):
            facts = None
    if facts is None:
        async with reg.db() as db:
            row = await reg.find_session(db, ref, owner)  # 404 when the owner has no such session
        facts = await _load_facts(reg, row.id)
        if facts is None:
            raise SessionNotFound(f"Session {ref!r} does not exist or is not yours.")
    return facts


async def _session_stream(
    reg: SessionRegistry, q: asyncio.Queue[Event], watch: SessionWatch, single: SessionFacts | None
) -> AsyncIterator[bytes]:
    if single is not None and single.status in TERMINAL:
        for chunk in render_session_event(terminal_event(single), single, watch.scope):
            yield chunk
        yield SERVER_CLOSE
        return
    next_ping = time.monotonic() + watch.keepalive
    while True:
        try:
            ev = await asyncio.wait_for(q.get(), max(next_ping - time.monotonic(), 0.0))
        except TimeoutError:
            yield KEEPALIVE_LINE
            next_ping = time.monotonic() + watch.keepalive
            if single is not None:
                # Safety net: the session may have ended while its event was lost (a full queue).
                f = await watch.facts(reg, str(single.id), refresh=True)
                if f is None or f.status in TERMINAL:
                    if f is not None:
                        for chunk in render_session_event(terminal_event(f), f, watch.scope):
                            yield chunk
                    yield SERVER_CLOSE
                    return
            continue
        if not ev.name.startswith("session_"):
            continue
        if watch.session_id is not None and ev.session_id != str(watch.session_id):
            continue
        refresh = ev.name in ("session_terminated", "session_cancelled", "session_failure")
        f = await watch.facts(reg, ev.session_id, refresh=refresh)
        if f is None or not watch.matches(f):
            continue
        chunks = render_session_event(ev, f, watch.scope)
        for chunk in chunks:
            yield chunk
        if chunks:
            next_ping = time.monotonic() + watch.keepalive
        if single is not None and ends_session(ev, f):
            yield SERVER_CLOSE
            return


@router.get("/events/session")
@router.get("/stream/session/_/events")
async def session_events(
    request: Request,
    ctx: AuthContext = Depends(auth_required),
    reg: SessionRegistry = Depends(registry),
) -> EventStreamResponse:
    """Stream the lifecycle events of one session or of all sessions visible to the caller."""
    params = await json_body(request)
    ref = _str_param(params, "sessionId", "name", "sessionName") or "*"
    owner_param = _str_param(params, "ownerAccessKey", "owner_access_key")
    group = _str_param(params, "group", "groupName") or "*"
    scope = _str_param(params, "scope") or "*"
    if scope == "session,kernel":
        scope = "*"
    if scope not in SCOPES:
        raise InvalidAPIParameters(f"'scope' must be one of *, session, kernel; got {scope!r}.")
    keepalive = _keepalive(params)
    owner = await reg.resolve_owner(ctx, owner_param)  # 403 for users naming another owner
    watch = SessionWatch(ctx=ctx, scope=scope, keepalive=keepalive, owner=owner if owner_param is not None else None)
    if group != "*":
        watch.group_ids = await _group_ids(reg, ctx, group)
    stack = AsyncExitStack()
    q = await stack.enter_async_context(manager_context(request).bus.subscribe())
    try:
        single: SessionFacts | None = None
        if ref != "*":
            single = await _resolve_session(reg, ctx, ref, owner_param, owner)
            watch.session_id = single.id
    except BaseException:
        await stack.aclose()
        raise
    log.debug("session events for %s (session %s, owner %s, scope %s)", ctx.access_key, ref, owner_param, scope)
    return EventStreamResponse(_session_stream(reg, q, watch, single), stack.aclose)


# ---- background-task events --------------------------------------------------------------------


def _task_messages(event: str, data: dict[str, Any]) -> list[bytes]:
    out = [sse_message(event, data)]
    legacy = LEGACY_TASK_EVENTS.get(event)
    if legacy is not None:
        out.append(sse_message(legacy, data))
    return out


async def _task_stream(
    tasks: BackgroundTaskRegistry, q: asyncio.Queue[Event], info: TaskInfo, keepalive: float
) -> AsyncIterator[bytes]:
    if info.finished:
        for chunk in _task_messages(FINAL_EVENTS[info.status], info.event_data()):
            yield chunk
        yield SERVER_CLOSE
        return
    for chunk in _task_messages(UPDATED_EVENT, info.event_data()):
        yield chunk
    final_names = set(FINAL_EVENTS.values())
    next_ping = time.monotonic() + keepalive
    while True:
        try:
            ev = await asyncio.wait_for(q.get(), max(next_ping - time.monotonic(), 0.0))
        except TimeoutError:
            yield KEEPALIVE_LINE
            next_ping = time.monotonic() + keepalive
            latest = await tasks.get(info.task_id)
            if latest is None or latest.finished:  # its final event was lost, or the record expired
                if latest is not None:
                    for chunk in _task_messages(FINAL_EVENTS[latest.status], latest.event_data()):
                        yield chunk
                yield SERVER_CLOSE
                return
            continue
        if ev.session_id != info.task_id or not ev.name.startswith("bgtask_"):
            continue
        for chunk in _task_messages(ev.name, ev.data):
            yield chunk
        next_ping = time.monotonic() + keepalive
        if ev.name in final_names:
            yield SERVER_CLOSE
            return


@router.get("/events/background-task")
async def background_task_events(request: Request, ctx: AuthContext = Depends(auth_required)) -> EventStreamResponse:
    """Stream the progress of a background task started by the caller (superadmins: any task)."""
    params = await json_body(request)
    raw = _str_param(params, "taskId", "task_id")
    if raw is None:
        raise InvalidAPIParameters("'taskId' is required: the UUID of a background task.")
    tid = _as_uuid(raw)
    if tid is None:
        raise InvalidAPIParameters(f"'taskId' must be a UUID, got {raw!r}.")
    keepalive = _keepalive(params)
    tasks: BackgroundTaskRegistry = manager_context(request).bgtasks
    stack = AsyncExitStack()
    q = await stack.enter_async_context(manager_context(request).bus.subscribe())
    try:
        info = await tasks.get(str(tid))
        if info is None:
            raise NotFound(
                f"No background task {tid}: it does not exist or its result expired (results are kept for 24 hours)."
            )
        if info.owner_user != str(ctx.user_uuid) and not ctx.is_superadmin:
            raise Forbidden("Only the user who started a background task (or a superadmin) may watch it.")
    except BaseException:
        await stack.aclose()
        raise
    return EventStreamResponse(_task_stream(tasks, q, info, keepalive), stack.aclose)
