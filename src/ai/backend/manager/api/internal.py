"""Agent-facing endpoints: heartbeats (registration, capacity, images) and kernel events."""

from __future__ import annotations

import hashlib
import json
import time
import uuid
from typing import Any

from fastapi import APIRouter, Request, Response
from sqlalchemy import select, update

from ai.backend.common.problems import InvalidAPIParameters
from ai.backend.common.types import ResourceSlot, SlotTypeError

from .. import generations
from ..batching import Coalescer
from ..db import retry_locked
from ..images import image_inventory, register_images
from ..live_stats import kernel_live_stats, live_stats
from ..models import Agent, Kernel, ScalingGroup
from ..models.base import utcnow
from .deps import json_body, require_cluster_secret

router = APIRouter(prefix="/internal")


# A heartbeat that repeats what this manager last wrote for the agent only refreshes ``last_heartbeat``;
# the whole row (and the agent's images) is written again at least this often anyway, so that what
# another manager wrote meanwhile cannot stay overridden for long.
FULL_WRITE_EVERY = 30.0


def _digest(body: dict[str, Any]) -> str:
    """What a heartbeat says about the agent (everything but its live state: statistics and the list of
    its kernels, which the manager does not store, and a request for reconciliation), as a short hash."""
    return _hash({k: v for k, v in body.items() if k not in ("live_stat", "kernel_stats", "kernels", "reconcile")})


def _hash(value: Any) -> str:
    return hashlib.blake2b(json.dumps(value, sort_keys=True, default=str).encode(), digest_size=16).hexdigest()


def _per_agent(state: Any, name: str) -> dict[str, Any]:
    """A per-agent table kept on the app state under ``name`` (made on first use)."""
    table: dict[str, Any] | None = getattr(state, name, None)
    if table is None:
        table = {}
        setattr(state, name, table)
    return table


def _written(state: Any) -> dict[str, tuple[str, float]]:
    """Per agent: the digest of the last heartbeat this manager wrote in full, and when (monotonic)."""
    return _per_agent(state, "heartbeat_digests")


async def _refresh_only(request: Request, body: dict[str, Any], digest: str) -> bool:
    """The fast path: when the heartbeat repeats the last one fully written here (and recently), touch
    ``last_heartbeat`` of the still-ALIVE agent (at the same address). ``False`` when the full path must run."""
    agent_id = str(body.get("id"))
    last = _written(request.app.state).get(agent_id)
    if last is None or last[0] != digest or time.monotonic() - last[1] > FULL_WRITE_EVERY:
        return False
    return await _refresher(request.app.state).submit((agent_id, str(body.get("addr"))))


def _refresher(state: Any) -> Coalescer[tuple[str, str], bool]:
    """The fast path's writes, coalesced: the refreshes of heartbeats arriving together (a thousand agents
    send a hundred a second) are one transaction, whose SELECT … FOR UPDATE keeps the agents from changing
    between the check (still ALIVE, same address) and the UPDATE."""
    refresher: Coalescer[tuple[str, str], bool] | None = getattr(state, "heartbeat_refresher", None)
    if refresher is None:
        db_factory = state.registry.db

        async def txn(items: list[tuple[str, str]]) -> list[bool]:
            async with db_factory() as db:
                alive = dict((await db.execute(
                    select(Agent.id, Agent.addr).where(Agent.id.in_({a for a, _ in items}), Agent.status == "ALIVE")
                    .with_for_update()
                )).all())
                ok = [alive.get(agent_id) == addr for agent_id, addr in items]
                fresh = {agent_id for (agent_id, _), good in zip(items, ok, strict=True) if good}
                if fresh:
                    await db.execute(update(Agent).where(Agent.id.in_(fresh)).values(last_heartbeat=utcnow(),
                                                                                    lost_at=None))
                await db.commit()
            return ok

        refresher = state.heartbeat_refresher = Coalescer(lambda items: retry_locked(lambda: txn(items)))
    return refresher


@router.post("/heartbeat")
async def heartbeat(request: Request) -> dict[str, Any]:
    """Register or refresh an agent: its address, capacity, scaling group and local images. The answer
    carries ``stale_kernels`` when it reconciles the agent's kernels (see :func:`_reconcile`)."""
    require_cluster_secret(request)
    body = await json_body(request)
    digest = _digest(body)
    if not await _refresh_only(request, body, digest):
        await _register(request, body)
        _written(request.app.state)[str(body["id"])] = (digest, time.monotonic())
    live_stats(request.app.state).update(str(body["id"]), body.get("live_stat"))
    kernel_live_stats(request.app.state).update(str(body["id"]), body.get("kernel_stats"))
    answer: dict[str, Any] = {"ok": True}
    stale = await _reconcile(request, body)
    if stale is not None:
        answer["stale_kernels"] = stale
    return answer


def _reconciled(state: Any) -> dict[str, float]:
    """Per agent: when (monotonic) its kernels were last reconciled by this manager."""
    return _per_agent(state, "heartbeat_reconciled")


async def _reconcile(request: Request, body: dict[str, Any]) -> list[str] | None:
    """The reconciliation contract: an agent lists its kernels (``kernels``) in every heartbeat, and at
    most every ``reconcile-interval`` seconds (at once when it asks with ``reconcile: true``, as it does
    after starting, and for the first heartbeat this manager process sees of it) the answer says which of
    them no live session owns on that agent (``stale_kernels``); the agent removes their containers. ``None``
    when not due: the other heartbeats cost no query."""
    kernels = body.get("kernels")
    if not isinstance(kernels, list):
        return None
    state = request.app.state
    agent_id = str(body["id"])
    now = time.monotonic()
    last = _reconciled(state).get(agent_id)
    if last is not None and now - last < state.config.manager.reconcile_interval and body.get("reconcile") is not True:
        return None
    _reconciled(state)[agent_id] = now
    return await _reconciler(state).submit((agent_id, [str(k) for k in kernels]))


def _reconciler(state: Any) -> Coalescer[tuple[str, list[str]], list[str]]:
    """The reconciliations of heartbeats arriving together share their queries."""
    reconciler: Coalescer[tuple[str, list[str]], list[str]] | None = getattr(state, "heartbeat_reconciler", None)
    if reconciler is None:
        registry, grace = state.registry, state.config.manager.reconcile_grace
        reconciler = state.heartbeat_reconciler = Coalescer(lambda items: registry.reconcile_agents(items, grace))
    return reconciler


async def _register(request: Request, body: dict[str, Any]) -> None:
    """The full path: check the heartbeat, then write the agent's whole row and its images."""
    try:
        agent_id = str(body["id"])
        addr = str(body["addr"])
        sgroup = str(body.get("scaling_group", "default"))
        slots = ResourceSlot.from_user_input(body["available_slots"]).to_json()
        plugins = _compute_plugins(body.get("compute_plugins"), body.get("slot_types"))
    except (KeyError, SlotTypeError) as e:
        raise InvalidAPIParameters(f"Malformed heartbeat: {e}.") from None
    reg = request.app.state.registry
    joined = reshaped = False
    async with reg.db() as db:
        if await db.get(ScalingGroup, sgroup) is None:
            raise InvalidAPIParameters(f"Unknown scaling group {sgroup!r}.")
        agent = await db.get(Agent, agent_id)
        now = utcnow()
        if agent is None:
            agent = Agent(id=agent_id, addr=addr, scaling_group=sgroup, first_contact=now, occupied_slots={})
            db.add(agent)
            joined = True
        else:
            joined = agent.status != "ALIVE" or agent.addr != addr
            reshaped = agent.available_slots != slots or agent.scaling_group != sgroup
        if agent.status != "ALIVE":
            agent.status_changed = now
        agent.status = "ALIVE"
        agent.addr = addr
        agent.scaling_group = sgroup
        agent.available_slots = slots
        agent.last_heartbeat = now
        agent.lost_at = None
        agent.version = body.get("version")
        agent.architecture = body.get("architecture", "x86_64")
        agent.region = body.get("region")
        agent.compute_plugins = plugins
        images_said: tuple[str, tuple[Any, ...]] | None = None
        if "images" in body:
            if not isinstance(body["images"], list):
                raise InvalidAPIParameters("Malformed heartbeat: images must be a list.")
            # The catalogue is written only if this agent's images changed, or the catalogue did since this
            # manager last wrote them for it (all agents report the same images, every 30 s at least).
            gens = generations.reader(request.app.state)
            images_said = (_hash(body["images"]), await gens.current("images"))
            if _images_written(request.app.state).get(agent_id) != images_said:
                await register_images(db, body["images"])
        await db.commit()
    if images_said is not None:
        # The generation after this commit: a catalogue change of our own counts as seen.
        _images_written(request.app.state)[agent_id] = (images_said[0], await gens.current("images"))
    if "images" in body:
        image_inventory(request.app.state).update(agent_id, body["images"])
    if joined or reshaped:
        reg.agents_changed()
    if joined:
        reg.schedule_event.set()


def _images_written(state: Any) -> dict[str, tuple[str, tuple[Any, ...]]]:
    """Per agent: the digest of the images last written to the catalogue for it, and the catalogue's
    generation right after."""
    return _per_agent(state, "heartbeat_images")


def _compute_plugins(plugins: Any, slot_types: Any) -> dict[str, Any]:
    """The agent's compute plugins (name → metadata with ``slot_types``), checked; a bare ``slot_types``
    without plugin metadata is kept under the name ``agent``."""
    if plugins is None:
        plugins = {"agent": {"slot_types": slot_types}} if slot_types else {}
    if not isinstance(plugins, dict) or not all(isinstance(m, dict) for m in plugins.values()):
        raise SlotTypeError("compute_plugins must map plugin names to objects")
    for name, meta in plugins.items():
        types = meta.get("slot_types") or {}
        if not isinstance(types, dict) or not all(v in ("count", "bytes", "unique") for v in types.values()):
            raise SlotTypeError(f"slot_types of {name} must map slot names to count, bytes or unique")
        ResourceSlot.from_user_input({k: 0 for k in types})  # checks the names
    return plugins


@router.post("/kernel-events")
async def kernel_event(request: Request) -> Response:
    """An agent reports that a kernel's container ended by itself (exit, crash or OOM kill)."""
    require_cluster_secret(request)
    body = await json_body(request)
    try:
        kernel_id = uuid.UUID(str(body["kernel_id"]))
    except (KeyError, ValueError):
        raise InvalidAPIParameters("kernel_id is missing or not a UUID.") from None
    reg = request.app.state.registry
    event = body.get("event")
    if event is not None:
        if event != "pulling":
            raise InvalidAPIParameters(f"Unknown kernel event {event!r}.")
        await reg.mark_pulling(kernel_id)
        return Response(status_code=204)
    reason = str(body.get("reason") or "self-terminated")
    exit_code = body.get("exit_code")
    reg = request.app.state.registry
    async with reg.db() as db:
        kernel = (await db.execute(select(Kernel).where(Kernel.id == kernel_id))).scalar_one_or_none()
    if not isinstance(exit_code, int) or isinstance(exit_code, bool):
        exit_code = None
    stats = body.get("stats")
    task_log = body.get("task_log")
    if kernel is not None:
        await reg.mark_terminated(
            kernel.session_id, reason[:256], exit_code=exit_code, stats=stats if isinstance(stats, dict) else None,
            task_log=task_log if isinstance(task_log, str) else None, kernel_id=kernel.id,
        )
    return Response(status_code=204)
