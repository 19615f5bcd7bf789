"""The click side of the ``backend.ai`` command: lazy groups, the root group and error reporting.

Subcommands are ``module:attribute`` strings imported when invoked.  Every error ends up
as one line on stderr (exit code 2 for usage errors, 1 otherwise).
"""

from __future__ import annotations

import importlib
import sys
from collections.abc import Mapping, Sequence
from typing import TYPE_CHECKING, Any

import click

from .main import COMMANDS, OPTION_HELP, CommandSpec

if TYPE_CHECKING:
    from ..config import APIConfig

__all__ = ("CLIContext", "LazyGroup", "RootGroup", "cli", "get_cli_context")


class LazyGroup(click.Group):
    """A click group whose subcommands are ``module:attribute`` strings, imported on use."""

    def __init__(
        self,
        *args: Any,
        lazy_commands: Mapping[str, CommandSpec] | None = None,
        aliases: Mapping[str, Sequence[str]] | None = None,
        **kwargs: Any,
    ) -> None:
        super().__init__(*args, **kwargs)
        self.lazy_commands: dict[str, CommandSpec] = dict(lazy_commands or {})
        self.alias_names: dict[str, tuple[str, ...]] = {
            name: spec.aliases for name, spec in self.lazy_commands.items() if spec.aliases
        }
        self.alias_names.update({name: tuple(a) for name, a in (aliases or {}).items()})
        self._aliases = {alias: name for name, names in self.alias_names.items() for alias in names}

    def resolve_alias(self, name: str) -> str:
        """Map an alias to its command name."""
        return self._aliases.get(name, name)

    def list_commands(self, ctx: click.Context) -> list[str]:
        return sorted({*self.commands, *self.lazy_commands})

    def get_command(self, ctx: click.Context, cmd_name: str) -> click.Command | None:
        cmd_name = self.resolve_alias(cmd_name)
        if cmd_name in self.commands:
            return self.commands[cmd_name]
        spec = self.lazy_commands.get(cmd_name)
        if spec is None:
            return None
        module_name, _, attr = spec.target.partition(":")
        command = getattr(importlib.import_module(module_name), attr)
        if not isinstance(command, click.Command):
            raise TypeError(f"{spec.target} is not a click command")
        self.commands[cmd_name] = command
        return command

    def format_commands(self, ctx: click.Context, formatter: click.HelpFormatter) -> None:
        rows: list[tuple[str, str]] = []
        for name in self.list_commands(ctx):
            aliases = self.alias_names.get(name)
            label = f"{name} ({', '.join(aliases)})" if aliases else name
            spec = self.lazy_commands.get(name)
            if spec is not None:
                rows.append((label, spec.help))
            else:
                cmd = self.commands[name]
                if not cmd.hidden:
                    rows.append((label, cmd.get_short_help_str(limit=formatter.width)))
        if rows:
            with formatter.section("Commands"):
                formatter.write_dl(rows)


class CLIContext:
    """Global CLI options, available to commands as ``ctx.obj``."""

    def __init__(self, *, skip_sslcert_validation: bool = False, output: str = "console") -> None:
        self.skip_sslcert_validation = skip_sslcert_validation
        self.output = output
        self._config: APIConfig | None = None

    @property
    def json_output(self) -> bool:
        """Whether ``--output json`` was given."""
        return self.output == "json"

    def get_config(self) -> APIConfig:
        """Build the API config from the environment (once) and make it process-wide."""
        if self._config is None:
            from ..config import APIConfig, set_config

            self._config = APIConfig(skip_sslcert_validation=True if self.skip_sslcert_validation else None)
            set_config(self._config)
        return self._config


def get_cli_context() -> CLIContext:
    """The :class:`CLIContext` of the running command (a default one outside the CLI)."""
    ctx = click.get_current_context(silent=True)
    obj = ctx.find_object(CLIContext) if ctx is not None else None
    return obj if obj is not None else CLIContext()


def _echo_error(message: str) -> None:
    text = " ".join(message.split())
    click.echo(click.style("✘", fg="bright_red") + " " + text, err=True)


def _handle_exception(exc: BaseException) -> int:
    """Print one line for *exc* and return the exit code."""
    from ..exceptions import BackendAPIError, BackendClientError, BackendError

    no_args_is_help = getattr(click.exceptions, "NoArgsIsHelpError", None)
    if no_args_is_help is not None and isinstance(exc, no_args_is_help) and exc.ctx is not None:
        click.echo(exc.ctx.get_help())
        return 0
    if isinstance(exc, click.UsageError):
        hint = ""
        if exc.ctx is not None:
            hint = f" (see '{exc.ctx.command_path} --help')"
        _echo_error(f"Error: {exc.format_message()}{hint}")
        return exc.exit_code
    if isinstance(exc, click.ClickException):
        _echo_error(f"Error: {exc.format_message()}")
        return exc.exit_code
    if isinstance(exc, click.Abort):
        cause = exc.__cause__ or exc.__context__
        if isinstance(cause, KeyboardInterrupt):
            return 130
        _echo_error("Aborted.")
        return 1
    if isinstance(exc, KeyboardInterrupt):
        return 130
    if isinstance(exc, BackendAPIError):
        # The request id ends the same line (errors stay one line): what to quote when asking an operator
        # to look in the logs.
        _echo_error(f"{exc} [request id: {exc.request_id}]" if exc.request_id else str(exc))
        from .hints import no_project_hint_sync
        from .pretty import print_hint

        project_hint = no_project_hint_sync(exc)
        if project_hint:
            print_hint(project_hint)
        return 1
    if isinstance(exc, BackendClientError):
        _echo_error(str(exc))
        return 1
    if isinstance(exc, BackendError):
        _echo_error(f"{type(exc).__name__}: {exc}")
        return 1
    if isinstance(exc, BrokenPipeError):
        return 1
    if isinstance(exc, ValueError):
        _echo_error(str(exc))
        return 1
    _echo_error(f"{type(exc).__name__}: {exc}")
    return 1


class RootGroup(LazyGroup):
    """The top-level group; it turns every error into a single line on stderr."""

    def main(  # type: ignore[override]
        self,
        args: Sequence[str] | None = None,
        prog_name: str | None = None,
        complete_var: str | None = None,
        standalone_mode: bool = True,
        **extra: Any,
    ) -> Any:
        import warnings

        warnings.showwarning = _show_warning
        try:
            rv = super().main(args, prog_name or "backend.ai", complete_var, standalone_mode=False, **extra)
            code = rv if isinstance(rv, int) else 0
        except SystemExit as e:
            code = e.code if isinstance(e.code, int) else (0 if e.code is None else 1)
        except BaseException as e:  # noqa: BLE001 - report everything in one line
            code = _handle_exception(e)
        try:
            sys.stdout.flush()
        except (BrokenPipeError, ValueError):
            pass
        if standalone_mode:
            sys.exit(code)
        return code


def _show_warning(
    message: Warning | str,
    category: type[Warning],
    filename: str,
    lineno: int,
    file: Any = None,
    line: str | None = None,
) -> None:
    click.echo(click.style("∙", fg="yellow") + f" {category.__name__}: {message}", err=True)


def _print_version(ctx: click.Context) -> None:
    from .. import __version__
    from ..config import API_VERSION, format_api_version

    click.echo(f"backend.ai {__version__} (API {format_api_version(API_VERSION)})")
    ctx.exit(0)


@click.group(
    cls=RootGroup,
    lazy_commands=COMMANDS,
    context_settings={"help_option_names": ["-h", "--help"], "max_content_width": 120},
)
@click.option("--skip-sslcert-validation", is_flag=True, help=OPTION_HELP["--skip-sslcert-validation"])
@click.option(
    "--output",
    type=click.Choice(["console", "json"]),
    default="console",
    show_default=True,
    help=OPTION_HELP["--output"],
)
@click.option(
    "--version",
    is_flag=True,
    expose_value=False,
    is_eager=True,
    callback=lambda ctx, param, value: _print_version(ctx) if value else None,
    help=OPTION_HELP["--version"],
)
@click.pass_context
def cli(ctx: click.Context, skip_sslcert_validation: bool, output: str) -> None:
    """Backend.AI command line interface."""
    ctx.obj = CLIContext(skip_sslcert_validation=skip_sslcert_validation, output=output)
