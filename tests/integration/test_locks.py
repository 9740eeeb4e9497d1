"""One run per target: a second zrelay on a target another one is writing skips it (or waits).

The first run is frozen (SIGSTOP) while its stream is in flight, so the second
one meets it mid-transfer on any machine, however fast; frozen, it still holds
its lock (a flock belongs to the process, not to its CPU time).
"""

from __future__ import annotations

import contextlib
import json
import signal
import subprocess
import sys
import time
from pathlib import Path
from typing import Iterator

from tests.integration.helpers import REPO, make_dataset, snapshots, write_inventory, zrelay
from tests.integration.test_s3 import case2, wait_for  # noqa: F401  (the S3 world of test_s3: fixture)
from tests.s3fixture import s3  # noqa: F401  (the fixture case2 needs)
from zrelay.state import StateStore, read_view

EXIT_BUSY = 75


def _sync_popen(inv: Path, state: Path, *args: str) -> subprocess.Popen[str]:
    return subprocess.Popen([sys.executable, "-m", "zrelay", "-i", str(inv), "--state", str(state), "sync", *args],
                            cwd=REPO, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)


@contextlib.contextmanager
def frozen_mid_stream(lab, inv: Path, state: Path) -> Iterator[subprocess.Popen[str]]:  # type: ignore[no-untyped-def]
    """A ``zrelay sync`` stopped while its stream flows; continued (and finished, exit 0) on exit."""
    proc = _sync_popen(inv, state)
    try:
        deadline = time.monotonic() + 60
        while time.monotonic() < deadline and proc.poll() is None:
            view = read_view(state)
            if any(t.pid == proc.pid and t.done > 0 for t in view.active):
                proc.send_signal(signal.SIGSTOP)
                break
            time.sleep(0.02)
        assert proc.poll() is None, "the first sync ended before a second one could meet it"
        yield proc
    finally:
        proc.send_signal(signal.SIGCONT)
        out, err = proc.communicate(timeout=300)
    assert proc.returncode == 0, out + err


def _big_source(lab, tmp_path: Path) -> tuple[str, str, Path]:  # type: ignore[no-untyped-def]
    name = lab.unique()
    src, dst = f"tank/{name}", f"backup/{name}"
    make_dataset(lab, "nas1", src, mib=lab.mib(200), snaps=["zrelay_1"])
    inv = write_inventory(tmp_path / "inv.yml", lab, [{"source": f"nas1:{src}", "targets": [f"vault:{dst}"]}])
    return src, dst, inv


def test_second_sync_of_a_target_is_skipped_naming_the_first(lab, tmp_path: Path) -> None:
    src, dst, inv = _big_source(lab, tmp_path)
    state = tmp_path / "state.db"
    with frozen_mid_stream(lab, inv, state) as first:
        second = zrelay("sync", inventory=inv, env={"ZRELAY_STATE": str(state)})
        as_json = zrelay("sync", "--json", inventory=inv, env={"ZRELAY_STATE": str(state)})
    assert second.returncode == EXIT_BUSY, second.stdout + second.stderr
    said = second.stdout + second.stderr
    assert "Traceback" not in said
    assert f"another zrelay sync (pid {first.pid}, started " in second.stderr
    assert f"is replicating nas1:{src} → vault:{dst}" in second.stderr
    assert "zfs destroy" not in said and "no common base" not in said
    [row] = json.loads(as_json.stdout)
    assert as_json.returncode == EXIT_BUSY and row["outcome"] == "busy" and row["bytes"] == 0
    assert row["plans"] == [] and row["commands"] == [], "nothing was planned against the busy target"
    # the first run was not disturbed; the skipped runs are recorded as busy, not as failures
    assert snapshots(lab, "vault", dst) == snapshots(lab, "nas1", src)
    with StateStore(state) as store:
        outcomes = sorted(t.outcome or "" for t in store.tasks(target=f"vault:{dst}"))
    assert outcomes == ["busy", "busy", "ok"]


def test_same_target_under_other_names_in_another_inventory_is_skipped(lab, tmp_path: Path) -> None:
    """Another inventory (another user's) calls the hosts and the job differently: same lock."""
    src, dst, inv = _big_source(lab, tmp_path)
    other = write_inventory(
        tmp_path / "other.yml", lab, [{"name": "offsite-copy", "source": f"box:{src}", "targets": [f"safe:{dst}"]}],
        hosts={"box": {"address": lab.hosts["nas1"], "port": lab.ports["nas1"]},
               "safe": {"address": lab.hosts["vault"], "port": lab.ports["vault"]}})
    state = tmp_path / "state.db"
    with frozen_mid_stream(lab, inv, state) as first:
        second = zrelay("sync", inventory=other, env={"ZRELAY_STATE": str(tmp_path / "other-state.db")})
    assert second.returncode == EXIT_BUSY, second.stdout + second.stderr
    assert f"safe:{dst}" in second.stderr, "the loser names the target in its own words"
    assert f"(pid {first.pid}, " in second.stderr and f"is replicating nas1:{src} → vault:{dst}" in second.stderr
    assert "zfs destroy" not in second.stdout + second.stderr


def test_wait_lock_waits_for_the_first_run_then_finds_the_target_up_to_date(lab, tmp_path: Path) -> None:
    src, dst, inv = _big_source(lab, tmp_path)
    state = tmp_path / "state.db"
    with frozen_mid_stream(lab, inv, state):
        waiting = _sync_popen(inv, state, "--wait-lock", "300", "--json")
        deadline = time.monotonic() + 60
        kind = None
        while time.monotonic() < deadline and waiting.poll() is None and kind != "waiting":
            with StateStore(state) as store:
                runs = [r.id for r in store.runs() if r.pid == waiting.pid]
                tasks = store.tasks(run_id=runs[0]) if runs else []
            kind = tasks[0].plan_kind if tasks else None
            time.sleep(0.05)
        assert kind == "waiting" and waiting.poll() is None, "the second sync must wait for the first"
    out, err = waiting.communicate(timeout=300)
    assert waiting.returncode == 0, out + err
    [row] = json.loads(out)
    assert row["outcome"] == "noop", row
    assert snapshots(lab, "vault", dst) == snapshots(lab, "nas1", src)


def test_wait_lock_rejects_a_bad_value(lab, tmp_path: Path) -> None:
    inv = write_inventory(tmp_path / "inv.yml", lab, [{"source": "nas1:tank/x", "targets": ["vault:backup/x"]}])
    proc = zrelay("sync", "--wait-lock", "-3", inventory=inv)
    assert proc.returncode == 2 and "--wait-lock wants 0 or more seconds, not '-3'" in proc.stderr
    assert len(proc.stderr.strip().splitlines()) == 1


def test_second_push_to_the_same_s3_prefix_is_skipped(case2) -> None:  # type: ignore[no-untyped-def]
    """Two s3-push of one job: the second leaves the keys to the first (its upload still open)."""
    case, lab, s3 = case2, case2.lab, case2.s3
    make_dataset(lab, "nas2", case.src, mib=lab.mib(64, minimum=16), snaps=["l1"])
    first = case.popen("s3-push", "--compression", "none", "--part-size", "5M", "--concurrency", "1")
    try:
        assert wait_for(lambda: bool(s3.uploads(case.prefix)) or first.poll() is not None, 60)
        first.send_signal(signal.SIGSTOP)
        assert first.poll() is None, "the first push ended before a second one could meet it"
        second = case.zrelay("s3-push", "--compression", "none")
        dry = case.zrelay("s3-push", "--dry-run", "--json")
    finally:
        first.send_signal(signal.SIGCONT)
        out, err = first.communicate(timeout=300)
    assert first.returncode == 0, out + err
    assert second.returncode == EXIT_BUSY, second.stdout + second.stderr
    assert f"another zrelay s3-push (pid {first.pid}, started " in second.stderr
    assert f"is replicating nas2:{case.src} → s3:offsite" in second.stderr
    assert [s["snapshot"] for s in case.ls()["chains"][0]["sends"]] == ["l1"], "one push, one send"
    # a dry run holds nothing, but does not plan keys being written either (it would plan the full send again)
    assert dry.returncode == EXIT_BUSY, dry.stdout + dry.stderr
    [planned] = json.loads(dry.stdout)
    assert planned["outcome"] == "busy" and planned["plan"] is None, planned
    assert f"not planned, another zrelay s3-push (pid {first.pid}, started " in planned["message"]


def test_dry_run_and_status_report_a_target_another_run_holds_as_busy(lab, tmp_path: Path) -> None:
    """Mid-receive the target looks unrelated to its source: neither plans it, nor advises destroying it."""
    src, dst, inv = _big_source(lab, tmp_path)
    state, elsewhere = tmp_path / "state.db", tmp_path / "another-users-state.db"
    what = f"is replicating nas1:{src} → vault:{dst}"
    with frozen_mid_stream(lab, inv, state) as first:
        dry = zrelay("sync", "--dry-run", inventory=inv, env={"ZRELAY_STATE": str(state)})
        dry_json = zrelay("sync", "--dry-run", "--json", inventory=inv, env={"ZRELAY_STATE": str(state)})
        here = zrelay("--state", str(state), "status", "--json", inventory=inv)
        there = zrelay("--state", str(elsewhere), "status", "--json", inventory=inv)
        table = zrelay("--state", str(elsewhere), "status", inventory=inv, env={"COLUMNS": "200"})
    for proc in (dry, dry_json, here, there, table):
        said = proc.stdout + proc.stderr
        assert "destroy" not in said and "no common base" not in said and "Traceback" not in said, said
    assert dry.returncode == EXIT_BUSY, dry.stdout + dry.stderr
    assert f"not planned, another zrelay sync (pid {first.pid}, started " in dry.stdout + dry.stderr
    told = " ".join(dry.stdout.split())
    assert told.count(f"nas1:{src} → vault:{dst}") == 2, "the row's heading and the run's own words, once each"
    [row] = json.loads(dry_json.stdout)
    assert dry_json.returncode == EXIT_BUSY and row["outcome"] == "busy" and what in row["message"], row
    assert row["plans"] == [] and row["commands"] == []
    # a store that knows nothing of the run (another user's): busy, naming the holder
    [busy] = json.loads(there.stdout)
    assert there.returncode == 0, "a busy target is not an alert"
    assert busy["state"] == "busy" and busy["planned_state"] is None and busy["transfer"] is None, busy
    assert busy["holder"]["pid"] == first.pid and busy["holder"]["command"] == "sync", busy
    assert busy["holder"]["what"] == f"nas1:{src} → vault:{dst}" and what in busy["message"]
    assert busy["common_base"] is None and busy["target_newest"] is None, "nothing was read from the target"
    # the run's own store shows its transfer; what the hosts would say is not asked while it runs
    [running] = json.loads(here.stdout)
    assert here.returncode == 0 and running["state"] == "running" and running["planned_state"] == "busy", running
    assert running["transfer"]["pid"] == running["holder"]["pid"] == first.pid
    assert "busy" in table.stdout and f"(pid {first.pid}, started " in table.stdout, table.stdout
    # once the run is done, both plan again
    after = zrelay("sync", "--dry-run", "--json", inventory=inv, env={"ZRELAY_STATE": str(state)})
    assert after.returncode == 0 and json.loads(after.stdout)[0]["outcome"] == "noop", after.stdout + after.stderr
    [done] = json.loads(zrelay("--state", str(state), "status", "--json", inventory=inv).stdout)
    assert done["state"] == "in-sync" and done["holder"] is None, done


def test_restore_into_a_dataset_another_run_holds_is_skipped_as_busy(case2, tmp_path: Path) -> None:  # type: ignore[no-untyped-def]
    """s3-restore writes a host dataset like sync does: same lock, and its dry run does not plan it either
    (mid-receive the dataset holds no snapshot of the chain: "destroy it first")."""
    case, lab = case2, case2.lab
    make_dataset(lab, "nas2", case.src, mib=2, snaps=["r1"])
    case.ok("s3-push")
    (tmp_path / "sync").mkdir()   # the S3 case's inventory is tmp_path/inv.yml
    src, dst, inv = _big_source(lab, tmp_path / "sync")
    restore = ("s3-restore", "offsite", f"nas2:{case.src}", "--to", f"vault:{dst}")
    with frozen_mid_stream(lab, inv, tmp_path / "state.db") as first:
        real = case.zrelay(*restore)
        dry = case.zrelay(*restore, "--dry-run")
    for proc, verb in ((real, "skipped"), (dry, "not planned")):
        said = f"{verb}: {proc.stdout}{proc.stderr}"
        assert proc.returncode == EXIT_BUSY, said
        assert "destroy" not in said and "Traceback" not in said, said
        assert f"{verb}, another zrelay sync (pid {first.pid}, started " in proc.stderr, said
        assert f"is replicating nas1:{src} → vault:{dst}" in proc.stderr
    assert snapshots(lab, "vault", dst) == snapshots(lab, "nas1", src), "the restore left the run's target alone"
