"""`zrelay status` on rows sync would refuse or fail: the fields still say where the target stands.

A diverged target and an unrelated one (no common base) are still behind
the source: `source_newest` is the newest selected source snapshot and
`behind` counts what the target lacks (docs/status-json.md). A target whose
newest snapshot was destroyed after a sync is not simply behind: its live
data is the destroyed snapshot's, so `zfs receive` refuses the incremental
("modified since most recent snapshot"); status says so before sync fails.
Tier-neutral: OpenZFS tells it with `written`, zfs-fuse by the sizes.
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import pytest

from tests.integration.helpers import make_dataset, write, write_inventory, zrelay

pytestmark = pytest.mark.lab


def _rows(inv: Path, state: Path) -> dict[str, dict]:
    proc = zrelay("--state", str(state), "status", "--json", inventory=inv)
    assert "Traceback" not in proc.stderr, proc.stderr
    return {r["target"]: r for r in json.loads(proc.stdout)}


@pytest.fixture
def world(lab: Any, tmp_path: Path):  # type: ignore[no-untyped-def]
    name = lab.unique("sr")
    src_pool, dst_pool = lab.pools["nas1"], lab.pools["vault"]
    made: list[tuple[str, str]] = []
    try:
        yield name, src_pool, dst_pool, made
    finally:
        for host, ds in reversed(made):
            try:
                lab.destroy(host, ds)
            except Exception as exc:  # zfs-fuse keeps a killed send's temporary hold: cleanup must not fail the test
                print(f"cleanup: {host}:{ds}: {exc}")


def test_diverged_and_unrelated_rows_name_the_newest_source_snapshot(lab: Any, world, tmp_path: Path) -> None:  # type: ignore[no-untyped-def]
    name, sp, dp, made = world
    jobs = []
    for case in "dn":
        src, dst = f"{sp}/{name}{case}", f"{dp}/{name}{case}"
        made += [("nas1", src), ("vault", dst)]
        make_dataset(lab, "nas1", src, mib=lab.mib(1), snaps=["auto-1", "auto-2", "auto-3"])
        jobs.append({"source": f"nas1:{src}", "targets": [f"vault:{dst}"],
                     "snapshots": {"prefix": "auto-"}})
    inv = write_inventory(tmp_path / "inv.yml", lab, jobs)
    state = tmp_path / "state.db"
    first = zrelay("--state", str(state), "sync", inventory=inv)
    assert first.returncode == 0, first.stderr
    d_src, d_dst = f"{sp}/{name}d", f"{dp}/{name}d"
    n_src, n_dst = f"{sp}/{name}n", f"{dp}/{name}n"
    lab.run("vault", "zfs", "snapshot", f"{d_dst}@local")                 # diverged
    for snap in ("auto-4", "manual", "auto-5"):                           # @manual is not selected
        write(lab, "nas1", d_src, snap, lab.mib(1))
        lab.run("nas1", "zfs", "snapshot", f"{d_src}@{snap}")
    lab.destroy("vault", n_dst)                                           # re-created: unrelated
    lab.run("vault", "zfs", "create", n_dst)
    lab.run("vault", "zfs", "snapshot", f"{n_dst}@other")

    rows = _rows(inv, state)
    d = rows[f"vault:{d_dst}"]
    assert d["state"] == "diverged"
    assert (d["source_newest"], d["common_base"], d["target_newest"], d["behind"]) == ("auto-5", "auto-3", "local", 2)
    assert d["lag_seconds"] is not None and d["lag_seconds"] >= 0
    n = rows[f"vault:{n_dst}"]
    assert n["state"] == "no-common-base"
    assert (n["source_newest"], n["common_base"], n["target_newest"], n["behind"]) == ("auto-3", None, "other", 3)
    assert n["lag_seconds"] is None


def test_a_destroyed_newest_target_snapshot_is_reported_before_sync_fails(lab: Any, world, tmp_path: Path) -> None:  # type: ignore[no-untyped-def]
    name, sp, dp, made = world
    src, dst = f"{sp}/{name}", f"{dp}/{name}"
    made += [("nas1", src), ("vault", dst)]
    make_dataset(lab, "nas1", src, mib=lab.mib(1), snaps=["s1", "s2"])
    inv = write_inventory(tmp_path / "inv.yml", lab, [{"source": f"nas1:{src}", "targets": [f"vault:{dst}"]}])
    state = tmp_path / "state.db"
    assert zrelay("--state", str(state), "sync", inventory=inv).returncode == 0

    write(lab, "nas1", src, "more", lab.mib(1))
    lab.run("nas1", "zfs", "snapshot", f"{src}@s3")
    behind = _rows(inv, state)[f"vault:{dst}"]
    assert (behind["state"], behind["behind"]) == ("behind", 1)
    if getattr(lab.capabilities("vault"), "written", False):
        assert "cannot be known" not in behind["message"]
    else:   # zfs-fuse: the sizes agree, so it cannot tell; it says so instead of guessing
        assert "has no `written` property" in behind["message"] and "cannot be known" in behind["message"]

    # another tool prunes the target's newest snapshot (zrelay's hold on it, OpenZFS, is let go first)
    assert zrelay("--state", str(state), "release", inventory=inv).returncode == 0
    lab.run("vault", "zfs", "destroy", f"{dst}@s2")                      # the target's live data is @s2's
    row = _rows(inv, state)[f"vault:{dst}"]
    assert row["state"] == "diverged", row
    assert (row["source_newest"], row["common_base"], row["target_newest"], row["behind"]) == ("s3", "s1", "s1", 2)
    assert "modified since most recent snapshot" in row["message"] and "--rollback" in row["message"]
    assert f"zfs rollback {dst}@s1" in row["message"]

    failed = zrelay("--state", str(state), "sync", inventory=inv)         # what status predicted
    assert failed.returncode == 1 and "modified since most recent snapshot" in failed.stderr
    fixed = zrelay("--state", str(state), "sync", "--rollback", inventory=inv)   # the option it gave
    assert fixed.returncode == 0, fixed.stderr
    assert _rows(inv, state)[f"vault:{dst}"]["state"] == "in-sync"
