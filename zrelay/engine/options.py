"""What a run was asked to do, and what it did per job and target."""

from __future__ import annotations

from dataclasses import dataclass, field
from datetime import datetime

from zrelay.actions import Action, command_lines
from zrelay.events import Outcome
from zrelay.plan import Plan


@dataclass(frozen=True)
class SyncOptions:
    """One run's choices, as the command line gave them (``sync`` and ``s3-push`` alike)."""

    dry_run: bool = False
    take_snapshot: bool = False
    rollback: bool = False
    now: datetime | None = None
    direct: bool | None = None   # None: each job's (or its source host's) ``direct`` setting
    abort_partial: bool = False  # discard a partial receive that can no longer be resumed
    decrypt: bool = False        # send encrypted datasets decrypted (not raw): replicas are NOT encrypted
    wait_lock: float = 0.0       # s to wait for another zrelay's run on a target (0: skip it as busy)
    full: bool = False           # s3-push: start a new full chain even where an incremental would do


@dataclass
class TaskResult:
    """The outcome of one job towards one target."""

    job: str
    source: str
    target: str
    outcome: Outcome
    message: str = ""
    bytes: int = 0
    seconds: float = 0.0
    failed_host: str | None = None
    plans: list[Plan] = field(default_factory=list)
    actions: list[Action] = field(default_factory=list)   # every action planned, in order (dry run: printed)
    warnings: list[str] = field(default_factory=list)
    details: object = None                                 # the receiver's own results (S3: per dataset)
    excluded: list[tuple[str, str]] = field(default_factory=list)   # (host:dataset, why) left alone

    @property
    def commands(self) -> list[tuple[str, str]]:
        """(host, exact command line) of every action, in order: what the dry run prints."""
        return command_lines(self.actions)
