"""Operator commands of the manager (``backend.ai mgr ...``): schema, fixtures and the server."""

from __future__ import annotations

import asyncio
from typing import Any

import click

from ai.backend.common.config import ConfigError, load_config

from .config import ManagerConfig


def _config(path: str | None) -> ManagerConfig:
    try:
        cfg = load_config(ManagerConfig, "manager", path)
    except ConfigError as e:
        raise click.ClickException(str(e)) from None
    from .generations import configure_propagation

    # Keypair/user changes made here must reach the running managers' caches at once (see generations.py).
    configure_propagation(cfg.manager.state_dir, cfg.redis.url or None)
    return cfg


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


def _run_db(config_path: str | None, fn: Any) -> Any:
    """Run ``fn(db)`` in one transaction; problems become one-line errors."""
    from ai.backend.common.problems import ProblemError

    from .db import create_engine, session_factory

    cfg = _config(config_path)

    async def _go() -> Any:
        engine = create_engine(cfg.db_url())
        try:
            async with session_factory(engine)() as db:
                result = await fn(db)
                await db.commit()
                return result
        finally:
            await engine.dispose()

    try:
        return asyncio.run(_go())
    except ProblemError as e:
        raise click.ClickException(e.detail or e.title) from None
    except OSError as e:
        raise click.ClickException(f"cannot reach the database: {e}") from None


@main.group()
def user() -> None:
    """Users (what an admin does before any web console exists)."""


@user.command("add")
@click.argument("email")
@click.option(
    "-p",
    "--password",
    prompt=True,
    hide_input=True,
    confirmation_prompt=True,
    help="The password (prompted when omitted).",
)
@click.option("-d", "--domain", default="default", show_default=True)
@click.option(
    "-r", "--role", type=click.Choice(["superadmin", "admin", "user", "monitor"]), default="user", show_default=True
)
@click.option("-u", "--username", default=None, help="Defaults to the e-mail address.")
@click.option("-n", "--full-name", default=None)
@click.option("-g", "--group", "groups", multiple=True, help="Group name or id to join (repeatable).")
@click.pass_obj
def user_add(
    config_path: str | None,
    email: str,
    password: str,
    domain: str,
    role: str,
    username: str | None,
    full_name: str | None,
    groups: tuple[str, ...],
) -> None:
    """Create a user and its main keypair, and print the keypair."""
    from .accounts import add_user

    async def _do(db: Any) -> tuple[str, str]:
        _, kp = await add_user(
            db,
            email=email,
            password=password,
            domain_name=domain,
            role=role,
            username=username,
            full_name=full_name,
            group_ids=list(groups),
        )
        return kp.access_key, kp.secret_key

    ak, sk = _run_db(config_path, _do)
    click.echo(f"✔ User {email} created.", err=True)
    click.echo(f"Access key: {ak}\nSecret key: {sk}")


@user.command("list")
@click.pass_obj
def user_list(config_path: str | None) -> None:
    """List users: e-mail, domain, role and status."""
    from sqlalchemy import select

    from .models import UserRow

    async def _do(db: Any) -> list[Any]:
        return list((await db.execute(select(UserRow).order_by(UserRow.domain_name, UserRow.email))).scalars().all())

    for u in _run_db(config_path, _do):
        click.echo(f"{u.email}\t{u.domain_name}\t{u.role}\t{u.status}")


@main.group()
def keypair() -> None:
    """Keypairs of existing users."""


@keypair.command("add")
@click.argument("email")
@click.option("--admin", "is_admin", is_flag=True, help="A privileged keypair (needs an admin role to matter).")
@click.option("--inactive", is_flag=True)
@click.option("--resource-policy", default="default", show_default=True)
@click.option("--rate-limit", type=click.IntRange(min=0), default=10000, show_default=True)
@click.pass_obj
def keypair_add(
    config_path: str | None, email: str, is_admin: bool, inactive: bool, resource_policy: str, rate_limit: int
) -> None:
    """Create another keypair for the user with EMAIL and print it."""
    from sqlalchemy import select

    from ai.backend.common.problems import NotFound

    from .accounts import add_keypair
    from .models import UserRow

    async def _do(db: Any) -> tuple[str, str]:
        u = (await db.execute(select(UserRow).where(UserRow.email == email))).scalar_one_or_none()
        if u is None:
            raise NotFound(f"No such user: {email!r}.")
        kp = await add_keypair(
            db, u, is_active=not inactive, is_admin=is_admin, resource_policy=resource_policy, rate_limit=rate_limit
        )
        return kp.access_key, kp.secret_key

    ak, sk = _run_db(config_path, _do)
    click.echo(f"✔ Keypair created for {email}.", err=True)
    click.echo(f"Access key: {ak}\nSecret key: {sk}")


@keypair.command("list")
@click.option("-e", "--email", default=None, help="Only this user's keypairs.")
@click.pass_obj
def keypair_list(config_path: str | None, email: str | None) -> None:
    """List keypairs (secret keys are not shown)."""
    from sqlalchemy import select

    from .models import KeyPairRow

    async def _do(db: Any) -> list[Any]:
        q = select(KeyPairRow).order_by(KeyPairRow.user_id, KeyPairRow.created_at)
        if email:
            q = q.where(KeyPairRow.user_id == email)
        return list((await db.execute(q)).scalars().all())

    for kp in _run_db(config_path, _do):
        flags = ",".join(f for f, on in (("active", kp.is_active), ("admin", kp.is_admin), ("main", kp.is_main)) if on)
        click.echo(f"{kp.access_key}\t{kp.user_id}\t{flags or '-'}\t{kp.resource_policy}")


@keypair.command("set-active")
@click.argument("access_key")
@click.argument("active", type=click.BOOL)
@click.pass_obj
def keypair_set_active(config_path: str | None, access_key: str, active: bool) -> None:
    """Activate (true) or deactivate (false) a keypair; deactivation applies to the next request."""
    from ai.backend.common.problems import NotFound

    from .models import KeyPairRow

    async def _do(db: Any) -> None:
        kp = await db.get(KeyPairRow, access_key)
        if kp is None:
            raise NotFound(f"No such keypair: {access_key!r}.")
        kp.is_active = active

    _run_db(config_path, _do)
    click.echo(f"✔ Keypair {access_key} is now {'active' if active else 'inactive'}.", err=True)


def _register_image_commands() -> None:
    """``mgr image ...`` lives in its own module (build, list, alias, forget kernel images)."""
    from .cli_image import image

    main.add_command(image)


_register_image_commands()


@main.command("start-server")
@click.option("--debug", is_flag=True)
@click.pass_obj
def start_server(config_path: str | None, debug: bool) -> None:
    """Run the manager in the foreground."""
    from .server import main as server_main

    server_main((["-f", config_path] if config_path else []) + (["--debug"] if debug else []))


if __name__ == "__main__":
    main(prog_name="backend.ai mgr")
