"""What the TUI's tables show, computed from the inventory, status reports and the state store.

Kept apart from the widgets so the rules (which glyph, which row, where a
running transfer goes) are plain functions of plain data: the app re-runs them
on every change and the tables only redraw the cells whose text changed.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Iterable, Mapping, Sequence

from rich.text import Text

from zrelay.inventory.model import Endpoint, Inventory, Job
from zrelay.state import StoreView, TransferRow
from zrelay.status.report import (BROKEN, BUSY, NOT_CHECKED, PENDING, RUNNING, STATES, TargetReport,
                                  location_of)
from zrelay.tui.detail import DatasetDetail, DetailCell
from zrelay.units import human_bytes, human_seconds

Key = tuple[str, str]  # (job name, target as written)

NOT_A_TARGET = "not-a-target"  # a matrix cell whose location is not a target of the row's job


@dataclass(frozen=True)
class Symbol:
    """One matrix glyph. The legend, the help and the cells all read this one table, so they cannot disagree."""

    state: str
    glyph: str
    name: str        # in the legend and the help
    label: str       # in a matrix cell, kept short ("{n}": snapshots behind)
    style: str
    hint: str = ""   # the help's one-line explanation, for the symbols that need one


SYMBOLS: tuple[Symbol, ...] = (
    Symbol("in-sync", "✓", "in-sync", "in-sync", "green"),
    Symbol("behind", "↓", "behind", "behind {n}", "cyan", "N snapshots to send"),
    Symbol("missing", "∅", "missing", "missing", "yellow", "needs a full send"),
    Symbol("resumable", "↺", "resumable", "resumable", "cyan"),
    Symbol("no-snapshots", "∘", "no snapshots", "no snaps", "yellow"),
    Symbol("diverged", "✗", "diverged", "diverged", "bold red"),
    Symbol("no-common-base", "≠", "no common base", "no base", "bold red"),
    Symbol(BROKEN, "✂", "broken", "broken", "bold red", "an S3 chain lacks a send"),
    Symbol("unreachable", "?", "unreachable", "unreachable", "red"),
    Symbol("error", "!", "error", "error", "red"),
    Symbol(RUNNING, "↻", "running", "running", "bold magenta", "a transfer, any process's"),
    Symbol(BUSY, "⧗", "busy", "busy", "magenta"),  # another zrelay holds the target
    Symbol(NOT_CHECKED, "○", "not checked", "not checked", "dim", "S3 targets are not inspected"),
    Symbol(PENDING, "…", "checking", "checking", "dim"),
    Symbol(NOT_A_TARGET, "·", "not a target", "", "dim"),
)
#: state → (glyph, cell label, style). The glyph keeps the matrix readable without colour.
GLYPHS: dict[str, tuple[str, str, str]] = {s.state: (s.glyph, s.label, s.style) for s in SYMBOLS}
#: Worst first, for a cell that two jobs share: what needs a person, then a running transfer, then the rest.
_ALERTS = ("unreachable", "error", BROKEN, "diverged", "no-common-base")
_ORDER = (*_ALERTS, RUNNING, BUSY, *(s for s in STATES if s not in _ALERTS), NOT_CHECKED, PENDING)

LEGEND_ENTRIES = tuple(f"{s.glyph} {s.name}" for s in SYMBOLS)
LEGEND = "  ".join(LEGEND_ENTRIES)

#: The dataset detail's glyphs: (glyph, meaning), for its legend and the help.
DETAIL_SYMBOLS: tuple[tuple[str, str], ...] = (
    ("◆", "common base"), ("✗", "divergent (target only)"), ("∘", "not selected by the job's filter"),
    ("·", "absent"))
DETAIL_LEGEND_ENTRIES = tuple(f"{glyph} {name}" for glyph, name in DETAIL_SYMBOLS)
DETAIL_LEGEND = "   ".join(DETAIL_LEGEND_ENTRIES)


def pack(entries: Sequence[str], width: int, sep: str = "  ") -> list[str]:
    """``entries`` joined by ``sep`` into lines of at most ``width``, never breaking one ("≠ no common base")."""
    mark = sep.rstrip()  # "; " ends a broken line with ";", "  " with nothing
    lines: list[str] = []
    line = ""
    for entry in entries:
        candidate = f"{line}{sep}{entry}" if line else entry
        if line and len(candidate) + len(mark) > width:
            lines.append(line + mark)
            line = entry
        else:
            line = candidate
    if line:
        lines.append(line)
    return lines


def plural(n: int, word: str, many: str | None = None) -> str:
    """``1 snapshot``, ``2 snapshots``: counts in the UI read as English."""
    return f"{n} {word if n == 1 else (many or word + 's')}"


def clip(text: str, width: int) -> str:
    return text if len(text) <= width else text[:width - 1] + "…"


# --- hosts view -----------------------------------------------------------------------------

HOST_COLUMNS: tuple[tuple[str, str, int] | tuple[str, str], ...] = (
    ("host", "host / transfer"), ("state", "state", 14), ("progress", "progress", 14),
    ("rate", "rate", 11), ("eta", "ETA", 4), ("bytes", "bytes", 19), ("error", "last error"))
HOST_LABEL_MAX = 40  # the first column grows with dataset names up to this

BAR_WIDTH = 9
_INDETERMINATE_STEP = 4 * 1024 * 1024


@dataclass(frozen=True)
class HostState:
    state: str          # "reachable", "unreachable", "checking", "unknown"
    message: str = ""


def host_states(inventory: Inventory, reports: Mapping[Key, TargetReport], pending: Iterable[Key],
                jobs: Sequence[Job]) -> dict[str, HostState]:
    """Per host, what the newest inspections say: reachable, unreachable (and why), or still checking."""
    out: dict[str, HostState] = {}
    for report in reports.values():
        if report.unreachable_host:
            out[report.unreachable_host] = HostState("unreachable", report.row.message)
    for report in reports.values():
        if report.plans:  # both ends answered
            hosts = [report.job.source.host] + ([report.target.host] if isinstance(report.target, Endpoint)
                                                 else [])
            for h in hosts:
                out.setdefault(h, HostState("reachable"))
    waiting = set(pending)
    for job in jobs:
        for target in job.targets:
            if (job.name, str(target)) in waiting:
                for h in (job.source.host, location_of(target)):
                    if h in inventory.hosts:
                        out.setdefault(h, HostState("checking"))
    for h in inventory.hosts:
        out.setdefault(h, HostState("unknown"))
    return out


def progress_bar(t: TransferRow, width: int = BAR_WIDTH) -> Text:
    """A bar with percent; without an estimate (zfs-fuse) a block that moves with the bytes."""
    fraction = t.fraction()
    if fraction is None:
        pos = (t.done // _INDETERMINATE_STEP) % (width - 2)
        bar = "░" * pos + "██" + "░" * (width - 2 - pos)
        return Text.assemble((bar, "magenta"), "    ?")
    filled = int(round(fraction * width))
    return Text.assemble(("█" * filled, "magenta"), ("░" * (width - filled), "dim"), f" {fraction * 100:3.0f}%")


def _state_cell(state: HostState) -> Text:
    glyph, style = {"reachable": ("✓", "green"), "unreachable": ("?", "red"), "checking": ("…", "dim"),
                    "unknown": ("·", "dim")}[state.state]
    return Text(f"{glyph} {state.state}", style=style)


def host_rows(inventory: Inventory, states: Mapping[str, HostState], view: StoreView, now: float,
              filter_text: str = "") -> list[tuple[str, tuple[Text | str, ...]]]:
    """One row per host, each followed by its active transfers (both ends show them)."""
    rows: list[tuple[str, tuple[Text | str, ...]]] = []
    needle = filter_text.lower()
    for name, host in inventory.hosts.items():
        mine = [t for t in view.active if name in (t.source_host, t.target_host)]
        if needle and needle not in name.lower() and not any(needle in t.stream.lower() for t in mine):
            continue
        state = states.get(name, HostState("unknown"))
        error = ""
        if state.state == "unreachable":
            error = state.message
        elif name in view.host_errors:
            task = view.host_errors[name]
            error = f"{human_seconds(now - (task.finished or now))} ago: {task.message}"
        label = Text(name, style="bold")
        if mine:
            label.append(f"  {len(mine)}▸", style="magenta")
        rows.append((f"h:{name}", (label, _state_cell(state), "", "", "", "", Text(clip(error, 90), "red"))))
        for t in mine:
            if t.source_host == name:
                dataset, arrow = t.dataset, f" → {t.target_host}"
            else:
                dataset, arrow = t.target.split(":", 1)[-1], f" ← {t.source_host}"
            what = Text.assemble("  ↳ ", clip(dataset, HOST_LABEL_MAX - 4 - len(arrow)), (arrow, "magenta"))
            eta = t.eta()
            total = f"/{human_bytes(t.estimate)}" if t.estimate else ""
            # the daemon's runs say so ("daemon sync"); its pid is the daemon's, which the bar names when attached
            who = t.command if t.command.startswith("daemon ") else f"{t.command} pid {t.pid}"
            rows.append((f"t:{name}:{t.id}", (
                what, Text(who, style="dim"), progress_bar(t),
                f"{human_bytes(t.rate)}/s", human_seconds(eta) if eta is not None else "-",
                f"{human_bytes(t.done)}{total}", "")))
    return rows


# --- divergence matrix ------------------------------------------------------------------------


@dataclass(frozen=True)
class MatrixCell:
    state: str
    job: str
    target: str
    behind: int = 0
    message: str = ""
    progress: str = ""

    def render(self) -> Text:
        glyph, label, style = GLYPHS.get(self.state, ("?", self.state, ""))
        if self.state == "behind":
            label = label.format(n=self.behind)
        if self.state == RUNNING and self.progress:
            label = self.progress
        return Text(f"{glyph} {label}", style=style)


@dataclass(frozen=True)
class Matrix:
    locations: tuple[str, ...]
    rows: tuple[str, ...]                        # source endpoints, inventory order
    cells: Mapping[tuple[str, str], MatrixCell]  # (row, location) → cell
    row_jobs: Mapping[str, str]                  # row → the first job replicating it

    def table_rows(self) -> list[tuple[str, tuple[Text | str, ...]]]:
        out = []
        for row in self.rows:
            cells: list[Text | str] = [Text(row, style="bold")]
            for loc in self.locations:
                cell = self.cells.get((row, loc))
                cells.append(cell.render() if cell is not None else _not_a_target())
            out.append((row, tuple(cells)))
        return out


def _not_a_target() -> Text:
    glyph, _label, style = GLYPHS[NOT_A_TARGET]
    return Text(glyph, style=style)


def _worse(a: MatrixCell | None, b: MatrixCell) -> MatrixCell:
    if a is None:
        return b
    rank = {s: i for i, s in enumerate(_ORDER)}
    return b if rank.get(b.state, 99) < rank.get(a.state, 99) else a


def build_matrix(jobs: Sequence[Job], reports: Mapping[Key, TargetReport], view: StoreView,
                 filter_text: str = "") -> Matrix:
    """Datasets × locations: every dataset a job replicates, every host or S3 target it goes to."""
    locations: list[str] = []
    rows: list[str] = []
    row_jobs: dict[str, str] = {}
    cells: dict[tuple[str, str], MatrixCell] = {}
    job_rows: dict[str, list[str]] = {}
    for job in jobs:
        mine = [str(job.source)]
        for target in job.targets:
            loc = location_of(target)
            if loc not in locations:
                locations.append(loc)
            report = reports.get((job.name, str(target)))
            if report is not None and report.plans:
                for c in report.cells:
                    if c.source not in mine:
                        mine.append(c.source)
        job_rows[job.name] = mine
        for r in mine:
            if r not in row_jobs:
                row_jobs[r] = job.name
                rows.append(r)
    for job in jobs:
        for target in job.targets:
            loc, key = location_of(target), (job.name, str(target))
            report = reports.get(key)
            if report is None or not report.plans:
                # pending, unreachable, error, not checked: the whole job at this location says so
                state = report.row.state if report is not None else PENDING
                message = report.row.message if report is not None else ""
                for r in job_rows[job.name]:
                    cells[(r, loc)] = _worse(cells.get((r, loc)), MatrixCell(state, job.name, str(target),
                                                                             message=message))
                continue
            for c in report.cells:
                cells[(c.source, loc)] = _worse(cells.get((c.source, loc)), MatrixCell(
                    c.state, job.name, str(target), c.behind, c.message))
    by_name = {j.name: j for j in jobs}
    for t in view.active:
        running = by_name.get(t.job)
        if running is None or t.target not in {str(x) for x in running.targets}:
            continue  # e.g. an s3-restore into a dataset that is not one of the job's targets
        row = f"{running.source.host}:{t.dataset}"
        if row not in row_jobs:
            row = str(running.source)
        if row not in row_jobs:
            continue
        shown = cells.get((row, t.target_host))
        if shown is not None and shown.state == BROKEN:
            continue  # as in ``status``: a push does not mend a broken chain, the cell keeps saying so
        fraction = t.fraction()
        progress = f"{fraction * 100:.0f}%" if fraction is not None else f"{human_bytes(t.rate)}/s"
        cells[(row, t.target_host)] = MatrixCell(RUNNING, t.job, t.target, progress=progress,
                                                 message=t.stream)
    if filter_text:
        needle = filter_text.lower()
        rows = [r for r in rows if needle in r.lower()]
    return Matrix(tuple(locations), tuple(rows), cells, row_jobs)


# --- dataset detail ---------------------------------------------------------------------------


def detail_columns(detail: DatasetDetail) -> list[tuple[str, str]]:
    cols = [("guid", "guid")]
    for i, (name, note) in enumerate(zip(detail.columns, detail.notes)):
        host = name if i and name.startswith("s3:") else name.split(":", 1)[0]  # S3 columns: s3:NAME
        label = f"{host} (source)" if i == 0 else (f"{host} ({note})" if note else host)
        cols.append((f"c{i}", label))
    return cols


def _detail_cell(cell: DetailCell | None) -> Text:
    if cell is None:
        return Text("  ·", style="dim")
    if cell.divergent:
        return Text(f"✗ {cell.name}", style="bold red")
    if cell.base:
        return Text(f"◆ {cell.name}", style="bold green")
    if not cell.selected:
        return Text(f"∘ {cell.name}", style="dim")
    return Text(f"  {cell.name}")


def detail_rows(detail: DatasetDetail) -> list[tuple[str, tuple[Text | str, ...]]]:
    return [(f"g:{row.guid}", (Text(f"{row.guid & 0xFFFFFFFFFFFFFFFF:016x}"[-10:], style="dim"),
                               *(_detail_cell(c) for c in row.cells)))
            for row in detail.rows]

