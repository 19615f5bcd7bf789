"""The QueueSort phase: which pending session of a scaling group is served next, by the group's
``scheduler`` policy. Each policy is a named function in :data:`QUEUE_POLICIES`:

* ``fifo``: the oldest first (the default, also for a name no policy has);
* ``lifo``: the newest first;
* ``drf`` (dominant resource fairness): the session of the access key with the smallest dominant share of
  the group's capacity first, the oldest first among equals.
"""

from __future__ import annotations

from collections.abc import Callable, Mapping
from decimal import Decimal
from typing import Any, Protocol, TypeVar

from ai.backend.common.types import ResourceSlot

from .state import DEFAULT_POLICY


class _Keyed(Protocol):
    @property
    def access_key(self) -> str: ...


Q = TypeVar("Q", bound=_Keyed)

# A policy answers the index in ``queue`` (oldest first) of the session to serve next; ``usage`` maps access
# keys to what they occupy in the scaling group now, ``capacity`` is the group's total.
QueuePolicy = Callable[[list[Q], Mapping[str, ResourceSlot], ResourceSlot], int]


def dominant_share(using: Mapping[str, Decimal] | None, capacity: Mapping[str, Decimal]) -> Decimal:
    """The largest fraction of any slot of ``capacity`` that ``using`` occupies (0 for nothing)."""
    shares = [v / capacity[k] for k, v in (using or {}).items() if capacity.get(k, Decimal(0)) > 0]
    return max(shares, default=Decimal(0))


def fifo(queue: list[Q], usage: Mapping[str, ResourceSlot], capacity: ResourceSlot) -> int:
    """The oldest session."""
    return 0


def lifo(queue: list[Q], usage: Mapping[str, ResourceSlot], capacity: ResourceSlot) -> int:
    """The newest session."""
    return len(queue) - 1


def drf(queue: list[Q], usage: Mapping[str, ResourceSlot], capacity: ResourceSlot) -> int:
    """The session whose access key has the smallest dominant share; the oldest among equals."""
    return min(range(len(queue)), key=lambda i: (dominant_share(usage.get(queue[i].access_key), capacity), i))


# Policy name (``scaling_groups.scheduler``) -> its function. A new policy is one function and one line here.
QUEUE_POLICIES: dict[str, QueuePolicy[Any]] = {"fifo": fifo, "lifo": lifo, "drf": drf}
POLICIES = tuple(QUEUE_POLICIES)


def pop_next(queue: list[Q], policy: str, usage: Mapping[str, ResourceSlot], capacity: ResourceSlot) -> Q:
    """Remove and return the session ``policy`` serves next from ``queue`` (sorted oldest first).

    For ``drf``, ``usage`` maps access keys to what they occupy in the scaling group now.
    """
    order = QUEUE_POLICIES.get(policy) or QUEUE_POLICIES[DEFAULT_POLICY]
    return queue.pop(order(queue, usage, capacity))
