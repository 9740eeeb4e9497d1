"""The TUI attached to a running ``zrelay daemon``: its survey instead of SSH, its schedule, run-now.

Why attach: the daemon already lists every target on its own schedule (``survey_every``) over
its long-lived connections, and keeps that listing in the state store (zrelay.daemonstate). A
TUI that asked every host again would double the load on the fleet and show nothing the
survey does not. So while a daemon lives, the TUI's ``Querier`` is a ``SurveyQuerier``: every
answer comes from the survey, nothing connects, and a new survey (polled every
``DAEMON_POLL`` seconds, one small query) refreshes the matrix. Transfers still come from
the run history, as they do for any process's runs.

No textual here: the CLI decides whether to attach before textual loads.
"""

from __future__ import annotations

import math
import sqlite3
import threading
import time
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Mapping, Sequence

from rich.markup import escape
from rich.text import Text

from zrelay.daemonstate import DaemonInfo, DaemonStore, ScheduleRow
from zrelay.errors import StateError
from zrelay.inventory.model import Inventory, Job, Target
from zrelay.status.report import NOT_CHECKED, TargetReport, failed_report
from zrelay.status.survey import survey_report
from zrelay.tui.query import Deliver, Done
from zrelay.units import human_duration, human_seconds

#: Seconds between looks at the daemon's tables (its heartbeat, schedule, the survey's time).
DAEMON_POLL = 2.0
#: A target the TUI's inventory has and the daemon's last survey has not.
NOT_SURVEYED = ("not in the zrelay daemon's last survey (its inventory lacks this job or target, "
                "or it was added since; the next survey lists it)")
#: A request the daemon took without answering is reported after this many seconds.
ANSWER_WAIT = 5.0

Key = tuple[str, str]


def live_daemon(store_path: Path) -> DaemonInfo | None:
    """The daemon recorded in the state store at ``store_path`` when it is alive, else None
    (no store, no daemon, a stopped one, or a store that cannot be read)."""
    try:
        with DaemonStore(store_path, readonly=True) as store:
            info = store.daemon()
    except (StateError, sqlite3.Error):
        return None
    return info if info is not None and info.alive else None


def survey_time(store: DaemonStore) -> float | None:
    """When the stored survey was made, without reading its rows (they can be megabytes)."""
    try:
        row = store.db.execute("SELECT at FROM survey WHERE id=1").fetchone()
    except sqlite3.Error:   # no survey table yet
        return None
    return None if row is None else float(row[0])


@dataclass(frozen=True)
class DaemonView:
    """One look at the daemon's tables."""

    info: DaemonInfo | None
    schedule: tuple[ScheduleRow, ...] = ()
    survey_at: float | None = None
    requests: Mapping[int, tuple[float | None, str | None]] = field(default_factory=dict)  # id → (taken, answer)
    problem: str | None = None   # why the store could not be read


def read_daemon(store_path: Path, requests: Sequence[int] = ()) -> DaemonView:
    """The daemon, its schedule, the survey's time and the state of ``requests`` (run-now ids)."""
    try:
        with DaemonStore(store_path, readonly=True) as store:
            return DaemonView(store.daemon(), tuple(store.schedule()), survey_time(store),
                              {i: store.request_state(i) for i in requests})
    except (StateError, sqlite3.Error) as exc:
        return DaemonView(None, problem=str(exc))


def ask_run_now(store_path: Path, patterns: Sequence[str], kinds: Sequence[str] = ()) -> int:
    """Leave a run-now request for the daemon (it takes requests within about a second)."""
    with DaemonStore(store_path) as store:
        return store.request(patterns, kinds)


class SurveyQuerier:
    """Answers the app's queries from the daemon's last survey; nothing connects to a host.

    The survey is read (and its reports rebuilt) on a worker thread, only when its time
    changed, so a large fleet's survey never delays a keypress. A pair the survey lacks is
    "not checked" (``NOT_SURVEYED``); before the daemon's first survey there is no answer.
    """

    def __init__(self, store_path: Path, inventory: Inventory) -> None:
        self.store_path = Path(store_path)
        self.inventory = inventory
        self.at: float | None = None          # when the survey being served was made
        self.problem: str | None = None       # why the survey could not be read (the last time)
        self.reads = 0                        # surveys parsed (diagnostics, tests)
        self._reports: dict[Key, TargetReport] = {}
        self._lock = threading.Lock()
        self._pool = ThreadPoolExecutor(max_workers=1, thread_name_prefix="zrelay-tui-survey")

    def submit(self, pairs: Sequence[tuple[Job, Target]], deliver: Deliver, done: Done, full: bool) -> None:
        self._pool.submit(self._serve, list(pairs), deliver, done)

    def _serve(self, pairs: list[tuple[Job, Target]], deliver: Deliver, done: Done) -> None:
        try:
            self.load()
        except (StateError, sqlite3.Error) as exc:
            self.problem = f"cannot read the zrelay daemon's survey: {exc}"
        with self._lock:
            reports, at = self._reports, self.at
        try:
            for job, target in pairs:
                report = reports.get((job.name, str(target)))
                if report is None and at is not None:
                    report = failed_report(job, target, NOT_CHECKED, NOT_SURVEYED, at)
                if report is not None:
                    deliver(report)
        finally:
            done()

    def load(self) -> float | None:
        """Read the survey if it changed since the last read; its time (None: no survey yet)."""
        with DaemonStore(self.store_path, readonly=True) as store:
            at = survey_time(store)
            if at is None or at == self.at:
                return at
            got = store.survey()
        if got is None:
            return None
        at, rows = got
        pairs = {(j.name, str(t)): (j, t) for j in self.inventory.jobs for t in j.targets}
        reports: dict[Key, TargetReport] = {}
        problems: list[str] = []
        for data in rows:
            try:
                report = survey_report(data, self.inventory)
            except ValueError as exc:   # written by another version: say so in its cell
                problems.append(str(exc))
                pair = pairs.get((str(data.get("job")), str(data.get("target"))))
                if pair is not None:
                    reports[(pair[0].name, str(pair[1]))] = failed_report(pair[0], pair[1], "error", str(exc), at)
                continue
            if report is not None:
                reports[report.key] = report
        with self._lock:
            self._reports, self.at = reports, at
            self.problem = problems[0] if problems else None
            self.reads += 1
        return at

    def close(self) -> None:
        self._pool.shutdown(wait=False, cancel_futures=True)


# --- what the schedule view shows -------------------------------------------------------------

#: (key, label) or (key, label, width) as views.LiveTable takes them; the reason gets what is left.
SCHEDULE_FIXED = (("kind", "kind", 8), ("next", "next run", 8), ("last", "last run", 17))
SCHEDULE_TEXT_MAX = 24   # a cron line or "every 15m"; longer ones are clipped
_OUTCOME_STYLE = {"ok": "green", "noop": "green", "failed": "red", "refused": "bold red", "busy": "magenta",
                  "skipped": "dim"}


def next_run_text(row: ScheduleRow, now: float) -> str:
    """``running``, ``due``, ``in 4m12s``, or ``—`` (no next run: parked, or follows another run)."""
    if row.running:
        return "running"
    if row.next_at is None:
        return "—"
    left = math.ceil(row.next_at - now)
    if left <= 0:
        return "due"
    return f"in {left}s" if left < 10 else f"in {human_duration(left)}"


def last_run_text(history: Mapping[str, Any], now: float) -> Text:
    """``ok 3m ago``, ``failed ×3 40s ago``; ``—`` before the first run ends."""
    outcome, finished = history.get("last_outcome"), history.get("last_finished")
    if not outcome:
        return Text("—", style="dim")
    failures = int(history.get("failures") or 0)
    times = f" ×{failures}" if failures > 1 and outcome in ("failed", "busy") else ""
    ago = f" {human_seconds(max(0.0, now - float(finished)))} ago" if finished is not None else ""
    return Text(f"{outcome}{times}{ago}", style=_OUTCOME_STYLE.get(str(outcome), ""))


def schedule_order(rows: Sequence[ScheduleRow]) -> list[ScheduleRow]:
    """By next run: running first, then the soonest; rows without a next run last."""
    return sorted(rows, key=lambda r: (not r.running, r.next_at is None, r.next_at or 0.0, r.job, r.kind))


def schedule_key(row: ScheduleRow) -> str:
    return f"s:{row.kind}:{row.job}"


def clip(text: str, width: int) -> str:
    return text if len(text) <= width else text[:max(width - 1, 0)] + "…"


def schedule_columns(rows: Sequence[ScheduleRow], width: int) -> list[tuple[str, str, int]]:
    """Every column's width for a table ``width`` cells wide: job and schedule as wide as their
    longest value, the reason the rest (at least 12), so 80 columns read without scrolling."""
    job = max([len("job"), *(len(r.job) for r in rows)])
    text = min(SCHEDULE_TEXT_MAX, max([len("schedule"), *(len(r.schedule) for r in rows)]))
    used = sum(w + 2 for _k, _l, w in SCHEDULE_FIXED) + job + 2 + text + 2 + 2   # cell padding, scrollbar
    reason = max(12, width - used - 2)
    return [("job", "job", job), *SCHEDULE_FIXED, ("schedule", "schedule", text), ("reason", "reason", reason)]


def schedule_rows(rows: Sequence[ScheduleRow], now: float, columns: Sequence[tuple[str, str, int]],
                  filter_text: str = "") -> list[tuple[str, tuple[Text | str, ...]]]:
    """One table row per job and kind, by next run, each cell clipped to its column."""
    width = {key: w for key, _label, w in columns}
    needle = filter_text.lower()
    out: list[tuple[str, tuple[Text | str, ...]]] = []
    for row in schedule_order(rows):
        if needle and needle not in row.job.lower() and needle not in row.kind:
            continue
        nxt = next_run_text(row, now)
        style = "bold magenta" if row.running else ("yellow" if nxt == "due" else "")
        out.append((schedule_key(row), (
            Text(clip(row.job, width["job"]), style="bold"), row.kind, Text(nxt, style=style),
            last_run_text(row.history, now), clip(row.schedule, width["schedule"]),
            clip(row.reason, width["reason"]))))
    return out


def daemon_label(info: DaemonInfo | None, width: int) -> str:
    """The bar's first words: whom the TUI is attached to, shorter on a narrow terminal."""
    if info is None:
        return "attached to the zrelay daemon (not read yet)"
    inventory = Path(info.inventory).name
    if width >= 150:
        return f"attached to zrelay daemon pid {info.pid} (inventory {inventory})"
    if width >= 100:
        return f"attached to zrelay daemon pid {info.pid} ({inventory})"
    return f"daemon pid {info.pid}"


def daemon_summary(info: DaemonInfo | None, now: float, problem: str | None = None) -> str:
    """The schedule view's title (markup): which daemon, since when, its inventory and its last reload."""
    if info is None:
        return "[red]no zrelay daemon recorded in the state store[/red]" + (f": {escape(problem)}" if problem else "")
    where = f"pid {info.pid} on {escape(info.hostname)}"
    if not info.alive:
        since = info.stopped if info.stopped is not None else info.heartbeat
        head = (f"[red]the zrelay daemon ({where}) is not running[/red] (last seen "
                f"{human_seconds(max(0.0, now - since))} ago): its schedule as it left it")
    else:
        head = f"[b]zrelay daemon[/b] {where}, up {human_duration(max(0.0, now - info.started))}"
    loaded = f" (read {time.strftime('%H:%M:%S', time.localtime(info.loaded))})" if info.loaded else ""
    lines = [f"{head} · inventory {escape(info.inventory)}{loaded}"]
    if info.load_error:
        lines.append(f"[red]the newest inventory was refused; the one above stays:[/red] {escape(info.load_error)}")
    return "\n".join(lines)
