"""The Alembic migrations build exactly the schema the SQLAlchemy models describe, on SQLite and PostgreSQL.

Each test gets an empty database (the ``db_url`` fixture), runs ``upgrade_to_head`` (what
``backend.ai mgr schema oneshot`` does) and compares the live schema with ``models.metadata`` through
Alembic's autogenerate comparison: tables, columns, types, nullability, server defaults, indexes,
unique constraints and foreign keys. No difference is ignored on either database.
"""

from __future__ import annotations

import asyncio
from collections.abc import Callable
from pprint import pformat
from typing import Any

import sqlalchemy as sa
from alembic.autogenerate import compare_metadata
from alembic.migration import MigrationContext
from alembic.script import ScriptDirectory
from sqlalchemy.engine import Connection

from ai.backend.manager.db import create_engine, session_factory
from ai.backend.manager.fixtures import populate_defaults
from ai.backend.manager.models import metadata
from ai.backend.manager.schema import alembic_config, upgrade_to_head


def _with_connection(url: str, fn: Callable[[Connection], Any]) -> Any:
    async def run() -> Any:
        engine = create_engine(url)
        try:
            async with engine.connect() as conn:
                return await conn.run_sync(fn)
        finally:
            await engine.dispose()

    return asyncio.run(run())


def _diff(url: str, target: sa.MetaData = metadata) -> list[Any]:
    def compare(conn: Connection) -> list[Any]:
        ctx = MigrationContext.configure(conn, opts={"compare_type": True, "compare_server_default": True})
        return list(compare_metadata(ctx, target))

    result: list[Any] = _with_connection(url, compare)
    return result


def _describe(diffs: list[Any]) -> str:
    """One line per difference: the operation, the table and column, and what each side has."""
    lines = []
    for d in diffs:
        for op in d if isinstance(d, list) else [d]:
            if op[0].startswith("modify_"):
                _, _, table, column, existing, db_value, model_value = op
                lines.append(
                    f"{op[0]} {table}.{column}: database has {_show(db_value)}, "
                    f"models have {_show(model_value)} ({existing.get('existing_type')})"
                )
            else:
                lines.append(f"{op[0]} {_show(op[1:])}")
    return "\n".join(lines)


def _show(value: Any) -> str:
    arg = getattr(value, "arg", None)  # a server DefaultClause: show its SQL text
    if arg is not None:
        return repr(str(getattr(arg, "text", arg)))
    return pformat(value, width=200)


def _snapshot(url: str) -> dict[str, Any]:
    """The schema as reflected, the Alembic revision and the row count of every table."""

    def snap(conn: Connection) -> dict[str, Any]:
        insp = sa.inspect(conn)
        tables: dict[str, Any] = {}
        for name in sorted(insp.get_table_names()):
            tables[name] = {
                "columns": [
                    (c["name"], str(c["type"]), c["nullable"], str(c.get("default"))) for c in insp.get_columns(name)
                ],
                "indexes": sorted(
                    (i["name"] or "", tuple(str(c) for c in i["column_names"]), bool(i["unique"]))
                    for i in insp.get_indexes(name)
                ),
                "foreign_keys": sorted(
                    (f["name"] or "", f["referred_table"], tuple(f["constrained_columns"]))
                    for f in insp.get_foreign_keys(name)
                ),
                "rows": conn.execute(sa.text(f'SELECT count(*) FROM "{name}"')).scalar_one(),
            }
        revision = MigrationContext.configure(conn).get_current_heads()
        return {"tables": tables, "revision": revision}

    result: dict[str, Any] = _with_connection(url, snap)
    return result


def _populate(url: str) -> None:
    async def run() -> None:
        engine = create_engine(url)
        try:
            async with session_factory(engine)() as db:
                await populate_defaults(db)
        finally:
            await engine.dispose()

    asyncio.run(run())


def test_migrations_build_the_models_schema(db_url: str) -> None:
    upgrade_to_head(db_url)
    diffs = _diff(db_url)
    assert not diffs, "the migrations and the models disagree:\n" + _describe(diffs)
    heads = ScriptDirectory.from_config(alembic_config(db_url)).get_heads()
    assert len(heads) == 1, f"the migrations have several heads: {heads}"
    assert _snapshot(db_url)["revision"] == tuple(heads)


def test_upgrade_twice_is_a_no_op(db_url: str) -> None:
    upgrade_to_head(db_url)
    _populate(db_url)  # rows must survive a second upgrade untouched
    before = _snapshot(db_url)
    assert before["tables"]["users"]["rows"] == 2 and before["tables"]["keypairs"]["rows"] == 2
    upgrade_to_head(db_url)
    after = _snapshot(db_url)
    assert after == before


def test_the_comparison_sees_drift(db_url: str) -> None:
    """The parity check is not vacuous: a model with an extra column and a missing index is reported."""
    upgrade_to_head(db_url)
    drifted = sa.MetaData(naming_convention=metadata.naming_convention)
    for table in metadata.sorted_tables:
        table.to_metadata(drifted)
    keypairs = drifted.tables["keypairs"]
    keypairs.append_column(sa.Column("drift_probe", sa.Integer, nullable=True))
    sessions = drifted.tables["sessions"]
    dropped = next(iter(sessions.indexes))
    sessions.indexes.discard(dropped)
    ops = [op for d in _diff(db_url, drifted) for op in (d if isinstance(d, list) else [d])]
    assert ("add_column", None, "keypairs", keypairs.c.drift_probe) in ops, _describe(ops)
    assert any(op[0] == "remove_index" and op[1].name == dropped.name for op in ops), _describe(ops)


_V1_ROWS = [
    "INSERT INTO domains (name, description, is_active, created_at, total_resource_slots, allowed_vfolder_hosts, "
    "allowed_docker_registries) VALUES ('lab', 'd', true, '2026-01-01 00:00:00', '{}', '[]', '[]')",
    "INSERT INTO scaling_groups (name, description, is_active, created_at, driver, driver_opts, scheduler, "
    "scheduler_opts) VALUES ('sg1', 's', true, '2026-01-01 00:00:00', 'static', '{}', 'fifo', '{}')",
    "INSERT INTO keypair_resource_policies (name, created_at, default_for_unspecified, total_resource_slots, "
    "max_session_lifetime, max_concurrent_sessions, max_containers_per_session, idle_timeout, max_vfolder_count, "
    "max_vfolder_size, allowed_vfolder_hosts) VALUES ('p', '2026-01-01 00:00:00', 'UNLIMITED', '{}', 0, 3, 1, 0, "
    "0, 0, '[]')",
    "INSERT INTO groups (id, name, description, is_active, created_at, domain_name, total_resource_slots, "
    "allowed_vfolder_hosts) VALUES ('11111111-1111-1111-1111-111111111111', 'g', 'g', true, "
    "'2026-01-01 00:00:00', 'lab', '{}', '[]')",
    "INSERT INTO users (uuid, username, email, password, need_password_change, full_name, description, status, "
    "status_info, role, domain_name, created_at) VALUES ('22222222-2222-2222-2222-222222222222', 'u', "
    "'u@lab.org', 'x', false, 'U', '', 'active', NULL, 'user', 'lab', '2026-01-01 00:00:00')",
    "INSERT INTO association_groups_users (group_id, user_id) VALUES ('11111111-1111-1111-1111-111111111111', "
    "'22222222-2222-2222-2222-222222222222')",
    'INSERT INTO keypairs (access_key, secret_key, user_id, "user", is_active, is_admin, is_main, created_at, '
    "modified_at, last_used, rate_limit, num_queries, resource_policy) VALUES ('AKIAOLDOLDOLDOLDOLD1', 's', "
    "'u@lab.org', '22222222-2222-2222-2222-222222222222', true, false, true, '2026-01-01 00:00:00', "
    "'2026-01-01 00:00:00', NULL, 100, 0, 'p')",
]


def test_a_populated_first_revision_migrates(db_url: str) -> None:
    """Data written by revision 0001 survives the upgrade (SQLite rebuilds tables others refer to)."""
    from alembic import command

    command.upgrade(alembic_config(db_url), "0001")

    def fill(conn: Connection) -> None:
        for stmt in _V1_ROWS:
            conn.exec_driver_sql(stmt)
        conn.commit()

    _with_connection(db_url, fill)
    upgrade_to_head(db_url)

    def read(conn: Connection) -> dict[str, Any]:
        q = conn.exec_driver_sql
        return {
            "group": q("SELECT name, domain_name, integration_id FROM groups").fetchall(),
            "member": q("SELECT count(*) FROM association_groups_users").scalar(),
            "keypair": q("SELECT access_key, rate_limit FROM keypairs").fetchall(),
            "sgroups": sorted(q("SELECT scaling_group, domain FROM sgroups_for_domains").fetchall()),
            "public": q("SELECT is_public, use_host_network FROM scaling_groups").fetchall(),
            "modified": q("SELECT modified_at FROM domains").scalar(),
            "bootstrap": q("SELECT bootstrap_script FROM users").fetchall(),
            "new_tables": [q(f"SELECT count(*) FROM {t}").scalar() for t in ("session_templates", "dotfiles")],
        }

    got = _with_connection(db_url, read)
    assert got["group"] == [("g", "lab", None)] and got["member"] == 1
    assert got["keypair"] == [("AKIAOLDOLDOLDOLDOLD1", 100)]
    assert got["sgroups"] == [("sg1", "lab")]  # every domain keeps every scaling group it could use before
    assert [tuple(bool(v) for v in row) for row in got["public"]] == [(True, False)]
    assert got["modified"] is not None
    assert got["bootstrap"] == [(None,)] and got["new_tables"] == [0, 0]  # revision 0003: users keep no script
    assert _diff(db_url) == []
