"""Planner tests: every plan kind and rule, plus properties over random chains."""

from __future__ import annotations

import zlib

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from zrelay.errors import PlanRefused
from zrelay.plan import (
    Plan,
    PlanKind,
    SendStep,
    describe,
    ensure_allowed,
    plan,
    plan_recursive,
)
from zrelay.zfs.model import DatasetState, Snapshot, SnapshotFilter

SRC = "tank/data"
DST = "backup/data"


# --- builder -------------------------------------------------------------------


def guid(name: str) -> int:
    """Same name → same GUID on both sides unless a test says otherwise."""
    return zlib.crc32(name.encode())


def state(name: str, spec: str = "", *, token: str | None = None) -> DatasetState:
    """Build a dataset from ``"a b c"``; ``x:a`` is ``x`` carrying ``a``'s GUID
    (a rename), ``x!`` is ``x`` with a GUID of its own (same name, other snapshot)."""
    snaps: list[Snapshot] = []
    for i, tok in enumerate(spec.split()):
        if ":" in tok:
            snap_name, of = tok.split(":")
            g = guid(of)
        elif tok.endswith("!"):
            snap_name, g = tok[:-1], guid(tok)
        else:
            snap_name, g = tok, guid(tok)
        snaps.append(Snapshot(name, snap_name, g, createtxg=10 * (i + 1)))
    return DatasetState(name, snapshots=tuple(snaps), resume_token=token)


def src(spec: str) -> DatasetState:
    return state(SRC, spec)


def dst(spec: str, token: str | None = None) -> DatasetState:
    return state(DST, spec, token=token)


def absent() -> DatasetState:
    return DatasetState.absent(DST)


def step_names(p: Plan) -> list[tuple[str | None, str, bool]]:
    """Steps as (base name, snapshot name, -I?) for compact asserts."""
    return [(s.base.name if s.base else None, s.snapshot.name, s.intermediates) for s in p.steps]


AUTO = SnapshotFilter(prefix="auto-")


# --- NO_SOURCE_SNAPSHOT -----------------------------------------------------------


def test_no_source_snapshot_when_source_empty() -> None:
    p = plan(src(""), dst("a"))
    assert p.kind is PlanKind.NO_SOURCE_SNAPSHOT
    assert "zrelay sync --snapshot" in p.reason
    assert not p.steps and not p.transfers and not p.refused


def test_no_source_snapshot_when_filter_selects_nothing() -> None:
    p = plan(src("manual-1 hourly-1"), absent(), select=AUTO)
    assert p.kind is PlanKind.NO_SOURCE_SNAPSHOT
    assert "'auto-'" in p.reason and "zrelay sync --snapshot" in p.reason
    assert p.behind == 0


def test_no_source_snapshot_wins_over_resume_token() -> None:
    p = plan(src(""), dst("a", token="1-abc"))
    assert p.kind is PlanKind.NO_SOURCE_SNAPSHOT


# --- RESUME -------------------------------------------------------------------------


def test_resume_when_token_and_supported() -> None:
    p = plan(src("a b c"), dst("a", token="1-abc-def"))
    assert p.kind is PlanKind.RESUME
    assert p.resume_token == "1-abc-def"
    assert p.steps == ()
    assert "interrupted receive" in p.reason and "resumed" in p.reason
    assert p.transfers and p.behind == 2


def test_resume_wins_over_divergence() -> None:
    p = plan(src("a b"), dst("a x!", token="tok"))
    assert p.kind is PlanKind.RESUME


def test_token_ignored_without_resume_support() -> None:
    p = plan(src("a b"), dst("a", token="tok"), resume_supported=False)
    assert p.kind is PlanKind.INCREMENTAL
    assert p.resume_token is None
    assert step_names(p) == [("a", "b", False)]


# --- FULL ---------------------------------------------------------------------------


def test_full_single_snapshot() -> None:
    p = plan(src("a"), absent())
    assert p.kind is PlanKind.FULL
    assert step_names(p) == [(None, "a", False)]
    assert p.behind == 1 and p.base is None and p.rollback_to is None
    assert "@a" in p.reason and "does not exist" in p.reason


def test_full_then_incremental_minus_capital_i() -> None:
    p = plan(src("a b c"), absent())
    assert step_names(p) == [(None, "a", False), ("a", "c", True)]
    assert p.behind == 3
    assert "-I" in p.reason


def test_full_then_single_minus_i() -> None:
    p = plan(src("a b"), absent())
    assert step_names(p) == [(None, "a", False), ("a", "b", False)]


def test_full_starts_at_oldest_selected_and_skips_unselected() -> None:
    p = plan(src("manual-0 auto-1 hourly-1 auto-2 auto-3"), absent(), select=AUTO)
    assert step_names(p) == [(None, "auto-1", False), ("auto-1", "auto-2", False),
                             ("auto-2", "auto-3", False)]
    assert p.behind == 3
    assert "@hourly-1" in p.reason and "-i" in p.reason


def test_full_unselected_before_oldest_does_not_force_stepwise() -> None:
    p = plan(src("manual-0 auto-1 auto-2 auto-3"), absent(), select=AUTO)
    assert step_names(p) == [(None, "auto-1", False), ("auto-1", "auto-3", True)]


# --- NO_COMMON_BASE -----------------------------------------------------------------


@pytest.mark.parametrize("target", ["", "x y", "a!"])
@pytest.mark.parametrize("rollback", [False, True])
def test_no_common_base(target: str, rollback: bool) -> None:
    p = plan(src("a b"), dst(target), rollback=rollback)
    assert p.kind is PlanKind.NO_COMMON_BASE
    assert p.refused and not p.steps and p.rollback_to is None
    text = " ".join(p.options)
    assert f"zfs destroy -r {DST}" in text
    assert "new target dataset" in text
    assert "never overwrites" in text and "--rollback" in text


def test_no_common_base_reason_names_target_snapshots() -> None:
    p = plan(src("a"), dst("x y"))
    assert "@x" in p.reason and "@y" in p.reason


# --- NOOP ---------------------------------------------------------------------------


def test_noop_when_goal_is_base() -> None:
    p = plan(src("a b"), dst("a b"))
    assert p.kind is PlanKind.NOOP
    assert p.base is not None and p.base.name == "b"
    assert p.behind == 0 and not p.steps and not p.transfers
    assert "@b" in p.reason


def test_noop_when_goal_already_on_target_but_base_newer() -> None:
    # the filter picks an older snapshot than the newest common one
    p = plan(src("auto-1 manual-1"), dst("auto-1 manual-1"), select=AUTO)
    assert p.kind is PlanKind.NOOP
    assert p.base is not None and p.base.name == "manual-1"


def test_noop_when_goal_older_than_base_and_not_on_target() -> None:
    # auto-2 was skipped on the target; manual-1 (newer, unselected) is common
    p = plan(src("auto-1 auto-2 manual-1"), dst("auto-1 manual-1"), select=AUTO)
    assert p.kind is PlanKind.NOOP
    assert "newer" in p.reason and "@manual-1" in p.reason and "@auto-2" in p.reason


def test_noop_by_guid_despite_rename() -> None:
    p = plan(src("a b"), dst("a renamed:b"))
    assert p.kind is PlanKind.NOOP
    assert p.base is not None and p.base.name == "b"  # the source's copy


# --- INCREMENTAL ----------------------------------------------------------------------


def test_incremental_single_minus_i() -> None:
    p = plan(src("a b"), dst("a"))
    assert p.kind is PlanKind.INCREMENTAL
    assert step_names(p) == [("a", "b", False)]
    assert p.behind == 1 and p.rollback_to is None
    assert "-i" in p.reason and "@a" in p.reason and "@b" in p.reason


def test_incremental_minus_capital_i_when_all_intermediates_selected() -> None:
    p = plan(src("a b c d"), dst("a"))
    assert step_names(p) == [("a", "d", True)]
    assert p.behind == 3
    assert "-I" in p.reason and "every snapshot between them is selected" in p.reason


def test_incremental_stepwise_when_intermediate_unselected() -> None:
    p = plan(src("auto-1 auto-2 manual-x auto-3"), dst("auto-1"), select=AUTO)
    assert step_names(p) == [("auto-1", "auto-2", False), ("auto-2", "auto-3", False)]
    assert p.behind == 2
    assert "@manual-x" in p.reason and "must not reach the target" in p.reason


def test_incremental_single_step_even_with_unselected_between() -> None:
    p = plan(src("auto-1 manual-x hourly-y auto-2"), dst("auto-1"), select=AUTO)
    assert step_names(p) == [("auto-1", "auto-2", False)]
    assert p.behind == 1


def test_incremental_unselected_after_goal_is_ignored() -> None:
    p = plan(src("auto-1 auto-2 auto-3 manual-x"), dst("auto-1"), select=AUTO)
    assert step_names(p) == [("auto-1", "auto-3", True)]


def test_incremental_from_unselected_base() -> None:
    # the newest common snapshot need not be selected
    p = plan(src("auto-1 manual-1 auto-2"), dst("auto-1 manual-1"), select=AUTO)
    assert step_names(p) == [("manual-1", "auto-2", False)]


def test_base_is_newest_common_in_target_order() -> None:
    p = plan(src("a b c d"), dst("a b"))
    assert p.base is not None and p.base.name == "b"
    assert step_names(p) == [("b", "d", True)]


def test_target_may_miss_older_snapshots() -> None:
    p = plan(src("a b c d"), dst("b c"))
    assert step_names(p) == [("c", "d", False)]


def test_rename_on_target_is_still_common() -> None:
    p = plan(src("a b c"), dst("old-name:b"))
    assert p.kind is PlanKind.INCREMENTAL
    assert p.base is not None and p.base.name == "b" and p.base.dataset == SRC
    assert step_names(p) == [("b", "c", False)]


def test_rename_on_source_is_still_common() -> None:
    p = plan(src("a new:b c"), dst("a b"))
    assert p.kind is PlanKind.INCREMENTAL
    assert p.base is not None and p.base.name == "new"
    assert step_names(p) == [("new", "c", False)]


# --- filters ------------------------------------------------------------------------------


def test_filter_prefix() -> None:
    p = plan(src("auto-1 hourly-1 auto-2"), absent(), select=SnapshotFilter(prefix="hourly-"))
    assert step_names(p) == [(None, "hourly-1", False)]


def test_filter_regex() -> None:
    f = SnapshotFilter(regex=r"^(daily|weekly)-")
    p = plan(src("daily-1 hourly-1 weekly-1 daily-2"), dst("daily-1"), select=f)
    assert step_names(p) == [("daily-1", "weekly-1", False), ("weekly-1", "daily-2", False)]


def test_filter_prefix_and_regex_both_must_match() -> None:
    f = SnapshotFilter(prefix="auto-", regex=r"daily")
    p = plan(src("auto-daily-1 auto-hourly-1 daily-x auto-daily-2"), absent(), select=f)
    assert [s.snapshot.name for s in p.steps] == ["auto-daily-1", "auto-daily-2"]
    assert step_names(p)[1] == ("auto-daily-1", "auto-daily-2", False)
    assert p.behind == 2


def test_filter_text_in_no_source_reason() -> None:
    f = SnapshotFilter(prefix="auto-", regex=r"daily")
    p = plan(src("x"), absent(), select=f)
    assert "'auto-'" in p.reason and "'daily'" in p.reason


# --- DIVERGED -----------------------------------------------------------------------------


def test_diverged_extra_target_snapshot_refused() -> None:
    p = plan(src("a b c"), dst("a local"))
    assert p.kind is PlanKind.DIVERGED and p.refused
    assert p.conflicts == ("local",)
    assert p.rollback_to is None and not p.steps
    assert "@local" in p.reason
    assert any("--rollback" in o and "@local" in o for o in p.options)


def test_diverged_rollback_fixes_extra_snapshots() -> None:
    p = plan(src("a b c"), dst("a x! y!"), rollback=True)
    assert p.kind is PlanKind.INCREMENTAL
    assert p.rollback_to is not None and p.rollback_to.dataset == DST and p.rollback_to.name == "a"
    assert step_names(p) == [("a", "c", True)]
    assert p.conflicts == ("x", "y")
    assert "@x" in p.reason and "@y" in p.reason and "destroys" in p.reason


def test_rollback_to_is_targets_copy_of_base() -> None:
    p = plan(src("a b"), dst("kept:a x!"), rollback=True)
    assert p.rollback_to is not None
    assert (p.rollback_to.dataset, p.rollback_to.name) == (DST, "kept")
    assert p.base is not None and (p.base.dataset, p.base.name) == (SRC, "a")


def test_diverged_name_collision_after_base_fixable() -> None:
    # target's @c is not the source's @c
    refused = plan(src("a b c"), dst("a c!"))
    assert refused.kind is PlanKind.DIVERGED and refused.conflicts == ("c",)
    p = plan(src("a b c"), dst("a c!"), rollback=True)
    assert p.kind is PlanKind.INCREMENTAL and p.rollback_to is not None
    assert step_names(p) == [("a", "c", True)]


def test_diverged_name_collision_before_base_not_fixable() -> None:
    for rollback in (False, True):
        p = plan(src("a b c"), dst("a! b"), rollback=rollback)
        assert p.kind is PlanKind.DIVERGED
        assert p.conflicts == ("a",)
        assert p.rollback_to is None
        text = " ".join(p.options)
        assert "cannot fix" in text and "new target dataset" in text
        assert "cannot fix" in p.reason


def test_diverged_renamed_base_collides_with_source_name() -> None:
    # target @b is really the source's @a: the base itself carries a clashing name
    p = plan(src("a b c"), dst("b:a"), rollback=True)
    assert p.kind is PlanKind.DIVERGED and p.conflicts == ("b",)


def test_diverged_mixed_offenders_lists_all() -> None:
    p = plan(src("a b c"), dst("a! b z!"), rollback=True)
    assert p.kind is PlanKind.DIVERGED
    assert p.conflicts == ("a", "z")


def test_diverged_when_goal_is_base_refused_without_rollback() -> None:
    p = plan(src("a b"), dst("a b junk!"))
    assert p.kind is PlanKind.DIVERGED and p.conflicts == ("junk",)


def test_diverged_rollback_only_when_goal_is_base() -> None:
    p = plan(src("a b"), dst("a b junk!"), rollback=True)
    assert p.kind is PlanKind.INCREMENTAL
    assert p.rollback_to is not None and p.rollback_to.name == "b"
    assert p.steps == () and p.behind == 0
    assert "@junk" in p.reason and "nothing is sent" in p.reason


def test_diverged_fixable_options_do_not_claim_unfixable() -> None:
    p = plan(src("a b"), dst("a x!"))
    assert not any("cannot fix" in o for o in p.options)


def test_unrelated_name_collision_older_than_base_is_diverged() -> None:
    # names are not identity: a source name reused on the target for another snapshot is refused
    p = plan(src("old a b"), dst("old! a"))
    assert p.kind is PlanKind.DIVERGED and p.conflicts == ("old",)


# --- recursive ------------------------------------------------------------------------------


def test_plan_recursive_maps_and_orders() -> None:
    sources = {
        "tank/data/b/c": state("tank/data/b/c", "a"),
        "tank/data": state("tank/data", "a b"),
        "tank/database": state("tank/database", "a"),  # not under tank/data
        "tank/data/b": state("tank/data/b", "a"),
        "tank/data/a": state("tank/data/a", "a b"),
        "tank/other": state("tank/other", "a"),
    }
    targets = {
        "backup/data": state("backup/data", "a"),
        "backup/data/a": state("backup/data/a", "a b"),
    }
    plans = plan_recursive(sources, targets, "tank/data", "backup/data")
    assert [(p.source, p.target) for p in plans] == [
        ("tank/data", "backup/data"),
        ("tank/data/a", "backup/data/a"),
        ("tank/data/b", "backup/data/b"),
        ("tank/data/b/c", "backup/data/b/c"),
    ]
    assert [p.kind for p in plans] == [PlanKind.INCREMENTAL, PlanKind.NOOP, PlanKind.FULL, PlanKind.FULL]


def test_plan_recursive_parents_before_children_with_tricky_names() -> None:
    names = ["p/r/x-y", "p/r/x/z", "p/r", "p/r/x", "p/r/x-y/q"]
    sources = {n: state(n, "a") for n in names}
    plans = plan_recursive(sources, {}, "p/r/", "b")
    order = [p.source for p in plans]
    for p in order:
        parent = p.rsplit("/", 1)[0]
        if parent in order:
            assert order.index(parent) < order.index(p)
    assert {p.target for p in plans} == {"b", "b/x", "b/x-y", "b/x/z", "b/x-y/q"}


def test_plan_recursive_passes_options() -> None:
    sources = {"t/d": state("t/d", "auto-1 m auto-2")}
    targets = {"b/d": state("b/d", "auto-1 x!")}
    (p,) = plan_recursive(sources, targets, "t/d", "b/d", select=AUTO, rollback=True)
    assert p.kind is PlanKind.INCREMENTAL and p.rollback_to is not None
    assert step_names(p) == [("auto-1", "auto-2", False)]


def test_plan_recursive_empty() -> None:
    assert plan_recursive({}, {}, "tank", "backup") == []


# --- describe / ensure_allowed --------------------------------------------------------------


def test_describe_incremental_matches_documented_shape() -> None:
    assert describe(plan(src("a b c"), dst("a"))) == "incremental tank/data@a → @c (-I, 2 snapshots)"


@pytest.mark.parametrize(("p", "needle"), [
    (plan(src("a"), absent()), "full tank/data@a"),
    (plan(src("a b c"), absent()), "then -I, 3 snapshots"),
    (plan(src("auto-1 m auto-2 auto-3"), dst("auto-1"), select=AUTO), "-i ×2"),
    (plan(src("a b"), dst("a")), "(-i, 1 snapshot)"),
    (plan(src("a b"), dst("a x!"), rollback=True), "rollback backup/data to @a"),
    (plan(src("a"), dst("a x!"), rollback=True), "nothing to send"),
    (plan(src("a"), dst("a")), "up to date"),
    (plan(src("a"), dst("a", token="t")), "resume"),
    (plan(src("a b"), dst("a x!")), "diverged backup/data: @x"),
    (plan(src("a"), dst("z")), "no common base"),
    (plan(src(""), dst("z")), "no selected snapshot"),
])
def test_describe_every_kind(p: Plan, needle: str) -> None:
    assert needle in describe(p)
    assert "\n" not in describe(p)


def test_ensure_allowed() -> None:
    ok = plan(src("a b"), dst("a"))
    assert ensure_allowed(ok) is ok
    with pytest.raises(PlanRefused, match="--rollback"):
        ensure_allowed(plan(src("a b"), dst("a x!")))
    with pytest.raises(PlanRefused, match="zfs destroy -r"):
        ensure_allowed(plan(src("a"), dst("z")))


def test_every_reason_is_one_sentence() -> None:
    cases = [
        plan(src(""), absent()), plan(src("a"), absent()), plan(src("a b c"), absent()),
        plan(src("a b"), dst("a")), plan(src("a"), dst("a")), plan(src("a"), dst("a", token="t")),
        plan(src("a b"), dst("a x!")), plan(src("a b"), dst("a! b")), plan(src("a"), dst("q")),
        plan(src("a b"), dst("a x!"), rollback=True),
    ]
    for p in cases:
        assert p.reason.endswith(".") and "\n" not in p.reason
        assert "@" in p.reason or p.kind is PlanKind.NO_SOURCE_SNAPSHOT


# --- properties -------------------------------------------------------------------------------

FILTERS = [SnapshotFilter(), AUTO, SnapshotFilter(regex=r"^(auto|hourly)-"),
           SnapshotFilter(prefix="auto-", regex=r"[02468]$")]
KINDS = ["auto-", "manual-", "hourly-"]


@st.composite
def chains(draw: st.DrawFn, min_size: int = 1) -> DatasetState:
    """A source chain with unique names and GUIDs, oldest first."""
    kinds = draw(st.lists(st.sampled_from(KINDS), min_size=min_size, max_size=9))
    snaps = tuple(Snapshot(SRC, f"{k}{i}", guid=1000 + i, createtxg=10 * (i + 1))
                  for i, k in enumerate(kinds))
    return DatasetState(SRC, snapshots=snaps)


def on_target(snaps: list[Snapshot]) -> DatasetState:
    """Re-home snapshots on the target, keeping GUIDs and order."""
    return DatasetState(DST, snapshots=tuple(
        Snapshot(DST, s.name, s.guid, createtxg=5 * (i + 1)) for i, s in enumerate(snaps)))


def apply(p: Plan, source: DatasetState, target: DatasetState) -> list[Snapshot]:
    """Play the plan the way zfs receive would (no -F), returning the target's snapshots."""
    have = list(target.snapshots) if target.exists else []
    if p.rollback_to is not None:
        guids = [s.guid for s in have]
        have = have[:guids.index(p.rollback_to.guid) + 1]
    index = {s.guid: i for i, s in enumerate(source.snapshots)}
    for step in p.steps:
        if step.base is None:
            assert not have, "full receive into a dataset with snapshots"
            new = [step.snapshot]
        else:
            assert have and have[-1].guid == step.base.guid, "incremental base is not the target's newest"
            lo, hi = index[step.base.guid], index[step.snapshot.guid]
            assert lo < hi
            new = list(source.snapshots[lo + 1:hi + 1]) if step.intermediates else [step.snapshot]
        for s in new:
            assert s.guid not in {h.guid for h in have}
            assert s.name not in {h.name for h in have}, "name already used on the target"
        have += [Snapshot(DST, s.name, s.guid, s.createtxg) for s in new]
    return have


@st.composite
def general_targets(draw: st.DrawFn, source: DatasetState) -> DatasetState:
    """A target sharing any subsequence of the source, with renames and foreign snapshots."""
    keep = draw(st.lists(st.booleans(), min_size=len(source.snapshots), max_size=len(source.snapshots)))
    common = [s for s, k in zip(source.snapshots, keep) if k]
    out: list[Snapshot] = []
    for s in common:
        name = f"renamed-{s.name}" if draw(st.booleans()) and draw(st.booleans()) else s.name
        out.append(Snapshot(DST, name, s.guid, 0))
    for j in range(draw(st.integers(0, 3))):
        pos = draw(st.integers(0, len(out)))
        pool = [s.name for s in source.snapshots] + [f"local-{j}"]
        out.insert(pos, Snapshot(DST, draw(st.sampled_from(pool)), 5000 + j, 0))
    seen: set[str] = set()
    fixed: list[Snapshot] = []
    for i, s in enumerate(out):
        name = s.name if s.name not in seen else f"{s.name}-dup{i}"
        seen.add(name)
        fixed.append(Snapshot(DST, name, s.guid, createtxg=5 * (i + 1)))
    return DatasetState(DST, snapshots=tuple(fixed))


@settings(max_examples=400)
@given(data=st.data(), source=chains(), select=st.sampled_from(FILTERS))
def test_prop_prefix_target_reaches_goal(data: st.DataObject, source: DatasetState,
                                         select: SnapshotFilter) -> None:
    n = len(source.snapshots)
    k = data.draw(st.integers(0, n), label="prefix")
    target = absent() if k == 0 else on_target(list(source.snapshots[:k]))
    p = plan(source, target, select=select)
    selected = [s for s in source.snapshots if select.matches(s.name)]
    if not selected:
        assert p.kind is PlanKind.NO_SOURCE_SNAPSHOT
        return
    goal = selected[-1]
    assert p.kind in (PlanKind.FULL, PlanKind.INCREMENTAL, PlanKind.NOOP)
    assert p.rollback_to is None and p.conflicts == ()
    after = apply(p, source, target)
    before = list(target.snapshots)
    assert [s.guid for s in after[:len(before)]] == [s.guid for s in before]
    added = after[len(before):]
    assert len(added) == p.behind
    assert all(select.matches(s.name) for s in added), "an unselected snapshot reached the target"
    assert goal.guid in {s.guid for s in after}
    if p.transfers:
        assert after[-1].guid == goal.guid
        assert [s.guid for s in added] == [s.guid for s in selected if s.guid not in {b.guid for b in before}]
    else:
        assert p.behind == 0 and not p.steps
    assert p.reason and describe(p)


@settings(max_examples=400)
@given(data=st.data(), source=chains(min_size=0), select=st.sampled_from(FILTERS),
       rollback=st.booleans())
def test_prop_target_never_loses_without_rollback(data: st.DataObject, source: DatasetState,
                                                  select: SnapshotFilter, rollback: bool) -> None:
    target = data.draw(general_targets(source), label="target")
    p = plan(source, target, select=select, rollback=rollback)
    assert p.reason
    if not rollback:
        assert p.rollback_to is None
    if p.refused:
        assert not p.steps and p.rollback_to is None and p.options
        return
    if p.kind in (PlanKind.NO_SOURCE_SNAPSHOT, PlanKind.RESUME):
        return
    after = apply(p, source, target)  # must be receivable as planned
    after_guids = {s.guid for s in after}
    lost = [s for s in target.snapshots if s.guid not in after_guids]
    if p.rollback_to is None:
        assert not lost
    else:
        assert rollback and p.kind is PlanKind.INCREMENTAL
        assert tuple(s.name for s in lost) == p.conflicts
        cut = [s.guid for s in target.snapshots].index(p.rollback_to.guid)
        assert all(target.snapshots.index(s) > cut for s in lost)
    assert all(select.matches(s.name) for s in after if s.guid not in {t.guid for t in target.snapshots})


@settings(max_examples=400)
@given(data=st.data(), source=chains(), select=st.sampled_from(FILTERS), rollback=st.booleans())
def test_prop_foreign_after_base_is_diverged_or_rolled_back(
        data: st.DataObject, source: DatasetState, select: SnapshotFilter, rollback: bool) -> None:
    n = len(source.snapshots)
    keep = data.draw(st.lists(st.booleans(), min_size=n, max_size=n).filter(any), label="keep")
    common = [s for s, k in zip(source.snapshots, keep) if k]
    extra = data.draw(st.integers(1, 3), label="extra")
    foreign = [Snapshot(DST, f"local-{j}", 9000 + j, 0) for j in range(extra)]
    target = on_target(common + foreign)
    p = plan(source, target, select=select, rollback=rollback)
    if not any(select.matches(s.name) for s in source.snapshots):
        assert p.kind is PlanKind.NO_SOURCE_SNAPSHOT
        return
    if rollback:
        assert p.kind is PlanKind.INCREMENTAL and p.rollback_to is not None
        assert p.rollback_to.guid == common[-1].guid
        assert set(p.conflicts) == {f.name for f in foreign}
    else:
        assert p.kind is PlanKind.DIVERGED and p.refused
        assert set(p.conflicts) == {f.name for f in foreign}


@given(source=chains(), select=st.sampled_from(FILTERS))
def test_prop_deterministic(source: DatasetState, select: SnapshotFilter) -> None:
    target = on_target(list(source.snapshots[:1]))
    assert plan(source, target, select=select) == plan(source, target, select=select)


def test_sendstep_defaults_are_full_minus_i() -> None:
    s = Snapshot(SRC, "a", 1, 1)
    assert SendStep(s) == SendStep(s, None, False)


# --- bookmarks as bases --------------------------------------------------------------


def with_marks(state_: DatasetState, *names: str) -> DatasetState:
    """``state_`` plus bookmarks carrying the GUIDs (and createtxgs) snapshots of those names had."""
    from zrelay.zfs.model import Bookmark

    txg = {n: 10 * (i + 1) for i, n in enumerate(["a", "b", "c", "d", "e", "f"])}
    marks = tuple(Bookmark(state_.name, n, guid(n), txg[n]) for n in names)
    return DatasetState(state_.name, snapshots=state_.snapshots, bookmarks=marks, encrypted=state_.encrypted)


def pruned(spec_after: str, *marks: str) -> DatasetState:
    """A source whose early snapshots are gone; snapshots keep their original createtxg."""
    names = ["a", "b", "c", "d", "e", "f"]
    snaps = tuple(Snapshot(SRC, n, guid(n), 10 * (names.index(n) + 1)) for n in spec_after.split())
    return with_marks(DatasetState(SRC, snapshots=snaps), *marks)


def test_bookmark_base_when_source_snapshot_pruned() -> None:
    p = plan(pruned("c", "a", "b"), dst("a b"))
    assert p.kind is PlanKind.INCREMENTAL
    assert p.base is not None and p.base.ref == "#b"
    assert step_names(p) == [("b", "c", False)]
    assert "#b" in describe(p) and "#b" in p.reason


def test_bookmark_base_never_starts_an_I_stream() -> None:
    p = plan(pruned("c d e", "b"), dst("a b"))
    assert [(s.base.ref, s.snapshot.name, s.intermediates) for s in p.steps] == [
        ("#b", "c", False), ("@c", "e", True)]
    assert p.behind == 3


def test_bookmark_base_two_snapshots_are_two_i_steps() -> None:
    p = plan(pruned("c d", "b"), dst("b"))
    assert [(s.base.ref, s.snapshot.name, s.intermediates) for s in p.steps] == [
        ("#b", "c", False), ("@c", "d", False)]


def test_snapshot_preferred_over_bookmark_of_same_guid() -> None:
    p = plan(with_marks(src("a b c"), "b"), dst("a b"))
    assert p.base is not None and p.base.ref == "@b"
    assert step_names(p) == [("b", "c", False)]


def test_bookmark_base_with_filter_goes_stepwise() -> None:
    p = plan(pruned("c d e", "b"), dst("b"), select=SnapshotFilter(regex="^[bce]$"))
    assert [(s.base.ref, s.snapshot.name) for s in p.steps] == [("#b", "c"), ("@c", "e")]


def test_bookmark_base_up_to_date_is_noop() -> None:
    p = plan(pruned("", "b"), dst("a b"))
    assert p.kind is PlanKind.NO_SOURCE_SNAPSHOT      # nothing selectable on the source
    q = plan(pruned("c", "b"), dst("b c"))
    assert q.kind is PlanKind.NOOP


def test_target_snapshots_after_a_bookmark_base_diverge() -> None:
    p = plan(pruned("c", "b"), dst("b x"))
    assert p.kind is PlanKind.DIVERGED and p.conflicts == ("x",)


def test_encrypted_flag_and_partial_full_travel_in_the_plan() -> None:
    enc = DatasetState(SRC, snapshots=src("a b").snapshots, encrypted=True)
    assert plan(enc, absent()).encrypted
    assert plan(enc, dst("a")).encrypted
    resume = plan(enc, DatasetState(DST, snapshots=(), resume_token="1-ab-cd"))
    assert resume.kind is PlanKind.RESUME and resume.partial_full
    assert not plan(src("a b"), dst("a", token="1-ab-cd")).partial_full
