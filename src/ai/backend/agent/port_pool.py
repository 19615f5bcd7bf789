"""The agent's pool of host ports for publishing kernels' app ports (``[container] port-range``, ADR 0012).

Kernels and warm spares take their ports from one pool. A released port goes to the back of the queue (FIFO),
so a port is not handed to a new kernel right after the old one let it go: a client still holding the old
kernel's address then finds nothing rather than a stranger's app.

A port of the range may be held by some other process of the host (or by another agent on the same host): the
pool can check each port before handing it out (:func:`port_is_free`), and passes over the busy ones, which go
to the back of the queue.
"""

from __future__ import annotations

import socket
from collections import deque
from collections.abc import Callable, Iterable

__all__ = ["PortPool", "PortPoolExhausted", "port_is_free"]


class PortPoolExhausted(RuntimeError):
    """Fewer free ports in the pool than asked for."""


def port_is_free(host: str) -> Callable[[int], bool]:
    """A check that nothing listens on ``host:port``: binding it works. ``SO_REUSEADDR`` as Docker's proxy and
    asyncio's servers set it, so that connections of a former user in TIME_WAIT do not count as busy."""
    family = socket.AF_INET6 if ":" in host else socket.AF_INET

    def check(port: int) -> bool:
        with socket.socket(family, socket.SOCK_STREAM) as s:
            s.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
            try:
                s.bind((host, port))
            except OSError:
                return False
        return True

    return check


class PortPool:
    """The free host ports of ``[low, high]`` (both included), oldest-released first."""

    def __init__(self, low: int, high: int, usable: Callable[[int], bool] | None = None) -> None:
        if not 0 < low <= high <= 65535:
            raise ValueError(f"bad port range [{low}, {high}]")
        self.low, self.high = low, high
        self._free: deque[int] = deque(range(low, high + 1))
        self._is_free = set(self._free)
        # Checked for each port handed out (None: every port of the range is usable).
        self.usable = usable

    def __len__(self) -> int:
        return len(self._free)

    def __contains__(self, port: object) -> bool:
        """Whether ``port`` is free (in the pool)."""
        return port in self._is_free

    def take(self, count: int) -> list[int]:
        """``count`` ports from the front of the queue; busy ones (see ``usable``) go to the back and are passed
        over. :class:`PortPoolExhausted` (and nothing taken) when there are not enough."""
        if count <= 0:
            return []
        taken: list[int] = []
        busy: list[int] = []
        while len(taken) < count and self._free:
            port = self._free.popleft()
            if self.usable is None or self.usable(port):
                taken.append(port)
            else:
                busy.append(port)
        if len(taken) < count:
            self._free.extendleft(reversed(taken))  # given back where they were
            self._free.extend(busy)
            raise PortPoolExhausted(
                f"only {len(taken)} of the {count} host ports needed are free in [{self.low}, {self.high}]"
                + (f" ({len(busy)} more are held by other processes)" if busy else "")
            )
        self._free.extend(busy)
        self._is_free.difference_update(taken)
        return taken

    def claim(self, ports: Iterable[int]) -> None:
        """Mark ``ports`` as used (a kernel taken back after a restart); ports outside the range are ignored."""
        claimed = self._is_free.intersection(ports)
        if claimed:
            self._is_free.difference_update(claimed)
            self._free = deque(p for p in self._free if p not in claimed)

    def release(self, ports: Iterable[int]) -> None:
        """Give ``ports`` back, to the back of the queue; ports outside the range or already free are ignored."""
        for port in ports:
            if self.low <= port <= self.high and port not in self._is_free:
                self._is_free.add(port)
                self._free.append(port)
