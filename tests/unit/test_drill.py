"""Restore drills, the pure part and the evidence store: names, the snapshot chosen, the checksum
script's output, the verdict, what is recorded and what ``status`` shows of it."""

from __future__ import annotations

import random
import subprocess
from datetime import datetime, timezone
from pathlib import Path

import pytest

from zrelay import drill as d
from zrelay.drillstate import DrillStore, last_drills
from zrelay.errors import InvalidName, UsageError
from zrelay.status.report import LocationStatus, annotate_drill
from zrelay.zfs.model import DatasetState, Snapshot

WHEN = datetime(2026, 12, 6, 14, 30, 5, tzinfo=timezone.utc)


def state(*snaps: tuple[str, int]) -> DatasetState:
    return DatasetState("tank/src", snapshots=tuple(Snapshot("tank/src", n, g, i + 1)
                                                    for i, (n, g) in enumerate(snaps)))


def test_scratch_name_is_under_the_parent_unique_and_never_a_taken_one() -> None:
    name = d.scratch_name("tank/scratch", "nas1:tank/data", WHEN)
    assert name == "tank/scratch/zrelay-drill-nas1-tank-data-20261206T143005Z"
    assert d.scratch_name("tank/scratch", "nas1:tank/data", WHEN, {name}) == name + "-2"
    assert d.scratch_name("tank/scratch", "x", WHEN, {f"tank/scratch/zrelay-drill-x-20261206T143005Z",
                                                       f"tank/scratch/zrelay-drill-x-20261206T143005Z-2"}).endswith("-3")
    with pytest.raises(InvalidName):
        d.scratch_name("tank/bad;rm", "x", WHEN)
    assert d.source_clone_name("tank/data/sub", name) == "tank/zrelay-drill-nas1-tank-data-20261206T143005Z-src"
    assert d.mountpoint_for(d.clone_name(name, "copy")) == "/tmp/zrelay-drill-nas1-tank-data-20261206T143005Z-copy"


def test_choose_matches_by_guid_newest_by_default_random_among_common_and_named() -> None:
    source = state(("a", 1), ("b", 2), ("c", 3))
    copy = [("a", 1), ("b", 2), ("x", 9)]                 # x: same name elsewhere, not the source's
    common = d.candidates(source, copy)
    assert [c.name for c in common] == ["a", "b"]
    assert d.choose(common, copy, None, None, "nas2:r", "nas1:s").name == "b"
    assert d.choose(common, copy, "a", None, "nas2:r", "nas1:s").source.guid == 1
    picked = {d.choose(common, copy, None, random.Random(seed), "nas2:r", "nas1:s").name for seed in range(30)}
    assert picked == {"a", "b"}
    with pytest.raises(UsageError, match="not on the source"):
        d.choose(common, copy, "x", None, "nas2:r", "nas1:s")
    with pytest.raises(UsageError, match="has no snapshot @zz"):
        d.choose(common, copy, "zz", None, "nas2:r", "nas1:s")
    with pytest.raises(UsageError, match="nothing to drill"):
        d.choose([], [("x", 9)], None, None, "nas2:r", "nas1:s")


def test_commands_never_force_never_destroy_more_than_one_dataset() -> None:
    assert d.receive_argv("tank/s/zrelay-drill-x") == ["zfs", "receive", "-u", "tank/s/zrelay-drill-x"]
    assert d.destroy_argv("tank/s/zrelay-drill-x", recursive=True) == ["zfs", "destroy", "-r", "tank/s/zrelay-drill-x"]
    with pytest.raises(InvalidName):
        d.destroy_argv("tank/s@snap", recursive=False)
    assert d.clone_argv("tank/a@s", "tank/c", "/tmp/c") == [
        "zfs", "clone", "-o", "mountpoint=/tmp/c", "-o", "readonly=on", "-o", "zrelay:sync=false", "tank/a@s", "tank/c"]
    argv = d.tree_argv("/tmp/c", volume=False)
    assert argv[:2] == ["sh", "-c"] and argv[2] == d.TREE_SCRIPT and argv[-2:] == ["fs", "/tmp/c"]


def _tree(path: Path) -> d.TreeSum:
    r = subprocess.run(d.tree_argv(str(path), False), capture_output=True, text=True, check=True)
    return d.parse_tree(r.stdout)


def test_tree_checksum_sees_contents_modes_and_links_and_fails_on_what_it_cannot_read(tmp_path: Path) -> None:
    a, b = tmp_path / "a", tmp_path / "b"
    for root in (a, b):
        (root / "d").mkdir(parents=True)
        (root / "d" / "f").write_bytes(b"data")
        (root / "l").symlink_to("d/f")
    first = _tree(a)
    assert first == _tree(b) and first.entries == 4
    (b / "d" / "f").write_bytes(b"dat4")                 # same size, other bytes
    changed = _tree(b)
    assert changed.meta == first.meta and changed.content != first.content
    assert d.verdict(1, 1, first, changed)[0] == d.MISMATCH and "contents differ" in d.verdict(1, 1, first, changed)[1]
    (b / "d" / "f").write_bytes(b"data")
    (b / "d" / "f").chmod(0o600)
    assert _tree(b).meta != first.meta
    r = subprocess.run(d.tree_argv(str(tmp_path / "missing"), False), capture_output=True, text=True)
    assert r.returncode != 0


def test_parse_tree_refuses_what_the_script_does_not_print() -> None:
    good = f"meta {'a' * 64}\ncontent {'b' * 64}\nentries 3\n"
    assert d.parse_tree(good).entries == 3
    with pytest.raises(ValueError):
        d.parse_tree("content xyz\nentries 3\n")
    with pytest.raises(ValueError):
        d.parse_tree("")


def test_verdict() -> None:
    t = d.TreeSum("a" * 64, "b" * 64, 3)
    assert d.verdict(7, 7, t, t)[0] == d.OK
    assert d.verdict(7, 8, t, t) == (d.MISMATCH, "received GUID 8 is not the source's 7")
    assert d.verdict(7, None, None, None)[0] == d.FAILED
    assert "2 entries" in d.verdict(7, 7, t, d.TreeSum("a" * 64, "c" * 64, 2))[1]


def test_store_keeps_the_evidence_and_status_shows_the_newest_per_target(tmp_path: Path) -> None:
    path = tmp_path / "state.db"
    assert last_drills(path) == {}
    big = 2 ** 64 - 5                                        # GUIDs are unsigned 64 bits
    with DrillStore(path) as store:
        store.record("j", "nas2:tank/r", "nas1:tank/s", "a", big, 100.0, 110.0, "ok", "equal", {"bytes": 5})
        store.record("j", "nas2:tank/r", "nas1:tank/s", "b", 3, 200.0, 210.0, "failed", "boom", {})
        store.record("j", "s3:off", "nas1:tank/s", "a", big, 150.0, 160.0, "mismatch", "differs", {})
        assert [r["snapshot"] for r in store.drills("j", "nas2:tank/r")] == ["b", "a"]
        assert store.drills("j", "nas2:tank/r")[1]["guid"] == big
        assert store.drills("j", "nas2:tank/r")[1]["detail"] == {"bytes": 5}
        with pytest.raises(Exception):
            store.record("j", "x", "y", "a", None, 1.0, 2.0, "maybe", "", {})
    last = last_drills(path)
    assert last[("j", "nas2:tank/r")]["result"] == "failed"
    row = LocationStatus("j", "nas1:tank/s", "nas2:tank/r", "in-sync")
    assert annotate_drill(row, last).last_drill == {"when": 210.0, "snapshot": "b", "result": "failed",
                                                    "message": "boom"}
    other = LocationStatus("k", "nas1:tank/s", "nas2:tank/r", "in-sync")
    assert annotate_drill(other, last).last_drill is None
    assert "last_drill" in row.to_dict()


def test_a_round_larger_than_the_kept_count_is_kept_whole(tmp_path: Path) -> None:
    """A recursive job's tree of more datasets than KEEP_PER_COPY: its newest round stays whole (older
    drills go), so status still counts every dataset of it."""
    from zrelay.drillstate import KEEP_PER_COPY

    path = tmp_path / "state.db"
    with DrillStore(path) as store:
        store.record("j", "nas2:r", "nas1:s", "old", 1, 1.0, 2.0, "ok", "equal", {})
        size = KEEP_PER_COPY + 50
        for i in range(size):
            result = "mismatch" if i == 3 else "ok"
            store.record("j", "nas2:r", "nas1:s", "s", i, 100.0 + i, 100.5 + i, result, result, {"round": 100.0})
        kept = store.drills("j", "nas2:r", limit=10 * size)
    assert len(kept) == size and "old" not in {r["snapshot"] for r in kept}
    newest = last_drills(path)[("j", "nas2:r")]
    assert newest["result"] == "mismatch" and f"of {size} datasets" in newest["message"], newest
