"""The receiving end of a job, whatever it is: a host dataset or an S3 prefix.

The engine runs one job towards each of its targets through a ``Receiver``
(zrepl's Sender/Receiver endpoints are the model): the receiver plans from
the source listing the engine made once, turns the plan into actions, moves
each stream, and secures the new base. ``sync`` runs host receivers,
``s3-push`` S3 receivers; both go through the same engine, so the snapshot
step, the source listing, the locks, the limits and the events are written once.
"""

from __future__ import annotations

from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from typing import Protocol

from zrelay.actions import Action, command_lines
from zrelay.engine.options import SyncOptions, TaskResult
from zrelay.events import Outcome
from zrelay.inventory.model import Job
from zrelay.zfs.model import DatasetState

#: A stream's progress: bytes moved since the last call.
OnBytes = Callable[[int], None]


@dataclass
class TargetPlan:
    """What one receiver will do for one job: its actions (what the dry run prints) and why."""

    kind: str                                   # the most telling plan kind (full, incremental, …)
    summary: str                                # one line per dataset, or counts for many
    actions: list[Action] = field(default_factory=list)   # transfers, in order
    secure: list[Action] = field(default_factory=list)    # expected: securing the new base afterwards
    refusal: str | None = None                  # set when a dataset's plan is refused
    refused_host: str | None = None             # who the refusal concerns
    resumes: bool = False                       # a stream resumes a receive: plan again after it
    dry_outcome: Outcome = Outcome.NOOP         # what a dry run reports
    details: object = None                      # the receiver's own plans (host: list[Plan])
    #: (host:dataset, why) of each source dataset the job leaves alone (zrelay.selection)
    excluded: list[tuple[str, str]] = field(default_factory=list)
    #: the receiver's last word on the target's result, after the run (or the dry run's plan):
    #: S3 pushes each dataset on its own, and the worst of them is the target's outcome
    verdict: Callable[[TaskResult], None] | None = None

    @property
    def commands(self) -> list[tuple[str, str]]:
        return command_lines([*self.actions, *self.secure])


class Receiver(Protocol):
    """One target of one job (see the module docstring)."""

    job: Job
    name: str              # as results name it: ``vault:backup/x`` or ``s3:offsite``
    host: str | None       # the receiving host (None: S3); its ``receives`` limit applies

    async def lock_key(self) -> str:
        """What ``zrelay.locks`` holds while this target is written."""

    def forget(self) -> None:
        """Drop what this run read of the target: another run changed it, or this one did."""

    async def prepare(self) -> None:
        """Read the target (run beside the source listing, so both ends' failures are named together)."""

    async def plan(self, source: Mapping[str, DatasetState], options: SyncOptions) -> TargetPlan:
        """Plan from the source listing; raises ZrelayError when the target cannot be read."""

    async def stream(self, action: Action, on_bytes: OnBytes, notes: list[str], options: SyncOptions) -> bool:
        """Move one STREAM action's bytes. A failed stream is looked at first: one that arrived
        after all counts as done (a warning goes to ``notes``). Returns True when what is left
        must be planned again (a dead resume token's partial receive was discarded)."""

    async def secure_again(self) -> list[Action]:
        """Securing the new base, planned from fresh listings once the transfers ran: compared with
        the expected ``TargetPlan.secure`` before anything runs."""
