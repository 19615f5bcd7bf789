"""``backend.ai events SESSION`` (also ``backend.ai session events``): lifecycle events, live.

Once the stream is open, a status line on stderr says so. Each event is one line on stdout: the local
time, the event name, the session (name and short id), then the reason and, where there is one, the
batch result, the exit code or the error. With ``--output json`` each line is a JSON object
``{"time", "event", "data"}``. Watching one session ends after its final event (``session_terminated``,
``session_cancelled``, or ``session_failure`` when it could not be created); ``*`` watches all the
sessions you can see until Ctrl-C, which exits quietly (status 130).
"""

from __future__ import annotations

import json
import os
import signal
import sys
from datetime import datetime
from typing import TYPE_CHECKING, Any

import click

from .core import get_cli_context
from .pretty import print_info

if TYPE_CHECKING:
    from ..sse import SSEMessage

__all__ = ("events", "format_event")


def _decode(msg: SSEMessage) -> Any:
    try:
        return json.loads(msg.data)
    except json.JSONDecodeError:
        return msg.data


def format_event(name: str, data: Any, when: datetime) -> str:
    """The console line of one event."""
    head = f"{when:%H:%M:%S} {click.style(name.ljust(20), fg='cyan')}"
    if not isinstance(data, dict):
        return f"{head} {data}"
    sid = str(data.get("sessionId") or "")
    parts = [head, f"{data.get('sessionName') or '-'} ({sid[:8] or '?'})"]
    if data.get("kernelId"):
        parts.append(f"kernel {str(data['kernelId'])[:8]}")
    if data.get("reason"):
        parts.append(f"reason: {data['reason']}")
    if name == "session_terminated" and data.get("result"):
        parts.append(f"result: {data['result']}")
    if data.get("exitCode") is not None:
        parts.append(f"exit code: {data['exitCode']}")
    if data.get("error"):
        parts.append(f"error: {data['error']}")
    return "  ".join(parts)


def _exit_now() -> None:
    """End the process at once with Ctrl-C's status, output flushed."""
    sys.stdout.flush()
    sys.stderr.flush()
    os._exit(130)


@click.command()
@click.argument("session_ref", metavar="SESSION_NAME_OR_ID")
@click.option(
    "-o",
    "--owner",
    "--owner-access-key",
    "owner",
    metavar="ACCESS_KEY",
    help="The session owner's access key (admins only).",
)
@click.option(
    "--scope",
    type=click.Choice(["*", "session", "kernel"]),
    default="*",
    show_default=True,
    help="Which events: session_*, kernel_* or both.",
)
def events(session_ref: str, owner: str | None, scope: str) -> None:
    """Show the lifecycle events of a session live ('*' for all your sessions; Ctrl-C stops)."""
    import asyncio

    from ..session import AsyncSession

    cli = get_cli_context()
    cli.get_config()

    async def _watch() -> None:
        # Ctrl-C cancels the watch; should closing the stream hang (a server that stopped answering),
        # the process ends anyway two seconds later, with what it printed flushed.
        loop = asyncio.get_running_loop()
        main = asyncio.current_task()

        def _interrupted() -> None:
            if main is not None:
                main.cancel()
            loop.call_later(2.0, _exit_now)

        loop.add_signal_handler(signal.SIGINT, _interrupted)
        try:
            await _stream()
        except asyncio.CancelledError:
            raise KeyboardInterrupt from None

    async def _stream() -> None:
        async with AsyncSession() as api:
            cs = api.ComputeSession(session_ref, owner)
            async with cs.listen_events(scope) as resp:  # type: ignore[arg-type]
                what = "all your sessions" if session_ref == "*" else f"session {session_ref}"
                print_info(f"Watching the events of {what} (Ctrl-C to stop).")
                async for msg in resp:
                    if msg.event == "server_close":
                        break
                    now = datetime.now().astimezone()
                    data = _decode(msg)
                    if cli.json_output:
                        click.echo(
                            json.dumps({"time": now.isoformat(), "event": msg.event, "data": data}, ensure_ascii=False)
                        )
                    else:
                        click.echo(format_event(msg.event, data, now))

    try:
        asyncio.run(_watch())
    except KeyboardInterrupt:
        raise SystemExit(130) from None
