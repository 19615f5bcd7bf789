"""``backend.ai update-password``: change your own password."""

from __future__ import annotations

import click

from .admin._common import print_result, run_api

__all__ = ("update_password",)


@click.command(name="update-password")
@click.argument("old_password", required=False)
@click.argument("new_password", required=False)
@click.argument("new_password2", required=False)
def update_password(old_password: str | None, new_password: str | None, new_password2: str | None) -> None:
    """Change your password (the passwords are asked for if not given).

    \b
    OLD_PASSWORD: your current password.
    NEW_PASSWORD, NEW_PASSWORD2: the new password, twice.
    """
    if old_password is None:
        old_password = click.prompt("Current password", hide_input=True, err=True)
    if new_password is None:
        new_password = click.prompt("New password", hide_input=True, err=True)
        if new_password2 is None:
            new_password2 = click.prompt("New password (again)", hide_input=True, err=True)
    elif new_password2 is None:
        new_password2 = click.prompt("New password (again)", hide_input=True, err=True)
    if not new_password:
        raise click.BadParameter("the new password must not be empty", param_hint="'NEW_PASSWORD'")
    if new_password != new_password2:
        raise click.BadParameter("the new password and its confirmation do not match", param_hint="'NEW_PASSWORD2'")
    run_api(lambda api: api.Auth.update_password(old_password, new_password, new_password2))
    print_result({"ok": True, "msg": "success"}, "Password updated.")
