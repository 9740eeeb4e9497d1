"""Chains of stored sends: health, push planning, restore paths, pruning. Pure: no I/O.

Terms (docs/s3-layout.md): a **send** is one stored ``zfs send`` (its stream
objects plus its manifest); a **chain** is a full send and every incremental
that descends from it (``parent_send`` links); a send is **restorable** when
it and all its ancestors are present with the sizes their manifests record;
a chain is **broken** from the first send that is not. An **orphan** is a send
directory with stream objects but no (readable) manifest: a push that died.

Why chains are the unit of deletion: an incremental is useless without every
send before it, so pruning removes whole chains only, newest sends first, and
an interrupted prune leaves a shorter chain, never a headless one.
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any

from zrelay.errors import NewestNotRestorable, RestoreRefused
from zrelay.plan import PlanKind, SendStep, plan
from zrelay.s3.manifest import KeyInfo, Manifest, make_send_id, send_ref
from zrelay.units import human_bytes
from zrelay.zfs.model import Bookmark, DatasetState, Snapshot, SnapshotFilter

DEFAULT_ORPHAN_GRACE = 24 * 3600.0  # a push may still be writing a send this young


@dataclass(frozen=True, slots=True)
class Listed:
    """One object as a bucket listing shows it."""

    key: str
    size: int
    modified: float = 0.0          # unix seconds
    storage_class: str = "STANDARD"


@dataclass(frozen=True, slots=True)
class ClassCost:
    """Objects and bytes of one storage class, as the bucket listing reports them."""

    objects: int = 0
    bytes: int = 0


@dataclass(frozen=True, slots=True)
class StorageCost:
    """What some stored objects cost: their count, bytes and storage classes, from the listing
    (ListObjectsV2 ``Size`` and ``StorageClass``), never from a manifest. Manifests count too:
    they are objects the bucket bills like any other."""

    objects: int = 0
    bytes: int = 0
    classes: Mapping[str, ClassCost] = field(default_factory=dict)

    @classmethod
    def of(cls, listed: Iterable[Listed]) -> StorageCost:
        objects = size = 0
        classes: dict[str, ClassCost] = {}
        for item in listed:
            objects += 1
            size += item.size
            was = classes.get(item.storage_class, ClassCost())
            classes[item.storage_class] = ClassCost(was.objects + 1, was.bytes + item.size)
        return cls(objects, size, dict(sorted(classes.items())))

    @classmethod
    def combined(cls, costs: Iterable[StorageCost]) -> StorageCost:
        objects = size = 0
        classes: dict[str, ClassCost] = {}
        for cost in costs:
            objects += cost.objects
            size += cost.bytes
            for name, c in cost.classes.items():
                was = classes.get(name, ClassCost())
                classes[name] = ClassCost(was.objects + c.objects, was.bytes + c.bytes)
        return cls(objects, size, dict(sorted(classes.items())))

    def summary(self) -> str:
        """``6.0 MiB in 8 objects, STANDARD`` (each class with its bytes when there are several)."""
        if len(self.classes) > 1:
            where = ", ".join(f"{name} {human_bytes(c.bytes)}" for name, c in self.classes.items())
        else:
            where = next(iter(self.classes), "")
        head = f"{human_bytes(self.bytes)} in {self.objects} object{'s' if self.objects != 1 else ''}"
        return f"{head}, {where}" if where else head

    def to_dict(self) -> dict[str, Any]:
        return {"objects": self.objects, "bytes": self.bytes,
                "storage_classes": {k: {"objects": c.objects, "bytes": c.bytes} for k, c in self.classes.items()}}


@dataclass
class SendRecord:
    """One send directory: its manifest (if readable) and the objects listed under it."""

    host: str
    dataset: str
    ref: str                                   # @snapshot/sendid
    directory: str                             # full key prefix, ending in '/'
    manifest: Manifest | None = None
    manifest_error: str | None = None
    manifest_listed: bool = False
    files: dict[str, Listed] = field(default_factory=dict)   # name in directory → listing

    @property
    def snapshot_name(self) -> str:
        return self.ref.split("/", 1)[0][1:]

    @property
    def createtxg(self) -> int:
        return self.manifest.snapshot.createtxg if self.manifest else 0

    @property
    def keys(self) -> list[str]:
        """Every key of this send, the manifest first."""
        names = sorted(self.files, key=lambda n: (n != "manifest.json", n))
        return [self.directory + n for n in names]

    @property
    def stored_bytes(self) -> int:
        return sum(f.size for n, f in self.files.items() if n != "manifest.json")

    @property
    def newest_modified(self) -> float:
        return max((f.modified for f in self.files.values()), default=0.0)

    @property
    def cost(self) -> StorageCost:
        """Every object of this send as listed, its manifest included."""
        return StorageCost.of(self.files.values())

    def problems(self) -> list[str]:
        """Why this send cannot be used on its own (empty when it can)."""
        if self.manifest is None:
            return [self.manifest_error or "no manifest (an unfinished or interrupted push)"]
        out = []
        for obj in self.manifest.objects:
            listed = self.files.get(obj.name)
            if listed is None:
                out.append(f"object {self.directory}{obj.name} is missing")
            elif listed.size != obj.size:
                out.append(f"object {self.directory}{obj.name} is {listed.size} bytes, "
                           f"the manifest says {obj.size}")
        return out

    @property
    def ok(self) -> bool:
        return not self.problems()


@dataclass
class Chain:
    """A full send and its descendants, oldest first (``sends``)."""

    root: str                                  # ref of the full send
    sends: list[SendRecord]
    restorable: set[str]                       # refs restorable from the root
    broken_at: str | None = None               # ref (or expected ref) where the chain breaks
    broken_reason: str = ""

    @property
    def healthy(self) -> bool:
        return self.broken_at is None

    @property
    def full(self) -> SendRecord | None:
        for s in self.sends:
            if s.ref == self.root:
                return s
        return None

    @property
    def tip(self) -> SendRecord | None:
        """The newest restorable send."""
        good = [s for s in self.sends if s.ref in self.restorable]
        return max(good, key=lambda s: s.createtxg) if good else None

    @property
    def stored_bytes(self) -> int:
        return sum(s.stored_bytes for s in self.sends)

    @property
    def cost(self) -> StorageCost:
        """Every object of every send of this chain as listed (what the bucket bills for it)."""
        return StorageCost.of(f for s in self.sends for f in s.files.values())

    @property
    def manifest_size(self) -> int:
        """The streams' bytes as the chain's manifests record them (beside the listed ``cost``)."""
        return sum(s.manifest.size for s in self.sends if s.manifest is not None)

    @property
    def started(self) -> int:
        """Creation time of the full's snapshot (0 when the full is missing)."""
        full = self.full
        return full.manifest.snapshot.creation if full and full.manifest else 0

    @property
    def newest_creation(self) -> int:
        return max((s.manifest.snapshot.creation for s in self.sends if s.manifest), default=0)

    def order_key(self) -> tuple[int, int, str]:
        full = self.full
        txg = full.createtxg if full else min((s.createtxg for s in self.sends), default=0)
        return (txg, self.started, self.root)

    def path_to(self, ref: str) -> list[SendRecord]:
        """Sends from the full to ``ref`` along parent links (``ref`` must be restorable)."""
        by_ref = {s.ref: s for s in self.sends}
        out: list[SendRecord] = []
        cur: str | None = ref
        while cur is not None:
            send = by_ref[cur]
            out.append(send)
            cur = send.manifest.parent_send if send.manifest else None
        return list(reversed(out))


@dataclass
class DatasetView:
    """All a target holds for one source dataset: chains oldest first, and orphan sends."""

    host: str
    dataset: str
    chains: list[Chain] = field(default_factory=list)
    orphans: list[SendRecord] = field(default_factory=list)

    @property
    def endpoint(self) -> str:
        return f"{self.host}:{self.dataset}"

    @property
    def healthy(self) -> bool:
        return all(c.healthy for c in self.chains)

    @property
    def newest_chain(self) -> Chain | None:
        return self.chains[-1] if self.chains else None

    @property
    def cost(self) -> StorageCost:
        """Every object stored for this dataset as listed: its chains and its unfinished sends."""
        return StorageCost.of(f for s in [*(s for c in self.chains for s in c.sends), *self.orphans]
                              for f in s.files.values())

    def restorable_sends(self) -> list[tuple[Chain, SendRecord]]:
        return [(c, s) for c in self.chains for s in c.sends if s.ref in c.restorable]


# --------------------------------------------------------------------------- building


def group_sends(listing: list[tuple[KeyInfo, Listed]]) -> dict[tuple[str, str], dict[str, SendRecord]]:
    """Sends per (host, dataset) from parsed listing entries (manifests not read yet)."""
    out: dict[tuple[str, str], dict[str, SendRecord]] = {}
    for info, listed in listing:
        sends = out.setdefault((info.host, info.dataset), {})
        directory = listed.key[:len(listed.key) - len(info.name)]
        rec = sends.get(info.ref)
        if rec is None:
            rec = sends[info.ref] = SendRecord(info.host, info.dataset, info.ref, directory)
        rec.files[info.name] = listed
        if info.is_manifest:
            rec.manifest_listed = True
    return out


def build_view(host: str, dataset: str, sends: list[SendRecord]) -> DatasetView:
    """Chains and orphans of one dataset from its sends (manifests already attached)."""
    view = DatasetView(host, dataset)
    groups: dict[str, list[SendRecord]] = {}
    for s in sends:
        if s.manifest is None:
            view.orphans.append(s)
            continue
        groups.setdefault(s.manifest.chain, []).append(s)
    for root, members in groups.items():
        view.chains.append(_build_chain(root, members))
    view.chains.sort(key=Chain.order_key)
    view.orphans.sort(key=lambda s: s.ref)
    return view


def _build_chain(root: str, members: list[SendRecord]) -> Chain:
    members = sorted(members, key=lambda s: (s.createtxg, s.ref))
    by_ref = {s.ref: s for s in members}
    restorable: set[str] = set()
    broken: list[tuple[int, str, str]] = []   # (createtxg, ref, reason)
    memo: dict[str, bool] = {}

    def good(ref: str, depth: int = 0) -> bool:
        if ref in memo:
            return memo[ref]
        send = by_ref.get(ref)
        if send is None or send.manifest is None or depth > len(members):
            memo[ref] = False
            return False
        ok = send.ok
        if ok and not send.manifest.full:
            parent = send.manifest.parent_send
            ok = parent is not None and good(parent, depth + 1)
        memo[ref] = ok
        return ok

    for s in members:
        if good(s.ref):
            restorable.add(s.ref)
    if root not in by_ref:
        reason = f"the full send {root} is missing"
        return Chain(root, members, set(), root, reason)
    for s in members:
        if s.ref in restorable:
            continue
        problems = s.problems()
        if problems:
            broken.append((s.createtxg, s.ref, f"{s.ref}: {problems[0]}"))
        else:
            parent = s.manifest.parent_send if s.manifest else None
            if parent not in by_ref:
                broken.append((s.createtxg - 1, str(parent),
                               f"{parent}: the send {s.ref} builds on is missing"))
    if not broken:
        return Chain(root, members, restorable)
    broken.sort()
    _, at, reason = broken[0]
    return Chain(root, members, restorable, at, reason)


# --------------------------------------------------------------------------- push planning


@dataclass(frozen=True, slots=True)
class PushStep:
    """One stored send to make: ``base`` None is a full stream; a Bookmark base (the source
    destroyed the snapshot the chain ends at, kept its bookmark) is ``-i ds#mark``."""

    snapshot: Snapshot
    base: Snapshot | Bookmark | None
    parent_send: str | None


@dataclass(frozen=True, slots=True)
class PushPlan:
    kind: str                       # full | incremental | noop | refused | no-source-snapshot
    dataset: str
    steps: tuple[PushStep, ...] = ()
    chain: str | None = None        # ref of the chain extended (None: the first step starts one)
    reason: str = ""
    options: tuple[str, ...] = ()

    @property
    def transfers(self) -> bool:
        return bool(self.steps)

    @property
    def refused(self) -> bool:
        return self.kind == "refused"


def s3_state(dataset: str, chain: Chain) -> DatasetState:
    """The chain's restorable snapshots as a target state the host planner understands."""
    snaps: dict[int, Snapshot] = {}
    for s in sorted((s for s in chain.sends if s.ref in chain.restorable), key=lambda s: s.createtxg):
        m = s.manifest
        assert m is not None
        snaps.setdefault(m.snapshot.guid, Snapshot(dataset, m.snapshot.name, m.snapshot.guid,
                                                   m.snapshot.createtxg, m.snapshot.creation))
    return DatasetState(dataset, exists=True, snapshots=tuple(snaps.values()))


def plan_push(source: DatasetState, view: DatasetView | None, *, select: SnapshotFilter = SnapshotFilter(),
              new_chain: bool = False) -> PushPlan:
    """What to upload so the target holds the newest selected source snapshot.

    The newest chain is extended with one ``-i`` send per selected snapshot
    after its newest snapshot (matched by GUID through the host planner), so
    every stored snapshot can be restored on its own. Without a chain the
    first selected snapshot is sent full and the rest follow as incrementals
    (the target mirrors the source's history). ``new_chain`` starts a new
    chain at the newest selected snapshot. A broken or diverged newest chain
    is refused: an incremental on it could not be restored.
    """
    name = source.name
    selected = [s for s in source.snapshots if select.matches(s.name)]
    if not selected:
        return PushPlan("no-source-snapshot", name,
                        reason=f"{name} has no snapshot to push"
                               f"{' matching the job filter' if source.snapshots else ''}",
                        options=("take a snapshot first: `zrelay s3-push --snapshot`",))
    goal = selected[-1]
    chain = view.newest_chain if view else None
    fix = f"start a new chain with `zrelay s3-push --full {view.endpoint if view else name}`"
    if new_chain:
        roots = {c.root for c in view.chains} if view else set()
        ref = send_ref(goal.name, make_send_id(goal.guid, None))
        if ref in roots:
            return PushPlan("noop", name, reason=f"a chain starting with a full of @{goal.name} already exists")
        return PushPlan("full", name, (PushStep(goal, None, None),),
                        reason=f"new chain requested: full send of {name}@{goal.name}")
    if chain is None:
        absent = DatasetState.absent(name)
        p = plan(source, absent, select=select, resume_supported=False)
        steps = _expand(source, p.steps, select, None)
        return PushPlan("full", name, steps, reason=f"nothing stored yet: {_describe_steps(steps)}")
    if not chain.healthy:
        return PushPlan("refused", name, chain=chain.root,
                        reason=(f"the newest chain ({chain.root}) is broken ({chain.broken_reason}); "
                                "an incremental on it could not be restored"),
                        options=(fix, "or repair the missing object and re-run"))
    state = s3_state(name, chain)
    p = plan(source, state, select=select, resume_supported=False)
    if p.kind is PlanKind.NOOP:
        newest = state.newest.name if state.newest else "?"
        return PushPlan("noop", name, chain=chain.root,
                        reason=f"up to date: @{newest} is stored (chain {chain.root})")
    if p.kind is PlanKind.INCREMENTAL and p.steps and p.rollback_to is None:
        tip = _send_for(chain, p.steps[0].base) if p.steps[0].base else None
        steps = _expand(source, p.steps, select, tip.ref if tip else None)
        return PushPlan("incremental", name, steps, chain=chain.root,
                        reason=f"chain {chain.root} ends at @{p.steps[0].base.name if p.steps[0].base else '?'}: "
                               f"{_describe_steps(steps)}")
    if p.kind is PlanKind.NO_COMMON_BASE:
        why = f"no snapshot of the newest chain ({chain.root}) exists on {name} any more (by GUID)"
    elif p.kind is PlanKind.DIVERGED:
        why = (f"the newest chain ({chain.root}) holds {', '.join('@' + c for c in p.conflicts)}, "
               f"which {name} no longer has (by GUID)")
    else:
        why = p.reason
    return PushPlan("refused", name, chain=chain.root, reason=why, options=(fix,))


def _describe_steps(steps: tuple[PushStep, ...]) -> str:
    """``full send of @a, then 3 incremental sends (@b … @d)`` and the like."""
    incs = [(s.base, s.snapshot) for s in steps if s.base is not None]
    parts = []
    if steps and steps[0].base is None:
        parts.append(f"full send of @{steps[0].snapshot.name}")
    if len(incs) == 1:
        parts.append(f"1 incremental send (@{incs[0][0].name} → @{incs[0][1].name})")
    elif incs:
        parts.append(f"{len(incs)} incremental sends (@{incs[0][1].name} … @{incs[-1][1].name})")
    return ", then ".join(parts) if parts else "nothing to send"


def _send_for(chain: Chain, snap: Snapshot | Bookmark) -> SendRecord | None:
    """The restorable send of ``chain`` that stores ``snap`` (newest if several; a bookmark
    matches the send of the snapshot it was made from: same GUID)."""
    hits = [s for s in chain.sends if s.ref in chain.restorable and s.manifest
            and s.manifest.snapshot.guid == snap.guid]
    return max(hits, key=lambda s: s.createtxg) if hits else None


def _expand(source: DatasetState, steps: tuple[SendStep, ...], select: SnapshotFilter, parent: str | None) -> tuple[PushStep, ...]:
    """One step per snapshot: a ``-I`` step becomes ``-i`` steps over the snapshots it carries."""
    index = {s.guid: i for i, s in enumerate(source.snapshots)}
    out: list[PushStep] = []
    prev_parent = parent
    for step in steps:
        if step.base is not None and step.intermediates:
            lo, hi = index[step.base.guid], index[step.snapshot.guid]
            chain_snaps = [s for s in source.snapshots[lo + 1:hi + 1] if select.matches(s.name)]
            base = step.base
            for s in chain_snaps:
                out.append(PushStep(s, base, prev_parent))
                base, prev_parent = s, None
        else:
            out.append(PushStep(step.snapshot, step.base, prev_parent))
            prev_parent = None
    return tuple(out)


# --------------------------------------------------------------------------- restore paths


@dataclass(frozen=True)
class RestorePlan:
    kind: str                                 # restore | noop
    chain: Chain
    path: tuple[SendRecord, ...]              # what to receive, in order
    skipped: tuple[SendRecord, ...] = ()      # already on the target
    reason: str = ""


def _newest_not_restorable(view: DatasetView, newest: SendRecord, chain: Chain,
                           restorable: SendRecord | None) -> NewestNotRestorable:
    """The refusal of the newest stored snapshot ``newest``, which ``chain`` breaks before."""
    lost = [s.snapshot_name for s in chain.sends if s.ref not in chain.restorable]
    reason = chain.broken_reason
    where = reason if chain.broken_at and reason.startswith(chain.broken_at) else f"{chain.broken_at} ({reason})"
    return NewestNotRestorable(
        f"the newest stored snapshot of {view.endpoint} is @{newest.snapshot_name}, and it cannot be "
        f"restored: chain {chain.root} breaks at {where}, so {', '.join('@' + n for n in lost)} "
        "cannot be restored",
        view.endpoint, newest.snapshot_name, restorable.snapshot_name if restorable is not None else None)


def newest_stored(view: DatasetView) -> SendRecord | None:
    """The stored send of the newest snapshot, restorable or not: highest createtxg on the source
    (names can be reused, creation times can repeat; createtxg only grows)."""
    sends = [s for c in view.chains for s in c.sends if s.manifest is not None]
    return max(sends, key=lambda s: (s.createtxg, s.ref in _chain_of(view, s).restorable)) if sends else None


def _chain_of(view: DatasetView, send: SendRecord) -> Chain:
    return next(c for c in view.chains if any(s is send for s in c.sends))


def plan_restore(view: DatasetView, snapshot: str | None, target: DatasetState) -> RestorePlan:
    """The sends to receive so ``target`` gains ``snapshot`` (newest stored when None).

    Matching is by GUID. Without ``snapshot`` the newest stored snapshot
    (``newest_stored``) is the goal, and a broken chain that keeps it from
    being restored is refused (NewestNotRestorable), never answered with an
    older one. An absent target gets the whole path from the full;
    an existing one continues after the newest path snapshot it holds, and is
    refused when it shares none or holds snapshots after that point that are
    not on the path (it would have to be rolled back: zrelay does not do that
    on restore).
    """
    if snapshot is None:
        newest = newest_stored(view)
        good = view.restorable_sends()
        if newest is not None and newest.manifest is not None and not any(
                s.manifest is not None and s.manifest.snapshot.guid == newest.manifest.snapshot.guid for _, s in good):
            best = max((s for _, s in good), key=lambda s: s.createtxg, default=None)
            raise _newest_not_restorable(view, newest, _chain_of(view, newest), best)
    candidates = [(c, s) for c, s in view.restorable_sends()
                  if snapshot is None or s.snapshot_name == snapshot]
    if not candidates:
        stored = [s for c in view.chains for s in c.sends if s.snapshot_name == snapshot]
        if snapshot is not None and stored:
            chain = next(c for c in view.chains if stored[0] in c.sends)
            raise RestoreRefused(f"@{snapshot} of {view.endpoint} cannot be restored: chain {chain.root} "
                                 f"is broken ({chain.broken_reason})")
        names = sorted({s.snapshot_name for _, s in view.restorable_sends()})
        if snapshot is None:
            raise RestoreRefused(f"no restorable send of {view.endpoint} is stored")
        raise RestoreRefused(f"no send of {view.endpoint}@{snapshot} is stored; restorable: "
                             + (", ".join("@" + n for n in names) or "none"))
    if snapshot is None:
        newest_txg = max(s.createtxg for _, s in candidates)
        candidates = [(c, s) for c, s in candidates if s.createtxg == newest_txg]
    options: list[RestorePlan] = []
    problems: list[str] = []
    for chain, send in candidates:
        path = chain.path_to(send.ref)
        try:
            options.append(_against_target(chain, path, target))
        except RestoreRefused as exc:
            problems.append(str(exc))
    if not options:
        raise RestoreRefused(problems[0])
    return min(options, key=lambda p: (len(p.path), -p.chain.order_key()[0]))


def _against_target(chain: Chain, path: list[SendRecord], target: DatasetState) -> RestorePlan:
    goal = path[-1]
    assert goal.manifest is not None
    if not target.exists:
        return RestorePlan("restore", chain, tuple(path),
                           reason=f"{target.name} does not exist: receive {len(path)} send(s) from the full")
    on_target = target.by_guid()
    if goal.manifest.snapshot.guid in on_target:
        return RestorePlan("noop", chain, (), tuple(path),
                           reason=f"{target.name} already holds @{goal.snapshot_name}")
    start = None
    for i in range(len(path) - 1, -1, -1):
        m = path[i].manifest
        if m is not None and m.snapshot.guid in on_target:
            start = i
            break
    if start is None:
        raise RestoreRefused(f"{target.name} exists but holds no snapshot of the stored chain {chain.root}; "
                             "restore into a new dataset (--to HOST:NEW) or destroy it first")
    base = on_target[path[start].manifest.snapshot.guid]  # type: ignore[union-attr]
    later = [t for t in target.snapshots if t.createtxg > base.createtxg]
    if later:
        raise RestoreRefused(f"{target.name} has snapshots after @{base.name} "
                             f"({', '.join('@' + t.name for t in later)}) that the stored chain lacks; "
                             "restore into a new dataset or roll the target back first")
    rest = path[start + 1:]
    return RestorePlan("restore", chain, tuple(rest), tuple(path[:start + 1]),
                       reason=f"{target.name} holds @{base.name}: receive {len(rest)} incremental send(s)")


# --------------------------------------------------------------------------- pruning


@dataclass
class ChainDecision:
    chain: Chain
    delete: bool
    reasons: list[str] = field(default_factory=list)
    refused: str | None = None        # set when the rules said delete but safety kept it


@dataclass
class PrunePlan:
    dataset: DatasetView
    chains: list[ChainDecision]
    orphans_deleted: list[SendRecord] = field(default_factory=list)
    orphans_kept: list[SendRecord] = field(default_factory=list)

    @property
    def refused(self) -> list[ChainDecision]:
        return [d for d in self.chains if d.refused]

    def keys_in_order(self) -> list[str]:
        """Keys to delete, newest send first and each send's manifest before its objects.

        Newest first: a prune that stops half way leaves a shorter chain, never
        an incremental without its base; manifest first: a half-deleted send is
        an orphan (cleaned later), not a manifest naming a missing object.
        """
        sends: list[SendRecord] = []
        for d in self.chains:
            if d.delete:
                sends.extend(d.chain.sends)
        sends.sort(key=lambda s: s.createtxg, reverse=True)
        keys: list[str] = []
        for s in sends + self.orphans_deleted:
            keys.extend(s.keys)
        return keys


def plan_prune(view: DatasetView, *, keep_chains: int | None, keep_seconds: float | None, now: float,
               orphan_grace: float = DEFAULT_ORPHAN_GRACE,
               keep: Mapping[str, Sequence[str]] | None = None,
               drop_reason: str = "not kept by the policy",
               locked: Mapping[str, str] | None = None) -> PrunePlan:
    """Which chains (and orphan sends) of one dataset go.

    A chain is kept when it is one of the newest ``keep_chains`` or holds a
    snapshot created within ``keep_seconds``, or when ``keep`` (chain root →
    reasons: a calendar policy the caller applied, see zrelay.lifecycle)
    names it; the newest chain is always kept. Safety over the rules: when
    every kept chain is broken, the newest complete chain is kept too, and
    the decision records the refusal. A chain no rule keeps gets
    ``drop_reason`` when only ``keep`` decided. ``locked`` (chain root or
    orphan send ref → why: S3 Object Lock retention not over yet, see
    zrelay.s3.retention) is kept whatever the rules say: S3 would refuse.
    """
    if keep_chains is None and keep_seconds is None and keep is None:
        raise ValueError("pruning needs --keep-chains and/or --keep-days")
    if keep_chains is not None and keep_chains < 1:
        raise ValueError("--keep-chains must be at least 1 (the newest chain is always kept)")
    newest_first = list(reversed(view.chains))
    decisions: list[ChainDecision] = []
    for i, chain in enumerate(newest_first):
        reasons: list[str] = []
        if i == 0:
            reasons.append("newest chain")
        elif keep_chains is not None and i < keep_chains:
            reasons.append(f"one of the newest {keep_chains} chains")
        if keep_seconds is not None and chain.newest_creation >= now - keep_seconds:
            reasons.append(f"has a snapshot from the last {_days(keep_seconds)}")
        if keep is not None and chain.root in keep:
            reasons.extend(r for r in keep[chain.root] if r not in reasons)
        if locked and chain.root in locked:
            reasons.append(locked[chain.root])
        if reasons:
            decisions.append(ChainDecision(chain, False, reasons))
        else:
            why = []
            if keep_chains is not None:
                why.append(f"older than the newest {keep_chains} chain(s)")
            if keep_seconds is not None:
                why.append(f"no snapshot from the last {_days(keep_seconds)}")
            if keep is not None or not why:
                why.append(drop_reason)
            decisions.append(ChainDecision(chain, True, why))
    kept_healthy = any(not d.delete and d.chain.healthy for d in decisions)
    if not kept_healthy:
        for d in decisions:
            if d.delete and d.chain.healthy:
                broken = [k.chain for k in decisions if not k.delete]
                what = "; ".join(f"{c.root} broken: {c.broken_reason}" for c in broken) or "none"
                d.delete = False
                d.refused = (f"deleting chain {d.chain.root} would leave {view.endpoint} without a complete "
                             f"chain (kept: {what})")
                d.reasons.append("newest complete chain")
                break
    plan_ = PrunePlan(view, list(reversed(decisions)))
    for orphan in view.orphans:
        if now - orphan.newest_modified >= orphan_grace and not (locked and orphan.ref in locked):
            plan_.orphans_deleted.append(orphan)
        else:
            plan_.orphans_kept.append(orphan)
    return plan_


def _days(seconds: float) -> str:
    days = seconds / 86400
    return f"{days:g} day{'s' if days != 1 else ''}"
