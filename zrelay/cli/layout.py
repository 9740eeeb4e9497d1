"""Text tables and paragraphs laid out for the width there is (pure: no rich, no I/O).

Why not rich's tables: they fold every cell to fit, so a snapshot name ends up
as ``zrelay_2026-12-0`` / ``5T19:41:32Z`` and a row takes many lines. Here a
table is one line per row. Each cell can offer shorter forms; when the line
is too wide, the table's *steps* say which column gives way first (a shorter
form, or the column left out), in the order the command chooses. Text is
never cut inside a word: if even the narrowest layout does not fit, the caller
shows each row as a short block instead (``stack``), wrapped at spaces.

``width`` None means no limit (not a terminal and no ``COLUMNS``): everything
at its fullest, nothing padded past the last column, nothing wrapped, so a pipe
gets lines that grep and copy-paste whole.

A line is a list of (text, style) segments; the style is a rich style name that
a terminal shows and a pipe ignores.
"""

from __future__ import annotations

import re
from dataclasses import dataclass, field
from typing import Mapping, Sequence

#: A step's level that leaves the column out.
DROP = -1

Segment = tuple[str, str]
Line = list[Segment]


@dataclass(frozen=True)
class Cell:
    """A table cell: its forms, fullest first, and a style for terminals."""

    forms: tuple[str, ...]
    style: str = ""

    def form(self, level: int) -> str:
        return self.forms[min(level, len(self.forms) - 1)] if self.forms else ""


def cell(*forms: str, style: str = "") -> Cell:
    """A cell with ``forms``: form ``i`` is shown at level ``i`` (the last one at every level past it)."""
    return Cell(tuple(forms) or ("",), style)


@dataclass(frozen=True)
class Column:
    key: str
    header: str
    right: bool = False   # numbers read better right-aligned


@dataclass
class Table:
    """Columns, rows of cells by column key, and the order in which columns give way."""

    columns: Sequence[Column]
    rows: Sequence[Mapping[str, Cell]]
    steps: Sequence[tuple[str, int]] = ()
    indent: int = 0
    gap: int = 2
    levels: dict[str, int] = field(default_factory=dict)
    widths: dict[str, int] = field(default_factory=dict)

    def _measure(self, levels: Mapping[str, int]) -> tuple[dict[str, int], int]:
        widths: dict[str, int] = {}
        for col in self.columns:
            level = levels.get(col.key, 0)
            if level == DROP:
                continue
            texts = [row[col.key].form(level) for row in self.rows if col.key in row]
            if not any(texts):
                continue   # a column nobody has anything to say in is left out
            widths[col.key] = max([len(col.header), *(len(t) for t in texts)])
        total = self.indent + sum(widths.values()) + self.gap * max(0, len(widths) - 1)
        return widths, total

    def fit(self, width: int | None) -> bool:
        """Choose each column's form for ``width``; False when even the narrowest layout is wider."""
        levels: dict[str, int] = {}
        widths, total = self._measure(levels)
        steps = list(self.steps)
        while width is not None and total > width and steps:
            key, level = steps.pop(0)
            levels[key] = level
            widths, total = self._measure(levels)
        self.levels, self.widths = levels, widths
        return width is None or total <= width

    def header(self) -> Line:
        return self._line({c.key: Cell((c.header,), "bold") for c in self.columns}, header=True)

    def row(self, index: int) -> Line:
        return self._line(self.rows[index])

    def _line(self, cells: Mapping[str, Cell], header: bool = False) -> Line:
        segments: Line = [(" " * self.indent, "")] if self.indent else []
        shown = [c for c in self.columns if c.key in self.widths]
        for i, col in enumerate(shown):
            c = cells.get(col.key, Cell(("",)))
            text = c.form(0 if header else self.levels.get(col.key, 0))
            w = self.widths[col.key]
            last = i == len(shown) - 1
            pad = w - len(text)
            if col.right and not header:
                segments.append((" " * pad, ""))
                segments.append((text, c.style))
            else:
                segments.append((text, c.style))
                if not last:
                    segments.append((" " * pad, ""))
            if not last:
                segments.append((" " * self.gap, ""))
        return trim(segments)


def trim(line: Line) -> Line:
    """The line without trailing spaces (a pipe gets no padding)."""
    out = list(line)
    while out and not out[-1][0].strip():
        out.pop()
    if out:
        text, style = out[-1]
        out[-1] = (text.rstrip(), style)
    return out


def plain(line: Line) -> str:
    return "".join(text for text, _style in line)


def wrap(text: str | Line, width: int | None, indent: int = 0, hanging: int | None = None,
         style: str = "") -> list[Line]:
    """``text`` (plain, or styled segments) as lines of at most ``width`` columns, broken only at
    spaces: a word longer than the width stays whole on a line of its own. ``width`` None: one line."""
    segments: Line = [(text, style)] if isinstance(text, str) else list(text)
    first = " " * indent
    rest = " " * (indent if hanging is None else hanging)
    if not "".join(t for t, _ in segments).strip():
        return []
    if width is None:
        return [trim([(first, ""), *segments])]
    # words, each with the run of spaces before it (kept inside a line, dropped at a break);
    # a word may span segments of different styles
    words: list[tuple[str, list[Segment]]] = [("", [])]
    for part, part_style in segments:
        for chunk in re.split(r"( +)", part):
            if not chunk:
                continue
            if chunk.startswith(" "):
                words.append((chunk, []))
            else:
                words[-1][1].append((chunk, part_style))
    lines: list[Line] = []
    current: Line = [(first, "")]
    used = len(first)
    empty = True
    for space, word in words:
        if not word:
            continue
        size = sum(len(t) for t, _ in word)
        gap = space or " "
        if not empty and used + len(gap) + size > width:
            lines.append(trim(current))
            current, used, empty = [(rest, "")], len(rest), True
        if not empty:
            current.append((gap, ""))
            used += len(gap)
        current.extend(word)
        used += size
        empty = False
    lines.append(trim(current))
    return lines


def stack(title: Cell, parts: Sequence[Cell], width: int | None, indent: int = 2) -> list[Line]:
    """One row as a block for widths no table fits: the title, then its other cells joined by `` · ``
    and wrapped at the separators and spaces."""
    lines: list[Line] = [[(" " * indent, ""), (title.form(0), title.style)]]
    pieces = [p for p in parts if p.form(0)]
    if not pieces:
        return lines
    lead = " " * (indent + 2)
    current: Line = [(lead, "")]
    used = len(lead)
    for i, piece in enumerate(pieces):
        text = piece.form(0)
        sep = " · " if i else ""
        if width is not None and i and used + len(sep) + len(text) > width:
            lines.append(current)
            current, used, sep = [(lead, "")], len(lead), ""
        if sep:
            current.append((sep, "dim"))
        current.append((text, piece.style))
        used += len(sep) + len(text)
    lines.append(current)
    return lines
