"""The prune planner: what each side of a job keeps of the job's snapshots, what goes, and why.

Pure: the engine lists every side (source, host targets, S3 targets), hands the listings to
``plan_prune`` and runs what the plan says (releases first, then the destroy batches, then the
S3 deletions). A side's keep policy (zrelay.lifecycle.retention) proposes; the rules below
dispose. They protect replication, and win over any policy:

R1  only the job's own snapshots (its snapshot filter) are ever dropped; no other snapshot
    even appears in the plan.
R2  on the source: the newest snapshot each host target shares with it (by GUID) and each S3
    target's chain end stay, and so does every snapshot newer than such a base that the
    target still needs (all of them while the target has none of the job's snapshots).
    With ``stale_after`` on the source policy, a needed snapshot or base older than
    now - stale_after no longer counts (the target is told it will need a full send once its
    base goes). A hold by a tag that is not this job's (other tools, other jobs, targets the
    job no longer has) keeps a snapshot; so does any hold on a host that cannot list holds.
    The newest selected snapshot (the next sync's goal) always stays.
R3  on a host target: the newest snapshot shared with the source stays, and so does everything
    newer (divergence is for sync to decide); so does anything held by a tag not this job's,
    and the snapshot a partial receive resumes from.
R4  on S3: whole chains only (zrelay.s3.chains.plan_prune), never the newest chain nor the
    newest complete one, so no incremental ever loses its base.
R5  the source's own bookmarks follow the source policy over their own creation times, but a
    bookmark that is any target's base stays.
R6  whatever a rule keeps is kept with the rule as its reason.
A side without a keep policy is not pruned; its snapshots still hold the source's back.
"""

from __future__ import annotations

import gc
from bisect import bisect_right
from collections.abc import Iterable, Iterator, Mapping, Sequence
from contextlib import contextmanager
from dataclasses import dataclass, field
from itertools import compress
from operator import attrgetter
from typing import NamedTuple

from zrelay.inventory.model import Job
from zrelay.inventory.policy import KeepPolicy
from zrelay.lifecycle.naming import name_time
from zrelay.lifecycle.retention import describe_policy, keep_indexes, span_text
from zrelay.s3 import chains
from zrelay.s3.chains import DatasetView
from zrelay.zfs.model import Bookmark, DatasetState, Snapshot, SnapshotFilter

SOURCE = "source"


# --------------------------------------------------------------------------- input


@dataclass(frozen=True, slots=True)
class SourceSide:
    """The job's source as listed now. ``holds``: snapshot full name → hold tags, None when
    the host cannot list holds (zfs-fuse)."""

    host: str
    root: str                                        # the job's source dataset (top of a recursive job)
    datasets: Mapping[str, DatasetState]
    holds: Mapping[str, tuple[str, ...]] | None = None
    policy: KeepPolicy | None = None
    clones: Mapping[str, tuple[str, ...]] = field(default_factory=dict)   # snapshot full name → its clones


@dataclass(frozen=True, slots=True)
class HostSide:
    """One host target as listed now: ``datasets`` keyed by target dataset name (see
    target_dataset for which source dataset each one copies). ``resume_from``: target dataset
    → the GUID a partial receive there starts from (its resume token's ``fromguid``), where
    the engine decoded the token."""

    label: str                                       # HOST:DATASET as the job names the target
    host: str
    root: str                                        # the target dataset of the source root
    datasets: Mapping[str, DatasetState]
    holds: Mapping[str, tuple[str, ...]] | None = None
    policy: KeepPolicy | None = None
    resume_from: Mapping[str, int] = field(default_factory=dict)
    clones: Mapping[str, tuple[str, ...]] = field(default_factory=dict)   # snapshot full name → its clones


@dataclass(frozen=True, slots=True)
class ChainEnd:
    """The snapshot an S3 target's next push builds on: the newest restorable snapshot of the
    newest chain."""

    name: str
    guid: int
    creation: int


@dataclass(frozen=True, slots=True)
class S3Side:
    """One S3 target: per source dataset, its chain end (absent: nothing stored yet) and its
    stored chains (absent: nothing to prune)."""

    label: str                                       # s3:NAME
    ends: Mapping[str, ChainEnd]
    views: Mapping[str, DatasetView] = field(default_factory=dict)
    policy: KeepPolicy | None = None
    template: str | None = None                      # the job's snapshot name template: dates its snapshots
    #: per dataset: chain root / send ref → why S3 still retains it (Object Lock; zrelay.s3.retention)
    locked: Mapping[str, Mapping[str, str]] = field(default_factory=dict)


@dataclass(frozen=True, slots=True)
class PruneInput:
    """Everything one job's prune is decided from. ``tags``: target label → the job's hold tag
    towards it (anchors.hold_tag); ``tag_prefix``: anchors.job_tag_prefix of the job."""

    select: SnapshotFilter
    now: int
    source: SourceSide
    hosts: tuple[HostSide, ...] = ()
    s3: tuple[S3Side, ...] = ()
    tag_prefix: str = ""
    tags: Mapping[str, str] = field(default_factory=dict)
    orphan_grace: float = chains.DEFAULT_ORPHAN_GRACE


def cascades(job: Job, jobs: Iterable[Job], host: str, dataset: str) -> list[str]:
    """Other jobs that replicate from or into ``host:dataset`` (or a dataset above or below it,
    recursively): in a cascade A → B → C, B's snapshots are bases of two jobs, and only a hold can
    tell one job's prune about the other's (``job (source)`` / ``job (target)``, for messages)."""
    out: list[str] = []
    for other in jobs:
        if other.name == job.name:
            continue
        ends = [(other.source, "source")] + [(t, "target") for t in other.host_targets]
        for end, role in ends:
            if end.host != host:
                continue
            below = end.dataset.startswith(dataset + "/") and (job.recursive or other.recursive)
            above = dataset.startswith(end.dataset + "/") and other.recursive
            if end.dataset == dataset or below or above:
                out.append(f"{other.name} ({role})")
    return out


def target_dataset(source_root: str, target_root: str, source_dataset: str) -> str:
    """The target dataset that copies ``source_dataset``: a recursive job maps ``SRC/x`` to
    ``DST/x``. ValueError for a dataset outside the source root."""
    if source_dataset == source_root:
        return target_root
    if not source_dataset.startswith(source_root + "/"):
        raise ValueError(f"{source_dataset} is not inside the job's source {source_root}")
    return target_root + source_dataset[len(source_root):]


def source_dataset(source_root: str, target_root: str, dataset: str) -> str | None:
    """The source dataset a target dataset copies (the inverse of target_dataset); None for a
    dataset outside the target root."""
    if dataset == target_root:
        return source_root
    if not dataset.startswith(target_root + "/"):
        return None
    return source_root + dataset[len(target_root):]


def pair_datasets(source_root: str, target_root: str, names: Iterable[str]) -> dict[str, str]:
    """Source dataset → target dataset for every name in ``names``."""
    return {n: target_dataset(source_root, target_root, n) for n in names}


def chain_end(view: DatasetView) -> ChainEnd | None:
    """The chain end of a stored dataset (what S3Side.ends holds): the newest restorable
    snapshot of the newest chain, which the next push extends; None when there is none."""
    chain = view.newest_chain
    tip = chain.tip if chain is not None else None
    if tip is None or tip.manifest is None:
        return None
    snap = tip.manifest.snapshot
    return ChainEnd(snap.name, snap.guid, snap.creation)


# --------------------------------------------------------------------------- output


class Decision(NamedTuple):
    """Keep or drop one of the job's snapshots, bookmarks or stored chains on one side.

    A named tuple rather than a dataclass: a big job has hundreds of thousands of these, and
    a tuple is built several times faster (the prune benchmark's budget)."""

    side: str                                        # "source", "HOST:DATASET" or "s3:NAME"
    dataset: str
    kind: str                                        # snapshot | bookmark | chain
    name: str                                        # snapshot or bookmark name, chain root ref
    guid: int | None
    creation: int
    keep: bool
    reasons: tuple[str, ...]
    #: kept although the policy lets it go: the rules that keep it (empty when the policy keeps it)
    guarded: tuple[str, ...] = ()


@dataclass(frozen=True, slots=True)
class DecisionBlock:
    """Every decision on one dataset's snapshots (or bookmarks) on one side, kept compact: a big
    job has hundreds of thousands of them, most of them drops sharing one reason, so the
    Decision tuples are made only when someone reads them (``--json``, the dry run's detail).
    ``kept``: index → why (the policy's reasons, then the rules'); ``guarded``: index → the
    rules that keep an item the policy lets go."""

    side: str
    dataset: str
    kind: str
    items: Sequence[Snapshot | Bookmark]
    kept: Mapping[int, tuple[str, ...]]
    guarded: Mapping[int, tuple[str, ...]]
    dropped_why: tuple[str, ...]

    @property
    def dropped_count(self) -> int:
        return len(self.items) - len(self.kept)

    def decisions(self) -> list[Decision]:
        new = tuple.__new__          # Decision(...) without the named tuple's Python-level __new__
        head = (self.side, self.dataset, self.kind)
        why, kept, guarded = self.dropped_why, self.kept, self.guarded
        return [new(Decision, (*head, x.name, x.guid, x.creation, i in kept, kept.get(i, why), guarded.get(i, ())))
                for i, x in enumerate(self.items)]


@dataclass(frozen=True, slots=True)
class DestroyBatch:
    """What one ``zfs destroy`` run removes on one dataset: names oldest first."""

    host: str
    dataset: str
    snapshots: tuple[str, ...] = ()
    bookmarks: tuple[str, ...] = ()


@dataclass(frozen=True, slots=True)
class SidePlan:
    """One side's part of the plan. ``releases``: (snapshot full name, tag) holds of this job
    to release before the batches run; ``stored``: per source dataset, the S3 chains and
    orphan sends to delete (keys_in_order)."""

    side: str
    host: str | None
    policy: KeepPolicy | None
    blocks: tuple[DecisionBlock | Decision, ...] = ()   # snapshots and bookmarks in blocks; S3 chains one by one
    releases: tuple[tuple[str, str], ...] = ()
    batches: tuple[DestroyBatch, ...] = ()
    stored: Mapping[str, chains.PrunePlan] = field(default_factory=dict)
    notes: tuple[str, ...] = ()

    @property
    def pruned(self) -> bool:
        return self.policy is not None

    @property
    def decisions(self) -> tuple[Decision, ...]:
        """Every decision of this side, in order (made from the compact blocks on each read)."""
        out: list[Decision] = []
        for block in self.blocks:
            if isinstance(block, DecisionBlock):
                out.extend(block.decisions())
            else:
                out.append(block)
        return tuple(out)

    @property
    def dropped(self) -> tuple[Decision, ...]:
        return tuple(d for d in self.decisions if not d.keep)

    @property
    def counts(self) -> tuple[int, int]:
        """(kept, dropped), without making the decisions."""
        kept = dropped = 0
        for block in self.blocks:
            if isinstance(block, DecisionBlock):
                kept += len(block.kept)
                dropped += block.dropped_count
            elif block.keep:
                kept += 1
            else:
                dropped += 1
        return kept, dropped


@dataclass(frozen=True, slots=True)
class PrunePlan:
    """The whole job: the source first, then host targets, then S3 targets."""

    sides: tuple[SidePlan, ...]

    @property
    def decisions(self) -> tuple[Decision, ...]:
        return tuple(d for s in self.sides for d in s.decisions)

    @property
    def notes(self) -> tuple[str, ...]:
        return tuple(n for s in self.sides for n in s.notes)

    def side(self, label: str) -> SidePlan:
        return next(s for s in self.sides if s.side == label)


# --------------------------------------------------------------------------- helpers


def _age(seconds: int) -> str:
    days = seconds // 86400
    if days >= 2:
        return f"{days} days"
    hours = seconds // 3600
    return f"{hours} hours" if hours >= 2 else f"{max(seconds, 0) // 60} minutes"


@dataclass(slots=True)
class _Tags:
    """Sorts hold tags into this job's (released before a destroy) and everyone else's."""

    prefix: str
    own: frozenset[str]

    def blocking(self, tags: Iterable[str]) -> list[str]:
        """Reasons the holds ``tags`` keep a snapshot (empty when all are this job's)."""
        out: list[str] = []
        for tag in tags:
            if tag in self.own:
                continue
            if self.prefix and tag.startswith(self.prefix):
                out.append(f"held by {tag}, a hold of this job for a target it no longer has "
                           "(`zrelay release` frees it)")
            else:
                out.append(f"held by {tag} (not this job's)")
        return out


@dataclass(slots=True)
class _Holds:
    """One side's holds, sorted once: per dataset, snapshot name → (reasons it is kept, this
    job's tags to release). ``listed`` False: the host cannot list holds."""

    listed: bool
    by_dataset: dict[str, dict[str, tuple[list[str], list[str]]]]

    @classmethod
    def of(cls, holds: Mapping[str, tuple[str, ...]] | None, tags: _Tags) -> _Holds:
        if holds is None:
            return cls(False, {})
        out: dict[str, dict[str, tuple[list[str], list[str]]]] = {}
        for full, held in holds.items():
            dataset, _, name = full.partition("@")
            out.setdefault(dataset, {})[name] = (tags.blocking(held), [t for t in held if t in tags.own])
        return cls(True, out)

    def blocking(self, dataset: str, snaps: Sequence[Snapshot]) -> dict[int, list[str]]:
        """Index in ``snaps`` → why holds keep that snapshot."""
        if not self.listed:
            return {i: ["held; this host cannot list holds"] for i, s in enumerate(snaps) if s.userrefs > 0}
        here = self.by_dataset.get(dataset)
        if not here:
            return {}
        blocked = {name for name, (why, _) in here.items() if why}
        return {i: list(here[s.name][0]) for i, s in enumerate(snaps) if s.name in blocked} if blocked else {}

    def releases(self, dataset: str, gone: Iterable[Snapshot]) -> list[tuple[str, str]]:
        here = self.by_dataset.get(dataset)
        if not here:
            return []
        return [(f"{dataset}@{s.name}", t) for s in gone if s.name in here for t in here[s.name][1]]


class _Selector:
    """``select.matches`` remembered per name (a recursive job's datasets and its targets all
    carry the same snapshot names), applied to whole listings at once."""

    def __init__(self, select: SnapshotFilter) -> None:
        self.select = select
        self.memo: dict[str, bool] = {}

    def __call__(self, name: str) -> bool:
        hit = self.memo.get(name)
        if hit is None:
            hit = self.memo[name] = self.select.matches(name)
        return hit

    def flags(self, names: Sequence[str]) -> list[bool]:
        """Whether each name is the job's, in order."""
        prefix = self.select.prefix
        if self.select.regex is None and prefix is not None:   # the usual filter: no memo needed
            return [name.startswith(prefix) for name in names]
        memo = self.memo
        for name in set(names).difference(memo):
            memo[name] = self.select.matches(name)
        return list(map(memo.__getitem__, names))


_NAME, _GUID, _TXG, _CREATION = (attrgetter(a) for a in ("name", "guid", "createtxg", "creation"))


@dataclass(slots=True)
class _Need:
    """What one target needs of one source dataset: its base (GUID, createtxg on the source,
    creation) and every selected snapshot after it; no base: every selected snapshot."""

    where: str                                       # host:dataset or "s3:NAME dataset", for messages
    base_guid: int | None
    base_txg: int
    base_name: str
    base_creation: int
    why_all: str                                     # why everything is needed when there is no base


def _host_need(where: str, source: DatasetState, target: DatasetState | None,
               index: Mapping[int, Snapshot | Bookmark]) -> _Need:
    """The base is the target's newest snapshot whose GUID the source has, as a snapshot or a
    bookmark (what zrelay.plan sends from); ``index``: the source's GUID → snapshot/bookmark."""
    if target is None or not target.exists:
        return _Need(where, None, 0, "", 0, f"needed by {where}, which does not exist yet")
    for t in reversed(target.snapshots):
        base = index.get(t.guid)
        if base is not None:
            return _Need(where, base.guid, base.createtxg, base.name, base.creation, "")
    return _Need(where, None, 0, "", 0, f"needed by {where}, which shares no snapshot with the source yet")


def _s3_need(where: str, source: DatasetState, end: ChainEnd | None,
             index: Mapping[int, Snapshot | Bookmark]) -> tuple[_Need, str | None]:
    if end is None:
        return _Need(where, None, 0, "", 0, f"needed by {where}, which stores nothing yet"), None
    base = index.get(end.guid)
    if base is not None:
        return _Need(where, base.guid, base.createtxg, base.name, base.creation, ""), None
    note = (f"{where}: its newest chain ends at @{end.name}, which {source.name} no longer has "
            "(by GUID): the next push needs a new chain")
    return _Need(where, None, 0, "", 0, f"needed by {where}, whose chain end is gone from the source"), note


def _decide(side: str, dataset: str, kind: str, items: Sequence[Snapshot | Bookmark],
            kept: Mapping[int, tuple[str, ...]], guard: Mapping[int, list[str]],
            dropped_why: tuple[str, ...], out: list[DecisionBlock | Decision]) -> list[int]:
    """Append the decisions on ``items`` as one block: kept (with the policy's reasons, then the
    guards') or dropped. Returns the indexes of the dropped ones, oldest first."""
    reasons = dict(kept)
    guarded: dict[int, tuple[str, ...]] = {}
    for i, why in guard.items():
        if why:
            reasons[i] = reasons.get(i, ()) + tuple(why)
            if i not in kept:
                guarded[i] = tuple(why)
    out.append(DecisionBlock(side, dataset, kind, items, reasons, guarded, dropped_why))
    return [i for i in range(len(items)) if i not in reasons]


def _guard_origins(own: Sequence[Snapshot], clones: Mapping[str, tuple[str, ...]],
                   guard: dict[int, list[str]]) -> None:
    """Keep the origin of a clone: zfs refuses to destroy it (the whole ``destroy ds@a,b`` with it)."""
    if not clones:
        return
    for i, snap in enumerate(own):
        deps = clones.get(snap.full_name)
        if deps:
            guard.setdefault(i, []).append(f"the origin of {', '.join(deps)} (a clone: zfs cannot destroy it)")


# --------------------------------------------------------------------------- the source


def _plan_source(job: PruneInput, tags: _Tags, matches: _Selector) -> SidePlan:
    side = job.source
    policy = side.policy
    if policy is None:
        return SidePlan(SOURCE, side.host, None, notes=(f"{SOURCE} {side.host}: no keep policy, not pruned",))
    notes: list[str] = []
    if side.holds is None:
        notes.append(f"{SOURCE} {side.host}: holds cannot be listed here; a held snapshot fails to destroy "
                     "and is left as it is")
    holds = _Holds.of(side.holds, tags)
    cutoff = job.now - policy.stale_after if policy.stale_after is not None else None
    dropped_why = (f"not kept by the policy ({describe_policy(policy)})",)
    decisions: list[DecisionBlock | Decision] = []
    releases: list[tuple[str, str]] = []
    batches: list[DestroyBatch] = []
    for name in sorted(side.datasets):
        state = side.datasets[name]
        if not state.exists:
            continue
        index: dict[int, Snapshot | Bookmark] = dict(zip(map(_GUID, state.bookmarks), state.bookmarks))
        index.update(zip(map(_GUID, state.snapshots), state.snapshots))
        needs: list[_Need] = []
        for host in job.hosts:
            tname = target_dataset(side.root, host.root, name)
            needs.append(_host_need(f"{host.host}:{tname}", state, host.datasets.get(tname), index))
        for s3 in job.s3:
            need, note = _s3_need(f"{s3.label} {name}", state, s3.ends.get(name), index)
            needs.append(need)
            if note:
                notes.append(note)

        own = list(compress(state.snapshots, matches.flags(list(map(_NAME, state.snapshots)))))
        txgs = list(map(_TXG, own))
        kept = keep_indexes(list(map(_CREATION, own)), policy)
        position = dict(zip(map(_GUID, own), range(len(own))))
        guard = holds.blocking(name, own)
        _guard_origins(own, side.clones, guard)
        for need in needs:
            # the base itself and everything after it (createtxg order); no base: everything
            wanted: list[tuple[int, str]] = []
            if need.base_guid is None:
                wanted = [(i, need.why_all) for i in range(len(own))]
            else:
                at = position.get(need.base_guid)
                if at is not None:
                    wanted.append((at, f"newest common snapshot with {need.where}"))
                why = f"not yet on {need.where}"
                wanted.extend((i, why) for i in range(bisect_right(txgs, need.base_txg), len(own)))
            for i, why in wanted:
                if cutoff is not None and own[i].creation < cutoff:
                    continue                         # stale: this target no longer holds it back
                guard.setdefault(i, []).append(why)
        if own:
            guard.setdefault(len(own) - 1, []).append("the newest selected snapshot (the next sync's goal)")
        gone = [own[i] for i in _decide(SOURCE, name, "snapshot", own, kept, guard, dropped_why, decisions)]

        marks = sorted((b for b in state.bookmarks if matches(b.name)), key=lambda b: (b.createtxg, b.name))
        mark_kept = keep_indexes([b.creation for b in marks], policy)
        base_of: dict[int, list[str]] = {}
        for need in needs:
            if need.base_guid is not None:
                base_of.setdefault(need.base_guid, []).append(f"the base of {need.where}")
        mark_guard = {i: base_of[b.guid] for i, b in enumerate(marks) if b.guid in base_of}
        marks_gone = [marks[i] for i in _decide(SOURCE, name, "bookmark", marks, mark_kept, mark_guard,
                                                dropped_why, decisions)]

        if cutoff is not None and gone:
            assert policy.stale_after is not None
            gone_guids = {s.guid for s in gone}
            marks_left = {b.guid for b in state.bookmarks} - {b.guid for b in marks_gone}
            for need in needs:
                if need.base_guid is None or need.base_guid not in gone_guids:
                    continue
                how = ("the bookmark of it stays, so incremental sends go on" if need.base_guid in marks_left
                       else "it will need a full send")
                notes.append(f"{need.where}: newest common snapshot @{need.base_name} is "
                             f"{_age(job.now - need.base_creation)} old (stale_after "
                             f"{span_text(policy.stale_after)}): {how}")
        releases.extend(holds.releases(name, gone))
        if gone or marks_gone:
            batches.append(DestroyBatch(side.host, name, tuple(map(_NAME, gone)), tuple(map(_NAME, marks_gone))))
    return SidePlan(SOURCE, side.host, policy, tuple(decisions), tuple(releases), tuple(batches),
                    notes=tuple(notes))


# --------------------------------------------------------------------------- host targets


def _plan_host(job: PruneInput, host: HostSide, tags: _Tags, matches: _Selector) -> SidePlan:
    policy = host.policy
    if policy is None:
        return SidePlan(host.label, host.host, None, notes=(f"{host.label}: no keep policy, not pruned",))
    notes: list[str] = []
    if host.holds is None:
        notes.append(f"{host.label}: holds cannot be listed on {host.host}; a held snapshot fails to "
                     "destroy and is left as it is")
    holds = _Holds.of(host.holds, tags)
    dropped_why = (f"not kept by the policy ({describe_policy(policy)})",)
    pairs = pair_datasets(job.source.root, host.root, job.source.datasets)
    decisions: list[DecisionBlock | Decision] = []
    releases: list[tuple[str, str]] = []
    batches: list[DestroyBatch] = []
    for tname in sorted(set(pairs.values()) | set(host.datasets)):
        state = host.datasets.get(tname)
        if state is None or not state.exists:
            continue
        where = f"{host.host}:{tname}"
        sname = source_dataset(job.source.root, host.root, tname)
        source = job.source.datasets.get(sname) if sname is not None else None
        snaps = state.snapshots
        shared_at: int | None = None
        if source is not None and source.exists:
            guids = {s.guid for s in source.snapshots}
            guids.update(b.guid for b in source.bookmarks)
            shared_at = next((i for i in range(len(snaps) - 1, -1, -1) if snaps[i].guid in guids), None)
        if state.resume_token and tname not in host.resume_from:
            notes.append(f"{where}: a partial receive is pending and its base is not known here; "
                         "it starts from the newest snapshot, which is kept")
        resume_guid = host.resume_from.get(tname) if state.resume_token else None

        flags = matches.flags(list(map(_NAME, snaps)))
        own_at = list(compress(range(len(snaps)), flags))
        own = list(compress(snaps, flags))
        kept = keep_indexes(list(map(_CREATION, own)), policy)
        guard = holds.blocking(tname, own)
        _guard_origins(own, host.clones, guard)
        if shared_at is None:
            why = ("shares no snapshot with the source (sync decides about it)" if source is not None
                   and source.exists else f"its source dataset {sname or '?'} does not exist "
                                          "(sync decides about it)")
            for i in range(len(own)):
                guard.setdefault(i, []).insert(0, why)
        else:
            newer = "newer than the newest snapshot shared with the source (sync decides about it)"
            for i in range(bisect_right(own_at, shared_at - 1), len(own)):
                guard.setdefault(i, []).insert(0, "newest snapshot shared with the source (by GUID)"
                                               if own_at[i] == shared_at else newer)
        if resume_guid is not None:
            for i, s in enumerate(own):
                if s.guid == resume_guid:
                    guard.setdefault(i, []).append("a partial receive resumes from it")
        gone = [own[i] for i in _decide(host.label, tname, "snapshot", own, kept, guard, dropped_why, decisions)]
        releases.extend(holds.releases(tname, gone))
        if gone:
            batches.append(DestroyBatch(host.host, tname, tuple(map(_NAME, gone))))
    return SidePlan(host.label, host.host, policy, tuple(decisions), tuple(releases), tuple(batches),
                    notes=tuple(notes))


# --------------------------------------------------------------------------- S3 targets


def _plan_s3(job: PruneInput, s3: S3Side, matches: _Selector) -> SidePlan:
    policy = s3.policy
    if policy is None:
        return SidePlan(s3.label, None, None, notes=(f"{s3.label}: no keep policy, not pruned",))
    dropped_why = f"not kept by the policy ({describe_policy(policy)})"
    decisions: list[DecisionBlock | Decision] = []
    stored: dict[str, chains.PrunePlan] = {}
    notes: list[str] = []
    for name in sorted(s3.views):
        view = s3.views[name]
        own = [c for c in view.chains
               if all(s.manifest is not None for s in c.sends)
               and all(matches.flags([s.manifest.snapshot.name for s in c.sends if s.manifest is not None]))]
        own_roots = {c.root for c in own}
        dated = {c.root: chain_date(c, s3.template) for c in own}
        keep = _chain_keep(own, dated, policy)
        for c in view.chains:
            if c.root not in own_roots:
                keep.setdefault(c.root, []).append("holds snapshots this job does not own")
        healthy = [c for c in view.chains if c.healthy]
        if healthy:
            keep.setdefault(healthy[-1].root, []).append("newest complete chain")
        result = chains.plan_prune(view, keep_chains=None, keep_seconds=None, now=job.now,
                                   orphan_grace=job.orphan_grace, keep=keep, drop_reason=dropped_why,
                                   locked=s3.locked.get(name))
        foreign = [o for o in result.orphans_deleted if not matches(o.snapshot_name)]
        if foreign:
            result.orphans_deleted = [o for o in result.orphans_deleted if all(o is not f for f in foreign)]
            result.orphans_kept.extend(foreign)
        stored[name] = result
        for d in result.chains:
            if d.chain.root not in own_roots:
                continue
            decisions.append(Decision(s3.label, name, "chain", d.chain.root, None, dated[d.chain.root],
                                      not d.delete, tuple(d.reasons)))
            if d.refused:
                notes.append(f"{s3.label} {name}: {d.refused}")
    return SidePlan(s3.label, None, policy, tuple(decisions), stored=stored, notes=tuple(notes))


def chain_date(chain: chains.Chain, template: str | None) -> int:
    """When a stored chain was last extended, as its keep policy reads it: its newest snapshot,
    dated as the job's template reads that snapshot's name (the time it stands for, like the
    job's snapshots on every other side), else by the snapshot's creation."""
    out = 0
    for s in chain.sends:
        if s.manifest is None:
            continue
        named = name_time(template, s.manifest.snapshot.name) if template else None
        out = max(out, named if named is not None else s.manifest.snapshot.creation)
    return out


def keep_chains(stored: Sequence[chains.Chain], policy: KeepPolicy,
                template: str | None = None) -> dict[str, list[str]]:
    """Root → reasons for the chains of one dataset (oldest first) that ``policy`` keeps, each
    chain dated by ``chain_date``: what ``zrelay prune`` and ``s3-prune --keep`` hand to
    zrelay.s3.chains.plan_prune, which adds the rules that protect the rest."""
    return _chain_keep(stored, {c.root: chain_date(c, template) for c in stored}, policy)


def _chain_keep(own: Sequence[chains.Chain], dated: Mapping[str, int], policy: KeepPolicy) -> dict[str, list[str]]:
    """Root → reasons for the chains ``policy`` keeps, each chain dated by its newest snapshot
    (``dated``; ties: the older chain counts as older)."""
    kept = keep_indexes([dated[c.root] for c in own], policy)
    return {own[i].root: list(reasons) for i, reasons in kept.items()}


# --------------------------------------------------------------------------- the plan


@contextmanager
def _no_cyclic_gc() -> Iterator[None]:
    """Pause the cyclic garbage collector while planning. A big job's plan allocates hundreds
    of thousands of small tuples, none of them in a cycle, and each allocation burst would
    make the collector walk the whole listing again (about half the planning time)."""
    was = gc.isenabled()
    gc.disable()
    try:
        yield
    finally:
        if was:
            gc.enable()


def plan_prune(job: PruneInput) -> PrunePlan:
    """What every side of one job keeps and drops (see the module docstring for the rules)."""
    tags = _Tags(job.tag_prefix, frozenset(job.tags.values()))
    matches = _Selector(job.select)
    with _no_cyclic_gc():
        sides = [_plan_source(job, tags, matches)]
        sides.extend(_plan_host(job, host, tags, matches) for host in job.hosts)
        sides.extend(_plan_s3(job, s3, matches) for s3 in job.s3)
    return PrunePlan(tuple(sides))
