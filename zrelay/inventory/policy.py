"""A job's snapshot lifecycle as the user wrote it: when to snapshot, what to keep, which hooks run.

Plain data, no I/O. The inventory loader builds these from a job's ``snapshot:``, ``keep:`` and
``hooks:`` keys; ``zrelay.lifecycle`` decides with them (what is due, what a prune keeps).
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass, field

#: The bucket kinds of a keep policy, shortest period first (each keeps the newest snapshot of
#: each of its last N periods, UTC).
BUCKETS = ("hourly", "daily", "weekly", "monthly", "yearly")

#: The key of ``keep:`` for the source side; every other key names a target (``HOST:DATASET``
#: or ``s3:NAME``) or is ``targets`` (the default for every target without its own entry).
SOURCE_SIDE = "source"
TARGETS_DEFAULT = "targets"


@dataclass(frozen=True, slots=True)
class KeepPolicy:
    """What one side keeps of a job's snapshots (restic/sanoid style): the union of every rule.

    ``within``: every snapshot created at most this many seconds before the side's newest one
    (relative to the newest, not to now, so a side whose snapshots stopped keeps them);
    ``last``: the N newest; ``hourly`` … ``yearly``: the newest snapshot of each of the last N
    hours, days, ISO weeks, months, years that have one (UTC).
    ``stale_after`` (source side only): a target whose newest common snapshot with the source is
    older than this many seconds no longer holds source snapshots back; it is then reported as
    needing a full send once its base goes. None: targets hold snapshots back for ever.
    On an S3 target the same rules pick whole chains, each chain dated by its newest snapshot.
    """

    within: int | None = None
    last: int | None = None
    hourly: int | None = None
    daily: int | None = None
    weekly: int | None = None
    monthly: int | None = None
    yearly: int | None = None
    stale_after: int | None = None

    def buckets(self) -> tuple[tuple[str, int], ...]:
        """(kind, count) for each bucket rule that is set, shortest period first."""
        return tuple((kind, n) for kind in BUCKETS if (n := getattr(self, kind)) is not None)

    @property
    def empty(self) -> bool:
        """No rule at all: such a policy would keep nothing, so the loader refuses it."""
        return self.within is None and self.last is None and not self.buckets()


@dataclass(frozen=True, slots=True)
class CronSpec:
    """A five-field cron expression (minute hour day-of-month month day-of-week), UTC.

    Each field is the sorted tuple of the values it allows; ``dom_any``/``dow_any`` record a
    ``*`` in those fields (cron's rule: when both are restricted, a day matching either runs).
    """

    text: str
    minutes: tuple[int, ...]
    hours: tuple[int, ...]
    days: tuple[int, ...]
    months: tuple[int, ...]
    weekdays: tuple[int, ...]   # 0 = Sunday … 6 = Saturday
    dom_any: bool = True
    dow_any: bool = True


@dataclass(frozen=True, slots=True)
class SnapshotSchedule:
    """When a job takes its snapshots: ``every`` seconds since its newest, or on ``cron`` ticks.

    ``name``: the job's own snapshot name template (strftime, UTC); None: the fleet's
    ``snapshot_name`` setting.
    """

    every: int | None = None
    cron: CronSpec | None = None
    name: str | None = None


@dataclass(frozen=True, slots=True)
class Hooks:
    """Commands run on the source host around a job's snapshot (over zrelay's own connection).

    A failed ``pre_snapshot`` skips the snapshot and fails the job with the hook's stderr;
    ``post_snapshot`` always runs once the pre-hook ran. Each is one shell command line, run by
    ``sh -c`` with ZRELAY_JOB, ZRELAY_DATASET and ZRELAY_SNAPSHOT in its environment.
    """

    pre_snapshot: str | None = None
    post_snapshot: str | None = None
    timeout: float = 60.0


@dataclass(frozen=True, slots=True)
class Lifecycle:
    """A job's whole lifecycle: all None/empty for a job that only replicates."""

    snapshot: SnapshotSchedule | None = None
    keep: Mapping[str, KeepPolicy] = field(default_factory=dict, hash=False)
    hooks: Hooks | None = None

    def policy_for(self, side: str) -> KeepPolicy | None:
        """The policy of ``side`` (``source``, ``HOST:DATASET`` or ``s3:NAME``); a target without
        its own entry takes ``targets``; None: that side is never pruned."""
        if side in self.keep:
            return self.keep[side]
        if side != SOURCE_SIDE:
            return self.keep.get(TARGETS_DEFAULT)
        return None


def template_prefix(template: str) -> str:
    """The literal start of a strftime template, up to its first directive (``%%`` is a ``%``):
    ``zrelay_%Y-%m-%d`` → ``zrelay_``. Every snapshot the template names starts with it."""
    out: list[str] = []
    i = 0
    while i < len(template):
        ch = template[i]
        if ch == "%":
            if template[i + 1:i + 2] == "%":
                out.append("%")
                i += 2
                continue
            break
        out.append(ch)
        i += 1
    return "".join(out)
