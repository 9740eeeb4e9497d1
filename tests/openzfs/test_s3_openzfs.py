"""S3 paths on real OpenZFS 2.3 guests: what the zfs-fuse tier cannot show (ZRELAY_LAB=openzfs).

* part sizing from the source's ``zfs send -nvP`` estimate (zfs-fuse has none, so there
  the part size always comes from ``max_stream_size`` or the 64 GiB default);
* a raw (``zfs send -w``) push of a natively encrypted dataset, and its restore, which
  arrives still encrypted with its key unavailable, and opens with the source's passphrase.

Only this machine talks to S3: streams go guest -> zrelay -> SeaweedFS and back. The
guests' ssh runs under qemu TCG (6-14 MB/s), so the data is a few MiB. The guests are
shared with other test runs: every dataset and key prefix is named with ``lab.unique()``
and removed at the end.
"""

from __future__ import annotations

import json
import os
import subprocess
from pathlib import Path
from typing import Any, Iterator

import pytest

from tests.integration.helpers import make_dataset, snapshots, write, write_inventory, zrelay

if os.environ.get("ZRELAY_LAB", "").strip().lower() != "openzfs":
    pytest.skip("OpenZFS-tier S3 tests (estimate-based part sizing, raw sends): run with ZRELAY_LAB=openzfs "
                "(make test-openzfs)", allow_module_level=True)

pytestmark = [pytest.mark.lab]

MiB = 1 << 20
GiB = 1 << 30
PASSPHRASE = "zrelay-test-passphrase"
#: A plaintext marker written into the encrypted dataset: it must never appear in the stored stream.
MARKER = b"ZRELAY-PLAINTEXT-MARKER-7c1f0e\n"


class Case:
    """One test's datasets, S3 prefix and inventory (job nas1:SRC → s3:offsite)."""

    def __init__(self, lab: Any, s3: Any, tmp: Path) -> None:
        self.lab, self.s3 = lab, s3
        self.name = lab.unique("s3oz")
        self.src = f"{lab.pools['nas1']}/{self.name}"
        self.prefix = s3.prefix(self.name)
        self.created: list[tuple[str, str]] = [("nas1", self.src)]
        self.inventory = write_inventory(tmp / "inv.yml", lab, [{"source": f"nas1:{self.src}",
                                                                 "targets": ["s3:offsite"]}],
                                         settings={"s3_targets": {"offsite": s3.target(self.prefix)}})
        self.env = dict(s3.env, ZRELAY_STATE=str(tmp / "state.db"))

    def target(self, host: str = "vault") -> str:
        ds = f"{self.lab.pools[host]}/{self.name}r"
        self.created.append((host, ds))
        return ds

    def run(self, *args: str) -> subprocess.CompletedProcess[str]:
        return zrelay(*args, inventory=self.inventory, env=self.env, timeout=900)

    def ok(self, *args: str) -> subprocess.CompletedProcess[str]:
        r = self.run(*args)
        assert r.returncode == 0 and "Traceback" not in r.stderr, \
            f"zrelay {' '.join(args)} → {r.returncode}\n{r.stdout}\n{r.stderr}"
        return r

    def push(self, *args: str) -> dict[str, Any]:
        results = json.loads(self.ok("s3-push", "--json", *args).stdout)
        assert len(results) == 1, results
        return dict(results[0])

    def manifest(self, step: dict[str, Any]) -> dict[str, Any]:
        body = self.s3.client().get_object(Bucket=self.s3.bucket, Key=step["manifest"])["Body"].read()
        return dict(json.loads(body))

    def object_bytes(self, key: str) -> bytes:
        return bytes(self.s3.client().get_object(Bucket=self.s3.bucket, Key=key)["Body"].read())

    def cleanup(self) -> None:
        for host, ds in reversed(self.created):
            try:
                self.lab.destroy(host, ds)
            except Exception:  # noqa: BLE001 - best effort; the test's own result matters
                pass
        self.s3.cleanup(self.prefix)


@pytest.fixture
def case(lab: Any, s3: Any, tmp_path: Path) -> Iterator[Case]:
    c = Case(lab, s3, tmp_path)
    try:
        yield c
    finally:
        c.cleanup()


def test_part_size_comes_from_the_send_estimate(case: Case) -> None:
    """With an estimate the part size is planned for it (+25 %), not for max_stream_size.

    200 GiB of max_stream_size alone would give 22 MiB parts (200 GiB in 9,500 parts, the
    plan zfs-fuse gets); a few MiB of estimated stream gives the 8 MiB minimum. The
    estimate is recorded in the manifest, for full and incremental sends alike.
    """
    from zrelay.s3.sizing import plan_parts

    lab = case.lab
    lab.require("nas1", "send_estimate")
    make_dataset(lab, "nas1", case.src, mib=lab.mib(4, minimum=2), snaps=["s1"])
    limit = "200G"
    without = plan_parts(max_stream_size=200 * GiB).part_size
    assert without > 8 * MiB   # the test means something only if the two plans differ

    dry = case.push("--dry-run", "--compression", "none", "--max-stream-size", limit)
    step = dry["steps"][0]
    estimate = step["estimate"]
    assert isinstance(estimate, int) and estimate > MiB, step
    assert "zfs send -nvP" in step["parts"], step["parts"]
    assert step["part_size"] == plan_parts(estimate=estimate, max_stream_size=200 * GiB).part_size == 8 * MiB
    assert step["part_size"] != without
    assert case.s3.keys(case.prefix) == {}, "a dry run stored something"

    full = case.push("--compression", "none", "--max-stream-size", limit)
    assert full["outcome"] == "ok", full
    m = case.manifest(full["steps"][0])
    assert m["estimate"] == estimate
    assert [o["part_size"] for o in m["objects"]] == [8 * MiB]
    assert 0.75 <= m["size"] / estimate <= 1.33, (m["size"], estimate)   # -nvP is close for a plain stream

    write(lab, "nas1", case.src, "f1", lab.mib(2, minimum=1))
    lab.run("nas1", "zfs", "snapshot", f"{case.src}@s2")
    incr = case.push("--compression", "none", "--max-stream-size", limit)
    assert incr["outcome"] == "ok" and incr["plan"]["kind"] == "incremental", incr
    step = incr["steps"][0]
    assert isinstance(step["estimate"], int) and step["estimate"] > 0, step
    m = case.manifest(step)
    assert m["estimate"] == step["estimate"] and m["kind"] == "incremental"
    assert 0.75 <= m["size"] / m["estimate"] <= 1.33, (m["size"], m["estimate"])


def _encrypted_dataset(case: Case) -> None:
    lab = case.lab
    lab.run("nas1", "zfs", "create", "-o", "encryption=on", "-o", "keyformat=passphrase", "-o", "keylocation=prompt",
            "-o", "compression=off", case.src, input=PASSPHRASE + "\n")
    mount = lab.run("nas1", "zfs", "get", "-H", "-o", "value", "mountpoint", case.src).stdout.strip()
    # compression off: a plaintext (non-raw) stream would carry the marker verbatim
    lab.run("nas1", "sh", "-c", f'for i in $(seq 2000); do printf %s "$1"; done > "{mount}/plain"', "marker",
            MARKER.decode())
    write(lab, "nas1", case.src, "f0", lab.mib(2, minimum=1))
    lab.run("nas1", "zfs", "snapshot", f"{case.src}@e1")


def _digests(lab: Any, host: str, dataset: str) -> str:
    """sha256 of every file of ``dataset`` (mounted for the read when it is not)."""
    script = ('[ "$(zfs get -H -o value mounted "$1")" = yes ] || zfs mount "$1" || exit 1; '
              'cd "$(zfs get -H -o value mountpoint "$1")" && find . -type f | sort | xargs sha256sum')
    return lab.run(host, "sh", "-c", script, "digest", dataset).stdout


def test_encrypted_dataset_is_pushed_raw_and_restored_locked(case: Case) -> None:
    lab = case.lab
    lab.require("nas1", "raw_send")
    lab.require("vault", "raw_send")
    _encrypted_dataset(case)

    full = case.push("--compression", "none")
    assert full["outcome"] == "ok", full
    step = full["steps"][0]
    assert " -w " in f" {step['command']} ", step["command"]
    m = case.manifest(step)
    assert m["send"]["raw"] is True and "-w" in m["send"]["flags"], m["send"]
    stored = case.object_bytes(step["objects"][0])
    assert len(stored) == m["size"] and MARKER not in stored, "the stored stream carries plaintext"

    write(lab, "nas1", case.src, "f1", 1)
    lab.run("nas1", "zfs", "snapshot", f"{case.src}@e2")
    incr = case.push("--compression", "none")
    assert incr["outcome"] == "ok" and incr["plan"]["kind"] == "incremental", incr
    assert " -w " in f" {incr['steps'][0]['command']} " and case.manifest(incr["steps"][0])["send"]["raw"] is True

    dst = case.target("vault")
    case.ok("s3-restore", "offsite", f"nas1:{case.src}", "--to", f"vault:{dst}")
    assert snapshots(lab, "vault", dst) == snapshots(lab, "nas1", case.src)   # names and GUIDs
    props = lab.run("vault", "zfs", "get", "-H", "-o", "value", "encryption,keystatus", dst).stdout.split()
    assert props[0] != "off" and props[1] == "unavailable", props

    # the replica opens with the source's passphrase, and holds the same files
    lab.run("vault", "zfs", "load-key", dst, input=PASSPHRASE + "\n")
    assert lab.run("vault", "zfs", "get", "-H", "-o", "value", "keystatus", dst).stdout.strip() == "available"
    assert _digests(lab, "vault", dst) == _digests(lab, "nas1", case.src)


def _holds(lab: Any, snapshot: str) -> list[str]:
    out = lab.run("nas1", "zfs", "holds", "-H", snapshot, check=False).stdout
    return [line.split("\t")[1] for line in out.splitlines() if line.strip()]


def test_the_chain_end_is_held_and_bookmarked_and_a_push_goes_on_from_its_bookmark(case: Case) -> None:
    """Each push anchors its chain end on the source (a hold per job and target, a bookmark).
    When the chain end is destroyed anyway (after ``zrelay release``), the next push sends from
    the bookmark instead of starting a new chain, and the whole chain restores into another
    host with the source's data."""
    lab = case.lab
    lab.require("nas1", "bookmarks")
    lab.require("nas1", "holds")
    make_dataset(lab, "nas1", case.src, mib=lab.mib(2, minimum=1), snaps=["s1", "s2"])
    first = case.push()
    assert first["outcome"] == "ok", first
    assert any(t.endswith(":s3:offsite") for t in _holds(lab, f"{case.src}@s2"))
    assert _holds(lab, f"{case.src}@s1") == []
    marks = lab.run("nas1", "zfs", "list", "-H", "-o", "name", "-t", "bookmark", case.src).stdout.split()
    assert f"{case.src}#s2" in marks

    write(lab, "nas1", case.src, "more", 1)
    lab.run("nas1", "zfs", "snapshot", f"{case.src}@s3")
    second = case.push()
    assert second["outcome"] == "ok", second
    assert any(t.endswith(":s3:offsite") for t in _holds(lab, f"{case.src}@s3"))
    assert _holds(lab, f"{case.src}@s2") == []                       # the hold moved on

    # another tool prunes the chain end after the user released zrelay's holds
    case.ok("release", "--json")
    assert _holds(lab, f"{case.src}@s3") == []
    lab.run("nas1", "zfs", "destroy", f"{case.src}@s3")
    write(lab, "nas1", case.src, "last", 1)
    lab.run("nas1", "zfs", "snapshot", f"{case.src}@s4")
    dry = case.push("--dry-run")
    assert dry["plan"]["kind"] == "incremental", dry
    commands = [c["command"] for c in dry["commands"]]
    assert any(f"-i '{case.src}#s3' {case.src}@s4" in c for c in commands), commands   # '#' quoted
    assert any(c.startswith("zfs bookmark") and f"{case.src}@s4" in c for c in commands), commands
    third = case.push()
    assert third["outcome"] == "ok" and third["plan"]["kind"] == "incremental", third

    dst = case.target()
    case.ok("s3-restore", "offsite", f"nas1:{case.src}", "--to", f"vault:{dst}")
    restored = snapshots(lab, "vault", dst)
    source = snapshots(lab, "nas1", case.src)
    assert [n for n, _ in restored] == ["s1", "s2", "s3", "s4"]
    assert dict(restored)["s4"] == dict(source)["s4"] and dict(restored)["s1"] == dict(source)["s1"]
