"""Typed contracts between the components: what goes over the wire, defined once and imported by both sides.

* :mod:`.agent`: manager ↔ agent (the kernel spec and the agent's answer, heartbeats, kernel events, the
  agent's RPC paths and the cluster-secret header);
* :mod:`.storage`: manager → storage proxy (the auth header and the manager API's request bodies).

The models are pydantic v2, not frozen dataclasses: every receiver must check JSON that came from another
process (the agent refuses a malformed kernel spec with a 400, the storage proxy a malformed body), and
pydantic gives that check, the error location and the JSON encoding from one declaration, at a cost
(tens of microseconds per model) that no hot path pays: the execute call carries no model. They are frozen
all the same (a spec is a message, not a state), and lenient about keys they do not know (``extra="ignore"``)
so that a newer sender can talk to an older receiver.
"""

from ._base import WireModel, parse_wire

__all__ = ["WireModel", "parse_wire"]
