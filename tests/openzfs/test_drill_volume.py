"""A restore drill of a volume on OpenZFS (ZRELAY_LAB=openzfs; zfs-fuse has no volumes).

A volume has no file tree: the drill clones the source snapshot and the received one without a
mountpoint and hashes each clone's device (``/dev/zvol/…``, waited for while udev makes it). The
drill is ok, its content hash is the sha256 of the source volume's bytes as read here from its own
device, and both clones and the scratch volume are gone afterwards.
"""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from tests.integration.helpers import write_inventory, zrelay
from tests.openzfs.test_volume_properties import _zvol_sha256, _zvol_write

pytestmark = pytest.mark.lab


@pytest.fixture(autouse=True)
def _openzfs_only(lab) -> None:
    if lab.tier != "openzfs":
        pytest.skip("volumes: run with ZRELAY_LAB=openzfs (make test-openzfs)")
    lab.require("vault", "receive_props")


def test_a_volume_drill_hashes_the_devices_and_cleans_up(lab, tmp_path: Path) -> None:
    name = lab.unique("dv")
    src, replica, parent = f"{lab.pools['nas1']}/{name}", f"{lab.pools['vault']}/{name}r", f"{lab.pools['nas2']}/{name}sc"
    size = lab.mib(8, minimum=4)
    lab.run("nas1", "zfs", "create", "-V", f"{size}M", src)
    _zvol_write(lab, "nas1", src, 0, size // 2)
    lab.run("nas1", "zfs", "snapshot", f"{src}@zrelay_1")
    lab.run("nas2", "zfs", "create", parent)
    inv = write_inventory(tmp_path / "inv.yml", lab, [{"name": name, "source": f"nas1:{src}",
                                                       "targets": [f"vault:{replica}"]}])
    env = {"ZRELAY_STATE": str(tmp_path / "state.db")}
    synced = zrelay("sync", inventory=inv, timeout=900, env=env)
    assert synced.returncode == 0, synced.stdout + synced.stderr

    dry = zrelay("drill", "--to", f"nas2:{parent}", "--dry-run", "--json", inventory=inv, timeout=900, env=env)
    assert dry.returncode == 0, dry.stderr
    steps = json.loads(dry.stdout)[0]["commands"]
    clones = [c["command"] for c in steps if c["step"] == "clone"]
    assert len(clones) == 2 and not any("mountpoint=" in c for c in clones), clones
    sums = [c["command"] for c in steps if c["step"] == "checksum"]
    assert len(sums) == 2 and all(" volume /dev/zvol/" in c for c in sums), sums
    assert not any(c["step"] == "rmdir" for c in steps)

    r = zrelay("drill", "--to", f"nas2:{parent}", "--json", inventory=inv, timeout=900, env=env)
    assert r.returncode == 0, r.stdout + r.stderr
    (ev,) = json.loads(r.stdout)
    assert ev["result"] == "ok" and ev["snapshot"] == "zrelay_1", ev
    assert ev["received_guid"] == ev["guid"] and ev["cleanup"] == []
    assert ev["copy_tree"]["entries"] == 1 and ev["source_tree"]["sha256"] == ev["copy_tree"]["sha256"]
    # the device's bytes, hashed here independently of the drill: the head of the volume is the snapshot's
    # (nothing was written after it)
    assert ev["source_tree"]["content"] == _zvol_sha256(lab, "nas1", src, size)

    left = [line for host in ("nas1", "nas2") for line in
            lab.run(host, "zfs", "list", "-H", "-o", "name", "-t", "all").stdout.splitlines()
            if "zrelay-drill-" in line and name in line]
    assert left == [] and lab.run("nas2", "zfs", "list", "-H", "-o", "name", "-r", parent).stdout.split() == [parent]
    devices = lab.run("nas1", "sh", "-c", "ls /dev/zvol/*/ 2>/dev/null | grep zrelay-drill- || true").stdout
    assert name not in devices, devices
