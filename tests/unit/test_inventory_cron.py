"""Cron expressions of a job's ``snapshot: {cron: ...}``: every accepted form and every refusal,
each refusal one line naming the field at fault."""

from __future__ import annotations

import pytest

from zrelay.inventory.cron import MACROS, parse_cron
from zrelay.inventory.policy import CronSpec

ALL_MINUTES = tuple(range(60))
ALL_HOURS = tuple(range(24))
ALL_DAYS = tuple(range(1, 32))
ALL_MONTHS = tuple(range(1, 13))
ALL_WEEKDAYS = tuple(range(7))


def test_every_field_star() -> None:
    spec = parse_cron("* * * * *")
    assert spec == CronSpec("* * * * *", ALL_MINUTES, ALL_HOURS, ALL_DAYS, ALL_MONTHS,
                            ALL_WEEKDAYS, dom_any=True, dow_any=True)


@pytest.mark.parametrize("text, field, values", [
    ("*/15 * * * *", "minutes", (0, 15, 30, 45)),
    ("7 * * * *", "minutes", (7,)),
    ("10-13 * * * *", "minutes", (10, 11, 12, 13)),
    ("10-30/10 * * * *", "minutes", (10, 20, 30)),
    ("5,1,3-4,1 * * * *", "minutes", (1, 3, 4, 5)),          # sorted, each once
    ("0 */6 * * *", "hours", (0, 6, 12, 18)),
    ("0 9-17/4 * * *", "hours", (9, 13, 17)),
    ("0 0 1,15 * *", "days", (1, 15)),
    ("0 0 */10 * *", "days", (1, 11, 21, 31)),
    ("0 0 1 jan,JUL,Dec *", "months", (1, 7, 12)),
    ("0 0 1 mar-may *", "months", (3, 4, 5)),
    ("0 0 1 */3 *", "months", (1, 4, 7, 10)),
    ("0 0 * * mon-fri", "weekdays", (1, 2, 3, 4, 5)),
    ("0 0 * * SUN", "weekdays", (0,)),
    ("0 0 * * 7", "weekdays", (0,)),                          # 7 is Sunday
    ("0 0 * * 5-7", "weekdays", (0, 5, 6)),
    ("0 0 * * 0,7", "weekdays", (0,)),
    ("0 0 * * */2", "weekdays", (0, 2, 4, 6)),
    ("0 0 * * fri-sat", "weekdays", (5, 6)),
])
def test_field_forms(text: str, field: str, values: tuple[int, ...]) -> None:
    assert getattr(parse_cron(text), field) == values


def test_any_day_flags_follow_a_written_star() -> None:
    both = parse_cron("0 0 1 * mon")
    assert (both.dom_any, both.dow_any) == (False, False)   # cron: either day matches
    assert parse_cron("0 0 * * mon").dom_any is True
    assert parse_cron("0 0 1 * *").dow_any is True
    # Vixie cron: a field starting with '*' is unrestricted for that rule, stepped or not
    stepped = parse_cron("0 0 */2 * mon")
    assert (stepped.dom_any, stepped.dow_any) == (True, False)
    assert stepped.days == tuple(range(1, 32, 2))
    assert parse_cron("0 0 1 * */2").dow_any is True


def test_whitespace_and_text() -> None:
    spec = parse_cron("  0\t12  *   * *  ")
    assert spec.text == "0\t12  *   * *"
    assert spec.minutes == (0,) and spec.hours == (12,)


@pytest.mark.parametrize("macro", sorted(MACROS))
def test_macros_are_their_expressions(macro: str) -> None:
    spec, same = parse_cron(macro), parse_cron(MACROS[macro])
    assert spec.text == macro
    assert (spec.minutes, spec.hours, spec.days, spec.months, spec.weekdays,
            spec.dom_any, spec.dow_any) == (same.minutes, same.hours, same.days, same.months,
                                            same.weekdays, same.dom_any, same.dow_any)


def test_macro_values() -> None:
    assert parse_cron("@hourly").minutes == (0,) and parse_cron("@hourly").hours == ALL_HOURS
    assert parse_cron("@daily").hours == (0,)
    assert parse_cron("@weekly").weekdays == (0,)
    assert parse_cron("@monthly").days == (1,)
    yearly = parse_cron("@YEARLY")
    assert (yearly.days, yearly.months) == ((1,), (1,))


@pytest.mark.parametrize("text, message", [
    ("", "empty cron expression"),
    ("   ", "empty cron expression"),
    ("* * * *", "expected 5 fields (minute hour day-of-month month day-of-week), got 4"),
    ("* * * * * *", "got 6"),
    ("@reboot", "unknown macro '@reboot'; expected one of @hourly, @daily"),
    ("60 * * * *", "minute: 60 is outside 0-59"),
    ("0 25 * * *", "hour: 25 is outside 0-23"),
    ("0 0 0 * *", "day-of-month: 0 is outside 1-31"),
    ("0 0 32 * *", "day-of-month: 32 is outside 1-31"),
    ("0 0 * 13 *", "month: 13 is outside 1-12"),
    ("0 0 * 0 *", "month: 0 is outside 1-12"),
    ("0 0 * * 8", "day-of-week: 8 is outside 0-7"),
    ("0 0 * foo *", "month: 'foo' is not a number or a name (jan..dec)"),
    ("0 0 * * fry", "day-of-week: 'fry' is not a number or a name (sun..sat)"),
    ("0 mon * * *", "hour: 'mon' is not a number"),
    ("0 0 jan * *", "day-of-month: 'jan' is not a number"),
    ("x * * * *", "minute: 'x' is not a number"),
    ("-5 * * * *", "minute: '-5' is not a range such as 1-5"),
    ("0 0 * * mon-", "day-of-week: 'mon-' is not a range such as 1-5"),
    ("\u00b2 * * * *", "minute: '\u00b2' is not a number"),   # a digit to str.isdigit only
    ("30-10 * * * *", "minute: range '30-10' runs backwards"),
    ("0 0 * * fri-mon", "day-of-week: range 'fri-mon' runs backwards"),
    ("*/0 * * * *", "minute: step '0' in '*/0' is not a positive integer"),
    ("*/x * * * *", "minute: step 'x' in '*/x' is not a positive integer"),
    ("1-5/ * * * *", "minute: step '' in '1-5/' is not a positive integer"),
    ("5/15 * * * *", "minute: a step needs a range: write 5-59/15 or */15, not '5/15'"),
    ("1,,2 * * * *", "minute: '1,,2' has an empty list item"),
    ("0 0 30 2 *", "day-of-month: no day 30 in feb, so it would never run"),
    ("0 0 31 apr,jun *", "day-of-month: no day 31 in apr,jun"),
])
def test_refusals_name_the_field(text: str, message: str) -> None:
    with pytest.raises(ValueError) as caught:
        parse_cron(text)
    assert message in str(caught.value)
    assert "\n" not in str(caught.value)


def test_a_day_that_some_month_has_is_fine() -> None:
    assert parse_cron("0 0 29 2 *").days == (29,)               # leap years
    assert parse_cron("0 0 31 * *").months == ALL_MONTHS
    assert parse_cron("0 0 30 2 mon").weekdays == (1,)          # either day: Mondays in February
