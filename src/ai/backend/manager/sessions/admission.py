"""Admission: the checks a session creation must pass (owner, image, project, policy, scaling group,
capacity, mounts), then the coalesced transaction that re-checks what depends on the owner's other
sessions under their keypair locks and writes the new rows (PENDING)."""

from __future__ import annotations

import asyncio
import secrets
import uuid
from dataclasses import dataclass
from decimal import Decimal
from typing import Any

from sqlalchemy import select
from sqlalchemy.ext.asyncio import AsyncSession

from ai.backend.common.problems import (
    Forbidden,
    InvalidAPIParameters,
    NotFound,
    ProblemError,
    QuotaExceeded,
    ServiceUnavailable,
    SessionAlreadyExists,
    TooManyRequests,
)
from ai.backend.common.types import ResourceSlot

from ..auth import AuthContext
from ..batching import Coalescer
from ..db import retry_locked
from ..events import Event, EventBus
from ..generations import GenerationCache
from ..images import image_min_slots, resolve_image
from ..models import (
    ImageRow,
    KernelRow,
    KeyPairResourcePolicyRow,
    KeyPairRow,
    ProjectRow,
    SessionRow,
    UserRow,
    group_members,
)
from ..models.base import utcnow
from ..quota import has_finite_limit, keypair_holdings, policy_limits
from ..scaling_groups import CapacityCache, agent_capacities, allowed_scaling_groups, offered_slot_names
from .cluster import cluster_never_fits, kernel_layout
from .mounts import owner_context, resolve_mounts
from .params import CreateParams
from .status import ACTIVE
from .status import SessionStatus as S
from .store import SessionStore


def new_session_name() -> str:
    return f"sess-{secrets.token_hex(5)}"


async def _owner_and_policy(db: AsyncSession, access_key: str) -> tuple[UserRow, KeyPairResourcePolicyRow]:
    """The owner of a keypair and the keypair's resource policy, in one query."""
    _, owner, policy = (
        await db.execute(
            select(KeyPairRow, UserRow, KeyPairResourcePolicyRow)
            .join(UserRow, UserRow.uuid == KeyPairRow.user)
            .join(KeyPairResourcePolicyRow, KeyPairResourcePolicyRow.name == KeyPairRow.resource_policy)
            .where(KeyPairRow.access_key == access_key)
        )
    ).one()
    return owner, policy


async def _member_group(db: AsyncSession, name: str, domain: str, user_uuid: uuid.UUID) -> ProjectRow | None:
    """The project ``name`` of ``domain`` if the user belongs to it."""
    return (
        await db.execute(
            select(ProjectRow)
            .join(group_members, group_members.c.group_id == ProjectRow.id)
            .where(ProjectRow.name == name, ProjectRow.domain_name == domain, group_members.c.user_id == user_uuid)
        )
    ).scalar_one_or_none()


@dataclass
class _Creation:
    """A validated creation waiting for its turn to be inserted (see ``Admission._insert_batch``)."""

    row: SessionRow
    kernels: list[KernelRow]
    reuse: bool
    max_sessions: int
    limit: ResourceSlot
    requested: ResourceSlot


def _admit(
    c: _Creation, existing: SessionRow | None, held: tuple[ResourceSlot, int]
) -> tuple[bool, SessionRow] | ProblemError:
    """Whether creation ``c`` may go in, given the owner's active session of the same name and what the
    owner's active sessions hold: ``(True, new row)``, ``(False, existing row)`` for a reuse, or the problem."""
    if existing is not None:
        if c.reuse and existing.image == c.row.image:
            return False, existing
        return SessionAlreadyExists(
            f"A session named {c.row.name!r} already exists"
            + (" with another image." if existing.image != c.row.image else "."),
            data={"existingSessionId": str(existing.id)},
        )
    using, n_active = held
    if n_active >= c.max_sessions:
        return TooManyRequests(f"You already have {n_active} active sessions, the most your policy allows.")
    over = (using + c.requested).exceeding(c.limit)
    if over:
        return QuotaExceeded(
            "Requested resources exceed what the keypair resource policy leaves: "
            + ", ".join(
                f"{k}: {c.requested.to_json().get(k, '0')} asked, {using.to_json().get(k, '0')} in use, "
                f"limit {c.limit.to_json()[k]}"
                for k in over
            )
        )
    return True, c.row


class Admission:
    """Admits session creations; ``wake`` is set when new sessions wait for the scheduler."""

    def __init__(self, store: SessionStore, bus: EventBus, wake: asyncio.Event) -> None:
        self.store = store
        self._bus = bus
        self._wake = wake
        # What creations read of accounts, images, scaling groups and folders, cached while unchanged.
        self._owners: GenerationCache[str, tuple[tuple[UserRow, KeyPairResourcePolicyRow]]] = GenerationCache()
        self._images: GenerationCache[str, tuple[ImageRow]] = GenerationCache()
        self._groups: GenerationCache[tuple[str, str, uuid.UUID], tuple[ProjectRow | None]] = GenerationCache()
        self._sgroups: GenerationCache[tuple[str, uuid.UUID, str, bool], tuple[list[str]]] = GenerationCache()
        self._dot_mounts: GenerationCache[tuple[str, uuid.UUID], tuple[list[dict[str, Any]]]] = GenerationCache()
        self._capacities = CapacityCache()
        self._creations: Coalescer[_Creation, tuple[bool, SessionRow] | ProblemError] = Coalescer(self._insert_batch)

    def agents_changed(self) -> None:
        """An agent joined, or its capacity or scaling group changed (the heartbeat handler tells)."""
        self._capacities.invalidate()

    async def create_session(self, ctx: AuthContext, p: CreateParams) -> tuple[bool, SessionRow]:
        """Create (or reuse) a session; returns ``(created, row)``. Validation errors are 4xx problems."""
        owner_ak = await self.store.resolve_owner(ctx, p.owner_access_key)
        async with self.store.db() as db:
            owner, policy = await self.store.cached(
                self._owners, "accounts", owner_ak, lambda: _owner_and_policy(db, owner_ak)
            )
            if p.name is None:
                p.name = new_session_name()
            # A session of the same name is looked for when the row is written (``_admit``): reused, or refused.
            image = await self.store.cached(self._images, "images", p.image, lambda: resolve_image(db, p.image))
            if p.domain != owner.domain_name:
                raise Forbidden(f"The user does not belong to domain {p.domain!r}.")
            group = await self.store.cached(
                self._groups,
                "accounts",
                (p.group, p.domain, owner.uuid),
                lambda: _member_group(db, p.group, p.domain, owner.uuid),
            )
            if group is None:
                raise NotFound(f"No project (group) {p.group!r} in domain {p.domain!r} that the user belongs to.")
            if not group.is_active:
                raise Forbidden(f"The project {p.group!r} is inactive.")
            if p.cluster_size > max(policy.max_containers_per_session, 1):
                raise QuotaExceeded(
                    f"clusterSize {p.cluster_size} exceeds the policy limit of "
                    f"{policy.max_containers_per_session} container(s) per session."
                )
            mins = image_min_slots(image)
            per_kernel = p.resources.filled(mins)
            requested = per_kernel
            unknown = [k for k, v in requested.items() if k not in ("cpu", "mem") and v > 0]
            if unknown:
                # Accelerator slots are known when an alive agent offers them (its compute plugins).
                offered = await offered_slot_names(db)
                unknown = [k for k in unknown if k not in offered]
            if unknown:
                raise InvalidAPIParameters(f"Unknown resource slot(s): {', '.join(sorted(unknown))}.")
            below = [k for k, v in mins.items() if requested.get(k, Decimal(0)) < v]
            if below:
                raise InvalidAPIParameters(
                    "Requested resources are below the image minimum: "
                    + ", ".join(f"{k}={requested.to_json()[k]} < {mins.to_json()[k]}" for k in below)
                )
            # The resources asked are per kernel; the session (and the keypair's policy) counts them all.
            requested = ResourceSlot({k: v * p.cluster_size for k, v in per_kernel.items()})
            limit = policy_limits(policy, requested)
            allowed = await self.store.cached(
                self._sgroups,
                "accounts",
                (p.domain, group.id, owner_ak, ctx.is_admin),
                lambda: allowed_scaling_groups(
                    db, domain=p.domain, group_id=group.id, access_key=owner_ak, include_private=ctx.is_admin
                ),
            )
            if p.scaling_group is None:
                if not allowed:
                    raise Forbidden(f"No scaling group is available to project {p.group!r}; ask an administrator.")
                sgroup = "default" if "default" in allowed else allowed[0]
            else:
                sgroup = p.scaling_group
                if sgroup not in allowed:
                    raise Forbidden(
                        f"Scaling group {sgroup!r} is not available to you in project {p.group!r}"
                        + (f"; available: {', '.join(allowed)}." if allowed else ".")
                    )
            capacities = await self._capacities.get(sgroup, lambda: agent_capacities(db, sgroup))
            if not capacities:
                raise ServiceUnavailable(f"No agent has ever joined the scaling group {sgroup!r}.")
            never_fits = cluster_never_fits(p.cluster_mode, p.cluster_size, per_kernel, capacities)
            if never_fits:
                raise QuotaExceeded(f"The request can never fit in scaling group {sgroup!r}: {never_fits}")
            owner_ctx = owner_context(
                ctx,
                access_key=owner_ak,
                user_uuid=owner.uuid,
                email=owner.email,
                role=owner.role,
                domain_name=owner.domain_name,
            )
            if p.mounts:
                mounts = await resolve_mounts(db, owner_ctx, p.mounts, p.mount_paths, p.mount_perms, group.id)
            else:  # only the owner's dot-folders: the same for every session of the owner in this project
                mounts = await self.store.cached(
                    self._dot_mounts,
                    "vfolders",
                    (owner_ak, group.id),
                    lambda: resolve_mounts(db, owner_ctx, [], p.mount_paths, p.mount_perms, group.id),
                )
            now = utcnow()
            row = SessionRow(
                id=uuid.uuid4(),
                name=p.name,
                session_type=p.session_type,
                access_key=owner_ak,
                vfolder_mounts=mounts,
                user_uuid=owner.uuid,
                domain_name=p.domain,
                group_id=group.id,
                scaling_group=sgroup,
                image=image.name,
                status=S.PENDING,
                status_changed=now,
                created_at=now,
                status_history={S.PENDING: now.isoformat()},
                starts_at=p.starts_at,
                startup_command=p.startup_command,
                bootstrap_script=p.bootstrap_script,
                tag=p.tag,
                batch_timeout=p.batch_timeout,
                cluster_mode=p.cluster_mode,
                cluster_size=p.cluster_size,
                requested_slots=requested.to_json(),
                environ=p.environ,
                resource_opts=p.resource_opts,
                preopen_ports=p.preopen_ports or None,
            )
            kernels = [
                KernelRow(
                    id=uuid.uuid4(),
                    session_id=row.id,
                    image=image.name,
                    status=S.PENDING,
                    created_at=now,
                    cluster_role=k.role,
                    cluster_idx=k.idx,
                    cluster_hostname=k.hostname,
                )
                for k in kernel_layout(p.cluster_size)
            ]
        result = await self._creations.submit(
            _Creation(row, kernels, p.reuse, policy.max_concurrent_sessions, limit, requested)
        )
        if isinstance(result, ProblemError):
            raise result
        return result

    async def _insert_batch(self, items: list[_Creation]) -> list[tuple[bool, SessionRow] | ProblemError]:
        """One transaction for many creations: the checks that depend on the owner's other sessions (name
        taken, number of sessions, slots held) made again under the owners' keypair locks (on SQLite, the
        write turn), so concurrent creations can never pass a limit together, then the new rows. Each item
        gets ``(created, row)`` (``False`` and the existing session for a reuse), or its problem raised."""

        async def txn() -> list[tuple[bool, SessionRow] | ProblemError]:
            async with self.store.db() as db:
                keys = {c.row.access_key for c in items}
                await db.execute(select(KeyPairRow.access_key).where(KeyPairRow.access_key.in_(keys)).with_for_update())
                existing: dict[tuple[str, str], SessionRow] = {
                    (r.access_key, r.name): r
                    for r in (
                        await db.execute(
                            select(SessionRow).where(
                                SessionRow.access_key.in_(keys),
                                SessionRow.name.in_({c.row.name for c in items}),
                                SessionRow.status.in_(ACTIVE),
                            )
                        )
                    ).scalars()
                }
                # One COUNT; the held slots are summed only for owners whose policy bounds some slot.
                holding = await keypair_holdings(
                    db, keys, ACTIVE, {c.row.access_key for c in items if has_finite_limit(c.limit)}
                )
                out: list[tuple[bool, SessionRow] | ProblemError] = []
                new: list[_Creation] = []
                for c in items:
                    result = _admit(
                        c,
                        existing.get((c.row.access_key, c.row.name)),
                        holding.get(c.row.access_key, (ResourceSlot(), 0)),
                    )
                    if isinstance(result, tuple) and result[0]:
                        using, n = holding.get(c.row.access_key, (ResourceSlot(), 0))
                        holding[c.row.access_key] = (using + c.requested, n + 1)
                        existing[(c.row.access_key, c.row.name)] = c.row
                        new.append(c)
                    out.append(result)
                if new:
                    db.add_all([c.row for c in new])
                    await db.flush()
                    db.add_all([k for c in new for k in c.kernels])
                await db.commit()
            return out

        results = await retry_locked(txn)
        # Told here, not by each creator: a creator whose client went away still leaves its session written.
        for result in results:
            if isinstance(result, tuple) and result[0]:
                self._bus.publish(Event("session_enqueued", str(result[1].id), {"sessionName": result[1].name}))
                self._wake.set()
        return results
