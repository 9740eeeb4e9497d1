"""The run state store: what every ``sync`` / ``s3-push`` / ``s3-restore`` did and is doing, in SQLite.

Why a database and not log files: the TUI, ``zrelay status`` and monitoring
read it while cron (or a colleague) runs transfers in other processes, so it
has to be safe with several writers and readers at once. SQLite in WAL mode
gives that: readers never wait for writers, each writer holds the lock for one
short transaction.

Why batching: progress events arrive up to 4/s per stream; the ``Recorder``
keeps only the newest progress per transfer in memory and a background thread
writes everything pending in one transaction at most every ``FLUSH_INTERVAL``
seconds, so a run writes a few times per second however many jobs it runs and
the event loop that moves the bytes never touches the disk.

Why compaction: progress samples are only interesting while a transfer runs
and shortly after; ``StateStore.compact`` thins them once a transfer is done,
keeps the newest ``HISTORY_PER_TARGET`` results per job and target, and keeps
running totals (bytes, last success) that survive the pruning.

This module is plain stdlib (sqlite3, threading): no asyncio, no UI, so every
frontend can use it. A command records its run by adding a Recorder to its
event sinks; the S3 commands use ``target = "s3:NAME"`` so ``status`` finds them:

    with Recorder(default_path(args.state), "s3-push", argv) as recorder:
        results = run(..., events=fanout(view.handle, recorder.handle))
        recorder.set_exit_code(code)
"""

from __future__ import annotations

import json
import os
import signal
import socket
import sqlite3
import sys
import threading
import time
from dataclasses import dataclass, field, replace
from pathlib import Path
from types import TracebackType
from typing import Callable, Mapping, Self, Sequence

from zrelay.events import (Event, EventSink, JobFinished, JobPlanned, JobStarted, Outcome, TransferFinished,
                           TransferProgress, TransferStarted)
from zrelay.errors import StateError
from zrelay.procs import pid_alive, process_started

SCHEMA_VERSION = 1
ENV_VAR = "ZRELAY_STATE"

FLUSH_INTERVAL = 0.5        # s: at most ~2 progress transactions per second per process
MIN_FLUSH_GAP = 0.2         # s: even starts/finishes are not written more often than this
SAMPLE_INTERVAL = 1.0       # s: one stored progress sample per transfer per second at most
HEARTBEAT_INTERVAL = 5.0    # s: a live recorder touches its run this often, even when idle
STALE_AFTER = 30.0          # s: a run without heartbeat for this long is considered dead
PID_START_SLACK = 2.0       # s: /proc's start time is whole seconds of boot time plus clock ticks
BUSY_TIMEOUT_MS = 5000      # how long a writer waits for another writer's transaction

HISTORY_PER_TARGET = 100    # finished results kept per (job, target)
SAMPLES_KEPT = 32           # progress samples kept per finished transfer
THIN_AFTER = 3600.0         # s: a finished transfer's samples are thinned after this long
COMPACT_EVERY = 600.0       # s: a recorder compacts at the end of its run at most this often

_SCHEMA = """
CREATE TABLE IF NOT EXISTS meta(key TEXT PRIMARY KEY, value TEXT NOT NULL);
CREATE TABLE IF NOT EXISTS runs(
    id INTEGER PRIMARY KEY,
    command TEXT NOT NULL,
    argv TEXT NOT NULL,
    inventory TEXT,
    pid INTEGER NOT NULL,
    hostname TEXT NOT NULL,
    started REAL NOT NULL,
    heartbeat REAL NOT NULL,
    finished REAL,
    exit_code INTEGER
);
CREATE TABLE IF NOT EXISTS tasks(
    id INTEGER PRIMARY KEY,
    run_id INTEGER NOT NULL REFERENCES runs(id) ON DELETE CASCADE,
    job TEXT NOT NULL,
    source TEXT NOT NULL,
    target TEXT NOT NULL,
    started REAL NOT NULL,
    finished REAL,
    plan_kind TEXT,
    plan_summary TEXT,
    commands TEXT,
    outcome TEXT,
    message TEXT NOT NULL DEFAULT '',
    bytes INTEGER NOT NULL DEFAULT 0,
    seconds REAL NOT NULL DEFAULT 0,
    failed_host TEXT
);
CREATE INDEX IF NOT EXISTS tasks_by_target ON tasks(job, target, finished);
CREATE INDEX IF NOT EXISTS tasks_by_failed_host ON tasks(failed_host, finished);
CREATE INDEX IF NOT EXISTS tasks_by_run ON tasks(run_id);
CREATE TABLE IF NOT EXISTS transfers(
    id INTEGER PRIMARY KEY,
    run_id INTEGER NOT NULL REFERENCES runs(id) ON DELETE CASCADE,
    task_id INTEGER REFERENCES tasks(id) ON DELETE CASCADE,
    job TEXT NOT NULL,
    target TEXT NOT NULL,
    stream TEXT NOT NULL,
    source_host TEXT NOT NULL,
    target_host TEXT NOT NULL,
    estimate INTEGER,
    done INTEGER NOT NULL DEFAULT 0,
    rate REAL NOT NULL DEFAULT 0,
    started REAL NOT NULL,
    updated REAL NOT NULL,
    finished REAL,
    ok INTEGER
);
CREATE INDEX IF NOT EXISTS transfers_active ON transfers(finished) WHERE finished IS NULL;
CREATE INDEX IF NOT EXISTS transfers_by_task ON transfers(task_id);
CREATE INDEX IF NOT EXISTS transfers_by_run ON transfers(run_id);
CREATE TABLE IF NOT EXISTS samples(
    transfer_id INTEGER NOT NULL REFERENCES transfers(id) ON DELETE CASCADE,
    at REAL NOT NULL,
    done INTEGER NOT NULL,
    rate REAL NOT NULL
);
CREATE INDEX IF NOT EXISTS samples_by_transfer ON samples(transfer_id, at);
CREATE TABLE IF NOT EXISTS totals(
    job TEXT NOT NULL,
    target TEXT NOT NULL,
    bytes INTEGER NOT NULL DEFAULT 0,
    runs INTEGER NOT NULL DEFAULT 0,
    failures INTEGER NOT NULL DEFAULT 0,
    last_run REAL,
    last_outcome TEXT,
    last_success REAL,
    PRIMARY KEY(job, target)
);
"""

_HOSTNAME = socket.gethostname()

#: Outcomes of tasks a run left open: it was stopped (SIGINT/SIGTERM) or its process died.
INTERRUPTED_MESSAGE = "interrupted before this target finished"
ABANDONED = "abandoned"

#: The signal stopping this process, when the CLI caught one (see note_signal).
_stopping_signal: list[int] = []


def note_signal(signum: int) -> None:
    """The CLI caught ``signum`` (SIGTERM): a run closed by the interruption records 128 + signum."""
    _stopping_signal.append(signum)


def _interrupt_exit_code() -> int:
    return 128 + _stopping_signal[-1] if _stopping_signal else 130


def _interrupt_message(exit_code: int | None) -> str:
    if exit_code is not None and exit_code > 128 and exit_code != 130:
        try:
            name = signal.Signals(exit_code - 128).name
        except ValueError:
            name = f"signal {exit_code - 128}"
        return f"interrupted by {name} before this target finished"
    return INTERRUPTED_MESSAGE


def format_time(ts: float) -> str:
    return time.strftime("%Y-%m-%d %H:%M:%S", time.localtime(ts))


def abandoned_message(pid: int, hostname: str, heartbeat: float) -> str:
    """``abandoned (pid 4242 gone since 2024-06-10 14:02:11)``: the run's last sign of life."""
    where = "" if hostname == _HOSTNAME else f" on {hostname}"
    return f"{ABANDONED} (pid {pid}{where} gone since {format_time(heartbeat)})"


def default_path(explicit: str | os.PathLike[str] | None = None,
                 environ: Mapping[str, str] | None = None) -> Path:
    """``--state PATH``, then ``$ZRELAY_STATE``, then ``$XDG_STATE_HOME/zrelay/state.db``."""
    env = os.environ if environ is None else environ
    if explicit:
        return Path(explicit).expanduser()
    if env.get(ENV_VAR):
        return Path(env[ENV_VAR]).expanduser()
    base = env.get("XDG_STATE_HOME") or str(Path("~/.local/state").expanduser())
    return Path(base) / "zrelay" / "state.db"


# --- rows ----------------------------------------------------------------------


@dataclass(frozen=True)
class RunRow:
    id: int
    command: str
    argv: tuple[str, ...]
    inventory: str | None
    pid: int
    hostname: str
    started: float
    heartbeat: float
    finished: float | None
    exit_code: int | None
    alive: bool


@dataclass(frozen=True)
class TaskRow:
    """One job towards one target within one run."""

    id: int
    run_id: int
    job: str
    source: str
    target: str
    started: float
    finished: float | None
    plan_kind: str | None
    plan_summary: str | None
    outcome: str | None
    message: str
    bytes: int
    seconds: float
    failed_host: str | None
    pid: int | None = None    # the process of the run (read with last_results)


@dataclass(frozen=True)
class TransferRow:
    """One stream (one ``zfs send | zfs receive``), live or finished."""

    id: int
    run_id: int
    job: str
    target: str
    stream: str
    source_host: str
    target_host: str
    estimate: int | None
    done: int
    rate: float
    started: float
    updated: float
    finished: float | None
    ok: bool | None
    pid: int = 0
    command: str = ""

    @property
    def dataset(self) -> str:
        """The source dataset the stream carries (its label starts with it)."""
        return self.stream.split("@", 1)[0].split(" ", 1)[0]

    def eta(self) -> float | None:
        """Seconds left, when the source gave an estimate and bytes are moving."""
        if self.estimate is None or self.rate <= 0:
            return None
        return max(0.0, (self.estimate - self.done) / self.rate)

    def fraction(self) -> float | None:
        if not self.estimate:
            return None
        return min(1.0, self.done / self.estimate)


@dataclass(frozen=True)
class Totals:
    """Running totals per (job, target); they survive compaction."""

    job: str
    target: str
    bytes: int
    runs: int
    failures: int
    last_run: float | None
    last_outcome: str | None
    last_success: float | None


@dataclass(frozen=True)
class StoreView:
    """Everything a frontend shows, read in one transaction (a consistent picture)."""

    read_at: float
    active: tuple[TransferRow, ...] = ()
    last_results: Mapping[tuple[str, str], TaskRow] = field(default_factory=dict)
    totals: Mapping[tuple[str, str], Totals] = field(default_factory=dict)
    host_errors: Mapping[str, TaskRow] = field(default_factory=dict)
    live_runs: tuple[RunRow, ...] = ()
    #: When the newest finished run ended (any process): a change means a run ended since the last read.
    last_run_end: float | None = None

    def transfer_for(self, job: str, target: str) -> TransferRow | None:
        for t in self.active:
            if t.job == job and t.target == target:
                return t
        return None

    @classmethod
    def empty(cls) -> "StoreView":
        return cls(read_at=time.time())


@dataclass(frozen=True)
class CompactStats:
    samples_deleted: int = 0
    tasks_deleted: int = 0
    runs_deleted: int = 0
    runs_closed: int = 0


# --- the store -------------------------------------------------------------------


def run_alive(pid: int, hostname: str, heartbeat: float, finished: float | None, now: float,
              started: float | None = None) -> bool:
    """A run is live while unfinished, its heartbeat fresh and (on this machine) its process exists.

    A pid that exists again after its run's process died (reused) is told apart by its start
    time when given ``started``: a process that began after the run did is not the run's.
    Elsewhere the heartbeat (STALE_AFTER) bounds how long a reused pid can pass for the run.
    """
    if finished is not None or now - heartbeat > STALE_AFTER:
        return False
    if hostname == _HOSTNAME:
        if not pid_alive(pid):
            return False
        if started is not None:
            began = process_started(pid)
            if began is not None and began > started + PID_START_SLACK:
                return False
    return True


class StateStore:
    """One connection to the state database; use one per thread."""

    def __init__(self, path: Path, *, readonly: bool = False, timeout_ms: int = BUSY_TIMEOUT_MS) -> None:
        self.path = Path(path)
        self.readonly = readonly
        try:
            if readonly:
                if not self.path.exists():
                    raise StateError(f"{self.path}: no state store yet")
                uri = f"file:{self.path}?mode=ro"
                self.db = sqlite3.connect(uri, uri=True, timeout=timeout_ms / 1000,
                                          isolation_level=None, check_same_thread=False)
            else:
                self.path.parent.mkdir(parents=True, exist_ok=True)
                self.db = sqlite3.connect(str(self.path), timeout=timeout_ms / 1000,
                                          isolation_level=None, check_same_thread=False)
            self.db.execute(f"PRAGMA busy_timeout={int(timeout_ms)}")
            self.db.execute("PRAGMA foreign_keys=ON")
            if not readonly:
                self._init_schema()
            else:
                self._check_version()
        except sqlite3.Error as exc:
            raise StateError(f"{self.path}: {exc}") from exc

    # --- setup ---

    def _init_schema(self) -> None:
        version = self.db.execute("PRAGMA user_version").fetchone()[0]
        if version > SCHEMA_VERSION:
            raise StateError(f"{self.path} was written by a newer zrelay (schema {version}, "
                             f"this one knows {SCHEMA_VERSION})")
        self._enable_wal()
        self.db.execute("PRAGMA synchronous=NORMAL")
        if version == SCHEMA_VERSION:
            return
        with self.transaction():
            if self.db.execute("PRAGMA user_version").fetchone()[0] == 0:
                for statement in _SCHEMA.split(";"):
                    if statement.strip():
                        self.db.execute(statement)
                self.db.execute(f"PRAGMA user_version={SCHEMA_VERSION}")

    def _enable_wal(self) -> None:
        """WAL once per database file; a concurrent opener may hold the lock for a moment."""
        for attempt in range(50):
            try:
                if self.db.execute("PRAGMA journal_mode").fetchone()[0] != "wal":
                    self.db.execute("PRAGMA journal_mode=WAL")
                return
            except sqlite3.OperationalError as exc:
                if "locked" not in str(exc) or attempt == 49:
                    raise
                time.sleep(0.05)

    def _check_version(self) -> None:
        version = self.db.execute("PRAGMA user_version").fetchone()[0]
        if version == 0:
            raise StateError(f"{self.path}: not initialised yet")
        if version > SCHEMA_VERSION:
            raise StateError(f"{self.path} was written by a newer zrelay (schema {version})")

    def close(self) -> None:
        self.db.close()

    def __enter__(self) -> "StateStore":
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    def transaction(self) -> "_Transaction":
        """``BEGIN IMMEDIATE`` … ``COMMIT``: take the write lock up front, so no upgrade deadlock."""
        return _Transaction(self.db)

    # --- writes (used by Recorder; public for tools and tests) ---

    def start_run(self, command: str, argv: Sequence[str], inventory: str | None = None,
                  now: float | None = None, pid: int | None = None) -> int:
        at = time.time() if now is None else now
        with self.transaction():
            cur = self.db.execute(
                "INSERT INTO runs(command, argv, inventory, pid, hostname, started, heartbeat) "
                "VALUES (?,?,?,?,?,?,?)",
                (command, json.dumps(list(argv)), inventory, os.getpid() if pid is None else pid,
                 _HOSTNAME, at, at))
            return int(cur.lastrowid or 0)

    # --- reads ---

    def view(self, now: float | None = None) -> StoreView:
        """The live transfers, newest results, totals and per-host errors, consistently."""
        at = time.time() if now is None else now
        db = self.db
        db.execute("BEGIN")
        try:
            runs = {r.id: r for r in self._runs(
                "SELECT * FROM runs WHERE finished IS NULL", (), at)}
            live = {rid: r for rid, r in runs.items() if r.alive}
            active = []
            for row in db.execute("SELECT * FROM transfers WHERE finished IS NULL ORDER BY started, id"):
                run = live.get(row[1])
                if run is None:
                    continue
                active.append(_transfer(row, run))
            last: dict[tuple[str, str], TaskRow] = {}
            for row in db.execute(
                    "SELECT t.*, r.pid FROM tasks t JOIN ("
                    "  SELECT job, target, MAX(finished) AS f FROM tasks WHERE finished IS NOT NULL "
                    "  GROUP BY job, target) m ON t.job = m.job AND t.target = m.target AND t.finished = m.f "
                    "LEFT JOIN runs r ON r.id = t.run_id"):
                task = _task(row[:-1], pid=row[-1])
                last[(task.job, task.target)] = task
            # What a dead run left open (SIGKILL, power loss) is its newest result: abandoned,
            # not the result of the run before it. compact() writes the same down for good.
            abandoned: list[TaskRow] = []
            for row in db.execute("SELECT * FROM tasks WHERE finished IS NULL ORDER BY started, id"):
                run = runs.get(row[1])
                if run is None or run.alive:
                    continue
                task = _abandoned(_task(row), run)
                abandoned.append(task)
                previous = last.get((task.job, task.target))
                if previous is None or previous.started <= task.started:
                    last[(task.job, task.target)] = task
            totals = {(r[0], r[1]): Totals(*r) for r in db.execute("SELECT * FROM totals")}
            last_run_end = db.execute("SELECT MAX(finished) FROM runs").fetchone()[0]
            errors: dict[str, TaskRow] = {}
            for row in db.execute(
                    "SELECT t.* FROM tasks t JOIN ("
                    "  SELECT failed_host, MAX(finished) AS f FROM tasks "
                    "  WHERE failed_host IS NOT NULL AND outcome IN ('failed', 'refused', 'abandoned') "
                    "  GROUP BY failed_host"
                    ") m ON t.failed_host = m.failed_host AND t.finished = m.f"):
                task = _task(row)
                host = task.failed_host
                assert host is not None and task.finished is not None
                # an error is news only until the host next does something successfully
                later = db.execute(
                    "SELECT 1 FROM tasks WHERE finished > ? AND outcome IN ('ok', 'noop') "
                    "AND (substr(source, 1, ?) = ? OR substr(target, 1, ?) = ?) LIMIT 1",
                    (task.finished, len(host) + 1, host + ":", len(host) + 1, host + ":")).fetchone()
                if later is None:
                    errors[host] = task
            for task in abandoned:
                host = task.failed_host
                if host is not None and (host not in errors or (errors[host].finished or 0) <= (task.finished or 0)):
                    errors[host] = task
        finally:
            db.execute("COMMIT")
        return StoreView(read_at=at, active=tuple(active), last_results=last, totals=totals,
                         host_errors=errors, live_runs=tuple(live.values()), last_run_end=last_run_end)

    def runs(self, limit: int = 50, now: float | None = None) -> list[RunRow]:
        """The newest runs, newest first."""
        at = time.time() if now is None else now
        return self._runs("SELECT * FROM runs ORDER BY started DESC, id DESC LIMIT ?", (limit,), at)

    def tasks(self, run_id: int | None = None, job: str | None = None,
              target: str | None = None) -> list[TaskRow]:
        clauses, params = [], []
        for column, value in (("run_id", run_id), ("job", job), ("target", target)):
            if value is not None:
                clauses.append(f"{column} = ?")
                params.append(value)
        where = f"WHERE {' AND '.join(clauses)}" if clauses else ""
        return [_task(r) for r in self.db.execute(f"SELECT * FROM tasks {where} ORDER BY started, id", params)]

    def transfers(self, run_id: int | None = None) -> list[TransferRow]:
        where, params = ("WHERE run_id = ?", (run_id,)) if run_id is not None else ("", ())
        return [_transfer(r, None) for r in self.db.execute(f"SELECT * FROM transfers {where} ORDER BY id", params)]

    def samples(self, transfer_id: int) -> list[tuple[float, int, float]]:
        """(time, bytes done, rate) of one transfer, oldest first."""
        return [tuple(r) for r in self.db.execute(
            "SELECT at, done, rate FROM samples WHERE transfer_id = ? ORDER BY at", (transfer_id,))]

    def count(self, table: str) -> int:
        if table not in ("runs", "tasks", "transfers", "samples", "totals"):
            raise ValueError(table)
        return int(self.db.execute(f"SELECT COUNT(*) FROM {table}").fetchone()[0])

    def _runs(self, sql: str, params: tuple, now: float) -> list[RunRow]:
        out = []
        for r in self.db.execute(sql, params):
            rid, command, argv, inventory, pid, hostname, started, heartbeat, finished, exit_code = r
            out.append(RunRow(rid, command, tuple(json.loads(argv)), inventory, pid, hostname, started,
                              heartbeat, finished, exit_code,
                              run_alive(pid, hostname, heartbeat, finished, now, started)))
        return out

    # --- compaction ---

    def compact(self, now: float | None = None, *, history: int = HISTORY_PER_TARGET,
                samples_kept: int = SAMPLES_KEPT, thin_after: float = THIN_AFTER) -> CompactStats:
        """Close dead runs, thin old samples, keep the newest ``history`` results per (job, target)."""
        at = time.time() if now is None else now
        db = self.db
        with self.transaction():
            closed = self._close_dead_runs(at)
            # thin: keep samples_kept evenly spaced samples of transfers finished long enough ago
            samples_deleted = 0
            rows = db.execute(
                "SELECT s.transfer_id, COUNT(*) FROM samples s JOIN transfers t ON t.id = s.transfer_id "
                "WHERE t.finished IS NOT NULL AND t.finished < ? GROUP BY s.transfer_id HAVING COUNT(*) > ?",
                (at - thin_after, samples_kept)).fetchall()
            for transfer_id, n in rows:
                rowids = [r[0] for r in db.execute(
                    "SELECT rowid FROM samples WHERE transfer_id = ? ORDER BY at", (transfer_id,))]
                keep = {rowids[round(i * (n - 1) / (samples_kept - 1))] for i in range(samples_kept)}
                drop = [(r,) for r in rowids if r not in keep]
                db.executemany("DELETE FROM samples WHERE rowid = ?", drop)
                samples_deleted += len(drop)
            # history: the newest `history` finished tasks per (job, target)
            cur = db.execute(
                "DELETE FROM tasks WHERE id IN ("
                "  SELECT id FROM (SELECT id, ROW_NUMBER() OVER ("
                "    PARTITION BY job, target ORDER BY finished DESC, id DESC) AS n "
                "    FROM tasks WHERE finished IS NOT NULL) WHERE n > ?)", (history,))
            tasks_deleted = cur.rowcount
            db.execute("DELETE FROM transfers WHERE task_id IS NULL AND finished IS NOT NULL "
                       "AND run_id NOT IN (SELECT run_id FROM tasks)")
            cur = db.execute("DELETE FROM runs WHERE finished IS NOT NULL AND id NOT IN "
                             "(SELECT run_id FROM tasks) AND id NOT IN ("
                             "  SELECT id FROM runs ORDER BY started DESC LIMIT ?)", (history,))
            runs_deleted = cur.rowcount
            db.execute("INSERT OR REPLACE INTO meta(key, value) VALUES ('compacted', ?)", (repr(at),))
        return CompactStats(samples_deleted, tasks_deleted, runs_deleted, closed)

    def close_dead_runs(self, now: float | None = None) -> int:
        """Write down the runs whose process is gone as abandoned (what ``view`` already shows)."""
        with self.transaction():
            return self._close_dead_runs(time.time() if now is None else now)

    def _close_dead_runs(self, at: float) -> int:
        closed = 0
        for run in self._runs("SELECT * FROM runs WHERE finished IS NULL", (), at):
            if not run.alive:
                _close_run(self.db, run.id, run.heartbeat, None,
                           abandoned_message(run.pid, run.hostname, run.heartbeat), ABANDONED,
                           _target_host)
                closed += 1
        return closed

    def last_compacted(self) -> float:
        row = self.db.execute("SELECT value FROM meta WHERE key = 'compacted'").fetchone()
        return float(row[0]) if row else 0.0


class _Transaction:
    def __init__(self, db: sqlite3.Connection) -> None:
        self.db = db

    def __enter__(self) -> sqlite3.Connection:
        self.db.execute("BEGIN IMMEDIATE")
        return self.db

    def __exit__(self, et: type[BaseException] | None, ev: BaseException | None,
                 tb: TracebackType | None) -> None:
        if et is None:
            self.db.execute("COMMIT")
        else:
            self.db.execute("ROLLBACK")


def _task(r: Sequence, pid: int | None = None) -> TaskRow:
    (tid, run_id, job, source, target, started, finished, plan_kind, plan_summary, _commands, outcome,
     message, nbytes, seconds, failed_host) = r
    return TaskRow(tid, run_id, job, source, target, started, finished, plan_kind, plan_summary, outcome,
                   message or "", nbytes or 0, seconds or 0.0, failed_host, pid)


def _target_host(source: str, target: str) -> str | None:
    """The host an abandoned task was writing to: the target's, or the source's for ``s3:NAME``."""
    where = source if target.startswith("s3:") else target
    host, sep, _ = where.partition(":")
    return host if sep else None


def _abandoned(task: TaskRow, run: RunRow) -> TaskRow:
    """A task left open by a run whose process is gone, as it reads once written down."""
    return replace(task, finished=run.heartbeat, outcome=ABANDONED,
                   message=abandoned_message(run.pid, run.hostname, run.heartbeat),
                   failed_host=_target_host(task.source, task.target), pid=run.pid)


def _transfer(r: Sequence, run: RunRow | None) -> TransferRow:
    (tid, run_id, _task_id, job, target, stream, source_host, target_host, estimate, done, rate, started,
     updated, finished, ok) = r
    return TransferRow(tid, run_id, job, target, stream, source_host, target_host, estimate, done, rate,
                       started, updated, finished, None if ok is None else bool(ok),
                       pid=run.pid if run else 0, command=run.command if run else "")


def _close_run(db: sqlite3.Connection, run_id: int, at: float, exit_code: int | None, message: str,
               outcome: str = Outcome.FAILED.value,
               blame: Callable[[str, str], str | None] = lambda _source, _target: None) -> None:
    """Finish a run and whatever it left open: open transfers failed, open tasks ``outcome``."""
    db.execute("UPDATE transfers SET finished = ?, ok = 0 WHERE run_id = ? AND finished IS NULL", (at, run_id))
    open_tasks = db.execute("SELECT id, job, source, target FROM tasks WHERE run_id = ? AND finished IS NULL",
                            (run_id,)).fetchall()
    for tid, job, source, target in open_tasks:
        db.execute("UPDATE tasks SET finished = ?, outcome = ?, message = ?, failed_host = ? WHERE id = ?",
                   (at, outcome, message, blame(source, target), tid))
        _bump_totals(db, job, target, outcome, 0, at)
    db.execute("UPDATE runs SET finished = ?, exit_code = ? WHERE id = ?", (at, exit_code, run_id))


def _bump_totals(db: sqlite3.Connection, job: str, target: str, outcome: str, nbytes: int, at: float) -> None:
    success = outcome in (Outcome.OK.value, Outcome.NOOP.value)
    failure = outcome in (Outcome.FAILED.value, Outcome.REFUSED.value, ABANDONED)
    db.execute(
        "INSERT INTO totals(job, target, bytes, runs, failures, last_run, last_outcome, last_success) "
        "VALUES (?,?,?,?,?,?,?,?) ON CONFLICT(job, target) DO UPDATE SET "
        "bytes = bytes + excluded.bytes, runs = runs + 1, failures = failures + excluded.failures, "
        "last_run = excluded.last_run, last_outcome = excluded.last_outcome, "
        "last_success = COALESCE(excluded.last_success, last_success)",
        (job, target, nbytes, 1, int(failure), at, outcome, at if success else None))


# --- the recorder ------------------------------------------------------------------


@dataclass
class _Live:
    """The newest progress of one transfer, not yet written."""

    done: int
    estimate: int | None
    rate: float
    at: float
    sample: bool


class Recorder:
    """An EventSink that records one run into the store, in batches from a background thread.

    ``handle`` only appends to memory under a lock (microseconds), so it can be
    called from the event loop that moves the bytes. Writes never raise into
    the caller: a store that fails (disk full, locked for too long) is reported
    once on stderr and the run goes on unrecorded.
    """

    def __init__(self, path: Path, command: str, argv: Sequence[str] = (), *, inventory: str | None = None,
                 flush_interval: float = FLUSH_INTERVAL, clock: Callable[[], float] = time.time,
                 compact: bool = True, enabled: bool = True) -> None:
        self.path = Path(path)
        self.enabled = enabled
        self.command = command
        self.argv = list(argv)
        self.inventory = inventory
        self.flush_interval = flush_interval
        self.clock = clock
        self.compact_at_end = compact
        self.run_id = 0
        self.writes = 0               # transactions committed (for tests and figures)
        self.failed: str | None = None
        self._store: StateStore | None = None
        self._lock = threading.Lock()
        self._wake = threading.Condition(self._lock)
        self._ops: list[tuple] = []
        self._live: dict[tuple[str, str, str], _Live] = {}
        self._last_sample: dict[tuple[str, str, str], float] = {}
        self._urgent = False
        self._stop = False
        self._thread: threading.Thread | None = None
        self._transfer_ids: dict[tuple[str, str, str], int] = {}
        self._task_ids: dict[tuple[str, str], int] = {}
        self._exit_code: int | None = None

    # --- lifecycle ---

    def start(self) -> "Recorder":
        if not self.enabled:
            return self
        try:
            self._store = StateStore(self.path)
            self.run_id = self._store.start_run(self.command, self.argv, self.inventory, now=self.clock())
            self.writes += 1
            if self._store.close_dead_runs(self.clock()):   # abandoned runs, written down for good
                self.writes += 1
        except (StateError, sqlite3.Error, OSError) as exc:
            self._fail(exc)
            return self
        self._thread = threading.Thread(target=self._loop, name="zrelay-state", daemon=True)
        self._thread.start()
        return self

    def set_exit_code(self, code: int) -> None:
        self._exit_code = code

    def close(self, exit_code: int | None = None) -> None:
        """Write what is pending, close the run (and whatever it left open), compact now and then."""
        if exit_code is not None:
            self._exit_code = exit_code
        with self._wake:
            self._stop = True
            self._wake.notify()
        if self._thread is not None:
            self._thread.join()
            self._thread = None
        store = self._store
        if store is None:
            return
        try:
            self._flush()
            if self.failed is None:
                with store.transaction() as db:
                    _close_run(db, self.run_id, self.clock(), self._exit_code,
                               _interrupt_message(self._exit_code))
                self.writes += 1
                if self.compact_at_end and self.clock() - store.last_compacted() > COMPACT_EVERY:
                    store.compact(self.clock())
        except (sqlite3.Error, OSError) as exc:
            self._fail(exc)
        finally:
            store.close()
            self._store = None

    def __enter__(self) -> "Recorder":
        return self.start()

    def __exit__(self, et: type[BaseException] | None, ev: BaseException | None,
                 tb: TracebackType | None) -> None:
        if et is not None and self._exit_code is None:
            self._exit_code = _interrupt_exit_code() if issubclass(et, KeyboardInterrupt) else 1
        self.close()

    # --- the sink ---

    def handle(self, event: Event) -> None:
        """EventSink: remember the event; the background thread writes it soon."""
        if self._store is None:
            return
        now = self.clock()
        with self._wake:
            if isinstance(event, TransferProgress):
                key = (event.job, event.target, event.stream)
                last = self._last_sample.get(key, 0.0)
                sample = now - last >= SAMPLE_INTERVAL
                if sample:
                    self._last_sample[key] = now
                prev = self._live.get(key)
                self._live[key] = _Live(event.done, event.estimate, event.rate, now,
                                        sample or (prev.sample if prev else False))
                return
            if isinstance(event, TransferFinished):
                key = (event.job, event.target, event.stream)
                self._live.pop(key, None)
                self._last_sample.pop(key, None)
            self._ops.append((event, now))
            self._urgent = True
            self._wake.notify()

    # --- the writer thread ---

    def _loop(self) -> None:
        last_write = 0.0
        last_beat = time.monotonic()
        while True:
            with self._wake:
                if not self._stop:
                    self._wake.wait(self.flush_interval if not self._urgent else
                                    max(0.0, MIN_FLUSH_GAP - (time.monotonic() - last_write)))
                stop = self._stop
            if stop:
                return
            mono = time.monotonic()
            if mono - last_write < MIN_FLUSH_GAP:
                continue
            pending = bool(self._ops or self._live)
            if pending or mono - last_beat >= HEARTBEAT_INTERVAL:
                self._flush()
                last_write = last_beat = time.monotonic()

    def _flush(self) -> None:
        store = self._store
        if store is None or self.failed is not None:
            return
        with self._wake:
            ops, self._ops = self._ops, []
            live, self._live = self._live, {}
            self._urgent = False
        try:
            with store.transaction() as db:
                for event, at in ops:
                    self._apply(db, event, at)
                for key, p in live.items():
                    tid = self._transfer_ids.get(key)
                    if tid is None:
                        continue
                    db.execute("UPDATE transfers SET done = ?, rate = ?, estimate = COALESCE(?, estimate), "
                               "updated = ? WHERE id = ?", (p.done, p.rate, p.estimate, p.at, tid))
                    if p.sample:
                        db.execute("INSERT INTO samples(transfer_id, at, done, rate) VALUES (?,?,?,?)",
                                   (tid, p.at, p.done, p.rate))
                db.execute("UPDATE runs SET heartbeat = ? WHERE id = ?", (self.clock(), self.run_id))
            self.writes += 1
        except (sqlite3.Error, OSError) as exc:
            self._fail(exc)

    def _apply(self, db: sqlite3.Connection, event: Event, at: float) -> None:
        if isinstance(event, JobStarted):
            cur = db.execute("INSERT INTO tasks(run_id, job, source, target, started) VALUES (?,?,?,?,?)",
                             (self.run_id, event.job, event.source, event.target, at))
            self._task_ids[(event.job, event.target)] = int(cur.lastrowid or 0)
        elif isinstance(event, JobPlanned):
            task = self._task_ids.get((event.job, event.target))
            if task is not None:
                db.execute("UPDATE tasks SET plan_kind = ?, plan_summary = ?, commands = ? WHERE id = ?",
                           (event.kind, event.summary, json.dumps([list(c) for c in event.commands]), task))
        elif isinstance(event, TransferStarted):
            key = (event.job, event.target, event.stream)
            cur = db.execute(
                "INSERT INTO transfers(run_id, task_id, job, target, stream, source_host, target_host, estimate, "
                "started, updated) VALUES (?,?,?,?,?,?,?,?,?,?)",
                (self.run_id, self._task_ids.get((event.job, event.target)), event.job, event.target,
                 event.stream, event.source_host, event.target_host, event.estimate, at, at))
            self._transfer_ids[key] = int(cur.lastrowid or 0)
        elif isinstance(event, TransferFinished):
            tid = self._transfer_ids.pop((event.job, event.target, event.stream), None)
            if tid is not None:
                rate = event.done / event.seconds if event.seconds > 0 else 0.0
                db.execute("UPDATE transfers SET done = ?, rate = ?, finished = ?, updated = ?, ok = ? "
                           "WHERE id = ?", (event.done, rate, at, at, int(event.ok), tid))
                db.execute("INSERT INTO samples(transfer_id, at, done, rate) VALUES (?,?,?,?)",
                           (tid, at, event.done, rate))
        elif isinstance(event, JobFinished):
            task = self._task_ids.pop((event.job, event.target), None)
            outcome = event.outcome.value if isinstance(event.outcome, Outcome) else str(event.outcome)
            if task is None:  # finished without a start (e.g. the source snapshot failed)
                cur = db.execute("INSERT INTO tasks(run_id, job, source, target, started) VALUES (?,?,?,?,?)",
                                 (self.run_id, event.job, event.source, event.target, at))
                task = int(cur.lastrowid or 0)
            db.execute("UPDATE tasks SET finished = ?, outcome = ?, message = ?, bytes = ?, seconds = ?, "
                       "failed_host = ? WHERE id = ?",
                       (at, outcome, event.message, event.bytes, event.seconds, event.failed_host, task))
            _bump_totals(db, event.job, event.target, outcome, event.bytes, at)

    def _fail(self, exc: BaseException) -> None:
        if self.failed is None:
            self.failed = str(exc)
            print(f"zrelay: warning: not recording this run in the state store {self.path}: {exc}",
                  file=sys.stderr)


def fanout(*sinks: EventSink) -> EventSink:
    """One EventSink that hands every event to each of ``sinks`` in order."""
    def sink(event: Event) -> None:
        for s in sinks:
            s(event)
    return sink


def read_view(path: Path, now: float | None = None) -> StoreView:
    """The store's current picture, or an empty one when there is no store (yet)."""
    try:
        with StateStore(path, readonly=True) as store:
            return store.view(now)
    except (StateError, sqlite3.Error):
        return StoreView.empty() if now is None else StoreView(read_at=now)


__all__ = ["StateStore", "Recorder", "StoreView", "RunRow", "TaskRow", "TransferRow", "Totals", "CompactStats",
           "default_path", "fanout", "read_view", "run_alive"]


class TablesBeside:
    """Tables of another module (the daemon's, the drills') in the state store file: the run
    history's tables and WAL mode are made first, then ``schema``; one connection, one thread."""

    def __init__(self, path: Path, schema: str, *, readonly: bool = False) -> None:
        self.path = Path(path)
        if not readonly:
            StateStore(self.path).close()
        elif not self.path.exists():
            raise StateError(f"{self.path}: no state store yet")
        try:
            target = f"file:{self.path}?mode=ro" if readonly else str(self.path)
            self.db = sqlite3.connect(target, uri=readonly, timeout=BUSY_TIMEOUT_MS / 1000,
                                      isolation_level=None, check_same_thread=False)
            self.db.execute(f"PRAGMA busy_timeout={BUSY_TIMEOUT_MS}")
            if not readonly:
                self.db.executescript(schema)
        except sqlite3.Error as exc:
            raise StateError(f"{self.path}: {exc}") from exc

    def close(self) -> None:
        self.db.close()

    def __enter__(self) -> Self:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    def has_table(self, table: str) -> bool:
        """A read-only store made by an older zrelay may lack the table."""
        return self.db.execute("SELECT 1 FROM sqlite_master WHERE type='table' AND name=?",
                               (table,)).fetchone() is not None
