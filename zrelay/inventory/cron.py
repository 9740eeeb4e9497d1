"""Cron expressions as a job's ``snapshot: {cron: ...}`` writes them, read into a CronSpec.

In the inventory layer so an expression is refused when the file is read, at its
file:line:column; zrelay.lifecycle only computes ticks from the CronSpec. Five fields
(minute hour day-of-month month day-of-week), UTC. Each field is a comma list of ``*``,
``*/n``, ``a``, ``a-b`` or ``a-b/n``; months may be named jan..dec and weekdays sun..sat
(7 is Sunday too). ``@hourly``, ``@daily``, ``@weekly``, ``@monthly`` and ``@yearly``
stand for the usual expressions.
"""

from __future__ import annotations

import re

from zrelay.inventory.policy import CronSpec

#: The macros and the expressions they stand for (as Vixie cron defines them).
MACROS = {
    "@hourly": "0 * * * *",
    "@daily": "0 0 * * *",
    "@weekly": "0 0 * * 0",
    "@monthly": "0 0 1 * *",
    "@yearly": "0 0 1 1 *",
}

_NUMBER = re.compile(r"[0-9]+")  # ASCII digits only (str.isdigit takes '²')
_MONTHS = ("jan", "feb", "mar", "apr", "may", "jun", "jul", "aug", "sep", "oct", "nov", "dec")
_LONGEST = (31, 29, 31, 30, 31, 30, 31, 31, 30, 31, 30, 31)  # days of each month, at most
_DAYS = ("sun", "mon", "tue", "wed", "thu", "fri", "sat")

#: (name used in messages, lowest, highest, names for the values from ``lowest`` on, or None).
_FIELDS: tuple[tuple[str, int, int, tuple[str, ...] | None], ...] = (
    ("minute", 0, 59, None),
    ("hour", 0, 23, None),
    ("day-of-month", 1, 31, None),
    ("month", 1, 12, _MONTHS),
    ("day-of-week", 0, 7, _DAYS),   # 7 is Sunday again, as in every cron
)


def parse_cron(text: str) -> CronSpec:
    """The CronSpec of ``text``; ValueError with a one-line message naming the field at fault."""
    if not isinstance(text, str) or not text.strip():
        raise ValueError("empty cron expression; expected five fields (minute hour "
                         "day-of-month month day-of-week) or one of " + ", ".join(MACROS))
    written = text.strip()
    expression = written
    if written.startswith("@"):
        expanded = MACROS.get(written.lower())
        if expanded is None:
            raise ValueError(f"unknown macro {written!r}; expected one of {', '.join(MACROS)}")
        expression = expanded
    fields = expression.split()
    if len(fields) != len(_FIELDS):
        raise ValueError(f"expected 5 fields (minute hour day-of-month month day-of-week), "
                         f"got {len(fields)}")
    values = [_field(field, *spec) for field, spec in zip(fields, _FIELDS)]
    weekdays = tuple(sorted({day % 7 for day in values[4]}))
    # Vixie cron's rule: a field starting with '*' (also '*/2') does not restrict the day
    dom_any, dow_any = fields[2].startswith("*"), fields[4].startswith("*")
    if dow_any and not any(day <= _LONGEST[month - 1] for day in values[2] for month in values[3]):
        months = ",".join(_MONTHS[m - 1] for m in values[3])
        raise ValueError(f"day-of-month: no day {fields[2]} in {months}, so it would never run")
    return CronSpec(text=written, minutes=values[0], hours=values[1], days=values[2],
                    months=values[3], weekdays=weekdays,
                    dom_any=dom_any, dow_any=dow_any)


def _field(text: str, what: str, low: int, high: int,
           names: tuple[str, ...] | None) -> tuple[int, ...]:
    """The sorted values one field allows."""
    allowed: set[int] = set()
    for item in text.split(","):
        if not item:
            raise ValueError(f"{what}: {text!r} has an empty list item")
        span, slash, step_text = item.partition("/")
        step = 1
        if slash:
            if not _NUMBER.fullmatch(step_text) or int(step_text) == 0:
                raise ValueError(f"{what}: step {step_text!r} in {item!r} is not a positive integer")
            step = int(step_text)
        if span == "*":
            first, last = low, high if what != "day-of-week" else 6
        elif "-" in span:
            a, _, b = span.partition("-")
            if not a or not b:
                raise ValueError(f"{what}: {span!r} is not a range such as 1-5")
            first, last = _value(a, what, low, high, names), _value(b, what, low, high, names)
            if first > last:
                raise ValueError(f"{what}: range {span!r} runs backwards")
        else:
            if slash:
                raise ValueError(f"{what}: a step needs a range: write {span}-{high}/{step} "
                                 f"or */{step}, not {item!r}")
            first = last = _value(span, what, low, high, names)
        allowed.update(range(first, last + 1, step))
    return tuple(sorted(allowed))


def _value(text: str, what: str, low: int, high: int, names: tuple[str, ...] | None) -> int:
    """One number or name of a field, checked against the field's range."""
    if _NUMBER.fullmatch(text):
        number = int(text)
        if not low <= number <= high:
            raise ValueError(f"{what}: {number} is outside {low}-{high}")
        return number
    if names is not None and text.lower() in names:
        return names.index(text.lower()) + low
    kinds = f"a number or a name ({names[0]}..{names[-1]})" if names else "a number"
    raise ValueError(f"{what}: {text!r} is not {kinds}")
