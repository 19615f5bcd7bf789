"""Alembic environment: runs migrations on the manager's async engine."""

from __future__ import annotations

import asyncio
from typing import Any

from alembic import context
from sqlalchemy.engine import Connection

from ai.backend.manager.db import create_engine
from ai.backend.manager.models import metadata

config = context.config


def _run(connection: Connection) -> None:
    sqlite = connection.dialect.name == "sqlite"
    if sqlite:
        # SQLite alters a table by copying it and dropping the original, which foreign keys forbid while
        # other rows refer to it; turn them off for the migration and check the result at the end.
        connection.exec_driver_sql("PRAGMA foreign_keys=OFF")
        # The sqlite3 module runs DDL outside any transaction; an explicit BEGIN makes the whole
        # migration one transaction, so a failure leaves the previous revision intact.
        connection.exec_driver_sql("BEGIN")
    context.configure(connection=connection, target_metadata=metadata, render_as_batch=True, transactional_ddl=True)
    with context.begin_transaction():
        context.run_migrations()
    if sqlite:
        broken = connection.exec_driver_sql("PRAGMA foreign_key_check").fetchall()
        if broken:
            raise RuntimeError(f"the migration left rows with dangling foreign keys: {broken[:5]}")


async def _main() -> None:
    engine = create_engine(config.get_main_option("sqlalchemy.url") or "")
    async with engine.connect() as conn:
        await conn.run_sync(_run)
        await conn.commit()
    await engine.dispose()


def run_migrations_online() -> Any:
    conn = config.attributes.get("connection")
    if conn is not None:
        _run(conn)
        return
    asyncio.run(_main())


run_migrations_online()
