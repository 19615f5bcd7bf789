"""Operator commands of the manager (``backend.ai mgr ...``): schema, fixtures and the server."""

from __future__ import annotations

import asyncio

import click

from ai.backend.common.config import ConfigError, load_config

from .config import ManagerConfig


def _config(path: str | None) -> ManagerConfig:
    try:
        return load_config(ManagerConfig, "manager", path)
    except ConfigError as e:
        raise click.ClickException(str(e)) from None


@click.group()
@click.option("-f", "--config", "config_path", default=None, help="Path to manager.toml.")
@click.pass_context
def main(ctx: click.Context, config_path: str | None) -> None:
    """Manager operator commands."""
    ctx.obj = config_path


@main.group()
def schema() -> None:
    """Database schema management."""


@schema.command()
@click.pass_obj
def oneshot(config_path: str | None) -> None:
    """Create the schema or migrate it to the newest revision (safe to repeat)."""
    from .schema import upgrade_to_head

    cfg = _config(config_path)
    upgrade_to_head(cfg.db_url())
    click.echo("✔ Schema is at the newest revision.", err=True)


@main.group()
def fixture() -> None:
    """Fixture data."""


@fixture.command()
@click.pass_obj
def populate(config_path: str | None) -> None:
    """Insert the documented default domain, group, scaling group, policy, admin and user."""
    from .db import create_engine, session_factory
    from .fixtures import populate_defaults

    cfg = _config(config_path)

    async def _run() -> None:
        engine = create_engine(cfg.db_url())
        async with session_factory(engine)() as db:
            await populate_defaults(db)
        await engine.dispose()

    asyncio.run(_run())
    click.echo("✔ Default fixtures are in place.", err=True)


@main.command("start-server")
@click.option("--debug", is_flag=True)
@click.pass_obj
def start_server(config_path: str | None, debug: bool) -> None:
    """Run the manager in the foreground."""
    from .server import main as server_main

    server_main((["-f", config_path] if config_path else []) + (["--debug"] if debug else []))


if __name__ == "__main__":
    main(prog_name="backend.ai mgr")
