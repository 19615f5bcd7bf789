"""The storage proxy's Prometheus metrics, served at ``GET /metrics`` on the manager API's port (``[api.manager]``,
protected like the other components' by ``[metrics]``; plumbing: :mod:`ai.backend.common.metrics`). The requests
of both ports are counted in one registry.

* ``backendai_storage_transfer_bytes_total{direction}``: file bytes received by uploads (``up``) and sent by
  downloads (``down``, archives included) on the client API.
"""

from __future__ import annotations

from prometheus_client import Counter

from ai.backend.common.metrics import ComponentMetrics

__all__ = ["StorageMetrics"]


class StorageMetrics(ComponentMetrics):
    """The storage proxy's registry."""

    def __init__(self, *, process: bool = True) -> None:
        super().__init__(process=process)
        transfer = Counter(
            "backendai_storage_transfer_bytes_total",
            "File bytes moved through the client API: up (uploads) and down (downloads).",
            ("direction",),
            registry=self.registry,
        )
        # The two children, bound once: the data paths add to them per chunk.
        self.bytes_up = transfer.labels("up")
        self.bytes_down = transfer.labels("down")
