"""Pruning where OpenZFS has holds and bookmarks (ZRELAY_LAB=openzfs, `make test-openzfs`).

zrelay holds each target's base on the source and bookmarks what it sends; a prune must keep
the held base, release only this job's own holds on snapshots it lets go, never touch a snapshot
another tool holds, prune the job's old bookmarks by the same policy while keeping the base's,
and batch its destroys into one ``zfs destroy ds@a,b,…`` per dataset.
"""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from tests.integration.dryrun_check import assert_ran_what_was_printed, executed
from tests.integration.helpers import make_dataset, snapshots, write_inventory, zrelay

pytestmark = pytest.mark.lab


@pytest.fixture(autouse=True)
def _openzfs_only(lab) -> None:
    if lab.tier != "openzfs":
        pytest.skip("holds and bookmarks are OpenZFS-only: run with ZRELAY_LAB=openzfs (make test-openzfs)")


def _names(lab, host: str, dataset: str) -> list[str]:
    return [name for name, _guid in snapshots(lab, host, dataset)]


def _bookmarks(lab, host: str, dataset: str) -> list[str]:
    out = lab.run(host, "zfs", "list", "-H", "-t", "bookmark", "-o", "name", "-s", "createtxg", "-d", "1",
                  dataset).stdout
    return [line.split("#", 1)[1] for line in out.splitlines() if "#" in line]


def _holds(lab, host: str, snapshot: str) -> list[str]:
    out = lab.run(host, "zfs", "holds", "-H", snapshot).stdout
    return [line.split("\t")[1] for line in out.splitlines() if line.strip()]


def test_prune_keeps_held_bases_and_foreign_holds_and_prunes_bookmarks(lab, tmp_path: Path) -> None:
    lab.require("nas1", "bookmarks")
    lab.require("nas1", "holds")
    name = lab.unique()
    src, dst = f"tank/{name}", f"backup/{name}"
    make_dataset(lab, "nas1", src)
    days = [f"2026-11-{d:02d}" for d in range(20, 30)]
    week = [f"zrelay_{d}T12:00:00Z" for d in days]
    lab.run("nas1", "sh", "-c", "; ".join(f"zfs snapshot {src}@{n}" for n in week))
    inv = write_inventory(tmp_path / "inv.yml", lab, [{
        "name": name, "source": f"nas1:{src}", "targets": [f"vault:{dst}"],
        "keep": {"source": {"last": 2}, "targets": {"last": 3}}}],
        settings={"snapshot_name": "zrelay_%Y-%m-%dT%H:%M:%SZ"})
    assert zrelay("sync", inventory=inv).returncode == 0
    base = week[-1]
    assert any(t.startswith(f"zrelay:{name}:") for t in _holds(lab, "nas1", f"{src}@{base}"))
    assert _bookmarks(lab, "nas1", src) == week[-1:]                # the sent base's bookmark
    # bookmarks older runs left behind (one per base they sent), named like the job's snapshots
    lab.run("nas1", "sh", "-c", "; ".join(f"zfs bookmark {src}@{n} {src}#{n}" for n in week[:-1]))
    assert _bookmarks(lab, "nas1", src) == week
    lab.run("nas1", "zfs", "hold", "backup-tool", f"{src}@{week[2]}")  # another tool's hold

    run = assert_ran_what_was_printed(inv, tmp_path, command="prune")
    source = next(r for r in run if r["target"].endswith("(source)"))
    kept = {d["name"]: d["reasons"] for d in source["decisions"] if d["keep"] and d["kind"] == "snapshot"}
    assert any("backup-tool" in r for r in kept[week[2]]), kept
    assert set(_names(lab, "nas1", src)) == {week[2], week[-2], week[-1]}
    assert f"zrelay:{name}:" in " ".join(_holds(lab, "nas1", f"{src}@{base}"))   # the base stays held
    # bookmarks follow the same policy (last 2), the base's stays
    assert _bookmarks(lab, "nas1", src) == week[-2:]
    assert _names(lab, "vault", dst) == week[-3:]
    # one batched destroy per dataset and side
    log_run = zrelay("prune", "--json", inventory=inv)
    assert log_run.returncode == 0
    assert all(r["outcome"] == "noop" for r in json.loads(log_run.stdout)), log_run.stdout
    lab.run("nas1", "zfs", "release", "backup-tool", f"{src}@{week[2]}")


def test_destroys_are_batched_per_dataset(lab, tmp_path: Path) -> None:
    name = lab.unique()
    src, dst = f"tank/{name}", f"backup/{name}"
    make_dataset(lab, "nas1", src)
    old = [f"zrelay_2026-10-{d:02d}T00:00:00Z" for d in range(1, 21)]
    lab.run("nas1", "sh", "-c", "; ".join(f"zfs snapshot {src}@{n}" for n in old))
    inv = write_inventory(tmp_path / "inv.yml", lab, [{
        "name": name, "source": f"nas1:{src}", "targets": [f"vault:{dst}"], "keep": {"source": {"last": 1}}}],
        settings={"snapshot_name": "zrelay_%Y-%m-%dT%H:%M:%SZ"})
    assert zrelay("sync", inventory=inv).returncode == 0
    log = tmp_path / "log.jsonl"
    run = zrelay("prune", inventory=inv, env={"ZRELAY_COMMAND_LOG": str(log)})
    assert run.returncode == 0, run.stderr
    destroys = [c for h, c in executed(log) if " destroy " in f" {c} "]
    snapshot_destroys = [c for c in destroys if "@" in c]
    assert len(snapshot_destroys) == 1 and snapshot_destroys[0].count(",") == 18, destroys
    assert _names(lab, "nas1", src) == [old[-1]]
