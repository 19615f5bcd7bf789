"""The statuses of an agent, as stored in ``agents.status`` and shown by the API."""

from __future__ import annotations

from enum import StrEnum


class AgentStatus(StrEnum):
    """Whether an agent can be scheduled on. The values are the wire and database spellings."""

    ALIVE = "ALIVE"  # sending heartbeats
    LOST = "LOST"  # heartbeats stopped; its sessions are ended after a grace period unless it comes back
    # Upstream's other two, accepted by the agents query's filter; this manager does not set them.
    RESTARTING = "RESTARTING"
    TERMINATED = "TERMINATED"
