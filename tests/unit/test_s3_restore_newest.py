"""s3-restore's choice of "newest": the newest stored snapshot, or a refusal naming what can be restored."""

from __future__ import annotations

import pytest

from tests.unit.test_s3_chains import linear_chain, manifest, record, snap, view
from zrelay.errors import NewestNotRestorable
from zrelay.paths.s3restore import newest_refusal
from zrelay.s3 import chains
from zrelay.zfs.model import DatasetState

A, B, C = snap("a", 11, 10), snap("b", 12, 20), snap("c", 13, 30)
ABSENT = DatasetState.absent("backup/r")


def test_a_chain_broken_after_the_first_send_refuses_the_newest() -> None:
    ms = linear_chain([A, B, C])
    v = view([record(ms[0]), record(ms[1], missing=(0,)), record(ms[2])])
    with pytest.raises(NewestNotRestorable) as caught:
        chains.plan_restore(v, None, ABSENT)
    exc = caught.value
    assert exc.newest == "c" and exc.restorable == "a" and exc.endpoint == "nas1:tank/data"
    assert "newest stored snapshot of nas1:tank/data is @c" in str(exc)
    assert f"breaks at {ms[1].ref}" in str(exc) and "@b, @c cannot be restored" in str(exc)
    text = newest_refusal(exc, "offsite", "vault:backup/r")
    assert text.endswith("zrelay s3-restore offsite nas1:tank/data --to vault:backup/r --snapshot a")
    # asked for by name, the restorable one is restored as before
    assert [s.snapshot_name for s in chains.plan_restore(v, "a", ABSENT).path] == ["a"]


def test_nothing_restorable_says_so() -> None:
    ms = linear_chain([A, B])
    v = view([record(ms[0], missing=(0,)), record(ms[1])])
    with pytest.raises(NewestNotRestorable) as caught:
        chains.plan_restore(v, None, ABSENT)
    assert caught.value.restorable is None
    assert "Nothing stored for nas1:tank/data can be restored" in newest_refusal(caught.value, "o", "h:d")


def test_a_newer_healthy_chain_holding_the_newest_is_restored() -> None:
    old = linear_chain([A, B, C])
    fresh = manifest(C)                       # s3-push --full: a new chain at @c
    v = view([record(old[0]), record(old[1], missing=(0,)), record(old[2]), record(fresh)])
    p = chains.plan_restore(v, None, ABSENT)
    assert [s.ref for s in p.path] == [fresh.ref]
    assert chains.newest_stored(v) is not None and chains.newest_stored(v).snapshot_name == "c"  # type: ignore[union-attr]


def test_newest_is_chosen_by_createtxg_not_by_name_or_time() -> None:
    z = snap("a-first", 21, 10, creation=2_000_000_000)   # the oldest, with the latest creation time
    y = snap("zz", 22, 20, creation=1_000_000_000)
    v = view([record(m) for m in linear_chain([z, y])])
    assert [s.snapshot_name for s in chains.plan_restore(v, None, ABSENT).path] == ["a-first", "zz"]
