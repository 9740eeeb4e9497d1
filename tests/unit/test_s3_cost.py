"""What stored chains cost (as the bucket lists them) and which chains a calendar policy keeps (pure).

The cost numbers come from the listing (ListObjectsV2 ``Size`` and ``StorageClass``), never from
the manifests: a bucket lifecycle rule may have moved objects to another class, and a damaged
object is billed at the size it has. Calendar retention picks whole chains, each dated by its
newest snapshot, and the rules that protect restores win over the policy.
"""

from __future__ import annotations

import datetime as dt
from dataclasses import replace
from typing import Any

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from zrelay.cli import output
from zrelay.cli.s3 import _view_dict, keep_policy
from zrelay.cli.status import detail_lines
from zrelay.errors import UsageError
from zrelay.inventory.policy import KeepPolicy
from zrelay.lifecycle.prune import PruneInput, S3Side, SourceSide, chain_date, keep_chains, plan_prune
from zrelay.s3 import chains
from zrelay.s3.chains import ClassCost, Listed, StorageCost
from zrelay.status.report import LocationStatus
from zrelay.status.s3 import s3_info
from zrelay.inventory.model import S3Target
from zrelay.zfs.model import DatasetState, Snapshot, SnapshotFilter

from tests.unit.test_s3_chains import DS, HOST, linear_chain, record, snap

DAY = 86400
T0 = 1_767_225_600          # 2026-01-01 00:00 UTC
SEL = SnapshotFilter(prefix="auto_")


def _chain_records(snaps: list[Snapshot], broken: bool = False) -> list[chains.SendRecord]:
    ms = linear_chain(snaps)
    return [record(m, missing=(0,) if broken and i == len(ms) - 1 else ()) for i, m in enumerate(ms)]


# --------------------------------------------------------------------------- cost


def test_cost_counts_every_listed_object_and_class() -> None:
    cost = StorageCost.of([Listed("a", 100), Listed("b", 50, storage_class="GLACIER"), Listed("c", 7)])
    assert (cost.objects, cost.bytes) == (3, 157)
    assert cost.classes == {"GLACIER": ClassCost(1, 50), "STANDARD": ClassCost(2, 107)}
    assert cost.summary() == "157 B in 3 objects, GLACIER 50 B, STANDARD 107 B"
    assert StorageCost.of([Listed("a", 2048)]).summary() == "2.0 KiB in 1 object, STANDARD"
    both = StorageCost.combined([cost, StorageCost.of([Listed("d", 3, storage_class="GLACIER")])])
    assert both.classes["GLACIER"] == ClassCost(2, 53) and both.objects == 4
    assert StorageCost().summary() == "0 B in 0 objects"


def test_chain_cost_is_what_the_listing_says_not_the_manifests() -> None:
    a, b, c = snap("a", 1, 10), snap("b", 2, 20), snap("c", 3, 30)
    recs = _chain_records([a, b, c])
    # a bucket lifecycle rule moved the full's stream to GLACIER; the manifest still says STANDARD
    full = recs[0]
    name = next(n for n in full.files if n != "manifest.json")
    full.files[name] = replace(full.files[name], storage_class="GLACIER")
    # the newest send's object is shorter than its manifest says (damaged): billed as it is
    last = recs[2]
    name = next(n for n in last.files if n != "manifest.json")
    last.files[name] = replace(last.files[name], size=400)
    v = chains.build_view(HOST, DS, recs)
    chain = v.chains[0]
    assert chain.manifest_size == 3000
    cost = chain.cost
    assert cost.objects == 6, "three streams and three manifests"
    assert cost.bytes == 1000 + 1000 + 400 + 3 * 500
    assert cost.classes == {"GLACIER": ClassCost(1, 1000), "STANDARD": ClassCost(5, 1400 + 1500)}
    orphan = record(linear_chain([snap("d", 4, 40)])[0], with_manifest=False)
    v = chains.build_view(HOST, DS, recs + [orphan])
    assert v.cost.objects == 7 and v.cost.bytes == cost.bytes + 1000, "an unfinished send costs too"

    d = _view_dict(v)
    assert (d["listed_bytes"], d["object_count"]) == (v.cost.bytes, 7)
    c0 = d["chains"][0]
    assert (c0["listed_bytes"], c0["object_count"], c0["manifest_size"], c0["size"]) == (cost.bytes, 6, 3000, 2400)
    assert c0["storage_classes"] == {"GLACIER": {"objects": 1, "bytes": 1000},
                                     "STANDARD": {"objects": 5, "bytes": 2900}}
    assert [s["storage_classes"] for s in c0["sends"]][0] == {"GLACIER": {"objects": 1, "bytes": 1000},
                                                              "STANDARD": {"objects": 1, "bytes": 500}}
    assert [s["object_count"] for s in c0["sends"]] == [2, 2, 2]


def _status_row(views: list[chains.DatasetView], datasets: int = 1) -> LocationStatus:
    target = S3Target("offsite", "bucket", endpoint="http://127.0.0.1:1")
    info = s3_info(target, views, views[0])
    return LocationStatus("nas1:tank/data", "nas1:tank/data", "s3:offsite", "in-sync", datasets=datasets,
                          target_kind="s3", location="s3:offsite", s3=info)


def test_status_lists_each_chain_with_its_cost_at_any_width() -> None:
    long = [snap(f"zrelay_2026-01-{d:02d}T00:00:00Z", d, d) for d in range(1, 7)]
    recs = _chain_records(long[:3]) + _chain_records(long[3:])
    v = chains.build_view(HOST, DS, recs)
    row = _status_row([v])
    costs = row.s3["chain_costs"] if row.s3 else []
    assert [c["root"] for c in costs] == [c.root for c in v.chains]
    assert [(c["listed_bytes"], c["object_count"], c["sends"]) for c in costs] == [(4500, 6, 3), (4500, 6, 3)]
    assert row.s3 and row.s3["object_count"] == 12 and row.s3["storage_classes"] == {
        "STANDARD": {"objects": 12, "bytes": 9000}}
    for width in (80, 120, 200, None):
        lines = ["".join(part for part, _ in line) for line in detail_lines([row], width, T0)]
        text = "\n".join(lines)
        if width:
            assert not [line for line in lines if len(line) > width], text
        flat = " ".join(text.split())
        assert f"chains {v.chains[0].root}: 4.4 KiB in 6 objects, STANDARD" in flat, text
        assert f"{v.chains[1].root}: 4.4 KiB in 6 objects, STANDARD" in flat
    assert s3_info(None)["chain_costs"] is None
    assert output.human_bytes(4500) == "4.4 KiB"


# --------------------------------------------------------------------------- --keep


@pytest.mark.parametrize("text, policy", [
    ("monthly=6", KeepPolicy(monthly=6)),
    ("monthly=6, daily=7", KeepPolicy(daily=7, monthly=6)),
    ("{monthly: 6, within: 2d}", KeepPolicy(within=2 * DAY, monthly=6)),
    ("last=1,yearly=3", KeepPolicy(last=1, yearly=3)),
])
def test_keep_reads_the_policy_language(text: str, policy: KeepPolicy) -> None:
    assert keep_policy(text) == policy


@pytest.mark.parametrize("text, said", [
    ("monthy=6", "unknown rule 'monthy'"),
    ("monthly=0", "out of range"),
    ("monthly=x", "expected an integer"),
    ("monthly", "is not RULE=N"),
    ("within=5", "expected a duration"),
    ("stale_after=3d", "unknown rule"),
    ("daily=1,daily=2", "given twice"),
    ("", "keeps nothing"),
])
def test_keep_refuses_bad_policies_naming_the_argument(text: str, said: str) -> None:
    with pytest.raises(UsageError) as exc:
        keep_policy(text)
    assert said in str(exc.value) and "--keep" in str(exc.value)


# --------------------------------------------------------------------------- dating


TEMPLATE = "auto_%Y-%m-%d"


def _named(day: dt.date, guid: int, txg: int, creation: int) -> Snapshot:
    return Snapshot(DS, f"auto_{day.isoformat()}", guid, txg, creation)


def test_chains_are_dated_by_the_job_template_like_every_other_side() -> None:
    # all pushed on one day (their creation), named for the 1st of three months in a row
    made = T0 + 200 * DAY
    months = [dt.date(2026, m, 1) for m in (3, 4, 5)]
    recs: list[chains.SendRecord] = []
    for i, day in enumerate(months):
        recs += _chain_records([_named(day, 10 * i + 1, 10 * i + 1, made + i)])
    v = chains.build_view(HOST, DS, recs)
    assert [chain_date(c, TEMPLATE) for c in v.chains] == [
        int(dt.datetime(2026, m, 1, tzinfo=dt.UTC).timestamp()) for m in (3, 4, 5)]
    assert [chain_date(c, None) for c in v.chains] == [made, made + 1, made + 2]
    source = DatasetState(DS, True, ())
    side = S3Side("s3:cold", {}, {DS: v}, KeepPolicy(monthly=2), TEMPLATE)
    plan = plan_prune(PruneInput(SEL, made + 10, SourceSide(HOST, DS, {DS: source}), s3=(side,)))
    kept = {d.name: d for d in plan.side("s3:cold").decisions}
    roots = [c.root for c in v.chains]
    assert [kept[r].keep for r in roots] == [False, True, True]
    assert kept[roots[1]].reasons == ("newest of its month 2026-04 (monthly 2)",)
    assert kept[roots[0]].reasons == ("not kept by the policy (2 monthly)",)


# --------------------------------------------------------------------------- the property


_KINDS = {
    "hourly": lambda t: t.strftime("%Y-%m-%d %H"),
    "daily": lambda t: t.strftime("%Y-%m-%d"),
    "weekly": lambda t: t.isocalendar()[:2],
    "monthly": lambda t: (t.year, t.month),
    "yearly": lambda t: t.year,
}


@st.composite
def histories(draw: Any) -> tuple[chains.DatasetView, KeepPolicy]:
    """Chains pushed over a couple of years: each a full and some incrementals, a gap between them
    (hours to months), some broken by a missing object."""
    recs: list[chains.SendRecord] = []
    when, n = T0, 0
    for _ in range(draw(st.integers(1, 8))):
        snaps = []
        for _ in range(draw(st.integers(1, 4))):
            n += 1
            when += draw(st.sampled_from([3600, DAY // 2, 3 * DAY, 20 * DAY, 45 * DAY, 200 * DAY]))
            snaps.append(Snapshot(DS, f"auto_{n}", n, 10 * n, when))
        recs += _chain_records(snaps, broken=draw(st.integers(0, 4)) == 0)
    rules = draw(st.fixed_dictionaries({}, optional={
        "last": st.integers(1, 3), "hourly": st.integers(1, 4), "daily": st.integers(1, 4),
        "weekly": st.integers(1, 4), "monthly": st.integers(1, 6), "yearly": st.integers(1, 2)}))
    policy = KeepPolicy(**rules) if rules else KeepPolicy(monthly=1)
    return chains.build_view(HOST, DS, recs), policy


def _check(view: chains.DatasetView, policy: KeepPolicy, result: chains.PrunePlan) -> None:
    gone = set(result.keys_in_order())
    kept_roots = set()
    for c in view.chains:
        deleted = [any(k in gone for k in s.keys) for s in c.sends]
        assert all(deleted) or not any(deleted), f"chain {c.root} deleted in part"
        if not any(deleted):
            kept_roots.add(c.root)
    newest = view.newest_chain
    assert newest is not None and newest.root in kept_roots, "the chain the next push builds on goes"
    healthy = [c for c in view.chains if c.healthy]
    if healthy:
        assert any(c.root in kept_roots for c in healthy), "no restorable chain left"
    # each of the last N periods that holds a chain keeps its newest chain (computed here from dates)
    dated = [(c.newest_creation, i, c) for i, c in enumerate(view.chains)]
    for kind, count in policy.buckets():
        label = _KINDS[kind]
        newest_of: dict[Any, tuple[int, int, chains.Chain]] = {}
        for item in dated:
            period = label(dt.datetime.fromtimestamp(item[0], dt.UTC))
            if period not in newest_of or item[:2] > newest_of[period][:2]:
                newest_of[period] = item
        for _, _, c in sorted(newest_of.values(), key=lambda x: x[:2], reverse=True)[:count]:
            assert c.root in kept_roots, f"{kind} {count}: the newest chain of its period ({c.root}) goes"
    if policy.last:
        for _, _, c in sorted(dated, key=lambda x: x[:2], reverse=True)[:policy.last]:
            assert c.root in kept_roots


@settings(max_examples=150, deadline=None)
@given(histories())
def test_calendar_prune_keeps_whole_chains_and_each_periods_newest(case: tuple[chains.DatasetView,
                                                                             KeepPolicy]) -> None:
    view, policy = case
    # zrelay prune (the job's keep: for s3:NAME) ...
    source = DatasetState(DS, True, ())
    side = S3Side("s3:cold", {}, {DS: view}, policy)
    now = max(c.newest_creation for c in view.chains) + DAY
    plan = plan_prune(PruneInput(SEL, now, SourceSide(HOST, DS, {DS: source}), s3=(side,)))
    _check(view, policy, plan.side("s3:cold").stored[DS])
    # ... and s3-prune --keep, the same policy through the same chain dating
    result = chains.plan_prune(view, keep_chains=None, keep_seconds=None, now=now,
                               keep=keep_chains(view.chains, policy), drop_reason="not kept")
    _check(view, policy, result)
    for d in result.chains:
        assert d.reasons, "every chain says why it goes or stays"
