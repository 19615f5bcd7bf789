"""REST endpoints about resources: presets, the preset allocatability check, usable scaling groups and
the slot types of the cluster.

* ``GET /resource/presets``: every preset, with slot types the cluster does not have removed.
* ``POST /resource/check-presets``: the caller's keypair limits, usage and remaining capacity, the
  remaining capacity of the scaling groups it may use, and which presets fit right now.
* ``GET /scaling-groups?group=<name or id>``: the active scaling groups the caller may use in a group.
* ``GET /config/resource-slots``: slot name → kind (``count``, ``bytes`` or ``unique``).

A scaling group is usable for a session in group G by keypair K of a user in domain D when it is
active and associated with D, G or K; non-admins see only the public ones. The cluster's slot
types are ``cpu`` and ``mem`` plus whatever the alive agents report in ``available_slots``.
"""

from __future__ import annotations

import uuid
from collections.abc import Iterable, Mapping
from decimal import Decimal
from typing import Any

from fastapi import APIRouter, Depends, Request
from sqlalchemy import select
from sqlalchemy.ext.asyncio import AsyncSession

from ai.backend.common.problems import Forbidden, InvalidAPIParameters, NotFound
from ai.backend.common.types import SLOT_TYPES, ResourceSlot

from ..auth import AuthContext
from ..models import (
    AgentRow,
    KeyPairResourcePolicyRow,
    ProjectRow,
    ResourcePresetRow,
    ScalingGroupRow,
    SessionRow,
    group_members,
)
from ..quota import policy_limits
from ..scaling_groups import allowed_scaling_groups
from ..sessions.status import ACTIVE
from .bodies import DocumentedRoute, Field, LaterStr, RequestModel, body_of
from .deps import auth_required, manager_context

router = APIRouter(route_class=DocumentedRoute)
ZERO = Decimal(0)


def slot_kind(name: str) -> str:
    """``count`` or ``bytes``, as :class:`~ai.backend.common.types.ResourceSlot` interprets the slot."""
    return SLOT_TYPES.get(name, "bytes" if name.endswith(".mem") else "count")


async def known_slot_types(db: AsyncSession) -> dict[str, str]:
    """``cpu``/``mem`` plus the slot names alive agents report, each with its kind (as the agent's compute
    plugins declare it: ``count``, ``bytes`` or ``unique``)."""
    out = dict(SLOT_TYPES)
    rows = await db.execute(
        select(AgentRow.available_slots, AgentRow.compute_plugins).where(AgentRow.status == "ALIVE")
    )
    for slots, plugins in rows:
        declared = {
            str(k): str(v)
            for meta in (plugins or {}).values()
            if isinstance(meta, dict)
            for k, v in (meta.get("slot_types") or {}).items()
        }
        for name in slots or {}:
            out.setdefault(str(name), declared.get(str(name)) or slot_kind(str(name)))
    return dict(sorted(out.items()))


def _only(slots: Mapping[str, Decimal], known: Iterable[str]) -> dict[str, str]:
    """Slot JSON restricted to ``known`` (missing ones written as 0)."""
    return ResourceSlot({k: slots.get(k, ZERO) for k in known}).to_json()


def _preset_json(p: ResourcePresetRow, known: Iterable[str]) -> dict[str, Any]:
    slots = ResourceSlot.from_json(p.resource_slots)
    kept = {k: v for k, v in slots.items() if k in set(known)}
    return {"name": p.name, "resource_slots": ResourceSlot(kept).to_json(), "shared_memory": p.shared_memory}


async def resolve_group(db: AsyncSession, ctx: AuthContext, ref: Any) -> ProjectRow:
    """A group by ID, or by name in the caller's domain, that the caller may act in (404/403 otherwise)."""
    if not isinstance(ref, str) or not ref.strip():
        raise InvalidAPIParameters("group must be a group (project) name or ID.")
    group: ProjectRow | None
    try:
        group = await db.get(ProjectRow, uuid.UUID(ref))
    except ValueError:
        group = (
            await db.execute(
                select(ProjectRow).where(ProjectRow.name == ref, ProjectRow.domain_name == ctx.domain_name)
            )
        ).scalar_one_or_none()
    if group is None:
        raise NotFound(f"No such group (project): {ref!r}.")
    if ctx.role == "superadmin":
        return group
    if group.domain_name != ctx.domain_name:
        raise Forbidden(f"The group {ref!r} belongs to another domain.")
    if ctx.role != "admin":
        member = (
            await db.execute(
                select(group_members.c.group_id).where(
                    group_members.c.group_id == group.id, group_members.c.user_id == ctx.user_uuid
                )
            )
        ).first()
        if member is None:
            raise Forbidden(f"You are not a member of the group {ref!r}.")
    return group


async def _allowed(db: AsyncSession, ctx: AuthContext, group: ProjectRow) -> list[str]:
    """The scaling groups session creation would accept for the caller in ``group`` (same rule)."""
    return await allowed_scaling_groups(
        db, domain=group.domain_name, group_id=group.id, access_key=ctx.access_key, include_private=ctx.is_admin
    )


def _sum(items: Iterable[Mapping[str, Any]]) -> ResourceSlot:
    total = ResourceSlot()
    for item in items:
        total = total + ResourceSlot.from_json(item)
    return total


class CheckPresetsBody(RequestModel):
    """Which project (group) and, optionally, which scaling group to check."""

    null_is_absent = False  # the handlers check each value themselves, as they always did

    scaling_group: LaterStr = None
    group: LaterStr = Field(None, description='The project name or id ("default" when not given).')


def _clamp(slots: Mapping[str, Decimal]) -> ResourceSlot:
    return ResourceSlot({k: max(v, ZERO) for k, v in slots.items()})


@router.get("/resource/presets")
async def list_presets(request: Request, ctx: AuthContext = Depends(auth_required)) -> dict[str, Any]:
    """All resource presets; slot types the cluster does not have are removed."""
    async with manager_context(request).db() as db:
        known = await known_slot_types(db)
        rows = (await db.execute(select(ResourcePresetRow).order_by(ResourcePresetRow.name))).scalars().all()
    return {"presets": [_preset_json(p, known) for p in rows]}


@router.post("/resource/check-presets")
async def check_presets(
    request: Request,
    ctx: AuthContext = Depends(auth_required),
    params: CheckPresetsBody = Depends(body_of(CheckPresetsBody)),
) -> dict[str, Any]:
    """Keypair limits/usage/remaining, scaling-group capacity and which presets are allocatable now."""
    body = params.model_dump()
    sg_name = body.get("scaling_group")
    if sg_name is not None and not isinstance(sg_name, str):
        raise InvalidAPIParameters("scaling_group must be a scaling group name.")
    async with manager_context(request).db() as db:
        known = list(await known_slot_types(db))
        group = await resolve_group(db, ctx, body.get("group") or "default")
        allowed = await _allowed(db, ctx, group)
        if sg_name:
            if await db.get(ScalingGroupRow, sg_name) is None:
                raise NotFound(f"No such scaling group: {sg_name!r}.")
            if sg_name not in allowed:
                raise Forbidden(f"You may not use the scaling group {sg_name!r} in the group {group.name!r}.")
            considered = [sg_name]
        else:
            considered = allowed
        policy = await db.get(KeyPairResourcePolicyRow, ctx.resource_policy)
        if policy is None:
            raise NotFound(f"The keypair's resource policy {ctx.resource_policy!r} does not exist.")
        # Usage counts what active sessions asked for, as the policy check of session creation does.
        sessions = (
            (
                await db.execute(
                    select(SessionRow.requested_slots).where(
                        SessionRow.access_key == ctx.access_key, SessionRow.status.in_(ACTIVE)
                    )
                )
            )
            .scalars()
            .all()
        )
        agents = (
            (
                await db.execute(
                    select(AgentRow).where(
                        AgentRow.status == "ALIVE",
                        AgentRow.schedulable.is_(True),
                        AgentRow.scaling_group.in_(considered),
                    )
                )
            )
            .scalars()
            .all()
        )
        presets = (await db.execute(select(ResourcePresetRow).order_by(ResourcePresetRow.name))).scalars().all()
    limits = policy_limits(policy, known)
    using = _sum(sessions)
    remaining = _clamp(limits - using)
    per_sgroup: dict[str, dict[str, Any]] = {}
    free_per_agent: list[ResourceSlot] = []
    sg_total = ResourceSlot()
    for name in considered:
        members = [a for a in agents if a.scaling_group == name]
        sg_using = _sum(a.occupied_slots for a in members)
        frees = [
            _clamp(ResourceSlot.from_json(a.available_slots) - ResourceSlot.from_json(a.occupied_slots))
            for a in members
        ]
        sg_free = _sum(f.to_json() for f in frees)
        free_per_agent.extend(frees)
        sg_total = sg_total + sg_free
        per_sgroup[name] = {"using": _only(sg_using, known), "remaining": _only(sg_free, known)}
    out_presets = []
    for p in presets:
        need = ResourceSlot.from_json(p.resource_slots)
        fits = need.fits_in(remaining) and any(need.fits_in(f) for f in free_per_agent)
        out_presets.append({**_preset_json(p, known), "allocatable": fits})
    return {
        "keypair_limits": _only(limits, known),
        "keypair_using": _only(using, known),
        "keypair_remaining": _only(remaining, known),
        "scaling_group_remaining": _only(sg_total, known),
        "scaling_groups": per_sgroup,
        "presets": out_presets,
    }


@router.get("/scaling-groups")
async def list_available_sgroups(request: Request, ctx: AuthContext = Depends(auth_required)) -> dict[str, Any]:
    """The active scaling groups the caller may use for sessions in ``?group=`` (a name or an ID)."""
    group_ref = request.query_params.get("group")
    if not group_ref:
        raise InvalidAPIParameters("The group query parameter (a group name or ID) is required.")
    async with manager_context(request).db() as db:
        group = await resolve_group(db, ctx, group_ref)
        names = await _allowed(db, ctx, group)
    return {"scaling_groups": [{"name": n} for n in names]}


@router.get("/config/resource-slots")
async def resource_slots(request: Request, ctx: AuthContext = Depends(auth_required)) -> dict[str, str]:
    """The cluster's slot types and their kinds (``count`` or ``bytes``)."""
    async with manager_context(request).db() as db:
        return await known_slot_types(db)
