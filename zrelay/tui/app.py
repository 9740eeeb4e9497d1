"""``zrelay tui``: the fleet at a glance, live.

Two feeds, neither on the UI thread:

* the state store, polled every ``poll_interval`` seconds by a thread worker:
  transfers of every process (cron's ``zrelay sync`` too), last results, errors;
* status queries of every host, on their own loop (``query.ThreadedQuerier``):
  cells fill in as hosts answer, an unreachable host only ever makes its own
  cells say so. Every host is asked again every ``refresh_interval`` seconds
  (a snapshot taken by cron or sanoid shows up without a key press), as soon as
  the store says that any run ended (any process's), and on ``r``. The bar says
  how old the oldest answer on screen is ("as of HH:MM:SS") and when a refresh
  is under way.

Redraws are throttled to ``UI_INTERVAL`` and only touch cells whose text
changed. ``s`` / ``p`` run ``zrelay sync`` / ``zrelay s3-push`` as separate
processes, which record into the same store: the UI shows their progress the
same way it shows anybody else's.

Attached to a running ``zrelay daemon`` (zrelay.tui.attach), the hosts are not asked: the
querier serves the daemon's last survey, re-read when the daemon makes a new one; a Schedule
tab lists its timetable, and ``n`` asks it to run the selected job now.
"""

from __future__ import annotations

import asyncio
import os
import sys
import tempfile
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Callable, Sequence

from rich.markup import escape
from textual.app import App, ComposeResult
from textual.binding import Binding
from textual.containers import Horizontal
from textual.css.query import NoMatches
from textual.message import Message
from textual.notifications import SeverityLevel
from textual.timer import Timer
from textual.widgets import DataTable, Footer, Input, Static, TabbedContent, TabPane

from zrelay.daemonstate import DaemonInfo
from zrelay.errors import EXIT_BUSY, ZrelayError
from zrelay.inventory.model import Inventory, Job, Target
from zrelay.state import StoreView, TransferRow, read_view
from zrelay.status.lifecycle import lifecycle_label
from zrelay.status.report import TargetReport, targets_of
from zrelay.tui.attach import (DAEMON_POLL, ANSWER_WAIT, DaemonView, SurveyQuerier, ask_run_now, daemon_label,
                               daemon_summary, read_daemon, schedule_columns, schedule_key, schedule_rows)
from zrelay.tui.detail import detail_for
from zrelay.tui.model import (HOST_COLUMNS, Key, Matrix, build_matrix, clip, detail_columns, detail_rows,
                              host_rows, host_states, plural)
from zrelay.tui.query import Querier, ThreadedQuerier
from zrelay.tui.views import Column, DetailView, HelpScreen, HostsView, MatrixView, ScheduleView

POLL_INTERVAL = 0.5   # s between store reads
UI_INTERVAL = 0.25    # s: at most four redraws per second, however fast data arrives
REFRESH_INTERVAL = 60.0  # s between refreshes of every host (``zrelay tui --refresh``)
NO_S3_TARGET = "S3 push: no S3 target"  # the footer's reason when `p` has nothing to push
TABS = ("hosts", "matrix", "detail", "schedule")   # the schedule only when attached to the daemon


class ReportReady(Message):
    def __init__(self, report: TargetReport, seq: int) -> None:
        super().__init__()
        self.report = report
        self.seq = seq


class QueriesDone(Message):
    def __init__(self, seq: int) -> None:
        super().__init__()
        self.seq = seq


class StoreRead(Message):
    def __init__(self, view: StoreView) -> None:
        super().__init__()
        self.view = view


class DaemonRead(Message):
    def __init__(self, view: DaemonView) -> None:
        super().__init__()
        self.view = view


@dataclass
class RunNow:
    """A run-now request left for the daemon, until its answer was shown."""

    pattern: str
    asked: float
    taken: float | None = None


@dataclass
class Launched:
    """A ``zrelay`` process started from the UI."""

    command: str
    pattern: str
    pid: int
    returncode: int | None = None
    output: str = ""


def _same(a: StoreView, b: StoreView) -> bool:
    return (a.active == b.active and a.last_results == b.last_results and a.host_errors == b.host_errors
            and a.totals == b.totals and a.last_run_end == b.last_run_end)


def clock_time(at: float) -> str:
    """HH:MM:SS of ``at`` in local time: what the user's clock on the wall says."""
    return time.strftime("%H:%M:%S", time.localtime(at))


class ZrelayApp(App[None]):
    """Hosts, divergence matrix, dataset detail; see the module docstring for the data flow."""

    CSS_PATH = "app.tcss"
    TITLE = "zrelay"
    BINDINGS = [
        Binding("r", "refresh", "Refresh"),
        Binding("s", "sync", "Sync"),
        Binding("p", "push", "S3 push"),
        # shown greyed out, instead of the one above, where the selected job has no S3 target
        Binding("p", "push_unavailable", NO_S3_TARGET),
        Binding("n", "run_now", "Run now"),   # only attached to the daemon
        Binding("slash", "filter", "Filter"),
        Binding("question_mark", "help", "Help"),
        Binding("q", "quit", "Quit"),
        Binding("1", "show_tab('hosts')", "Hosts", show=False),
        Binding("2", "show_tab('matrix')", "Matrix", show=False),
        Binding("3", "show_tab('detail')", "Detail", show=False),
        Binding("4", "show_tab('schedule')", "Schedule", show=False),
        Binding("escape", "escape", "Back", show=False),
    ]

    def __init__(self, inventory: Inventory, jobs: Sequence[Job] | None = None, *, store_path: Path,
                 clock: Callable[[], float] = time.time, querier: Querier | None = None,
                 store_reader: Callable[[], StoreView] | None = None, poll_interval: float = POLL_INTERVAL,
                 refresh_interval: float | None = REFRESH_INTERVAL,
                 command_prefix: Sequence[str] | None = None, attach: DaemonInfo | None = None,
                 daemon_reader: Callable[[Sequence[int]], DaemonView] | None = None,
                 daemon_interval: float = DAEMON_POLL) -> None:
        super().__init__()
        self.inventory = inventory
        self.jobs = list(inventory.jobs if jobs is None else jobs)
        self.pairs: list[tuple[Job, Target]] = targets_of(self.jobs)
        self.store_path = Path(store_path)
        self.clock = clock
        # attached: the daemon's survey answers instead of the hosts (zrelay.tui.attach)
        self.daemon_info = attach
        self.survey: SurveyQuerier | None = None
        if attach is not None and querier is None:
            querier = self.survey = SurveyQuerier(self.store_path, inventory)
        elif isinstance(querier, SurveyQuerier):
            self.survey = querier
        self.querier: Querier = querier if querier is not None else ThreadedQuerier(inventory)
        self.daemon_reader = daemon_reader or (lambda ids: read_daemon(self.store_path, ids))
        self.daemon_interval = daemon_interval
        self.daemon_view: DaemonView | None = None
        self.daemon_reads = 0
        self.run_now_requests: dict[int, RunNow] = {}   # asked, answer not shown yet
        self._survey_seen: float | None = None
        self._daemon_busy = False
        self.store_reader = store_reader or (lambda: read_view(self.store_path))
        self.poll_interval = poll_interval
        self.refresh_interval = refresh_interval or None  # None or 0: only on r and when a run ends
        self.command_prefix = list(command_prefix or [sys.executable, "-m", "zrelay"])
        self.view = StoreView(read_at=0.0)
        self.reports: dict[Key, TargetReport] = {}
        self.pending: set[Key] = set()
        self.filter_text = ""
        self.detail_source: str | None = None
        self.detail_job: str | None = None
        self.launched: dict[int, Launched] = {}
        self.finished: list[Launched] = []
        self.notices: list[tuple[str, str, str]] = []  # (severity, title, message): what the user was told
        self.matrix: Matrix = build_matrix(self.jobs, {}, self.view)
        self._requested: dict[Key, int] = {}
        self._seq = 0
        self._asked_at: dict[int, float] = {}    # request → when it was made (the app's clock)
        self._fresh: dict[Key, float] = {}       # pair → when the answer on screen was asked for
        self._full_seq: int | None = None        # the newest refresh of every pair
        self._refresh_due = False                # a run ended while a full refresh was under way
        self._refresh_timer: Timer | None = None
        self.full_refreshes = 0                  # how many times every host was asked (diagnostics, tests)
        self._push_shown: str | None = None      # the `p` reason the footer shows now
        self._dirty = True
        self._store_busy = False
        self.store_reads = 0
        self.created_at = time.perf_counter()
        self.first_paint_seconds: float | None = None  # app created → first frame out (diagnostics, tests)

    # --- layout ---

    def compose(self) -> ComposeResult:
        with Horizontal(id="bar"):
            yield Static(id="bar-main")
            yield Static(id="bar-fresh")
        with TabbedContent(initial="hosts", id="tabs"):
            with TabPane("Hosts", id="hosts"):
                yield HostsView()
            with TabPane("Matrix", id="matrix"):
                yield MatrixView()
            with TabPane("Detail", id="detail"):
                yield DetailView()
            if self.attached:
                with TabPane("Schedule", id="schedule"):
                    yield ScheduleView()
        yield Input(placeholder="filter hosts and datasets (Enter keeps it, Esc clears)", id="filter")
        yield Footer(show_command_palette=False)  # its 14 columns go to the keys (Ctrl+P still opens it)

    def on_mount(self) -> None:
        self.pending = {(j.name, str(t)) for j, t in self.pairs}
        self.redraw()
        self.set_interval(self.poll_interval, self.poll_store)
        self.set_interval(UI_INTERVAL, self._tick)
        if self.refresh_interval:
            self._refresh_timer = self.set_interval(self.refresh_interval, self._timed_refresh)
        self.poll_store()
        if self.attached:
            self.set_interval(self.daemon_interval, self.poll_daemon)
            self.poll_daemon()
        self.call_after_refresh(self._first_frame)
        self.query_one(HostsView).table.focus()

    def _first_frame(self) -> None:
        """Hosts are asked only once the first frame is out: a slow fleet never delays it."""
        self.first_paint_seconds = time.perf_counter() - self.created_at
        self.refresh_all()

    def on_unmount(self) -> None:
        self.querier.close()

    # --- feeds ---

    def poll_store(self) -> None:
        if self._store_busy:
            return
        self._store_busy = True
        self.run_worker(self._read_store, thread=True, group="store", exit_on_error=False)

    def _read_store(self) -> None:
        try:
            view = self.store_reader()
        except Exception:
            view = self.view
        self.post_message(StoreRead(view))

    def on_store_read(self, message: StoreRead) -> None:
        self._store_busy = False
        self.store_reads += 1
        old, new = self.view, message.view
        self.view = new
        if _same(old, new):
            return
        self._dirty = True
        if old.read_at <= 0:
            return  # the first read: the first refresh is asking every host anyway
        if new.last_run_end is not None and new.last_run_end != old.last_run_end:
            # a run ended (any process's: cron's sync, a colleague's push): ask every host again
            if not self.full_refresh_running():
                self.refresh_all()
                return
            self._refresh_due = True  # once the refresh under way is in (it may have asked before the run ended)
        # a job finished within a run that goes on: ask the hosts about that job now
        ours = {(j.name, str(t)): (j, t) for j, t in self.pairs}
        changed = [ours[k] for k, task in new.last_results.items()
                   if k in ours and (old.last_results.get(k) is None or old.last_results[k].id != task.id)]
        if changed:
            self.ask_hosts(changed, full=False)

    @property
    def attached(self) -> bool:
        """Whether the TUI serves the daemon's survey (and shows its schedule) instead of asking hosts."""
        return self.daemon_info is not None

    def poll_daemon(self) -> None:
        if self._daemon_busy:
            return
        self._daemon_busy = True
        self.run_worker(self._read_daemon, thread=True, group="daemon", exit_on_error=False)

    def _read_daemon(self) -> None:
        try:
            view = self.daemon_reader(list(self.run_now_requests))
        except Exception as exc:  # a reader's bug must not end the app: the bar says it
            view = DaemonView(self.daemon_info, problem=f"{type(exc).__name__}: {exc}")
        self.post_message(DaemonRead(view))

    def on_daemon_read(self, message: DaemonRead) -> None:
        """A look at the daemon: a new survey refreshes the matrix; run-now answers are told."""
        self._daemon_busy = False
        self.daemon_reads += 1
        view = self.daemon_view = message.view
        if view.info is not None:
            self.daemon_info = view.info
        self._dirty = True
        if view.survey_at is not None and view.survey_at != self._survey_seen:
            self._survey_seen = view.survey_at
            if self.full_refreshes and (self.survey is None or self.survey.at != view.survey_at):
                self.refresh_all()   # a new survey (the first refresh reads whichever is there)
        for rid, (taken, answer) in view.requests.items():
            asked = self.run_now_requests.get(rid)
            if asked is None:
                continue
            if answer is not None:
                del self.run_now_requests[rid]
                self.notify(answer, title=f"zrelay daemon, run {asked.pattern} now", markup=False)
            elif taken is not None and time.time() - taken >= ANSWER_WAIT:
                del self.run_now_requests[rid]
                self.notify(f"the zrelay daemon took the request to run {asked.pattern} now",
                            markup=False)
            elif taken is None and view.info is not None and not view.info.alive:
                del self.run_now_requests[rid]
                self.notify(f"the zrelay daemon (pid {view.info.pid}) is not running: nothing will run "
                            f"{asked.pattern} until it is started again", severity="warning", markup=False)
            asked.taken = taken

    def ask_hosts(self, pairs: Sequence[tuple[Job, Target]], full: bool) -> None:
        """Ask the hosts about ``pairs``; answers arrive as ReportReady messages."""
        if not pairs:
            return
        self._seq += 1
        seq = self._seq
        self._asked_at[seq] = self.clock()
        for job, target in pairs:
            key = (job.name, str(target))
            self._requested[key] = seq
            self.pending.add(key)
        def deliver(report: TargetReport) -> None:
            self.post_message(ReportReady(report, seq))  # thread-safe: answers come from the query thread

        def done() -> None:
            self.post_message(QueriesDone(seq))

        self.querier.submit(pairs, deliver, done, full)
        self._dirty = True

    def refresh_all(self) -> None:
        """Ask every host about every pair; the periodic refresh starts counting again."""
        self._refresh_due = False
        self.ask_hosts(self.pairs, full=True)
        self._full_seq = self._seq
        wanted = set(self._requested.values())
        self._asked_at = {seq: at for seq, at in self._asked_at.items() if seq in wanted}
        self.full_refreshes += 1
        if self._refresh_timer is not None:
            self._refresh_timer.reset()

    def full_refresh_running(self) -> bool:
        """Whether the newest refresh of every pair still waits for some host."""
        return self._full_seq is not None and any(self._requested.get(k) == self._full_seq for k in self.pending)

    def _timed_refresh(self) -> None:
        # a refresh still waiting on slow hosts is not cancelled by the timer: their cells would never fill in
        if not self.full_refresh_running():
            self.refresh_all()

    @property
    def as_of(self) -> float | None:
        """When the oldest answer on screen was asked for; None until every pair has one."""
        keys = [(j.name, str(t)) for j, t in self.pairs]
        if not keys or any(k not in self._fresh for k in keys):
            return None
        return min(self._fresh[k] for k in keys)

    def on_report_ready(self, message: ReportReady) -> None:
        key = message.report.key
        if message.seq < self._requested.get(key, 0) and key in self.reports:
            return  # a newer answer is on its way
        self.reports[key] = message.report
        self._fresh[key] = self._asked_at.get(message.seq, self.clock())
        if self._requested.get(key) == message.seq:
            self.pending.discard(key)
        self._dirty = True

    def on_queries_done(self, message: QueriesDone) -> None:
        for key in [k for k in self.pending if self._requested.get(k) == message.seq]:
            self.pending.discard(key)
        self._dirty = True

    # --- drawing ---

    def _tick(self) -> None:
        # The timer can still fire while the app shuts down: textual clears is_running first,
        # then removes the screens (a view may still be there while its table is gone).
        if self._refresh_due and not self.full_refresh_running():
            self.refresh_all()
        if self._dirty and self.is_running:
            self.redraw()

    def redraw(self) -> None:
        self._dirty = False
        now = self.clock()
        with self.batch_update():
            states = host_states(self.inventory, self.reports, self.pending, self.jobs)
            self.query_one(HostsView).table.show(
                HOST_COLUMNS, host_rows(self.inventory, states, self.view, now, self.filter_text))
            self.matrix = build_matrix(self.jobs, self.reports, self.view, self.filter_text)
            columns: list[Column] = [("dataset", "dataset")]
            columns += [(f"l:{loc}", loc, max(13, len(loc))) for loc in self.matrix.locations]
            self.query_one(MatrixView).table.show(columns, self.matrix.table_rows())
            self._draw_detail()
            if self.attached:
                self._draw_schedule(now)
            self.query_one("#bar-main", Static).update(self._bar_text(states))
            self.query_one("#bar-fresh", Static).update(self._fresh_text())
        self._update_footer()

    def _draw_schedule(self, now: float) -> None:
        view = self.query_one(ScheduleView)
        dv = self.daemon_view
        rows = dv.schedule if dv is not None else ()
        columns = schedule_columns(rows, self.size.width)
        view.title.update(daemon_summary(self.daemon_info, now, dv.problem if dv else None)
                          if dv is not None else "reading the zrelay daemon's schedule…")
        view.table.show(columns, schedule_rows(rows, now, columns, self.filter_text))

    def _fresh_text(self) -> str:
        """How current the screen is: "as of HH:MM:SS", and the refresh under way, if any."""
        if self.attached:
            return self._survey_text()
        total, waiting = len(self.pairs), len(self.pending)
        as_of = self.as_of
        parts = []
        if waiting:
            parts.append(f"[yellow]{'refreshing' if as_of is not None else 'checking'} "
                         f"{total - waiting}/{total}[/yellow]")
        if as_of is not None:
            parts.append(f"as of {clock_time(as_of)}")
        return " · ".join(parts)

    def _survey_text(self) -> str:
        """Attached: when the daemon's survey on screen was made, and whether the daemon still runs."""
        info, survey = self.daemon_info, self.survey
        parts = []
        if info is not None and self.daemon_view is not None and not info.alive:
            parts.append(f"[red]daemon pid {info.pid} stopped[/red]")
        if survey is not None and survey.problem:
            parts.append("[red]survey unreadable[/red]")
        at = survey.at if survey is not None else self._survey_seen
        what = "matrix as of" if self.size.width >= 100 else "as of"   # 80 columns: the bar's counts first
        parts.append(f"{what} {clock_time(at)}" if at is not None
                     else "[yellow]waiting for the daemon's first survey[/yellow]")
        return " · ".join(parts)

    def _bar_text(self, states: dict) -> str:
        unreachable = sum(1 for s in states.values() if s.state == "unreachable")
        first = f"[b]zrelay[/b] {self.inventory.path.name}"
        if self.attached:
            label = daemon_label(self.daemon_info, self.size.width)
            first = f"[b]{escape(label)}[/b]"
            at = self.survey.at if self.survey is not None else None
            self.title = (f"zrelay: {daemon_label(self.daemon_info, 200)}"
                          + (f" — matrix as of {clock_time(at)}" if at is not None else ""))
        parts = [first, plural(len(self.inventory.hosts), "host")]
        if unreachable:
            parts[-1] += f" ([red]{unreachable} unreachable[/red])"
        parts.append(plural(len(self.view.active), "transfer"))
        for proc in self.launched.values():
            parts.append(f"[magenta]{proc.command} {proc.pattern}[/magenta] pid {proc.pid}")
        if self.filter_text:
            parts.append(f"filter: {self.filter_text}")
        return " │ ".join(parts)

    def _draw_detail(self) -> None:
        view = self.query_one(DetailView)
        if self.detail_source is None:
            return
        detail = detail_for(self.detail_source, self.reports.values())
        if detail is None:
            waiting = any(k[0] == self.detail_job for k in self.pending)
            view.title.update(f"[b]{self.detail_source}[/b]: "
                              + ("waiting for the hosts…" if waiting else "the source could not be listed"))
            view.table.show([("guid", "guid")], [])
            return
        targets = ", ".join(detail.columns[1:]) or "no host targets"
        life = next((r.row.lifecycle for r in self.reports.values()
                     if r.job.name == self.detail_job and r.row.lifecycle), None)
        lifecycle = f"\n{escape(lifecycle_label(life, time.time()))}" if life else ""
        view.title.update(f"[b]{clip(detail.source, 60)}[/b] → {targets}  "
                          f"({plural(len(detail.rows), 'snapshot')}; job {self.detail_job}){lifecycle}")
        view.table.show(detail_columns(detail), detail_rows(detail))

    # --- navigation ---

    @property
    def active_tab(self) -> str:
        return self.query_one("#tabs", TabbedContent).active

    def action_show_tab(self, tab: str) -> None:
        if tab == "schedule" and not self.attached:
            return
        self.query_one("#tabs", TabbedContent).active = tab
        self._focus_tab(tab)

    def _focus_tab(self, tab: str) -> None:
        view: HostsView | MatrixView | DetailView | ScheduleView
        if tab == "hosts":
            view = self.query_one(HostsView)
        elif tab == "matrix":
            view = self.query_one(MatrixView)
        elif tab == "schedule":
            view = self.query_one(ScheduleView)
        else:
            view = self.query_one(DetailView)
        view.table.focus()

    def on_tabbed_content_tab_activated(self, event: TabbedContent.TabActivated) -> None:
        if event.pane.id in TABS:
            self._focus_tab(event.pane.id)
        self._update_footer()

    def on_data_table_cell_highlighted(self, _event: DataTable.CellHighlighted) -> None:
        self._update_footer()

    def on_data_table_row_highlighted(self, _event: DataTable.RowHighlighted) -> None:
        self._update_footer()

    def _update_footer(self) -> None:
        """The selection moved or the tables changed: redo the footer only if `p` changed (it recomposes)."""
        reason = self.push_unavailable()
        if reason != self._push_shown:
            self._push_shown = reason
            self.refresh_bindings()

    def on_data_table_cell_selected(self, event: DataTable.CellSelected) -> None:
        if event.data_table.id != "matrix-table":
            return
        row = str(event.cell_key.row_key.value)
        column = str(event.cell_key.column_key.value)
        cell = self.matrix.cells.get((row, column[2:])) if column.startswith("l:") else None
        self.open_detail(row, cell.job if cell else self.matrix.row_jobs.get(row))

    def on_data_table_row_selected(self, event: DataTable.RowSelected) -> None:
        if event.data_table.id != "hosts-table":
            return
        key = str(event.row_key.value)
        transfer = self._transfer_of(key)
        if transfer is not None:
            job = next((j for j in self.jobs if j.name == transfer.job), None)
            if job is not None:
                self.open_detail(f"{job.source.host}:{transfer.dataset}", job.name)

    def open_detail(self, source: str, job: str | None) -> None:
        self.detail_source, self.detail_job = source, job
        self._draw_detail()
        self.action_show_tab("detail")

    def action_escape(self) -> None:
        """Esc: close the filter (clearing it), else leave the detail for the matrix."""
        box = self.query_one("#filter", Input)
        if box.has_focus or box.has_class("visible"):
            box.value = ""
            box.remove_class("visible")
            self._focus_tab(self.active_tab)
        elif self.active_tab == "detail":
            self.action_show_tab("matrix")

    def action_help(self) -> None:
        self.push_screen(HelpScreen(self.refresh_interval, self.attached))

    def action_filter(self) -> None:
        box = self.query_one("#filter", Input)
        box.add_class("visible")
        box.focus()

    def on_input_changed(self, event: Input.Changed) -> None:
        self.filter_text = event.value.strip()
        self._dirty = True

    def on_input_submitted(self, event: Input.Submitted) -> None:
        if not event.value.strip():
            event.input.remove_class("visible")
        self._focus_tab(self.active_tab)

    def action_refresh(self) -> None:
        self.refresh_all()

    def notify(self, message: str, *, title: str = "", severity: SeverityLevel = "information",
               timeout: float | None = None, markup: bool = True) -> None:
        """Show a toast, and remember it: what the user was told is part of the app's behaviour."""
        self.notices.append((severity, title, message))
        super().notify(message, title=title, severity=severity, timeout=timeout, markup=markup)

    # --- worker processes ---

    def _transfer_of(self, key: str) -> TransferRow | None:
        if not key.startswith("t:"):
            return None
        tid = int(key.rsplit(":", 1)[1])
        return next((t for t in self.view.active if t.id == tid), None)

    def selected_pattern(self) -> str | None:
        """The job (or host) the cursor is on, as a ``zrelay sync`` pattern."""
        tab = self.active_tab
        if tab == "matrix":
            table = self.query_one(MatrixView).table
            row, column = table.selected_key(), table.selected_column()
            if row is None:
                return None
            cell = self.matrix.cells.get((row, column[2:])) if column and column.startswith("l:") else None
            return cell.job if cell else self.matrix.row_jobs.get(row)
        if tab == "detail":
            return self.detail_job
        if tab == "schedule":
            key = self.query_one(ScheduleView).table.selected_key()
            rows = self.daemon_view.schedule if self.daemon_view is not None else ()
            return next((r.job for r in rows if key == schedule_key(r)), None)
        key = self.query_one(HostsView).table.selected_key()
        if key is None:
            return None
        transfer = self._transfer_of(key)
        if transfer is not None:
            return transfer.job
        host = key[2:]
        return host if any(j.source.host == host for j in self.jobs) else None

    def action_sync(self) -> None:
        self.launch("sync")

    def action_push(self) -> None:
        if self.push_unavailable() is None:
            self.launch("s3-push")

    def action_push_unavailable(self) -> None:
        """Never runs (the binding is only shown, disabled): the footer names why `p` does nothing here."""

    def push_unavailable(self) -> str | None:
        """Why `p` cannot push the selection, or None when it can (or nothing is selected: `p` then says so)."""
        try:
            pattern = self.selected_pattern()
        except NoMatches:  # asked before the views are mounted
            return None
        if pattern is None:
            return None
        try:
            jobs = self.inventory.jobs_matching([pattern])
        except ZrelayError:
            jobs = []
        return None if any(j.s3_targets for j in jobs) else NO_S3_TARGET

    def check_action(self, action: str, parameters: tuple[object, ...]) -> bool | None:
        """`p` is greyed out, with its reason, where the selected job has no S3 target."""
        if action == "push":
            return self.push_unavailable() is None
        if action == "push_unavailable":
            return None if self.push_unavailable() is not None else False
        if action == "run_now" or (action == "show_tab" and parameters == ("schedule",)):
            return self.attached
        return True

    def action_run_now(self) -> None:
        """Ask the daemon to run the selected job now; its answer is told when it has taken it."""
        if not self.attached:
            return
        pattern = self.selected_pattern()
        if pattern is None:
            self.notify("Select a job first (a schedule row, a matrix cell, a transfer, or a host with jobs).",
                        severity="warning")
            return
        self.run_worker(lambda: self._ask_run_now(pattern), thread=True, group="run-now", exit_on_error=False)

    def _ask_run_now(self, pattern: str) -> None:
        """On a worker thread: the request is one SQLite insert, which may wait on the daemon's writes."""
        try:
            rid = ask_run_now(self.store_path, [pattern])
        except ZrelayError as exc:
            self.call_from_thread(self.notify, f"cannot ask the zrelay daemon: {exc}", severity="error",
                                  markup=False)
            return

        def asked() -> None:
            self.run_now_requests[rid] = RunNow(pattern, time.time())
            self.notify(f"asked the zrelay daemon to run {pattern} now (request {rid})", markup=False)
            self.poll_daemon()
        self.call_from_thread(asked)

    def launch(self, command: str) -> None:
        pattern = self.selected_pattern()
        if pattern is None:
            self.notify("Select a job first (a matrix cell, a transfer, or a host with jobs).",
                        severity="warning")
            return
        self.run_worker(self._run_process(command, pattern), group="processes", exit_on_error=False)

    async def _run_process(self, command: str, pattern: str) -> None:
        """Run ``zrelay COMMAND PATTERN`` detached from the UI; report how it ended."""
        argv = [*self.command_prefix, "-i", str(self.inventory.path), "--state", str(self.store_path),
                command, pattern]
        env = dict(os.environ)
        package_root = str(Path(__file__).resolve().parents[2])
        env["PYTHONPATH"] = os.pathsep.join(p for p in (package_root, env.get("PYTHONPATH")) if p)
        with tempfile.TemporaryFile() as errors:
            try:
                proc = await asyncio.create_subprocess_exec(
                    *argv, stdin=asyncio.subprocess.DEVNULL, stdout=asyncio.subprocess.DEVNULL, stderr=errors,
                    env=env, start_new_session=True)  # survives the UI quitting; Ctrl-C here is not its
            except OSError as exc:
                self.notify(f"cannot start zrelay {command}: {exc}", severity="error")
                return
            launched = self.launched[proc.pid] = Launched(command, pattern, proc.pid)
            self._dirty = True
            self.notify(f"started zrelay {command} {pattern} (pid {proc.pid})")
            launched.returncode = await proc.wait()
            errors.seek(0)
            launched.output = errors.read().decode(errors="replace").strip()
        del self.launched[proc.pid]
        self.finished.append(launched)
        tail = "\n".join(launched.output.splitlines()[-4:]) or "(no output)"
        if launched.returncode == 0:
            self.notify(f"zrelay {command} {pattern}: done")
        elif launched.returncode == EXIT_BUSY:  # the lock did its job: nothing failed, nothing was touched
            self.notify(tail, title=f"zrelay {command} {pattern}: skipped, another zrelay holds a target",
                        severity="warning", timeout=20, markup=False)
        else:
            self.notify(tail, title=f"zrelay {command} {pattern} failed (exit {launched.returncode})",
                        severity="error", timeout=20, markup=False)
        self.ask_hosts([(j, t) for j, t in self.pairs if pattern in (j.name, j.source.host)], full=False)
