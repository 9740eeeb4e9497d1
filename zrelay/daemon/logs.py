"""The daemon's log: one line per event, made for journald and for ``grep``.

Text lines read ``LEVEL message key=value …``. journald stamps each line itself, so a line
carries no time unless the stream is a terminal (then a local time and a coloured level, unless
``NO_COLOR`` is set). When stderr is the journal's stream (systemd's ``JOURNAL_STREAM`` names
it), each line starts with its syslog priority (``<3>``), which journald strips and records, so
``journalctl -p warning`` finds the warnings. ``json`` gives one object per line (``ts`` in ISO
UTC, ``level``, ``msg``, then the fields) for log shippers.

A line never wraps: newlines and other control characters in messages and values are escaped.
Writing never raises (a closed or full stream loses the line, not the daemon).
"""

from __future__ import annotations

import json
import os
import sys
import threading
import time
from datetime import datetime, timezone
from enum import Enum
from typing import TextIO

from zrelay.events import Event, JobFinished, Outcome, TransferFinished, TransferStarted

FORMATS = ("text", "json")

#: syslog priorities journald reads from a ``<N>`` line prefix (sd-daemon(3)).
_PRIORITY = {"INFO": 6, "WARNING": 4, "ERROR": 3}
_COLOUR = {"INFO": "\x1b[2m", "WARNING": "\x1b[33m", "ERROR": "\x1b[1;31m"}
_RESET = "\x1b[0m"
#: Field names the JSON form uses itself; a field of the same name is written as ``NAME_``.
_RESERVED = ("ts", "level", "msg")
#: Characters that make a text value need quotes (besides controls and non-ASCII spaces).
_QUOTE_IF = set(' "=\\')


def _escape_controls(text: str) -> str:
    """Newlines, tabs and other control characters as backslash escapes: one physical line."""
    if text.isprintable():
        return text
    out: list[str] = []
    for ch in text:
        if ch == "\n":
            out.append("\\n")
        elif ch == "\r":
            out.append("\\r")
        elif ch == "\t":
            out.append("\\t")
        elif not ch.isprintable() and ch != " ":
            out.append(f"\\x{ord(ch):02x}" if ord(ch) < 0x100 else f"\\u{ord(ch):04x}")
        else:
            out.append(ch)
    return "".join(out)


def _plain(value: object) -> object:
    """Enums by value (an Outcome is ``ok``), floats rounded to milliseconds."""
    if isinstance(value, Enum):
        return value.value
    if isinstance(value, float):
        return round(value, 3)
    return value


def format_value(value: object) -> str:
    """A field's value in a text line: bare when it is one word, else double-quoted with
    backslash escapes (``error="no route to host"``); ``None`` is ``-``."""
    value = _plain(value)
    if value is None:
        return "-"
    if isinstance(value, bool):
        text = "true" if value else "false"
    else:
        text = str(value)
    if text and text.isprintable() and not (_QUOTE_IF & set(text)):
        return text
    quoted = text.replace("\\", "\\\\").replace('"', '\\"')
    return f'"{_escape_controls(quoted)}"'


def _journal_stream(stream: TextIO) -> bool:
    """True when ``stream`` is the socket systemd connected to the journal (``JOURNAL_STREAM``
    holds its ``device:inode``)."""
    want = os.environ.get("JOURNAL_STREAM", "")
    if not want:
        return False
    try:
        st = os.fstat(stream.fileno())
    except (OSError, ValueError, AttributeError):
        return False
    return want == f"{st.st_dev}:{st.st_ino}"


def _isatty(stream: TextIO) -> bool:
    try:
        return stream.isatty()
    except (OSError, ValueError, AttributeError):
        return False


class EventLog:
    """One line per event on stderr (or ``stream``): ``text`` or ``json`` (``--log-format``).

    Thread-safe: the service loop and its worker threads write whole lines.
    """

    def __init__(self, fmt: str = "text", stream: TextIO | None = None) -> None:
        if fmt not in FORMATS:
            raise ValueError(f"log format {fmt!r}: use one of {', '.join(FORMATS)}")
        self.fmt = fmt
        self.stream = stream if stream is not None else sys.stderr
        tty = _isatty(self.stream)
        self._timestamps = fmt == "text" and tty
        self._colour = fmt == "text" and tty and not os.environ.get("NO_COLOR")
        self._priority = fmt == "text" and not tty and _journal_stream(self.stream)
        self._lock = threading.Lock()

    def info(self, msg: str, /, **fields: object) -> None:
        self._write("INFO", msg, fields)

    def warning(self, msg: str, /, **fields: object) -> None:
        self._write("WARNING", msg, fields)

    def error(self, msg: str, /, **fields: object) -> None:
        self._write("ERROR", msg, fields)

    def event(self, event: Event) -> None:
        """An engine event as one line: a stream's start and end, a job's result on a target.

        JobStarted and JobPlanned are left to the run's own lines (the service logs a run's start
        and result); TransferProgress is never logged, it would flood the journal.
        """
        if isinstance(event, TransferStarted):
            self.info("transfer started", job=event.job, target=event.target, stream=event.stream,
                      source_host=event.source_host, target_host=event.target_host,
                      estimate=event.estimate)
        elif isinstance(event, TransferFinished):
            log = self.info if event.ok else self.warning
            log("transfer finished" if event.ok else "transfer failed", job=event.job,
                target=event.target, stream=event.stream, bytes=event.done, seconds=event.seconds)
        elif isinstance(event, JobFinished):
            outcome = Outcome(event.outcome)
            level = {Outcome.FAILED: self.error, Outcome.REFUSED: self.warning,
                     Outcome.BUSY: self.warning}.get(outcome, self.info)
            fields: dict[str, object] = {"job": event.job, "source": event.source,
                                         "target": event.target, "outcome": outcome,
                                         "bytes": event.bytes, "seconds": event.seconds}
            if event.failed_host:
                fields["failed_host"] = event.failed_host
            if event.message:
                fields["message"] = event.message
            level("job finished", **fields)

    def line(self, level: str, msg: str, fields: dict[str, object]) -> str:
        """The line ``level`` (INFO, WARNING, ERROR) would write, without its newline."""
        if self.fmt == "json":
            record: dict[str, object] = {
                "ts": datetime.now(timezone.utc).isoformat(timespec="milliseconds").replace("+00:00", "Z"),
                "level": level.lower(), "msg": msg}
            for key, value in fields.items():
                record[f"{key}_" if key in _RESERVED else key] = _plain(value)
            return json.dumps(record, ensure_ascii=False, default=str)
        parts: list[str] = []
        if self._priority:
            parts.append(f"<{_PRIORITY[level]}>")
        if self._timestamps:
            parts.append(time.strftime("%Y-%m-%d %H:%M:%S "))
        parts.append(f"{_COLOUR[level]}{level}{_RESET}" if self._colour else level)
        parts.append(f" {_escape_controls(msg)}")
        for key, value in fields.items():
            parts.append(f" {key}={format_value(value)}")
        return "".join(parts)

    def _write(self, level: str, msg: str, fields: dict[str, object]) -> None:
        text = self.line(level, msg, fields) + "\n"
        with self._lock:
            try:
                self.stream.write(text)
                self.stream.flush()
            except (OSError, ValueError):
                pass
