"""Table generations: which committed changes move a group's generation on, and the cache that uses them."""

from __future__ import annotations

import subprocess
import sys
from collections.abc import AsyncIterator
from pathlib import Path
from typing import Any

import pytest
from sqlalchemy import select, update
from sqlalchemy.ext.asyncio import AsyncSession, async_sessionmaker

from ai.backend.manager import generations
from ai.backend.manager.db import create_engine, session_factory
from ai.backend.manager.fixtures import USER, populate_defaults
from ai.backend.manager.generations import GenerationCache, GenerationReader
from ai.backend.manager.models import DomainRow, KeyPairRow
from ai.backend.manager.models.base import Base


@pytest.fixture
async def db(tmp_path: Path) -> AsyncIterator[async_sessionmaker[AsyncSession]]:
    engine = create_engine(f"sqlite+aiosqlite:///{tmp_path}/gen.db")
    async with engine.begin() as conn:
        await conn.run_sync(Base.metadata.create_all)
    factory = session_factory(engine)
    async with factory() as s:
        await populate_defaults(s)
    generations.configure_propagation(tmp_path / "state", None)
    yield factory
    generations.configure_propagation(None, None)
    await engine.dispose()


async def _gens(reader: GenerationReader) -> dict[str, Any]:
    return {g: await reader.current(g) for g in ("accounts", "sessions")}


async def test_orm_change_moves_only_its_group(db: async_sessionmaker[AsyncSession], tmp_path: Path) -> None:
    reader = GenerationReader(tmp_path / "state", None)
    before = await _gens(reader)
    async with db() as s:
        kp = await s.get(KeyPairRow, USER["access_key"])
        assert kp is not None
        kp.is_active = False
        await s.commit()
    after = await _gens(reader)
    assert after["accounts"] != before["accounts"] and after["sessions"] == before["sessions"]
    assert (tmp_path / "state" / "generation.accounts").exists()


async def test_bulk_update_moves_it_and_neutral_statements_do_not(
    db: async_sessionmaker[AsyncSession], tmp_path: Path
) -> None:
    reader = GenerationReader(tmp_path / "state", None)
    g0 = await reader.current("accounts")
    async with db() as s:
        await s.execute(update(KeyPairRow).where(KeyPairRow.access_key == USER["access_key"]).values(rate_limit=7))
        await s.commit()
    g1 = await reader.current("accounts")
    assert g1 != g0
    async with db() as s:
        await s.execute(
            update(KeyPairRow).values(num_queries=KeyPairRow.num_queries + 1).execution_options(generation_neutral=True)
        )
        await s.commit()
    assert await reader.current("accounts") == g1


async def test_a_domain_rename_moves_accounts(db: async_sessionmaker[AsyncSession], tmp_path: Path) -> None:
    # users.domain_name follows a rename by ON UPDATE CASCADE, behind the ORM's back.
    reader = GenerationReader(tmp_path / "state", None)
    g0 = await reader.current("accounts")
    async with db() as s:
        s.add(DomainRow(name="before"))
        await s.commit()
    g1 = await reader.current("accounts")
    async with db() as s:
        await s.execute(update(DomainRow).where(DomainRow.name == "before").values(name="after"))
        await s.commit()
    assert len({g0, g1, await reader.current("accounts")}) == 3


async def test_rollback_reads_and_no_op_writes_do_not_move_it(
    db: async_sessionmaker[AsyncSession], tmp_path: Path
) -> None:
    reader = GenerationReader(tmp_path / "state", None)
    g0 = await reader.current("accounts")
    async with db() as s:
        kp = await s.get(KeyPairRow, USER["access_key"])
        assert kp is not None
        kp.is_active = False
        await s.flush()
        await s.rollback()
    async with db() as s:
        (await s.execute(select(KeyPairRow))).scalars().all()
        kp = await s.get(KeyPairRow, USER["access_key"])
        assert kp is not None
        kp.is_active = kp.is_active  # set to the same value: nothing to re-read
        await s.commit()
    assert await reader.current("accounts") == g0


async def test_another_process_is_seen_through_the_marker(db: async_sessionmaker[AsyncSession], tmp_path: Path) -> None:
    reader = GenerationReader(tmp_path / "state", None)
    g0 = await reader.current("accounts")
    script = f"""
import asyncio
from sqlalchemy import update
from ai.backend.manager import generations
from ai.backend.manager.db import create_engine, session_factory
from ai.backend.manager.models import KeyPairRow

async def main():
    generations.configure_propagation({str(tmp_path / "state")!r}, None)
    engine = create_engine("sqlite+aiosqlite:///{tmp_path}/gen.db")
    async with session_factory(engine)() as s:
        await s.execute(update(KeyPairRow).values(is_active=False))
        await s.commit()
    await engine.dispose()

asyncio.run(main())
"""
    subprocess.run([sys.executable, "-c", script], check=True, timeout=60)
    g1 = await reader.current("accounts")
    assert g1 != g0 and g1[0] == g0[0]  # the local counter did not move: the marker told


def test_cache_entries_are_used_only_under_their_generation() -> None:
    cache: GenerationCache[str, int] = GenerationCache(max_entries=2)
    cache.put("a", (1, None, None), 10)
    assert cache.get("a", (1, None, None)) == 10
    assert cache.get("a", (2, None, None)) is None
    cache.put("b", (1, None, None), 20)
    cache.put("c", (1, None, None), 30)  # full: cleared first
    assert cache.get("a", (1, None, None)) is None and cache.get("c", (1, None, None)) == 30
    cache.discard("c")
    assert cache.get("c", (1, None, None)) is None


def test_every_table_is_watched_or_declared_uncached() -> None:
    from ai.backend.manager.models import metadata

    tables = set(metadata.tables)
    assert set(generations.TABLE_GROUPS) | generations.UNCACHED == tables, (
        "a table is neither in generations.TABLE_GROUPS nor in UNCACHED: "
        f"{sorted(tables - set(generations.TABLE_GROUPS) - generations.UNCACHED)}"
    )
    assert not set(generations.TABLE_GROUPS) & generations.UNCACHED


async def test_sessions_not_made_by_session_factory_move_no_generation(
    db: async_sessionmaker[AsyncSession], tmp_path: Path
) -> None:
    reader = GenerationReader(tmp_path / "state", None)
    g0 = await reader.current("accounts")
    engine = db.kw["bind"]
    async with AsyncSession(engine) as s:  # a plain session: its changes are not watched
        await s.execute(update(KeyPairRow).where(KeyPairRow.access_key == USER["access_key"]).values(rate_limit=9))
        await s.commit()
    assert await reader.current("accounts") == g0
    async with db() as s:
        await s.execute(update(KeyPairRow).where(KeyPairRow.access_key == USER["access_key"]).values(rate_limit=8))
        await s.commit()
    assert await reader.current("accounts") != g0
