"""Whether a job's next snapshot is due (pure): ``zrelay snapshot`` takes only those that are."""

from __future__ import annotations

import datetime as _dt
from dataclasses import dataclass

from zrelay.inventory.policy import SnapshotSchedule
from zrelay.lifecycle.cron import next_tick
from zrelay.lifecycle.retention import span_text


@dataclass(frozen=True, slots=True)
class Due:
    """``due``: take a snapshot now. ``next_at``: when the schedule next asks for one (unix
    seconds; at or before now when due: the moment it became due); None: never by time.
    ``reason``: one line for the user."""

    due: bool
    next_at: int | None
    reason: str


def _when(ts: int) -> str:
    return _dt.datetime.fromtimestamp(ts, _dt.UTC).strftime("%Y-%m-%d %H:%M UTC")


def due(schedule: SnapshotSchedule, newest_creation: int | None, now: int) -> Due:
    """Is a snapshot due at ``now``, given the creation time of the job's newest snapshot?

    ``every``: due when there is no snapshot yet or the newest is at least ``every`` old.
    ``cron``: due when a tick came after the newest snapshot, up to now; several missed ticks
    (the machine was off) make one snapshot, not one per tick. No snapshot yet: due.
    Neither: never due by time, snapshots are taken only on request (``--now``).
    With both, whichever comes first decides.
    """
    answers: list[Due] = []
    if schedule.every is not None:
        every = span_text(schedule.every)
        if newest_creation is None:
            answers.append(Due(True, now, f"no snapshot yet (every {every})"))
        else:
            at = newest_creation + schedule.every
            if at <= now:
                answers.append(Due(True, at, f"the newest snapshot is from {_when(newest_creation)}, "
                                             f"more than {every} ago (every {every})"))
            else:
                answers.append(Due(False, at, f"next at {_when(at)} (every {every} after the newest "
                                              f"snapshot, {_when(newest_creation)})"))
    if schedule.cron is not None:
        text = schedule.cron.text
        if newest_creation is None:
            answers.append(Due(True, now, f"no snapshot yet (cron {text})"))
        else:
            tick = next_tick(schedule.cron, newest_creation)
            if tick <= now:
                answers.append(Due(True, tick, f"the cron tick of {_when(tick)} came after the newest "
                                               f"snapshot ({_when(newest_creation)}) (cron {text})"))
            else:
                answers.append(Due(False, tick, f"next cron tick {_when(tick)} (cron {text})"))
    if not answers:
        return Due(False, None, "no `every` or `cron`: snapshots are taken only on request (--now)")
    ready = [a for a in answers if a.due]
    if ready:
        return min(ready, key=lambda a: a.next_at if a.next_at is not None else now)
    return min(answers, key=lambda a: a.next_at if a.next_at is not None else now)
