"""The widgets: a table that only redraws what changed, the three views, the help screen."""

from __future__ import annotations

from typing import Sequence

from rich.text import Text
from textual.app import ComposeResult
from textual.binding import Binding
from textual.containers import Vertical, VerticalScroll
from textual.screen import ModalScreen
from textual.widgets import DataTable, Static

from zrelay.tui.model import DETAIL_LEGEND, HOST_COLUMNS, LEGEND

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
        yield Static(LEGEND, id="matrix-legend", classes="legend")

    @property
    def table(self) -> LiveTable:
        return self.query_one("#matrix-table", LiveTable)


class DetailView(Vertical):
    """Snapshot lists of the source and each location side by side, one GUID per row."""

    def compose(self) -> ComposeResult:
        yield Static("Select a cell in the matrix (Enter) to see a dataset here.", id="detail-title")
        yield LiveTable(id="detail-table", cursor_type="row")
        yield Static(DETAIL_LEGEND, id="detail-legend", classes="legend")

    @property
    def table(self) -> LiveTable:
        return self.query_one("#detail-table", LiveTable)

    @property
    def title(self) -> Static:
        return self.query_one("#detail-title", Static)


HELP = """\
[b]zrelay tui[/b]: live view of the fleet, fed by the state store (any process's runs)
and by status queries of every host (they fill in as hosts answer).

[b]Keys[/b]
  [b]r[/b]        refresh: query every host again
  [b]s[/b]        sync the selected job (runs `zrelay sync JOB` as a separate process)
  [b]p[/b]        push the selected job to S3 (`zrelay s3-push JOB`)
  [b]/[/b]        filter hosts and datasets; Esc clears
  [b]Enter[/b]    matrix: open the dataset detail of the cell
  [b]Esc[/b]      back from the detail
  [b]1 2 3[/b]    Hosts, Matrix, Detail
  [b]?[/b]        this help;  [b]q[/b] quit

[b]Matrix[/b]
  ✓ in-sync   ↓ behind N   ∅ missing (needs a full send)   ↺ resumable
  ✗ diverged  ≠ no common base   ∘ no snapshots   ↻ transfer running
  ✂ broken (an S3 chain lacks a send)   ? unreachable   ! error   … checking   · not a target

[b]Detail[/b]
  ◆ common base   ✗ divergent (target only)   ∘ not selected by the filter   · absent
"""


class HelpScreen(ModalScreen[None]):
    """Keys and glyphs; any of Esc, ? or q closes it."""

    BINDINGS = [Binding("escape,question_mark,q", "dismiss_help", "Close")]

    def compose(self) -> ComposeResult:
        with VerticalScroll(id="help-box"):
            yield Static(HELP, id="help-text")

    def action_dismiss_help(self) -> None:
        self.dismiss(None)
