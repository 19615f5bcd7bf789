"""``backend.ai task-logs``: the output of a batch session's task (kept after the session ends)."""

from __future__ import annotations

import sys

import click

from .core import get_cli_context


@click.command(name="task-logs")
@click.argument("task_id", metavar="SESSION")
def task_logs(task_id: str) -> None:
    """Print the output of a batch task.

    \b
    SESSION: the batch session's ID (or name).
    """
    import asyncio

    from ..session import AsyncSession

    get_cli_context().get_config()

    async def _main() -> None:
        async with AsyncSession() as api:
            async for chunk in api.ComputeSession.get_task_logs(task_id):
                sys.stdout.buffer.write(chunk)
                sys.stdout.buffer.flush()

    asyncio.run(_main())
