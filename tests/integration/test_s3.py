"""The s3-* commands against the real lab (either tier) over sshd, and SeaweedFS as the S3 server.

Only this machine talks to S3 (the OpenZFS guests cannot reach it): streams
travel source host -> zrelay -> S3 and back, the same on both tiers.

Every test writes under its own key prefix and its own datasets, and removes
both at the end, so tests can run while others use the lab.
"""

from __future__ import annotations

import json
import os
import re
import shutil
import signal
import subprocess
import tempfile
import sys
import time
from pathlib import Path
from typing import Any, Iterator

import pytest

from tests.integration.helpers import (REPO, default_sigint, exists, make_dataset, one_line_error, snapshots, write,
                                       write_inventory)
from tests.s3fixture import s3  # noqa: F401  (the fixture, also loadable as the plugin tests.s3fixture)

pytestmark = [pytest.mark.lab]

MiB = 1 << 20


# --------------------------------------------------------------------------- helpers


#: Runs record into a throwaway state store, never the user's own.
THROWAWAY_STATE = os.path.join(tempfile.gettempdir(), "zrelay-tests", "state.db")

class Case:
    """One test's world: its datasets, its S3 prefix, its inventory, and a way to run zrelay."""

    def __init__(self, lab: Any, s3: Any, tmp: Path, source_host: str = "nas1") -> None:
        self.lab, self.s3, self.tmp = lab, s3, tmp
        self.name = lab.unique("s3")
        self.host = source_host
        self.src = f"{lab.pools[source_host]}/{self.name}"
        self.prefix = s3.prefix(self.name)
        self.created: list[tuple[str, str]] = [(source_host, self.src)]
        self.inventory = tmp / "inv.yml"
        self.write_inventory()

    def write_inventory(self, **target: Any) -> Path:
        return write_inventory(self.inventory, self.lab, [{"source": f"{self.host}:{self.src}",
                                                          "targets": ["s3:offsite"]}],
                               settings={"s3_targets": {"offsite": self.s3.target(self.prefix, **target)}})

    def target_dataset(self, host: str = "vault", suffix: str = "") -> str:
        ds = f"{self.lab.pools[host]}/{self.name}r{suffix}"
        self.created.append((host, ds))
        return ds

    def zrelay(self, *args: str, timeout: float = 300) -> subprocess.CompletedProcess[str]:
        argv = [sys.executable, "-m", "zrelay", "-i", str(self.inventory), *args]
        env = dict(os.environ, **self.s3.env)
        env.pop("ZRELAY_INVENTORY", None)
        env.setdefault("ZRELAY_STATE", THROWAWAY_STATE)
        return subprocess.run(argv, capture_output=True, text=True, timeout=timeout, cwd=REPO, env=env)

    def popen(self, *args: str) -> subprocess.Popen[str]:
        argv = [sys.executable, "-m", "zrelay", "-i", str(self.inventory), *args]
        env = dict(os.environ, **self.s3.env)
        env.setdefault("ZRELAY_STATE", THROWAWAY_STATE)
        return subprocess.Popen(argv, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True, cwd=REPO,
                                env=env, start_new_session=True, preexec_fn=default_sigint)

    def ok(self, *args: str) -> subprocess.CompletedProcess[str]:
        r = self.zrelay(*args)
        assert r.returncode == 0, f"zrelay {' '.join(args)} → {r.returncode}\n{r.stdout}\n{r.stderr}"
        return r

    def ls(self) -> dict[str, Any]:
        r = self.zrelay("s3-ls", "offsite", "--json")
        assert "Traceback" not in r.stderr, r.stderr
        data = json.loads(r.stdout)
        datasets = data[0]["datasets"]
        return next((d for d in datasets if d["dataset"] == f"{self.host}:{self.src}"), {"chains": [], "orphans": [], "healthy": True})  # nothing stored: nothing broken

    def stream_keys(self) -> list[str]:
        return sorted(k for k in self.s3.keys(self.prefix) if "/stream." in k)

    def cleanup(self) -> None:
        for host, ds in reversed(self.created):
            try:
                self.lab.destroy(host, ds)
            except Exception:  # noqa: BLE001 - best effort; other tests must not fail on it
                pass
        self.s3.cleanup(self.prefix)


@pytest.fixture
def case(lab: Any, s3: Any, tmp_path: Path) -> Iterator[Case]:
    c = Case(lab, s3, tmp_path)
    try:
        yield c
    finally:
        c.cleanup()


@pytest.fixture
def case2(lab: Any, s3: Any, tmp_path: Path) -> Iterator[Case]:
    """Like ``case`` with nas2 as the source (spreads the load over the lab's pools)."""
    c = Case(lab, s3, tmp_path, "nas2")
    try:
        yield c
    finally:
        c.cleanup()


def files_digest(lab: Any, host: str, dataset: str, snapshot: str | None = None) -> str:
    """sha256 of every file of a dataset (mounted for the occasion), as one sorted listing."""
    lab.run(host, "sh", "-c", f"zfs mount {dataset} 2>/dev/null || true")
    mount = lab.run(host, "zfs", "get", "-H", "-o", "value", "mountpoint", dataset).stdout.strip()
    r = lab.run(host, "sh", "-c", f"cd '{mount}' && find . -type f -print0 | sort -z | xargs -0 sha256sum")
    return r.stdout


def wait_for(pred: Any, timeout: float, step: float = 0.05) -> bool:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if pred():
            return True
        time.sleep(step)
    return False


# --------------------------------------------------------------------------- tests


def test_push_full_and_incrementals_then_restore_identical(case: Case) -> None:
    lab = case.lab
    make_dataset(lab, "nas1", case.src, mib=2, snaps=["s1", "s2"])
    dry = case.ok("s3-push", "--dry-run")
    # options between `send` and the dataset differ by flavour (OpenZFS adds -L -e -c)
    assert re.search(rf"zfs send( -\S+)* {re.escape(case.src)}@", dry.stdout)
    assert "stream.000.zfs" in dry.stdout and "part size" in dry.stdout
    assert case.s3.keys(case.prefix) == {}, "a dry run stored something"

    first = json.loads(case.ok("s3-push", "--json").stdout)
    assert [r["outcome"] for r in first] == ["ok"] and first[0]["plan"]["kind"] == "full"
    for snap in ("s3", "s4"):
        write(lab, "nas1", case.src, snap, 1)
        lab.run("nas1", "zfs", "snapshot", f"{case.src}@{snap}")
    second = json.loads(case.ok("s3-push", "--json").stdout)
    assert second[0]["plan"]["kind"] == "incremental"
    assert [s["snapshot"] for s in second[0]["plan"]["steps"]] == ["s3", "s4"]
    third = json.loads(case.ok("s3-push", "--json").stdout)
    assert third[0]["outcome"] == "noop"

    view = case.ls()
    assert view["healthy"] and len(view["chains"]) == 1
    sends = view["chains"][0]["sends"]
    assert [(s["kind"], s["snapshot"]) for s in sends] == [
        ("full", "s1"), ("incremental", "s2"), ("incremental", "s3"), ("incremental", "s4")]
    source_snaps = snapshots(lab, "nas1", case.src)
    assert [s["guid"] for s in sends] == [str(g) for _, g in source_snaps]

    dst = case.target_dataset("vault")
    plan = case.ok("s3-restore", "offsite", f"nas1:{case.src}", "--to", f"vault:{dst}", "--dry-run")
    assert "zfs receive -u" in plan.stdout and not exists(lab, "vault", dst)
    case.ok("s3-restore", "offsite", f"nas1:{case.src}", "--to", f"vault:{dst}")
    assert snapshots(lab, "vault", dst) == source_snaps           # names and GUIDs, in order
    assert files_digest(lab, "vault", dst) == files_digest(lab, "nas1", case.src)
    again = case.ok("s3-restore", "offsite", f"nas1:{case.src}", "--to", f"vault:{dst}")
    assert "nothing to do" in again.stdout
    verify = case.ok("s3-verify", "offsite")
    assert "4 of 4 send(s) verified" in verify.stdout


def test_restore_an_older_snapshot_then_continue(case2: Case) -> None:
    case, lab = case2, case2.lab
    make_dataset(lab, "nas2", case.src, mib=1, snaps=["a", "b", "c"])
    case.ok("s3-push")
    dst = case.target_dataset("nas2")
    case.ok("s3-restore", "offsite", f"nas2:{case.src}", "--to", f"nas2:{dst}", "--snapshot", "b")
    assert [n for n, _ in snapshots(lab, "nas2", dst)] == ["a", "b"]
    out = case.ok("s3-restore", "offsite", f"nas2:{case.src}", "--to", f"nas2:{dst}")
    assert "@c" in out.stdout
    assert snapshots(lab, "nas2", dst) == snapshots(lab, "nas2", case.src)
    missing = case.zrelay("s3-restore", "offsite", f"nas2:{case.src}", "--to", f"nas2:{dst}x", "--snapshot", "zz")
    assert missing.returncode == 2 and "no send of" in one_line_error(missing)


def test_zstd_and_age_filters_on_the_hosts(case2: Case, tmp_path: Path) -> None:
    case, lab = case2, case2.lab
    # age-keygen here; age and zstd on the hosts that compress/encrypt (nas2) and decrypt (vault)
    missing = [] if shutil.which("age-keygen") else ["age-keygen on this machine"]
    for host in ("nas2", "vault"):
        found = lab.run(host, "sh", "-c", "command -v age && command -v zstd", check=False)
        if found.returncode != 0:
            missing.append(f"age or zstd on {host}")
    if missing:
        if os.environ.get("ZRELAY_REQUIRE_LAB") == "1":
            pytest.fail(f"age and zstd are required (apt-get install -y age zstd): missing {', '.join(missing)}")
        pytest.skip(f"age and zstd are needed (apt-get install -y age zstd): missing {', '.join(missing)}")
    key = tmp_path / "age.key"
    subprocess.run(["age-keygen", "-o", str(key)], check=True, capture_output=True)
    recipient = next(line.split(": ", 1)[1] for line in key.read_text().splitlines() if "public key" in line)
    make_dataset(lab, "nas2", case.src, mib=1, snaps=["e1", "e2"])
    case.ok("s3-push", "--compression", "zstd", "--age-recipient", recipient)
    sends = case.ls()["chains"][0]["sends"]
    assert all(s["compression"] == "zstd" and s["encryption"] == "age" for s in sends)
    assert all(k.endswith(".zfs.zst.age") for k in case.stream_keys())
    blob = case.s3.client().get_object(Bucket=case.s3.bucket, Key=case.stream_keys()[0])["Body"].read(64)
    assert blob.startswith(b"age-encryption.org/v1")

    dst = case.target_dataset("vault")
    refused = case.zrelay("s3-restore", "offsite", f"nas2:{case.src}", "--to", f"vault:{dst}")
    assert refused.returncode == 2 and "--age-identity" in one_line_error(refused)
    # the restore decrypts on the target host: the identity file must be there (a path on vault)
    case.ok("s3-restore", "offsite", f"nas2:{case.src}", "--to", f"vault:{dst}",
            "--age-identity", lab.put_file("vault", key))
    assert snapshots(lab, "vault", dst) == snapshots(lab, "nas2", case.src)


def test_killed_push_leaves_no_object_and_a_stale_upload(case2: Case) -> None:
    case, lab, s3 = case2, case2.lab, case2.s3
    make_dataset(lab, "nas2", case.src, mib=lab.mib(96, minimum=24), snaps=["k1"])
    proc = case.popen("s3-push", "--compression", "none", "--part-size", "5M", "--concurrency", "1")
    try:
        started = wait_for(lambda: bool(s3.uploads(case.prefix)) or proc.poll() is not None, 60)
        assert started and proc.poll() is None, "the push ended before an upload was seen"
        upload = s3.uploads(case.prefix)[0]
        assert wait_for(lambda: bool(s3.client().list_parts(Bucket=s3.bucket, Key=upload["Key"],
                                                            UploadId=upload["UploadId"]).get("Parts")), 30)
    finally:
        os.kill(proc.pid, signal.SIGKILL)  # the zrelay process itself: no chance to clean up
        proc.wait(30)
    # the ssh connection died with the client; sshd ends the session and zfs send with it
    assert case.stream_keys() == [] and not any(k.endswith("manifest.json") for k in s3.keys(case.prefix))
    assert case.ls()["chains"] == []

    listed = case.ok("s3-abort-stale", "offsite", "--all", "--dry-run", "--json")
    stale = json.loads(listed.stdout)["uploads"]
    assert [u["key"] for u in stale] == [upload["Key"]] and not stale[0]["aborted"]
    young = json.loads(case.ok("s3-abort-stale", "offsite", "--json").stdout)["uploads"]
    assert young and not young[0]["stale"], "a fresh upload must not count as stale under the 24h default"
    aborted = json.loads(case.ok("s3-abort-stale", "offsite", "--older-than", "0s", "--json").stdout)
    assert aborted["uploads"][0]["aborted"]
    assert s3.uploads(case.prefix) == []

    case.ok("s3-push", "--compression", "none")
    view = case.ls()
    assert view["healthy"] and [s["snapshot"] for s in view["chains"][0]["sends"]] == ["k1"]


def test_interrupted_push_aborts_its_upload(case2: Case) -> None:
    case, lab, s3 = case2, case2.lab, case2.s3
    make_dataset(lab, "nas2", case.src, mib=lab.mib(64, minimum=16), snaps=["i1"])
    proc = case.popen("s3-push", "--compression", "none", "--part-size", "5M", "--concurrency", "1")
    try:
        assert wait_for(lambda: bool(s3.uploads(case.prefix)) or proc.poll() is not None, 60)
        # frozen, the push cannot complete: its upload still open proves the Ctrl-C lands mid-stream
        os.kill(proc.pid, signal.SIGSTOP)
        assert proc.poll() is None and s3.uploads(case.prefix), "the push ended before it could be interrupted"
    finally:
        os.kill(proc.pid, signal.SIGINT)   # Ctrl-C
        os.kill(proc.pid, signal.SIGCONT)
        _, err = proc.communicate(timeout=60)
    assert proc.returncode == 130 and "interrupted" in err and "Traceback" not in err
    assert s3.uploads(case.prefix) == [] and case.stream_keys() == []


def test_restarting_the_s3_server_mid_upload(case2: Case) -> None:
    """SeaweedFS restarts while parts are uploading, then goes away for longer than the retries.

    A quick restart is ridden out by botocore's retries: the push completes and
    the stream verifies (seen every time here). An outage that outlasts the
    retries fails the push with one line and stores nothing; the upload its
    abort could not reach is found and aborted by s3-abort-stale once the
    server is back, and the next push succeeds.
    """
    case, lab, s3 = case2, case2.lab, case2.s3
    make_dataset(lab, "nas2", case.src, mib=lab.mib(64, minimum=16), snaps=["r1"])
    proc = case.popen("s3-push", "--compression", "none", "--part-size", "5M", "--concurrency", "2")
    assert wait_for(lambda: bool(s3.uploads(case.prefix)) or proc.poll() is not None, 60)
    s3.restart()
    _, err = proc.communicate(timeout=300)
    first_ok = proc.returncode == 0
    if first_ok:
        case.ok("s3-verify", "offsite")
    else:  # retries did not outlast the restart: the failure must still be clean
        assert proc.returncode == 1 and "Traceback" not in err, err
        assert not any(k.endswith("manifest.json") for k in s3.keys(case.prefix))
        case.ok("s3-abort-stale", "offsite", "--all")
    assert case.ls()["healthy"]

    write(lab, "nas2", case.src, "r2", lab.mib(64, minimum=16))
    lab.run("nas2", "zfs", "snapshot", f"{case.src}@r2")
    proc = case.popen("s3-push", "--compression", "none", "--part-size", "5M", "--concurrency", "2")
    try:
        assert wait_for(lambda: bool(s3.uploads(case.prefix)) or proc.poll() is not None, 60)
        s3.down()
        _, err = proc.communicate(timeout=300)
    finally:
        s3.up()
    assert proc.returncode == 1 and "Traceback" not in err, err
    assert "cannot reach" in err or "connection failed" in err, err
    assert [c["sends"][-1]["snapshot"] for c in case.ls()["chains"]] == (["r1"] if first_ok else [])
    left = json.loads(case.ok("s3-abort-stale", "offsite", "--all", "--json").stdout)["uploads"]
    assert all(u["aborted"] for u in left) and s3.uploads(case.prefix) == []
    case.ok("s3-push", "--compression", "none")
    view = case.ls()
    assert view["healthy"] and [s["snapshot"] for s in view["chains"][0]["sends"]] == ["r1", "r2"]


def test_damaged_object_fails_verify_and_restore_naming_it(case2: Case) -> None:
    case, lab, s3 = case2, case2.lab, case2.s3
    make_dataset(lab, "nas2", case.src, mib=2, snaps=["d1", "d2"])
    case.ok("s3-push")
    full_key, inc_key = case.stream_keys()[0], case.stream_keys()[1]
    assert "@d1/" in full_key and "@d2/" in inc_key

    def flip(key: str) -> None:
        c = s3.client()
        data = bytearray(c.get_object(Bucket=s3.bucket, Key=key)["Body"].read())
        data[len(data) // 2] ^= 0x01
        c.put_object(Bucket=s3.bucket, Key=key, Body=bytes(data))

    flip(inc_key)
    bad = case.zrelay("s3-verify", "offsite")
    assert bad.returncode == 1 and inc_key in bad.stdout + bad.stderr
    dst = case.target_dataset("vault")
    r = case.zrelay("s3-restore", "offsite", f"nas2:{case.src}", "--to", f"vault:{dst}")
    assert r.returncode == 1 and inc_key in one_line_error(r)
    assert [n for n, _ in snapshots(lab, "vault", dst)] == ["d1"], "the bad snapshot must not land"

    flip(full_key)
    dst2 = case.target_dataset("vault", "2")
    r = case.zrelay("s3-restore", "offsite", f"nas2:{case.src}", "--to", f"vault:{dst2}")
    assert r.returncode == 1 and full_key in one_line_error(r)
    assert not exists(lab, "vault", dst2), "the target must be left untouched"
    r = case.zrelay("s3-restore", "offsite", f"nas2:{case.src}", "--to", f"vault:{dst2}", "--verify-first")
    assert r.returncode == 1 and full_key in one_line_error(r) and "nothing was received" in r.stderr
    assert not exists(lab, "vault", dst2)


def test_missing_middle_incremental_breaks_the_chain_and_prune_refuses(case2: Case) -> None:
    case, lab, s3 = case2, case2.lab, case2.s3
    make_dataset(lab, "nas2", case.src, mib=1, snaps=["a1", "a2"])
    case.ok("s3-push")                                   # chain A: full a1, a2
    for snap in ("b1", "b2", "b3"):
        write(lab, "nas2", case.src, snap, 1)
        lab.run("nas2", "zfs", "snapshot", f"{case.src}@{snap}")
    case.ok("s3-push", "--full")                          # chain B: full b3 only
    chains_ = case.ls()["chains"]
    assert [c["sends"][0]["snapshot"] for c in chains_] == ["a1", "b3"]
    for snap in ("b4", "b5"):
        write(lab, "nas2", case.src, snap, 1)
        lab.run("nas2", "zfs", "snapshot", f"{case.src}@{snap}")
    case.ok("s3-push")                                    # chain B: b3, b4, b5

    dry = case.ok("s3-prune", "offsite", "--keep-chains", "1", "--dry-run")
    assert "would delete chain @a1/" in dry.stdout
    middle = next(k for k in case.stream_keys() if "/@b4/" in k)
    s3.client().delete_object(Bucket=s3.bucket, Key=middle)   # out of band

    ls = case.zrelay("s3-ls", "offsite")
    assert ls.returncode == 1 and "broken at @b4/" in ls.stdout
    view = case.ls()
    newest = view["chains"][-1]
    assert not view["healthy"] and not newest["healthy"] and newest["broken_at"].startswith("@b4/")
    assert [s["state"] for s in newest["sends"]] == ["ok", "damaged", "unrestorable"]

    before = s3.keys(case.prefix)
    prune = case.zrelay("s3-prune", "offsite", "--keep-chains", "1")
    assert prune.returncode == 1 and "refused" in prune.stderr and "without a complete chain" in prune.stderr
    assert s3.keys(case.prefix) == before, "prune must not delete the only complete chain"

    push = case.zrelay("s3-push")
    assert push.returncode == 1 and "broken" in push.stderr and "--full" in push.stderr
    restore = case.zrelay("s3-restore", "offsite", f"nas2:{case.src}", "--to", f"nas2:{case.src}x",
                          "--snapshot", "b5")
    assert restore.returncode == 1 and "broken" in one_line_error(restore)


def test_prune_deletes_old_chains_newest_sends_first(case2: Case) -> None:
    case, lab, s3 = case2, case2.lab, case2.s3
    make_dataset(lab, "nas2", case.src, mib=1, snaps=["p1", "p2"])
    case.ok("s3-push")
    write(lab, "nas2", case.src, "p3", 1)
    lab.run("nas2", "zfs", "snapshot", f"{case.src}@p3")
    case.ok("s3-push", "--full")
    dry = json.loads(case.ok("s3-prune", "offsite", "--keep-chains", "1", "--dry-run", "--json").stdout)
    keys = dry["datasets"][0]["keys"]
    assert keys and all("/@p1/" in k or "/@p2/" in k for k in keys)
    assert "/@p2/" in keys[0] and keys[0].endswith("manifest.json"), "newest send first, manifest first"
    case.ok("s3-prune", "offsite", "--keep-chains", "1")
    view = case.ls()
    assert view["healthy"] and [c["sends"][0]["snapshot"] for c in view["chains"]] == ["p3"]
    assert not any("/@p1/" in k or "/@p2/" in k for k in s3.keys(case.prefix))
    usage = case.zrelay("s3-prune", "offsite")
    assert usage.returncode == 2 and "--keep-chains" in one_line_error(usage)


def test_stream_larger_than_max_is_refused_before_upload(case2: Case) -> None:
    case, lab, s3 = case2, case2.lab, case2.s3
    make_dataset(lab, "nas2", case.src, mib=3, snaps=["m1"])
    r = case.zrelay("s3-push", "--max-stream-size", "1M")
    err = one_line_error(r)
    assert r.returncode == 1 and "max_stream_size" in err and "nothing was uploaded" in err
    assert s3.keys(case.prefix) == {} and s3.uploads(case.prefix) == []
    dry = case.ok("s3-push", "--max-stream-size", "1M", "--dry-run")
    assert "refused before upload" in dry.stdout

    case.ok("s3-push", "--max-stream-size", "64M")
    write(lab, "nas2", case.src, "m2", 3)
    lab.run("nas2", "zfs", "snapshot", f"{case.src}@m2")
    r = case.zrelay("s3-push", "--max-stream-size", "1M", "--compression", "none")
    err = one_line_error(r)
    assert r.returncode == 1
    if lab.capabilities("nas2").send_estimate:
        # OpenZFS estimates the incremental (`zfs send -nvP`): refused before anything starts
        assert "estimated stream" in err and "more than max_stream_size" in err and "nothing was uploaded" in err
    else:
        # zfs-fuse has no estimate and an incremental has no upper bound: the limit stops it while streaming
        assert "passed max_stream_size" in err
    assert s3.uploads(case.prefix) == [] and len(case.stream_keys()) == 1


def test_stream_split_over_several_objects(case2: Case) -> None:
    """A stream larger than one object continues in the next (as past 5 TiB, scaled down)."""
    case, lab = case2, case2.lab
    make_dataset(lab, "nas2", case.src, mib=24, snaps=["o1"])
    case.ok("s3-push", "--compression", "none", "--part-size", "5M", "--max-object-size", "10M")
    keys = case.stream_keys()
    assert [k.rsplit("/", 1)[1] for k in keys] == ["stream.000.zfs", "stream.001.zfs", "stream.002.zfs"]
    case.ok("s3-verify", "offsite")
    dst = case.target_dataset("nas2")
    case.ok("s3-restore", "offsite", f"nas2:{case.src}", "--to", f"nas2:{dst}")
    assert snapshots(lab, "nas2", dst) == snapshots(lab, "nas2", case.src)


def test_errors_are_one_line(case2: Case) -> None:
    case = case2
    r = case.zrelay("s3-ls", "nosuchtarget")
    assert r.returncode == 2 and "unknown S3 target" in one_line_error(r)
    case.write_inventory(bucket="no-such-bucket")
    r = case.zrelay("s3-ls", "offsite")
    assert r.returncode == 1 and "NoSuchBucket" in one_line_error(r)
    case.write_inventory(endpoint="http://127.0.0.1:1")
    r = case.zrelay("s3-abort-stale", "offsite")
    assert r.returncode == 1 and "cannot reach" in one_line_error(r)
    bad = dict(case.s3.env, AWS_SECRET_ACCESS_KEY="wrong")
    case.write_inventory()
    argv = [sys.executable, "-m", "zrelay", "-i", str(case.inventory), "s3-ls", "offsite"]
    r = subprocess.run(argv, capture_output=True, text=True, cwd=REPO, env=dict(os.environ, **bad), timeout=120)
    assert r.returncode == 1 and "SignatureDoesNotMatch" in one_line_error(r) and "wrong" not in r.stderr
