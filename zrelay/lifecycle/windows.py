"""When the daemon's windows let a run start (pure, UTC, whole minutes).

A run may start only while every window that applies to it is open at once. Windows repeat each
day, so the first moment they are all open is either the asked moment or one of their openings
within the next 24 hours; if none of those works, they never overlap.
"""

from __future__ import annotations

import datetime as _dt
from collections.abc import Sequence

from zrelay.inventory.service import Window

__all__ = ["all_open", "clock", "first_open", "when_text", "window_text"]

_DAY = 86400


def clock(minute_of_day: int) -> str:
    """``HH:MM`` for a minute of the day (1440 is written ``24:00``)."""
    return f"{minute_of_day // 60:02d}:{minute_of_day % 60:02d}"


def window_text(window: Window) -> str:
    """How the user knows this window: as written, else ``22:00-06:00``."""
    return window.text or f"{clock(window.start)}-{clock(window.end)}"


def _minute_of_day(ts: float) -> int:
    return int(ts // 60) % 1440


def all_open(windows: Sequence[Window], ts: float) -> bool:
    """True when every one of ``windows`` is open at ``ts`` (none: always)."""
    minute = _minute_of_day(ts)
    return all(w.is_open(minute) for w in windows)


def first_open(windows: Sequence[Window], ts: float) -> float | None:
    """The first moment at or after ``ts`` when every window is open; None: they never are at once.

    ``ts`` itself when they are open then; else the earliest opening (start of a window) in the next
    day at which all of them are open.
    """
    if all_open(windows, ts):
        return ts
    day_start = (int(ts) // _DAY) * _DAY
    candidates = sorted({float(day_start + d * _DAY + w.start * 60)
                         for w in windows if w.start != w.end for d in (0, 1)})
    for candidate in candidates:
        if ts < candidate <= ts + _DAY and all_open(windows, candidate):
            return candidate
    return None


def when_text(ts: float, now: float) -> str:
    """``10:04 UTC`` on the day of ``now``, else ``2024-05-01 10:04 UTC``."""
    moment = _dt.datetime.fromtimestamp(ts, _dt.UTC)
    if int(ts // _DAY) == int(now // _DAY):
        return moment.strftime("%H:%M UTC")
    return moment.strftime("%Y-%m-%d %H:%M UTC")
