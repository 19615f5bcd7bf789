"""``BackgroundTask``: follow the progress of a server-side background task (e.g. ``rescan_images``)."""

from __future__ import annotations

from uuid import UUID

from ..exceptions import BackendClientError
from ..request import Request
from ..sse import SSEContextManager, connect_events
from .base import BaseFunction

__all__ = ("BackgroundTask",)


class BackgroundTask(BaseFunction):
    """A background task, addressed by the ``task_id`` a mutation such as ``rescan_images`` answered."""

    task_id: UUID

    def __init__(self, task_id: UUID | str) -> None:
        try:
            self.task_id = task_id if isinstance(task_id, UUID) else UUID(str(task_id))
        except ValueError:
            raise BackendClientError(f"A background task id is a UUID, not {task_id!r}.") from None

    def __repr__(self) -> str:
        return f"<{type(self).__name__} {self.task_id}>"

    def listen_events(self, *, auto_reconnect: bool = True) -> SSEContextManager:
        """Open the task's event stream (``GET /events/background-task``).

        Events: ``bgtask_updated`` (data ``task_id``, ``current_progress``, ``total_progress``,
        ``message``), then one of ``bgtask_done``, ``bgtask_failed``, ``bgtask_cancelled``, then
        ``server_close``, where iteration ends. The server repeats each event under its seed name
        (``task_updated``, ``task_done``, ...). A finished task sends only its final event; an unknown
        or expired one raises ``BackendAPIError`` (404) on entry.
        """
        rqst = Request("GET", "/events/background-task", params={"taskId": str(self.task_id)})
        return connect_events(rqst, auto_reconnect=auto_reconnect)
