"""Restore drills' evidence, in the state store's SQLite file: one row per drill.

Why the state store: ``status`` and the daemon already read that file, and a drill's
evidence (what was restored from where, when, and what was compared) must outlive the
process that ran it. Plain stdlib like zrelay.state: no asyncio, no UI.
"""

from __future__ import annotations

import json
import sqlite3
from pathlib import Path
from typing import Any, Iterable

from zrelay.drill import FAILED, MISMATCH, OK, RESULTS, Evidence
from zrelay.errors import StateError
from zrelay.state import TablesBeside

_SCHEMA = """
CREATE TABLE IF NOT EXISTS drills(
    id INTEGER PRIMARY KEY,
    job TEXT NOT NULL,
    copy TEXT NOT NULL,
    source TEXT NOT NULL,
    snapshot TEXT NOT NULL,
    guid TEXT,                  -- 64 bits unsigned: more than an SQLite INTEGER holds
    started REAL NOT NULL,
    finished REAL,
    result TEXT NOT NULL CHECK (result IN ('ok', 'mismatch', 'failed')),
    message TEXT NOT NULL DEFAULT '',
    detail TEXT NOT NULL DEFAULT '{}'
);
CREATE INDEX IF NOT EXISTS drills_by_copy ON drills(job, copy, started);
"""

#: Drills kept per job and copy (the newest); older evidence is dropped when a drill is recorded.
KEEP_PER_COPY = 200

_COLUMNS = ("id", "job", "copy", "source", "snapshot", "guid", "started", "finished", "result", "message", "detail")


class DrillStore(TablesBeside):
    """The ``drills`` table of the state store file; one connection, one thread."""

    def __init__(self, path: Path, *, readonly: bool = False) -> None:
        super().__init__(path, _SCHEMA, readonly=readonly)

    def record(self, job: str, copy: str, source: str, snapshot: str, guid: int | None, started: float,
               finished: float | None, result: str, message: str, detail: dict[str, Any]) -> int:
        """Add one drill's evidence; keeps the newest KEEP_PER_COPY per job and copy, and every
        drill of this one's round (a recursive job's tree, however many datasets it has)."""
        begun = detail.get("round")
        keep_from = float(begun) if isinstance(begun, (int, float)) and not isinstance(begun, bool) else started
        try:
            self.db.execute("BEGIN IMMEDIATE")
            try:
                cur = self.db.execute(
                    "INSERT INTO drills(job, copy, source, snapshot, guid, started, finished, result, message, "
                    "detail) VALUES (?,?,?,?,?,?,?,?,?,?)",
                    (job, copy, source, snapshot, None if guid is None else str(guid), started, finished, result, message,
                     json.dumps(detail, sort_keys=True)))
                self.db.execute("DELETE FROM drills WHERE job=? AND copy=? AND started < ? AND id NOT IN ("
                                "SELECT id FROM drills WHERE job=? AND copy=? ORDER BY started DESC, id DESC "
                                "LIMIT ?)", (job, copy, keep_from, job, copy, KEEP_PER_COPY))
            except BaseException:
                self.db.execute("ROLLBACK")
                raise
            self.db.execute("COMMIT")
        except sqlite3.Error as exc:
            raise StateError(f"{self.path}: {exc}") from exc
        return int(cur.lastrowid or 0)

    def record_all(self, evidence: Iterable[Evidence]) -> int:
        """Record each drill that ran to a result (a busy one drilled nothing); how many were."""
        done = 0
        for ev in evidence:
            if ev.result in RESULTS:
                self.record(ev.job, ev.copy, ev.source, ev.snapshot, ev.source_guid, ev.started, ev.finished,
                            ev.result, ev.message, ev.detail)
                done += 1
        return done

    def drills(self, job: str | None = None, copy: str | None = None, limit: int = 50) -> list[dict[str, Any]]:
        """The newest drills (of ``job`` → ``copy`` when given), newest first."""
        if not self.has_table("drills"):
            return []
        clauses, params = [], []
        for column, value in (("job", job), ("copy", copy)):
            if value is not None:
                clauses.append(f"{column} = ?")
                params.append(value)
        where = f"WHERE {' AND '.join(clauses)} " if clauses else ""
        rows = self.db.execute(f"SELECT {', '.join(_COLUMNS)} FROM drills {where}"
                               "ORDER BY started DESC, id DESC LIMIT ?", (*params, limit))
        return [_row(r) for r in rows]

    def last(self) -> dict[tuple[str, str], dict[str, Any]]:
        """The newest drill per (job, copy): what ``status`` shows. A recursive job's copy is drilled
        dataset by dataset in one round: its newest round counts as one drill, as bad as its worst
        dataset (named in the message), ended when its last dataset ended."""
        if not self.has_table("drills"):
            return {}
        rows = self.db.execute(
            f"SELECT {', '.join('d.' + c for c in _COLUMNS)} FROM drills d JOIN ("
            "  SELECT job, copy, MAX(started) AS s FROM drills GROUP BY job, copy) m "
            "ON d.job = m.job AND d.copy = m.copy AND d.started = m.s ORDER BY d.id")
        out: dict[tuple[str, str], dict[str, Any]] = {}
        for newest in map(_row, rows):
            key = (newest["job"], newest["copy"])
            begun = newest["detail"].get("round")
            if not isinstance(begun, (int, float)) or begun >= newest["started"]:
                out[key] = newest
                continue
            same = [r for r in map(_row, self.db.execute(
                f"SELECT {', '.join(_COLUMNS)} FROM drills WHERE job = ? AND copy = ? AND started >= ? "
                "ORDER BY started, id", (*key, begun))) if r["detail"].get("round") == begun]
            out[key] = round_row(same or [newest])
        return out


_WORST = (MISMATCH, FAILED, OK)


def round_row(rows: list[dict[str, Any]]) -> dict[str, Any]:
    """The drills of one round (a recursive job's datasets, oldest first) as one: the first
    dataset's snapshot, the worst result and why (naming the dataset), the last end."""
    worst = min(rows, key=lambda r: _WORST.index(r["result"]) if r["result"] in _WORST else 0)
    combined = dict(rows[0])
    finished = [r["finished"] for r in rows if r["finished"] is not None]
    combined["finished"] = max(finished) if len(finished) == len(rows) else None
    combined["result"] = worst["result"]
    if worst["result"] == OK:
        combined["message"] = (f"{len(rows)} datasets: each GUID and tree sha256 equals the source's"
                               if len(rows) > 1 else worst["message"])
    else:
        bad = sum(1 for r in rows if r["result"] != OK)
        combined["message"] = (f"{worst['source']}: {worst['message']}"
                               + (f" ({bad} of {len(rows)} datasets not ok)" if len(rows) > 1 else ""))
    return combined


def _row(r: tuple[Any, ...]) -> dict[str, Any]:
    row = dict(zip(_COLUMNS, r))
    row["guid"] = int(row["guid"]) if row["guid"] else None
    try:
        row["detail"] = json.loads(row["detail"] or "{}")
    except ValueError:
        row["detail"] = {}
    return row


def last_drills(path: Path) -> dict[tuple[str, str], dict[str, Any]]:
    """The newest drill per (job, copy) in the store at ``path``; {} when there is none yet."""
    if not Path(path).exists():
        return {}
    try:
        with DrillStore(path, readonly=True) as store:
            return store.last()
    except (StateError, sqlite3.Error):
        return {}


__all__ = ["DrillStore", "KEEP_PER_COPY", "last_drills"]
