"""``/session`` endpoints: create, info, destroy, restart, execute, interrupt and complete."""

from __future__ import annotations

import asyncio
import time
from typing import Annotated, Any

from fastapi import APIRouter, Depends, Request, Response
from fastapi.responses import JSONResponse
from pydantic import BaseModel, ConfigDict, Field, WithJsonSchema, field_validator, model_validator

from ai.backend.common.logs import session_id_var
from ai.backend.common.problems import InvalidAPIParameters, SessionNotFound
from ai.backend.common.types import ResourceSlot
from ai.backend.kernel.protocol import cap_completions

from ..apps.ports import public_ports
from ..auth import AuthContext
from ..images import registry_of
from ..models import KernelRow, SessionRow
from ..models.sessions import select_with_main_kernel
from ..registry import SessionRegistry, session_age_ms
from ..sessions.params import CreateParams, CreateSessionBody, check_session_name
from ..sessions.status import ENDED_CLEANLY
from ..sessions.status import SessionStatus as S
from .bodies import DocumentedRoute, RequestModel, body_of
from .deps import auth_required, manager_context, registry

router = APIRouter(route_class=DocumentedRoute)

EXEC_MODES = {"query", "continue", "input", "user-input", "batch"}


class RenameBody(RequestModel):
    """``POST /session/{ref}/rename``: ``{"name": NEW}`` or ``?name=NEW`` (the 22.03 client's spelling)."""

    name: str = Field(description="The new session name.")

    @model_validator(mode="before")
    @classmethod
    def _required(cls, data: Any) -> Any:
        if isinstance(data, dict) and data.get("name") is None:
            raise InvalidAPIParameters("The new session name is required ('name').")
        return data

    @field_validator("name", mode="before")
    @classmethod
    def _name(cls, v: Any) -> str:
        return check_session_name(v)


class ExecuteOptions(BaseModel):
    """Execution options; unknown keys go to the kernel as they are."""

    model_config = ConfigDict(extra="allow")
    timeout: float | None = Field(None, gt=0, description="Seconds before the execution is stopped.")


class ExecuteBody(RequestModel):
    """``POST /session/{ref}``: code to run and how. An explicit ``null`` is not the default (``mode``)."""

    null_is_absent = False
    mode: str = Field("query", json_schema_extra={"enum": [*sorted(EXEC_MODES)]})
    code: str | None = ""
    runId: str | None = Field(None, max_length=64)
    options: Annotated[dict[str, Any] | None, WithJsonSchema(ExecuteOptions.model_json_schema())] = None

    @field_validator("mode", mode="before")
    @classmethod
    def _mode(cls, v: Any) -> str:
        if v not in EXEC_MODES:
            raise InvalidAPIParameters(f"'mode' must be one of {', '.join(sorted(EXEC_MODES))}, got {v!r}.")
        return str(v)

    @field_validator("code", mode="before")
    @classmethod
    def _code(cls, v: Any) -> str:
        if v is None:
            return ""
        if not isinstance(v, str):
            raise InvalidAPIParameters("'code' must be a string.")
        return v

    @field_validator("runId", mode="before")
    @classmethod
    def _run_id(cls, v: Any) -> str | None:
        if v is not None and (not isinstance(v, str) or len(v) > 64):
            raise InvalidAPIParameters("'runId' must be a string of at most 64 characters.")
        return v

    @field_validator("options", mode="before")
    @classmethod
    def _options(cls, v: Any) -> dict[str, Any] | None:
        if v is not None and not isinstance(v, dict):
            raise InvalidAPIParameters("'options' must be an object.")
        timeout = (v or {}).get("timeout")
        if timeout is not None and (isinstance(timeout, bool) or not isinstance(timeout, int | float) or timeout <= 0):
            raise InvalidAPIParameters("'options.timeout' must be a positive number of seconds.")
        return v


class CompleteBody(RequestModel):
    """``POST /session/{ref}/complete``: the code to complete."""

    null_is_absent = False
    code: str = ""
    options: dict[str, Any] = Field(default_factory=dict)

    @field_validator("code", mode="before")
    @classmethod
    def _code(cls, v: Any) -> str:
        if not isinstance(v, str):
            raise InvalidAPIParameters("'code' must be a string.")
        return v

    @field_validator("options", mode="before")
    @classmethod
    def _options(cls, v: Any) -> dict[str, Any]:
        v = v or {}
        if not isinstance(v, dict):
            raise InvalidAPIParameters("'options' must be an object.")
        return v


def _cpu_used(stats: dict[str, Any] | None) -> int:
    """``cpu_used`` of a Container Stats Object; 0 when absent or not a number (the last stats an agent gave
    at a kernel's end are stored as they came, e.g. the dummy backend's ``{"current": ...}`` objects)."""
    value = (stats or {}).get("cpu_used", 0)
    return int(value) if isinstance(value, int | float) and not isinstance(value, bool) else 0


def session_info(
    session: SessionRow, kernel: KernelRow | None = None, queries: int = 0, live: dict[str, int] | None = None
) -> dict[str, Any]:
    """The session info document: documented keys plus the upstream ones clients read.

    ``stats`` is the Container Stats Object: live (from the agent's latest heartbeat) while the session runs,
    the last one taken when it ended otherwise.
    """
    stats = live if live is not None else (kernel.last_stat if kernel is not None and kernel.last_stat else None)
    slots = ResourceSlot.from_json(session.occupying_slots or session.requested_slots)
    mem = int(slots.get("mem", 0))
    phases = (session.status_data or {}).get("phases", {})
    return {
        "sessionId": str(session.id),
        "sessionName": session.name,
        "lang": session.image,
        "image": session.image,
        "registry": registry_of(session.image),
        "tag": session.tag,
        "type": session.session_type,
        "domainName": session.domain_name,
        "groupId": str(session.group_id),
        "userId": str(session.user_uuid),
        "ownerAccessKey": session.access_key,
        "status": session.status,
        "statusInfo": session.status_info,
        "statusData": session.status_data,
        "statusHistory": session.status_history,
        "creationPhases": phases,
        "age": session_age_ms(session),
        "creationTime": session.created_at.isoformat(),
        "terminationTime": session.terminated_at.isoformat() if session.terminated_at else None,
        "startsAt": session.starts_at.isoformat() if session.starts_at else None,
        "memoryLimit": mem // 1024,
        "occupiedSlots": session.occupying_slots,
        "requestedSlots": session.requested_slots,
        "environ": session.environ,
        "numQueriesExecuted": session.num_queries + queries,
        "cpuCreditUsed": _cpu_used(stats),
        "stats": stats,
        "batchTimeout": session.batch_timeout,
        "result": session.result,
        "clusterSize": session.cluster_size,
        "clusterMode": session.cluster_mode,
        "containerId": kernel.container_id if kernel else None,
        "agent": kernel.agent if kernel else None,
        "kernelId": str(kernel.id) if kernel else None,
    }


async def requested_session(
    reg: SessionRegistry, ctx: AuthContext, ref: str, request: Request, *, alive_only: bool = False
) -> SessionRow:
    """The session ``ref`` names, owned by the caller or by the ``owner_access_key`` the request gives."""
    owner = await reg.resolve_owner(ctx, request.query_params.get("owner_access_key"))
    async with reg.db() as db:
        return await reg.find_session(db, ref, owner, alive_only=alive_only)


@router.post("/session")
@router.post("/session/create")
async def create(
    request: Request,
    ctx: AuthContext = Depends(auth_required),
    reg: SessionRegistry = Depends(registry),
    body: CreateSessionBody = Depends(body_of(CreateSessionBody)),
) -> JSONResponse:
    """Create a session (or return the existing one of the same name and image)."""
    return await create_and_respond(reg, ctx, body.to_params())


async def create_and_respond(
    reg: SessionRegistry, ctx: AuthContext, params: CreateParams, *, always_201: bool = False
) -> JSONResponse:
    """Create (or reuse) the session, wait as asked and answer the creation response (shared with templates)."""
    created, row = await reg.create_session(ctx, params)
    session_id_var.set(str(row.id))
    status = row.status
    if created and params.enqueue_only:
        # Just written and not waited for: the row says all there is (PENDING, no service ports yet).
        return JSONResponse(
            {
                "sessionId": str(row.id),
                "sessionName": row.name,
                "sessId": row.name,
                "kernelId": row.name,
                "status": status,
                "statusInfo": row.status_info,
                "servicePorts": [],
                "created": True,
            },
            status_code=201,
        )
    if created:
        status = await reg.wait_for_start(row.id, params.max_wait)
    async with reg.db() as db:  # the session as it is now and its main kernel, in one query
        found = (await db.execute(select_with_main_kernel().where(SessionRow.id == row.id))).first()
    assert found is not None
    fresh, kernel = found
    if kernel is None:
        raise SessionNotFound(f"Session {fresh.name!r} has no main kernel.")
    if status != "TIMEOUT":
        status = fresh.status
    payload: dict[str, Any] = {
        "sessionId": str(fresh.id),
        "sessionName": fresh.name,
        "sessId": fresh.name,
        # The v4 (19.09) clients address the session by this from here on; upstream put the name there.
        "kernelId": fresh.name,
        "status": status,
        "statusInfo": fresh.status_info,
        # The apps as the 22.03 server listed them (container ports, no host ports), once RUNNING.
        "servicePorts": public_ports(kernel.service_ports) if status == S.RUNNING else [],
        "created": created,
    }
    if fresh.status == S.ERROR:
        payload["statusData"] = fresh.status_data
    return JSONResponse(payload, status_code=201 if created or always_201 else 200)


@router.get("/session/{ref}")
async def get_info(
    ref: str, request: Request, ctx: AuthContext = Depends(auth_required), reg: SessionRegistry = Depends(registry)
) -> dict[str, Any]:
    """Information about one session of the caller."""
    owner = await reg.resolve_owner(ctx, request.query_params.get("owner_access_key"))
    async with reg.db() as db:
        session, kernel = await reg.find_session_and_kernel(db, ref, owner)
    live = manager_context(request).kernel_stats.get(str(kernel.id)) if session.status == S.RUNNING else None
    return session_info(session, kernel, reg.unflushed_queries(session), live)


@router.get("/session/{ref}/status-history")
async def status_history(
    ref: str, request: Request, ctx: AuthContext = Depends(auth_required), reg: SessionRegistry = Depends(registry)
) -> dict[str, Any]:
    """When the session entered each status: ``{"result": {S.PENDING: iso-time, ...}}``."""
    session = await requested_session(reg, ctx, ref, request)
    return {"result": session.status_history or {}}


@router.delete("/session/{ref}")
async def destroy(
    ref: str, request: Request, ctx: AuthContext = Depends(auth_required), reg: SessionRegistry = Depends(registry)
) -> dict[str, Any]:
    """Destroy a session; answers the kernel's last stats."""
    session = await requested_session(reg, ctx, ref, request)
    if session.status in ENDED_CLEANLY:
        raise SessionNotFound(f"Session {ref!r} is already {session.status.lower()}.")
    stats = await reg.destroy(session)
    # The official CLIs' stats printers require a ``status`` key (upstream sent one); the rest is the
    # Container Stats Object of the last sample.
    return {"stats": {**(stats or {}), "status": "terminated"}}


@router.post("/session/{ref}/rename")
async def rename(
    ref: str,
    request: Request,
    ctx: AuthContext = Depends(auth_required),
    reg: SessionRegistry = Depends(registry),
    body: RenameBody = Depends(body_of(RenameBody)),
) -> Response:
    """Rename an active session: ``?name=NEW`` (the 22.03 client's spelling) or ``{"name": NEW}``."""
    owner = await reg.resolve_owner(ctx, request.query_params.get("owner_access_key"))
    await reg.rename(ref, owner, body.name)
    return Response(status_code=204)


@router.patch("/session/{ref}")
async def restart(
    ref: str, request: Request, ctx: AuthContext = Depends(auth_required), reg: SessionRegistry = Depends(registry)
) -> Response:
    """Restart the session's kernel: globals are reset, files in the working directory stay."""
    session = await requested_session(reg, ctx, ref, request)
    await reg.restart(session)
    return Response(status_code=204)


@router.post("/session/{ref}")
async def execute(
    ref: str,
    request: Request,
    ctx: AuthContext = Depends(auth_required),
    reg: SessionRegistry = Depends(registry),
    body: ExecuteBody = Depends(body_of(ExecuteBody)),
) -> JSONResponse:
    """Execute code in the session (query or batch mode) and answer the Execution Result Object."""
    mode, code, run_id, opts = body.mode, body.code, body.runId, body.options
    # The hot path: the session and its main kernel cached (or in one query), the answer passed on as it is.
    owner = await reg.resolve_owner(ctx, request.query_params.get("owner_access_key"))
    session, kernel = await reg.find_session_and_kernel_cached(manager_context(request).generations, ref, owner)
    reg.count_query(session)
    started = time.perf_counter()
    result = await reg.kernel_call(
        session, "POST", "/execute", json={"mode": mode, "code": code, "run_id": run_id, "opts": opts}, kernel=kernel
    )
    manager_context(request).metrics.execute_seconds.labels(mode).observe(time.perf_counter() - started)
    killed = result.pop("killed", None) if isinstance(result, dict) else None
    if killed and killed.get("oom"):
        # The kernel's memory limit was hit: the session ends and says so.
        asyncio.get_running_loop().create_task(reg.destroy(session, reason="oom-killed"))
    return JSONResponse({"result": result})


@router.post("/session/{ref}/interrupt")
async def interrupt(
    ref: str, request: Request, ctx: AuthContext = Depends(auth_required), reg: SessionRegistry = Depends(registry)
) -> Response:
    session = await requested_session(reg, ctx, ref, request)
    await reg.kernel_call(session, "POST", "/interrupt")
    return Response(status_code=204)


@router.post("/session/{ref}/complete")
async def complete(
    ref: str,
    request: Request,
    ctx: AuthContext = Depends(auth_required),
    reg: SessionRegistry = Depends(registry),
    body: CompleteBody = Depends(body_of(CompleteBody)),
) -> dict[str, Any]:
    code, opts = body.code, body.options
    session = await requested_session(reg, ctx, ref, request)
    res = await reg.kernel_call(session, "POST", "/complete", json={"code": code, "opts": opts})
    return {"result": cap_completions(res.get("result"))}


@router.get("/session/{ref}/logs", response_model=None)
async def logs(
    ref: str, request: Request, ctx: AuthContext = Depends(auth_required), reg: SessionRegistry = Depends(registry)
) -> dict[str, Any] | Response:
    """The container's console log (with a batch task's output); kept after the session ends.

    ``GET /session/_/logs?taskId=<session id>`` answers the same text as ``text/plain`` (the SDK's task logs).
    """
    if ref == "_":
        task_id = request.query_params.get("taskId") or request.query_params.get("task_id")
        if not task_id:
            raise InvalidAPIParameters("'taskId' (the session id of a batch task) is required.")
        return Response(await _session_logs(reg, ctx, task_id, request), media_type="text/plain; charset=utf-8")
    return {"result": {"logs": await _session_logs(reg, ctx, ref, request)}}


async def _session_logs(reg: SessionRegistry, ctx: AuthContext, ref: str, request: Request) -> str:
    owner = await reg.resolve_owner(ctx, request.query_params.get("owner_access_key"))
    async with reg.db() as db:
        session, kernel = await reg.find_session_and_kernel(db, ref, owner)
    if session.status == S.RUNNING:
        res = await reg.kernel_call(session, "GET", "/logs")
        return str(res.get("logs", ""))
    return kernel.task_log or ""
