"""What the daemon shares with other processes, in the state store's SQLite file.

Why the state store and not a socket: ``status``, the TUI and ``run-now`` already open that
file, it survives a restart (the timetable's history is what makes missed runs run once, not
N times), and SQLite's WAL lets the daemon write while they read. Four tables beside the run
history of zrelay.state:

- ``daemon``: the one running daemon (pid, host, heartbeat, inventory, metrics address);
- ``schedule``: per job and kind, the next run and why, and the history the timetable needs;
- ``requests``: ``zrelay run-now`` asks, the daemon takes (within about a second);
- ``survey``: every target's status row as of the daemon's last listing (the TUI's matrix).

Plain stdlib like zrelay.state: no asyncio, no UI.
"""

from __future__ import annotations

import json
import os
import socket
import sqlite3
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Sequence

from zrelay.errors import StateError
from zrelay.state import STALE_AFTER, TablesBeside, run_alive

_SCHEMA = """
CREATE TABLE IF NOT EXISTS daemon(
    id INTEGER PRIMARY KEY CHECK (id = 1),
    pid INTEGER NOT NULL,
    hostname TEXT NOT NULL,
    started REAL NOT NULL,
    heartbeat REAL NOT NULL,
    stopped REAL,
    inventory TEXT NOT NULL,
    metrics TEXT,
    loaded REAL,
    load_error TEXT NOT NULL DEFAULT ''
);
CREATE TABLE IF NOT EXISTS schedule(
    job TEXT NOT NULL,
    kind TEXT NOT NULL,
    schedule TEXT NOT NULL,
    next_at REAL,
    reason TEXT NOT NULL,
    running INTEGER NOT NULL DEFAULT 0,
    history TEXT NOT NULL,
    PRIMARY KEY(job, kind)
);
CREATE TABLE IF NOT EXISTS requests(
    id INTEGER PRIMARY KEY,
    patterns TEXT NOT NULL,
    kinds TEXT NOT NULL,
    requested REAL NOT NULL,
    taken REAL,
    answer TEXT
);
CREATE TABLE IF NOT EXISTS survey(
    id INTEGER PRIMARY KEY CHECK (id = 1),
    at REAL NOT NULL,
    rows TEXT NOT NULL
);
"""

_HOSTNAME = socket.gethostname()


@dataclass(frozen=True)
class DaemonInfo:
    pid: int
    hostname: str
    started: float
    heartbeat: float
    stopped: float | None
    inventory: str
    metrics: str | None
    loaded: float | None
    load_error: str
    alive: bool


@dataclass(frozen=True)
class ScheduleRow:
    """One job's run of one kind: what the timetable says about it (``history``: its History fields)."""

    job: str
    kind: str
    schedule: str
    next_at: float | None
    reason: str
    running: bool
    history: dict[str, Any]


@dataclass(frozen=True)
class Request:
    id: int
    patterns: tuple[str, ...]
    kinds: tuple[str, ...]
    requested: float


class DaemonStore(TablesBeside):
    """The daemon's tables in the state store file; one connection, one thread."""

    def __init__(self, path: Path, *, readonly: bool = False) -> None:
        super().__init__(path, _SCHEMA, readonly=readonly)

    # --- the daemon itself ---------------------------------------------------------------

    def register(self, inventory: str, metrics: str | None, now: float | None = None) -> None:
        """Record this process as the daemon; refused (StateError) while another one lives."""
        at = time.time() if now is None else now
        with _immediate(self.db):
            other = self.daemon(at)
            if other is not None and other.alive and other.pid != os.getpid():
                raise StateError(f"a zrelay daemon already runs with {self.path} (pid {other.pid} on "
                                 f"{other.hostname}, inventory {other.inventory})")
            self.db.execute("INSERT OR REPLACE INTO daemon(id, pid, hostname, started, heartbeat, stopped, "
                            "inventory, metrics, loaded, load_error) VALUES (1,?,?,?,?,NULL,?,?,?,'')",
                            (os.getpid(), _HOSTNAME, at, at, inventory, metrics, at))

    def heartbeat(self, now: float | None = None) -> None:
        self.db.execute("UPDATE daemon SET heartbeat=? WHERE id=1 AND pid=?",
                        (time.time() if now is None else now, os.getpid()))

    def loaded(self, ok: bool, error: str = "", now: float | None = None) -> None:
        """An inventory (re)load: when the one in force was read, or why the newest was refused."""
        at = time.time() if now is None else now
        if ok:
            self.db.execute("UPDATE daemon SET loaded=?, load_error='' WHERE id=1", (at,))
        else:
            self.db.execute("UPDATE daemon SET load_error=? WHERE id=1", (error,))

    def stopped(self, now: float | None = None) -> None:
        self.db.execute("UPDATE daemon SET stopped=?, heartbeat=? WHERE id=1 AND pid=?",
                        (time.time() if now is None else now,) * 2 + (os.getpid(),))

    def daemon(self, now: float | None = None) -> DaemonInfo | None:
        """The daemon recorded here, and whether it is alive (heartbeat fresh, process there)."""
        if not self.has_table("daemon"):
            return None
        row = self.db.execute("SELECT pid, hostname, started, heartbeat, stopped, inventory, metrics, loaded, "
                              "load_error FROM daemon WHERE id=1").fetchone()
        if row is None:
            return None
        at = time.time() if now is None else now
        pid, hostname, started, heartbeat, stopped, inventory, metrics, loaded, load_error = row
        alive = run_alive(pid, hostname, heartbeat, stopped, at, started=started)
        return DaemonInfo(pid, hostname, started, heartbeat, stopped, inventory, metrics, loaded, load_error, alive)

    # --- the timetable -------------------------------------------------------------------

    def save_schedule(self, rows: Sequence[ScheduleRow]) -> None:
        """Replace the schedule with ``rows`` (a reload may drop jobs: their rows go)."""
        with _immediate(self.db):
            self.db.execute("DELETE FROM schedule")
            self.db.executemany(
                "INSERT INTO schedule(job, kind, schedule, next_at, reason, running, history) VALUES (?,?,?,?,?,?,?)",
                [(r.job, r.kind, r.schedule, r.next_at, r.reason, int(r.running), json.dumps(r.history))
                 for r in rows])

    def schedule(self) -> list[ScheduleRow]:
        if not self.has_table("schedule"):
            return []
        return [ScheduleRow(job, kind, text, next_at, reason, bool(running), json.loads(history))
                for job, kind, text, next_at, reason, running, history in self.db.execute(
                    "SELECT job, kind, schedule, next_at, reason, running, history FROM schedule "
                    "ORDER BY next_at IS NULL, next_at, job, kind")]

    def histories(self) -> dict[tuple[str, str], dict[str, Any]]:
        """The history saved per (job, kind): a restarted daemon goes on from it."""
        if not self.has_table("schedule"):
            return {}
        return {(job, kind): json.loads(history)
                for job, kind, history in self.db.execute("SELECT job, kind, history FROM schedule")}

    # --- run-now -------------------------------------------------------------------------

    def request(self, patterns: Sequence[str], kinds: Sequence[str], now: float | None = None) -> int:
        cur = self.db.execute("INSERT INTO requests(patterns, kinds, requested) VALUES (?,?,?)",
                              (json.dumps(list(patterns)), json.dumps(list(kinds)),
                               time.time() if now is None else now))
        return int(cur.lastrowid or 0)

    def take_requests(self, now: float | None = None) -> list[Request]:
        """The requests not taken yet, marked taken (each is served once)."""
        at = time.time() if now is None else now
        with _immediate(self.db):
            rows = self.db.execute("SELECT id, patterns, kinds, requested FROM requests WHERE taken IS NULL "
                                   "ORDER BY id").fetchall()
            if rows:
                self.db.execute("UPDATE requests SET taken=? WHERE taken IS NULL", (at,))
            self.db.execute("DELETE FROM requests WHERE taken IS NOT NULL AND taken < ?", (at - 86400,))
        return [Request(i, tuple(json.loads(p)), tuple(json.loads(k)), r) for i, p, k, r in rows]

    def answer(self, request_id: int, text: str) -> None:
        self.db.execute("UPDATE requests SET answer=? WHERE id=?", (text, request_id))

    def request_state(self, request_id: int) -> tuple[float | None, str | None]:
        """(taken, answer) of a request: run-now waits for the daemon to take it."""
        row = self.db.execute("SELECT taken, answer FROM requests WHERE id=?", (request_id,)).fetchone()
        return (None, None) if row is None else (row[0], row[1])

    # --- the survey ----------------------------------------------------------------------

    def save_survey(self, rows: Sequence[dict[str, Any]], now: float | None = None) -> None:
        self.db.execute("INSERT OR REPLACE INTO survey(id, at, rows) VALUES (1,?,?)",
                        (time.time() if now is None else now, json.dumps(list(rows))))

    def survey(self) -> tuple[float, list[dict[str, Any]]] | None:
        """(when, status rows as ``status --json`` writes them) of the daemon's last listing."""
        if not self.has_table("survey"):
            return None
        row = self.db.execute("SELECT at, rows FROM survey WHERE id=1").fetchone()
        return None if row is None else (row[0], json.loads(row[1]))


class _immediate:
    """``BEGIN IMMEDIATE`` … ``COMMIT`` (or ROLLBACK on an exception)."""

    def __init__(self, db: sqlite3.Connection) -> None:
        self.db = db

    def __enter__(self) -> None:
        self.db.execute("BEGIN IMMEDIATE")

    def __exit__(self, et: object, ev: object, tb: object) -> None:
        self.db.execute("COMMIT" if et is None else "ROLLBACK")


__all__ = ["DaemonInfo", "DaemonStore", "Request", "ScheduleRow", "STALE_AFTER"]
