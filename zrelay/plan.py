"""The planner: pure functions from snapshot lists to a replication plan.

No I/O, no asyncio. Given what the source and the target hold (matched by
GUID), decide what to send, or refuse and say why.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from enum import Enum

from zrelay.zfs.model import DatasetState, Snapshot, SnapshotFilter


class PlanKind(str, Enum):
    FULL = "full"                      # target absent: full send, then incrementals
    INCREMENTAL = "incremental"        # base → newest selected
    NOOP = "noop"                      # target already has the newest selected snapshot
    RESUME = "resume"                  # target holds a receive_resume_token
    DIVERGED = "diverged"              # target has data the source lacks: refused
    NO_COMMON_BASE = "no-common-base"  # target exists, shares no snapshot: refused
    NO_SOURCE_SNAPSHOT = "no-source-snapshot"  # nothing selected on the source


REFUSED = frozenset({PlanKind.DIVERGED, PlanKind.NO_COMMON_BASE})


@dataclass(frozen=True, slots=True)
class SendStep:
    """One ``zfs send | zfs receive``.

    ``base`` None means a full stream of ``snapshot``. ``intermediates`` True
    means ``-I`` (every snapshot between base and snapshot travels in one
    stream); False means ``-i`` (only ``snapshot``).
    """

    snapshot: Snapshot
    base: Snapshot | None = None
    intermediates: bool = False


@dataclass(frozen=True, slots=True)
class Plan:
    kind: PlanKind
    source: str                    # source dataset
    target: str                    # target dataset
    steps: tuple[SendStep, ...] = ()
    base: Snapshot | None = None   # newest common snapshot (source's copy)
    rollback_to: Snapshot | None = None  # target snapshot to roll back to first (only with --rollback)
    resume_token: str | None = None
    reason: str = ""               # one sentence: why this plan
    options: tuple[str, ...] = ()  # for refused plans: what the user can do
    behind: int = 0                # selected source snapshots the target lacks
    conflicts: tuple[str, ...] = field(default=())  # target snapshot names that caused divergence

    @property
    def refused(self) -> bool:
        return self.kind in REFUSED

    @property
    def transfers(self) -> bool:
        return self.kind in (PlanKind.FULL, PlanKind.INCREMENTAL, PlanKind.RESUME)
