"""Terminal output for the CLI: live progress bars from engine events, summaries, tables."""

from __future__ import annotations

import os
import sys
from types import TracebackType
from typing import TYPE_CHECKING

from zrelay.engine import TaskResult
from zrelay.events import Event, JobFinished, Outcome, TransferFinished, TransferProgress, TransferStarted
from zrelay.units import human_bytes, human_seconds  # noqa: F401  (commands use them via output)

if TYPE_CHECKING:
    from rich.console import Console
    from rich.progress import Progress, TaskID

# rich is imported on first use: a run that prints JSON only never needs it (30 ms of start-up).
_consoles: dict[bool, Console] = {}


def console(*, stderr: bool = False) -> Console:
    """The shared console for stdout (or stderr): wide enough for tables in logs and pipes;
    a terminal keeps its own width."""
    if stderr not in _consoles:
        from rich.console import Console
        stream = sys.stderr if stderr else sys.stdout
        width = None if stream.isatty() or os.environ.get("COLUMNS") else 140
        _consoles[stderr] = Console(stderr=stderr, highlight=False, width=width)
    return _consoles[stderr]


def error_line(text: str) -> None:
    """One line on stderr as it is (no rich markup: remote messages carry brackets)."""
    console(stderr=True).print(text, markup=False, soft_wrap=True)


_OUTCOME_STYLE = {
    Outcome.OK: "green", Outcome.NOOP: "green", Outcome.SKIPPED: "cyan",
    Outcome.REFUSED: "yellow", Outcome.FAILED: "red",
}


class ProgressView:
    """Consumes engine events: rich bars on a TTY, one log line per stream otherwise."""

    def __init__(self, enabled: bool) -> None:
        self.enabled = enabled
        self._progress: Progress | None = None
        self._tasks: dict[tuple[str, str, str], tuple[TaskID, str]] = {}

    def __enter__(self) -> "ProgressView":
        if self.enabled:
            from rich.progress import (BarColumn, DownloadColumn, Progress, TextColumn, TimeRemainingColumn,
                                       TransferSpeedColumn)
            self._progress = Progress(
                TextColumn("{task.description}", justify="left"), BarColumn(), DownloadColumn(binary_units=True),
                TransferSpeedColumn(), TimeRemainingColumn(), console=console(stderr=True), transient=False,
                refresh_per_second=4)
            self._progress.start()
        return self

    def __exit__(self, et: type[BaseException] | None, ev: BaseException | None,
                 tb: TracebackType | None) -> None:
        if self._progress is not None:
            self._progress.stop()

    def handle(self, event: Event) -> None:
        progress = self._progress
        if progress is None:
            return
        if isinstance(event, TransferStarted):
            key = (event.job, event.target, event.stream)
            description = f"{event.stream} → {event.target_host}"
            self._tasks[key] = (progress.add_task(description, total=event.estimate), description)
        elif isinstance(event, TransferProgress):
            entry = self._tasks.get((event.job, event.target, event.stream))
            if entry is not None:
                progress.update(entry[0], completed=event.done)
        elif isinstance(event, TransferFinished):
            entry = self._tasks.get((event.job, event.target, event.stream))
            if entry is not None:
                task, description = entry
                rate = event.done / event.seconds if event.seconds > 0 else 0.0
                verdict = f"done, {human_bytes(rate)}/s" if event.ok else "[red]failed[/red]"
                progress.update(task, completed=event.done, total=event.done if event.ok else None,
                                description=f"{description} ({verdict})")
        elif isinstance(event, JobFinished) and event.outcome is Outcome.FAILED:
            progress.console.print(f"[red]failed[/red] {event.job} → {event.target}: {event.message}")


def result_dict(r: TaskResult) -> dict:
    return {
        "job": r.job, "source": r.source, "target": r.target, "outcome": r.outcome.value,
        "message": r.message, "bytes": r.bytes, "seconds": round(r.seconds, 3),
        "failed_host": r.failed_host,
        "plans": [{"kind": p.kind.value, "source": p.source, "target": p.target, "reason": p.reason,
                   "behind": p.behind} for p in r.plans],
        "commands": [{"host": h, "command": c} for h, c in r.commands],
    }


def print_dry_run(results: list[TaskResult]) -> None:
    out = console()
    for r in results:
        style = _OUTCOME_STYLE.get(r.outcome, "")
        out.print(f"[bold]{r.job}[/bold] → {r.target}: [{style}]{r.message}[/{style}]")
        for p in r.plans:
            if len(r.plans) > 1:
                out.print(f"  {p.kind.value:<15} {p.source} → {p.target}: {p.reason}")
            for option in p.options:
                out.print(f"    option: {option}")
        for host, command in r.commands:
            out.print(f"    [dim]{host}$[/dim] {command}", markup=True, highlight=False)
        if not r.commands and r.outcome is not Outcome.REFUSED:
            out.print("    (no remote commands: nothing to do)")


def print_summary(results: list[TaskResult]) -> None:
    from rich.table import Table
    out, err = console(), console(stderr=True)
    if not results:
        out.print("no host targets matched: nothing to do")
        return
    table = Table(title="zrelay sync", title_justify="left")
    for col in ("job", "target", "result", "bytes", "time", "detail"):
        table.add_column(col, overflow="fold")
    for r in results:
        style = _OUTCOME_STYLE.get(r.outcome, "")
        detail = r.message if r.outcome not in (Outcome.FAILED, Outcome.REFUSED) else "see below"
        table.add_row(r.job, r.target, f"[{style}]{r.outcome.value}[/{style}]", human_bytes(r.bytes),
                      f"{r.seconds:.1f}s", detail)
    out.print(table)
    failed = sorted({r.failed_host for r in results if r.outcome is Outcome.FAILED and r.failed_host})
    bad = [r for r in results if r.outcome in (Outcome.FAILED, Outcome.REFUSED)]
    for r in bad:
        error_line(f"{r.outcome.value}: {r.job} → {r.target}: {r.message}")
    if bad:
        hosts = f" (hosts: {', '.join(failed)})" if failed else ""
        err.print(f"zrelay: {len(bad)} of {len(results)} job target(s) failed or refused{hosts}")
