"""``backend.ai login``, ``logout`` (session mode, through a webserver) and ``update-password``."""

from __future__ import annotations

import click

from .admin._common import print_result, run_api

__all__ = ("login", "logout", "update_password")


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


def _require_session_mode(what: str) -> None:
    from .core import get_cli_context

    conf = get_cli_context().get_config()
    if conf.endpoint_type != "session":
        raise click.UsageError(
            f'To {what}, your endpoint type must be "session": set BACKEND_ENDPOINT_TYPE=session '
            "and BACKEND_ENDPOINT to the webserver's URL."
        )


@click.command()
@click.option(
    "-u", "--username", "--user-id", "username", default=None, help="Your email or user name (asked for if not given)."
)
@click.option("--password-stdin", is_flag=True, help="Read the password from the first line of stdin.")
def login(username: str | None, password_stdin: bool) -> None:
    """Log in to the webserver (session mode); the login cookie is kept for later commands."""
    import sys

    from ..exceptions import BackendAPIError
    from .pretty import print_done, print_fail, with_request_id

    _require_session_mode("log in")
    if username is None:
        username = click.prompt("User ID", err=True)
    if password_stdin:
        password = sys.stdin.readline().rstrip("\n")
    else:
        password = click.prompt("Password", hide_input=True, err=True)
    try:
        answer = run_api(lambda api: api.Auth.login(username, password))
    except BackendAPIError as e:
        print_fail(with_request_id(f"Login failed: {e}", e))
        sys.exit(1)
    if not answer.get("authenticated"):
        print_fail("Login failed.")
        sys.exit(1)
    print_done("Login succeeded.")


@click.command()
def logout() -> None:
    """Log out of the webserver (session mode) and forget the login cookie."""
    from .pretty import print_done

    _require_session_mode("log out")
    run_api(lambda api: api.Auth.logout())
    print_done("Logout done.")
