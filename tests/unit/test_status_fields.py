"""``status`` fields (docs/status-json.md) come from the two listings, whatever the plan's verdict.

Histories are generated as an operator's hosts live them: snapshots taken on
either side, syncs (with and without --rollback), rollbacks, renames,
destroys, a target re-created. After each history the row ``status`` builds
(``report_from_plans``, as for a real target) must give the fields an
independent reading of the two listings gives (``oracle`` below, written
from the documentation, not from the code). Refused rows (diverged, no
common base) are where this used to go wrong: the fields were read from the
plan, which has no steps when it refuses.
"""

from __future__ import annotations

import itertools
from dataclasses import dataclass, field, replace

from hypothesis import given, settings
from hypothesis import strategies as st

from tests.unit.test_s3_chains import DS, HOST, linear_chain, record, snap
from zrelay.inventory.model import Endpoint, Job, S3Ref, S3Target
from zrelay.plan import PlanKind, plan
from zrelay.standing import changed_since_newest, standing
from zrelay.status.hosts import report_from_plans
from zrelay.status.s3 import report_from_s3
from zrelay.zfs.model import Bookmark, Capabilities, DatasetState, Snapshot, SnapshotFilter

SRC, DST = "tank/a", "backup/a"
NOW = 2_000_000_000


# --------------------------------------------------------------------------- the oracle


def oracle(source: DatasetState, target: DatasetState, select: SnapshotFilter) -> dict:
    """The documented fields, read straight from the two listings."""
    chosen = [s for s in source.snapshots if select.matches(s.name)]
    newest = max(chosen, key=lambda s: s.createtxg) if chosen else None
    # common base: the newest target snapshot (target order) whose GUID the source holds,
    # as a snapshot or, once pruned there, as a bookmark; named as the source names it
    known = {b.guid: b for b in source.bookmarks}
    known.update({s.guid: s for s in source.snapshots})
    shared = [t for t in target.snapshots if t.guid in known] if target.exists else []
    base = known[max(shared, key=lambda t: t.createtxg).guid] if shared else None
    on_target = {t.guid for t in target.snapshots} if target.exists else set()
    lacking = [s for s in chosen if s.guid not in on_target and (base is None or s.createtxg > base.createtxg)]
    behind = len(lacking)
    if base is None or newest is None:
        lag = None
    elif behind == 0:
        lag = 0
    else:
        lag = max(0, newest.creation - base.creation)
    return {"source_newest": newest.name if newest else None, "common_base": base.name if base else None,
            "behind": behind, "lag_seconds": lag,
            "base_age_seconds": NOW - base.creation if base is not None else None}


# --------------------------------------------------------------------------- histories


@dataclass
class World:
    """A source and a target dataset and the operations that change them."""

    src: list[Snapshot] = field(default_factory=list)
    marks: list[Bookmark] = field(default_factory=list)
    dst: list[Snapshot] | None = None          # None: the target dataset does not exist
    txg: itertools.count = field(default_factory=lambda: itertools.count(1))
    guid: itertools.count = field(default_factory=lambda: itertools.count(1000))
    clock: int = 1_900_000_000

    def source(self) -> DatasetState:
        return DatasetState(SRC, True, tuple(self.src), tuple(self.marks))

    def target(self) -> DatasetState:
        return DatasetState.absent(DST) if self.dst is None else DatasetState(DST, True, tuple(self.dst))

    def tick(self, seconds: int) -> None:
        self.clock += seconds

    def snapshot(self, side: str, name: str) -> None:
        snaps = self.src if side == "src" else self.dst
        if snaps is None or any(s.name == name for s in snaps):
            return
        snaps.append(Snapshot(SRC if side == "src" else DST, name, next(self.guid), next(self.txg), self.clock))

    def sync(self, select: SnapshotFilter, rollback: bool) -> None:
        """What ``zrelay sync`` leaves on the target (and the bookmarks it leaves on the source)."""
        p = plan(self.source(), self.target(), select=select, rollback=rollback)
        if not p.transfers or p.kind is PlanKind.RESUME:
            return
        if p.kind is PlanKind.FULL:
            self.dst = []
        assert self.dst is not None
        if p.rollback_to is not None:
            keep = [t.guid for t in self.dst].index(p.rollback_to.guid) + 1
            del self.dst[keep:]
        order = [s.guid for s in self.src]
        for step in p.steps:
            if step.intermediates and step.base is not None:
                start = order.index(step.base.guid) + 1 if step.base.guid in order else 0
                arriving = self.src[start:order.index(step.snapshot.guid) + 1]
            else:
                arriving = [step.snapshot]
            for s in arriving:
                if all(t.name != s.name for t in self.dst):
                    self.dst.append(Snapshot(DST, s.name, s.guid, next(self.txg), s.creation))
                    if all(b.guid != s.guid for b in self.marks):
                        self.marks.append(Bookmark(SRC, s.name, s.guid, s.createtxg, s.creation))

    def rollback(self, side: str, back: int) -> None:
        snaps = self.src if side == "src" else self.dst
        if snaps and back < len(snaps):
            del snaps[len(snaps) - back:]

    def destroy(self, side: str, index: int) -> None:
        snaps = self.src if side == "src" else self.dst
        if snaps:
            del snaps[index % len(snaps)]

    def rename(self, side: str, index: int, name: str) -> None:
        snaps = self.src if side == "src" else self.dst
        if snaps and all(s.name != name for s in snaps):
            i = index % len(snaps)
            snaps[i] = replace(snaps[i], name=name)

    def recreate_target(self, absent: bool) -> None:
        self.dst = None if absent else []


NAMES = st.sampled_from(["auto-1", "auto-2", "auto-3", "auto-4", "auto-5", "auto-6", "manual", "local", "x"])
SIDES = st.sampled_from(["src", "dst"])
OPS = st.one_of(
    st.tuples(st.just("snapshot"), SIDES, NAMES),
    st.tuples(st.just("snapshot"), st.just("src"), NAMES),
    st.tuples(st.just("sync"), st.booleans()),
    st.tuples(st.just("sync"), st.just(False)),
    st.tuples(st.just("rollback"), SIDES, st.integers(1, 3)),
    st.tuples(st.just("destroy"), SIDES, st.integers(0, 9)),
    st.tuples(st.just("rename"), SIDES, st.integers(0, 9), NAMES),
    st.tuples(st.just("recreate"), st.booleans()),
    st.tuples(st.just("unmark"), st.integers(0, 9)),
)
FILTERS = st.sampled_from([SnapshotFilter(), SnapshotFilter(prefix="auto-"), SnapshotFilter(regex="[135]$")])


def live(ops: list[tuple], select: SnapshotFilter, seconds: list[int]) -> World:
    w = World()
    for op, dt in zip(ops, itertools.cycle(seconds or [60])):
        w.tick(dt)
        kind, *args = op
        if kind == "snapshot":
            w.snapshot(args[0], args[1])
        elif kind == "sync":
            w.sync(select, args[0])
        elif kind == "rollback":
            w.rollback(args[0], args[1])
        elif kind == "destroy":
            w.destroy(args[0], args[1])
        elif kind == "rename":
            w.rename(args[0], args[1], args[2])
        elif kind == "recreate":
            w.recreate_target(args[0])
        elif kind == "unmark" and w.marks:
            del w.marks[args[0] % len(w.marks)]
    return w


def row_of(source: DatasetState, target: DatasetState, select: SnapshotFilter):  # type: ignore[no-untyped-def]
    job = Job("j", Endpoint("nas1", SRC), select=select, targets=(Endpoint("vault", DST),))
    p = plan(source, target, select=select)
    return report_from_plans(job, Endpoint("vault", DST), [p], {SRC: source}, {DST: target}, NOW)


FIELDS = ("source_newest", "common_base", "behind", "lag_seconds", "base_age_seconds")


@settings(max_examples=400, deadline=None)
@given(st.lists(OPS, max_size=25), FILTERS, st.lists(st.integers(0, 7200), min_size=1, max_size=5))
def test_row_fields_equal_the_listings_reading(ops: list[tuple], select: SnapshotFilter, seconds: list[int]) -> None:
    w = live(ops, select, seconds)
    source, target = w.source(), w.target()
    report = row_of(source, target, select)
    row = report.row
    want = oracle(source, target, select)
    if row.state == "in-sync":
        want["lag_seconds"] = 0
    assert {f: getattr(row, f) for f in FIELDS} == want, (row.state, source, target)
    assert report.cells[0].behind == want["behind"] and report.cells[0].base == want["common_base"]


@settings(max_examples=300, deadline=None)
@given(st.lists(OPS, max_size=25), FILTERS)
def test_fields_agree_with_the_planner_where_it_transfers(ops: list[tuple], select: SnapshotFilter) -> None:
    """Where the plan sends, its count and goal are the same facts; refusing does not change them."""
    w = live(ops, select, [60])
    source, target = w.source(), w.target()
    fields = standing(source, target, select)
    p = plan(source, target, select=select)
    if p.kind in (PlanKind.FULL, PlanKind.INCREMENTAL, PlanKind.NOOP, PlanKind.NO_SOURCE_SNAPSHOT):
        assert fields.behind == p.behind
    if p.steps:
        assert fields.source_newest == p.steps[-1].snapshot
    if p.kind is PlanKind.DIVERGED:
        fixed = plan(source, target, select=select, rollback=True)
        if fixed.kind is PlanKind.INCREMENTAL:   # --rollback can fix it: it then sends what the row counts
            assert fixed.behind == fields.behind
    if p.kind in (PlanKind.DIVERGED, PlanKind.NO_COMMON_BASE) and fields.source_newest is not None:
        held = {t.guid for t in target.snapshots}
        assert (fields.behind > 0) == (fields.source_newest.guid not in held
                                       and (fields.common_base is None
                                            or fields.source_newest.createtxg > fields.common_base.createtxg))


# --------------------------------------------------------------------------- the refused rows, by example


def ds(name: str, *snaps: tuple[str, int, int], marks: tuple[Bookmark, ...] = ()) -> DatasetState:
    return DatasetState(name, True, tuple(Snapshot(name, n, g, t, 1_900_000_000 + 3600 * t) for n, g, t in snaps),
                        marks)


def test_diverged_row_names_the_newest_source_snapshot_and_counts_what_the_target_lacks() -> None:
    source = ds(SRC, ("auto-1", 1, 1), ("auto-2", 2, 2), ("auto-3", 3, 3), ("auto-4", 4, 4), ("auto-5", 5, 5))
    target = ds(DST, ("auto-1", 1, 1), ("auto-2", 2, 2), ("auto-3", 3, 3), ("local", 9, 6))
    row = row_of(source, target, SnapshotFilter()).row
    assert row.state == "diverged"
    assert (row.source_newest, row.common_base, row.behind, row.lag_seconds) == ("auto-5", "auto-3", 2, 7200)


def test_no_common_base_row_counts_every_selected_snapshot() -> None:
    source = ds(SRC, ("auto-1", 1, 1), ("manual", 2, 2), ("auto-3", 3, 3))
    target = ds(DST, ("other", 7, 1))
    row = row_of(source, target, SnapshotFilter(prefix="auto-")).row
    assert row.state == "no-common-base"
    assert (row.source_newest, row.common_base, row.behind, row.lag_seconds) == ("auto-3", None, 2, None)


def test_s3_diverged_row_counts_what_the_bucket_lacks() -> None:
    """The source rolled back to @b and took @c and @d again: the bucket lacks both."""
    a, b, c = snap("a", 11, 10), snap("b", 12, 20), snap("c", 13, 30)
    c2, d2 = snap("c", 98, 35), snap("d", 99, 45)
    job = Job("j", Endpoint(HOST, DS), targets=(S3Ref("offsite"),))
    target = S3Target("offsite", "bucket", endpoint="http://127.0.0.1:1", prefix="p/")
    from zrelay.s3 import chains
    views = {(HOST, DS): chains.build_view(HOST, DS, [record(m) for m in linear_chain([a, b, c])])}
    row = report_from_s3(job, S3Ref("offsite"), target, {DS: DatasetState(DS, True, (a, b, c2, d2))}, views,
                         NOW).row
    assert row.state == "diverged"
    assert (row.source_newest, row.common_base, row.behind) == ("d", "b", 2)
    assert row.lag_seconds == d2.creation - b.creation


# --------------------------------------------------------------------------- changed since the newest snapshot


def test_written_tells_a_change_exactly() -> None:
    target = ds(DST, ("auto-1", 1, 1), ("auto-2", 2, 2))
    changed = changed_since_newest(target, written=4096)
    assert changed.changed is True and "@auto-2" in changed.detail and "`written`" in changed.detail
    assert changed_since_newest(target, written=0).changed is False


def test_without_written_only_a_different_size_proves_a_change() -> None:
    target = DatasetState(DST, True, (Snapshot(DST, "auto-1", 1, 1, 0, referenced=1000),))
    assert changed_since_newest(target, referenced=3000, flavor="zfs-fuse").changed is True
    unknown = changed_since_newest(target, referenced=1000, flavor="zfs-fuse")
    assert unknown.changed is None and "zfs-fuse has no `written` property" in unknown.detail
    assert "cannot be known" in unknown.detail
    assert changed_since_newest(DatasetState(DST, True, ()), written=5).changed is None


def test_changed_is_read_with_written_where_the_host_has_it() -> None:
    from zrelay.zfs import commands, parse
    oz, fuse = Capabilities.openzfs("2.3.2"), Capabilities.zfs_fuse()
    assert commands.changed_argv("backup/a", oz, True) == [
        "zfs", "get", "-H", "-p", "-o", "name,property,value", "-t", "filesystem,volume", "written", "-r", "backup/a"]
    assert commands.changed_argv("backup/a", fuse, False) == [
        "zfs", "get", "-H", "-p", "-o", "name,property,value", "referenced", "backup/a"]
    # zfs-fuse lists the snapshots too (no `get -t`): a real answer from the lab
    fuse_out = ("backup/hz\treferenced\t3284992\nbackup/hz@auto-1\treferenced\t1171456\n"
                "backup/hz@auto-2\treferenced\t2228224\n")
    assert parse.parse_dataset_values(fuse_out, "referenced") == {"backup/hz": 3284992}
    assert parse.parse_dataset_values("backup/a\twritten\t0\nbackup/a/c\twritten\t-\n", "written") == {
        "backup/a": 0, "backup/a/c": None}


def test_a_changed_target_makes_a_behind_row_diverged() -> None:
    source = ds(SRC, ("auto-1", 1, 1), ("auto-2", 2, 2), ("auto-3", 3, 3))
    target = ds(DST, ("auto-1", 1, 1), ("auto-2", 2, 2))   # @auto-3 was received, then destroyed
    job = Job("j", Endpoint("nas1", SRC), targets=(Endpoint("vault", DST),))
    p = plan(source, target)
    assert p.kind is PlanKind.INCREMENTAL

    def report(changed):  # type: ignore[no-untyped-def]
        return report_from_plans(job, Endpoint("vault", DST), [p], {SRC: source}, {DST: target}, NOW,
                                 {DST: changed})
    row = report(changed_since_newest(target, written=1 << 20)).row
    assert row.state == "diverged" and row.behind == 1 and row.source_newest == "auto-3"
    assert "modified since most recent snapshot" in row.message and "--rollback" in row.message
    assert f"zfs rollback {DST}@auto-2` on vault" in row.message
    unknown = report(changed_since_newest(target, flavor="zfs-fuse")).row
    assert unknown.state == "behind" and "cannot be known" in unknown.message
    clean = report(changed_since_newest(target, written=0))
    assert clean.row.state == "behind" and "cannot be known" not in clean.row.message
    assert clean.cells[0].state == "behind"
