"""Actions: what a run does, as data. Pure: no I/O, no asyncio.

The engine turns plans (zrelay.plan) into one list of actions per job and
target. ``--dry-run`` and ``--json`` render that list; the executor runs the
very same objects, command line by command line, so what the dry run prints
is what runs. Each action carries its exact remote command lines (quoted once,
by zrelay.zfs.commands) and the host that runs them.

An action that depends on how an earlier one turns out (securing the new
base after a transfer) is marked ``expected``: the executor checks it against
the world before running it, and when the world turned out otherwise it
re-plans and says so instead of silently running something else.
"""

from __future__ import annotations

from collections.abc import Iterable, Sequence
from dataclasses import dataclass
from enum import Enum


class ActionKind(str, Enum):
    SNAPSHOT = "snapshot"                # zfs snapshot [-r] on the source
    CREATE_PARENT = "create-parent"      # zfs create -p of a full receive's missing parent
    ROLLBACK = "rollback"                # zfs rollback -r of a diverged target (only with --rollback)
    ABORT_RECEIVE = "abort-receive"      # zfs receive -A of a partial receive that cannot be resumed
    STREAM = "stream"                    # zfs send → zfs receive (relay or direct), or → S3
    SET_PROPERTIES = "set-properties"    # zfs set on a new replica
    BOOKMARK = "bookmark"                # zfs bookmark of sent snapshots on the source
    HOLD = "hold"                        # zfs hold of the new base
    RELEASE = "release"                  # zfs release of the old base
    DESTROY = "destroy"                  # zfs destroy of snapshots
    HOOK = "hook"                        # a user's command before or after a job


#: Kinds that destroy or discard data: decided by the planner, said in the action's reason.
DESTRUCTIVE = frozenset({ActionKind.ROLLBACK, ActionKind.ABORT_RECEIVE, ActionKind.DESTROY})


@dataclass(frozen=True, slots=True)
class Stream:
    """What one stream moves and how: ``source_command`` runs on the source; the receiving end
    is ``target_command`` on ``target_host`` (relay), nothing (direct: the source's pipeline
    runs the receive through its own ssh), or an S3 object (``sink``)."""

    label: str                        # e.g. "tank/x@a → @c (-I)"
    target_host: str                  # host name, or the S3 target's name
    target_dataset: str               # where it lands (S3: the source dataset it stores)
    send_argv: tuple[str, ...]        # the zfs send alone (its estimate is ``send -nvP`` of it)
    source_command: str
    target_command: str | None = None
    sink: str | None = None           # an S3 URL: the stream is uploaded there
    goal_guid: int | None = None      # GUID of the snapshot it brings (None: unknown until it ran)
    estimate: int | None = None       # bytes, when the source could tell before sending
    full: bool = False                # a full stream (no base)
    resume: bool = False              # resumes an interrupted receive (zfs send -t)
    bandwidth: int | None = None      # bytes per second it is held to when alone in its groups
    limit: str = ""                   # what limits it, as the dry run says it (paths/throttle.py)


@dataclass(frozen=True, slots=True)
class Action:
    """One thing a run does on one host, with the exact command lines it runs there."""

    kind: ActionKind
    host: str                                  # where it runs (a stream: its source host)
    subject: str                               # the dataset or snapshot it acts on
    lines: tuple[str, ...] = ()                # exact remote command lines, in order
    reason: str = ""                           # why; a destructive action's reason is the plan's
    stream: Stream | None = None               # for STREAM: both ends
    expected: bool = False                     # checked against the world before it runs
    report: str = ""                           # what the run's result says once it ran (past tense)
    waits_for: str = ""                        # a dataset whose actions must end first (a clone's origin)

    @property
    def commands(self) -> list[tuple[str, str]]:
        """(host, command line) as the dry run prints them, the receiving end after the sending end."""
        if self.stream is None:
            return [(self.host, line) for line in self.lines]
        out = [(self.host, self.stream.source_command)]
        if self.stream.target_command is not None:
            out.append((self.stream.target_host, self.stream.target_command))
        elif self.stream.sink is not None:
            out.append((self.stream.target_host, f"upload to {self.stream.sink}"))
        return out

    @property
    def destructive(self) -> bool:
        return self.kind in DESTRUCTIVE


def command_lines(actions: Iterable[Action]) -> list[tuple[str, str]]:
    """Every (host, command line) of ``actions`` in order: what the dry run prints and the executor runs."""
    return [pair for action in actions for pair in action.commands]


def same_commands(a: Sequence[Action], b: Sequence[Action]) -> bool:
    """Whether two action lists run the same command lines (what re-planning compares)."""
    return command_lines(a) == command_lines(b)


def describe_change(expected: Sequence[Action], actual: Sequence[Action]) -> str:
    """Why a re-planned list differs from the expected one, in one line, for the run's output."""
    want, got = command_lines(expected), command_lines(actual)
    dropped = [pair for pair in want if pair not in got]
    added = [line for host, line in got if (host, line) not in want]
    parts = []
    if dropped:
        parts.append(f"not running {len(dropped)} planned command{'s' if len(dropped) != 1 else ''}")
    if added:
        parts.append(f"running {len(added)} other{'s' if len(added) != 1 else ''}: {added[0]}"
                     + (" …" if len(added) > 1 else ""))
    return ", ".join(parts) or "same commands in another order"
