"""``s3-push`` runs on the sync engine: its dry run prints what the push then runs.

``zrelay s3-push --dry-run --json`` first, then the same push with the audit log on
(``ZRELAY_COMMAND_LOG``): every command the push ran on a source that changes
something (the snapshot, each send's pipeline) is one the dry run printed, in the
same order (tests/integration/dryrun_check.py; the dry run's ``upload to s3://…``
lines name where each send goes and run nothing remote). A full push of a
recursive job first, then an incremental one with ``--snapshot`` (named by the
year only, so the dry run and the run name the same snapshot). Also: one dataset of a job whose upload
fails does not keep the job's other datasets from being pushed.
"""

from __future__ import annotations

import json
from datetime import datetime, timezone
from pathlib import Path
from typing import Any, Iterator

import pytest

from tests.integration.dryrun_check import assert_ran_what_was_printed
from tests.integration.helpers import make_dataset, write, write_inventory, zrelay
from tests.s3fixture import s3  # noqa: F401  (the fixture)

pytestmark = pytest.mark.lab


class World:
    """A recursive job (a dataset and its child) on nas1 pushed to its own key prefix."""

    def __init__(self, lab: Any, s3: Any, tmp: Path) -> None:
        self.lab, self.s3 = lab, s3
        self.name = lab.unique("dr3")
        self.src = f"{lab.pools['nas1']}/{self.name}"
        self.prefix = s3.prefix(self.name)
        self.tmp = tmp
        self.new = datetime.now(timezone.utc).strftime(f"{self.name}-%Y")   # what --snapshot names
        self.inventory = write_inventory(
            tmp / "inv.yml", lab, [{"source": f"nas1:{self.src}", "recursive": True, "targets": ["s3:offsite"]}],
            settings={"snapshot_name": f"{self.name}-%Y", "s3_targets": {"offsite": s3.target(self.prefix)}})

    def push(self, *args: str) -> list[dict[str, Any]]:
        return assert_ran_what_was_printed(self.inventory, self.tmp, *args, command="s3-push", env=self.s3.env)

    def stored(self) -> dict[str, list[str]]:
        """dataset → the snapshots of its stored sends, oldest first."""
        r = zrelay("s3-ls", "offsite", "--json", inventory=self.inventory, env=self.s3.env)
        return {d["dataset"]: [s["snapshot"] for c in d["chains"] for s in c["sends"]]
                for d in json.loads(r.stdout)[0]["datasets"]}


@pytest.fixture
def world(lab: Any, s3: Any, tmp_path: Path) -> Iterator[World]:
    w = World(lab, s3, tmp_path)
    try:
        yield w
    finally:
        try:
            lab.destroy("nas1", w.src)
        finally:
            s3.cleanup(w.prefix)


def test_full_then_incremental_push_runs_what_the_dry_run_printed(world: World) -> None:
    lab, src = world.lab, world.src
    make_dataset(lab, "nas1", src, snaps=["a1"])
    make_dataset(lab, "nas1", f"{src}/child", snaps=["a1"])
    run = world.push()
    assert [(r["dataset"], r["plan"]["kind"], r["outcome"]) for r in run] == [
        (f"nas1:{src}", "full", "ok"), (f"nas1:{src}/child", "full", "ok")]
    uploads = [c for r in run for c in r["commands"] if c["command"].startswith("upload to ")]
    assert [c["host"] for c in uploads] == ["s3:offsite", "s3:offsite"], run
    assert all(f"s3://{world.s3.bucket}/{world.prefix}zrelay/v1/nas1/" in c["command"] for c in uploads)

    write(lab, "nas1", f"{src}/child", "more")
    run = world.push("--snapshot")                       # zfs snapshot -r, then an -i send per dataset
    assert [(r["plan"]["kind"], r["outcome"]) for r in run] == [("incremental", "ok"), ("incremental", "ok")]
    snapshot = [c["command"] for c in run[0]["commands"] if " snapshot " in c["command"]]
    assert len(snapshot) == 1 and f"{src}@{world.new}" in snapshot[0], run[0]["commands"]
    assert not any(" snapshot " in c["command"] for c in run[1]["commands"]), "the snapshot is shown once"
    assert world.stored() == {f"nas1:{src}": ["a1", world.new],
                              f"nas1:{src}/child": ["a1", world.new]}


def test_a_dataset_whose_push_fails_leaves_the_others_pushed(world: World) -> None:
    """The parent's send passes --max-stream-size (zfs-fuse: while it streams, its upload aborted;
    OpenZFS: by its estimate, before it starts); its child is pushed all the same."""
    lab, src = world.lab, world.src
    make_dataset(lab, "nas1", src, snaps=["b1"])
    make_dataset(lab, "nas1", f"{src}/child", snaps=["b1"])
    assert zrelay("s3-push", inventory=world.inventory, env=world.s3.env).returncode == 0
    write(lab, "nas1", src, "big", 3)
    lab.run("nas1", "zfs", "snapshot", "-r", f"{src}@b2")
    r = zrelay("s3-push", "--json", "--max-stream-size", "1M", "--compression", "none",
               inventory=world.inventory, env=world.s3.env)
    assert r.returncode == 1, r.stdout + r.stderr
    parent, child = json.loads(r.stdout)
    assert parent["outcome"] == "failed" and "max_stream_size" in parent["message"], parent
    assert child["outcome"] == "ok" and child["bytes"] > 0, child
    assert world.stored() == {f"nas1:{src}": ["b1"], f"nas1:{src}/child": ["b1", "b2"]}
    assert world.s3.uploads(world.prefix) == [], "a failed upload is aborted, never left open"
    table = zrelay("s3-push", "--max-stream-size", "1M", "--compression", "none",
                   inventory=world.inventory, env=world.s3.env)
    assert table.returncode == 1 and "Traceback" not in table.stderr
    assert f"failed: nas1:{src} → s3:offsite: " in table.stderr and "max_stream_size" in table.stderr
    assert f"failed: nas1:{src}/child" not in table.stderr
