"""``backend.ai app`` (a local proxy to an app of a session) and ``backend.ai apps`` (what apps it has).

Both also live under ``backend.ai session``. ``app`` listens on ``-b [HOST:]PORT`` (default
127.0.0.1:8080) and leads every connection through its own ``tcpproxy`` WebSocket to the app
(:mod:`ai.backend.client.app_proxy`); ``--app-proxy`` instead asks the server's app proxy for a
browser link (``POST /session/:id/start-service``). Only click and the standard library are imported
until a command runs, so ``--help`` stays fast.
"""

from __future__ import annotations

import json
import os
import sys
from collections.abc import Callable, Sequence
from typing import TYPE_CHECKING, Any

import click

from ..app_options import (
    AppArgumentValue,
    format_app_url,
    parse_app_argument,
    parse_app_env,
    parse_bind,
    url_host,
    url_scheme,
)
from .core import get_cli_context
from .pretty import print_fail, print_info, print_warn

if TYPE_CHECKING:
    from ..func.session import ComputeSession

__all__ = (
    "APP_ARG_TYPE",
    "APP_ENV_TYPE",
    "BIND_TYPE",
    "app",
    "apps",
    "find_app",
    "has_display",
    "open_in_browser",
)


class _ParsedType(click.ParamType):
    """A click type from a pure parser that raises ``ValueError`` (a bad value is a one-line usage error)."""

    def __init__(self, name: str, parse: Callable[[str], Any]) -> None:
        self.name = name
        self._parse = parse

    def convert(self, value: Any, param: click.Parameter | None, ctx: click.Context | None) -> Any:
        if not isinstance(value, str):
            return value  # already converted (a default given as a tuple)
        try:
            return self._parse(value)
        except ValueError as e:
            self.fail(str(e), param, ctx)


BIND_TYPE = _ParsedType("[HOST:]PORT", parse_bind)
"""``-b/--bind [HOST:]PORT`` → ``(host, port)``."""
APP_ARG_TYPE = _ParsedType("ARG", parse_app_argument)
"""``--arg "--option value"`` → ``(flag, None | str | [str])``."""
APP_ENV_TYPE = _ParsedType("NAME=VALUE", parse_app_env)
"""``-e/--env NAME=VALUE`` → ``(name, value)``."""


def echo_info(message: str) -> None:
    """``∙ message`` on **stdout** (the result of the command, as the 22.03 CLI prints it)."""
    head, *rest = message.split("\n")
    click.echo(click.style("∙", fg="bright_cyan") + " " + head)
    for line in rest:
        click.echo("  " + line)


def has_display() -> bool:
    """Whether a browser window can be opened here (macOS, Windows, X11/Wayland, or ``$BROWSER`` set)."""
    if sys.platform in ("darwin", "win32") or os.environ.get("BROWSER"):
        return True
    return bool(os.environ.get("DISPLAY") or os.environ.get("WAYLAND_DISPLAY"))


def open_in_browser(url: str) -> None:
    """Open *url* in a web browser when there is a display; otherwise say to open it by hand."""
    if not has_display():
        print_info(f"No display to open a browser on; open {url} yourself.")
        return
    import webbrowser

    try:
        opened = webbrowser.open(url)
    except webbrowser.Error:
        opened = False
    if not opened:
        print_warn(f"Could not start a web browser; open {url} yourself.")


def _run(factory: Callable[[], Any]) -> Any:
    import asyncio

    get_cli_context().get_config()
    return asyncio.run(factory())


async def find_app(compute_session: ComputeSession, app_name: str) -> dict[str, Any]:
    """The app *app_name* of the session; a one-line ``BackendClientError`` when there is none."""
    from ..exceptions import BackendClientError, BackendError

    all_apps = await compute_session.stream_app_info()
    for info in all_apps:
        if info.get("name") == app_name:
            return info
    status: str | None = None
    try:
        status = str((await compute_session.get_info()).get("status") or "") or None
    except BackendError:
        pass
    if status is not None and status != "RUNNING":
        raise BackendClientError(f'The session "{compute_session.ref}" is not running (it is {status}).')
    names = ", ".join(str(a.get("name")) for a in all_apps)
    provided = f" It provides: {names}." if names else ""
    raise BackendClientError(f'The app "{app_name}" is not supported by the session.{provided}')


# ---- app ----


@click.command()
@click.argument("session_name", metavar="SESSION")
@click.argument("app_name", metavar="APP")
@click.option(
    "-b",
    "--bind",
    type=BIND_TYPE,
    default="127.0.0.1:8080",
    show_default=True,
    metavar="[HOST:]PORT",
    help="The local address to listen on (a bare PORT means 127.0.0.1:PORT; 0 picks a free port).",
)
@click.option(
    "--arg",
    "arguments",
    type=APP_ARG_TYPE,
    multiple=True,
    metavar='"--OPTION [VALUE...]"',
    help="An extra command-line option of the app (one of its allowed arguments; see 'apps'). Repeatable.",
)
@click.option(
    "-e",
    "--env",
    "envs",
    type=APP_ENV_TYPE,
    multiple=True,
    metavar="NAME=VALUE",
    help="An environment variable of the app (one of its allowed ones; see 'apps'). Repeatable.",
)
@click.option(
    "--port",
    "container_port",
    type=click.IntRange(1, 65535),
    default=None,
    metavar="CONTAINER_PORT",
    help="Which container port of an app that has several (default: its first).",
)
@click.option(
    "--open",
    "open_browser",
    is_flag=True,
    help="Open the app in a web browser (web apps, when a display is available).",
)
@click.option(
    "--app-proxy",
    "via_app_proxy",
    is_flag=True,
    help="No local proxy: print a one-use browser link through the server's app proxy and exit.",
)
@click.option("--redirect", metavar="PATH", default=None, help="With --app-proxy: the path to land on, e.g. /lab.")
@click.option("--owner", "--owner-access-key", "owner", metavar="ACCESS_KEY", help="The session's owner (admins).")
def app(
    session_name: str,
    app_name: str,
    bind: tuple[str, int],
    arguments: tuple[tuple[str, AppArgumentValue], ...],
    envs: tuple[tuple[str, str], ...],
    container_port: int | None,
    open_browser: bool,
    via_app_proxy: bool,
    redirect: str | None,
    owner: str | None,
) -> None:
    """Run a local proxy to an app (service port) of a compute session.

    Every connection to the local address reaches the app, as if it ran here: a web app such as
    jupyter or ttyd in a browser, sshd with ssh (or use 'backend.ai ssh'). Ctrl-C stops the proxy.

    \b
    SESSION: the session name (or ID).
    APP: the app's name (see 'backend.ai apps SESSION -l').
    """
    if redirect is not None and not via_app_proxy:
        raise click.UsageError("--redirect goes with --app-proxy.")
    host, port = bind
    args_map = dict(arguments)
    env_map = dict(envs)

    async def _main() -> None:
        from ..session import AsyncSession

        async with AsyncSession() as api:
            cs = api.ComputeSession(session_name, owner)
            info = await find_app(cs, app_name)
            if via_app_proxy:
                await _print_app_proxy_link(cs, app_name, container_port, env_map, args_map, redirect, open_browser)
            else:
                await _serve(api, cs, info, host, port, container_port, env_map, args_map, open_browser)

    _run(_main)


async def _print_app_proxy_link(
    cs: ComputeSession,
    app_name: str,
    container_port: int | None,
    envs: dict[str, str],
    arguments: dict[str, AppArgumentValue],
    redirect: str | None,
    open_browser: bool,
) -> None:
    from ..exceptions import BackendClientError

    result = await cs.start_service(app_name, port=container_port, envs=envs, arguments=arguments, redirect=redirect)
    url = result.get("url")
    if not url:
        raise BackendClientError(f"The server gave no link to the app: {result!r}")
    if get_cli_context().json_output:
        click.echo(json.dumps({"session": cs.ref, "app": app_name, "url": url}))
    else:
        echo_info(f'A link to the application "{app_name}" provided by the session "{cs.ref}":\n{url}')
        print_info("The link works once, within a minute; run the command again for another.")
    if open_browser:
        open_in_browser(str(url))


async def _serve(
    api: Any,
    cs: ComputeSession,
    info: dict[str, Any],
    host: str,
    port: int,
    container_port: int | None,
    envs: dict[str, str],
    arguments: dict[str, AppArgumentValue],
    open_browser: bool,
) -> None:
    import asyncio
    import signal

    from ..app_proxy import LocalAppProxy
    from ..exceptions import BackendClientError

    app_name = str(info["name"])
    protocol = str(info.get("protocol") or "tcp")
    proxy = LocalAppProxy(
        api,
        cs,
        app_name,
        host=host,
        port=port,
        container_port=container_port,
        envs=envs,
        arguments=arguments,
        on_error=lambda msg: print_fail(f'The app "{app_name}" refused a connection: {msg}'),
    )
    try:
        await proxy.start()
    except OSError as e:
        why = e.strerror or str(e)
        raise BackendClientError(f"Cannot listen on {url_host(host)}:{port}: {why}") from None
    stop = asyncio.Event()
    loop = asyncio.get_running_loop()
    for sig in (signal.SIGINT, signal.SIGTERM):
        loop.add_signal_handler(sig, stop.set)
    try:
        bound = proxy.bound_port
        url = format_app_url(info.get("url_template"), protocol, host, bound)
        if get_cli_context().json_output:
            doc = {"session": cs.ref, "app": app_name, "protocol": protocol, "host": host, "port": bound, "url": url}
            click.echo(json.dumps(doc))
        else:
            echo_info(
                f'A local proxy to the application "{app_name}" provided by the session "{cs.ref}" '
                f"is available at:\n{url}"
            )
        sys.stdout.flush()
        if host == "0.0.0.0":
            print_warn('NOTE: Replace "0.0.0.0" with the actual hostname you use to connect with the CLI app proxy.')
        if open_browser:
            if url_scheme(protocol) != "http":
                print_warn(f'--open opens web apps only; "{app_name}" is a {protocol} app.')
            else:
                local = host if host not in ("0.0.0.0", "::") else "127.0.0.1"
                await loop.run_in_executor(None, open_in_browser, format_app_url(None, protocol, local, bound))
        await stop.wait()
    finally:
        for sig in (signal.SIGINT, signal.SIGTERM):
            loop.remove_signal_handler(sig)
        print_info("Shutting down....")
        await proxy.close()
        print_info(f'The local proxy to "{app_name}" has terminated.')


# ---- apps ----


def _select(all_apps: Sequence[dict[str, Any]], names: Sequence[str]) -> list[dict[str, Any]]:
    if not names:
        return list(all_apps)
    from ..exceptions import BackendClientError

    by_name = {str(a.get("name")): a for a in all_apps}
    missing = [n for n in names if n not in by_name]
    if missing:
        raise BackendClientError(f'The app "{missing[0]}" is not supported by the session.')
    return [by_name[n] for n in dict.fromkeys(names)]


def _join(value: Any) -> str:
    if isinstance(value, (list, tuple)):
        return ", ".join(str(v) for v in value) or "(none)"
    return str(value)


@click.command()
@click.argument("session_name", metavar="SESSION")
@click.argument("app_names", metavar="[APP]...", nargs=-1)
@click.option("-l", "--list-names", "list_names", is_flag=True, help="Print only the names of the apps.")
@click.option("--owner", "--owner-access-key", "owner", metavar="ACCESS_KEY", help="The session's owner (admins).")
def apps(session_name: str, app_names: tuple[str, ...], list_names: bool, owner: str | None) -> None:
    """List the apps of a compute session, with the arguments and environment variables each accepts.

    \b
    SESSION: the session name (or ID).
    APP: only these apps (default: all of them).
    """

    async def _fetch() -> list[dict[str, Any]]:
        from ..session import AsyncSession

        async with AsyncSession() as api:
            return await api.ComputeSession(session_name, owner).stream_app_info()

    selected = _select(_run(_fetch), app_names)
    if get_cli_context().json_output:
        click.echo(json.dumps([a["name"] for a in selected] if list_names else selected, indent=2))
        return
    if list_names:
        if selected:
            names = ", ".join(str(a["name"]) for a in selected)
            echo_info(f"This session provides the following app services: {names}")
        else:
            echo_info("This session provides no app services.")
        return
    for service in selected:
        has_arguments = "allowed_arguments" in service
        has_envs = "allowed_envs" in service
        if not (has_arguments or has_envs):
            echo_info(f"Service {service['name']} does not have customizable arguments.")
            continue
        echo_info(f"Information for service {service['name']}:")
        if has_arguments:
            click.echo(f"\tAvailable arguments: {_join(service['allowed_arguments'])}")
        if has_envs:
            click.echo(f"\tAvailable environment variables: {_join(service['allowed_envs'])}")
