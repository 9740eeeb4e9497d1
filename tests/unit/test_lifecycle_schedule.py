"""Next cron ticks (UTC) and whether a snapshot is due (zrelay.lifecycle.cron/schedule)."""

from __future__ import annotations

import calendar
import datetime as dt

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from zrelay.inventory.policy import SnapshotSchedule
from zrelay.lifecycle.cron import next_tick, parse_cron
from zrelay.lifecycle.schedule import due


def ts(text: str) -> int:
    return calendar.timegm(dt.datetime.fromisoformat(text).timetuple())


def iso(t: int) -> str:
    return dt.datetime.fromtimestamp(t, dt.UTC).strftime("%Y-%m-%dT%H:%M")


# Parsing is the inventory's (zrelay.inventory.cron, tests/unit/test_inventory_cron.py); the
# schedule takes what it parsed.


def test_the_schedule_reads_expressions_with_the_inventorys_parser() -> None:
    from zrelay.inventory import cron as inventory_cron
    assert parse_cron is inventory_cron.parse_cron
    spec = parse_cron("*/15 1-5/2,22 1,15 jan-mar,DEC mon-fri")
    assert spec.minutes == (0, 15, 30, 45) and spec.hours == (1, 3, 5, 22)
    assert not spec.dom_any and not spec.dow_any


# --------------------------------------------------------------------------- next tick


def test_next_tick_is_strictly_after_at_minute_resolution() -> None:
    spec = parse_cron("30 2 * * *")
    assert iso(next_tick(spec, ts("2026-03-29T02:29"))) == "2026-03-29T02:30"
    assert iso(next_tick(spec, ts("2026-03-29T02:30"))) == "2026-03-30T02:30", "strictly after"
    assert iso(next_tick(spec, ts("2026-03-29T02:30") - 1)) == "2026-03-29T02:30"
    # UTC: the European DST switch (2026-03-29 01:00 UTC) changes nothing
    assert iso(next_tick(parse_cron("0 * * * *"), ts("2026-03-29T00:59"))) == "2026-03-29T01:00"
    assert iso(next_tick(parse_cron("0 * * * *"), ts("2026-03-29T01:00"))) == "2026-03-29T02:00"


def test_next_tick_jumps_months_years_and_leap_days() -> None:
    assert iso(next_tick(parse_cron("@yearly"), ts("2026-01-01T00:00"))) == "2027-01-01T00:00"
    assert iso(next_tick(parse_cron("0 12 29 2 *"), ts("2026-03-01T00:00"))) == "2028-02-29T12:00"
    assert iso(next_tick(parse_cron("0 12 29 2 *"), ts("2096-03-01T00:00"))) == "2104-02-29T12:00"
    assert iso(next_tick(parse_cron("0 0 31 * *"), ts("2026-04-01T00:00"))) == "2026-05-31T00:00"
    assert iso(next_tick(parse_cron("59 23 31 12 *"), ts("2026-12-31T23:59"))) == "2027-12-31T23:59"


def test_day_of_month_or_day_of_week_when_both_are_restricted() -> None:
    # the 13th or any Friday; 2026-02-13 is a Friday, 2026-02-06 a Friday, 2026-03-13 a Friday
    spec = parse_cron("0 0 13 * fri")
    got = []
    t = ts("2026-02-01T00:00")
    for _ in range(4):
        t = next_tick(spec, t)
        got.append(iso(t)[:10])
    assert got == ["2026-02-06", "2026-02-13", "2026-02-20", "2026-02-27"]
    # a star in one of them: both must match (every Friday in a month whose 13th ... any day)
    spec = parse_cron("0 0 * * fri")
    assert iso(next_tick(spec, ts("2026-02-07T00:00")))[:10] == "2026-02-13"
    spec = parse_cron("0 0 */1 * fri")      # cron's rule: a field starting with * counts as *
    assert iso(next_tick(spec, ts("2026-02-07T00:00")))[:10] == "2026-02-13"


@settings(max_examples=120, deadline=None)
@given(st.sampled_from(["*/7 * * * *", "0 */5 * * *", "15 3 * * mon", "0 0 1,15 * *", "45 23 * 2 sun",
                        "0 6 13 * fri", "*/20 8-17 * * 1-5", "0 0 29 2 *", "5 4 31 * *"]),
       st.integers(ts("2024-01-01T00:00"), ts("2031-01-01T00:00")))
def test_next_tick_matches_a_naive_scan(text: str, after: int) -> None:
    """The first matching minute after ``after``, found by brute force over whole minutes."""
    spec = parse_cron(text)
    got = next_tick(spec, after)
    assert got > after and got % 60 == 0
    d = dt.datetime.fromtimestamp(got, dt.UTC)

    def matches(d: dt.datetime) -> bool:
        dom, dow = d.day in spec.days, d.isoweekday() % 7 in spec.weekdays
        day_ok = (dom and dow) if (spec.dom_any or spec.dow_any) else (dom or dow)
        return d.minute in spec.minutes and d.hour in spec.hours and d.month in spec.months and day_ok

    assert matches(d)
    # nothing matches in between: every candidate minute of every day from ``after`` to the tick
    start = dt.datetime.fromtimestamp((after // 60 + 1) * 60, dt.UTC)
    day = start.date()
    while day <= d.date():
        for h in spec.hours:
            for m in spec.minutes:
                cand = dt.datetime(day.year, day.month, day.day, h, m, tzinfo=dt.UTC)
                assert not (start <= cand < d and matches(cand)), f"{cand} matches before {d}"
        day += dt.timedelta(days=1)


# --------------------------------------------------------------------------- due


def test_every() -> None:
    s = SnapshotSchedule(every=3600)
    now = ts("2026-06-01T12:00")
    assert due(s, None, now).due and due(s, None, now).next_at == now
    d = due(s, now - 3600, now)
    assert d.due and d.next_at == now and "every 1h" in d.reason
    d = due(s, now - 3599, now)
    assert not d.due and d.next_at == now + 1
    assert not due(s, now + 600, now).due, "a newest snapshot in the future (clock skew) is not overdue"


def test_cron_missed_ticks_make_one_snapshot() -> None:
    s = SnapshotSchedule(cron=parse_cron("0 * * * *"))
    now = ts("2026-06-01T12:30")
    d = due(s, ts("2026-06-01T07:10"), now)          # five ticks missed (08:00 .. 12:00)
    assert d.due and d.next_at == ts("2026-06-01T08:00")
    assert "2026-06-01 08:00 UTC" in d.reason
    # once that one snapshot is taken (now), nothing is due until the next tick
    after = due(s, now, now)
    assert not after.due and after.next_at == ts("2026-06-01T13:00")
    # a tick exactly at now counts; one after the newest snapshot but at the same minute does not
    assert due(s, ts("2026-06-01T11:59"), ts("2026-06-01T12:00")).due
    assert not due(s, ts("2026-06-01T12:00"), ts("2026-06-01T12:00") + 59).due
    assert due(s, None, now).due


def test_no_every_no_cron_is_never_due_by_time() -> None:
    d = due(SnapshotSchedule(name="x_%Y"), None, 1_800_000_000)
    assert not d.due and d.next_at is None and "--now" in d.reason


def test_every_and_cron_whichever_comes_first() -> None:
    s = SnapshotSchedule(every=86400, cron=parse_cron("0 12 * * *"))
    now = ts("2026-06-01T12:05")
    assert due(s, ts("2026-06-01T11:00"), now).due                    # the cron tick of 12:00
    d = due(s, ts("2026-06-01T12:01"), now)
    assert not d.due and d.next_at == ts("2026-06-02T12:00")
