"""Keep policies (zrelay.lifecycle.retention): which items each rule keeps, and the words why."""

from __future__ import annotations

import calendar
import datetime as dt
import random

from hypothesis import given, settings
from hypothesis import strategies as st

from zrelay.inventory.policy import KeepPolicy
from zrelay.lifecycle.retention import describe_policy, keep_by_policy, period_label, span_text

H, D = 3600, 86400


def ts(text: str) -> int:
    """Unix seconds of an ISO UTC time such as ``2026-12-05T13:20``."""
    return calendar.timegm(dt.datetime.fromisoformat(text).timetuple())


def kept_names(items: list[tuple[str, int]], policy: KeepPolicy) -> set[str]:
    return set(keep_by_policy(items, policy))


def test_last_keeps_the_newest_whatever_the_input_order() -> None:
    items = [(f"s{i}", 1_000_000 + i * H) for i in range(10)]
    random.Random(3).shuffle(items)
    got = keep_by_policy(items, KeepPolicy(last=3))
    assert set(got) == {"s7", "s8", "s9"}
    assert got["s9"] == ("one of the 3 newest",)


def test_within_counts_from_the_newest_item_not_from_now() -> None:
    base = ts("2026-01-10T00:00")
    items = [("old", base - 2 * D), ("edge", base - D), ("mid", base - H), ("new", base)]
    got = keep_by_policy(items, KeepPolicy(within=D))
    assert set(got) == {"edge", "mid", "new"}, "exactly 1d before the newest is within 1d"
    assert got["edge"] == ("within 1d of the newest",)


def test_daily_keeps_the_newest_of_each_day_at_the_utc_boundary() -> None:
    items = [("d1-early", ts("2026-12-04T00:00")), ("d1-late", ts("2026-12-04T23:59")),
             ("d2-first", ts("2026-12-05T00:00")), ("d2-noon", ts("2026-12-05T12:00"))]
    got = keep_by_policy(items, KeepPolicy(daily=14))
    assert set(got) == {"d1-late", "d2-noon"}
    assert got["d2-noon"] == ("newest of its day 2026-12-05 (daily 14)",)


def test_buckets_count_only_periods_that_have_an_item() -> None:
    # one snapshot on days 1, 2 and 30 of January: daily 2 keeps 30 and 2 (the gap is skipped)
    items = [("a", ts("2026-01-01T10:00")), ("b", ts("2026-01-02T10:00")), ("c", ts("2026-01-30T10:00"))]
    assert kept_names(items, KeepPolicy(daily=2)) == {"b", "c"}


def test_hourly_boundary_and_label() -> None:
    items = [("x", ts("2026-03-01T12:59")), ("y", ts("2026-03-01T13:00")), ("z", ts("2026-03-01T13:30"))]
    got = keep_by_policy(items, KeepPolicy(hourly=2))
    assert set(got) == {"x", "z"}
    assert got["x"] == ("newest of its hour 2026-03-01 12:00 (hourly 2)",)


def test_iso_weeks_across_a_year_end() -> None:
    # 2026-12-31 is a Thursday (ISO 2026-W53); 2027-01-03 a Sunday (still 2026-W53);
    # 2027-01-04 a Monday (2027-W01). 2020-12-31 → 2020-W53; 2021-01-01 → 2020-W53 too.
    items = [("thu", ts("2026-12-31T08:00")), ("sun", ts("2027-01-03T08:00")), ("mon", ts("2027-01-04T08:00"))]
    got = keep_by_policy(items, KeepPolicy(weekly=5))
    assert set(got) == {"sun", "mon"}
    assert got["sun"] == ("newest of its week 2026-W53 (weekly 5)",)
    assert got["mon"] == ("newest of its week 2027-W01 (weekly 5)",)
    assert period_label("weekly", ts("2021-01-01T00:00")) == "2020-W53"
    # a Monday at 00:00 starts a new week; the Sunday before at 23:59 does not
    items = [("sun", ts("2026-06-07T23:59")), ("mon", ts("2026-06-08T00:00"))]
    assert kept_names(items, KeepPolicy(weekly=2)) == {"sun", "mon"}


def test_monthly_and_yearly() -> None:
    items = [("jan", ts("2025-01-31T23:00")), ("feb1", ts("2025-02-01T00:00")), ("feb2", ts("2025-02-28T00:00")),
             ("dec", ts("2025-12-31T23:59")), ("next", ts("2026-01-01T00:00"))]
    assert kept_names(items, KeepPolicy(monthly=3)) == {"feb2", "dec", "next"}
    got = keep_by_policy(items, KeepPolicy(yearly=5))
    assert set(got) == {"dec", "next"}
    assert got["dec"] == ("newest of its year 2025 (yearly 5)",)
    assert keep_by_policy(items, KeepPolicy(monthly=1))["next"] == ("newest of its month 2026-01 (monthly 1)",)


def test_union_of_rules_lists_every_reason() -> None:
    items = [(f"s{i}", ts("2026-05-01T00:00") + i * 6 * H) for i in range(12)]   # three days, 4 a day
    got = keep_by_policy(items, KeepPolicy(last=1, daily=2, within=6 * H))
    assert got["s11"] == ("within 6h of the newest", "one of the 1 newest",
                          "newest of its day 2026-05-03 (daily 2)")
    assert set(got) == {"s10", "s11", "s7"}


def test_ties_on_creation_are_broken_by_key() -> None:
    items = [((5, "b"), 100), ((4, "a"), 100), ((3, "z"), 100)]
    assert set(keep_by_policy(items, KeepPolicy(last=1))) == {(5, "b")}
    assert set(keep_by_policy(list(reversed(items)), KeepPolicy(daily=1))) == {(5, "b")}


def test_empty_inputs_and_policies() -> None:
    assert keep_by_policy([], KeepPolicy(last=3)) == {}
    assert keep_by_policy([("a", 1)], KeepPolicy()) == {}
    assert keep_by_policy([("a", 1)], KeepPolicy(last=0, daily=0)) == {}


def test_describe_policy_and_spans() -> None:
    assert describe_policy(KeepPolicy(within=D, hourly=24, daily=14)) == "within 1d, 24 hourly, 14 daily"
    assert describe_policy(KeepPolicy(last=3, yearly=2, weekly=8, stale_after=30 * D)) == "last 3, 8 weekly, 2 yearly"
    assert describe_policy(KeepPolicy()) == "keeps nothing"
    assert [span_text(s) for s in (30, 90 * 60, 2 * H, 14 * D, 604800, 0)] == ["30s", "90m", "2h", "2w", "1w", "0s"]


@settings(max_examples=150, deadline=None)
@given(st.lists(st.integers(0, 400 * D), max_size=40),
       st.sampled_from(["hourly", "daily", "weekly", "monthly", "yearly"]), st.integers(1, 6))
def test_bucket_matches_a_calendar_oracle(times: list[int], kind: str, n: int) -> None:
    """Per bucket: exactly the newest item of each of the newest n periods that have one."""
    base = ts("2024-12-20T00:00")
    items = [(i, base + t) for i, t in enumerate(times)]

    def period(t: int) -> tuple[int, ...]:
        d = dt.datetime.fromtimestamp(t, dt.UTC)
        return {"hourly": (d.year, d.month, d.day, d.hour), "daily": (d.year, d.month, d.day),
                "weekly": tuple(d.isocalendar()[:2]), "monthly": (d.year, d.month), "yearly": (d.year,)}[kind]

    newest: dict[tuple[int, ...], tuple[int, int]] = {}
    for key, t in items:
        p = period(t)
        if p not in newest or (t, key) > newest[p]:
            newest[p] = (t, key)
    want = {newest[p][1] for p in sorted(newest, key=lambda p: newest[p], reverse=True)[:n]}
    assert set(keep_by_policy(items, KeepPolicy(**{kind: n}))) == want
