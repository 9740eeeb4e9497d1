"""Where a target stands against its source, from the two listings alone. Pure: no I/O.

``status`` reports the newest selected source snapshot, the common base,
how many selected snapshots the target lacks and the lag between them
(docs/status-json.md). These are facts about the two snapshot lists, so they
are computed here from the lists and never from the planner's steps: a
refused plan (diverged, no common base) has no steps, yet its target is
still behind the source, and by how much is exactly what an operator needs
to know before deciding what to do.

The second question answered here is one the snapshot lists cannot settle:
whether the target's live data changed since its newest snapshot. ``zfs
receive`` refuses an incremental stream into such a target ("modified since
most recent snapshot"), e.g. after its newest snapshot was destroyed or it
was mounted and written to. OpenZFS says so exactly (the ``written``
property); zfs-fuse has no such property, and only a ``referenced`` that
differs from the newest snapshot's proves a change there.
"""

from __future__ import annotations

from dataclasses import dataclass

from zrelay.plan import Base, common_base
from zrelay.units import human_bytes
from zrelay.zfs.model import DatasetState, Snapshot, SnapshotFilter


@dataclass(frozen=True, slots=True)
class Standing:
    """The status fields of one source dataset towards one target dataset."""

    source_newest: Snapshot | None   # newest source snapshot the filter selects
    common_base: Base | None         # source's copy (or bookmark) of the newest target snapshot it also holds
    behind: int                      # selected source snapshots newer than the base that the target lacks
    lag_seconds: int | None          # creation of source_newest − creation of common_base, never negative
    base_age_seconds: int | None     # now − creation of common_base


def standing(source: DatasetState, target: DatasetState, select: SnapshotFilter = SnapshotFilter(),
             now: float | None = None) -> Standing:
    """The documented status fields of ``target`` against ``source`` (module docstring).

    ``behind`` counts the selected source snapshots after the common base (by
    createtxg on the source) whose GUID the target does not hold; without a
    common base (target absent, or unrelated) every selected snapshot counts.
    ``lag_seconds`` is 0 when nothing is behind, ``None`` when there is no base
    or no selected snapshot, or a creation time is unknown.
    """
    selected = [s for s in source.snapshots if select.matches(s.name)]
    newest = selected[-1] if selected else None
    found = common_base(source, target) if source.exists and target.exists else None
    base: Base | None = found[0] if found else None
    held = {t.guid for t in target.snapshots} if target.exists else set()
    after = [s for s in selected if base is None or s.createtxg > base.createtxg]
    behind = sum(1 for s in after if s.guid not in held)
    lag: int | None = None
    age: int | None = None
    if base is not None and base.creation:
        age = None if now is None else max(0, int(now - base.creation))
        if newest is not None:
            lag = 0 if behind == 0 else (max(0, int(newest.creation - base.creation)) if newest.creation else None)
    elif base is not None and newest is not None and behind == 0:
        lag = 0
    return Standing(newest, base, behind, lag, age)


def worst_behind(standings: list[Standing]) -> int:
    """A recursive job's ``behind``: its worst dataset's."""
    return max((s.behind for s in standings), default=0)


@dataclass(frozen=True, slots=True)
class Changed:
    """Whether a target's live data changed since its newest snapshot, and how that was found out."""

    changed: bool | None   # None: this host cannot tell
    detail: str            # one clause for messages: the evidence, or what cannot be known


def changed_since_newest(target: DatasetState, *, written: int | None = None,
                         referenced: int | None = None, flavor: str = "OpenZFS") -> Changed:
    """Did ``target`` change since its newest snapshot? (module docstring)

    ``written``: the dataset's ``written`` property (OpenZFS), when the host
    has it. ``referenced``: the live dataset's ``referenced``, compared with
    the newest snapshot's where ``written`` is missing (a difference proves a
    change; equal sizes prove nothing).
    """
    newest = target.newest
    if not target.exists or newest is None:
        return Changed(None, f"{target.name} has no snapshot")
    at = f"@{newest.name}"
    if written is not None:
        if written > 0:
            return Changed(True, f"{target.name} was changed after its newest snapshot {at} "
                                 f"({human_bytes(written)} written since, property `written`)")
        return Changed(False, f"nothing was written to {target.name} since {at}")
    if referenced is not None and newest.referenced and referenced != newest.referenced:
        return Changed(True, f"{target.name} was changed after its newest snapshot {at} "
                             f"(it references {human_bytes(referenced)}, {at} {human_bytes(newest.referenced)})")
    return Changed(None, f"{flavor} has no `written` property, so whether {target.name} was changed after "
                         f"{at} cannot be known before the receive")

