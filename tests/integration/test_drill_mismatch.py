"""Drills that find a copy unlike its source, on the lab, without any test hook in zrelay.

- A source destroyed and made again with the same snapshot name and other data: the replica's
  snapshot of that name has another GUID, so the drill has nothing it could prove equal and says
  so (one line, exit 2), creating nothing and recording nothing; the daemon's drill run of it
  records a failed drill saying so.
- Silent bit rot on a replica: the replica lives in a pool of its own with ``checksum=off``, one
  byte of its file's data is flipped in the pool's file while the pool is exported, and ZFS reads
  it back without noticing. The snapshot's GUID is the source's, the file tree is not: the drill
  says ``mismatch`` naming the file contents, exits 1, records it, and leaves nothing behind on
  the source host (its clone) or the scratch host; the daemon's drill run of the same job fails
  with the same reason.
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any, Iterator

import pytest

from tests.integration.helpers import make_dataset, one_line_error, write_inventory
from tests.integration.test_drill import datasets, leftovers, run

pytestmark = [pytest.mark.lab]

BLOB = 512 * 1024
#: Writes BLOB bytes from a seeded generator (argv: seed, path), so the test knows bytes of it.
WRITE = "import random, sys; open(sys.argv[2], 'wb').write(random.Random(sys.argv[1]).randbytes(%d))" % BLOB
#: Flips one byte of every copy of a 64-byte run of those bytes in a file (argv: seed, path); prints the count.
FLIP = ("import mmap, os, random, sys\n"
        "mark = random.Random(sys.argv[1]).randbytes(%d)[200000:200064]\n"
        "f = open(sys.argv[2], 'r+b'); m = mmap.mmap(f.fileno(), 0); n = 0; i = m.find(mark)\n"
        "while i != -1:\n    m[i] ^= 0xFF; n += 1; i = m.find(mark, i + 1)\n"
        "m.flush(); m.close(); os.fsync(f.fileno()); f.close(); print(n)\n") % BLOB


def test_a_source_made_again_under_the_same_snapshot_name_has_nothing_to_drill(lab: Any, tmp_path: Path) -> None:
    name = lab.unique("dm")
    src, replica = f"{lab.pools['nas1']}/{name}", f"{lab.pools['nas2']}/{name}r"
    parent = f"{lab.pools['vault']}/{name}sc"
    make_dataset(lab, "nas1", src, mib=lab.mib(1), snaps=["s1"])
    lab.run("vault", "zfs", "create", parent)
    inv = write_inventory(tmp_path / "inv.yml", lab, [{"name": name, "source": f"nas1:{src}",
                                                       "targets": [f"nas2:{replica}"], "drill_to": f"vault:{parent}",
                                                       "schedule": {"drill": "30d"}}])
    state = tmp_path / "state.db"
    assert run(inv, state, "sync").returncode == 0
    lab.run("nas1", "sh", "-c", 'for i in 1 2 3 4 5; do zfs destroy -r "$1" && exit 0; sleep 1; done; exit 1',
            "destroy", src)
    make_dataset(lab, "nas1", src, mib=lab.mib(1), snaps=["s1"])   # the same name, other data, other GUID

    newest = run(inv, state, "drill", "--to", f"vault:{parent}")
    assert newest.returncode == 2, (newest.stdout, newest.stderr)
    assert one_line_error(newest).endswith(f"nas2:{replica} holds no snapshot the source nas1:{src} still has: "
                                           "nothing to drill")
    named = run(inv, state, "drill", "--to", f"vault:{parent}", "--snapshot", "s1")
    assert named.returncode == 2, (named.stdout, named.stderr)
    assert f"nas2:{replica}@s1 is not on the source nas1:{src} (no snapshot with its GUID)" in one_line_error(named)
    assert datasets(lab, "vault", parent) == [parent] and leftovers(lab, [name]) == []
    assert json.loads(run(inv, state, "status", "--json").stdout)[0]["last_drill"] is None

    # the daemon's drill run: nobody typed an argument, so it is a failed drill, recorded as one
    daemon = run(inv, state, "run-now", name, "--kind", "drill")
    assert daemon.returncode == 1, (daemon.stdout, daemon.stderr)
    assert f"nas2:{replica}: drill failed: nas2:{replica} holds no snapshot the source" in daemon.stdout, daemon.stdout
    last = json.loads(run(inv, state, "status", "--json").stdout)[0]["last_drill"]
    assert last["result"] == "failed" and "nothing to drill" in last["message"], last
    assert datasets(lab, "vault", parent) == [parent] and leftovers(lab, [name]) == []


@pytest.fixture
def rotting_pool(lab: Any) -> Iterator[tuple[str, str]]:
    """A pool of its own on nas2 over a file, without checksums: (pool, the directory of its file)."""
    pool = lab.unique("rot")
    where = f"/var/tmp/zrelay-{pool}"
    lab.run("nas2", "sh", "-c", 'mkdir -p "$1" && truncate -s 128M "$1/disk.img"', "mk", where)
    lab.run("nas2", "zpool", "create", "-O", "checksum=off", "-O", "compression=off", pool, f"{where}/disk.img")
    try:
        yield pool, where
    finally:
        lab.run("nas2", "zpool", "destroy", "-f", pool, check=False)
        lab.run("nas2", "rm", "-rf", where, check=False)


def test_bit_rot_on_a_replica_is_a_mismatch_naming_the_contents(lab: Any, tmp_path: Path,
                                                                rotting_pool: tuple[str, str]) -> None:
    pool, where = rotting_pool
    name = lab.unique("dm")
    src, replica, parent = f"{lab.pools['nas1']}/{name}", f"{pool}/{name}r", f"{lab.pools['vault']}/{name}sc"
    lab.run("nas1", "zfs", "create", src)
    mount = lab.run("nas1", "zfs", "get", "-H", "-o", "value", "mountpoint", src).stdout.strip()
    lab.run("nas1", "python3", "-c", WRITE, name, f"{mount}/blob")
    lab.run("nas1", "zfs", "snapshot", f"{src}@s1")
    lab.run("vault", "zfs", "create", parent)
    inv = write_inventory(tmp_path / "inv.yml", lab, [{
        "name": name, "source": f"nas1:{src}", "targets": [f"nas2:{replica}"],
        "drill_to": f"vault:{parent}", "schedule": {"drill": "30d"}}])
    state = tmp_path / "state.db"
    synced = run(inv, state, "sync")
    assert synced.returncode == 0, synced.stdout + synced.stderr
    before = run(inv, state, "drill", "--to", f"vault:{parent}", "--json")
    assert before.returncode == 0 and json.loads(before.stdout)[0]["result"] == "ok", before.stdout + before.stderr

    # the rot: one byte of the file's data, on the disk, where ZFS cannot see it (no checksum)
    lab.run("nas2", "zpool", "export", pool)
    flipped = lab.run("nas2", "python3", "-c", FLIP, name, f"{where}/disk.img").stdout.strip()
    lab.run("nas2", "zpool", "import", "-d", where, pool)
    assert flipped == "1", flipped

    r = run(inv, state, "drill", "--to", f"vault:{parent}", "--json")
    assert r.returncode == 1, (r.stdout, r.stderr)
    (ev,) = json.loads(r.stdout)
    assert ev["result"] == "mismatch", ev
    assert ev["received_guid"] == ev["guid"], "the snapshot is the source's; its data is not"
    assert ev["message"] == "tree checksum differs from the source's: file contents differ", ev["message"]
    assert ev["source_tree"]["meta"] == ev["copy_tree"]["meta"]
    assert ev["source_tree"]["content"] != ev["copy_tree"]["content"]
    assert ev["cleanup"] == [] and not ev["kept"]
    # nothing left on the source host (its clone, its mount directory) nor on the scratch host
    assert leftovers(lab, [name]) == []
    assert datasets(lab, "vault", parent) == [parent]
    assert [d for d in datasets(lab, "nas1", name)] == [src, f"{src}@s1"]
    rows = json.loads(run(inv, state, "status", "--json").stdout)
    assert rows[0]["last_drill"]["result"] == "mismatch" and "file contents differ" in rows[0]["last_drill"]["message"]

    # the daemon's drill run (run-now without a daemon runs it here): a failure naming the mismatch
    daemon = run(inv, state, "run-now", name, "--kind", "drill")
    assert daemon.returncode == 1, (daemon.stdout, daemon.stderr)
    assert daemon.stdout.startswith(f"{name} drill: failed") and \
        f"nas2:{replica}: drill mismatch: tree checksum differs from the source's: file contents differ" \
        in daemon.stdout, daemon.stdout
    assert leftovers(lab, [name]) == [] and datasets(lab, "vault", parent) == [parent]
