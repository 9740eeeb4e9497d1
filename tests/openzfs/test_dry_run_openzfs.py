"""The dry run prints what the run runs, for the plan kinds only OpenZFS has: a resumed receive,
a bookmark as the base, a raw send of an encrypted dataset — with the anchoring (bookmark, holds)
that OpenZFS adds to every transfer. See tests/integration/dryrun_check.py for the comparison."""

from __future__ import annotations

from pathlib import Path

import pytest

from tests.integration.dryrun_check import assert_ran_what_was_printed
from tests.integration.helpers import make_dataset, snapshots, write, zrelay
from tests.openzfs.test_features import STREAM_MIB, _encrypted_dataset, _interrupted_sync, _job, _token

pytestmark = pytest.mark.lab


@pytest.fixture(autouse=True)
def _openzfs_only(lab) -> None:
    if lab.tier != "openzfs":
        pytest.skip("OpenZFS-only plan kinds: run with ZRELAY_LAB=openzfs (make test-openzfs)")


def test_resumed_receive_runs_as_printed(lab, tmp_path: Path) -> None:
    lab.require("vault", "resume")
    _, src, dst, inv = _job(lab, tmp_path)
    make_dataset(lab, "nas1", src, mib=STREAM_MIB, snaps=["s1"])
    assert _interrupted_sync(lab, inv, src).returncode == 1
    token = _token(lab, "vault", dst)
    assert token
    run = assert_ran_what_was_printed(inv, tmp_path)
    commands = [c["command"] for c in run[0]["commands"]]
    assert any(f"zfs send -t {token}" in c for c in commands), commands
    assert any(" hold " in c for c in commands) and any(" bookmark " in c for c in commands), commands
    assert _token(lab, "vault", dst) is None
    assert snapshots(lab, "vault", dst) == snapshots(lab, "nas1", src)


def test_incremental_from_a_bookmark_runs_as_printed(lab, tmp_path: Path) -> None:
    lab.require("nas1", "bookmarks")
    _, src, dst, inv = _job(lab, tmp_path)
    make_dataset(lab, "nas1", src, mib=1, snaps=["s1"])
    first = assert_ran_what_was_printed(inv, tmp_path)          # full, bookmark, holds on both sides
    assert [a["kind"] for a in first[0]["actions"]][-3:] == ["bookmark", "hold", "hold"], first[0]["actions"]
    assert zrelay("release", "feat", inventory=inv).returncode == 0
    lab.run("nas1", "zfs", "destroy", f"{src}@s1")                # another tool prunes the base
    write(lab, "nas1", src, "f1", 1)
    lab.run("nas1", "zfs", "snapshot", f"{src}@s2")
    run = assert_ran_what_was_printed(inv, tmp_path)
    assert any(f"-i '{src}#s1'" in c["command"] for c in run[0]["commands"]), run[0]["commands"]
    assert [s for s, _ in snapshots(lab, "vault", dst)] == ["s1", "s2"]


def test_raw_send_of_an_encrypted_dataset_runs_as_printed(lab, tmp_path: Path) -> None:
    lab.require("nas1", "raw_send")
    _, src, dst, inv = _job(lab, tmp_path)
    _encrypted_dataset(lab, src)
    run = assert_ran_what_was_printed(inv, tmp_path)
    assert any(" send -w " in c["command"] for c in run[0]["commands"]), run[0]["commands"]
    write(lab, "nas1", src, "f1", 1)
    lab.run("nas1", "zfs", "snapshot", f"{src}@e2")
    run = assert_ran_what_was_printed(inv, tmp_path)               # incremental raw, holds moved
    commands = [c["command"] for c in run[0]["commands"]]
    assert any(" send -w " in c and " -i " in c for c in commands) and any(" release " in c for c in commands)
