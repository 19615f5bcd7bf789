"""The ``backend.ai`` entry point.

This module imports nothing but the standard library, so that ``backend.ai --help`` is
answered from the static command table below without loading click.  Everything else is
handed to the click group in :mod:`ai.backend.client.cli.core`, whose subcommands are in
turn imported only when invoked.
"""

from __future__ import annotations

import sys

TYPE_CHECKING = False  # avoids importing typing, to keep ``--help`` cheap
if TYPE_CHECKING:
    from collections.abc import Sequence
    from typing import Any

__all__ = ("COMMANDS", "CommandSpec", "main", "render_fast_help")


class CommandSpec:
    """Where a lazily loaded command lives and its one-line help."""

    __slots__ = ("aliases", "help", "target")

    def __init__(self, target: str, help: str, aliases: Sequence[str] = ()) -> None:
        self.target = target
        self.help = help
        self.aliases = tuple(aliases)


_S = CommandSpec
_SESSION = "ai.backend.client.cli.session"
_APP = "ai.backend.client.cli.app"
_SSH = "ai.backend.client.cli.ssh"
COMMANDS: dict[str, CommandSpec] = {
    "run": _S("ai.backend.client.cli.run:run", "Run a code snippet or files in a compute session."),
    "create": _S(f"{_SESSION}:create_top", "Create a compute session without running code.", ["start"]),
    "destroy": _S(f"{_SESSION}:destroy_top", "Terminate compute sessions.", ["rm", "kill", "terminate"]),
    "restart": _S(f"{_SESSION}:restart_top", "Restart compute sessions."),
    "info": _S(f"{_SESSION}:info_top", "Show information about a compute session."),
    "ps": _S(f"{_SESSION}:list_top", 'List compute sessions (alias of "session list").'),
    "upload": _S(f"{_SESSION}:upload_top", "Upload files into a compute session."),
    "download": _S(f"{_SESSION}:download_top", "Download files from a compute session."),
    "ls": _S(f"{_SESSION}:ls_top", "List files in a compute session."),
    "logs": _S(f"{_SESSION}:logs_top", "Show the console log of a compute session."),
    "session": _S(f"{_SESSION}:session", "Compute session commands."),
    "app": _S(f"{_APP}:app", "Run a local proxy to an app (service port) of a compute session."),
    "apps": _S(f"{_APP}:apps", "List the apps of a compute session and the options they accept."),
    "ssh": _S(f"{_SSH}:ssh", "Open an SSH connection to a compute session."),
    "scp": _S(f"{_SSH}:scp", "Copy files between here and a compute session over SSH."),
    "admin": _S("ai.backend.client.cli.admin:admin", "Administrative commands."),
    "config": _S("ai.backend.client.cli.config:config", "Show the current client configuration."),
    "update-password": _S("ai.backend.client.cli.auth:update_password", "Change your password."),
    "login": _S("ai.backend.client.cli.auth:login", "Log in to a webserver (BACKEND_ENDPOINT_TYPE=session)."),
    "logout": _S("ai.backend.client.cli.auth:logout", "Log out of the webserver and forget the login cookie."),
    "server": _S("ai.backend.client.cli.server:server", "Start/stop the all-in-one server (up|down|status)."),
    "task-logs": _S("ai.backend.client.cli.task_logs:task_logs", "Show the output of a batch task."),
    "events": _S("ai.backend.client.cli.events:events", "Show session lifecycle events live."),
    "session-template": _S(
        "ai.backend.client.cli.session_template:session_template", "Session template commands.", ["sesstpl"]
    ),
    "create-from-template": _S(
        "ai.backend.client.cli.session_template:create_from_template_top",
        "Create a compute session from a session template.",
        ["start-from-template", "start-template"],
    ),
    "dotfile": _S("ai.backend.client.cli.dotfile:dotfile", "Manage your dotfiles (placed in every new session)."),
    "vfolder": _S("ai.backend.client.cli.vfolder:vfolder", "Virtual folder commands (storage, transfers, sharing)."),
    "mgr": _S("ai.backend.client.cli.server:mgr", "Manager administration commands (runs the manager CLI)."),
}


OPTION_HELP = {
    "--skip-sslcert-validation": "Skip SSL certificate validation for all API requests.",
    "--output": "Output style of command results (json for scripts).",
    "--version": "Show the version and exit.",
}
DESCRIPTION = "Backend.AI command line interface."


def render_fast_help(prog_name: str = "backend.ai") -> str:
    """The top-level help text, rendered without click."""
    options = [
        ("--skip-sslcert-validation", OPTION_HELP["--skip-sslcert-validation"]),
        ("--output [console|json]", OPTION_HELP["--output"] + "  [default: console]"),
        ("--version", OPTION_HELP["--version"]),
        ("-h, --help", "Show this message and exit."),
    ]
    commands = [
        (f"{name} ({', '.join(spec.aliases)})" if spec.aliases else name, spec.help)
        for name, spec in sorted(COMMANDS.items())
    ]
    width = max(len(label) for label, _ in (*options, *commands))

    def rows(items: list[tuple[str, str]]) -> str:
        return "".join(f"  {label.ljust(width)}  {text}\n" for label, text in items)

    return (
        f"Usage: {prog_name} [OPTIONS] COMMAND [ARGS]...\n\n  {DESCRIPTION}\n\n"
        f"Options:\n{rows(options)}\nCommands:\n{rows(commands)}"
    )


class _Entry:
    """The ``backend.ai`` console script: answers ``--help`` itself, delegates the rest to click."""

    name = "backend.ai"

    def main(
        self,
        args: Sequence[str] | None = None,
        prog_name: str | None = None,
        complete_var: str | None = None,
        standalone_mode: bool = True,
        **extra: Any,
    ) -> Any:
        """Run the CLI with *args* (default: ``sys.argv[1:]``), like ``click.Command.main``."""
        argv = list(sys.argv[1:] if args is None else args)
        if argv in ([], ["--help"], ["-h"]):
            sys.stdout.write(render_fast_help(prog_name or "backend.ai"))
            sys.stdout.flush()
            if standalone_mode:
                sys.exit(0)
            return 0
        from .core import cli

        return cli.main(argv, prog_name or "backend.ai", complete_var, standalone_mode, **extra)

    def __call__(self, *args: Any, **kwargs: Any) -> Any:
        return self.main(*args, **kwargs)


main = _Entry()
"""The entry point (``ai.backend.client.cli.main:main``); usable with click's ``CliRunner``."""
