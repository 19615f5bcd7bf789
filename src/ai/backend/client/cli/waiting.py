"""The status line shown while a new session waits to start (``run``, ``create``).

While ``POST /session`` waits for the session on the server, :func:`watch_start` polls
``GET /session/{name}`` (every :data:`POLL_INTERVAL` seconds) and feeds a :class:`WaitProgress`,
which shows the status, the scheduler's pending reason (``statusInfo`` while PENDING) and the
time waited on stderr: one line redrawn in place on a terminal, one line per change otherwise.
"""

from __future__ import annotations

import asyncio
import shutil
import sys
import time
from collections.abc import Awaitable, Callable, Mapping
from typing import Any, TextIO

import click

from .pretty import is_tty

__all__ = (
    "POLL_INTERVAL",
    "WaitProgress",
    "format_elapsed",
    "format_max_wait_message",
    "format_wait_line",
    "state_after_timeout",
    "watch_start",
)

POLL_INTERVAL = 1.0
"""Seconds between two status requests (never below 0.5)."""
REDRAW_INTERVAL = 0.25
"""Seconds between two redraws of the live line (spinner frame and time)."""
FIRST_POLL_DELAY = 0.5
FRAMES = "|/-\\"


def format_elapsed(seconds: float) -> str:
    """``7s``, ``1m05s``, ``2h03m``."""
    s = max(int(seconds), 0)
    if s < 60:
        return f"{s}s"
    if s < 3600:
        return f"{s // 60}m{s % 60:02d}s"
    return f"{s // 3600}h{s % 3600 // 60:02d}m"


def _one_line(text: str) -> str:
    return " ".join(text.split())


def format_wait_line(name: str, status: str | None, reason: str | None, elapsed: float) -> str:
    """``Session NAME: STATUS (REASON), waited 12s``; the reason is shown only while PENDING."""
    shown = status or "creating"
    line = f"Session {name}: {shown}"
    if reason and status == "PENDING":
        line += f" ({_one_line(reason)})"
    return f"{line}, waited {format_elapsed(elapsed)}"


def format_max_wait_message(
    name: str, max_wait: float, status: str | None, reason: str | None, *, destroyed: bool
) -> str:
    """The one-line message when ``--max-wait`` passes before the session starts."""
    state = status or "PENDING"
    if reason:
        state += f": {_one_line(reason)}"
    fate = (
        "it is destroyed."
        if destroyed
        else f"it stays queued and may start later (cancel it with 'backend.ai rm {name}')."
    )
    return f"Session {name} did not start within {format_elapsed(max_wait)} ({state}); {fate}"


class WaitProgress:
    """The waiting status of one session, printed on *stream* (stderr by default).

    ``live`` (default: *stream* is a terminal) redraws one line in place; otherwise a line is
    printed only when the status or the reason changes.  Nothing is printed when disabled.
    """

    def __init__(
        self,
        name: str,
        *,
        prefix: str = "",
        enabled: bool = True,
        live: bool | None = None,
        stream: TextIO | None = None,
        clock: Callable[[], float] = time.monotonic,
    ) -> None:
        self.name = name
        self.prefix = prefix
        self.stream: TextIO = stream if stream is not None else sys.stderr
        self.enabled = enabled
        self.live = is_tty(self.stream) if live is None else live
        self.clock = clock
        self.started = clock()
        self.status: str | None = None
        self.reason: str | None = None
        self._shown: tuple[str | None, str | None] | None = None
        self._frame = 0
        self._drawn = False

    def elapsed(self) -> float:
        """Seconds since the wait started."""
        return self.clock() - self.started

    def line(self) -> str:
        """The current status line (without the marker)."""
        return self.prefix + format_wait_line(self.name, self.status, self.reason, self.elapsed())

    def update(self, status: str | None, reason: str | None) -> None:
        """Record the session's status and reason (from ``GET /session``) and show a change."""
        self.status = status or self.status
        self.reason = reason if reason else None
        if not self.enabled:
            return
        if self.live:
            self.redraw()
        elif self.status is not None and (self.status, self.reason) != self._shown:
            self._shown = (self.status, self.reason)
            mark = click.style("⋯", fg="bright_yellow") if is_tty(self.stream) else "⋯"
            self.stream.write(mark + " " + self.line() + "\n")
            self.stream.flush()

    def redraw(self) -> None:
        """Draw the live line again (the time and the spinner move on)."""
        if not (self.enabled and self.live):
            return
        width = max(shutil.get_terminal_size((100, 24)).columns - 1, 20)
        text = f"{self.line()} {FRAMES[self._frame % len(FRAMES)]}"
        self._frame += 1
        if len(text) + 2 > width:
            text = text[: width - 3] + "…"
        self.stream.write("\r\x1b[2K" + click.style("⋯", fg="bright_yellow") + " " + text)
        self.stream.flush()
        self._drawn = True

    def finish(self) -> None:
        """Erase the live line."""
        if self._drawn:
            self.stream.write("\r\x1b[2K")
            self.stream.flush()
            self._drawn = False


StatusFetcher = Callable[[], Awaitable[Mapping[str, Any] | None]]


async def watch_start(progress: WaitProgress, fetch: StatusFetcher, *, interval: float = POLL_INTERVAL) -> None:
    """Poll *fetch* (the session info, or ``None`` while unknown) every *interval* seconds and update
    *progress* until cancelled; failed requests are skipped."""
    from ..exceptions import BackendError

    interval = max(interval, 0.5)

    async def _redraw() -> None:
        while True:
            progress.redraw()
            await asyncio.sleep(REDRAW_INTERVAL)

    ticker = asyncio.get_running_loop().create_task(_redraw()) if progress.live and progress.enabled else None
    try:
        await asyncio.sleep(FIRST_POLL_DELAY)  # the session row is being written; a quick start shows nothing
        while True:
            try:
                info = await fetch()
            except (BackendError, OSError):
                info = None
            if info is not None:
                status = info.get("status")
                reason = info.get("statusInfo", info.get("status_info"))
                progress.update(str(status) if status else None, str(reason) if reason else None)
            elif progress.status is None:
                progress.update(None, None)
            await asyncio.sleep(interval)
    finally:
        if ticker is not None:
            ticker.cancel()
            try:
                await ticker
            except asyncio.CancelledError:
                pass
        progress.finish()


async def create_with_progress(
    create: Callable[[], Awaitable[Any]],
    fetch: StatusFetcher,
    progress: WaitProgress,
    *,
    interval: float = POLL_INTERVAL,
) -> Any:
    """Await *create* (the ``POST /session`` call) while :func:`watch_start` shows its progress."""
    if not progress.enabled:
        return await create()
    watcher = asyncio.get_running_loop().create_task(watch_start(progress, fetch, interval=interval))
    try:
        return await create()
    finally:
        watcher.cancel()
        try:
            await watcher
        except asyncio.CancelledError:
            pass


async def state_after_timeout(cs: Any, progress: WaitProgress) -> tuple[str | None, str | None]:
    """The status and pending reason of a session whose creation answered ``TIMEOUT`` (``--max-wait``):
    asked once more, else the last ones seen."""
    from ..exceptions import BackendError

    status, reason = progress.status, cs.status_info or progress.reason
    try:
        info = await cs.get_info()
    except (BackendError, OSError):
        return status, reason
    got_status = info.get("status")
    got_reason = info.get("statusInfo")
    return (str(got_status) if got_status else status), (str(got_reason) if got_reason else reason)
