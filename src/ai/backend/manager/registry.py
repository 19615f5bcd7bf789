"""The session registry: creating, finding, executing in and destroying compute sessions."""

from __future__ import annotations

import asyncio
import logging
import secrets
import time
import uuid
from collections.abc import Awaitable, Callable
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from decimal import Decimal
from typing import Any, TypeVar

from sqlalchemy import and_, bindparam, or_, select, update
from sqlalchemy.ext.asyncio import AsyncSession, async_sessionmaker
from sqlalchemy.orm.attributes import set_committed_value

from ai.backend.common.problems import (
    Conflict,
    Forbidden,
    InvalidAPIParameters,
    NotFound,
    ProblemError,
    QuotaExceeded,
    ServiceUnavailable,
    SessionAlreadyExists,
    SessionNotFound,
    TooManyRequests,
)
from ai.backend.common.types import ResourceSlot

from .agent_client import AgentError, AgentRPC, RawAnswer
from .auth import AuthContext
from .batching import Coalescer
from .cluster import (
    KernelSlot,
    cluster_never_fits,
    cluster_spec,
    kernel_layout,
    local_rank,
    network_name,
    new_ssh_keypair,
)
from .counters import PendingCounts
from .db import retry_locked
from .events import Event, EventBus
from .generations import GenerationCache, GenerationReader
from .images import image_min_slots, resolve_image
from .models import Agent, Group, Image, Kernel, KeyPair, KeyPairResourcePolicy, SessionRow, User, group_members
from .models.base import utcnow
from .models.sessions import KERNEL_ORDER
from .quota import has_finite_limit, keypair_holdings, policy_limits
from .session_limits import ActivityTracker
from .session_mounts import owner_context, resolve_mounts
from .session_params import CreateParams
from .sessions.status import (
    ACTIVE,
    HAS_CONTAINER,
    KERNEL_GOING,
    QUEUED,
    START_SETTLED,
    STARTING,
    TERMINAL,
    check_transition,
    status_change,
)
from .sessions.status import SessionStatus as S
from .sgroups import CapacityCache, agent_capacities, allowed_scaling_groups, offered_slot_names
from .userconfig import kernel_user_config

log = logging.getLogger(__name__)
T = TypeVar("T")


class SessionNotRunning(Conflict):
    slug, title = "session-not-running", "The session is not running"

# Sessions whose kernels are being created at the same time (each waits on its agents).
MAX_CONCURRENT_STARTS = 64
# A started session: its row, its kernels (main1 first) and its owner's dotfiles and bootstrap script.
Prepared = tuple[SessionRow, list[Kernel], dict[str, Any]]
# Reasons of the ends that crash recovery and reconciliation record.
CREATION_INTERRUPTED = "creation-interrupted"
MANAGER_RESTARTED = "manager-restarted"
CONTAINER_LOST = "container-lost"


async def _update_rows(db: AsyncSession, model: Any, rows: list[dict[str, Any]]) -> None:
    """One executemany UPDATE of ``model``'s table by primary key ``b_id`` (rows of the same keys)."""
    if rows:
        table = model.__table__
        await db.execute(update(table).where(table.c.id == bindparam("b_id")), rows)


def _record_change(row: SessionRow | Kernel, values: dict[str, Any], updates: list[dict[str, Any]]) -> None:
    """Queue ``values`` for an executemany UPDATE of ``row`` (a session or a kernel), and show them on the
    loaded row without making the ORM write it again."""
    updates.append({"b_id": row.id, **values})
    for name, value in values.items():
        set_committed_value(row, name, value)


async def _sessions_with_kernels(db: AsyncSession, ids: list[uuid.UUID]
                                 ) -> tuple[dict[uuid.UUID, SessionRow], dict[uuid.UUID, list[Kernel]]]:
    """The sessions of ``ids`` and their kernels (main1 first), in two queries."""
    sessions = {s.id: s for s in (await db.execute(select(SessionRow).where(SessionRow.id.in_(ids)))).scalars()}
    kernels: dict[uuid.UUID, list[Kernel]] = {}
    for k in (await db.execute(select(Kernel).where(Kernel.session_id.in_(ids))
                               .order_by(Kernel.session_id, *KERNEL_ORDER))).scalars():
        kernels.setdefault(k.session_id, []).append(k)
    return sessions, kernels


def new_session_name() -> str:
    return f"sess-{secrets.token_hex(5)}"


async def _owner_and_policy(db: AsyncSession, access_key: str) -> tuple[User, KeyPairResourcePolicy]:
    """The owner of a keypair and the keypair's resource policy, in one query."""
    _, owner, policy = (await db.execute(
        select(KeyPair, User, KeyPairResourcePolicy).join(User, User.uuid == KeyPair.user)
        .join(KeyPairResourcePolicy, KeyPairResourcePolicy.name == KeyPair.resource_policy)
        .where(KeyPair.access_key == access_key)
    )).one()
    return owner, policy


async def _member_group(db: AsyncSession, name: str, domain: str, user_uuid: uuid.UUID) -> Group | None:
    """The project ``name`` of ``domain`` if the user belongs to it."""
    return (await db.execute(
        select(Group).join(group_members, group_members.c.group_id == Group.id)
        .where(Group.name == name, Group.domain_name == domain, group_members.c.user_id == user_uuid)
    )).scalar_one_or_none()


@dataclass
class _Creation:
    """A validated creation waiting for its turn to be inserted (see ``SessionRegistry._insert_batch``)."""

    row: SessionRow
    kernels: list[Kernel]
    reuse: bool
    max_sessions: int
    limit: ResourceSlot
    requested: ResourceSlot


def _admit(c: _Creation, existing: SessionRow | None, held: tuple[ResourceSlot, int]
           ) -> tuple[bool, SessionRow] | ProblemError:
    """Whether creation ``c`` may go in, given the owner's active session of the same name and what the
    owner's active sessions hold: ``(True, new row)``, ``(False, existing row)`` for a reuse, or the problem."""
    if existing is not None:
        if c.reuse and existing.image == c.row.image:
            return False, existing
        return SessionAlreadyExists(
            f"A session named {c.row.name!r} already exists"
            + (" with another image." if existing.image != c.row.image else "."),
            data={"existingSessionId": str(existing.id)})
    using, n_active = held
    if n_active >= c.max_sessions:
        return TooManyRequests(f"You already have {n_active} active sessions, the most your policy allows.")
    over = (using + c.requested).exceeding(c.limit)
    if over:
        return QuotaExceeded(
            "Requested resources exceed what the keypair resource policy leaves: "
            + ", ".join(f"{k}: {c.requested.to_json().get(k, '0')} asked, {using.to_json().get(k, '0')} in use, "
                        f"limit {c.limit.to_json()[k]}" for k in over))
    return True, c.row


class SessionRegistry:
    """Owns the session lifecycle; the scheduler calls :meth:`start_session` for placed sessions."""

    def __init__(self, db: async_sessionmaker[AsyncSession], rpc: AgentRPC, bus: EventBus) -> None:
        self.db = db
        self.rpc = rpc
        self.bus = bus
        self.schedule_event = asyncio.Event()
        self._query_counts: PendingCounts[uuid.UUID] = PendingCounts()
        self._hot_sessions: GenerationCache[tuple[str, str], tuple[SessionRow, Kernel]] = GenerationCache()
        self.activity = ActivityTracker()
        # Where a folder lives on the hosts: (host, vfid) -> absolute path (the storage proxy answers).
        self.folder_path: Callable[[str, str], Awaitable[str]] | None = None
        # The [docker-registries] of the configuration: credentials agents need to pull their images.
        self.docker_registries: dict[str, Any] = {}
        # Sessions whose kernel is being created, and kernel ends reported meanwhile (see start_session).
        self._starting: set[uuid.UUID] = set()
        self._early_exits: dict[uuid.UUID, dict[str, Any]] = {}
        self._tasks: set[asyncio.Task[Any]] = set()
        # A pass may place thousands of sessions at once; their starts share the database pool and the agents.
        self._start_slots = asyncio.Semaphore(MAX_CONCURRENT_STARTS)
        # Where to read table generations (set by the server): what creations read of accounts, images,
        # scaling groups and folders is cached while unchanged. Cached rows are shared: read them only.
        self.generations: GenerationReader | None = None
        self._owners: GenerationCache[str, tuple[tuple[User, KeyPairResourcePolicy]]] = GenerationCache()
        self._images: GenerationCache[str, tuple[Image]] = GenerationCache()
        self._groups: GenerationCache[tuple[str, str, uuid.UUID], tuple[Group | None]] = GenerationCache()
        self._sgroups: GenerationCache[tuple[str, uuid.UUID, str, bool], tuple[list[str]]] = GenerationCache()
        self._dot_mounts: GenerationCache[tuple[str, uuid.UUID], tuple[list[dict[str, Any]]]] = GenerationCache()
        self._capacities = CapacityCache()
        self._creations: Coalescer[_Creation, tuple[bool, SessionRow] | ProblemError] = Coalescer(self._insert_batch)
        # The status writes of concurrent starts, coalesced (see start_session).
        self._preparing: Coalescer[uuid.UUID, Prepared | None] = Coalescer(self._prepare_batch)
        self._running: Coalescer[tuple[SessionRow, dict[uuid.UUID, dict[str, Any]], dict[str, Any]],
                                 tuple[SessionRow, bool]] = Coalescer(self._running_batch)

    def spawn(self, coro: Any) -> None:
        """Run ``coro`` in the background, keeping a reference until it ends."""
        task = asyncio.get_running_loop().create_task(coro)
        self._tasks.add(task)
        task.add_done_callback(self._tasks.discard)

    # ---- lookup -------------------------------------------------------------------------------

    async def resolve_owner(self, ctx: AuthContext, owner_access_key: str | None) -> str:
        """The access key a request acts for: the caller's, or another one for admins."""
        if owner_access_key is None or owner_access_key == ctx.access_key:
            return ctx.access_key
        if not ctx.is_admin:
            raise Forbidden("Only administrators may act on behalf of another access key (owner_access_key).")
        async with self.db() as db:
            row = (
                await db.execute(
                    select(KeyPair, User).join(User, User.uuid == KeyPair.user)
                    .where(KeyPair.access_key == owner_access_key)
                )
            ).first()
        if row is None:
            raise NotFound(f"No such access key: {owner_access_key}.")
        if not ctx.is_superadmin and row[1].domain_name != ctx.domain_name:
            raise Forbidden("Domain admins may act only for users of their own domain.")
        return owner_access_key

    @staticmethod
    def _lookup(ref: str, access_key: str) -> list[Any]:
        cond = [SessionRow.access_key == access_key]
        try:
            sid = uuid.UUID(ref)
            cond.append(or_(SessionRow.id == sid, SessionRow.name == ref))
        except ValueError:
            cond.append(SessionRow.name == ref)
        return cond

    _NEWEST_FIRST = ((SessionRow.status.in_(ACTIVE)).desc(), SessionRow.created_at.desc())

    async def find_session(
        self, db: AsyncSession, ref: str, access_key: str, *, alive_only: bool = False
    ) -> SessionRow:
        """Find a session of ``access_key`` by UUID or name (the newest one when names repeat)."""
        q = select(SessionRow).where(*self._lookup(ref, access_key)).order_by(*self._NEWEST_FIRST).limit(1)
        row = (await db.execute(q)).scalar_one_or_none()
        if row is None or (alive_only and row.status not in ACTIVE):
            raise SessionNotFound(f"Session {ref!r} does not exist or is not yours.")
        return row

    async def find_session_and_kernel(self, db: AsyncSession, ref: str, access_key: str) -> tuple[SessionRow, Kernel]:
        """:meth:`find_session` and :meth:`main_kernel` in one query (the session-info hot path)."""
        main = and_(Kernel.session_id == SessionRow.id, Kernel.cluster_role == "main")
        q = (
            select(SessionRow, Kernel).join(Kernel, main, isouter=True)
            .where(*self._lookup(ref, access_key)).order_by(*self._NEWEST_FIRST).limit(1)
        )
        row = (await db.execute(q)).first()
        if row is None:
            raise SessionNotFound(f"Session {ref!r} does not exist or is not yours.")
        if row[1] is None:
            raise SessionNotFound(f"Session {row[0].name!r} has no main kernel.")
        return row[0], row[1]

    async def find_session_and_kernel_cached(
        self, gens: GenerationReader, ref: str, access_key: str
    ) -> tuple[SessionRow, Kernel]:
        """:meth:`find_session_and_kernel` without a query while the ``sessions`` generation is unchanged
        (the execute hot path). The rows are shared between requests: read them, never change them."""
        gen = await gens.current("sessions")
        hit = self._hot_sessions.get((ref, access_key), gen)
        if hit is not None:
            return hit
        async with self.db() as db:
            found = await self.find_session_and_kernel(db, ref, access_key)
        self._hot_sessions.put((ref, access_key), gen, found)
        return found

    async def main_kernel(self, db: AsyncSession, session: SessionRow) -> Kernel:
        row = (
            await db.execute(
                select(Kernel).where(Kernel.session_id == session.id, Kernel.cluster_role == "main")
            )
        ).scalar_one_or_none()
        if row is None:
            raise SessionNotFound(f"Session {session.name!r} has no main kernel.")
        return row

    async def rename(self, ref: str, access_key: str, new_name: str) -> SessionRow:
        """Give the active session ``ref`` of ``access_key`` the name ``new_name`` (already validated).

        Under the owner's keypair lock, like creation, so a racing creation cannot take the name meanwhile;
        another active session of the owner with that name is a 409 naming it.
        """
        async with self.db() as db:
            await db.execute(select(KeyPair.access_key).where(KeyPair.access_key == access_key).with_for_update())
            row = await self.find_session(db, ref, access_key, alive_only=True)
            if row.name != new_name:
                clash = (await db.execute(select(SessionRow.id).where(
                    SessionRow.access_key == access_key, SessionRow.name == new_name,
                    SessionRow.status.in_(ACTIVE)))).scalar_one_or_none()
                if clash is not None:
                    raise SessionAlreadyExists(f"You already have an active session named {new_name!r}.",
                                               data={"existingSessionId": str(clash)})
                row.name = new_name
                await db.commit()
            return row

    # ---- creation -----------------------------------------------------------------------------

    async def _cached(self, cache: GenerationCache[Any, tuple[T]], group: str, key: Any,
                      load: Callable[[], Awaitable[T]]) -> T:
        """``load()``, or what it gave before while the generation of table group ``group`` is unchanged
        (read first, so a change committed during the load leaves no stale entry)."""
        if self.generations is None:
            return await load()
        gen = await self.generations.current(group)
        hit = cache.get(key, gen)
        if hit is not None:
            return hit[0]
        value = await load()
        cache.put(key, gen, (value,))
        return value

    def agents_changed(self) -> None:
        """An agent joined, or its capacity or scaling group changed (the heartbeat handler tells)."""
        self._capacities.invalidate()

    async def create_session(self, ctx: AuthContext, p: CreateParams) -> tuple[bool, SessionRow]:
        """Create (or reuse) a session; returns ``(created, row)``. Validation errors are 4xx problems."""
        owner_ak = await self.resolve_owner(ctx, p.owner_access_key)
        async with self.db() as db:
            owner, policy = await self._cached(self._owners, "accounts", owner_ak,
                                               lambda: _owner_and_policy(db, owner_ak))
            if p.name is None:
                p.name = new_session_name()
            # A session of the same name is looked for when the row is written (``_admit``): reused, or refused.
            image = await self._cached(self._images, "images", p.image, lambda: resolve_image(db, p.image))
            if p.domain != owner.domain_name:
                raise Forbidden(f"The user does not belong to domain {p.domain!r}.")
            group = await self._cached(self._groups, "accounts", (p.group, p.domain, owner.uuid),
                                       lambda: _member_group(db, p.group, p.domain, owner.uuid))
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
            allowed = await self._cached(
                self._sgroups, "accounts", (p.domain, group.id, owner_ak, ctx.is_admin),
                lambda: allowed_scaling_groups(db, domain=p.domain, group_id=group.id, access_key=owner_ak,
                                               include_private=ctx.is_admin))
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
            owner_ctx = owner_context(ctx, access_key=owner_ak, user_uuid=owner.uuid, email=owner.email,
                                      role=owner.role, domain_name=owner.domain_name)
            if p.mounts:
                mounts = await resolve_mounts(db, owner_ctx, p.mounts, p.mount_paths, p.mount_perms, group.id)
            else:  # only the owner's dot-folders: the same for every session of the owner in this project
                mounts = await self._cached(self._dot_mounts, "vfolders", (owner_ak, group.id), lambda: resolve_mounts(
                    db, owner_ctx, [], p.mount_paths, p.mount_perms, group.id))
            now = utcnow()
            row = SessionRow(
                id=uuid.uuid4(), name=p.name, session_type=p.session_type, access_key=owner_ak, vfolder_mounts=mounts,
                user_uuid=owner.uuid, domain_name=p.domain, group_id=group.id, scaling_group=sgroup,
                image=image.name, status=S.PENDING, status_changed=now, created_at=now,
                status_history={S.PENDING: now.isoformat()}, starts_at=p.starts_at,
                startup_command=p.startup_command, bootstrap_script=p.bootstrap_script, tag=p.tag,
                batch_timeout=p.batch_timeout,
                cluster_mode=p.cluster_mode, cluster_size=p.cluster_size,
                requested_slots=requested.to_json(), environ=p.environ, resource_opts=p.resource_opts,
            )
            kernels = [Kernel(id=uuid.uuid4(), session_id=row.id, image=image.name, status=S.PENDING, created_at=now,
                              cluster_role=k.role, cluster_idx=k.idx, cluster_hostname=k.hostname)
                       for k in kernel_layout(p.cluster_size)]
        result = await self._creations.submit(
            _Creation(row, kernels, p.reuse, policy.max_concurrent_sessions, limit, requested))
        if isinstance(result, ProblemError):
            raise result
        return result

    async def _insert_batch(self, items: list[_Creation]) -> list[tuple[bool, SessionRow] | ProblemError]:
        """One transaction for many creations: the checks that depend on the owner's other sessions (name
        taken, number of sessions, slots held) made again under the owners' keypair locks (on SQLite, the
        write turn), so concurrent creations can never pass a limit together, then the new rows. Each item
        gets ``(created, row)`` (``False`` and the existing session for a reuse), or its problem raised."""
        async def txn() -> list[tuple[bool, SessionRow] | ProblemError]:
            async with self.db() as db:
                keys = {c.row.access_key for c in items}
                await db.execute(select(KeyPair.access_key).where(KeyPair.access_key.in_(keys)).with_for_update())
                existing: dict[tuple[str, str], SessionRow] = {(r.access_key, r.name): r for r in (
                    await db.execute(select(SessionRow).where(
                        SessionRow.access_key.in_(keys), SessionRow.name.in_({c.row.name for c in items}),
                        SessionRow.status.in_(ACTIVE)))).scalars()}
                # One COUNT; the held slots are summed only for owners whose policy bounds some slot.
                holding = await keypair_holdings(db, keys, ACTIVE,
                                                 {c.row.access_key for c in items if has_finite_limit(c.limit)})
                out: list[tuple[bool, SessionRow] | ProblemError] = []
                new: list[_Creation] = []
                for c in items:
                    result = _admit(c, existing.get((c.row.access_key, c.row.name)),
                                    holding.get(c.row.access_key, (ResourceSlot(), 0)))
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
                self.bus.publish(Event("session_enqueued", str(result[1].id), {"sessionName": result[1].name}))
                self.schedule_event.set()
        return results

    async def wait_for_start(self, session_id: uuid.UUID, timeout: float) -> str:
        """Wait until the session is RUNNING or failed; ``"TIMEOUT"`` when ``timeout`` (>0) passes."""
        deadline = time.monotonic() + timeout if timeout > 0 else None
        async with self.bus.subscribe() as q:
            while True:
                async with self.db() as db:
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

    # ---- status transitions --------------------------------------------------------------------

    async def set_status(
        self, db: AsyncSession, session: SessionRow, status: str, info: str | None = None, **data: Any
    ) -> None:
        for name, value in status_change(session, status, utcnow(), info, data).items():
            setattr(session, name, value)

    async def _release(self, db: AsyncSession, kernel: Kernel) -> None:
        """Give a kernel's occupied slots back to its agent."""
        if not kernel.agent or not kernel.occupied_slots:
            return
        agent = await db.get(Agent, kernel.agent, with_for_update=True)
        if agent is not None:
            occ = ResourceSlot.from_json(agent.occupied_slots) - ResourceSlot.from_json(kernel.occupied_slots)
            agent.occupied_slots = ResourceSlot({k: max(v, Decimal(0)) for k, v in occ.items()}).to_json()
        kernel.occupied_slots = {}

    def _publish(self, name: str, session: SessionRow, reason: str | None = None, **extra: Any) -> None:
        data = {
            "sessionId": str(session.id), "sessionName": session.name, "ownerAccessKey": session.access_key,
            "reason": reason or "", **extra,
        }
        self.bus.publish(Event(name, str(session.id), data))

    async def start_session(self, session_id: uuid.UUID) -> None:
        """Start a SCHEDULED session: PREPARING, its kernels created on their agents, then RUNNING (or ERROR).
        The status writes of sessions starting at the same time are coalesced into shared transactions."""
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
                await self._fail_start(session_id, "creation-failed", f"The session could not be started: {e}")
            except Exception:  # noqa: BLE001 - the database itself is failing; the log says so above
                log.exception("could not record the failure of session %s", session_id)
        finally:
            self._starting.discard(session_id)
            early = self._early_exits.pop(session_id, None)
        if early is not None:
            # The kernel ended (e.g. a quick batch task) before its creation was recorded: end it now.
            await self.mark_terminated(session_id, **early)

    async def _prepare_batch(self, ids: list[uuid.UUID]) -> list[Prepared | None]:
        """One transaction for many starts: the sessions still SCHEDULED become PREPARING (with their
        kernels), and each comes back with its kernels and what the agents need of its owner (dotfiles,
        bootstrap script); ``None`` for the others."""
        async def txn() -> list[Prepared | None]:
            async with self.db() as db:
                sessions, kernels = await _sessions_with_kernels(db, ids)
                users: dict[uuid.UUID, dict[str, Any]] = {}
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
                    config = {**users[session.user_uuid],
                              "bootstrap_script": session.bootstrap_script or users[session.user_uuid][
                                  "bootstrap_script"]}
                    _record_change(session, status_change(session, S.PREPARING, now), session_updates)
                    for k in kernels[sid]:
                        _record_change(k, {"status": S.PREPARING}, kernel_updates)
                    out.append((session, kernels[sid], config))
                await _update_rows(db, SessionRow, session_updates)
                await _update_rows(db, Kernel, kernel_updates)
                await db.commit()
            return out

        return await retry_locked(txn)

    async def _create_kernels(
        self, session: SessionRow, kernels: list[Kernel], user_config: dict[str, Any]
    ) -> dict[uuid.UUID, dict[str, Any]] | None:
        """Create the session's kernels on their agents (a cluster's network first, the sub kernels before
        ``main1``); the agents' answers by kernel id, or ``None`` after recording the failure (ERROR)."""
        session_id = session.id
        cluster = len(kernels) > 1
        ssh = new_ssh_keypair(f"{session.name}@backend.ai") if cluster else None
        created: dict[uuid.UUID, dict[str, Any]] = {}
        try:
            common: dict[str, Any] = {"mounts": await self._mount_specs(session), **user_config}
            if cluster:
                assert kernels[0].agent_addr is not None
                await self.rpc.call(kernels[0].agent_addr, "POST", "/v1/networks",
                                    json={"name": network_name(session.id), "mode": session.cluster_mode}, timeout=120)

            async def create(k: Kernel) -> None:
                assert k.agent_addr is not None
                spec = {**self._kernel_spec(session, k, ssh), **common}
                created[k.id] = await self.rpc.call(k.agent_addr, "POST", "/v1/kernels", json=spec, timeout=900)

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
            await self._teardown(session_id, [k for k in kernels if k.id in created], kernels)
            await self._fail_start(session_id, reason, detail)
            return None
        return created

    async def _record_running(self, session: SessionRow, kernels: list[Kernel],
                              created: dict[uuid.UUID, dict[str, Any]], t0: float) -> None:
        """Record created kernels (RUNNING, in a transaction shared with other starts); a session destroyed
        while its kernels were being created has them torn down instead."""
        phases = dict(created.get(kernels[0].id, {}).get("phases") or {})
        phases["total"] = round(time.monotonic() - t0, 4)
        try:
            row, started = await self._running.submit((session, created, phases))
        except Exception as e:  # noqa: BLE001 - the kernels run but cannot be recorded: do not leak them
            log.error("session %s: could not record its start: %s", session.id, e)
            await self._teardown(session.id, kernels, kernels)
            await self._fail_start(session.id, "creation-failed", f"The start could not be recorded: {e}")
            return
        if started:
            self._publish("session_started", row)
        else:
            # Destroyed while it was being created: the destroyer could not reach the containers.
            self.spawn(self._teardown(session.id, kernels, kernels))

    async def _running_batch(self, items: list[tuple[SessionRow, dict[uuid.UUID, dict[str, Any]], dict[str, Any]]]
                             ) -> list[tuple[SessionRow, bool]]:
        """One transaction for many created sessions: each kernel's container id and service ports, and the
        session RUNNING with its creation phases, unless it was destroyed meanwhile (then ``False``)."""
        ids = [row.id for row, _, _ in items]

        async def txn() -> list[tuple[SessionRow, bool]]:
            async with self.db() as db:
                sessions, kernels = await _sessions_with_kernels(db, ids)
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
                    destroyed = session.status in (S.TERMINATING, S.TERMINATED, S.CANCELLED)
                    for k in kernels.get(sid, []):
                        info = created.get(k.id) or {}
                        kernel_updates.append({
                            "b_id": k.id, "container_id": info.get("container_id"),
                            "service_ports": info.get("service_ports", []),
                            "status": k.status if destroyed else S.RUNNING})
                    if not destroyed:
                        _record_change(session, status_change(session, S.RUNNING, now, "", {"phases": phases}),
                                       session_updates)
                    out.append((session, not destroyed))
                await _update_rows(db, Kernel, kernel_updates)
                await _update_rows(db, SessionRow, session_updates)
                await db.commit()
            return out

        return await retry_locked(txn)

    async def session_kernels(self, db: AsyncSession, session: SessionRow) -> list[Kernel]:
        """Every kernel of ``session`` in layout order: ``main1``, then ``sub1``, ``sub2``..."""
        rows = (await db.execute(select(Kernel).where(Kernel.session_id == session.id).order_by(*KERNEL_ORDER))
                ).scalars().all()
        if not rows:
            raise SessionNotFound(f"Session {session.name!r} has no kernels.")
        return list(rows)

    def _kernel_spec(self, session: SessionRow, kernel: Kernel, ssh: tuple[str, str] | None) -> dict[str, Any]:
        """The creation request of one kernel for its agent. Only ``main1`` runs a batch session's task."""
        size = session.cluster_size or 1
        main = kernel.cluster_role == "main"
        me = KernelSlot(kernel.cluster_role, kernel.cluster_idx, kernel.cluster_hostname,
                        local_rank(kernel.cluster_role, kernel.cluster_idx))
        spec: dict[str, Any] = {
            "kernel_id": str(kernel.id), "session_id": str(session.id), "session_name": session.name,
            "image": kernel.image, "slots": kernel.occupied_slots, "environ": session.environ,
            "session_type": session.session_type if main else "interactive",
            "startup_command": session.startup_command if main else None,
            "bootstrap_script": session.bootstrap_script, "access_key": session.access_key,
            "batch_timeout": session.batch_timeout,
            **cluster_spec(session.id, session.cluster_mode, size, me, ssh),
        }
        auth = self._registry_auth(session.image)
        if auth is not None:
            spec["registry_auth"] = auth
        return spec

    async def _fail_start(self, session_id: uuid.UUID, reason: str, detail: str) -> None:
        """Record that a session could not start: ERROR, its kernels' slots given back."""
        async def record() -> SessionRow | None:
            async with self.db() as db:
                session = await db.get(SessionRow, session_id)
                assert session is not None
                if session.status in TERMINAL:
                    return None  # destroyed while it was being created: its end is already recorded
                for kernel in await self.session_kernels(db, session):
                    await self._release(db, kernel)
                    kernel.status = S.ERROR
                    kernel.status_info = reason
                await self.set_status(db, session, S.ERROR, reason, error=detail)
                await db.commit()
            return session

        session = await retry_locked(record)
        if session is None:
            return
        self._publish("session_failure", session, reason, error=detail)
        self.schedule_event.set()

    async def _teardown(self, session_id: uuid.UUID, doomed: list[Kernel], kernels: list[Kernel]) -> None:
        """Destroy the ``doomed`` kernels on their agents (errors logged), then, for a cluster session (all its
        ``kernels``, main1 first), its network on main1's agent."""
        await asyncio.gather(*(self._destroy_kernel_quietly(k) for k in doomed))
        network_agent = kernels[0].agent_addr if len(kernels) > 1 else None
        if network_agent:
            try:
                await self.rpc.call(network_agent, "DELETE", f"/v1/networks/{network_name(session_id)}")
            except Exception as e:  # noqa: BLE001 - the agent may be gone; it removes leftovers at start
                log.warning("could not remove the network of session %s: %s", session_id, e)

    async def mark_pulling(self, kernel_id: uuid.UUID) -> None:
        """The agent is pulling the image of a kernel being created: the session says PULLING meanwhile."""
        async with self.db() as db:
            kernel = await db.get(Kernel, kernel_id)
            if kernel is None:
                return
            session = await db.get(SessionRow, kernel.session_id)
            if session is None or session.status != S.PREPARING:
                return
            kernel.status = S.PULLING
            await self.set_status(db, session, S.PULLING)
            await db.commit()
        self._publish("session_pulling", session)

    async def _mount_specs(self, session: SessionRow) -> list[dict[str, str]]:
        """Bind mounts of the session's folders for the agent: host paths from their storage proxies."""
        out = []
        for m in session.vfolder_mounts or []:
            if self.folder_path is None:
                raise ServiceUnavailable("No storage proxy is configured; folders cannot be mounted.")
            host_path = await self.folder_path(m["host"], m["vfid"])
            out.append({"host_path": host_path, "container_path": m["mount_path"],
                        "mode": "ro" if m["permission"] == "ro" else "rw"})
        return out

    def _registry_auth(self, image: str) -> dict[str, str] | None:
        """Pull credentials for an image of a configured registry that has them (sent to the agent only)."""
        host, sep, _ = image.partition("/")
        cfg = self.docker_registries.get(host) if sep else None
        if cfg is None or not getattr(cfg, "username", ""):
            return None
        return {"username": cfg.username, "password": cfg.password, "serveraddress": host}

    async def _destroy_kernel_quietly(self, kernel: Kernel) -> dict[str, Any]:
        """Destroy a kernel on its agent; its last stats, or ``{}`` when the agent did not answer (logged: the
        container may already be gone)."""
        if not kernel.agent_addr:
            return {}
        try:
            res = await self.rpc.call(kernel.agent_addr, "DELETE", f"/v1/kernels/{kernel.id}")
        except AgentError as e:
            if e.status != 404:  # a 404: gone already (ended by itself, or removed by reconciliation)
                log.warning("could not destroy kernel %s: %s", kernel.id, e)
            return {}
        except Exception as e:  # noqa: BLE001
            log.warning("could not destroy kernel %s: %s", kernel.id, e)
            return {}
        return dict((res or {}).get("stats") or {})

    async def destroy(self, session: SessionRow, reason: str = "user-requested") -> dict[str, Any]:
        """Destroy a session: cancel it if still pending, else kill its kernels and free resources."""
        stats: dict[str, Any] = {}
        async with self.db() as db:
            session = await db.get(SessionRow, session.id, with_for_update=True)  # type: ignore[assignment]
            assert session is not None
            kernels = await self.session_kernels(db, session)
            if session.status in QUEUED:
                for kernel in kernels:
                    await self._release(db, kernel)
                    kernel.status = S.CANCELLED
                await self.set_status(db, session, S.CANCELLED, reason)
                await db.commit()
                self._publish("session_cancelled", session, reason)
                self.schedule_event.set()
                return stats
            if session.status == S.ERROR:
                # A failed session holds no slots any more; destroying it closes its record, and removes any
                # container its agent still has (e.g. one the agent took back after a crash).
                await self.set_status(db, session, S.TERMINATED, session.status_info or reason)
                await db.commit()
                await asyncio.gather(*(self._destroy_kernel_quietly(k) for k in kernels))
                return stats
            if session.status not in ACTIVE:
                return stats
            was_preparing = session.status in STARTING
            await self.set_status(db, session, S.TERMINATING, reason)
            for kernel in kernels:
                kernel.status = S.TERMINATING
            await db.commit()
        self._publish("session_terminating", session, reason)
        # Also while it is being created: the agent removes a kernel whose creation is under way as soon as
        # it has a container (or when its creation ends), so no container outlives the destroyed session.
        results = await asyncio.gather(*(self._destroy_kernel_quietly(k) for k in kernels))
        if not was_preparing:  # main1's last stats are the session's
            stats = results[0]
        await self.mark_terminated(session.id, reason, stats=stats)
        return stats

    async def mark_terminated(
        self, session_id: uuid.UUID, reason: str, *, stats: dict[str, Any] | None = None,
        exit_code: int | None = None, task_log: str | None = None, kernel_id: uuid.UUID | None = None,
    ) -> None:
        """Record the end of a session and free its resources (idempotent). ``kernel_id``: the kernel whose
        end was reported (default ``main1``); the other kernels of a cluster session still up are destroyed."""
        async with self.db() as db:
            session = await db.get(SessionRow, session_id)
            if session is None or session.status in TERMINAL:
                return
            if session.status in STARTING and session_id in self._starting:
                self._early_exits[session_id] = {"reason": reason, "stats": stats, "exit_code": exit_code,
                                                 "task_log": task_log, "kernel_id": kernel_id}
                return
            kernels = await self.session_kernels(db, session)
            ended = next((k for k in kernels if k.id == kernel_id), kernels[0])
            still_up = [k for k in kernels if k is not ended and k.status not in KERNEL_GOING]
            now = utcnow()
            for kernel in kernels:
                await self._release(db, kernel)
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
            await self.set_status(db, session, S.TERMINATED, reason, exit_code=exit_code)
            await db.commit()
        if len(kernels) > 1:
            self.spawn(self._teardown(session_id, still_up, kernels))
        self._publish("session_terminated", session, reason, result=session.result)
        self.schedule_event.set()

    # ---- crash recovery and reconciliation -------------------------------------------------------

    async def recover_after_restart(self) -> dict[str, int]:
        """Finish what a previous manager process left half done (run at start, before serving).

        The starts and destroys in progress died with that process, and only it would ever have moved
        their sessions on: SCHEDULED sessions (no agent was called yet) are started again; PREPARING and
        PULLING ones end in ERROR (``creation-interrupted``) and TERMINATING ones are recorded TERMINATED,
        their slots given back and their kernels destroyed (what an agent does not hear now it removes
        at its next reconciliation); RESTARTING ones are RUNNING again. One manager per database is
        assumed (see ``docs/architecture.md``). Returns how many sessions of each status were handled."""
        async with self.db() as db:
            rows = (await db.execute(select(SessionRow.id, SessionRow.status, SessionRow.status_info).where(
                SessionRow.status.in_((S.SCHEDULED, S.PREPARING, S.PULLING, S.TERMINATING, S.RESTARTING))
            ))).all()
            restarting = [sid for sid, st, _ in rows if st == S.RESTARTING]
            if restarting:
                back = check_transition(S.RESTARTING, S.RUNNING)
                await db.execute(update(SessionRow).where(SessionRow.id.in_(restarting), SessionRow.status ==
                                                          S.RESTARTING).values(status=back))
                await db.commit()
        counts: dict[str, int] = {}
        for sid, status, info in rows:
            counts[status] = counts.get(status, 0) + 1
            if status == S.SCHEDULED:
                self.spawn(self.start_session(sid))
                continue
            if status == S.RESTARTING:
                continue
            async with self.db() as db:
                session = await db.get(SessionRow, sid)
                kernels = await self.session_kernels(db, session) if session is not None else []
            if status == S.TERMINATING:
                await self.mark_terminated(sid, info or MANAGER_RESTARTED)
            else:
                await self._fail_start(sid, CREATION_INTERRUPTED,
                                       "The manager restarted while the session was being created.")
            if kernels:
                self.spawn(self._teardown(sid, kernels, kernels))
        if rows:
            log.warning("recovered the sessions a previous manager process left in progress: %s", counts)
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
        async with self.db() as db:
            ids = list(wanted)
            for i in range(0, len(ids), 500):
                alive.update((wanted[k], agent) for k, agent in (await db.execute(
                    select(Kernel.id, Kernel.agent).join(SessionRow, SessionRow.id == Kernel.session_id)
                    .where(Kernel.id.in_(ids[i:i + 500]), Kernel.status.notin_(TERMINAL),
                           SessionRow.status.notin_(TERMINAL))
                )).all())
            for k, sid, agent in (await db.execute(
                select(Kernel.id, Kernel.session_id, Kernel.agent).join(SessionRow, SessionRow.id == Kernel.session_id)
                .where(Kernel.agent.in_(agents), Kernel.status == S.RUNNING, SessionRow.status.in_(HAS_CONTAINER),
                       SessionRow.status_changed < cutoff)
            )).all():
                if k not in wanted and agent is not None:
                    lost.append((k, sid, agent))
        for k, sid, agent in lost:
            log.warning("kernel %s of session %s is gone from agent %s: ending the session", k, sid, agent)
            self.spawn(self.mark_terminated(sid, CONTAINER_LOST, kernel_id=k))
        return [[str(raw) for raw in kernel_ids if alive.get(str(raw), "") != agent_id]
                for agent_id, kernel_ids in reports]

    # ---- kernel interaction -------------------------------------------------------------------

    async def kernel_call(
        self, session: SessionRow, method: str, op: str, json: Any = None, timeout: float | None = 600,
        *, check_status: bool = True, kernel: Kernel | None = None,
    ) -> Any:
        """Forward a call to the session's main kernel on its agent (``kernel``: that kernel, if already loaded)."""
        self.activity.touch(session.id)
        if check_status and session.status != S.RUNNING:
            raise SessionNotRunning(
                f"Session {session.name!r} is {session.status}, not RUNNING; it cannot take this request."
            )
        if kernel is None:
            async with self.db() as db:
                kernel = await self.main_kernel(db, session)
        if not kernel.agent_addr:
            raise SessionNotFound(f"Session {session.name!r} has no running kernel.")
        return await self.rpc.call(kernel.agent_addr, method, f"/v1/kernels/{kernel.id}{op}", json=json,
                                   timeout=timeout)

    async def kernel_call_raw(
        self, session: SessionRow, method: str, op: str, *, params: dict[str, str | int] | None = None,
        content: bytes | None = None, content_type: str | None = None, timeout: float | None = 600,
    ) -> RawAnswer:
        """Like :meth:`kernel_call`, for agent endpoints that take or answer raw bytes (session files)."""
        self.activity.touch(session.id)
        if session.status != S.RUNNING:
            raise SessionNotRunning(
                f"Session {session.name!r} is {session.status}, not RUNNING; it cannot take this request."
            )
        async with self.db() as db:
            kernel = await self.main_kernel(db, session)
        if not kernel.agent_addr:
            raise SessionNotFound(f"Session {session.name!r} has no running kernel.")
        return await self.rpc.call_raw(kernel.agent_addr, method, f"/v1/kernels/{kernel.id}{op}", params=params,
                                       content=content, content_type=content_type, timeout=timeout)

    async def restart(self, session: SessionRow) -> None:
        """Restart the runners of the session's kernels (globals reset, files kept); RESTARTING meanwhile."""
        async with self.db() as db:
            row = await db.get(SessionRow, session.id, with_for_update=True)
            if row is None or row.status != S.RUNNING:
                status = row.status if row is not None else "gone"
                raise SessionNotRunning(f"Session {session.name!r} is {status}, not RUNNING; it cannot restart.")
            await self.set_status(db, row, S.RESTARTING)
            await db.commit()
        self._publish("session_restarting", row)
        try:
            async with self.db() as db:
                kernels = await self.session_kernels(db, row)
            self.activity.touch(row.id)
            await asyncio.gather(*(self.rpc.call(k.agent_addr, "POST", f"/v1/kernels/{k.id}/restart", timeout=600)
                                   for k in kernels if k.agent_addr))
        finally:
            async with self.db() as db:
                row = await db.get(SessionRow, session.id)
                if row is not None and row.status == S.RESTARTING:
                    await self.set_status(db, row, S.RUNNING)
                    await db.commit()
                    self._publish("session_started", row, "restarted")

    def count_query(self, session: SessionRow) -> None:
        self._query_counts.count(session.id)

    async def flush_query_counts(self) -> None:
        """Write the execute counters kept in memory (one write per interval, not per execute)."""
        async def write(counts: dict[uuid.UUID, int]) -> None:
            async with self.db() as db:
                for sid, n in counts.items():
                    await db.execute(
                        update(SessionRow).where(SessionRow.id == sid).values(num_queries=SessionRow.num_queries + n)
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
