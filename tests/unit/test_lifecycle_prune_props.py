"""The prune planner over random histories: the rules R1–R6 (zrelay.lifecycle.prune) always hold,
and everything the policy drops that no rule protects is dropped.

Each example is a job with one or two source datasets (a recursive job), snapshots with random
gaps, some not the job's, bookmarks, some snapshots already pruned; up to two host targets
holding random subsets of the history by GUID (or nothing, or their own snapshots), partial
receives, holds by this job and by others; an S3 target with a random chain end and chains; and
random policies (with stale_after) on every side. The expectations are computed here from the
states directly, and checked once more by the replication planner itself: after the prune, a
sync plans the same kind of transfer from the same base as before.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass, replace

from hypothesis import given, settings
from hypothesis import strategies as st

from zrelay.anchors import hold_tag, job_tag_prefix
from zrelay.inventory.policy import KeepPolicy
from zrelay.lifecycle.prune import (ChainEnd, HostSide, PruneInput, PrunePlan, S3Side, SourceSide, plan_prune,
                                    target_dataset)
from zrelay.lifecycle.retention import describe_policy, keep_by_policy
from zrelay.plan import plan as sync_plan
from zrelay.s3 import chains
from zrelay.zfs.model import Bookmark, DatasetState, Snapshot, SnapshotFilter
from tests.unit.test_s3_chains import linear_chain, record

JOB = "hourly"
SEL = SnapshotFilter(prefix="auto_")
SRC = "tank/data"
HOSTS = (("vault:backup/data", "vault", "backup/data"), ("nas2:pool/data", "nas2", "pool/data"))
S3 = "s3:cold"
TAGS = {label: hold_tag(JOB, label) for label, _, _ in HOSTS} | {S3: hold_tag(JOB, S3)}
PREFIX = job_tag_prefix(JOB)
FOREIGN = ("backup-tool", hold_tag("otherjob", "vault:backup/data"), PREFIX + "removed:x")
H, D = 3600, 86400
T0 = 1_760_000_000

EXAMPLES = 300


@dataclass
class History:
    dataset: str
    snaps: list[Snapshot]            # every snapshot ever taken, oldest first


def policies(stale: bool) -> st.SearchStrategy[KeepPolicy | None]:
    small = st.one_of(st.none(), st.integers(0, 4))
    return st.one_of(st.none(), st.builds(
        KeepPolicy, within=st.one_of(st.none(), st.sampled_from([H, D, 3 * D])), last=small, hourly=small,
        daily=small, weekly=small, monthly=small, yearly=st.one_of(st.none(), st.integers(0, 2)),
        stale_after=st.one_of(st.none(), st.sampled_from([2 * D, 10 * D, 40 * D])) if stale else st.none()))


@st.composite
def histories(draw: st.DrawFn, dataset: str, guid0: int) -> History:
    n = draw(st.integers(0, 22))
    gaps = draw(st.lists(st.sampled_from([0, 60, H, 5 * H, D, 3 * D, 20 * D]), min_size=n, max_size=n))
    mine = draw(st.lists(st.integers(0, 4), min_size=n, max_size=n))
    t, out = T0, []
    for i in range(n):
        t += gaps[i]
        name = f"auto_{i:03d}" if mine[i] else f"manual_{i:03d}"
        out.append(Snapshot(dataset, name, guid0 + i, 10 * (i + 1), t))
    return History(dataset, out)


def subset(draw: st.DrawFn, items: list[Snapshot], p: int) -> list[Snapshot]:
    """A random subsequence: each item in with chance p/4."""
    flags = draw(st.lists(st.integers(0, 3), min_size=len(items), max_size=len(items)))
    return [x for x, f in zip(items, flags) if f < p]


def holds_for(draw: st.DrawFn, snaps: list[Snapshot], own: str) -> dict[str, tuple[str, ...]] | None:
    if draw(st.integers(0, 4)) == 0:
        return None
    out: dict[str, tuple[str, ...]] = {}
    for x in subset(draw, snaps, 1):
        out[x.full_name] = tuple(draw(st.lists(st.sampled_from((own,) + FOREIGN), min_size=1, max_size=2,
                                               unique=True)))
    return out


@st.composite
def jobs(draw: st.DrawFn) -> tuple[PruneInput, dict[str, History]]:
    names = [SRC] + ([SRC + "/child"] if draw(st.booleans()) else [])
    hist = {ds: draw(histories(ds, 10_000 * (k + 1))) for k, ds in enumerate(names)}
    newest = max((s.creation for h in hist.values() for s in h.snaps), default=T0)
    now = newest + draw(st.sampled_from([0, H, 2 * D, 30 * D]))

    src_states: dict[str, DatasetState] = {}
    for ds, h in hist.items():
        present = subset(draw, h.snaps, 3)
        if draw(st.booleans()):           # zfs-fuse style: holds cannot be listed, userrefs seen
            present = [replace(x, userrefs=draw(st.integers(0, 1))) for x in present]
        marks = tuple(Bookmark(ds, x.name, x.guid, x.createtxg, x.creation) for x in subset(draw, h.snaps, 2))
        src_states[ds] = DatasetState(ds, True, tuple(present), marks)
    all_src = [x for st_ in src_states.values() for x in st_.snapshots]
    source = SourceSide("nas1", SRC, src_states, holds_for(draw, all_src, draw(st.sampled_from(list(TAGS.values())))),
                        draw(policies(True)))

    hosts: list[HostSide] = []
    for label, host, root in HOSTS[:draw(st.integers(0, 2))]:
        states: dict[str, DatasetState] = {}
        resume_from: dict[str, int] = {}
        for ds, h in hist.items():
            tds = target_dataset(SRC, root, ds)
            mode = draw(st.integers(0, 5))
            if mode == 0:
                continue                                  # not listed: absent
            if mode == 1:
                states[tds] = DatasetState.absent(tds)
                continue
            got = subset(draw, h.snaps, draw(st.integers(1, 4)))
            snaps = [Snapshot(tds, x.name, x.guid, 0, x.creation) for x in got]
            for j in range(draw(st.integers(0, 2))):      # the target's own snapshots
                at = draw(st.integers(0, len(snaps)))
                when = snaps[at - 1].creation + 1 if at else T0
                snaps.insert(at, Snapshot(tds, f"auto_local{j}", 900_000 + 100 * len(hosts) + j, 0, when))
            snaps = [replace(x, createtxg=5 * (i + 1)) for i, x in enumerate(snaps)]
            token = "1-abc-def" if draw(st.integers(0, 5)) == 0 else None
            if token and snaps and draw(st.booleans()):
                resume_from[tds] = draw(st.sampled_from(snaps)).guid
            states[tds] = DatasetState(tds, True, tuple(snaps), resume_token=token)
        all_t = [x for st_ in states.values() for x in st_.snapshots]
        hosts.append(HostSide(label, host, root, states, holds_for(draw, all_t, TAGS[label]), draw(policies(False)),
                              resume_from))

    s3s: list[S3Side] = []
    if draw(st.booleans()):
        ends: dict[str, ChainEnd] = {}
        views: dict[str, chains.DatasetView] = {}
        for ds, h in hist.items():
            stored_end = draw(st.booleans())
            if h.snaps and stored_end:
                e = draw(st.sampled_from(h.snaps))
                ends[ds] = ChainEnd(e.name, e.guid if draw(st.integers(0, 5)) else 1, e.creation)
            stored = subset(draw, h.snaps, 3)
            cuts = sorted(set(draw(st.lists(st.integers(1, max(len(stored) - 1, 1)), max_size=3))))
            runs = [stored[a:b] for a, b in zip([0] + cuts, cuts + [len(stored)]) if stored[a:b]]
            recs: list[chains.SendRecord] = []
            for run in runs:
                broken = draw(st.integers(0, 4)) == 0
                ms = linear_chain(run)
                recs += [record(m, missing=(0,) if broken and i == len(ms) - 1 else (),
                                modified=float(now - draw(st.sampled_from([60, 3 * D]))))
                         for i, m in enumerate(ms)]
            if recs:
                views[ds] = chains.build_view("nas1", ds, recs)
        s3s.append(S3Side(S3, ends, views, draw(policies(False))))
    return PruneInput(SEL, now, source, tuple(hosts), tuple(s3s), PREFIX, TAGS), hist


# --------------------------------------------------------------------------- the expectations


def _blocked(snap: Snapshot, holds: Mapping[str, tuple[str, ...]] | None) -> bool:
    if holds is None:
        return snap.userrefs > 0
    return any(t not in TAGS.values() for t in holds.get(snap.full_name, ()))


def _base(source: DatasetState, target: DatasetState | None) -> tuple[int, int, int] | None:
    """(GUID, source createtxg, creation) of a host target's newest snapshot the source has."""
    if target is None or not target.exists:
        return None
    have = {x.guid: x for x in source.snapshots} | {b.guid: b for b in source.bookmarks}
    for t in reversed(target.snapshots):
        if t.guid in have:
            b = have[t.guid]
            return b.guid, b.createtxg, b.creation
    return None


def _s3_base(source: DatasetState, end: ChainEnd | None) -> tuple[int, int, int] | None:
    if end is None:
        return None
    for b in list(source.snapshots) + list(source.bookmarks):
        if b.guid == end.guid:
            return b.guid, b.createtxg, b.creation
    return None


def _after(state: DatasetState, plan: PrunePlan, side: str) -> DatasetState:
    """The state once the side's drops are destroyed."""
    gone = {(d.kind, d.name) for d in plan.side(side).decisions if d.dataset == state.name and not d.keep}
    return replace(state, snapshots=tuple(x for x in state.snapshots if ("snapshot", x.name) not in gone),
                   bookmarks=tuple(b for b in state.bookmarks if ("bookmark", b.name) not in gone))


def check_source(job: PruneInput, plan: PrunePlan) -> None:
    side, sp = job.source, plan.side("source")
    if side.policy is None:
        assert sp.decisions == () and sp.batches == () and sp.releases == ()
        return
    policy = side.policy
    cutoff = job.now - policy.stale_after if policy.stale_after is not None else None
    drop_reason = (f"not kept by the policy ({describe_policy(policy)})",)
    want_releases = set()
    for ds, state in side.datasets.items():
        own = [x for x in state.snapshots if SEL.matches(x.name)]
        got = {d.name: d for d in sp.decisions if d.dataset == ds and d.kind == "snapshot"}
        assert set(got) == {x.name for x in own}, "R1 and completeness: exactly the job's snapshots"
        bases = [_base(state, h.datasets.get(target_dataset(SRC, h.root, ds))) for h in job.hosts]
        bases += [_s3_base(state, s3.ends.get(ds)) for s3 in job.s3]
        protected: set[str] = {own[-1].name} if own else set()          # the next sync's goal
        for base in bases:
            for x in own:
                if cutoff is not None and x.creation < cutoff:
                    continue
                if base is None or x.guid == base[0] or x.createtxg > base[1]:
                    protected.add(x.name)
        protected |= {x.name for x in own if _blocked(x, side.holds)}
        kept = {own[i].name for i in keep_by_policy([(i, x.creation) for i, x in enumerate(own)], policy)}
        for x in own:
            d = got[x.name]
            assert d.keep == (x.name in kept or x.name in protected), (x.name, d)
            assert d.reasons if d.keep else d.reasons == drop_reason
            if not d.keep and side.holds is not None:
                want_releases |= {(x.full_name, t) for t in side.holds.get(x.full_name, ())}
        dropped = [x.name for x in own if not got[x.name].keep]

        marks = sorted((b for b in state.bookmarks if SEL.matches(b.name)), key=lambda b: (b.createtxg, b.name))
        base_guids = {b[0] for b in bases if b is not None}
        mkept = {marks[i].name for i in keep_by_policy([(i, b.creation) for i, b in enumerate(marks)], policy)}
        gotm = {d.name: d for d in sp.decisions if d.dataset == ds and d.kind == "bookmark"}
        assert set(gotm) == {b.name for b in marks}
        for b in marks:
            assert gotm[b.name].keep == (b.name in mkept or b.guid in base_guids), "R5"
        mdropped = [b.name for b in marks if not gotm[b.name].keep]

        batches = [b for b in sp.batches if b.dataset == ds]
        if dropped or mdropped:
            assert [(b.snapshots, b.bookmarks) for b in batches] == [(tuple(dropped), tuple(mdropped))]
        else:
            assert batches == []

        # the stale notes: a host target whose base snapshot goes is told
        for h, base in zip(job.hosts, bases):
            if base is not None and base[0] in {x.guid for x in own if not got[x.name].keep}:
                where = f"{h.host}:{target_dataset(SRC, h.root, ds)}"
                assert any(n.startswith(where + ": newest common snapshot") for n in sp.notes)
    assert set(sp.releases) == want_releases
    assert all(t in TAGS.values() for _, t in sp.releases)


def check_host(job: PruneInput, host: HostSide, plan: PrunePlan) -> None:
    hp = plan.side(host.label)
    if host.policy is None:
        assert hp.decisions == () and hp.batches == ()
        return
    for tds, state in host.datasets.items():
        if not state.exists:
            continue
        own = [(i, x) for i, x in enumerate(state.snapshots) if SEL.matches(x.name)]
        got = {d.name: d for d in hp.decisions if d.dataset == tds}
        assert set(got) == {x.name for _, x in own}, "R1 and completeness on the target"
        source = job.source.datasets.get(SRC + tds[len(host.root):])
        shared = None
        if source is not None:
            guids = {x.guid for x in source.snapshots} | {b.guid for b in source.bookmarks}
            shared = max((i for i, x in enumerate(state.snapshots) if x.guid in guids), default=None)
        kept = keep_by_policy([(i, x.creation) for i, x in own], host.policy)
        for i, x in own:
            protected = (shared is None or i >= shared or _blocked(x, host.holds)
                         or x.guid == host.resume_from.get(tds))
            assert got[x.name].keep == (i in kept or protected), (tds, x.name, got[x.name])
        [*batches] = [b for b in hp.batches if b.dataset == tds]
        dropped = tuple(x.name for _, x in own if not got[x.name].keep)
        assert [b.snapshots for b in batches] == ([dropped] if dropped else [])


def check_sync_still_plans_the_same(job: PruneInput, plan: PrunePlan) -> None:
    """R2 + R3 seen from the replication planner: the same transfer from the same base."""
    policy = job.source.policy
    cutoff = job.now - policy.stale_after if policy is not None and policy.stale_after is not None else None
    for host in job.hosts:
        for ds, state in job.source.datasets.items():
            tds = target_dataset(SRC, host.root, ds)
            target = host.datasets.get(tds, DatasetState.absent(tds))
            base = _base(state, target)
            if cutoff is not None and base is not None and base[2] < cutoff:
                continue                                           # stale: told to need a full send
            before = sync_plan(state, target, select=SEL)
            src_after = _after(state, plan, "source") if policy is not None else state
            dst_after = _after(target, plan, host.label) if host.policy is not None and target.exists else target
            after = sync_plan(src_after, dst_after, select=SEL)
            assert after.kind == before.kind, (before.reason, after.reason)
            assert (after.base.guid if after.base else None) == (before.base.guid if before.base else None)


def check_s3(job: PruneInput, s3: S3Side, plan: PrunePlan) -> None:
    sp = plan.side(S3)
    if s3.policy is None:
        assert sp.decisions == () and not sp.stored
        return
    for ds, view in s3.views.items():
        stored = sp.stored[ds]
        gone = set(stored.keys_in_order())
        own = [c for c in view.chains if all(SEL.matches(x.snapshot_name) for x in c.sends)]
        own_ids = {id(c) for c in own}
        got = {d.name: d for d in sp.decisions if d.dataset == ds}
        assert set(got) == {c.root for c in own}
        kept = {own[i].root for i in keep_by_policy([(i, c.newest_creation) for i, c in enumerate(own)], s3.policy)}
        healthy = [c for c in view.chains if c.healthy]
        for c in view.chains:
            deleted = [any(k in gone for k in x.keys) for x in c.sends]
            assert all(deleted) or not any(deleted), "R4: whole chains only"
            must_keep = (id(c) not in own_ids or c is view.chains[-1] or (healthy and c is healthy[-1])
                         or c.root in kept)
            assert deleted[0] != bool(must_keep), (c.root, must_keep)
            if id(c) in own_ids:
                assert got[c.root].keep == bool(must_keep)
        for o in view.orphans:
            if any(k in gone for k in o.keys):
                assert SEL.matches(o.snapshot_name)


@settings(max_examples=EXAMPLES, deadline=None)
@given(jobs())
def test_prune_rules_hold_over_random_histories(case: tuple[PruneInput, dict[str, History]]) -> None:
    job, _ = case
    plan = plan_prune(job)
    assert [s.side for s in plan.sides] == ["source"] + [h.label for h in job.hosts] + [s.label for s in job.s3]
    check_source(job, plan)
    for host in job.hosts:
        check_host(job, host, plan)
    for s3 in job.s3:
        check_s3(job, s3, plan)
    check_sync_still_plans_the_same(job, plan)
