"""The Score phase: which fitting agent a session goes to, by the scaling group's
``scheduler_opts.agent_selection_strategy``. Each strategy is a named score in :data:`SELECTORS`:

* ``dispersed`` (the default): the fitting agent with the most room left after the placement;
* ``concentrated``: the fitting agent with the least room left (best fit, filling agents up).

"Room" is the dominant remaining share: the largest ``free / capacity`` after the placement over the slots
the session asks for. Agents with accelerator slot types the session does not use come last either way, so
plain CPU sessions do not take up GPU nodes; the agent id breaks ties. :class:`AgentPicker` makes the same
choice for a whole pass without scanning every agent for every session.
"""

from __future__ import annotations

import heapq
from collections.abc import Callable, Mapping, Sequence
from decimal import Decimal
from typing import Any

from ai.backend.common.types import SLOT_TYPES, ResourceSlot

from .state import DEFAULT_STRATEGY, AgentState

STRATEGY_KEY = "agent_selection_strategy"

# A strategy turns an agent's room left after a placement into a score; the lowest score wins.
Score = Callable[[Decimal], Decimal]


def dispersed(room: Decimal) -> Decimal:
    """The most room left wins (spreads sessions over the agents)."""
    return -room


def concentrated(room: Decimal) -> Decimal:
    """The least room left wins (fills agents up)."""
    return room


# Strategy name -> its score. A new strategy is one function and one line here.
SELECTORS: dict[str, Score] = {"concentrated": concentrated, "dispersed": dispersed}
STRATEGIES = tuple(SELECTORS)


def selection_strategy(opts: Mapping[str, Any] | None) -> str:
    """The agent selection strategy a scaling group's ``scheduler_opts`` names (default ``dispersed``)."""
    value = (opts or {}).get(STRATEGY_KEY)
    return value if value in STRATEGIES else DEFAULT_STRATEGY


def scheduler_opts_error(opts: Mapping[str, Any]) -> str | None:
    """Why ``opts`` is not a valid ``scheduler_opts`` (only the keys the scheduler reads are checked)."""
    if STRATEGY_KEY in opts and opts[STRATEGY_KEY] not in STRATEGIES:
        return f"scheduler_opts.{STRATEGY_KEY} must be one of {', '.join(STRATEGIES)}; got {opts[STRATEGY_KEY]!r}."
    return None


def _score(strategy: str) -> Score:
    return SELECTORS.get(strategy) or SELECTORS[DEFAULT_STRATEGY]


_ZERO = Decimal(0)


def _remaining_share(agent: AgentState, free: ResourceSlot, requested: ResourceSlot) -> Decimal:
    """The largest ``(free - requested) / capacity`` over the slots asked for (all of the agent's when the
    request asks for none), 0 when there is none. Plain loops: it runs once per agent and placement."""
    available = agent.available
    asked = [k for k, v in requested.items() if v > 0] or list(available)
    best = _ZERO
    found = False
    for k in asked:
        cap = available.get(k, _ZERO)
        if cap > 0:
            share = (free.get(k, _ZERO) - requested.get(k, _ZERO)) / cap
            if not found or share > best:
                best, found = share, True
    return best


def _unused_accelerators(agent: AgentState, requested: ResourceSlot) -> int:
    """How many slot types beyond cpu/mem the agent has and the session does not ask for."""
    n = 0
    for k, v in agent.available.items():
        if k not in SLOT_TYPES and v > 0 and requested.get(k, _ZERO) <= 0:
            n += 1
    return n


def _selection_key(
    agent: AgentState, free: ResourceSlot, requested: ResourceSlot, score: Score
) -> tuple[int, Decimal, str]:
    """What the selection minimizes: accelerators left unused, then the strategy's score, then the id."""
    return (_unused_accelerators(agent, requested), score(_remaining_share(agent, free, requested)), agent.id)


def select_agent(
    candidates: Sequence[AgentState], free: Mapping[str, ResourceSlot], requested: ResourceSlot, strategy: str
) -> AgentState | None:
    """The agent ``strategy`` picks among ``candidates`` that fit ``requested`` in their ``free`` slots."""
    fitting = [a for a in candidates if a.eligible and requested.fits_in(free[a.id])]
    if not fitting:
        return None
    score = _score(strategy)
    return min(fitting, key=lambda a: _selection_key(a, free[a.id], requested, score))


class AgentPicker:
    """:func:`select_agent` for a whole pass, without scanning every agent for every session.

    Within a pass free slots only shrink, and only on the agent just chosen. One heap of selection keys
    per kind of request (the requested slots and the candidate list) holds the candidates; placements are
    logged, and a heap re-keys the agents placed on since it last looked before choosing. An agent that
    does not fit is dropped from that heap (it cannot fit later in the pass). The choice is exactly
    :func:`select_agent`'s: the same keys, the same tie-break on the agent id.
    """

    def __init__(self, free: dict[str, ResourceSlot], strategy: str) -> None:
        self.free = free
        self.score = _score(strategy)
        self._log: list[str] = []  # agent ids in the order placements changed them
        self.changes = 0  # placements and undos so far: free slots are unchanged while this is
        self._agents: dict[str, AgentState] = {}
        # (request signature) -> [heap of (key, agent id), current key by agent id, position in _log]
        self._heaps: dict[
            tuple[Any, ...],
            tuple[list[tuple[tuple[int, Decimal, str], str]], dict[str, tuple[int, Decimal, str]], list[int]],
        ] = {}

    def pick(self, candidates: Sequence[AgentState], requested: ResourceSlot) -> AgentState | None:
        """The agent the strategy picks among ``candidates`` for ``requested`` now, or None if none fits."""
        sig = (tuple(sorted(requested.items())), id(candidates))
        entry = self._heaps.get(sig)
        if entry is None:
            by_id = {a.id: a for a in candidates if a.eligible}
            keys = {
                a.id: _selection_key(a, self.free[a.id], requested, self.score)
                for a in by_id.values()
                if requested.fits_in(self.free[a.id])
            }
            heap = [(k, aid) for aid, k in keys.items()]
            heapq.heapify(heap)
            entry = (heap, keys, [len(self._log)])
            self._heaps[sig] = entry
            self._agents.update(by_id)
        heap, keys, seen = entry
        for aid in self._log[seen[0] :]:
            if aid in keys:
                agent = self._agents[aid]
                if requested.fits_in(self.free[aid]):
                    keys[aid] = _selection_key(agent, self.free[aid], requested, self.score)
                    heapq.heappush(heap, (keys[aid], aid))
                else:
                    del keys[aid]
        seen[0] = len(self._log)
        while heap:
            key, aid = heap[0]
            if keys.get(aid) != key:
                heapq.heappop(heap)  # superseded by a newer key, or dropped
                continue
            return self._agents[aid]
        return None

    def placed(self, agent_id: str, requested: ResourceSlot) -> None:
        """Record that ``requested`` now occupies ``agent_id``."""
        self.free[agent_id] = self.free[agent_id] - requested
        self._log.append(agent_id)
        self.changes += 1

    def unplaced(self, agent_id: str, requested: ResourceSlot) -> None:
        """Undo :meth:`placed` (a cluster that did not fit whole). Free slots grew, which the heaps do not
        expect, so they are rebuilt on the next pick."""
        self.free[agent_id] = self.free[agent_id] + requested
        self._heaps.clear()
        self.changes += 1
