"""``backend.ai admin user info|list|add|update|delete``."""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

import click

from ...func.user import USER_ROLES, USER_STATUSES
from ._common import (
    Column,
    fetch_pages,
    paging_options,
    print_item,
    print_items,
    print_result,
    require_changes,
    resolve_group_id,
    run_api,
)

if TYPE_CHECKING:
    from ...session import AsyncSession

__all__ = ("COLUMNS", "LIST_COLUMNS", "user")

COLUMNS = (
    Column("uuid", "UUID"),
    Column("email", "Email"),
    Column("username", "Username"),
    Column("full_name", "Full Name"),
    Column("description", "Description"),
    Column("domain_name", "Domain"),
    Column("role", "Role"),
    Column("status", "Status"),
    Column("status_info", "Status Info"),
    Column("need_password_change", "Need Password Change?", "bool"),
    Column("created_at", "Created At"),
    Column("groups { id name }", "Groups", "groups"),
)
LIST_COLUMNS = tuple(
    c for c in COLUMNS if c.key in ("uuid", "email", "username", "domain_name", "role", "status", "groups")
)
FIELDS = tuple(c.field for c in COLUMNS)
_ROLE = click.Choice(USER_ROLES)
_STATUS = click.Choice(USER_STATUSES)


@click.group()
def user() -> None:
    """User administration commands (superadmins; others may see themselves)."""


@user.command()
@click.argument("email", required=False)
def info(email: str | None) -> None:
    """Show a user by EMAIL (yourself if omitted)."""
    item = run_api(lambda api: api.User.detail(email, fields=FIELDS))
    print_item(item, COLUMNS, not_found=f"No such user: {email or '(yourself)'}")


@user.command(name="list")
@click.option("-s", "--status", type=_STATUS, default=None, help="Only users with this status.")
@click.option("-g", "--group", "group_ref", metavar="GROUP", default=None, help="Only members of this group.")
@click.option("-d", "--domain", default=None, help="The domain to look up a group name in.")
@paging_options
def list_(
    status: str | None,
    group_ref: str | None,
    domain: str | None,
    filter_: str | None,
    order: str | None,
    offset: int,
    limit: int | None,
    all_: bool,
) -> None:
    """List users."""

    async def _list(api: AsyncSession) -> tuple[list[dict[str, Any]], int]:
        gid = None if group_ref is None else await resolve_group_id(api, group_ref, domain)
        return await fetch_pages(
            lambda off, size: api.User.paginated_list(
                status, gid, fields=FIELDS, page_offset=off, page_size=size, filter=filter_, order=order
            ),
            offset=offset,
            limit=limit,
            all_=all_,
        )

    items, total = run_api(_list)
    print_items(items, LIST_COLUMNS, total=total, offset=offset, empty="There are no matching users.", what="users")


@user.command()
@click.argument("domain_name", metavar="DOMAIN")
@click.argument("email")
@click.argument("password", required=False)
@click.option("-u", "--username", default=None, help="The username (default: the email).")
@click.option("-n", "--full-name", default=None, help="The user's full name.")
@click.option("-r", "--role", type=_ROLE, default="user", show_default=True, help="The user's role.")
@click.option("-s", "--status", type=_STATUS, default="active", show_default=True, help="The account status.")
@click.option("--need-password-change", is_flag=True, help="Ask the user to change the password at first login.")
@click.option("--description", default="", help="A description of the user.")
@click.option("-g", "--group", "groups", metavar="GROUP", multiple=True, help="A group to join (repeatable).")
def add(
    domain_name: str,
    email: str,
    password: str | None,
    username: str | None,
    full_name: str | None,
    role: str,
    status: str,
    need_password_change: bool,
    description: str,
    groups: tuple[str, ...],
) -> None:
    """Create a user in DOMAIN with EMAIL and PASSWORD (asked for if omitted)."""
    if "@" not in email:
        raise click.BadParameter(f"{email!r} is not an email address", param_hint="'EMAIL'")
    if password is None:
        password = click.prompt("Password", hide_input=True, confirmation_prompt=True, err=True)
    if not password:
        raise click.BadParameter("the password must not be empty", param_hint="'PASSWORD'")

    async def _add(api: AsyncSession) -> dict[str, Any]:
        group_ids = [await resolve_group_id(api, g, domain_name) for g in groups]
        return await api.User.create(
            domain_name,
            email,
            password,
            username=username,
            full_name=full_name,
            role=role,
            status=status,
            need_password_change=need_password_change,
            description=description,
            group_ids=group_ids,
        )

    def _show(res: Any) -> None:
        created = res.get("user") or {}
        if created.get("uuid"):
            click.echo(f"User UUID: {created['uuid']}")

    print_result(run_api(_add), f"User {email} is created.", failed=f"User {email} was not created", extra=_show)


@user.command()
@click.argument("email")
@click.option("-p", "--password", default=None, help="A new password.")
@click.option("-u", "--username", default=None, help="A new username.")
@click.option("-n", "--full-name", default=None, help="A new full name.")
@click.option("-d", "--domain-name", default=None, help="Move the user to this domain.")
@click.option("-r", "--role", type=_ROLE, default=None, help="A new role.")
@click.option("-s", "--status", type=_STATUS, default=None, help="A new account status.")
@click.option("--need-password-change/--no-need-password-change", default=None, help="Ask for a password change.")
@click.option("--description", default=None, help="A new description.")
@click.option("-g", "--group", "groups", metavar="GROUP", multiple=True, help="Replace the groups (repeatable).")
def update(
    email: str,
    password: str | None,
    username: str | None,
    full_name: str | None,
    domain_name: str | None,
    role: str | None,
    status: str | None,
    need_password_change: bool | None,
    description: str | None,
    groups: tuple[str, ...],
) -> None:
    """Change the user with EMAIL."""
    if password is not None and not password:
        raise click.BadParameter("the password must not be empty", param_hint="'-p' / '--password'")
    changes: dict[str, Any] = {
        "password": password,
        "username": username,
        "full_name": full_name,
        "domain_name": domain_name,
        "role": role,
        "status": status,
        "need_password_change": need_password_change,
        "description": description,
        "groups": groups,
    }
    require_changes(changes)
    del changes["groups"]

    async def _update(api: AsyncSession) -> dict[str, Any]:
        group_ids = [await resolve_group_id(api, g, domain_name) for g in groups] if groups else None
        return await api.User.update(email, **changes, group_ids=group_ids)

    print_result(run_api(_update), f"User {email} is updated.", failed=f"User {email} was not updated")


@user.command()
@click.argument("email")
def delete(email: str) -> None:
    """Delete the user with EMAIL (the account becomes "deleted" and its keypairs inactive)."""
    result = run_api(lambda api: api.User.delete(email))
    print_result(result, f"User {email} is deleted.", failed=f"User {email} was not deleted")
