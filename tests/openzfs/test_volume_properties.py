"""Volumes and properties at receive on OpenZFS (ZRELAY_LAB=openzfs; zfs-fuse has no volumes).

A volume has no canmount and no mountpoint: zfs refuses ``receive -o canmount=…`` or ``-x
mountpoint`` on one ("property does not apply to datasets of this type"), so its full and
incremental receives carry neither, while a filesystem beside it in the same recursive job gets
both at receive, with no ``zfs set`` after it.
"""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from tests.integration.helpers import write_inventory, zrelay

pytestmark = pytest.mark.lab


@pytest.fixture(autouse=True)
def _openzfs_only(lab) -> None:
    if lab.tier != "openzfs":
        pytest.skip("volumes: run with ZRELAY_LAB=openzfs (make test-openzfs)")
    lab.require("vault", "receive_props")


def test_a_volume_is_received_without_canmount_or_mountpoint(lab, tmp_path: Path) -> None:
    name = lab.unique()
    src, dst = f"tank/{name}", f"backup/{name}"
    lab.run("nas1", "zfs", "create", "-o", "compression=gzip", src)
    lab.run("nas1", "zfs", "create", "-V", f"{lab.mib(16)}M", "-o", "zrelay-test:tag=vol", f"{src}/vol")
    lab.run("nas1", "zfs", "snapshot", "-r", f"{src}@zrelay_1")
    inv = write_inventory(tmp_path / "inv.yml", lab, [
        {"source": f"nas1:{src}", "recursive": True, "targets": [f"vault:{dst}"]}])

    dry = zrelay("sync", "--dry-run", "--json", inventory=inv, timeout=900)
    assert dry.returncode == 0, dry.stderr
    lines = [c["command"] for c in json.loads(dry.stdout)[0]["commands"] if c["host"] == "vault"]
    (vol,) = [line for line in lines if line.endswith(f"zfs receive -s -u {dst}/vol")]
    assert "canmount" not in vol and "mountpoint" not in vol
    (fs,) = [line for line in lines if line.endswith(f" {dst}") and "zfs receive" in line]
    assert "-o canmount=noauto -x mountpoint -x sharenfs -x sharesmb" in fs
    assert not any(line.startswith(("zfs set", "zfs inherit")) for line in lines), lines

    full = zrelay("sync", "--json", inventory=inv, timeout=900)
    assert full.returncode == 0, full.stderr + full.stdout
    result = json.loads(full.stdout)[0]
    assert result["outcome"] == "ok" and result["warnings"] == []
    assert lab.zfs("vault", "get", "-H", "-o", "value", "type", f"{dst}/vol").strip() == "volume"
    assert lab.zfs("vault", "get", "-H", "-o", "value", "zrelay-test:tag", f"{dst}/vol").strip() == "vol"
    assert lab.zfs("vault", "get", "-H", "-o", "value,source", "canmount", dst).strip() == "noauto\tlocal"

    lab.run("nas1", "zfs", "snapshot", "-r", f"{src}@zrelay_2")
    incr = zrelay("sync", "--json", inventory=inv, timeout=900)
    assert incr.returncode == 0, incr.stderr + incr.stdout
    assert json.loads(incr.stdout)[0]["outcome"] == "ok"
    assert "zrelay_2" in lab.zfs("vault", "list", "-H", "-o", "name", "-t", "snapshot", "-r", f"{dst}/vol")
