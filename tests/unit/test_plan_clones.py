"""Clones: a clone whose origin snapshot the target side holds (or receives first in the same run)
is received as a clone, from its origin (``zfs send -i pool/origin@snap``); origins are planned
before their clones; anything else is sent in full and the reason says why."""

from __future__ import annotations

import zlib

from hypothesis import given, settings
from hypothesis import strategies as st

from zrelay.actions import Action, ActionKind
from zrelay.engine.executor import dependencies
from zrelay.plan import PlanKind, describe, origins_first, plan_recursive
from zrelay.zfs.model import DatasetState, Snapshot, SnapshotFilter


def ds(name: str, snaps: str = "", origin: str | None = None, txg0: int = 0) -> DatasetState:
    """A dataset with snapshots ``"a b c"`` (createtxg after ``txg0``), a clone of ``origin``."""
    out = tuple(Snapshot(name, s, zlib.crc32(f"{name}@{s}".encode()), createtxg=txg0 + 10 * (i + 1))
                for i, s in enumerate(snaps.split()))
    return DatasetState(name, snapshots=out, origin=origin)


def job(*states: DatasetState) -> dict[str, DatasetState]:
    return {s.name: s for s in states}


def on_target(state: DatasetState, target: str) -> DatasetState:
    """The replica of ``state`` at ``target``: same snapshots, same GUIDs."""
    return DatasetState(target, snapshots=tuple(Snapshot(target, s.name, s.guid, s.createtxg)
                                                  for s in state.snapshots))


def by_target(plans: list) -> dict:
    return {p.target: p for p in plans}


def test_a_clone_whose_origin_arrives_first_is_received_from_the_origin() -> None:
    sources = job(ds("tank/j", "s1"), ds("tank/j/a", "s1 s2"),
                  ds("tank/j/b", "c1 c2", origin="tank/j/a@s1", txg0=15))
    plans = plan_recursive(sources, {}, "tank/j", "backup/j", source_host="nas1", target_host="vault")
    assert [p.target for p in plans] == ["backup/j", "backup/j/a", "backup/j/b"]
    clone = by_target(plans)["backup/j/b"]
    assert clone.kind is PlanKind.FULL and clone.clone_of == "backup/j/a"
    first = clone.steps[0]
    assert first.base is not None and first.base.full_name == "tank/j/a@s1" and first.snapshot.name == "c1"
    assert [s.snapshot.name for s in clone.steps] == ["c1", "c2"]
    assert "is a clone of tank/j/a@s1, which vault:backup/j/a holds" in clone.reason
    assert "`zfs send -i tank/j/a@s1`" in clone.reason
    assert describe(clone).startswith("clone nas1:tank/j/b@c1 from tank/j/a@s1 → vault:backup/j/b")
    assert by_target(plans)["backup/j/a"].clone_of == ""


def test_origins_are_planned_before_clones_that_sort_earlier() -> None:
    sources = job(ds("tank/j", "s1"), ds("tank/j/a", "c1", origin="tank/j/z@s1", txg0=25),
                  ds("tank/j/a/kid", "k1"), ds("tank/j/z", "s1 s2"))
    plans = plan_recursive(sources, {}, "tank/j", "backup/j")
    assert [p.source for p in plans] == ["tank/j", "tank/j/z", "tank/j/a", "tank/j/a/kid"]
    assert by_target(plans)["backup/j/a"].clone_of == "backup/j/z"


def test_an_origin_already_on_the_target_is_used() -> None:
    origin = ds("tank/j/a", "s1 s2")
    sources = job(ds("tank/j", "s1"), origin, ds("tank/j/b", "c1", origin="tank/j/a@s1", txg0=15))
    targets = job(on_target(sources["tank/j"], "backup/j"), on_target(origin, "backup/j/a"))
    plans = plan_recursive(sources, targets, "tank/j", "backup/j")
    clone = by_target(plans)["backup/j/b"]
    assert by_target(plans)["backup/j/a"].kind is PlanKind.NOOP
    assert clone.steps[0].base == origin.snapshots[0]


def test_an_origin_snapshot_that_never_reaches_the_target_means_a_full_send() -> None:
    # the filter selects auto-* only: the origin @manual is not replicated, so no clone stream
    sources = job(ds("tank/j", "auto-1"), ds("tank/j/a", "manual auto-2"),
                  ds("tank/j/b", "auto-c", origin="tank/j/a@manual", txg0=15))
    plans = plan_recursive(sources, {}, "tank/j", "backup/j", select=SnapshotFilter(prefix="auto-"))
    clone = by_target(plans)["backup/j/b"]
    assert clone.kind is PlanKind.FULL and clone.steps[0].base is None and clone.clone_of == ""
    assert "is a clone of tank/j/a@manual, but the target side does not hold that snapshot" in clone.reason


def test_an_origin_brought_by_a_minus_capital_i_stream_counts() -> None:
    origin = ds("tank/j/a", "s1 s2 s3")
    sources = job(ds("tank/j", "s1"), origin, ds("tank/j/b", "c1", origin="tank/j/a@s2", txg0=25))
    targets = job(on_target(sources["tank/j"], "backup/j"),
                  DatasetState("backup/j/a", snapshots=(Snapshot("backup/j/a", "s1", origin.snapshots[0].guid, 10),)))
    plans = plan_recursive(sources, targets, "tank/j", "backup/j")
    a = by_target(plans)["backup/j/a"]
    assert a.steps[0].intermediates and a.steps[0].snapshot.name == "s3"   # @s2 travels inside -I
    assert by_target(plans)["backup/j/b"].clone_of == "backup/j/a"


def test_an_origin_outside_the_job_or_excluded_means_a_full_send() -> None:
    sources = job(ds("tank/j", "s1"), ds("tank/j/b", "c1", origin="tank/other@s1", txg0=15))
    clone = by_target(plan_recursive(sources, {}, "tank/j", "backup/j"))["backup/j/b"]
    assert clone.steps[0].base is None and "is a clone of tank/other@s1" in clone.reason


def test_a_clone_whose_origin_was_renamed_below_it_goes_in_full() -> None:
    # tank/j/a is a clone of tank/j/a/b@s1 (b renamed below its own clone): parents must come first
    sources = job(ds("tank/j", "s1"), ds("tank/j/a", "c1", origin="tank/j/a/b@s1", txg0=15),
                  ds("tank/j/a/b", "s1"))
    plans = plan_recursive(sources, {}, "tank/j", "backup/j")
    assert [p.source for p in plans] == ["tank/j", "tank/j/a", "tank/j/a/b"]
    assert all(p.clone_of == "" and p.steps[0].base is None for p in plans)


def test_an_existing_clone_replica_is_an_ordinary_incremental() -> None:
    origin = ds("tank/j/a", "s1")
    clone = ds("tank/j/b", "c1 c2", origin="tank/j/a@s1", txg0=15)
    sources = job(ds("tank/j", "s1"), origin, clone)
    targets = job(on_target(sources["tank/j"], "backup/j"), on_target(origin, "backup/j/a"),
                  DatasetState("backup/j/b", snapshots=(Snapshot("backup/j/b", "c1", clone.snapshots[0].guid, 25),)))
    p = by_target(plan_recursive(sources, targets, "tank/j", "backup/j"))["backup/j/b"]
    assert p.kind is PlanKind.INCREMENTAL and p.steps[0].base.name == "c1" and p.clone_of == ""


def test_the_executor_runs_a_clone_after_its_origin_and_its_parent() -> None:
    stream = Action(ActionKind.STREAM, "nas1", "backup/j/b", waits_for="backup/j/a")
    keys = ["backup/j", "backup/j/a", "backup/j/b"]
    assert dependencies("backup/j/b", [stream], keys) == ["backup/j", "backup/j/a"]
    assert dependencies("backup/j/a", [], keys) == ["backup/j"]


# --- property: any forest of datasets with any clone links -----------------------------------


@st.composite
def forests(draw: st.DrawFn) -> dict[str, DatasetState]:
    names = ["tank/j"]
    for i in range(draw(st.integers(1, 8))):
        parent = draw(st.sampled_from(names))
        names.append(f"{parent}/d{i}")
    states: dict[str, DatasetState] = {}
    for i, name in enumerate(names):
        origin = None
        if i and draw(st.booleans()):
            of = draw(st.sampled_from(names))
            if of != name:
                origin = f"{of}@s1"
        states[name] = ds(name, "s1 s2", origin=origin, txg0=100 * i)
    return states


@settings(max_examples=200, deadline=None)
@given(forests())
def test_every_dataset_once_parents_first_and_origins_first(sources: dict[str, DatasetState]) -> None:
    plans = plan_recursive(sources, {}, "tank/j", "backup/j")
    order = [p.source for p in plans]
    assert sorted(order) == sorted(sources)
    at = {name: i for i, name in enumerate(order)}
    for name in order:
        parent = name.rsplit("/", 1)[0]
        if parent in at:
            assert at[parent] < at[name]
    for p in plans:
        if p.clone_of:
            origin_source = "tank/j" + p.clone_of[len("backup/j"):]
            assert at[origin_source] < at[p.source]
            assert p.steps[0].base is not None and p.steps[0].base.dataset == origin_source


def test_origins_first_is_stable_without_clones() -> None:
    names = ["a", "a/z", "a/b", "a/b/c"]
    assert origins_first(names, {}) == (names, {})
