"""``backend.ai admin keypair info|list|add|update|delete|activate|deactivate``."""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

import click

from ._common import (
    Column,
    fetch_pages,
    paging_options,
    print_item,
    print_items,
    print_result,
    require_changes,
    run_api,
)

if TYPE_CHECKING:
    from ...session import AsyncSession

__all__ = ("COLUMNS", "LIST_COLUMNS", "keypair")

COLUMNS = (
    Column("user_id", "Email"),
    Column("access_key", "Access Key"),
    Column("secret_key", "Secret Key"),
    Column("is_active", "Active?", "bool"),
    Column("is_admin", "Admin?", "bool"),
    Column("is_main", "Main?", "bool"),
    Column("resource_policy", "Resource Policy"),
    Column("rate_limit", "Rate Limit"),
    Column("num_queries", "Queries"),
    Column("concurrency_used", "Sessions Now"),
    Column("created_at", "Created At"),
    Column("last_used", "Last Used"),
)
LIST_COLUMNS = tuple(
    c
    for c in COLUMNS
    if c.key in ("user_id", "access_key", "secret_key", "is_active", "is_admin", "resource_policy", "created_at")
)
FIELDS = tuple(c.field for c in COLUMNS)
LIST_FIELDS = tuple(c.field for c in LIST_COLUMNS)


@click.group()
def keypair() -> None:
    """Keypair administration commands (``info`` works for everyone on their own keypair)."""


@keypair.command()
@click.argument("access_key", required=False)
def info(access_key: str | None) -> None:
    """Show a keypair (your own if ACCESS_KEY is omitted)."""
    item = run_api(lambda api: api.KeyPair(access_key).info(fields=FIELDS))
    print_item(item, COLUMNS, not_found=f"No such keypair: {access_key or '(yours)'}")


@keypair.command(name="list")
@click.option("-u", "--user-id", metavar="EMAIL", default=None, help="Only the keypairs of this user.")
@click.option("--active/--inactive", "is_active", default=None, help="Only active (or inactive) keypairs.")
@click.option("-d", "--domain", default=None, help="Only the keypairs of users in this domain.")
@paging_options
def list_(
    user_id: str | None,
    is_active: bool | None,
    domain: str | None,
    filter_: str | None,
    order: str | None,
    offset: int,
    limit: int | None,
    all_: bool,
) -> None:
    """List keypairs."""

    async def _list(api: AsyncSession) -> tuple[list[dict[str, Any]], int]:
        return await fetch_pages(
            lambda off, size: api.KeyPair.paginated_list(
                is_active,
                domain,
                user_id=user_id,
                fields=LIST_FIELDS,
                page_offset=off,
                page_size=size,
                filter=filter_,
                order=order,
            ),
            offset=offset,
            limit=limit,
            all_=all_,
        )

    items, total = run_api(_list)
    print_items(
        items, LIST_COLUMNS, total=total, offset=offset, empty="There are no matching keypairs.", what="keypairs"
    )


@keypair.command()
@click.argument("user_id", metavar="EMAIL")
@click.argument("resource_policy", default="default")
@click.option("-a", "--admin", "is_admin", is_flag=True, help="Make it an admin keypair.")
@click.option("-i", "--inactive", is_flag=True, help="Create the keypair inactive.")
@click.option(
    "-r",
    "--rate-limit",
    type=click.IntRange(min=0),
    default=5000,
    show_default=True,
    help="Requests allowed per 15 minutes.",
)
def add(user_id: str, resource_policy: str, is_admin: bool, inactive: bool, rate_limit: int) -> None:
    """Create a keypair for the user with EMAIL (RESOURCE_POLICY: default "default").

    Prints the new access key and secret key.
    """
    result = run_api(
        lambda api: api.KeyPair.create(
            user_id,
            is_active=not inactive,
            is_admin=is_admin,
            resource_policy=resource_policy,
            rate_limit=rate_limit,
            fields=("access_key", "secret_key"),
        )
    )

    def _show(res: Any) -> None:
        created = res.get("keypair") or {}
        click.echo(f"Access Key: {created.get('access_key')}")
        click.echo(f"Secret Key: {created.get('secret_key')}")

    print_result(
        result, f"Keypair is created for {user_id}.", failed=f"No keypair was created for {user_id}", extra=_show
    )


@keypair.command()
@click.argument("access_key")
@click.option("--resource-policy", default=None, help="A new resource policy.")
@click.option("--admin/--no-admin", "is_admin", default=None, help="Make it an admin keypair or a normal one.")
@click.option("--active/--inactive", "is_active", default=None, help="Activate or deactivate the keypair.")
@click.option("-r", "--rate-limit", type=click.IntRange(min=0), default=None, help="Requests allowed per 15 minutes.")
def update(
    access_key: str,
    resource_policy: str | None,
    is_admin: bool | None,
    is_active: bool | None,
    rate_limit: int | None,
) -> None:
    """Change the keypair ACCESS_KEY."""
    changes: dict[str, Any] = {
        "resource_policy": resource_policy,
        "is_admin": is_admin,
        "is_active": is_active,
        "rate_limit": rate_limit,
    }
    require_changes(changes)
    result = run_api(lambda api: api.KeyPair.update(access_key, **changes))
    print_result(result, f"Keypair {access_key} is updated.", failed=f"Keypair {access_key} was not updated")


@keypair.command()
@click.argument("access_key")
def delete(access_key: str) -> None:
    """Delete the keypair ACCESS_KEY."""
    result = run_api(lambda api: api.KeyPair.delete(access_key))
    print_result(result, f"Keypair {access_key} is deleted.", failed=f"Keypair {access_key} was not deleted")


@keypair.command()
@click.argument("access_key")
def activate(access_key: str) -> None:
    """Activate the keypair ACCESS_KEY."""
    result = run_api(lambda api: api.KeyPair.activate(access_key))
    print_result(result, f"Keypair {access_key} is activated.", failed=f"Keypair {access_key} was not activated")


@keypair.command()
@click.argument("access_key")
def deactivate(access_key: str) -> None:
    """Deactivate the keypair ACCESS_KEY (it can no longer make API requests)."""
    result = run_api(lambda api: api.KeyPair.deactivate(access_key))
    print_result(result, f"Keypair {access_key} is deactivated.", failed=f"Keypair {access_key} was not deactivated")
