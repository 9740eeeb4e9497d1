"""Chains of stored sends (pure): health, push planning, restore paths and pruning rules.

The builders at the top make manifests and sends without a bucket; other
S3 unit tests import them.
"""

from __future__ import annotations

import hashlib

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from zrelay.errors import NewestNotRestorable, RestoreRefused
from zrelay.s3 import chains
from zrelay.s3 import manifest as mf
from zrelay.s3.chains import DatasetView, Listed, SendRecord
from zrelay.zfs.model import Bookmark, DatasetState, Snapshot, SnapshotFilter

HOST = "nas1"
DS = "tank/data"
PREFIX = "p/"


def snap(name: str, guid: int, txg: int, creation: int | None = None, ds: str = DS) -> Snapshot:
    return Snapshot(ds, name, guid, txg, creation if creation is not None else 1_700_000_000 + txg * 3600)


def manifest(s: Snapshot, parent: Snapshot | None = None, *, parent_send: str | None = None,
             chain: str | None = None, size: int = 1000, host: str = HOST, compression: str | None = None,
             objects: int = 1) -> mf.Manifest:
    ref = mf.send_ref(s.name, mf.make_send_id(s.guid, parent.guid if parent else None))
    ext = mf.filter_extension(compression, False)
    sizes = [size // objects] * objects
    sizes[-1] += size - sum(sizes)
    objs = tuple(mf.StoredObject(mf.stream_name(i, ext), n, hashlib.sha256(f"{ref}{i}".encode()).hexdigest(),
                                 1, 8 << 20) for i, n in enumerate(sizes))
    whole = objs[0].sha256 if objects == 1 else hashlib.sha256(ref.encode()).hexdigest()
    return mf.Manifest(
        host=host, dataset=s.dataset,
        snapshot=mf.SnapRef(s.name, s.guid, s.createtxg, s.creation),
        parent=None if parent is None else mf.SnapRef(parent.name, parent.guid, parent.createtxg, parent.creation),
        parent_send=parent_send, chain=chain or ref,
        send_flags=() if parent is None else ("-i",),
        send_command=f"zfs send {s.full_name}", raw=False, compression=compression, encryption=None,
        size=size, sha256=whole, objects=objs, zrelay_version="test", started="2026-01-01T00:00:00Z",
        finished="2026-01-01T00:00:01Z")


def record(m: mf.Manifest, *, missing: tuple[int, ...] = (), sizes: dict[int, int] | None = None,
           with_manifest: bool = True, modified: float = 1_700_000_000.0) -> SendRecord:
    directory = mf.send_prefix(PREFIX, m.host, m.dataset, m.snapshot.name, m.send_id)
    rec = SendRecord(m.host, m.dataset, m.ref, directory, m if with_manifest else None,
                     manifest_listed=with_manifest)
    for i, obj in enumerate(m.objects):
        if i in missing:
            continue
        size = (sizes or {}).get(i, obj.size)
        rec.files[obj.name] = Listed(directory + obj.name, size, modified)
    if with_manifest:
        rec.files[mf.MANIFEST_NAME] = Listed(directory + mf.MANIFEST_NAME, 500, modified)
    return rec


def linear_chain(snaps: list[Snapshot], **kw: object) -> list[mf.Manifest]:
    """A full of snaps[0] and -i sends for the rest, linked as s3-push links them."""
    out: list[mf.Manifest] = []
    first = manifest(snaps[0])
    out.append(first)
    prev, prev_m = snaps[0], first
    for s in snaps[1:]:
        m = manifest(s, prev, parent_send=prev_m.ref, chain=first.ref)
        out.append(m)
        prev, prev_m = s, m
    return out


def view(records: list[SendRecord], host: str = HOST, ds: str = DS) -> DatasetView:
    return chains.build_view(host, ds, records)


def state(snaps: list[Snapshot], name: str = DS) -> DatasetState:
    return DatasetState(name, True, tuple(snaps))


# --------------------------------------------------------------------------- tests

A, B, C, D = (snap(n, g, t) for n, g, t in (("a", 11, 10), ("b", 12, 20), ("c", 13, 30), ("d", 14, 40)))


def test_healthy_linear_chain() -> None:
    ms = linear_chain([A, B, C])
    v = view([record(m) for m in ms])
    assert len(v.chains) == 1 and v.healthy
    c = v.chains[0]
    assert c.root == ms[0].ref and [s.snapshot_name for s in c.sends] == ["a", "b", "c"]
    assert c.tip is not None and c.tip.snapshot_name == "c"
    assert [s.snapshot_name for s in c.path_to(ms[2].ref)] == ["a", "b", "c"]


def test_missing_middle_object_breaks_the_chain_from_there() -> None:
    ms = linear_chain([A, B, C])
    v = view([record(ms[0]), record(ms[1], missing=(0,)), record(ms[2])])
    c = v.chains[0]
    assert not c.healthy and c.broken_at == ms[1].ref and "is missing" in c.broken_reason
    assert c.restorable == {ms[0].ref}
    assert c.tip is not None and c.tip.snapshot_name == "a"


def test_wrong_size_counts_as_damaged() -> None:
    ms = linear_chain([A, B])
    v = view([record(ms[0]), record(ms[1], sizes={0: 3})])
    assert v.chains[0].broken_at == ms[1].ref and "the manifest says 1000" in v.chains[0].broken_reason


def test_missing_middle_send_entirely_breaks_the_link() -> None:
    ms = linear_chain([A, B, C])
    v = view([record(ms[0]), record(ms[2])])
    c = v.chains[0]
    assert c.broken_at == ms[1].ref and "builds on is missing" in c.broken_reason
    assert c.restorable == {ms[0].ref}


def test_missing_full_breaks_the_whole_chain() -> None:
    ms = linear_chain([A, B])
    v = view([record(ms[1])])
    c = v.chains[0]
    assert c.full is None and c.restorable == set() and "full send" in c.broken_reason


def test_send_without_manifest_is_an_orphan() -> None:
    ms = linear_chain([A, B])
    v = view([record(ms[0]), record(ms[1], with_manifest=False)])
    assert v.healthy and [s.ref for s in v.orphans] == [ms[1].ref]
    assert "unfinished" in v.orphans[0].problems()[0]


def test_chains_are_ordered_oldest_first() -> None:
    old = linear_chain([A, B])
    new = linear_chain([C, D])
    v = view([record(m) for m in new + old])
    assert [c.root for c in v.chains] == [old[0].ref, new[0].ref]
    assert v.newest_chain is not None and v.newest_chain.root == new[0].ref


# --- push planning -----------------------------------------------------------------


def test_first_push_mirrors_history_one_send_per_snapshot() -> None:
    p = chains.plan_push(state([A, B, C]), None)
    assert p.kind == "full"
    assert [(s.snapshot.name, s.base.name if s.base else None) for s in p.steps] == [
        ("a", None), ("b", "a"), ("c", "b")]
    assert "full send of @a" in p.reason and "2 incremental sends" in p.reason


def test_incremental_extends_the_newest_chain_by_guid() -> None:
    ms = linear_chain([A, B])
    v = view([record(m) for m in ms])
    renamed_b = snap("b-renamed", B.guid, B.createtxg)
    p = chains.plan_push(state([A, renamed_b, C, D]), v)
    assert p.kind == "incremental" and p.chain == ms[0].ref
    assert [(s.snapshot.name, s.base.name if s.base else None) for s in p.steps] == [("c", "b-renamed"),
                                                                                      ("d", "c")]
    assert p.steps[0].parent_send == ms[1].ref and p.steps[1].parent_send is None


def test_chain_end_kept_only_as_a_bookmark_is_the_base() -> None:
    """The source destroyed @b (the chain's newest) but kept its bookmark: the push continues
    from ``#b`` (a Bookmark base, matched to the stored send by GUID), as the host planner does."""
    ms = linear_chain([A, B])
    v = view([record(m) for m in ms])
    mark = Bookmark(DS, "b", B.guid, B.createtxg)
    p = chains.plan_push(DatasetState(DS, True, (A, C, D), (mark,)), v)
    assert p.kind == "incremental" and p.chain == ms[0].ref
    assert [(s.snapshot.name, s.base) for s in p.steps] == [("c", mark), ("d", C)]
    assert p.steps[0].parent_send == ms[1].ref
    assert "1 incremental send" not in p.reason and "2 incremental sends (@c … @d)" in p.reason


def test_filter_skips_unselected_snapshots_stepwise() -> None:
    ms = linear_chain([A])
    v = view([record(m) for m in ms])
    manual = snap("manual", 99, 15)
    p = chains.plan_push(state([A, manual, B]), v, select=SnapshotFilter(regex="^[a-z]$"))
    assert [(s.snapshot.name, s.base.name if s.base else None) for s in p.steps] == [("b", "a")]
    assert "1 incremental send (@a → @b)" in p.reason


def test_up_to_date_is_noop() -> None:
    ms = linear_chain([A, B])
    p = chains.plan_push(state([A, B]), view([record(m) for m in ms]))
    assert p.kind == "noop" and not p.transfers and "@b is stored" in p.reason


def test_broken_newest_chain_is_refused() -> None:
    ms = linear_chain([A, B])
    v = view([record(ms[0]), record(ms[1], missing=(0,))])
    p = chains.plan_push(state([A, B, C]), v)
    assert p.refused and "broken" in p.reason and any("--full" in o for o in p.options)


def test_source_lost_the_stored_snapshots_is_refused() -> None:
    ms = linear_chain([A, B])
    v = view([record(m) for m in ms])
    p = chains.plan_push(state([C, D]), v)
    assert p.refused and "no snapshot of the newest chain" in p.reason
    p = chains.plan_push(state([A, C]), v)   # @b is gone from the source
    assert p.refused and "@b" in p.reason


def test_new_chain_is_a_full_of_the_newest() -> None:
    ms = linear_chain([A, B])
    v = view([record(m) for m in ms])
    p = chains.plan_push(state([A, B, C]), v, new_chain=True)
    assert p.kind == "full" and [s.snapshot.name for s in p.steps] == ["c"] and p.steps[0].base is None
    again = view([record(m) for m in ms] + [record(manifest(C))])
    assert chains.plan_push(state([A, B, C]), again, new_chain=True).kind == "noop"


def test_nothing_selected() -> None:
    p = chains.plan_push(state([]), None)
    assert p.kind == "no-source-snapshot" and not p.transfers


# --- restore paths --------------------------------------------------------------------


def test_restore_into_absent_target_walks_from_the_full() -> None:
    ms = linear_chain([A, B, C])
    v = view([record(m) for m in ms])
    r = chains.plan_restore(v, None, DatasetState.absent("backup/x"))
    assert r.kind == "restore" and [s.snapshot_name for s in r.path] == ["a", "b", "c"]
    r = chains.plan_restore(v, "b", DatasetState.absent("backup/x"))
    assert [s.snapshot_name for s in r.path] == ["a", "b"]


def test_restore_continues_an_existing_target() -> None:
    ms = linear_chain([A, B, C])
    v = view([record(m) for m in ms])
    target = DatasetState("backup/x", True, (snap("a", A.guid, 3, ds="backup/x"),))
    r = chains.plan_restore(v, None, target)
    assert [s.snapshot_name for s in r.path] == ["b", "c"] and [s.snapshot_name for s in r.skipped] == ["a"]
    done = DatasetState("backup/x", True, tuple(snap(s.name, s.guid, s.createtxg, ds="backup/x") for s in (A, B, C)))
    assert chains.plan_restore(v, None, done).kind == "noop"


def test_restore_refuses_unrelated_or_diverged_targets() -> None:
    ms = linear_chain([A, B])
    v = view([record(m) for m in ms])
    with pytest.raises(RestoreRefused, match="holds no snapshot"):
        chains.plan_restore(v, None, DatasetState("backup/x", True, (snap("z", 999, 1, ds="backup/x"),)))
    diverged = DatasetState("backup/x", True, (snap("a", A.guid, 3, ds="backup/x"), snap("local", 5, 4, ds="backup/x")))
    with pytest.raises(RestoreRefused, match="@local"):
        chains.plan_restore(v, None, diverged)


def test_restore_of_a_snapshot_behind_a_break_is_refused() -> None:
    ms = linear_chain([A, B, C])
    v = view([record(ms[0]), record(ms[1], missing=(0,)), record(ms[2])])
    with pytest.raises(RestoreRefused, match="broken"):
        chains.plan_restore(v, "c", DatasetState.absent("x/y"))
    with pytest.raises(NewestNotRestorable, match="newest stored snapshot"):   # never quietly @a
        chains.plan_restore(v, None, DatasetState.absent("x/y"))
    assert [s.snapshot_name for s in chains.plan_restore(v, "a", DatasetState.absent("x/y")).path] == ["a"]
    with pytest.raises(RestoreRefused, match="no send of"):
        chains.plan_restore(v, "zz", DatasetState.absent("x/y"))


def test_restore_prefers_the_shortest_path() -> None:
    old = linear_chain([A, B, C])
    new = [manifest(C)]
    v = view([record(m) for m in old + new])
    r = chains.plan_restore(v, "c", DatasetState.absent("x/y"))
    assert [s.ref for s in r.path] == [new[0].ref]


# --- pruning ----------------------------------------------------------------------------

NOW = 1_700_000_000 + 100 * 86400


def _three_chains(broken_newest: bool = False) -> DatasetView:
    c1 = linear_chain([snap("a1", 1, 10, 1_700_000_000), snap("a2", 2, 11, 1_700_000_000 + 86400)])
    c2 = linear_chain([snap("b1", 3, 20, 1_700_000_000 + 30 * 86400), snap("b2", 4, 21, 1_700_000_000 + 31 * 86400)])
    c3 = linear_chain([snap("c1", 5, 30, NOW - 2 * 86400), snap("c2", 6, 31, NOW - 86400),
                       snap("c3", 7, 32, NOW - 3600)])
    recs = [record(m) for m in c1 + c2]
    recs += [record(c3[0]), record(c3[1], missing=(0,) if broken_newest else ()), record(c3[2])]
    return view(recs)


def test_keep_newest_chains() -> None:
    v = _three_chains()
    p = chains.plan_prune(v, keep_chains=2, keep_seconds=None, now=NOW)
    assert [d.delete for d in p.chains] == [True, False, False]
    keys = p.keys_in_order()
    assert keys[0].endswith("manifest.json") and "/@a2/" in keys[0], "newest send first, manifest first"
    assert all("/@a1/" in k or "/@a2/" in k for k in keys)
    assert not p.refused


def test_keep_days_keeps_whole_chains() -> None:
    v = _three_chains()
    p = chains.plan_prune(v, keep_chains=None, keep_seconds=75 * 86400, now=NOW)
    assert [d.delete for d in p.chains] == [True, False, False]
    p = chains.plan_prune(v, keep_chains=None, keep_seconds=3 * 86400, now=NOW)
    assert [d.delete for d in p.chains] == [True, True, False]
    assert "newest chain" in p.chains[-1].reasons


def test_rules_are_required_and_newest_is_always_kept() -> None:
    v = _three_chains()
    with pytest.raises(ValueError):
        chains.plan_prune(v, keep_chains=None, keep_seconds=None, now=NOW)
    with pytest.raises(ValueError):
        chains.plan_prune(v, keep_chains=0, keep_seconds=None, now=NOW)
    p = chains.plan_prune(v, keep_chains=None, keep_seconds=0, now=NOW)
    assert not p.chains[-1].delete


def test_prune_refuses_to_leave_no_complete_chain() -> None:
    v = _three_chains(broken_newest=True)
    p = chains.plan_prune(v, keep_chains=1, keep_seconds=None, now=NOW)
    assert [d.delete for d in p.chains] == [True, False, False]
    refused = p.refused
    assert len(refused) == 1 and refused[0].chain.root.startswith("@b1/")
    assert "without a complete chain" in (refused[0].refused or "")
    assert not any("/@b" in k or "/@c" in k for k in p.keys_in_order())


def test_orphans_are_deleted_only_after_the_grace_period() -> None:
    ms = linear_chain([A])
    young = record(manifest(B, A, parent_send=ms[0].ref, chain=ms[0].ref), with_manifest=False, modified=NOW - 60)
    old = record(manifest(C, B, parent_send="@b/x", chain=ms[0].ref), with_manifest=False, modified=NOW - 2 * 86400)
    v = view([record(ms[0]), young, old])
    p = chains.plan_prune(v, keep_chains=1, keep_seconds=None, now=NOW)
    assert [s.ref for s in p.orphans_deleted] == [old.ref] and [s.ref for s in p.orphans_kept] == [young.ref]
    assert p.keys_in_order() == old.keys


@settings(max_examples=60, deadline=None)
@given(st.lists(st.integers(1, 4), min_size=1, max_size=5), st.integers(1, 4),
       st.one_of(st.none(), st.integers(0, 60)), st.sets(st.integers(0, 19), max_size=3))
def test_prune_never_orphans_an_incremental(lengths: list[int], keep: int, days: int | None,
                                            damaged: set[int]) -> None:
    """Whatever the rules and damage: every send left behind still has every ancestor it had."""
    recs: list[SendRecord] = []
    txg, guid, n = 1, 1, 0
    for length in lengths:
        snaps = []
        for _ in range(length):
            snaps.append(snap(f"s{guid}", guid, txg, 1_700_000_000 + txg * 86400))
            txg, guid = txg + 1, guid + 1
        for m in linear_chain(snaps):
            recs.append(record(m, missing=(0,) if n in damaged else ()))
            n += 1
    v = view(recs)
    now = 1_700_000_000 + txg * 86400
    p = chains.plan_prune(v, keep_chains=keep, keep_seconds=None if days is None else days * 86400, now=now)
    gone = set(p.keys_in_order())
    for c in v.chains:
        for s in c.sends:
            if any(k in gone for k in s.keys):
                continue
            for ancestor in c.path_to(s.ref) if s.ref in c.restorable else []:
                assert not any(k in gone for k in ancestor.keys)
    if any(c.healthy for c in v.chains):
        assert any(c.healthy and not any(k in gone for s in c.sends for k in s.keys) for c in v.chains)
