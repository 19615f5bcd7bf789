"""Change generations of database tables, for hot-path caches that must never serve a stale row.

Tables are watched in groups (``accounts``: keypairs, users, domains, projects, policies and scaling
groups; ``images``; ``vfolders``; ``sessions``: sessions and kernels).
Every committed change to a table of a group moves the group's *generation* on:

* in this process: SQLAlchemy session hooks (installed on ``db.session_factory``'s sessions by
  :func:`track_changes`) notice flushed changes (new, changed or deleted rows) and
  INSERT/UPDATE/DELETE statements on watched tables, and bump a counter once the transaction commits;
* for other processes (more managers, the ``backend.ai mgr`` CLI) the committing process also replaces
  a marker file per group in the state directory (same host) and, when Redis is configured, increments
  ``generation:<group>`` in Redis, all before its ``commit()`` returns.

A reader's current generation of a group is the tuple (local counter, marker file identity, Redis
counter): one ``stat`` and, with Redis, one GET. A :class:`GenerationCache` entry is tagged with the
generation read *before* its row was loaded and is used only while it is still current, so a change
committed while a request was reading can never leave a stale entry behind.

Statements that change nothing such a cache reads (usage counters) opt out with the execution option
``generation_neutral=True``. Processes must call :func:`configure_propagation` (the manager does it through
:func:`propagating_reader` when it builds its context, the CLI when it loads its configuration).
"""

from __future__ import annotations

import logging
import os
from collections.abc import Iterable
from dataclasses import dataclass, field
from datetime import UTC, datetime
from pathlib import Path
from typing import Any, Generic, TypeVar

from sqlalchemy import event
from sqlalchemy.exc import MissingGreenlet
from sqlalchemy.orm import ORMExecuteState, Session
from sqlalchemy.util import await_only

log = logging.getLogger(__name__)

# Table -> group. ``domains`` counts as accounts: renaming a domain renames users' domain_name by
# ON UPDATE CASCADE, a change the ORM never sees on the users table itself.
# ``accounts`` also holds what decides where an owner may run sessions (projects and their members,
# resource policies, scaling groups and their associations): all change rarely, and session creation
# caches what it reads of them.
TABLE_GROUPS: dict[str, str] = {
    "keypairs": "accounts",
    "users": "accounts",
    "domains": "accounts",
    "groups": "accounts",
    "association_groups_users": "accounts",
    "keypair_resource_policies": "accounts",
    "scaling_groups": "accounts",
    "sgroups_for_domains": "accounts",
    "sgroups_for_groups": "accounts",
    "sgroups_for_keypairs": "accounts",
    "images": "images",
    "image_aliases": "images",
    "vfolders": "vfolders",
    "vfolder_permissions": "vfolders",
    "vfolder_invitations": "vfolders",
    "sessions": "sessions",
    "kernels": "sessions",
}
# Tables no hot-path cache reads, so their changes move no generation: agents (heartbeats write them many
# times a second), dotfiles, resource presets and session templates (read per request), managers (the
# registry of manager processes, ADR 0014). A new table must go into one of the two (a unit test checks).
UNCACHED = frozenset({"agents", "dotfiles", "managers", "resource_presets", "session_templates"})
REDIS_PREFIX = "generation:"
MARKER_PREFIX = "generation."
_CHANGED = "changed_generation_groups"  # Session.info key: the groups this transaction changed

K = TypeVar("K")
V = TypeVar("V")


@dataclass
class _Propagation:
    """Where this process announces its changes to other processes."""

    state_dir: Path | None = None
    redis_url: str | None = None
    local: dict[str, int] = field(default_factory=dict)


_prop = _Propagation()


def configure_propagation(state_dir: str | os.PathLike[str] | None, redis_url: str | None) -> None:
    """Announce this process's changes through marker files in ``state_dir`` and through Redis (if given)."""
    _prop.state_dir = Path(state_dir) if state_dir else None
    _prop.redis_url = redis_url or None


def _marker(state_dir: Path | None, group: str) -> Path | None:
    return state_dir / f"{MARKER_PREFIX}{group}" if state_dir is not None else None


def _marker_identity(path: Path | None) -> tuple[int, int] | None:
    if path is None:
        return None
    try:
        st = os.stat(path)
    except FileNotFoundError:
        return None
    return st.st_ino, st.st_mtime_ns


def _replace_marker(path: Path) -> None:
    # A fresh file renamed over the old one: a new inode every time, so no change is missed however
    # coarse the file system's timestamps are.
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_name(f".{path.name}.{os.getpid()}")
    tmp.write_text(f"{datetime.now(UTC).isoformat()} pid {os.getpid()}\n")
    os.replace(tmp, path)


async def _incr_redis(url: str, groups: Iterable[str]) -> None:
    import redis.asyncio as aioredis

    client: Any = aioredis.from_url(url)
    try:
        async with client.pipeline(transaction=False) as pipe:
            for g in groups:
                pipe.incr(REDIS_PREFIX + g)
            await pipe.execute()
    finally:
        await client.aclose()


def changed(groups: Iterable[str]) -> None:
    """Move the generations of ``groups`` on. The session hooks call this after each commit that changed
    a watched table; call it directly after changing one some other way (raw SQL on a connection).

    With Redis configured it must run inside an ``AsyncSession`` operation (where ``await_only`` works);
    elsewhere only this process and the marker files learn of the change."""
    groups = sorted(set(groups))
    for g in groups:
        _prop.local[g] = _prop.local.get(g, 0) + 1
        marker = _marker(_prop.state_dir, g)
        if marker is not None:
            try:
                _replace_marker(marker)
            except OSError as e:
                log.warning("cannot update the generation marker %s: %s", marker, e)
    if _prop.redis_url and groups:
        incr = _incr_redis(_prop.redis_url, groups)
        try:
            await_only(incr)  # the hooks run inside AsyncSession's greenlet: this awaits on its event loop
        except MissingGreenlet:
            incr.close()
            log.warning("tables %s changed outside an async session; other managers were not told", groups)


def _mark(session: Session, table_name: str | None) -> None:
    group = TABLE_GROUPS.get(table_name or "")
    if group is not None:
        session.info.setdefault(_CHANGED, set()).add(group)


def _after_flush(session: Session, _ctx: Any) -> None:
    for obj in session.new:
        _mark(session, getattr(obj, "__tablename__", None))
    for obj in session.deleted:
        _mark(session, getattr(obj, "__tablename__", None))
    for obj in session.dirty:
        name = getattr(obj, "__tablename__", None)
        if name in TABLE_GROUPS and session.is_modified(obj, include_collections=False):
            _mark(session, name)


def _on_execute(state: ORMExecuteState) -> None:
    if state.is_select or state.execution_options.get("generation_neutral"):
        return
    table = getattr(state.statement, "table", None)
    _mark(state.session, getattr(table, "name", None))


def _after_commit(session: Session) -> None:
    groups = session.info.pop(_CHANGED, None)
    if groups:
        changed(groups)


def _after_rollback(session: Session) -> None:
    session.info.pop(_CHANGED, None)


class GenerationReader:
    """Reads the current generation of a group (local counter, marker identity, Redis counter)."""

    def __init__(self, state_dir: Path | None, redis_url: str | None) -> None:
        self._state_dir = state_dir
        self._redis: Any = None
        if redis_url:
            import redis.asyncio as aioredis

            pool = aioredis.BlockingConnectionPool.from_url(redis_url, max_connections=32, timeout=10)
            self._redis = aioredis.Redis(connection_pool=pool)

    async def current(self, group: str) -> tuple[Any, ...]:
        shared = await self._redis.get(REDIS_PREFIX + group) if self._redis is not None else None
        return _prop.local.get(group, 0), _marker_identity(_marker(self._state_dir, group)), shared

    async def close(self) -> None:
        if self._redis is not None:
            await self._redis.aclose()
            self._redis = None


def track_changes(session_class: type[Session]) -> None:
    """Make the sessions of ``session_class`` move the generations of the table groups their committed
    changes touch (``db.session_factory`` makes such sessions; other sessions are not watched)."""
    event.listen(session_class, "after_flush", _after_flush)
    event.listen(session_class, "do_orm_execute", _on_execute)
    event.listen(session_class, "after_commit", _after_commit)
    event.listen(session_class, "after_rollback", _after_rollback)


def propagating_reader(state_dir: str | os.PathLike[str] | None, redis_url: str | None) -> GenerationReader:
    """The manager's reader: this process announces its changes through ``state_dir`` and Redis (if given),
    and reads everyone's there."""
    configure_propagation(state_dir, redis_url)
    return GenerationReader(_prop.state_dir, _prop.redis_url)


class GenerationCache(Generic[K, V]):
    """Values by key, each tagged with the generation it was read under (bounded; cleared when full)."""

    def __init__(self, max_entries: int = 10000) -> None:
        self._max = max_entries
        self._entries: dict[K, tuple[tuple[Any, ...], V]] = {}

    def get(self, key: K, generation: tuple[Any, ...]) -> V | None:
        hit = self._entries.get(key)
        return hit[1] if hit is not None and hit[0] == generation else None

    def put(self, key: K, generation: tuple[Any, ...], value: V) -> None:
        if len(self._entries) >= self._max:
            self._entries.clear()
        self._entries[key] = (generation, value)

    def discard(self, key: K) -> None:
        self._entries.pop(key, None)
