"""Terminal output for the CLI: progress from engine events, summaries, tables, dry runs.

Two audiences. A terminal gets colour, live bars and tables fitted to its
width (``layout``). Anything else (a pipe, a file, cron's mail) gets plain
lines: nothing padded, nothing wrapped, so a command or a resume token is
one line to grep or copy; during a run, one line when each stream starts and
one when it ends. ``COLUMNS`` sets the width a table is fitted to in a pipe;
without it a pipe has no width limit.
"""

from __future__ import annotations

import os
import sys
import threading
import time
from dataclasses import dataclass
from types import TracebackType
from typing import TYPE_CHECKING, Any, Callable, Sequence, TextIO

from zrelay.actions import Action
from zrelay.cli import layout
from zrelay.cli.layout import DROP, Cell, Column, Line, Table, cell
from zrelay.engine import TaskResult
from zrelay.events import (Event, JobFinished, JobPlanned, Outcome, TransferFinished, TransferProgress,
                           TransferStarted)
from zrelay.units import (human_bytes, human_duration, human_moved, human_progress, human_rate,  # noqa: F401
                          human_seconds, rate_of)

if TYPE_CHECKING:
    from rich.console import Console
    from rich.progress import Progress, Task, TaskID
    from rich.text import Text

# rich is imported on first use: a run that prints JSON only never needs it (30 ms of start-up).
_consoles: dict[bool, Console] = {}

#: Columns rich is told about in a pipe without COLUMNS: wide enough that it never wraps a line itself.
_UNLIMITED = 10_000


def _stream(stderr: bool) -> TextIO:
    return sys.stderr if stderr else sys.stdout


def is_terminal(stderr: bool = False) -> bool:
    stream = _stream(stderr)
    try:
        return stream.isatty()
    except (AttributeError, ValueError):
        return False


def _columns_env() -> int | None:
    try:
        value = int(os.environ.get("COLUMNS", ""))
    except ValueError:
        return None
    return value if value > 0 else None


def console(*, stderr: bool = False) -> Console:
    """The shared console for stdout (or stderr). A terminal keeps its width; anywhere else lines are
    never wrapped or padded by rich (soft wrap), whatever the width."""
    if stderr not in _consoles:
        from rich.console import Console
        if is_terminal(stderr):
            _consoles[stderr] = Console(stderr=stderr, highlight=False)
        else:
            _consoles[stderr] = Console(stderr=stderr, highlight=False, soft_wrap=True,
                                        width=_columns_env() or _UNLIMITED)
    return _consoles[stderr]


def width(*, stderr: bool = False) -> int | None:
    """Columns to lay a table out for: the terminal's (or ``COLUMNS``); None in a pipe without ``COLUMNS``."""
    if is_terminal(stderr):
        return console(stderr=stderr).width
    return _columns_env()


def _text(line: Line) -> Text:
    from rich.text import Text
    text = Text()
    for part, style in line:
        text.append(part, style=style or None)
    return text


def print_lines(lines: Sequence[Line], *, stderr: bool = False) -> None:
    """Laid-out lines as they are: styled on a terminal, plain elsewhere, never re-wrapped."""
    out = console(stderr=stderr)
    for line in lines:
        out.print(_text(line), soft_wrap=True, highlight=False)


def error_line(text: str) -> None:
    """One line on stderr as it is (no rich markup: remote messages carry brackets)."""
    console(stderr=True).print(text, markup=False, soft_wrap=True, highlight=False)


OUTCOME_STYLE = {
    Outcome.OK: "green", Outcome.NOOP: "green", Outcome.SKIPPED: "cyan",
    Outcome.REFUSED: "yellow", Outcome.FAILED: "red", Outcome.BUSY: "yellow",
}


# --------------------------------------------------------------------------- progress

#: Columns for a bar's figures: "82.2 MiB of 120.0 MiB  7.4 MiB/s  5.1s left" (and "done: … in …, …/s").
FIGURES = 42
#: The plan kind of a job waiting for another zrelay to let go of its target (zrelay.locks).
WAITING = "waiting"


@dataclass
class _Stream:
    description: str
    task: Any = None


def stream_name(stream: str, host: str) -> str:
    """``tank/data@a → @c (-I) → vault``: what a progress line or bar calls a stream."""
    return f"{stream} → {host}"


def _short_name(stream: str, host: str) -> str:
    """The stream without its snapshot names, for a bar on a narrow terminal: ``tank/data (-I) → vault``."""
    dataset = stream.split("@", 1)[0].strip()
    kind = stream.rsplit(" (", 1)[1].rstrip(")") if stream.endswith(")") and " (" in stream else ""
    return f"{dataset}{f' ({kind})' if kind else ''} → {host}"


class ProgressView:
    """Consumes engine events while a run lasts.

    On a terminal (stdout and stderr both): live bars on stderr, sized in the
    units of ``zrelay.units``. Anywhere else (cron, ``| tee log``, a file):
    one line on stdout when a stream starts and one when it ends, with the
    bytes, time, rate and result, as they happen.
    """

    def __init__(self, enabled: bool, *, out: TextIO | None = None, bars: bool | None = None,
                 clock: Callable[[], float] = time.time) -> None:
        self.enabled = enabled
        self.bars = enabled and (bars if bars is not None else is_terminal() and is_terminal(stderr=True))
        self._out = out
        self._clock = clock
        self._progress: Progress | None = None
        self._bar_width = 0
        self._streams: dict[tuple[str, str, str], _Stream] = {}
        self._lock = threading.Lock()

    def __enter__(self) -> "ProgressView":
        if self.bars:
            from rich.progress import BarColumn, Progress, TextColumn
            width = console(stderr=True).width
            # the figures take up to FIGURES columns and never wrap; a bar only where it leaves the
            # stream's name room (on 80 columns the figures say as much)
            self._bar_width = min(24, width - 76) if width >= 86 else 0
            bar = [BarColumn(bar_width=self._bar_width)] if self._bar_width else []
            self._progress = Progress(
                TextColumn("{task.description}", justify="left"), *bar, _numbers_column(),
                console=console(stderr=True), transient=False, refresh_per_second=4)
            self._progress.start()
        return self

    def __exit__(self, et: type[BaseException] | None, ev: BaseException | None,
                 tb: TracebackType | None) -> None:
        if self._progress is not None:
            self._progress.stop()

    def handle(self, event: Event) -> None:
        if not self.enabled:
            return
        if self._progress is not None:
            self._bar(self._progress, event)
        else:
            self._log(event)

    # -- plain lines

    def _write(self, text: str) -> None:
        out = self._out or sys.stdout
        stamp = time.strftime("%H:%M:%S", time.localtime(self._clock()))
        with self._lock:
            try:
                out.write(f"{stamp} {text}\n")
                out.flush()
            except (BrokenPipeError, ValueError):
                self.enabled = False  # the reader went away; the run goes on

    def _log(self, event: Event) -> None:
        if isinstance(event, TransferStarted):
            name = stream_name(event.stream, event.target_host)
            self._streams[(event.job, event.target, event.stream)] = _Stream(name)
            size = f" (estimate {human_bytes(event.estimate)})" if event.estimate else ""
            self._write(f"start  {name}{size}")
        elif isinstance(event, TransferFinished):
            entry = self._streams.pop((event.job, event.target, event.stream), None)
            name = entry.description if entry else event.stream
            verdict = "done  " if event.ok else "FAILED"
            self._write(f"{verdict} {name}: {human_moved(event.done, event.seconds)}")
        elif isinstance(event, JobPlanned) and event.kind == WAITING:
            self._write(f"wait   {event.job} → {event.target}: {event.summary}")

    # -- bars

    def _bar(self, progress: Progress, event: Event) -> None:
        if isinstance(event, TransferStarted):
            key = (event.job, event.target, event.stream)
            full = stream_name(event.stream, event.target_host)
            room = progress.console.width - self._bar_width - FIGURES - 2
            description = full if len(full) <= room else _short_name(event.stream, event.target_host)
            task = progress.add_task(description, total=event.estimate, rate=None, outcome=None)
            self._streams[key] = _Stream(description, task)
        elif isinstance(event, TransferProgress):
            entry = self._streams.get((event.job, event.target, event.stream))
            if entry is not None:
                progress.update(entry.task, completed=event.done, rate=event.rate)
        elif isinstance(event, TransferFinished):
            entry = self._streams.get((event.job, event.target, event.stream))
            if entry is not None:
                progress.update(entry.task, completed=event.done, total=event.done if event.ok else None,
                                outcome=human_moved(event.done, event.seconds) if event.ok else "failed")
                progress.stop_task(entry.task)
        elif isinstance(event, JobPlanned) and event.kind == WAITING:
            progress.console.print(f"{event.job} → {event.target}: {event.summary}", markup=False, soft_wrap=True)
        elif isinstance(event, JobFinished) and event.outcome is Outcome.FAILED:
            from rich.text import Text
            progress.console.print(Text.assemble(("failed", "red"), f" {event.job} → {event.target}: {event.message}"),
                                   soft_wrap=True)


def _numbers_text(task: Task) -> str:
    """A bar's figures: ``82.2 MiB of 120.0 MiB  7.4 MiB/s  5s left``; once done, what it moved."""
    outcome = task.fields.get("outcome")
    done = int(task.completed)
    if outcome == "failed":
        return f"failed after {human_bytes(done)}"
    if outcome:
        return f"done: {outcome}"
    rate = task.fields.get("rate")
    parts = [human_progress(done, int(task.total) if task.total else None)]
    if rate:
        parts.append(human_rate(rate))
        if task.total and task.total > done:
            parts.append(f"{human_duration((task.total - done) / rate)} left")
    return "  ".join(parts)


def _numbers_column() -> Any:
    """The figures column of the bars (the class needs rich, imported only when bars are drawn)."""
    from rich.progress import ProgressColumn
    from rich.text import Text

    class Numbers(ProgressColumn):
        def __init__(self) -> None:
            from rich.table import Column
            super().__init__(table_column=Column(no_wrap=True, min_width=FIGURES))

        def render(self, task: Task) -> Text:
            outcome = task.fields.get("outcome")
            style = "red" if outcome == "failed" else ("green" if outcome else "")
            return Text(_numbers_text(task), style=style)

    return Numbers()


# --------------------------------------------------------------------------- results


def result_dict(r: TaskResult) -> dict:
    return {
        "job": r.job, "source": r.source, "target": r.target, "outcome": r.outcome.value,
        "message": r.message, "bytes": r.bytes, "seconds": round(r.seconds, 3),
        "failed_host": r.failed_host,
        "plans": [{"kind": p.kind.value, "source": p.source, "target": p.target, "reason": p.reason,
                   "behind": p.behind} for p in r.plans],
        "commands": [{"host": h, "command": c} for h, c in r.commands],
        "actions": [action_dict(a) for a in r.actions],
        "warnings": list(r.warnings),
        "excluded": [{"dataset": d, "why": why} for d, why in r.excluded],
    }


def action_dict(a: Action) -> dict[str, Any]:
    """One action as ``--json`` shows it: what it does, where, why, and its exact command lines."""
    out: dict[str, Any] = {"kind": a.kind.value, "host": a.host, "subject": a.subject, "reason": a.reason,
                           "commands": [{"host": h, "command": c} for h, c in a.commands]}
    if a.stream is not None:
        out["stream"] = {"label": a.stream.label, "target_host": a.stream.target_host,
                         "estimate": a.stream.estimate, "full": a.stream.full, "resume": a.stream.resume,
                         "bandwidth": a.stream.bandwidth, "limit": a.stream.limit}
    if a.expected:
        out["expected"] = True
    if a.waits_for:
        out["waits_for"] = a.waits_for   # a clone's origin dataset: its actions end first
    return out


def command_line(host: str, command: str, indent: int = 4) -> Line:
    """``    nas1$ zfs send …``: one line whatever its length, so it pastes whole."""
    return [(" " * indent, ""), (f"{host}$", "dim"), (" " + command, "")]


def print_dry_run(results: list[TaskResult]) -> None:
    w = width()
    lines: list[Line] = []
    for r in results:
        style = OUTCOME_STYLE.get(r.outcome, "")
        message = r.message.removeprefix(f"{r.source} → {r.target}: ")   # a busy target's names both ends
        lines += layout.wrap([(r.job, "bold"), (f" → {r.target}: ", ""), (message, style)], w, 0, 4)
        for dataset, why in r.excluded:   # zrelay.selection: left alone, and why
            lines += layout.wrap(f"excluded {dataset}: {why}", w, 2, 6)
        said: set[str] = set()
        for p in r.plans:
            # a destructive plan (rollback, receive -F) says why even when it is the only one
            if len(r.plans) > 1 or p.rollback_to is not None or p.force_receive:
                lines += layout.wrap(f"{p.kind.value} {p.source} → {p.target}: {p.reason}", w, 2, 6)
                said.add(p.reason)
            for option in p.options:
                lines += layout.wrap(f"option: {option}", w, 4, 8)
        for action in r.actions:
            if action.destructive and action.reason not in said:
                lines += layout.wrap(f"{action.kind.value}: {action.reason}", w, 2, 6)
                said.add(action.reason)
            if action.stream is not None and action.stream.limit:
                lines += layout.wrap(action.stream.limit, w, 4, 8)
            for host, command in action.commands:
                lines.append(command_line(host, command))
        if not r.commands and r.outcome not in (Outcome.REFUSED, Outcome.FAILED, Outcome.BUSY):  # they say why
            lines.append([("    (no remote commands: nothing to do)", "")])
    print_lines(lines)


@dataclass(frozen=True)
class ResultRow:
    """One line of a run's summary, grouped under its job."""

    job: str
    cells: dict[str, Cell]
    detail: str = ""


#: Summary columns: what each run's result table shows, widest first to go.
RESULT_COLUMNS = (Column("what", "TARGET"), Column("result", "RESULT"), Column("moved", "MOVED", right=True),
                  Column("time", "TIME", right=True), Column("detail", "DETAIL"))


def result_cells(what: str, outcome: Outcome, done: int, seconds: float, detail: str) -> dict[str, Cell]:
    return {"what": cell(what), "result": cell(outcome.value, style=OUTCOME_STYLE.get(outcome, "")),
            "moved": cell(human_bytes(done)), "time": cell(human_duration(seconds)), "detail": cell(detail)}


def print_results(title: str, rows: Sequence[ResultRow], columns: Sequence[Column] = RESULT_COLUMNS) -> None:
    """A run's summary: a heading per job, one line per target; the detail moves under its row
    (wrapped at spaces) when the terminal has no room for it on the row."""
    w = width()
    table = Table(columns, [r.cells for r in rows], steps=(("detail", DROP),), indent=2)
    table.fit(w)
    lines: list[Line] = [[(title, "bold")]]
    if len(table.widths) > 0:
        lines.append(table.header())
    job = None
    for i, r in enumerate(rows):
        if r.job != job:
            job = r.job
            lines.append([(job, "bold")])
        lines.append(table.row(i))
        if "detail" not in table.widths and r.detail:
            lines += layout.wrap(r.detail, w, 4)
    print_lines(lines)


def print_table(title: str, columns: Sequence[Column], rows: Sequence[dict[str, Cell]],
                steps: Sequence[tuple[str, int]] = ()) -> None:
    """A plain table fitted to the width (``layout.Table``); rows become blocks where no table fits."""
    w = width()
    table = Table(columns, rows, steps=steps)
    lines: list[Line] = [[(title, "bold")]] if title else []
    if table.fit(w):
        lines.append(table.header())
        lines += [table.row(i) for i in range(len(rows))]
    else:
        first, rest = columns[0].key, [c.key for c in columns[1:]]
        for row in rows:
            lines += layout.stack(row.get(first, cell("")), [row[k] for k in rest if k in row], w, indent=0)
    print_lines(lines)


def print_summary(results: list[TaskResult], title: str = "zrelay sync") -> None:
    if not results:
        console().print("no host targets matched: nothing to do")
        return
    rows = []
    for r in results:
        detail = r.message if r.outcome not in (Outcome.FAILED, Outcome.REFUSED, Outcome.BUSY) else "see below"
        rows.append(ResultRow(r.job, result_cells(r.target, r.outcome, r.bytes, r.seconds, detail), detail))
    print_results(title, rows)
    err = console(stderr=True)
    failed = sorted({r.failed_host for r in results if r.outcome is Outcome.FAILED and r.failed_host})
    bad = [r for r in results if r.outcome in (Outcome.FAILED, Outcome.REFUSED)]
    for r in bad:
        error_line(f"{r.outcome.value}: {r.job} → {r.target}: {r.message}")
    for r in results:
        if r.outcome is Outcome.BUSY:   # the message names the target and who holds it
            error_line(f"busy: {r.message}")
    if bad:
        hosts = f" (hosts: {', '.join(failed)})" if failed else ""
        err.print(f"zrelay: {len(bad)} of {len(results)} job target(s) failed or refused{hosts}", soft_wrap=True,
                  markup=False)
