"""OpenZFS-only features against real OpenZFS 2.3 guests (ZRELAY_LAB=openzfs, `make test-openzfs`).

Resume after an interrupted stream, unusable resume tokens, bookmarks as send
bases, holds that move with the base, raw sends of encrypted datasets. Each
test asks the capability probe first, so on a tier without the feature it is
skipped with the reason instead of passing.
"""

from __future__ import annotations

import json
import subprocess
import sys
import time
from pathlib import Path

import pytest

from tests.integration.helpers import REPO, make_dataset, snapshots, write, write_inventory, zrelay

pytestmark = pytest.mark.lab

#: Big enough that a stream under qemu TCG (6-14 MB/s) is still running seconds after it starts.
STREAM_MIB = 96


@pytest.fixture(autouse=True)
def _openzfs_only(lab) -> None:
    if lab.tier != "openzfs":
        pytest.skip("OpenZFS-only features: run with ZRELAY_LAB=openzfs (make test-openzfs)")


def _inventory(lab, tmp_path: Path, src: str, dst: str, name: str = "feat") -> Path:
    return write_inventory(tmp_path / "inv.yml", lab,
                           [{"name": name, "source": f"nas1:{src}", "targets": [f"vault:{dst}"]}])


def _job(lab, tmp_path: Path, job: str = "feat") -> tuple[str, str, str, Path]:
    """A fresh name, its source and target datasets (not created yet), and a one-job inventory."""
    name = lab.unique()
    src, dst = f"tank/{name}", f"backup/{name}"
    return name, src, dst, _inventory(lab, tmp_path, src, dst, name=job)


def _sync(inv: Path, *args: str) -> tuple[subprocess.CompletedProcess[str], dict]:
    proc = zrelay("sync", "--json", *args, inventory=inv, timeout=900)
    assert "Traceback" not in proc.stderr, proc.stderr
    results = json.loads(proc.stdout) if proc.stdout.strip() else [{}]
    return proc, results[0]


def _token(lab, host: str, dataset: str) -> str | None:
    value = lab.run(host, "zfs", "get", "-H", "-o", "value", "receive_resume_token", dataset,
                    check=False).stdout.strip()
    return None if value in ("", "-") else value


def _holds(lab, host: str, snapshot: str) -> list[str]:
    out = lab.run(host, "zfs", "holds", "-H", snapshot).stdout
    return [line.split("\t")[1] for line in out.splitlines() if line.strip()]


def _file_digest(lab, host: str, dataset: str, filename: str) -> str:
    """sha256 of a file in a replica: mounted read-only just for the read, so it stays unmodified."""
    script = ('zfs set readonly=on "$1" && zfs mount "$1" && sha256sum "$(zfs get -H -o value mountpoint "$1")/$2"'
              ' ; zfs umount "$1"')
    out = lab.run(host, "sh", "-c", script, "digest", dataset, filename).stdout
    return out.split()[0]


def _source_digest(lab, dataset: str, filename: str) -> str:
    mount = lab.run("nas1", "zfs", "get", "-H", "-o", "value", "mountpoint", dataset).stdout.strip()
    return lab.run("nas1", "sha256sum", f"{mount}/{filename}").stdout.split()[0]


def _interrupted_sync(lab, inv: Path, src: str) -> subprocess.CompletedProcess[str]:
    """Run `zrelay sync` and kill the source's `zfs send` a few seconds into the stream."""
    argv = [sys.executable, "-m", "zrelay", "-i", str(inv), "sync", "--json"]
    env = {"ZRELAY_STATE": str(inv.parent / "state.db"), "PATH": "/usr/sbin:/usr/bin:/sbin:/bin"}
    proc = subprocess.Popen(argv, cwd=REPO, env=env, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    # the stream's send, not its size estimate (`zfs send -nvP …`, which runs first): a kill
    # that lands on the estimate, or only just after the stream starts, leaves no resume token
    pattern = f"zfs send (-[a-mo-zA-Z]+ )*{src}@"
    deadline = time.monotonic() + 120
    while time.monotonic() < deadline:
        if lab.run("nas1", "pgrep", "-f", pattern, check=False).returncode == 0:
            break
        if proc.poll() is not None:
            break
        time.sleep(0.2)
    time.sleep(2.0)
    killed = lab.run("nas1", "pkill", "-9", "-f", pattern, check=False)
    out, err = proc.communicate(timeout=300)
    assert killed.returncode == 0, f"the send ended before it could be interrupted: {out}{err}"
    return subprocess.CompletedProcess(argv, proc.returncode, out, err)


def test_interrupted_full_send_resumes_from_token(lab, tmp_path: Path) -> None:
    lab.require("vault", "resume")
    name, src, dst, inv = _job(lab, tmp_path)
    make_dataset(lab, "nas1", src, mib=STREAM_MIB, snaps=["s1"])

    broken = _interrupted_sync(lab, inv, src)
    assert broken.returncode == 1, broken.stdout + broken.stderr
    # the receiver's complaint comes first, the killed sender is named after it
    assert "zfs send on nas1" in json.loads(broken.stdout)[0]["message"], broken.stdout
    token = _token(lab, "vault", dst)
    assert token, "an interrupted receive -s must leave a resume token"

    status = zrelay("status", "--json", inventory=inv)
    assert json.loads(status.stdout)[0]["state"] == "resumable", status.stdout

    proc, result = _sync(inv)
    assert proc.returncode == 0, proc.stderr + proc.stdout
    kinds = [p["kind"] for p in result["plans"]]
    assert kinds == ["resume"] or kinds == ["noop"], result   # after the resume, nothing is left to send
    assert any("zfs send -t " + token in c["command"] for c in result["commands"]), result["commands"]
    assert _token(lab, "vault", dst) is None
    assert snapshots(lab, "vault", dst) == snapshots(lab, "nas1", src)
    assert _file_digest(lab, "vault", dst, "f0") == _source_digest(lab, src, "f0")


def test_unresumable_token_is_reported_then_cleared_on_request(lab, tmp_path: Path) -> None:
    lab.require("vault", "resume")
    name, src, dst, inv = _job(lab, tmp_path)
    make_dataset(lab, "nas1", src, mib=1, snaps=["s1"])
    proc, _ = _sync(inv)
    assert proc.returncode == 0, proc.stderr
    write(lab, "nas1", src, "big", STREAM_MIB)
    lab.run("nas1", "zfs", "snapshot", f"{src}@s2")

    broken = _interrupted_sync(lab, inv, src)
    assert broken.returncode == 1
    assert _token(lab, "vault", dst)
    # the snapshot the token names disappears: the token can never be used again
    lab.run("nas1", "zfs", "destroy", f"{src}@s2")
    write(lab, "nas1", src, "more", 1)
    lab.run("nas1", "zfs", "snapshot", f"{src}@s3")

    refused, result = _sync(inv)
    assert refused.returncode == 1
    assert "cannot be resumed" in result["message"] and "--abort-partial" in result["message"], result
    assert "no longer exists" in result["message"]
    assert [s for s, _ in snapshots(lab, "vault", dst)] == ["s1"]      # target untouched
    assert _token(lab, "vault", dst)

    proc, result = _sync(inv, "--abort-partial")
    assert proc.returncode == 0, proc.stderr + proc.stdout
    assert "discarded the partial receive" in result["message"]
    assert _token(lab, "vault", dst) is None
    assert [s for s, _ in snapshots(lab, "vault", dst)] == ["s1", "s3"]


def test_unresumable_partial_full_is_discarded_without_asking(lab, tmp_path: Path) -> None:
    """The target has no snapshot yet: a fresh full send is needed anyway, so nothing is lost."""
    lab.require("vault", "resume")
    name, src, dst, inv = _job(lab, tmp_path)
    make_dataset(lab, "nas1", src, mib=STREAM_MIB, snaps=["s1"])
    broken = _interrupted_sync(lab, inv, src)
    assert broken.returncode == 1 and _token(lab, "vault", dst)
    lab.run("nas1", "zfs", "destroy", f"{src}@s1")
    lab.run("nas1", "zfs", "snapshot", f"{src}@s2")

    proc, result = _sync(inv)
    assert proc.returncode == 0, proc.stderr + proc.stdout
    assert "discarded the partial receive" in result["message"]
    assert snapshots(lab, "vault", dst) == snapshots(lab, "nas1", src)


def test_bookmark_is_the_base_when_the_source_snapshot_is_pruned(lab, tmp_path: Path) -> None:
    lab.require("nas1", "bookmarks")
    name, src, dst, inv = _job(lab, tmp_path)
    make_dataset(lab, "nas1", src, mib=1, snaps=["s1"])
    proc, _ = _sync(inv)
    assert proc.returncode == 0, proc.stderr
    marks = lab.run("nas1", "zfs", "list", "-H", "-o", "name", "-t", "bookmark", "-r", src).stdout.split()
    assert marks == [f"{src}#s1"]

    released = zrelay("release", "feat", inventory=inv)
    assert released.returncode == 0, released.stderr
    lab.run("nas1", "zfs", "destroy", f"{src}@s1")          # another tool prunes the base
    write(lab, "nas1", src, "f1", 1)
    lab.run("nas1", "zfs", "snapshot", f"{src}@s2")

    proc, result = _sync(inv)
    assert proc.returncode == 0, proc.stderr + proc.stdout
    assert result["plans"][0]["kind"] == "incremental"
    sends = [c["command"] for c in result["commands"] if " send " in f" {c['command']}"]
    assert any(f"-i '{src}#s1' {src}@s2" in c for c in sends), sends
    assert [s for s, _ in snapshots(lab, "vault", dst)] == ["s1", "s2"]
    assert snapshots(lab, "vault", dst)[1] == snapshots(lab, "nas1", src)[0]


def test_holds_protect_the_base_and_move_with_it(lab, tmp_path: Path) -> None:
    lab.require("nas1", "holds")
    lab.require("vault", "holds")
    name, src, dst, inv = _job(lab, tmp_path, job="holdjob")
    make_dataset(lab, "nas1", src, mib=1, snaps=["s1"])
    proc, _ = _sync(inv)
    assert proc.returncode == 0, proc.stderr
    tag = f"zrelay:holdjob:vault:backup_{name}"
    assert _holds(lab, "nas1", f"{src}@s1") == [tag]
    assert _holds(lab, "vault", f"{dst}@s1") == [tag]

    other = lab.run("nas1", "zfs", "destroy", f"{src}@s1", check=False)   # another tool's pruning
    assert other.returncode != 0 and "being held" in other.stderr

    write(lab, "nas1", src, "f1", 1)
    lab.run("nas1", "zfs", "snapshot", f"{src}@s2")
    proc, _ = _sync(inv)
    assert proc.returncode == 0, proc.stderr
    assert _holds(lab, "nas1", f"{src}@s2") == [tag] and _holds(lab, "nas1", f"{src}@s1") == []
    assert _holds(lab, "vault", f"{dst}@s2") == [tag] and _holds(lab, "vault", f"{dst}@s1") == []
    lab.run("nas1", "zfs", "destroy", f"{src}@s1")            # the old base is free again

    dry = zrelay("release", "holdjob", "--dry-run", "--json", inventory=inv)
    assert dry.returncode == 0, dry.stderr
    assert _holds(lab, "nas1", f"{src}@s2") == [tag]
    listed = {r["host"]: r["holds"] for r in json.loads(dry.stdout)}
    assert listed == {"nas1": {tag: [f"{src}@s2"]}, "vault": {tag: [f"{dst}@s2"]}}
    done = zrelay("release", "holdjob", inventory=inv)
    assert done.returncode == 0, done.stderr
    assert _holds(lab, "nas1", f"{src}@s2") == [] and _holds(lab, "vault", f"{dst}@s2") == []


def _encrypted_dataset(lab, dataset: str) -> None:
    lab.run("nas1", "zfs", "create", "-o", "encryption=on", "-o", "keyformat=passphrase",
            "-o", "keylocation=prompt", dataset, input="zrelay-test-passphrase\n")
    write(lab, "nas1", dataset, "f0", 2)
    lab.run("nas1", "zfs", "snapshot", f"{dataset}@e1")


def test_encrypted_dataset_is_sent_raw_and_stays_locked(lab, tmp_path: Path) -> None:
    lab.require("nas1", "raw_send")
    lab.require("vault", "raw_send")
    name, src, dst, inv = _job(lab, tmp_path)
    _encrypted_dataset(lab, src)
    proc, result = _sync(inv)
    assert proc.returncode == 0, proc.stderr + proc.stdout
    sends = [c["command"] for c in result["commands"] if "zfs send" in c["command"]]
    assert sends and all(" -w " in s for s in sends), sends
    props = lab.run("vault", "zfs", "get", "-H", "-o", "value", "encryption,keystatus", dst).stdout.split()
    assert props[0] != "off" and props[1] == "unavailable", props
    write(lab, "nas1", src, "f1", 1)
    lab.run("nas1", "zfs", "snapshot", f"{src}@e2")
    proc, result = _sync(inv)
    assert proc.returncode == 0, proc.stderr + proc.stdout
    assert [s for s, _ in snapshots(lab, "vault", dst)] == ["e1", "e2"]


def test_decrypt_flag_sends_plaintext_on_purpose(lab, tmp_path: Path) -> None:
    lab.require("nas1", "raw_send")
    name, src, dst, inv = _job(lab, tmp_path)
    _encrypted_dataset(lab, src)
    dry = zrelay("sync", "--dry-run", "--decrypt", inventory=inv)
    assert dry.returncode == 0 and "-w" not in dry.stdout.split(), dry.stdout
    proc, _ = _sync(inv, "--decrypt")
    assert proc.returncode == 0, proc.stderr + proc.stdout
    assert lab.run("vault", "zfs", "get", "-H", "-o", "value", "encryption", dst).stdout.strip() == "off"


def test_estimate_gives_progress_totals_and_options_follow_both_ends(lab, tmp_path: Path) -> None:
    lab.require("nas1", "send_estimate")
    name, src, dst, inv = _job(lab, tmp_path)
    make_dataset(lab, "nas1", src, mib=2, snaps=["s1"])
    dry = zrelay("sync", "--dry-run", inventory=inv)
    assert dry.returncode == 0, dry.stderr
    assert f"zfs send -L -e -c -p {src}@s1" in dry.stdout   # properties travel (README, properties:)
    proc, result = _sync(inv)
    assert proc.returncode == 0 and result["bytes"] > 0
