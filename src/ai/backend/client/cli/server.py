"""``backend.ai server`` and ``backend.ai mgr``: hand over to the server-side command lines.

``server ARGS...`` runs ``python -m ai.backend.allinone ARGS...`` and ``mgr ARGS...`` runs
``python -m ai.backend.manager.cli ARGS...`` in place of this process.
"""

from __future__ import annotations

import os
import sys

import click

_PASS_THROUGH = {
    "ignore_unknown_options": True,
    "allow_extra_args": True,
    "allow_interspersed_args": False,
    "help_option_names": [],
}


def exec_module(module: str, args: tuple[str, ...]) -> None:
    """Replace this process with ``python -m MODULE ARGS...``."""
    argv = [sys.executable, "-m", module, *args]
    sys.stdout.flush()
    sys.stderr.flush()
    try:
        os.execv(sys.executable, argv)
    except OSError as e:
        raise click.ClickException(f"Cannot run {' '.join(argv[1:3])}: {e}") from None


@click.command(context_settings=_PASS_THROUGH, add_help_option=False)
@click.argument("args", nargs=-1, type=click.UNPROCESSED)
def server(args: tuple[str, ...]) -> None:
    """Start, stop or inspect the all-in-one server: server up|down|status [OPTIONS]."""
    exec_module("ai.backend.allinone", args)


@click.command(context_settings=_PASS_THROUGH, add_help_option=False)
@click.argument("args", nargs=-1, type=click.UNPROCESSED)
def mgr(args: tuple[str, ...]) -> None:
    """Manager administration commands (runs python -m ai.backend.manager.cli)."""
    exec_module("ai.backend.manager.cli", args)
