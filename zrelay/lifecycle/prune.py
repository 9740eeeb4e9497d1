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

from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass, field

from zrelay.inventory.policy import KeepPolicy
from zrelay.lifecycle.retention import describe_policy, keep_by_policy, span_text
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


@dataclass(frozen=True, slots=True)
class Decision:
    """Keep or drop one of the job's snapshots, bookmarks or stored chains on one side."""

    side: str                                        # "source", "HOST:DATASET" or "s3:NAME"
    dataset: str
    kind: str                                        # snapshot | bookmark | chain
    name: str                                        # snapshot or bookmark name, chain root ref
    guid: int | None
    creation: int
    keep: bool
    reasons: tuple[str, ...]


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
    decisions: tuple[Decision, ...] = ()
    releases: tuple[tuple[str, str], ...] = ()
    batches: tuple[DestroyBatch, ...] = ()
    stored: Mapping[str, chains.PrunePlan] = field(default_factory=dict)
    notes: tuple[str, ...] = ()

    @property
    def pruned(self) -> bool:
        return self.policy is not None

    @property
    def dropped(self) -> tuple[Decision, ...]:
        return tuple(d for d in self.decisions if not d.keep)


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
    """Sorts hold tags into this job's (releasable before a destroy) and everyone else's."""

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


def _hold_reasons(snap: Snapshot, holds: Mapping[str, tuple[str, ...]] | None, tags: _Tags) -> list[str]:
    if holds is None:
        return ["held; this host cannot list holds"] if snap.userrefs > 0 else []
    return tags.blocking(holds.get(snap.full_name, ()))


def _releases(snaps: Iterable[Snapshot], holds: Mapping[str, tuple[str, ...]] | None,
              tags: _Tags) -> list[tuple[str, str]]:
    if holds is None:
        return []
    return [(s.full_name, t) for s in snaps for t in holds.get(s.full_name, ()) if t in tags.own]


@dataclass(slots=True)
class _Need:
    """What one target needs of one source dataset: its base (GUID and where it sits in
    createtxg) and everything selected after it."""

    where: str                                       # host:dataset or s3:NAME dataset, for messages
    base_guid: int | None                            # None: the target has none of the job's snapshots
    base_txg: int
    base_name: str
    base_creation: int
    why_all: str                                     # why everything is needed when there is no base


def _host_need(where: str, source: DatasetState, target: DatasetState | None) -> _Need:
    if target is None or not target.exists:
        return _Need(where, None, 0, "", 0, f"needed by {where}, which does not exist yet")
    src = source.by_guid()
    marks = source.bookmark_by_guid()
    for t in reversed(target.snapshots):
        base: Snapshot | Bookmark | None = src.get(t.guid) or marks.get(t.guid)
        if base is not None:
            return _Need(where, base.guid, base.createtxg, base.name, base.creation, "")
    return _Need(where, None, 0, "", 0, f"needed by {where}, which shares no snapshot with the source yet")


def _s3_need(where: str, source: DatasetState, end: ChainEnd | None) -> tuple[_Need, str | None]:
    if end is None:
        return _Need(where, None, 0, "", 0, f"needed by {where}, which stores nothing yet"), None
    for snap in source.snapshots:
        if snap.guid == end.guid:
            return _Need(where, snap.guid, snap.createtxg, snap.name, snap.creation, ""), None
    for mark in source.bookmarks:
        if mark.guid == end.guid:
            return _Need(where, mark.guid, mark.createtxg, mark.name, mark.creation, ""), None
    note = (f"{where}: its newest chain ends at @{end.name}, which {source.name} no longer has "
            "(by GUID): the next push needs a new chain")
    return _Need(where, None, 0, "", 0, f"needed by {where}, whose chain end is gone from the source"), note


# --------------------------------------------------------------------------- the source


def _plan_source(job: PruneInput, tags: _Tags) -> SidePlan:
    side = job.source
    policy = side.policy
    notes: list[str] = []
    if policy is None:
        return SidePlan(SOURCE, side.host, None, notes=(f"{SOURCE} {side.host}: no keep policy, not pruned",))
    if side.holds is None:
        notes.append(f"{SOURCE} {side.host}: holds cannot be listed here; a held snapshot fails to destroy "
                     "and is left as it is")
    cutoff = job.now - policy.stale_after if policy.stale_after is not None else None
    dropped_why = (f"not kept by the policy ({describe_policy(policy)})",)
    decisions: list[Decision] = []
    releases: list[tuple[str, str]] = []
    batches: list[DestroyBatch] = []
    for name in sorted(side.datasets):
        state = side.datasets[name]
        if not state.exists:
            continue
        needs: list[_Need] = []
        for host in job.hosts:
            tname = target_dataset(side.root, host.root, name)
            needs.append(_host_need(f"{host.host}:{tname}", state, host.datasets.get(tname)))
        for s3 in job.s3:
            need, note = _s3_need(f"{s3.label} {name}", state, s3.ends.get(name))
            needs.append(need)
            if note:
                notes.append(note)
        base_guids = {n.base_guid for n in needs if n.base_guid is not None}

        own = [s for s in state.snapshots if job.select.matches(s.name)]
        kept = keep_by_policy(((i, s.creation) for i, s in enumerate(own)), policy)
        guard: dict[int, list[str]] = {}
        for need in needs:
            for i, s in enumerate(own):
                if cutoff is not None and s.creation < cutoff:
                    continue                         # stale: this target no longer holds it back
                if need.base_guid is None:
                    guard.setdefault(i, []).append(need.why_all)
                elif s.guid == need.base_guid:
                    guard.setdefault(i, []).append(f"newest common snapshot with {need.where}")
                elif s.createtxg > need.base_txg:
                    guard.setdefault(i, []).append(f"not yet on {need.where}")
        if own:
            guard.setdefault(len(own) - 1, []).append("the newest selected snapshot (the next sync's goal)")
        for i, s in enumerate(own):
            held = _hold_reasons(s, side.holds, tags)
            if held:
                guard.setdefault(i, []).extend(held)

        gone: list[Snapshot] = []
        for i, s in enumerate(own):
            reasons = kept.get(i, ())
            protect = guard.get(i)
            if protect:
                reasons = reasons + tuple(protect)
            if reasons:
                decisions.append(Decision(SOURCE, name, "snapshot", s.name, s.guid, s.creation, True, reasons))
            else:
                decisions.append(Decision(SOURCE, name, "snapshot", s.name, s.guid, s.creation, False,
                                          dropped_why))
                gone.append(s)
        gone_guids = {s.guid for s in gone}

        marks = sorted((b for b in state.bookmarks if job.select.matches(b.name)),
                       key=lambda b: (b.createtxg, b.name))
        mark_kept = keep_by_policy(((i, b.creation) for i, b in enumerate(marks)), policy)
        marks_gone: list[Bookmark] = []
        for i, b in enumerate(marks):
            reasons = mark_kept.get(i, ())
            if b.guid in base_guids:
                reasons = reasons + tuple(f"the base of {n.where}" for n in needs if n.base_guid == b.guid)
            if reasons:
                decisions.append(Decision(SOURCE, name, "bookmark", b.name, b.guid, b.creation, True, reasons))
            else:
                decisions.append(Decision(SOURCE, name, "bookmark", b.name, b.guid, b.creation, False,
                                          dropped_why))
                marks_gone.append(b)
        marks_left = {b.guid for b in state.bookmarks} - {b.guid for b in marks_gone}

        for need in needs:
            if need.base_guid is None or need.base_guid not in gone_guids or cutoff is None:
                continue
            assert policy.stale_after is not None
            how = ("the bookmark of it stays, so incremental sends go on" if need.base_guid in marks_left
                   else "it will need a full send")
            notes.append(f"{need.where}: newest common snapshot @{need.base_name} is "
                         f"{_age(job.now - need.base_creation)} old (stale_after "
                         f"{span_text(policy.stale_after)}): {how}")
        releases.extend(_releases(gone, side.holds, tags))
        if gone or marks_gone:
            batches.append(DestroyBatch(side.host, name, tuple(s.name for s in gone),
                                        tuple(b.name for b in marks_gone)))
    return SidePlan(SOURCE, side.host, policy, tuple(decisions), tuple(releases), tuple(batches),
                    notes=tuple(notes))


# --------------------------------------------------------------------------- host targets


def _plan_host(job: PruneInput, host: HostSide, tags: _Tags) -> SidePlan:
    policy = host.policy
    if policy is None:
        return SidePlan(host.label, host.host, None, notes=(f"{host.label}: no keep policy, not pruned",))
    notes: list[str] = []
    if host.holds is None:
        notes.append(f"{host.label}: holds cannot be listed on {host.host}; a held snapshot fails to "
                     "destroy and is left as it is")
    dropped_why = (f"not kept by the policy ({describe_policy(policy)})",)
    pairs = pair_datasets(job.source.root, host.root, job.source.datasets)
    names = sorted(set(pairs.values()) | set(host.datasets))
    decisions: list[Decision] = []
    releases: list[tuple[str, str]] = []
    batches: list[DestroyBatch] = []
    for tname in names:
        state = host.datasets.get(tname)
        if state is None or not state.exists:
            continue
        where = f"{host.host}:{tname}"
        sname = source_dataset(job.source.root, host.root, tname)
        source = job.source.datasets.get(sname) if sname is not None else None
        shared_at: int | None = None
        if source is not None and source.exists:
            guids = {s.guid for s in source.snapshots} | {b.guid for b in source.bookmarks}
            for i in range(len(state.snapshots) - 1, -1, -1):
                if state.snapshots[i].guid in guids:
                    shared_at = i
                    break
        no_base = ("shares no snapshot with the source (sync decides about it)" if source is not None
                   and source.exists else f"its source dataset {sname or '?'} does not exist "
                                          "(sync decides about it)")
        resume_guid: int | None = None
        if state.resume_token:
            resume_guid = host.resume_from.get(tname)
            if resume_guid is None:
                notes.append(f"{where}: a partial receive is pending and its base is not known here; "
                             "it starts from the newest snapshot, which is kept")
        own = [(i, s) for i, s in enumerate(state.snapshots) if job.select.matches(s.name)]
        kept = keep_by_policy(((i, s.creation) for i, s in own), policy)
        gone: list[Snapshot] = []
        for i, s in own:
            reasons = kept.get(i, ())
            protect: list[str] = []
            if shared_at is None:
                protect.append(no_base)
            elif i == shared_at:
                protect.append("newest snapshot shared with the source (by GUID)")
            elif i > shared_at:
                protect.append("newer than the newest snapshot shared with the source (sync decides about it)")
            if resume_guid is not None and s.guid == resume_guid:
                protect.append("a partial receive resumes from it")
            protect.extend(_hold_reasons(s, host.holds, tags))
            if protect:
                reasons = reasons + tuple(protect)
            if reasons:
                decisions.append(Decision(host.label, tname, "snapshot", s.name, s.guid, s.creation, True, reasons))
            else:
                decisions.append(Decision(host.label, tname, "snapshot", s.name, s.guid, s.creation, False,
                                          dropped_why))
                gone.append(s)
        releases.extend(_releases(gone, host.holds, tags))
        if gone:
            batches.append(DestroyBatch(host.host, tname, tuple(s.name for s in gone)))
    return SidePlan(host.label, host.host, policy, tuple(decisions), tuple(releases), tuple(batches),
                    notes=tuple(notes))


# --------------------------------------------------------------------------- S3 targets


def _plan_s3(job: PruneInput, s3: S3Side) -> SidePlan:
    policy = s3.policy
    if policy is None:
        return SidePlan(s3.label, None, None, notes=(f"{s3.label}: no keep policy, not pruned",))
    dropped_why = f"not kept by the policy ({describe_policy(policy)})"
    decisions: list[Decision] = []
    stored: dict[str, chains.PrunePlan] = {}
    notes: list[str] = []
    for name in sorted(s3.views):
        view = s3.views[name]
        own = [c for c in view.chains
               if all(s.manifest is not None and job.select.matches(s.manifest.snapshot.name) for s in c.sends)]
        own_roots = {c.root for c in own}
        keep = _chain_keep(own, policy)
        for c in view.chains:
            if c.root not in own_roots:
                keep.setdefault(c.root, []).append("holds snapshots this job does not own")
        healthy = [c for c in view.chains if c.healthy]
        if healthy:
            keep.setdefault(healthy[-1].root, []).append("newest complete chain")
        result = chains.plan_prune(view, keep_chains=None, keep_seconds=None, now=job.now,
                                   orphan_grace=job.orphan_grace, keep=keep, drop_reason=dropped_why)
        foreign = [o for o in result.orphans_deleted if not job.select.matches(o.snapshot_name)]
        if foreign:
            result.orphans_deleted = [o for o in result.orphans_deleted if o not in foreign]
            result.orphans_kept.extend(foreign)
        stored[name] = result
        for d in result.chains:
            if d.chain.root not in own_roots:
                continue
            decisions.append(Decision(s3.label, name, "chain", d.chain.root, None, d.chain.newest_creation,
                                      not d.delete, tuple(d.reasons)))
            if d.refused:
                notes.append(f"{s3.label} {name}: {d.refused}")
    return SidePlan(s3.label, None, policy, tuple(decisions), stored=stored, notes=tuple(notes))


def _chain_keep(own: Sequence[chains.Chain], policy: KeepPolicy) -> dict[str, list[str]]:
    """Root → reasons for the chains ``policy`` keeps, each chain dated by its newest snapshot
    (ties: the older chain counts as older)."""
    kept = keep_by_policy(((i, c.newest_creation) for i, c in enumerate(own)), policy)
    return {own[i].root: list(reasons) for i, reasons in kept.items()}


# --------------------------------------------------------------------------- the plan


def plan_prune(job: PruneInput) -> PrunePlan:
    """What every side of one job keeps and drops (see the module docstring for the rules)."""
    tags = _Tags(job.tag_prefix, frozenset(job.tags.values()))
    sides = [_plan_source(job, tags)]
    sides.extend(_plan_host(job, host, tags) for host in job.hosts)
    sides.extend(_plan_s3(job, s3) for s3 in job.s3)
    return PrunePlan(tuple(sides))
