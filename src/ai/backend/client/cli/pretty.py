"""Status lines on stderr: ``∙`` info, ``⋯`` waiting, ``✔`` done, ``✘`` failed.

Program output goes to stdout; these messages go to stderr so that scripts can capture
the output alone.  Transient "waiting" lines and spinners are drawn only on a terminal.
"""

from __future__ import annotations

import sys
import textwrap
from types import TracebackType
from typing import Any, TextIO

import click

__all__ = (
    "Printer",
    "Spinner",
    "is_tty",
    "print_done",
    "print_fail",
    "print_hint",
    "print_info",
    "print_wait",
    "print_warn",
    "with_request_id",
)

_MARKS = {
    "info": ("∙", "bright_cyan"),
    "wait": ("⋯", "bright_yellow"),
    "done": ("✔", "bright_green"),
    "fail": ("✘", "bright_red"),
    "warn": ("∙", "yellow"),
}
_transient_line = False


def is_tty(stream: TextIO | None = None) -> bool:
    """Whether ``stream`` (stderr by default) is a terminal; a closed or odd stream is not."""
    try:
        return (stream or sys.stderr).isatty()
    except (AttributeError, ValueError):
        return False


def _clear_transient() -> None:
    global _transient_line
    if _transient_line:
        sys.stderr.write("\r\x1b[2K")
        _transient_line = False


def print_pretty(msg: str, kind: str = "info") -> None:
    """Print a status message with its marker on stderr."""
    global _transient_line
    mark, color = _MARKS[kind]
    if kind == "wait":
        if not is_tty():
            return
        _clear_transient()
        sys.stderr.write(click.style(mark, fg=color) + " " + msg.splitlines()[0] + "\r")
        sys.stderr.flush()
        _transient_line = True
        return
    if is_tty():
        _clear_transient()
    text = textwrap.indent(msg, "  ")[2:]
    click.echo(click.style(mark, fg=color) + " " + text, err=True)


def print_info(msg: str) -> None:
    """``∙ msg``"""
    print_pretty(msg, "info")


def print_wait(msg: str) -> None:
    """``⋯ msg`` as a transient line (terminal only)."""
    print_pretty(msg, "wait")


def print_done(msg: str) -> None:
    """``✔ msg``"""
    print_pretty(msg, "done")


def print_warn(msg: str) -> None:
    """``∙ msg`` in yellow."""
    print_pretty(msg, "warn")


def print_fail(msg: str) -> None:
    """``✘ msg``"""
    print_pretty(msg, "fail")


def print_hint(msg: str) -> None:
    """``∙ Hint: msg`` (after a failure)."""
    print_pretty(f"Hint: {msg}", "warn")


def with_request_id(msg: str, exc: BaseException) -> str:
    """``msg`` and, when ``exc`` is a server's answer that names its request id, `` [request id: ...]`` on the
    same line (what an operator looks up in the server logs; errors stay one line)."""
    rid = getattr(exc, "request_id", None)
    return f"{msg} [request id: {rid}]" if isinstance(rid, str) and rid else msg


class Printer:
    """Status printing that ``-q/--quiet`` can silence (failures are always shown)."""

    def __init__(self, quiet: bool = False) -> None:
        self.quiet = quiet

    def info(self, msg: str) -> None:
        if not self.quiet:
            print_info(msg)

    def wait(self, msg: str) -> None:
        if not self.quiet:
            print_wait(msg)

    def done(self, msg: str) -> None:
        if not self.quiet:
            print_done(msg)

    def warn(self, msg: str) -> None:
        if not self.quiet:
            print_warn(msg)

    def fail(self, msg: str) -> None:
        print_fail(msg)

    def hint(self, msg: str) -> None:
        """A hint that follows a failure (always shown)."""
        print_hint(msg)


class Spinner:
    """An async context manager that animates ``⋯ msg |/-\\`` on a terminal while waiting."""

    FRAMES = "|/-\\"

    def __init__(self, msg: str, *, enabled: bool = True, interval: float = 0.15) -> None:
        self.msg = msg
        self.enabled = enabled and is_tty()
        self.interval = interval
        self._task: Any = None

    async def _spin(self) -> None:
        import asyncio

        i = 0
        while True:
            print_wait(f"{self.msg} {self.FRAMES[i % len(self.FRAMES)]}")
            i += 1
            await asyncio.sleep(self.interval)

    async def __aenter__(self) -> Spinner:
        if self.enabled:
            import asyncio

            self._task = asyncio.get_running_loop().create_task(self._spin())
        return self

    async def __aexit__(
        self, exc_type: type[BaseException] | None, exc: BaseException | None, tb: TracebackType | None
    ) -> None:
        if self._task is not None:
            import asyncio

            self._task.cancel()
            try:
                await self._task
            except asyncio.CancelledError:
                pass
            self._task = None
            _clear_transient()
            sys.stderr.flush()
