"""The planner: pure functions from snapshot lists to a replication plan.

No I/O, no asyncio. Given what the source and the target hold, decide what
to send, or refuse and say why.

Matching is by GUID, never by name: a renamed snapshot is still the same
snapshot, and a reused name on the other side is a different one. The *base*
is the newest target snapshot (target order) whose GUID the source also
holds; the *goal* is the newest source snapshot the job's filter selects.

Refusals come before transfers: an interrupted receive is resumed first; a
target that shares nothing with the source is never overwritten; a target
holding snapshots after the base, or a snapshot whose name the source uses
for another GUID, has diverged and is only touched with ``--rollback``, and
only when rolling back to the base removes every offending snapshot.

Messages name where each dataset lives (``nas1:tank/x``) when the caller
says which hosts the two ends are on: source and target often share a path.

Bookmarks: when the source no longer has the snapshot that is the newest
common one (pruned by another tool), a bookmark with its GUID is as good a
base for ``zfs send -i pool/ds#mark``; zrelay bookmarks every snapshot it
sends. A stream cannot start with ``-I`` from a bookmark, so the first step
from a bookmark is always ``-i``.

``-I`` versus stepwise ``-i``: when every source snapshot strictly between
the base and the goal is selected, one ``zfs send -I base goal`` carries all
of them in a single stream (one round trip, one receive). When some of them
are not selected (manual or hourly snapshots excluded by the filter), ``-I``
would leak them to the target, so the plan sends one ``-i`` step per selected
snapshot instead, each from the previous one. A single snapshot to send is
always one plain ``-i`` step.

Clones: a source dataset that is a clone (``origin`` set) whose target does
not exist yet is sent incrementally from its origin snapshot (``zfs send -i
pool/origin@snap clone@first``) when the target side holds that snapshot by
GUID, or receives it earlier in the same run: the replica is then a clone
too and the origin's blocks are not sent twice. Otherwise it is sent in
full, and the reason says why. A recursive job plans origins before their
clones (parents still before children).
"""

from __future__ import annotations

import hashlib
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, field, replace
from functools import partial
from enum import Enum
from typing import Any

from zrelay.errors import PlanRefused
from zrelay.selection import Selection, choose
from zrelay.zfs.model import Bookmark, DatasetState, Snapshot, SnapshotFilter

#: A send base: a snapshot, or a bookmark of one (same GUID, no data kept).
Base = Snapshot | Bookmark


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

    ``base`` None means a full stream of ``snapshot``; a Bookmark base means
    ``-i ds#mark``. ``intermediates`` True means ``-I`` (every snapshot
    between base and snapshot travels in one stream); False means ``-i``
    (only ``snapshot``).
    """

    snapshot: Snapshot
    base: Base | None = None
    intermediates: bool = False


@dataclass(frozen=True, slots=True)
class Plan:
    kind: PlanKind
    source: str                    # source dataset
    target: str                    # target dataset
    steps: tuple[SendStep, ...] = ()
    base: Base | None = None       # newest common snapshot (source's copy, or its bookmark)
    rollback_to: Snapshot | None = None  # target snapshot to roll back to first (only with --rollback)
    resume_token: str | None = None
    reason: str = ""               # one sentence: why this plan
    options: tuple[str, ...] = ()  # for refused plans: what the user can do
    behind: int = 0                # selected source snapshots the target lacks
    conflicts: tuple[str, ...] = field(default=())  # target snapshot names that caused divergence
    encrypted: bool = False        # the source is natively encrypted: sent raw (-w) unless told otherwise
    partial_full: bool = False     # RESUME into a target with no snapshot: a fresh full is the alternative
    source_host: str = ""          # where the source lives, for messages ("" when the caller did not say)
    target_host: str = ""          # where the target lives, for messages
    force_receive: bool = False    # incremental receives use -F (only with --rollback; said in ``reason``)
    clone_of: str = ""             # FULL from a clone's origin: the target dataset holding that origin

    @property
    def source_at(self) -> str:
        """The source as messages name it: ``nas1:tank/x`` (the bare dataset without a host)."""
        return _where(self.source_host, self.source)

    @property
    def target_at(self) -> str:
        """The target as messages name it: ``vault:backup/x``."""
        return _where(self.target_host, self.target)

    @property
    def goal(self) -> Snapshot | None:
        """The snapshot the target holds once this plan has run (None: unknown or unchanged)."""
        return self.steps[-1].snapshot if self.steps else None

    @property
    def refused(self) -> bool:
        return self.kind in REFUSED

    @property
    def transfers(self) -> bool:
        return self.kind in (PlanKind.FULL, PlanKind.INCREMENTAL, PlanKind.RESUME)


# --- helpers -----------------------------------------------------------------


def _where(host: str | None, dataset: str) -> str:
    """``host:dataset``, or the dataset alone when the host is not known."""
    return f"{host}:{dataset}" if host else dataset


def _on(host: str | None) -> str:
    """Where a suggested command runs, for option texts: " on vault" (or "on its host")."""
    return f"on {host}" if host else "on its host"


def _at(snaps: list[Snapshot] | tuple[Snapshot, ...]) -> str:
    """``@a, @b`` — names as a user would type them after the dataset."""
    return ", ".join(f"@{s.name}" for s in snaps)


def _count(n: int, word: str = "snapshot") -> str:
    return f"{n} {word}" if n == 1 else f"{n} {word}s"


def _filter_text(select: SnapshotFilter) -> str:
    """The filter in words, for reasons that blame it."""
    parts: list[str] = []
    if select.prefix is not None:
        parts.append(f"prefix {select.prefix!r}")
    if select.regex is not None:
        parts.append(f"regex {select.regex!r}")
    return " and ".join(parts) if parts else "any name"


def _find_base(source: DatasetState, target: DatasetState) -> tuple[Base, Snapshot, int] | None:
    """(source copy, target copy, target index) of the newest common snapshot by GUID.

    The source copy is the snapshot itself, or a bookmark of it when the
    source has pruned the snapshot.
    """
    src = source.by_guid()
    marks = source.bookmark_by_guid()
    for i in range(len(target.snapshots) - 1, -1, -1):
        t = target.snapshots[i]
        if t.guid in src:
            return src[t.guid], t, i
        if t.guid in marks:
            return marks[t.guid], t, i
    return None


def common_base(source: DatasetState, target: DatasetState) -> tuple[Base, Snapshot] | None:
    """(source copy, target copy) of the newest snapshot both hold; None when they share none."""
    found = _find_base(source, target) if source.exists and target.exists else None
    return (found[0], found[1]) if found else None


def _after(source: DatasetState, start: Base) -> list[Snapshot]:
    """Source snapshots newer than ``start`` (a snapshot or a bookmark), oldest first."""
    if isinstance(start, Snapshot):
        index = {s.guid: i for i, s in enumerate(source.snapshots)}
        return list(source.snapshots[index[start.guid] + 1:])
    return [s for s in source.snapshots if s.createtxg > start.createtxg]


def _forward(source: DatasetState, start: Base, goal: Snapshot,
             select: SnapshotFilter) -> tuple[tuple[SendStep, ...], list[Snapshot], str]:
    """Incremental steps from ``start`` to ``goal`` (both on the source).

    Returns (steps, snapshots that reach the target, how they travel in words).
    The -I/-i choice is explained in the module docstring.
    """
    newer = _after(source, start)
    upto = newer[:[s.guid for s in newer].index(goal.guid) + 1]
    between = upto[:-1]
    sent = [s for s in upto if select.matches(s.name)]
    if len(sent) == 1:
        return (SendStep(goal, start, False),), sent, f"@{goal.name} as one -i step from {start.ref}"
    skipped = [s for s in between if not select.matches(s.name)]
    if not skipped:
        if isinstance(start, Bookmark):
            # -I cannot start at a bookmark: one -i step to the first, then -I for the rest
            first = sent[0]
            rest = (SendStep(goal, first, True),) if len(sent) > 2 else (SendStep(goal, first, False),)
            how = (f"@{first.name} as one -i step from the bookmark {start.ref} (its snapshot is gone), "
                   f"then @{sent[1].name} through @{goal.name} "
                   f"{'in one -I stream' if len(sent) > 2 else 'as one -i step'}")
            return (SendStep(first, start, False), *rest), sent, how
        how = (f"@{sent[0].name} through @{goal.name} in one -I stream from {start.ref}, "
               f"because every snapshot between them is selected")
        return (SendStep(goal, start, True),), sent, how
    steps: list[SendStep] = []
    prev: Base = start
    for s in sent:
        steps.append(SendStep(s, prev, False))
        prev = s
    how = (f"{_at(sent)} as {_count(len(sent), 'stepwise -i step')} from {start.ref}, "
           f"because the unselected {_at(skipped)} in between must not reach the target")
    return tuple(steps), sent, how


# --- the planner ---------------------------------------------------------------


def plan(source: DatasetState, target: DatasetState, *,
         select: SnapshotFilter = SnapshotFilter(), rollback: bool = False,
         resume_supported: bool = True, source_host: str = "", target_host: str = "",
         origin: Snapshot | None = None, origin_target: str = "") -> Plan:
    """Decide how to bring ``target`` up to the newest selected snapshot of ``source``.

    Pure: the same states always give the same plan, so the plan can be shown
    (dry run), checked, and then executed without surprises. ``source_host`` and
    ``target_host`` only name the ends in the plan's texts. ``origin``: the
    source's origin snapshot (``source`` is a clone) when ``origin_target``, the
    target side's copy of the origin's dataset, holds it by the time this plan
    runs: a missing target is then received as a clone of it.
    """
    # every plan names its hosts: made with them, not copied afterwards (a status of 10,000 rows)
    make = partial(Plan, source_host=source_host, target_host=target_host)
    return _plan(source, target, select=select, rollback=rollback, resume_supported=resume_supported,
                 src=_where(source_host, source.name), dst=_where(target_host, target.name),
                 dst_host=target_host, origin=origin, origin_target=origin_target, make=make)


def _full(source: DatasetState, target: str, selected: list[Snapshot], goal: Snapshot, select: SnapshotFilter,
          src: str, dst: str, origin: Snapshot | None, origin_target: str, dst_host: str,
          make: Callable[..., Plan]) -> Plan:
    """The plan of a missing target: a full send, or an incremental from a clone's origin, which
    ``origin_target`` (a dataset on ``dst_host``) holds."""
    first = selected[0]
    steps: tuple[SendStep, ...] = (SendStep(first, origin, False),)
    if origin is not None:
        lead = (f"{dst} does not exist and {src} is a clone of {origin.full_name}, which "
                f"{_where(dst_host, origin_target)} holds: received as a clone, {src}@{first.name} sent from the origin "
                f"(`zfs send -i {origin.full_name}`, its blocks are not sent again)")
    else:
        why = ""
        if source.origin:
            why = (f" ({src} is a clone of {source.origin}, but the target side does not hold that "
                   f"snapshot from this job: the replica is not a clone)")
        lead = f"{dst} does not exist: {'one ' if first.guid == goal.guid else ''}full send of {src}@{first.name}{why}"
    if first.guid == goal.guid:
        reason = f"{lead}."
    else:
        more, _, how = _forward(source, first, goal, select)
        steps += more
        reason = f"{lead}, then {how}."
    return make(PlanKind.FULL, source.name, target, steps=steps, behind=len(selected), reason=reason,
                encrypted=source.encrypted, clone_of=origin_target if origin is not None else "")


def _plan(source: DatasetState, target: DatasetState, *, select: SnapshotFilter, rollback: bool,
          resume_supported: bool, src: str, dst: str, dst_host: str, origin: Snapshot | None = None,
          origin_target: str = "", make: Callable[..., Plan] = Plan) -> Plan:
    """plan(); ``src`` and ``dst`` are the two ends as messages name them (host:dataset)."""
    src_ds, dst_ds = source.name, target.name
    selected = [s for s in source.snapshots if select.matches(s.name)]
    found = _find_base(source, target) if target.exists else None
    base = found[0] if found else None

    if not selected:
        have = (f"none of its {_count(len(source.snapshots))} matches {_filter_text(select)}"
                if source.snapshots else "it has no snapshots at all")
        return make(
            PlanKind.NO_SOURCE_SNAPSHOT, src_ds, dst_ds, base=base,
            reason=(f"{src} has no snapshot to replicate ({have}); a snapshot must be taken first, "
                    f"e.g. `zrelay sync --snapshot`."),
            options=("take a snapshot first: `zrelay sync --snapshot`",
                     f"or widen the job's snapshot filter (now {_filter_text(select)})"))
    goal = selected[-1]

    if target.resume_token and resume_supported:
        behind = len(selected)
        if base is not None:
            newer = {s.guid for s in _after(source, base)}
            behind = sum(1 for s in selected if s.guid in newer)
        return make(
            PlanKind.RESUME, src_ds, dst_ds, base=base, resume_token=target.resume_token, behind=behind,
            encrypted=source.encrypted, partial_full=not target.snapshots,
            reason=(f"{dst} holds the resume token of an interrupted receive, which will be resumed "
                    f"(`zfs send -t`) before planning towards {src}@{goal.name}."))

    if not target.exists:
        if origin is not None and not (origin.createtxg < selected[0].createtxg):
            origin = None   # a clone's snapshots are all newer than its origin; anything else is not a clone stream
        return _full(source, dst_ds, selected, goal, select, src, dst, origin, origin_target, dst_host, make)

    if found is None:
        have = (f"its snapshots {_at(target.snapshots)} have no GUID in common with {src}"
                if target.snapshots else "it has no snapshots")
        return make(
            PlanKind.NO_COMMON_BASE, src_ds, dst_ds,
            reason=f"{dst} exists but shares no snapshot with {src} ({have}), so nothing can be sent incrementally.",
            options=(f"destroy or rename {dst} yourself (`zfs destroy -r {dst_ds}` {_on(dst_host)}), "
                     f"then re-run for a full send",
                     "or point the job at a new target dataset",
                     "zrelay never overwrites an unrelated dataset, even with --rollback"))
    _, tbase, tidx = found

    # divergence: target snapshots after the base, or a source name with another GUID
    by_name = {s.name: s for s in source.snapshots}
    offending: list[Snapshot] = []
    early: list[Snapshot] = []  # at or before the base: rollback can't remove them
    for i, t in enumerate(target.snapshots):
        clash = t.name in by_name and by_name[t.name].guid != t.guid
        if i > tidx or clash:
            offending.append(t)
            if i <= tidx:
                early.append(t)
    kept = target.snapshots[:tidx + 1]
    goal_clash = any(t.name == goal.name and t.guid != goal.guid for t in kept)
    rollback_to: Snapshot | None = None
    prefix = ""
    if offending:
        conflicts = tuple(t.name for t in offending)
        after = [t for t in offending if t not in early]
        what: list[str] = []
        if after:
            what.append(f"{_at(after)} after the newest common snapshot @{tbase.name}")
        if early:
            what.append(f"{_at(early)} reusing a source snapshot name with another GUID")
        diverged = f"{dst} has diverged from {src} ({'; '.join(what)})"
        fixable = not early and not goal_clash
        if not (rollback and fixable):
            if fixable:
                options: tuple[str, ...] = (
                    f"re-run with --rollback to roll {dst} back to @{tbase.name}, destroying {_at(offending)}",
                    f"or destroy/rename {_at(offending)} on {dst} yourself",
                    "or point the job at a new target dataset")
                reason = f"{diverged}; refused without --rollback."
            else:
                stuck = early or [t for t in kept if t.name == goal.name]
                options = (
                    f"--rollback cannot fix this: {_at(stuck)} is at or before the newest common "
                    f"snapshot @{tbase.name} and would survive a rollback",
                    f"rename or destroy {_at(stuck)} on {dst} yourself "
                    f"(`zfs rename {dst_ds}@{stuck[0].name} {dst_ds}@{stuck[0].name}-old` {_on(dst_host)})",
                    "or point the job at a new target dataset")
                reason = f"{diverged}; refused, and --rollback cannot fix it."
            return make(PlanKind.DIVERGED, src_ds, dst_ds, base=found[0], reason=reason,
                        options=options, conflicts=conflicts)
        rollback_to = tbase
        prefix = f"Rolling {dst} back to @{tbase.name} destroys {_at(offending)}, then "
    else:
        conflicts = ()

    sbase = found[0]
    on_target = {t.guid for t in kept}
    if goal.guid in on_target or goal.guid not in {s.guid for s in _after(source, sbase)}:
        if goal.guid in on_target:
            why = f"{dst} already holds {src}@{goal.name}, the newest selected snapshot"
        else:
            why = (f"the newest common snapshot {src}{sbase.ref} is newer than the newest "
                   f"selected snapshot @{goal.name}")
        if rollback_to is not None:
            return make(PlanKind.INCREMENTAL, src_ds, dst_ds, base=sbase, rollback_to=rollback_to,
                        conflicts=conflicts, encrypted=source.encrypted,
                        reason=f"{prefix}nothing is sent, because {why}.")
        return make(PlanKind.NOOP, src_ds, dst_ds, base=sbase, reason=f"Up to date: {why}.")

    steps, sent, how = _forward(source, sbase, goal, select)
    reason = f"{prefix}{dst} is {_count(len(sent))} behind {src}@{goal.name}: sending {how}."
    if rollback:
        # --rollback also discards changes made on the target since its newest snapshot; without
        # it such a target fails with "destination has been modified since most recent snapshot"
        reason += (f" With --rollback the receive is forced (`zfs receive -F`): changes made on {dst} "
                   f"since @{tbase.name} are discarded.")
    return make(PlanKind.INCREMENTAL, src_ds, dst_ds, steps=steps, base=sbase, rollback_to=rollback_to,
                behind=len(sent), conflicts=conflicts, reason=reason, encrypted=source.encrypted,
                force_receive=rollback)


def plan_recursive(sources: dict[str, DatasetState], targets: dict[str, DatasetState],
                   source_root: str, target_root: str, *, selection: Selection | None = None,
                   **kw: Any) -> list[Plan]:
    """One plan per source dataset under ``source_root`` the job covers, parents before children
    and origins before their clones.

    Parents first because a child can only be received once its parent exists;
    origins first because a clone is received from its origin's snapshot (see
    the module docstring). Each child maps to ``target_root`` plus the same
    relative path; a target missing from ``targets`` is treated as absent.
    Which datasets are covered is ``selection`` (zrelay.selection: the job's
    ``exclude`` globs and the ``zrelay:sync`` property); without one, every
    dataset not opted out.
    """
    source_root = source_root.rstrip("/")
    target_root = target_root.rstrip("/")
    if selection is None:
        selection = choose(sources, source_root, recursive=True)

    def target_of(name: str) -> str:
        return target_root + name[len(source_root):]

    names = list(selection.included)
    origins = _covered_origins(sources, names)
    order, origins = origins_first(names, origins)
    held = {name: {s.guid for s in state.snapshots} for name, state in targets.items()}
    plans: list[Plan] = []
    for name in order:
        tname = target_of(name)
        tstate = targets.get(tname) or DatasetState.absent(tname)
        origin, origin_target = None, ""
        if name in origins:
            snap = origins[name]
            if snap.guid in held.get(target_of(snap.dataset), ()):
                origin, origin_target = snap, target_of(snap.dataset)
        p = plan(sources[name], tstate, origin=origin, origin_target=origin_target, **kw)
        held[tname] = _held_after(p, sources[name], tstate)
        plans.append(p)
    return plans


def _covered_origins(sources: Mapping[str, DatasetState], names: Sequence[str]) -> dict[str, Snapshot]:
    """Each covered clone's origin snapshot, where the origin's dataset is covered too (listed,
    so its GUID is known). Other clones are sent in full."""
    covered = set(names)
    out: dict[str, Snapshot] = {}
    for name in names:
        origin = sources[name].origin
        if not origin or "@" not in origin:
            continue
        dataset, _, snap = origin.partition("@")
        if dataset not in covered or dataset == name:
            continue
        found = next((s for s in sources[dataset].snapshots if s.name == snap), None)
        if found is not None:
            out[name] = found
    return out


def origins_first(names: Sequence[str], origins: Mapping[str, Snapshot]) -> tuple[list[str], dict[str, Snapshot]]:
    """``names`` (parents before children) reordered so that each clone comes after its origin's
    dataset, and the origins that order keeps. Stable: without clones the order is unchanged.
    A clone whose origin can only come after it (renamed below its own clone) loses its origin:
    it is sent in full."""
    kept = dict(origins)
    if not kept:
        return list(names), kept
    covered = set(names)

    def parent(name: str) -> str | None:
        while "/" in name:
            name = name.rsplit("/", 1)[0]
            if name in covered:
                return name
        return None

    parents = {name: parent(name) for name in names}
    placed: set[str] = set()
    order: list[str] = []
    waiting: list[str] = []

    def ready(name: str) -> bool:
        deps = (parents[name], kept[name].dataset if name in kept else None)
        return all(d is None or d in placed for d in deps)

    def drain() -> None:
        moved = True
        while moved:
            moved = False
            for name in list(waiting):
                if ready(name):
                    waiting.remove(name)
                    order.append(name)
                    placed.add(name)
                    moved = True

    for name in names:
        waiting.append(name)
        drain()
    while waiting:   # only a cycle through origins is left: the first waiting clone goes in full
        clone = next(n for n in waiting if n in kept)
        del kept[clone]
        drain()
    return order, kept


def _held_after(p: Plan, source: DatasetState, target: DatasetState) -> set[int]:
    """GUIDs the target of ``p`` holds once it ran: what it kept, each step's snapshot and what a
    ``-I`` stream brings between its base and its snapshot (any of them can be a clone's origin)."""
    kept = list(target.snapshots)
    if p.rollback_to is not None and p.rollback_to in kept:
        kept = kept[:kept.index(p.rollback_to) + 1]
    held = {s.guid for s in kept}
    if not p.transfers or p.kind is PlanKind.RESUME:
        return held
    for step in p.steps:
        held.add(step.snapshot.guid)
        if step.intermediates and step.base is not None:
            held.update(s.guid for s in source.snapshots
                        if step.base.createtxg < s.createtxg < step.snapshot.createtxg)
    return held


def describe(plan: Plan) -> str:
    """One short line for listings, e.g. ``incremental nas1:tank/data@a → @c (-I, 2 snapshots)``."""
    src, dst = plan.source_at, plan.target_at
    kind = plan.kind
    if kind is PlanKind.FULL:
        first = plan.steps[0].snapshot
        if plan.steps[0].base is not None:
            rest = plan.steps[1:]
            then = f", then {'-I' if len(rest) == 1 and rest[0].intermediates else f'-i ×{len(rest)}'}" if rest else ""
            return (f"clone {src}@{first.name} from {plan.steps[0].base.full_name} → {dst}"
                    f"{then} ({_count(plan.behind)})")
        if len(plan.steps) == 1:
            return f"full {src}@{first.name} → {dst} (1 snapshot)"
        rest = plan.steps[1:]
        how = "-I" if len(rest) == 1 and rest[0].intermediates else f"-i ×{len(rest)}"
        return f"full {src}@{first.name} → @{plan.steps[-1].snapshot.name} into {dst} (then {how}, {_count(plan.behind)})"
    if kind is PlanKind.INCREMENTAL:
        lead = f"rollback {dst} to @{plan.rollback_to.name}, " if plan.rollback_to else ""
        base = plan.base.ref if plan.base else "@?"
        if not plan.steps:
            return f"{lead}nothing to send from {src}{base}"
        how = "-I" if len(plan.steps) == 1 and plan.steps[0].intermediates else (
            "-i" if len(plan.steps) == 1 else f"-i ×{len(plan.steps)}")
        return f"{lead}incremental {src}{base} → @{plan.steps[-1].snapshot.name} ({how}, {_count(plan.behind)})"
    if kind is PlanKind.NOOP:
        return f"up to date {src} → {dst}" + (f" (at @{plan.base.name})" if plan.base else "")
    if kind is PlanKind.RESUME:
        return f"resume interrupted receive into {dst}"
    if kind is PlanKind.DIVERGED:
        return f"diverged {dst}: {', '.join('@' + c for c in plan.conflicts)} (refused)"
    if kind is PlanKind.NO_COMMON_BASE:
        return f"no common base {src} → {dst} (refused)"
    return f"no selected snapshot on {src}"


def with_new_snapshot(states: Mapping[str, DatasetState], name: str, creation: int) -> dict[str, DatasetState]:
    """Source states as they will be after ``zfs snapshot [-r] ds@name``: what a dry run of
    ``--snapshot`` plans from. The new snapshot's GUID is negative, so it never matches a real one."""
    out: dict[str, DatasetState] = {}
    for ds, st in states.items():
        if not st.exists:
            out[ds] = st
            continue
        txg = (st.newest.createtxg + 1) if st.newest else 1
        digest = int.from_bytes(hashlib.sha256(f"{ds}@{name}".encode()).digest()[:7], "big")
        new = Snapshot(ds, name, guid=-(digest or 1), createtxg=txg, creation=creation)
        out[ds] = replace(st, snapshots=st.snapshots + (new,))
    return out


def target_after(plans: Sequence[Plan], targets: Mapping[str, DatasetState],
                 resumed: Mapping[str, Snapshot] | None = None) -> dict[str, DatasetState]:
    """Target states as they will be once ``plans`` have run as planned: each transferring plan's
    target holds each step's snapshot (GUIDs as on the source; the snapshots a ``-I`` stream also
    brings are left out: they are older than the goal, so the newest common snapshot is the same).
    What anchoring after the transfer is predicted from. A resumed receive brings the snapshot its
    token names: ``resumed`` maps the target dataset to that source snapshot where it is known."""
    out = dict(targets)
    for p in plans:
        if p.kind is PlanKind.RESUME and resumed and p.target in resumed:
            p = replace(p, steps=(SendStep(resumed[p.target]),))
        elif not p.transfers or p.kind is PlanKind.RESUME:
            continue
        before = out.get(p.target) or DatasetState.absent(p.target)
        kept = before.snapshots
        if p.rollback_to is not None:
            cut = [s.guid for s in kept].index(p.rollback_to.guid) + 1
            kept = kept[:cut]
        have = {s.guid for s in kept}
        arrived = tuple(Snapshot(p.target, s.snapshot.name, s.snapshot.guid, s.snapshot.createtxg,
                                 s.snapshot.creation, s.snapshot.referenced)
                        for s in p.steps if s.snapshot.guid not in have)
        out[p.target] = replace(before, exists=True, snapshots=kept + arrived, resume_token=None)
    return out


def ensure_allowed(plan: Plan) -> Plan:
    """Return ``plan`` unless it is refused; then raise with its reason and options."""
    if plan.refused:
        raise PlanRefused(f"{plan.reason} Options: {'; '.join(plan.options)}.")
    return plan
