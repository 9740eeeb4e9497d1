"""OpenZFS's `written` lets `status` see a target changed since its newest snapshot, whatever its size.

zfs-fuse can only tell such a change when the size moved (tests/integration/
test_status_refused.py); here a file written into a mounted replica is enough.
Skipped (with the reason) where the capability probe finds no `written`.
"""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from tests.integration.helpers import make_dataset, write, write_inventory, zrelay

pytestmark = pytest.mark.lab


def _row(inv: Path, state: Path) -> dict:
    proc = zrelay("--state", str(state), "status", "--json", inventory=inv, timeout=900)
    assert "Traceback" not in proc.stderr, proc.stderr
    (row,) = json.loads(proc.stdout)
    return row


def test_written_shows_a_changed_replica_before_sync_fails(lab, tmp_path: Path) -> None:  # type: ignore[no-untyped-def]
    lab.require("vault", "written", "status reads `written` to predict a refused incremental receive")
    name = lab.unique("wr")
    src, dst = f"{lab.pools['nas1']}/{name}", f"{lab.pools['vault']}/{name}"
    inv = write_inventory(tmp_path / "inv.yml", lab, [{"source": f"nas1:{src}", "targets": [f"vault:{dst}"]}])
    state = tmp_path / "state.db"
    try:
        make_dataset(lab, "nas1", src, mib=lab.mib(1), snaps=["s1"])
        assert zrelay("--state", str(state), "sync", inventory=inv, timeout=900).returncode == 0
        write(lab, "nas1", src, "more", lab.mib(1))
        lab.run("nas1", "zfs", "snapshot", f"{src}@s2")
        clean = _row(inv, state)
        assert clean["state"] == "behind" and "cannot be known" not in clean["message"]

        lab.run("vault", "zfs", "mount", dst)          # canmount=noauto: only an explicit mount
        write(lab, "vault", dst, "local-change", 1)
        lab.run("vault", "zfs", "unmount", dst)
        row = _row(inv, state)
        assert row["state"] == "diverged", row
        assert "`written`" in row["message"] and "modified since most recent snapshot" in row["message"]
        assert (row["source_newest"], row["common_base"], row["behind"]) == ("s2", "s1", 1)

        failed = zrelay("--state", str(state), "sync", inventory=inv, timeout=900)
        assert failed.returncode == 1 and "modified since most recent snapshot" in failed.stderr
        assert zrelay("--state", str(state), "sync", "--rollback", inventory=inv, timeout=900).returncode == 0
        assert _row(inv, state)["state"] == "in-sync"
    finally:
        lab.destroy("vault", dst)
        lab.destroy("nas1", src)
