"""Reading and writing sessions: lookups by name or id, the shared joins, the status writes of loaded rows,
and the executemany helpers the coalesced transactions use.

Rows read through the generation caches are shared between requests: read them, never change them.
"""

from __future__ import annotations

import uuid
from collections.abc import Awaitable, Callable
from decimal import Decimal
from typing import Any, TypeVar

from sqlalchemy import bindparam, or_, select, update
from sqlalchemy.ext.asyncio import AsyncSession, async_sessionmaker
from sqlalchemy.orm.attributes import set_committed_value

from ai.backend.common.logs import session_id_var
from ai.backend.common.problems import Forbidden, NotFound, SessionAlreadyExists, SessionNotFound
from ai.backend.common.types import ResourceSlot

from ..auth import AuthContext
from ..generations import GenerationCache, GenerationReader
from ..models import AgentRow, KernelRow, KeyPairRow, SessionRow, UserRow
from ..models.base import utcnow
from ..models.sessions import KERNEL_ORDER, select_with_main_kernel
from .status import ACTIVE, status_change

T = TypeVar("T")


async def update_rows(db: AsyncSession, model: Any, rows: list[dict[str, Any]]) -> None:
    """One executemany UPDATE of ``model``'s table by primary key ``b_id`` (rows of the same keys)."""
    if rows:
        table = model.__table__
        await db.execute(update(table).where(table.c.id == bindparam("b_id")), rows)


def record_change(row: SessionRow | KernelRow, values: dict[str, Any], updates: list[dict[str, Any]]) -> None:
    """Queue ``values`` for an executemany UPDATE of ``row`` (a session or a kernel), and show them on the
    loaded row without making the ORM write it again."""
    updates.append({"b_id": row.id, **values})
    for name, value in values.items():
        set_committed_value(row, name, value)


def set_status(session: SessionRow, status: str, info: str | None = None, **data: Any) -> None:
    """Move a loaded session to ``status`` now (written at the next commit); see :func:`.status.status_change`."""
    for name, value in status_change(session, status, utcnow(), info, data).items():
        setattr(session, name, value)


async def release_slots(db: AsyncSession, kernel: KernelRow) -> None:
    """Give a kernel's occupied slots back to its agent."""
    if not kernel.agent or not kernel.occupied_slots:
        return
    agent = await db.get(AgentRow, kernel.agent, with_for_update=True)
    if agent is not None:
        occ = ResourceSlot.from_json(agent.occupied_slots) - ResourceSlot.from_json(kernel.occupied_slots)
        agent.occupied_slots = ResourceSlot({k: max(v, Decimal(0)) for k, v in occ.items()}).to_json()
    kernel.occupied_slots = {}


async def sessions_with_kernels(
    db: AsyncSession, ids: list[uuid.UUID]
) -> tuple[dict[uuid.UUID, SessionRow], dict[uuid.UUID, list[KernelRow]]]:
    """The sessions of ``ids`` and their kernels (main1 first), in two queries."""
    sessions = {s.id: s for s in (await db.execute(select(SessionRow).where(SessionRow.id.in_(ids)))).scalars()}
    kernels: dict[uuid.UUID, list[KernelRow]] = {}
    for k in (
        await db.execute(
            select(KernelRow).where(KernelRow.session_id.in_(ids)).order_by(KernelRow.session_id, *KERNEL_ORDER)
        )
    ).scalars():
        kernels.setdefault(k.session_id, []).append(k)
    return sessions, kernels


def _lookup(ref: str, access_key: str) -> list[Any]:
    cond = [SessionRow.access_key == access_key]
    try:
        sid = uuid.UUID(ref)
        cond.append(or_(SessionRow.id == sid, SessionRow.name == ref))
    except ValueError:
        cond.append(SessionRow.name == ref)
    return cond


# Where names repeat, the active session first, then the newest.
_NEWEST_FIRST = ((SessionRow.status.in_(ACTIVE)).desc(), SessionRow.created_at.desc())


class SessionStore:
    """Finds sessions for the API and the other session services; caches what is read on the hot path."""

    def __init__(self, db: async_sessionmaker[AsyncSession], generations: GenerationReader | None) -> None:
        self.db = db
        # Without a reader nothing is cached.
        self.generations = generations
        self._hot_sessions: GenerationCache[tuple[str, str], tuple[SessionRow, KernelRow]] = GenerationCache()

    async def cached(
        self, cache: GenerationCache[Any, tuple[T]], group: str, key: Any, load: Callable[[], Awaitable[T]]
    ) -> T:
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

    async def resolve_owner(self, ctx: AuthContext, owner_access_key: str | None) -> str:
        """The access key a request acts for: the caller's, or another one for admins."""
        if owner_access_key is None or owner_access_key == ctx.access_key:
            return ctx.access_key
        if not ctx.is_admin:
            raise Forbidden("Only administrators may act on behalf of another access key (owner_access_key).")
        async with self.db() as db:
            row = (
                await db.execute(
                    select(KeyPairRow, UserRow)
                    .join(UserRow, UserRow.uuid == KeyPairRow.user)
                    .where(KeyPairRow.access_key == owner_access_key)
                )
            ).first()
        if row is None:
            raise NotFound(f"No such access key: {owner_access_key}.")
        if not ctx.is_superadmin and row[1].domain_name != ctx.domain_name:
            raise Forbidden("Domain admins may act only for users of their own domain.")
        return owner_access_key

    async def find_session(
        self, db: AsyncSession, ref: str, access_key: str, *, alive_only: bool = False
    ) -> SessionRow:
        """Find a session of ``access_key`` by UUID or name (the newest one when names repeat)."""
        q = select(SessionRow).where(*_lookup(ref, access_key)).order_by(*_NEWEST_FIRST).limit(1)
        row = (await db.execute(q)).scalar_one_or_none()
        if row is None or (alive_only and row.status not in ACTIVE):
            raise SessionNotFound(f"Session {ref!r} does not exist or is not yours.")
        session_id_var.set(str(row.id))  # the request's log lines name the session from here on
        return row

    async def find_session_and_kernel(
        self, db: AsyncSession, ref: str, access_key: str
    ) -> tuple[SessionRow, KernelRow]:
        """:meth:`find_session` and :meth:`main_kernel` in one query (the session-info hot path)."""
        q = select_with_main_kernel().where(*_lookup(ref, access_key)).order_by(*_NEWEST_FIRST).limit(1)
        row = (await db.execute(q)).first()
        if row is None:
            raise SessionNotFound(f"Session {ref!r} does not exist or is not yours.")
        session_id_var.set(str(row[0].id))
        if row[1] is None:
            raise SessionNotFound(f"Session {row[0].name!r} has no main kernel.")
        return row[0], row[1]

    async def find_session_and_kernel_cached(
        self, gens: GenerationReader, ref: str, access_key: str
    ) -> tuple[SessionRow, KernelRow]:
        """:meth:`find_session_and_kernel` without a query while the ``sessions`` generation is unchanged
        (the execute hot path). The rows are shared between requests: read them, never change them."""
        gen = await gens.current("sessions")
        hit = self._hot_sessions.get((ref, access_key), gen)
        if hit is not None:
            session_id_var.set(str(hit[0].id))
            return hit
        async with self.db() as db:
            found = await self.find_session_and_kernel(db, ref, access_key)
        self._hot_sessions.put((ref, access_key), gen, found)
        return found

    async def main_kernel(self, db: AsyncSession, session: SessionRow) -> KernelRow:
        """The session's ``main1`` kernel."""
        row = (
            await db.execute(
                select(KernelRow).where(KernelRow.session_id == session.id, KernelRow.cluster_role == "main")
            )
        ).scalar_one_or_none()
        if row is None:
            raise SessionNotFound(f"Session {session.name!r} has no main kernel.")
        return row

    async def session_kernels(self, db: AsyncSession, session: SessionRow) -> list[KernelRow]:
        """Every kernel of ``session`` in layout order: ``main1``, then ``sub1``, ``sub2``..."""
        rows = (
            (await db.execute(select(KernelRow).where(KernelRow.session_id == session.id).order_by(*KERNEL_ORDER)))
            .scalars()
            .all()
        )
        if not rows:
            raise SessionNotFound(f"Session {session.name!r} has no kernels.")
        return list(rows)

    async def rename(self, ref: str, access_key: str, new_name: str) -> SessionRow:
        """Give the active session ``ref`` of ``access_key`` the name ``new_name`` (already validated).

        Under the owner's keypair lock, like creation, so a racing creation cannot take the name meanwhile;
        another active session of the owner with that name is a 409 naming it.
        """
        async with self.db() as db:
            await db.execute(select(KeyPairRow.access_key).where(KeyPairRow.access_key == access_key).with_for_update())
            row = await self.find_session(db, ref, access_key, alive_only=True)
            if row.name != new_name:
                clash = (
                    await db.execute(
                        select(SessionRow.id).where(
                            SessionRow.access_key == access_key,
                            SessionRow.name == new_name,
                            SessionRow.status.in_(ACTIVE),
                        )
                    )
                ).scalar_one_or_none()
                if clash is not None:
                    raise SessionAlreadyExists(
                        f"You already have an active session named {new_name!r}.",
                        data={"existingSessionId": str(clash)},
                    )
                row.name = new_name
                await db.commit()
            return row
