"""Cron schedules: the next tick of a parsed expression (pure, UTC).

Expressions are read once, by the inventory (zrelay.inventory.cron.parse_cron, re-exported here).
When both day-of-month and day-of-week are restricted, a day matching either runs (cron's rule).
Ticks are whole minutes in UTC: no time zone, no daylight saving time.
"""

from __future__ import annotations

import calendar
import datetime as _dt
from bisect import bisect_left

from zrelay.inventory.cron import parse_cron
from zrelay.inventory.policy import CronSpec

__all__ = ["next_tick", "parse_cron"]

_EPOCH = _dt.datetime(1970, 1, 1, tzinfo=_dt.UTC)
#: The longest a valid expression can wait for its next tick: 29 February skips 2100, so eight
#: years (2096 → 2104); beyond this an expression never matches (parse_cron refuses those).
_HORIZON_YEARS = 9


def _day_matches(spec: CronSpec, day: _dt.date) -> bool:
    in_dom = day.day in spec.days
    in_dow = (day.isoweekday() % 7) in spec.weekdays
    if spec.dom_any or spec.dow_any:
        return in_dom and in_dow
    return in_dom or in_dow


def _first_at_least(values: tuple[int, ...], value: int) -> int | None:
    i = bisect_left(values, value)
    return values[i] if i < len(values) else None


def next_tick(spec: CronSpec, after: int) -> int:
    """The first tick strictly after ``after`` (unix seconds, UTC), in unix seconds.

    Walks months, then days, then hours, then minutes, jumping over whatever does not match:
    a yearly expression costs a handful of steps, not a minute-by-minute scan.
    """
    start = (after // 60 + 1) * 60
    moment = _EPOCH + _dt.timedelta(seconds=start)
    year, month, day = moment.year, moment.month, moment.day
    hour, minute = moment.hour, moment.minute
    last_year = year + _HORIZON_YEARS
    while year <= last_year:
        if month not in spec.months:
            nxt = _first_at_least(spec.months, month + 1)
            if nxt is None:
                year, month = year + 1, spec.months[0]
            else:
                month = nxt
            day, hour, minute = 1, 0, 0
            continue
        length = calendar.monthrange(year, month)[1]
        while day <= length and not _day_matches(spec, _dt.date(year, month, day)):
            day, hour, minute = day + 1, 0, 0
        if day > length:
            month, day, hour, minute = month + 1, 1, 0, 0
            if month > 12:
                year, month = year + 1, 1
            continue
        found = None
        h = _first_at_least(spec.hours, hour)
        while h is not None:
            m = _first_at_least(spec.minutes, minute if h == hour else 0)
            if m is not None:
                found = (h, m)
                break
            h = _first_at_least(spec.hours, h + 1)
        if found is not None:
            at = _dt.datetime(year, month, day, found[0], found[1], tzinfo=_dt.UTC)
            return int((at - _EPOCH).total_seconds())
        day, hour, minute = day + 1, 0, 0
        if day > length:
            month, day = month + 1, 1
            if month > 12:
                year, month = year + 1, 1
    raise ValueError(f"cron {spec.text!r} has no tick in the {_HORIZON_YEARS} years after {after}")
