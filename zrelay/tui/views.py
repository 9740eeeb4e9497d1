"""The widgets: a table that only redraws what changed, the three views, the help screen."""

from __future__ import annotations

import textwrap
from typing import Sequence

from rich.markup import escape
from rich.text import Text
from textual.app import ComposeResult
from textual.binding import Binding
from textual.containers import Vertical, VerticalScroll
from textual.screen import ModalScreen
from textual.widgets import DataTable, Static

from zrelay.tui.model import (DETAIL_LEGEND_ENTRIES, DETAIL_SYMBOLS, HOST_COLUMNS, LEGEND_ENTRIES, SYMBOLS,
                              pack)

Cells = tuple[Text | str, ...]
#: (key, label) or (key, label, width): a fixed width keeps a live table from shifting as values change.
Column = tuple[str, str] | tuple[str, str, int]


class LiveTable(DataTable):
    """A DataTable fed whole snapshots; it updates changed cells in place so nothing flickers.

    Rows are only rebuilt when the set or order of rows changes, and then the
    cursor stays on the same row key, so a refresh never moves the selection.
    """

    def __init__(self, **kwargs: object) -> None:
        super().__init__(**kwargs)  # type: ignore[arg-type]
        self._columns_shown: tuple[Column, ...] = ()
        self._rows_shown: dict[str, Cells] = {}

    @property
    def row_keys(self) -> list[str]:
        return list(self._rows_shown)

    def cells_of(self, key: str) -> Cells | None:
        return self._rows_shown.get(key)

    def selected_key(self) -> str | None:
        if not self._rows_shown or self.cursor_row < 0 or self.cursor_row >= len(self._rows_shown):
            return None
        return self.row_keys[self.cursor_row]

    def selected_column(self) -> str | None:
        if not self._columns_shown or self.cursor_column >= len(self._columns_shown):
            return None
        return self._columns_shown[self.cursor_column][0]

    def show(self, columns: Sequence[Column], rows: Sequence[tuple[str, Cells]]) -> None:
        columns = tuple(columns)
        keep_row, keep_col = self.selected_key(), self.cursor_column
        if columns != self._columns_shown:
            self.clear(columns=True)
            for column in columns:
                self.add_column(column[1], key=column[0], width=column[2] if len(column) > 2 else None)
            self._columns_shown = columns
            self._rows_shown = {}
        keys = [k for k, _ in rows]
        if keys == self.row_keys:
            for key, cells in rows:
                old = self._rows_shown[key]
                for column, new, prev in zip(columns, cells, old):
                    if new != prev:
                        self.update_cell(key, column[0], new, update_width=len(column) == 2)
                self._rows_shown[key] = cells
            return
        self.clear()
        for key, cells in rows:
            self.add_row(*cells, key=key)
        self._rows_shown = dict(rows)
        if keep_row in self._rows_shown:
            self.move_cursor(row=keys.index(keep_row), column=keep_col, animate=False)


class Legend(Static):
    """A legend whose lines break between entries, never inside one ("≠ no common base")."""

    def __init__(self, entries: Sequence[str], sep: str, **kwargs: str) -> None:
        super().__init__(sep.join(entries), markup=False, **kwargs)  # type: ignore[arg-type]
        self.entries, self.sep = tuple(entries), sep

    def on_resize(self) -> None:
        width = self.content_region.width
        if width > 0:
            self.update("\n".join(pack(self.entries, width, self.sep)))


class HostsView(Vertical):
    """Each host, its active transfers (from the store: any process) and its last error."""

    def compose(self) -> ComposeResult:
        yield LiveTable(id="hosts-table", cursor_type="row")

    def on_mount(self) -> None:
        self.table.show(HOST_COLUMNS, [])

    @property
    def table(self) -> LiveTable:
        return self.query_one("#hosts-table", LiveTable)


class MatrixView(Vertical):
    """Datasets × locations; Enter on a cell opens the dataset detail."""

    def compose(self) -> ComposeResult:
        yield LiveTable(id="matrix-table", cursor_type="cell")
        yield Legend(LEGEND_ENTRIES, "  ", id="matrix-legend", classes="legend")

    @property
    def table(self) -> LiveTable:
        return self.query_one("#matrix-table", LiveTable)


class DetailView(Vertical):
    """Snapshot lists of the source and each location side by side, one GUID per row."""

    def compose(self) -> ComposeResult:
        yield Static("Select a cell in the matrix (Enter) to see a dataset here.", id="detail-title")
        yield LiveTable(id="detail-table", cursor_type="row")
        yield Legend(DETAIL_LEGEND_ENTRIES, "   ", id="detail-legend", classes="legend")

    @property
    def table(self) -> LiveTable:
        return self.query_one("#detail-table", LiveTable)

    @property
    def title(self) -> Static:
        return self.query_one("#detail-title", Static)


class ScheduleView(Vertical):
    """The attached daemon's timetable: every job and kind, by next run (only when attached)."""

    def compose(self) -> ComposeResult:
        yield Static("", id="schedule-title")
        yield LiveTable(id="schedule-table", cursor_type="row")

    @property
    def table(self) -> LiveTable:
        return self.query_one("#schedule-table", LiveTable)

    @property
    def title(self) -> Static:
        return self.query_one("#schedule-title", Static)


HELP_WIDTH = 74  # the help's text fits an 80-column terminal (box border and padding: 6 columns)
KEYS = (
    ("r", "refresh now: ask every host again"),
    ("s", "sync the selected job (`zrelay sync JOB`, a separate process)"),
    ("p", "push the selected job to S3 (`zrelay s3-push JOB`)"),
    ("/", "filter hosts and datasets; Esc clears"),
    ("Enter", "matrix: open the dataset detail of the cell;  Esc: back"),
    ("1 2 3", "Hosts, Matrix, Detail;  ? this help;  q quit"),
)
#: Attached to the daemon, `r` re-reads its survey, `n` asks it to run, `4` shows its schedule.
ATTACHED_KEYS = (
    ("n", "ask the zrelay daemon to run the selected job now (r: re-read)"),
    *KEYS[1:-1],
    ("1-4", "Hosts, Matrix, Detail, Schedule;  ? this help;  q quit"),
)


def _grid(entries: Sequence[str], columns: int, width: int) -> list[str]:
    """``entries`` in ``columns`` columns, filled row by row, each line at most ``width`` wide."""
    cell = (width - 2) // columns
    rows = [entries[i:i + columns] for i in range(0, len(entries), columns)]
    return ["  " + "".join(e.ljust(cell) for e in row).rstrip() for row in rows]


def help_text(refresh_interval: float | None = None, attached: bool = False) -> str:
    """The help: keys, then every matrix and detail glyph from the same tables as the legends.

    It fits 80×24 without scrolling: every line at most ``HELP_WIDTH`` wide, 22 lines at most.
    """
    when = (f"every {refresh_interval:g} s, " if refresh_interval else "") + "when any run ends, and on r"
    text = (f"zrelay tui: hosts, transfers (any process's) and divergence, live. Every host is asked again "
            f"{when}.")
    if attached:
        text = ("zrelay tui: attached to the zrelay daemon: its last survey of the hosts (re-read when "
                "it makes a new one) and its schedule; no host is asked.")
    intro = textwrap.wrap(text, HELP_WIDTH)
    lines = [escape(line) for line in intro]
    lines[0] = lines[0].replace("zrelay tui:", "[b]zrelay tui[/b]:", 1)
    lines += ["", "[b]Keys[/b]"]
    lines += [f"  [b]{escape(key):<6}[/b] {escape(what)}" for key, what in (ATTACHED_KEYS if attached else KEYS)]
    lines += ["", "[b]Matrix[/b]"]
    lines += [escape(line) for line in _grid([f"{s.glyph} {s.name}" for s in SYMBOLS], 4, HELP_WIDTH)]
    hints = [f"{s.glyph} {s.hint}" for s in SYMBOLS if s.hint]
    lines += [escape("  " + line) for line in pack(hints, HELP_WIDTH - 2, "; ")]
    lines += ["", "[b]Detail[/b]"]
    lines += [escape(line) for line in _grid([f"{g} {n}" for g, n in DETAIL_SYMBOLS], 2, HELP_WIDTH)]
    return "\n".join(lines)


class HelpScreen(ModalScreen[None]):
    """Keys and glyphs; any of Esc, ? or q closes it."""

    BINDINGS = [Binding("escape,question_mark,q", "dismiss_help", "Close")]

    def __init__(self, refresh_interval: float | None = None, attached: bool = False) -> None:
        super().__init__()
        self.text = help_text(refresh_interval, attached)

    def compose(self) -> ComposeResult:
        with VerticalScroll(id="help-box"):
            yield Static(self.text, id="help-text")

    def action_dismiss_help(self) -> None:
        self.dismiss(None)
