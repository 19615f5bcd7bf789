"""What a scheduling pass works on: the frozen snapshot records the phases read (pending sessions, agents,
keypairs, group settings) and the plan they produce. Plain data, no database."""

from __future__ import annotations

from dataclasses import dataclass, field
from datetime import datetime

from ai.backend.common.types import ResourceSlot

DEFAULT_POLICY = "fifo"
DEFAULT_STRATEGY = "dispersed"


@dataclass(frozen=True)
class AgentState:
    """An agent as a pass sees it: total capacity and what is occupied at the start of the pass."""

    id: str
    scaling_group: str
    available: ResourceSlot
    occupied: ResourceSlot = field(default_factory=ResourceSlot)
    architecture: str = "x86_64"
    alive: bool = True
    schedulable: bool = True

    @property
    def eligible(self) -> bool:
        return self.alive and self.schedulable


@dataclass(frozen=True)
class PendingSession:
    """A PENDING session: what it asks for and what its predicates need."""

    id: str
    access_key: str
    scaling_group: str
    requested: ResourceSlot
    starts_at: datetime | None = None
    architecture: str | None = None  # of the image, when recorded
    sgroup_allowed: bool = True  # the owner may still use the scaling group
    cluster_size: int = 1  # kernels; ``requested`` is their total
    cluster_mode: str = "single-node"  # all kernels on one agent, or each placed on its own (multi-node)


@dataclass(frozen=True)
class KeypairState:
    """A keypair's policy and what its sessions already hold (SCHEDULED and later, PENDING excluded)."""

    limit: ResourceSlot  # the policy's totals; slots it leaves unlimited are absent or Infinity
    max_concurrent: int
    using: ResourceSlot = field(default_factory=ResourceSlot)
    active: int = 0


@dataclass(frozen=True)
class ScalingGroupPolicy:
    """A scaling group's queue policy (``scheduler``) and agent selection strategy (``scheduler_opts``)."""

    policy: str = DEFAULT_POLICY
    strategy: str = DEFAULT_STRATEGY


@dataclass(frozen=True)
class Waiting:
    """A session the pass leaves PENDING: the failed predicates and the reason shown in ``status_info``."""

    session_id: str
    predicates: tuple[str, ...]
    reason: str


@dataclass
class PassPlan:
    """What one pass decided: placements in order, and the sessions left waiting with their reasons."""

    placements: list[tuple[str, str]] = field(default_factory=list)  # (session id, main1's agent id), in order
    waiting: list[Waiting] = field(default_factory=list)
    # Multi-kernel sessions: the agent of each kernel, in layout order (main1, sub1, ...).
    kernel_agents: dict[str, list[str]] = field(default_factory=dict)
