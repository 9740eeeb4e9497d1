"""The dry run prints what the run runs: every plan kind the lab offers, byte for byte.

``zrelay sync --dry-run --json`` first, then the same ``zrelay sync`` with the audit
log on (``ZRELAY_COMMAND_LOG``); every command that changed something must be one
the dry run printed, on the same host, as often (tests/integration/dryrun_check.py).
A snapshot name that changes once a year lets ``--snapshot`` name the same snapshot in both runs.
OpenZFS-only plan kinds (resume, bookmark base, raw) are in tests/openzfs.
"""

from __future__ import annotations

from pathlib import Path

import pytest

from tests.integration.dryrun_check import assert_ran_what_was_printed
from tests.integration.helpers import make_dataset, snapshots, write, write_inventory, zrelay

pytestmark = pytest.mark.lab


def _inventory(lab, tmp_path: Path, job: dict, name: str, **kw: object) -> Path:
    return write_inventory(tmp_path / "inv.yml", lab, [job], settings={"snapshot_name": f"{name}-%Y"}, **kw)


def test_full_into_a_missing_parent_then_incremental_recursive(lab, tmp_path: Path) -> None:
    name = lab.unique()
    src, dst = f"tank/{name}", f"backup/{name}-parent/{name}"
    make_dataset(lab, "nas1", src, snaps=["zrelay_1"])
    make_dataset(lab, "nas1", f"{src}/child", snaps=["zrelay_1"])
    inv = _inventory(lab, tmp_path, {"source": f"nas1:{src}", "recursive": True, "targets": [f"vault:{dst}"]},
                     name)
    run = assert_ran_what_was_printed(inv, tmp_path)       # zfs create -p, two full streams, properties
    assert [p["kind"] for p in run[0]["plans"]] == ["full", "full"]
    for snap in ("zrelay_2", "zrelay_3"):                  # every snapshot selected: one -I stream each
        lab.run("nas1", "zfs", "snapshot", "-r", f"{src}@{snap}")
    run = assert_ran_what_was_printed(inv, tmp_path, "--snapshot")
    assert [p["kind"] for p in run[0]["plans"]] == ["incremental", "incremental"]
    assert any(" -I " in c["command"] for c in run[0]["commands"])
    assert snapshots(lab, "vault", f"{dst}/child") == snapshots(lab, "nas1", f"{src}/child")


def test_stepwise_incremental_around_an_unselected_snapshot(lab, tmp_path: Path) -> None:
    name = lab.unique()
    src, dst = f"tank/{name}", f"backup/{name}"
    make_dataset(lab, "nas1", src, snaps=["zrelay_1"])
    inv = _inventory(lab, tmp_path, {"source": f"nas1:{src}", "snapshots": {"prefix": "zrelay_"},
                                     "targets": [f"vault:{dst}"]}, name)
    assert zrelay("sync", inventory=inv).returncode == 0
    for snap in ("zrelay_2", "manual", "zrelay_3"):
        lab.run("nas1", "zfs", "snapshot", f"{src}@{snap}")
    run = assert_ran_what_was_printed(inv, tmp_path)
    sends = [c["command"] for c in run[0]["commands"] if "zfs send" in c["command"]]
    assert len(sends) == 2 and all(" -i " in s for s in sends)
    assert "manual" not in [s for s, _ in snapshots(lab, "vault", dst)]


def test_rollback_of_a_diverged_target_with_forced_receive(lab, tmp_path: Path) -> None:
    name = lab.unique()
    src, dst = f"tank/{name}", f"backup/{name}"
    make_dataset(lab, "nas1", src, snaps=["zrelay_1"])
    inv = _inventory(lab, tmp_path, {"source": f"nas1:{src}", "targets": [f"vault:{dst}"]}, name)
    assert zrelay("sync", inventory=inv).returncode == 0
    lab.run("vault", "zfs", "snapshot", f"{dst}@local-only")
    write(lab, "nas1", src, "f2")
    lab.run("nas1", "zfs", "snapshot", f"{src}@zrelay_2")
    dry = zrelay("sync", "--dry-run", "--rollback", inventory=inv)
    assert "receive -F" in dry.stdout and "`zfs receive -F`" in dry.stdout   # the command and its reason
    assert "destroys @local-only" in dry.stdout
    run = assert_ran_what_was_printed(inv, tmp_path, "--rollback")
    kinds = [a["kind"] for a in run[0]["actions"]]
    assert kinds[:2] == ["rollback", "stream"], kinds
    assert snapshots(lab, "vault", dst) == snapshots(lab, "nas1", src)


def test_direct_stream_runs_the_printed_pipeline(lab, tmp_path: Path) -> None:
    name = lab.unique()
    src, dst = f"tank/{name}", f"backup/{name}"
    make_dataset(lab, "nas1", src, snaps=["zrelay_1", "zrelay_2"])
    inv = _inventory(lab, tmp_path, {"source": f"nas1:{src}", "targets": [f"vault:{dst}"]}, name,
                     hosts={"nas1": {"address": lab.hosts["nas1"], "direct": True,
                                     "direct_identity_file": str(lab.peer_key),
                                     "direct_known_hosts": str(lab.peer_known_hosts)}})
    run = assert_ran_what_was_printed(inv, tmp_path)
    assert all(c["host"] == "nas1" for c in run[0]["commands"] if "zfs send" in c["command"])
    assert snapshots(lab, "vault", dst) == snapshots(lab, "nas1", src)
