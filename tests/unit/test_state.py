"""The state store: recording runs from engine events, batching, concurrency, liveness, compaction."""

from __future__ import annotations

import json
import os
import sqlite3
import subprocess
import sys
import textwrap
import time
from pathlib import Path

import pytest

from zrelay import state
from zrelay.events import (JobFinished, JobPlanned, JobStarted, Outcome, TransferFinished, TransferProgress,
                           TransferStarted)
from zrelay.errors import StateError
from zrelay.state import Recorder, StateStore, default_path, read_view

REPO = Path(__file__).resolve().parents[2]


class Clock:
    """A settable clock, so history and ages are exact."""

    def __init__(self, t: float = 1_700_000_000.0) -> None:
        self.t = t

    def __call__(self) -> float:
        return self.t


def run_one(rec: Recorder, job: str = "j", target: str = "vault:backup/a", outcome: Outcome = Outcome.OK,
            nbytes: int = 1000, progress: int = 3, failed_host: str | None = None) -> None:
    stream = f"{job}@s (full)"
    rec.handle(JobStarted(job, "nas1:tank/a", target))
    rec.handle(JobPlanned(job, target, "full", "full send", (("nas1", "zfs send tank/a@s"),)))
    rec.handle(TransferStarted(job, target, "nas1", target.split(":")[0], stream, nbytes))
    for i in range(progress):
        rec.handle(TransferProgress(job, target, stream, nbytes * (i + 1) // (progress + 1), nbytes, 100.0))
    rec.handle(TransferFinished(job, target, stream, nbytes, 1.0, outcome is Outcome.OK))
    rec.handle(JobFinished(job, "nas1:tank/a", target, outcome, "msg " + outcome.value, nbytes, 1.0, failed_host))


# --- location -----------------------------------------------------------------------------------


def test_default_path_precedence(tmp_path: Path) -> None:
    env = {"XDG_STATE_HOME": str(tmp_path / "xdg"), "ZRELAY_STATE": str(tmp_path / "env.db")}
    assert default_path("/x/y.db", env) == Path("/x/y.db")
    assert default_path(None, env) == tmp_path / "env.db"
    assert default_path(None, {"XDG_STATE_HOME": str(tmp_path / "xdg")}) == tmp_path / "xdg" / "zrelay" / "state.db"
    assert default_path(None, {}) == Path("~/.local/state/zrelay/state.db").expanduser()


def test_store_is_wal_and_versioned(tmp_path: Path) -> None:
    path = tmp_path / "sub" / "state.db"
    StateStore(path).close()
    db = sqlite3.connect(path)
    assert db.execute("PRAGMA journal_mode").fetchone()[0] == "wal"
    assert db.execute("PRAGMA user_version").fetchone()[0] == state.SCHEMA_VERSION
    db.execute(f"PRAGMA user_version={state.SCHEMA_VERSION + 1}")
    db.close()
    with pytest.raises(StateError, match="newer zrelay"):
        StateStore(path)


def test_read_view_without_store_is_empty(tmp_path: Path) -> None:
    view = read_view(tmp_path / "none.db")
    assert view.active == () and not view.last_results
    assert not (tmp_path / "none.db").exists(), "reading must not create a store"


# --- recording ---------------------------------------------------------------------------------------


def test_recorder_records_a_run(tmp_path: Path) -> None:
    path = tmp_path / "s.db"
    with Recorder(path, "sync", ["sync", "nas1"], inventory="/inv.yml") as rec:
        run_one(rec, "a")
        run_one(rec, "b", target="ghost:tank/x", outcome=Outcome.FAILED, nbytes=0, failed_host="ghost")
        rec.set_exit_code(1)
    with StateStore(path) as store:
        [run] = store.runs()
        assert (run.command, run.argv, run.inventory, run.exit_code, run.alive) == (
            "sync", ("sync", "nas1"), "/inv.yml", 1, False)
        tasks = {t.job: t for t in store.tasks(run_id=run.id)}
        assert tasks["a"].outcome == "ok" and tasks["a"].bytes == 1000 and tasks["a"].plan_kind == "full"
        assert tasks["b"].outcome == "failed" and tasks["b"].failed_host == "ghost"
        transfers = store.transfers(run.id)
        assert all(t.finished is not None for t in transfers)
        assert [t.ok for t in transfers] == [True, False]
        view = store.view()
    assert view.active == ()
    assert view.last_results[("a", "vault:backup/a")].outcome == "ok"
    assert view.totals[("a", "vault:backup/a")].last_success is not None
    assert view.totals[("b", "ghost:tank/x")].failures == 1
    assert view.host_errors["ghost"].message == "msg failed"


def test_running_transfer_is_visible_to_readers(tmp_path: Path) -> None:
    path = tmp_path / "s.db"
    rec = Recorder(path, "sync").start()
    try:
        rec.handle(JobStarted("j", "nas1:tank/a", "vault:backup/a"))
        rec.handle(TransferStarted("j", "vault:backup/a", "nas1", "vault", "tank/a@s (full)", 4000))
        rec.handle(TransferProgress("j", "vault:backup/a", "tank/a@s (full)", 1000, 4000, 500.0))
        deadline = time.monotonic() + 3
        view = read_view(path)
        while (not view.active or view.active[0].done < 1000) and time.monotonic() < deadline:
            time.sleep(0.05)
            view = read_view(path)
        [t] = view.active
        assert (t.job, t.done, t.estimate, t.rate, t.dataset) == ("j", 1000, 4000, 500.0, "tank/a")
        assert t.fraction() == 0.25 and t.eta() == pytest.approx(6.0)
        assert view.live_runs and view.live_runs[0].pid == t.pid
    finally:
        rec.close(130)
    view = read_view(path)
    assert view.active == ()
    task = view.last_results[("j", "vault:backup/a")]
    assert task.outcome == "failed" and "interrupted" in task.message  # left open by the run: closed


def test_error_cleared_by_later_success(tmp_path: Path) -> None:
    path = tmp_path / "s.db"
    clock = Clock()
    with Recorder(path, "sync", clock=clock) as rec:
        run_one(rec, "a", outcome=Outcome.FAILED, failed_host="vault")
    assert "vault" in read_view(path).host_errors
    clock.t += 60
    with Recorder(path, "sync", clock=clock) as rec:
        run_one(rec, "a")
    assert "vault" not in read_view(path).host_errors


def test_broken_store_never_breaks_the_run(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    blocker = tmp_path / "file"
    blocker.write_text("not a directory")
    with Recorder(blocker / "state.db", "sync") as rec:
        run_one(rec)
    assert rec.failed is not None
    assert "not recording this run" in capsys.readouterr().err


def test_dry_run_recorder_is_inert(tmp_path: Path) -> None:
    with Recorder(tmp_path / "s.db", "sync", enabled=False) as rec:
        run_one(rec)
    assert not (tmp_path / "s.db").exists()


# --- batching: progress must not cost the transfer -------------------------------------------------------


def test_progress_is_batched_to_a_few_writes_per_second(tmp_path: Path) -> None:
    """20 streams at the engine's 4 events/s each for 3 s: the store sees ~2 transactions/s, not 80."""
    rec = Recorder(tmp_path / "s.db", "sync").start()
    jobs = [f"job{i}" for i in range(20)]
    for j in jobs:
        rec.handle(JobStarted(j, f"nas1:tank/{j}", f"vault:backup/{j}"))
        rec.handle(TransferStarted(j, f"vault:backup/{j}", "nas1", "vault", f"tank/{j}@s (full)", 10**9))
    started = time.monotonic()
    writes_before = rec.writes
    done = 0
    while time.monotonic() - started < 3.0:
        done += 1_000_000
        for j in jobs:
            rec.handle(TransferProgress(j, f"vault:backup/{j}", f"tank/{j}@s (full)", done, 10**9, 4e6))
        time.sleep(0.25)
    elapsed = time.monotonic() - started
    rate = (rec.writes - writes_before) / elapsed
    for j in jobs:
        rec.handle(TransferFinished(j, f"vault:backup/{j}", f"tank/{j}@s (full)", done, elapsed, True))
        rec.handle(JobFinished(j, f"nas1:tank/{j}", f"vault:backup/{j}", Outcome.OK, "", done, elapsed))
    rec.close(0)
    assert rate <= 1 / state.FLUSH_INTERVAL + 1, f"{rate:.1f} transactions/s for 20 streams"
    with StateStore(tmp_path / "s.db") as store:
        assert store.count("tasks") == 20
        samples = store.samples(store.transfers()[0].id)
        assert 2 <= len(samples) <= 3 / state.SAMPLE_INTERVAL + 2


def test_handle_costs_microseconds(tmp_path: Path) -> None:
    rec = Recorder(tmp_path / "s.db", "sync").start()
    rec.handle(JobStarted("j", "nas1:tank/a", "vault:backup/a"))
    rec.handle(TransferStarted("j", "vault:backup/a", "nas1", "vault", "tank/a@s (full)", None))
    n = 50_000
    t0 = time.perf_counter()
    for i in range(n):
        rec.handle(TransferProgress("j", "vault:backup/a", "tank/a@s (full)", i, None, 1.0))
    per_event = (time.perf_counter() - t0) / n
    rec.close(0)
    assert per_event < 50e-6, f"{per_event * 1e6:.1f} µs per progress event"
    assert rec.writes < 20


# --- several processes at once ----------------------------------------------------------------------


WRITER = textwrap.dedent("""
    import sys, time
    from pathlib import Path
    from zrelay.events import *
    from zrelay.state import Recorder
    path, name = Path(sys.argv[1]), sys.argv[2]
    with Recorder(path, "sync", [name], flush_interval=0.05) as rec:
        for i in range(20):
            job, target, stream = f"{name}-{i}", f"vault:backup/{name}-{i}", f"tank/{name}-{i}@s (full)"
            rec.handle(JobStarted(job, f"nas1:tank/{name}-{i}", target))
            rec.handle(TransferStarted(job, target, "nas1", "vault", stream, 1000))
            for k in range(20):
                rec.handle(TransferProgress(job, target, stream, k * 50, 1000, 50.0))
                time.sleep(0.003)
            rec.handle(TransferFinished(job, target, stream, 1000, 1.0, True))
            rec.handle(JobFinished(job, f"nas1:tank/{name}-{i}", target, Outcome.OK, "", 1000, 1.0))
        rec.set_exit_code(0)
    print(rec.writes, rec.failed)
""")


def test_two_writer_processes_and_a_reader(tmp_path: Path) -> None:
    path = tmp_path / "s.db"
    StateStore(path).close()
    procs = [subprocess.Popen([sys.executable, "-c", WRITER, str(path), name], cwd=REPO, text=True,
                              stdout=subprocess.PIPE, stderr=subprocess.PIPE) for name in ("p1", "p2")]
    seen_live: set[str] = set()
    reads = 0
    while any(p.poll() is None for p in procs):
        view = read_view(path)  # must never fail while both write
        seen_live |= {t.job.split("-")[0] for t in view.active}
        reads += 1
        time.sleep(0.01)
    outputs = [p.communicate() for p in procs]
    for (out, err), p in zip(outputs, procs):
        assert p.returncode == 0, err
        assert "warning" not in err, err
        assert out.split()[1] == "None"
    assert reads > 10 and seen_live == {"p1", "p2"}, "the reader saw both processes' live transfers"
    with StateStore(path) as store:
        assert store.count("runs") == 2 and store.count("tasks") == 40
        assert {r.exit_code for r in store.runs()} == {0}
        view = store.view()
    assert len(view.totals) == 40 and all(t.bytes == 1000 for t in view.totals.values())


# --- liveness and compaction -------------------------------------------------------------------------------


def _dead_pid() -> int:
    proc = subprocess.Popen(["true"])
    proc.wait()
    return proc.pid


def test_transfers_of_a_dead_process_are_not_live(tmp_path: Path) -> None:
    path = tmp_path / "s.db"
    with StateStore(path) as store:
        pid = _dead_pid()
        run = store.start_run("sync", ["sync"], pid=pid)
        with store.transaction() as db:
            db.execute("INSERT INTO tasks(run_id, job, source, target, started) VALUES (?,?,?,?,?)",
                       (run, "j", "nas1:tank/a", "vault:backup/a", time.time()))
            db.execute("INSERT INTO transfers(run_id, task_id, job, target, stream, source_host, target_host, "
                       "started, updated) VALUES (?,1,'j','vault:backup/a','tank/a@s','nas1','vault',?,?)",
                       (run, time.time(), time.time()))
        assert store.view().active == ()
        stats = store.compact()
        assert stats.runs_closed == 1
        [task] = store.tasks()
        assert task.outcome == "abandoned" and f"pid {pid} gone since" in task.message
        assert store.transfers()[0].ok is False


def test_stale_heartbeat_is_not_live(tmp_path: Path) -> None:
    with StateStore(tmp_path / "s.db") as store:
        store.start_run("sync", [], now=time.time() - state.STALE_AFTER - 5)
        assert store.runs()[0].alive is False
        store.start_run("sync", [])
        assert store.runs()[0].alive is True


def test_compaction_keeps_history_per_target_and_totals(tmp_path: Path) -> None:
    path = tmp_path / "s.db"
    clock = Clock()
    for i in range(state.HISTORY_PER_TARGET + 20):
        clock.t += 3600
        with Recorder(path, "sync", clock=clock, compact=False) as rec:
            run_one(rec, "a", nbytes=10)
            if i < 5:
                run_one(rec, "b", nbytes=10)
    with StateStore(path) as store:
        stats = store.compact(clock.t)
        assert stats.tasks_deleted == 20
        assert len(store.tasks(job="a")) == state.HISTORY_PER_TARGET
        assert len(store.tasks(job="b")) == 5, "history is per job: a busy job does not evict a quiet one"
        totals = store.view(clock.t).totals
        assert totals[("a", "vault:backup/a")].runs == state.HISTORY_PER_TARGET + 20
        assert totals[("a", "vault:backup/a")].bytes == 10 * (state.HISTORY_PER_TARGET + 20)
        oldest_kept = min(t.finished or 0 for t in store.tasks(job="a"))
        assert oldest_kept > clock.t - (state.HISTORY_PER_TARGET + 1) * 3600
        assert store.count("transfers") == state.HISTORY_PER_TARGET + 5
        assert store.count("runs") == state.HISTORY_PER_TARGET + 5, "runs still holding b's history stay"


def test_compaction_thins_old_samples(tmp_path: Path) -> None:
    path = tmp_path / "s.db"
    clock = Clock()
    with Recorder(path, "sync", clock=clock, compact=False) as rec:
        run_one(rec)
        run_one(rec, "fresh", target="vault:backup/f")
    with StateStore(path) as store:
        old, fresh = store.transfers()
        with store.transaction() as db:
            db.executemany("INSERT INTO samples(transfer_id, at, done, rate) VALUES (?,?,?,?)",
                           [(tid, clock.t - 7200 + i, i, 1.0) for tid in (old.id, fresh.id) for i in range(500)])
            db.execute("UPDATE transfers SET finished = ? WHERE id = ?", (clock.t - 7200, old.id))
        before = len(store.samples(old.id))
        stats = store.compact(clock.t)
        kept = store.samples(old.id)
        assert len(kept) == state.SAMPLES_KEPT
        assert kept[0][1] == 0 and kept[-1][1] == max(s[1] for s in kept), "first and last survive"
        assert len(store.samples(fresh.id)) > 500, "a recently finished transfer keeps every sample"
        assert stats.samples_deleted == before - state.SAMPLES_KEPT
        again = store.compact(clock.t)
        assert again.samples_deleted == 0


def test_recorder_compacts_at_most_every_so_often(tmp_path: Path) -> None:
    path = tmp_path / "s.db"
    clock = Clock()
    with Recorder(path, "sync", clock=clock) as rec:
        run_one(rec)
    with StateStore(path) as store:
        first = store.last_compacted()
    assert first == clock.t
    clock.t += 10
    with Recorder(path, "sync", clock=clock) as rec:
        run_one(rec)
    with StateStore(path) as store:
        assert store.last_compacted() == first


def test_fanout_calls_every_sink() -> None:
    got: list[str] = []
    sink = state.fanout(lambda e: got.append("a"), lambda e: got.append("b"))
    sink(JobStarted("j", "s", "t"))
    assert got == ["a", "b"]


def test_store_rows_are_json_friendly(tmp_path: Path) -> None:
    path = tmp_path / "s.db"
    with Recorder(path, "sync") as rec:
        run_one(rec)
    with StateStore(path) as store:
        [task] = store.tasks()
        commands = json.loads(store.db.execute("SELECT commands FROM tasks").fetchone()[0])
    assert commands == [["nas1", "zfs send tank/a@s"]] and task.plan_summary == "full send"


def test_a_dead_runs_open_task_is_its_newest_result_abandoned(tmp_path: Path) -> None:
    """SIGKILL or power loss: the run before it must not go on showing as the last result."""
    path = tmp_path / "s.db"
    with Recorder(path, "sync") as rec:
        run_one(rec, "a")
    with StateStore(path) as store:
        pid = _dead_pid()
        run = store.start_run("sync", ["sync"], pid=pid)
        with store.transaction() as db:
            db.execute("INSERT INTO tasks(run_id, job, source, target, started) VALUES (?,?,?,?,?)",
                       (run, "a", "nas1:tank/a", "vault:backup/a", time.time()))
        [dead] = [r for r in store.runs() if r.id == run]
    view = read_view(path)
    last = view.last_results[("a", "vault:backup/a")]
    assert last.outcome == "abandoned" and last.pid == pid and last.run_id == run
    assert last.message == f"abandoned (pid {pid} gone since {state.format_time(dead.heartbeat)})"
    assert view.host_errors["vault"].outcome == "abandoned"
    # the next recorder writes it down; the view reads the same from the table then
    Recorder(path, "sync").start().close(0)
    with StateStore(path) as store:
        task = next(t for t in store.tasks() if t.run_id == run)
        assert task.outcome == "abandoned" and task.finished == dead.heartbeat
        assert store.view().totals[("a", "vault:backup/a")].failures == 1
    assert read_view(path).last_results[("a", "vault:backup/a")].message == last.message


def test_a_reused_pid_does_not_keep_a_dead_run_alive(tmp_path: Path) -> None:
    """The pid exists again (here: this very process), but it started after the run did."""
    with StateStore(tmp_path / "s.db") as store:
        store.start_run("sync", [], pid=os.getpid())
        assert store.runs()[0].alive is True   # fresh heartbeat: only the start time tells
        store.db.execute("UPDATE runs SET started = ?, heartbeat = ?", (time.time() - 10 * 86400, time.time()))
        assert store.runs()[0].alive is False


def test_interrupted_runs_record_the_signal(tmp_path: Path) -> None:
    path = tmp_path / "s.db"
    rec = Recorder(path, "sync").start()
    rec.handle(JobStarted("j", "nas1:tank/a", "vault:backup/a"))
    rec.close(143)
    with StateStore(path) as store:
        assert store.runs()[0].exit_code == 143
        assert store.tasks()[0].message == "interrupted by SIGTERM before this target finished"
