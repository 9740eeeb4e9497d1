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


def _zvol_sha256(lab, host: str, volume: str, mib: int) -> str:
    """sha256 of a volume's first ``mib`` MiB, read from its device node (waiting for udev to make it)."""
    script = (f'for i in $(seq 100); do [ -e "/dev/zvol/{volume}" ] && break; udevadm settle; sleep 0.2; done; '
              f'dd if="/dev/zvol/{volume}" bs=1M count={mib} status=none | sha256sum')
    return lab.run(host, "sh", "-c", script).stdout.split()[0]


def _zvol_write(lab, host: str, volume: str, offset_mib: int, mib: int) -> None:
    script = (f'for i in $(seq 100); do [ -e "/dev/zvol/{volume}" ] && break; udevadm settle; sleep 0.2; done; '
              f'dd if=/dev/urandom of="/dev/zvol/{volume}" bs=1M seek={offset_mib} count={mib} '
              f'conv=fsync status=none')
    lab.run(host, "sh", "-c", script)


def test_a_volume_replicates_byte_identical_full_and_incremental(lab, tmp_path: Path) -> None:
    name = lab.unique()
    src, dst = f"tank/{name}", f"backup/{name}"
    size = lab.mib(16, minimum=8)
    lab.run("nas1", "zfs", "create", "-V", f"{size}M", src)
    _zvol_write(lab, "nas1", src, 0, size // 2)
    lab.run("nas1", "zfs", "snapshot", f"{src}@zrelay_1")
    inv = write_inventory(tmp_path / "inv.yml", lab, [{"source": f"nas1:{src}", "targets": [f"vault:{dst}"]}])

    full = zrelay("sync", "--json", inventory=inv, timeout=900)
    assert full.returncode == 0, full.stderr + full.stdout
    assert _zvol_sha256(lab, "vault", dst, size) == _zvol_sha256(lab, "nas1", src, size)

    _zvol_write(lab, "nas1", src, size // 2, size // 4)   # the incremental brings only these blocks
    lab.run("nas1", "zfs", "snapshot", f"{src}@zrelay_2")
    incr = zrelay("sync", "--json", inventory=inv, timeout=900)
    assert incr.returncode == 0, incr.stderr + incr.stdout
    assert json.loads(incr.stdout)[0]["outcome"] == "ok"
    assert _zvol_sha256(lab, "vault", dst, size) == _zvol_sha256(lab, "nas1", src, size)
