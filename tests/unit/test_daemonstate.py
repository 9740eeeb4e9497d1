"""The daemon's tables in the state store: one live daemon, the schedule a restart goes on from,
run-now requests served once, the survey the TUI draws."""

from __future__ import annotations

import os
import subprocess
import sys
import time
from pathlib import Path

import pytest

from zrelay.daemonstate import DaemonStore, ScheduleRow
from zrelay.errors import StateError
from zrelay.state import StateStore


def test_one_live_daemon_per_store(tmp_path: Path) -> None:
    path = tmp_path / "state.db"
    now = time.time()
    with DaemonStore(path) as store:
        store.register("inv.yml", "127.0.0.1:9811", now=now)
        info = store.daemon(now=now + 1)
        assert info is not None and info.pid == os.getpid() and info.alive and info.metrics == "127.0.0.1:9811"
        store.register("inv.yml", None, now=now + 2)   # the same process may register again (a reload)
    # another process finds it alive and is refused
    code = ("import sys; from pathlib import Path; from zrelay.daemonstate import DaemonStore\n"
            "from zrelay.errors import StateError\n"
            "try:\n    DaemonStore(Path(sys.argv[1])).register('other.yml', None)\n"
            "except StateError as e:\n    print(e); sys.exit(3)\n")
    with DaemonStore(path) as store:
        store.heartbeat(time.time())
    done = subprocess.run([sys.executable, "-c", code, str(path)], capture_output=True, text=True)
    assert done.returncode == 3, done
    assert f"a zrelay daemon already runs with {path} (pid {os.getpid()}" in done.stdout
    with DaemonStore(path) as store:   # once stopped, another may start
        store.stopped()
        info = store.daemon()
        assert info is not None and not info.alive
    done = subprocess.run([sys.executable, "-c", code, str(path)], capture_output=True, text=True)
    assert done.returncode == 0, done


def test_a_stale_heartbeat_is_not_alive(tmp_path: Path) -> None:
    with DaemonStore(tmp_path / "s.db") as store:
        store.register("inv.yml", None, now=1000.0)
        info = store.daemon(now=1000.0 + 31)
        assert info is not None and not info.alive


def test_schedule_and_histories_survive_a_reopen(tmp_path: Path) -> None:
    path = tmp_path / "s.db"
    rows = [ScheduleRow("j1", "sync", "every 15m", 2000.0, "every 15m", False,
                        {"last_started": 1100.0, "failures": 0}),
            ScheduleRow("j1", "prune", "after each sync", None, "after each sync", True, {"parked": "diverged"})]
    with DaemonStore(path) as store:
        store.save_schedule(rows)
    with DaemonStore(path, readonly=True) as store:
        assert [r.kind for r in store.schedule()] == ["sync", "prune"]   # timed first, then never
        assert store.histories()[("j1", "prune")] == {"parked": "diverged"}
    with DaemonStore(path) as store:
        store.save_schedule(rows[:1])   # a reload dropped a run: its row goes
        assert list(store.histories()) == [("j1", "sync")]


def test_run_now_requests_are_served_once(tmp_path: Path) -> None:
    with DaemonStore(tmp_path / "s.db") as store:
        first = store.request(["nas1"], ["sync"], now=10.0)
        store.request(["job2"], [], now=11.0)
        taken = store.take_requests(now=12.0)
        assert [(r.id, r.patterns, r.kinds) for r in taken][0] == (first, ("nas1",), ("sync",))
        assert len(taken) == 2 and store.take_requests(now=13.0) == []
        store.answer(first, "started 1 run")
        assert store.request_state(first) == (12.0, "started 1 run")


def test_survey_and_a_store_without_daemon_tables(tmp_path: Path) -> None:
    path = tmp_path / "s.db"
    StateStore(path).close()   # a store written only by CLI runs
    with DaemonStore(path, readonly=True) as store:
        assert store.daemon() is None and store.schedule() == [] and store.survey() is None
    with DaemonStore(path) as store:
        store.save_survey([{"job": "j", "target": "vault:backup/x", "state": "in-sync"}], now=5.0)
        assert store.survey() == (5.0, [{"job": "j", "target": "vault:backup/x", "state": "in-sync"}])
    with pytest.raises(StateError):
        DaemonStore(tmp_path / "missing.db", readonly=True)
