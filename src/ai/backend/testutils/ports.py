"""Blocks of free TCP ports for tests that give an agent a ``[container] port-range`` of its own."""

from __future__ import annotations

import random

from ai.backend.agent.port_pool import port_is_free

# Below Linux's ephemeral range (32768-60999), where outgoing connections take their local ports at any
# moment, and away from the agents' default range (30000-31000) that other test clusters use.
_LOW, _HIGH = 20000, 29999


def free_port_block(size: int, host: str = "0.0.0.0") -> tuple[int, int]:
    """``(low, high)``: ``size`` consecutive ports on which nothing listens now (at ``host``; ``0.0.0.0``: on
    any address)."""
    free = port_is_free(host)
    for _ in range(200):
        low = random.randint(_LOW, _HIGH - size + 1)
        if all(free(p) for p in range(low, low + size)):
            return low, low + size - 1
    raise RuntimeError(f"no block of {size} free ports in [{_LOW}, {_HIGH}]")
