"""Cron expressions for snapshot schedules: parse five fields, find the next tick (pure, UTC).

The dialect is Vixie cron's: ``*``, ``*/n``, ``a``, ``a-b``, ``a-b/n``, ``a/n`` (a to the end,
every n), lists ``a,b``, month names ``jan``..``dec`` and day names ``sun``..``sat`` (7 is
Sunday too), and ``@hourly``, ``@daily``, ``@weekly``, ``@monthly``, ``@yearly``. When both
day-of-month and day-of-week are restricted, a day matching either runs (cron's rule).
Ticks are whole minutes in UTC: no time zone, no daylight saving time.
"""

from __future__ import annotations

import calendar
import datetime as _dt
from bisect import bisect_left

from zrelay.inventory.policy import CronSpec

_FIELDS = (("minute", 0, 59), ("hour", 0, 23), ("day-of-month", 1, 31), ("month", 1, 12),
           ("day-of-week", 0, 7))
_MONTHS = {name: i + 1 for i, name in enumerate(
    ("jan", "feb", "mar", "apr", "may", "jun", "jul", "aug", "sep", "oct", "nov", "dec"))}
_DAYS = {name: i for i, name in enumerate(("sun", "mon", "tue", "wed", "thu", "fri", "sat"))}
_MACROS = {"@hourly": "0 * * * *", "@daily": "0 0 * * *", "@midnight": "0 0 * * *",
           "@weekly": "0 0 * * 0", "@monthly": "0 0 1 * *", "@yearly": "0 0 1 1 *",
           "@annually": "0 0 1 1 *"}
_EPOCH = _dt.datetime(1970, 1, 1, tzinfo=_dt.UTC)
#: The longest a valid expression can wait for its next tick: 29 February skips 2100, so eight
#: years (2096 → 2104); beyond this an expression never matches (parse_cron refuses those).
_HORIZON_YEARS = 9


def _value(text: str, field: str, lo: int, hi: int, names: dict[str, int]) -> int:
    word = text.lower()
    if word in names:
        return names[word]
    if not text.isdigit():
        extra = {"month": " or a month name (jan..dec)", "day-of-week": " or a day name (sun..sat)"}
        raise ValueError(f"{field}: {text!r} is not a number{extra.get(field, '')}")
    value = int(text)
    if not lo <= value <= hi:
        raise ValueError(f"{field}: {value} is outside {lo}-{hi}")
    return value


def _field(text: str, field: str, lo: int, hi: int) -> tuple[int, ...]:
    names = _MONTHS if field == "month" else _DAYS if field == "day-of-week" else {}
    values: set[int] = set()
    for part in text.split(","):
        if not part:
            raise ValueError(f"{field}: empty list item in {text!r}")
        span, slash, step_text = part.partition("/")
        step = 1
        if slash:
            if not step_text.isdigit() or int(step_text) == 0:
                raise ValueError(f"{field}: step {step_text!r} must be a whole number of at least 1")
            step = int(step_text)
        if span == "*":
            start, end = lo, hi
        elif "-" in span:
            a, _, b = span.partition("-")
            start, end = _value(a, field, lo, hi, names), _value(b, field, lo, hi, names)
            if start > end:
                raise ValueError(f"{field}: range {span} runs backwards")
        else:
            start = _value(span, field, lo, hi, names)
            end = hi if slash else start
        values.update(range(start, end + 1, step))
    if field == "day-of-week" and 7 in values:
        values.discard(7)
        values.add(0)
    return tuple(sorted(values))


def parse_cron(text: str) -> CronSpec:
    """A CronSpec from a five-field expression or a macro; ValueError with one line naming the
    field at fault (``hour: 25 is outside 0-23``)."""
    stripped = text.strip()
    expanded = _MACROS.get(stripped.lower(), stripped)
    if expanded.startswith("@"):
        raise ValueError(f"unknown cron macro {stripped!r} (known: {', '.join(sorted(_MACROS))})")
    parts = expanded.split()
    if len(parts) != 5:
        raise ValueError(f"a cron expression has 5 fields (minute hour day-of-month month day-of-week), "
                         f"{stripped!r} has {len(parts)}")
    minutes, hours, days, months, weekdays = (
        _field(part, name, lo, hi) for part, (name, lo, hi) in zip(parts, _FIELDS))
    spec = CronSpec(text=stripped, minutes=minutes, hours=hours, days=days, months=months,
                    weekdays=weekdays, dom_any=parts[2].startswith("*"), dow_any=parts[4].startswith("*"))
    if spec.dow_any and not spec.dom_any:
        # only the day of month decides: 31 in February and the like may never come
        longest = {m: 29 if m == 2 else calendar.monthrange(2001, m)[1] for m in months}
        if not any(d <= longest[m] for m in months for d in days):
            raise ValueError(f"day-of-month: {parts[2]} never occurs in month {parts[3]}, "
                             f"so {stripped!r} never runs")
    return spec


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
