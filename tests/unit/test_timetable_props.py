"""The daemon's timetable over random schedules, histories, windows and budgets: a downtime gives
one run per entry, choose() keeps every budget and a job's runs apart and holds nothing back
needlessly, retries back off within the policy, refusals wait for the user, runs start only inside
their windows, jitter offsets are fixed and in range, and the preview is sorted and finite."""

from __future__ import annotations

from collections import Counter
from dataclasses import replace

from hypothesis import given, settings
from hypothesis import strategies as st

from zrelay.inventory import loads_inventory
from zrelay.inventory.cron import parse_cron
from zrelay.inventory.service import KINDS, DaemonSettings, RetryPolicy, RunSchedule, Window
from zrelay.lifecycle.timetable import (Entry, History, choose, entries, finished, jitter_offset, next_run,
                                        requested, started, upcoming)
from zrelay.lifecycle.windows import all_open, first_open

T0 = 1_714_557_840.0  # 2024-05-01 10:04 UTC
D = 86400
EXAMPLES = settings(max_examples=200)
CRONS = [parse_cron(text) for text in ("*/5 * * * *", "0 3 * * *", "30 */2 * * 1-5", "0 0 1 * *",
                                        "15 14 * * 0")]
HOSTS = ("h1", "h2", "h3", "h4")
HOST_GROUPS = {"h1": "g1", "h2": "g1", "h3": "g2", "h4": "g2"}

times = st.floats(min_value=T0 - 40 * D, max_value=T0, allow_nan=False)
windows = st.lists(st.builds(Window, group=st.sampled_from(["g1", "g2"]), start=st.integers(0, 1439),
                             end=st.integers(0, 1440), kinds=st.just(KINDS)), max_size=3).map(tuple)


EVERY = st.integers(10, 3 * D)
MAYBE_EVERY = st.none() | EVERY
MAYBE_CRON = st.none() | st.sampled_from(CRONS)
MAYBE_FOLLOWS = {kind: st.none() | st.sampled_from([k for k in KINDS if k != kind]) for kind in KINDS}
A_KIND = st.sampled_from(KINDS)
SOME_HOSTS = st.lists(st.sampled_from(HOSTS), min_size=1, max_size=3, unique=True).map(tuple)
A_JOB = st.sampled_from(["a", "b", "c", "d"])
AN_OFFSET = st.integers(0, 599)
MAYBE_TIME = st.none() | times
RUN_TIME = st.floats(0, 3600)
FAILURES = st.integers(0, 10)
MAYBE_PARKED = st.none() | st.just("diverged")


@st.composite
def schedules(draw: st.DrawFn, kind: str) -> RunSchedule:
    every = draw(MAYBE_EVERY)
    cron = draw(MAYBE_CRON)
    follows = draw(MAYBE_FOLLOWS[kind])
    if every is None and cron is None and follows is None:
        every = draw(EVERY)
    return RunSchedule(every=every, cron=cron, follows=follows)


@st.composite
def an_entry(draw: st.DrawFn, timed: bool = False, with_windows: bool = True) -> Entry:
    kind = draw(A_KIND)
    schedule = draw(schedules(kind))
    if timed:
        schedule = replace(schedule, follows=None, every=schedule.every or draw(EVERY))
    hosts = draw(SOME_HOSTS)
    return Entry(job=draw(A_JOB), kind=kind, schedule=schedule, hosts=hosts,
                 windows=draw(windows) if with_windows else (), offset=draw(AN_OFFSET),
                 groups=tuple(sorted({HOST_GROUPS[h] for h in hosts})))


@st.composite
def a_history(draw: st.DrawFn) -> History:
    last_started = draw(MAYBE_TIME)
    last_finished = None if last_started is None else min(T0, last_started + draw(RUN_TIME))
    return History(last_started=last_started, last_finished=last_finished, last_success=draw(MAYBE_TIME),
                   failures=draw(FAILURES), parked=draw(MAYBE_PARKED), requested=draw(MAYBE_TIME))


ENTRIES = st.lists(an_entry(), max_size=7, unique_by=lambda e: e.key)
HISTORIES = st.dictionaries(st.tuples(st.sampled_from("abcd"), A_KIND), a_history())


def leader_of(e: Entry, histories: dict[tuple[str, str], History]) -> History | None:
    return histories.get((e.job, e.schedule.follows)) if e.schedule.follows else None


daemon_settings = st.builds(DaemonSettings, max_running=st.integers(1, 6), per_host=st.integers(1, 3),
                            group_limits=st.lists(st.tuples(st.sampled_from(["g1", "g2", "all"]), st.integers(1, 3)),
                                                  max_size=2, unique_by=lambda g: g[0]).map(tuple))


@EXAMPLES
@given(an_entry(), a_history(), st.one_of(st.none(), a_history()), st.floats(0, 60 * D))
def test_after_any_downtime_one_run_is_due(entry: Entry, history: History, leader: History | None,
                                           downtime: float) -> None:
    now = T0 + downtime
    plan = next_run(entry, history, leader, now, DaemonSettings())
    if plan.at is None or plan.at > now:
        return
    after = finished(started(history, now), "ok", "", now)
    again = next_run(entry, after, leader, now, DaemonSettings())
    assert again.at is None or again.at > now, (again, after)


@EXAMPLES
@given(ENTRIES, HISTORIES,
       st.floats(0, 60 * D))
def test_upcoming_after_downtime_lists_each_entry_once_at_now(
        es: list[Entry], histories: dict[tuple[str, str], History], downtime: float) -> None:
    now = T0 + downtime
    got = upcoming(es, histories, now, DaemonSettings(), count=2 * len(es) + 2)
    at_now = Counter(e.key for at, e, _ in got if at == now)
    assert all(n == 1 for n in at_now.values()), at_now


@st.composite
def a_running(draw: st.DrawFn) -> dict[tuple[str, str], tuple[str, ...]]:
    keys = draw(st.lists(st.tuples(st.sampled_from(["a", "x", "y"]), st.sampled_from(KINDS)), max_size=4,
                         unique_by=lambda k: k[0]))
    return {k: tuple(draw(st.lists(st.sampled_from(HOSTS), min_size=1, max_size=2, unique=True))) for k in keys}


@EXAMPLES
@given(ENTRIES, HISTORIES,
       a_running(), daemon_settings)
def test_choose_keeps_the_budgets_and_holds_back_only_what_they_block(
        es: list[Entry], histories: dict[tuple[str, str], History],
        running: dict[tuple[str, str], tuple[str, ...]], budget: DaemonSettings) -> None:
    got = choose(es, histories, running, T0, budget)
    chosen = got.start
    if chosen:
        assert len(running) + len(chosen) <= budget.max_running
    load = Counter(h for hosts in running.values() for h in hosts) + Counter(h for e in chosen for h in e.hosts)
    for e in chosen:
        assert all(load[h] <= budget.per_host for h in e.hosts), (e, load)
    limits = dict(budget.group_limits)
    by_key = {e.key: e for e in es}

    def limited(e: Entry | None) -> list[str]:
        return [g for g in limits if g == "all" or (e is not None and g in e.groups)]

    group_load = Counter(g for key in running for g in limited(by_key.get(key))) + Counter(
        g for e in chosen for g in limited(e))
    for e in chosen:
        assert all(group_load[g] <= limits[g] for g in limited(e)), (e, group_load)
    jobs = [e.job for e in chosen]
    assert len(jobs) == len(set(jobs))
    assert not set(jobs) & {job for job, _ in running}
    # every due entry is started or waiting; a waiting one is blocked by the final state
    due = [e for e in es if (at := next_run(e, histories.get(e.key, History()), leader_of(e, histories), T0,
                                            budget).at) is not None and at <= T0]
    assert sorted(e.key for e in due) == sorted([e.key for e in chosen] + [e.key for e, _ in got.waiting])
    busy = {job for job, _ in running} | set(jobs)
    for e, why in got.waiting:
        assert (e.job in busy or len(running) + len(chosen) >= budget.max_running
                or any(load[h] >= budget.per_host for h in e.hosts)
                or any(group_load[g] >= limits[g] for g in limited(e))), (e, why)
    futures = [at for e in es if e not in chosen
               if (at := next_run(e, histories.get(e.key, History()), leader_of(e, histories), T0,
                                  budget).at) is not None and at > T0]
    assert got.wake_at == (min(futures) if futures else None)


@EXAMPLES
@given(an_entry(timed=True, with_windows=False), times, st.integers(1, 600), st.integers(0, 3000),
       st.integers(1, 10))
def test_a_failure_is_retried_within_the_policy_then_the_regular_time_returns(
        entry: Entry, start: float, first: int, extra: int, attempts: int) -> None:
    policy = DaemonSettings(retry=RetryPolicy(first=first, max=first + extra, attempts=attempts))
    history = History(last_started=start - 10 * D)
    now = start
    for failure in range(1, attempts + 2):
        history = finished(started(history, now), "failed", "boom", now + 5)
        plan = next_run(entry, history, None, now + 5, policy)
        assert plan.at is not None
        if failure <= attempts:
            assert first <= plan.at - (now + 5) <= first + extra, (failure, plan)
            assert plan.reason.startswith(f"retry {failure}/{attempts} ")
            now = plan.at
        else:
            regular = next_run(entry, replace(history, failures=0), None, now + 5, policy)
            assert plan == regular


@EXAMPLES
@given(ENTRIES, HISTORIES,
       st.floats(0, 10 * D))
def test_a_parked_entry_is_never_chosen_until_requested(es: list[Entry], histories: dict[tuple[str, str], History],
                                                        later: float) -> None:
    if not es:
        return
    parked = es[0]
    histories = {**histories, parked.key: replace(histories.get(parked.key, History()), parked="diverged",
                                                 requested=None)}
    budget = DaemonSettings(max_running=100, per_host=100)
    for step in range(0, 5):
        now = T0 + later * step / 4
        assert parked not in choose(es, histories, {}, now, budget).start
    histories[parked.key] = requested(histories[parked.key], T0 + later)
    plan = next_run(parked, histories[parked.key], leader_of(parked, histories), T0 + later, budget)
    assert plan.at is not None and plan.at <= T0 + later
    others = [e for e in es if e.job != parked.job]  # a job's runs start one by one, the parked one among them
    assert parked in choose([parked, *others], histories, {}, T0 + later, budget).start


@EXAMPLES
@given(ENTRIES, HISTORIES,
       st.floats(0, 60 * D))
def test_runs_start_only_inside_every_applying_window(es: list[Entry], histories: dict[tuple[str, str], History],
                                                      later: float) -> None:
    now = T0 + later
    budget = DaemonSettings(max_running=100, per_host=100)
    for e in choose(es, histories, {}, now, budget).start:
        if histories.get(e.key, History()).requested is None:
            assert all_open(e.windows, now), (e, now)
    for e in es:
        plan = next_run(e, histories.get(e.key, History()), leader_of(e, histories), now, budget)
        if plan.at is not None and histories.get(e.key, History()).requested is None:
            assert all_open(e.windows, max(plan.at, now)), (e, plan)


@EXAMPLES
@given(windows, st.floats(T0, T0 + 2 * D))
def test_first_open_is_the_first_minute_all_windows_are_open(ws: tuple[Window, ...], ts: float) -> None:
    expected: float | None = ts if all_open(ws, ts) else None
    minute = int(ts // 60)
    for step in range(1, 1441):
        if expected is not None:
            break
        if all_open(ws, (minute + step) * 60):
            expected = float((minute + step) * 60)
    assert first_open(ws, ts) == expected


@EXAMPLES
@given(st.lists(st.from_regex(r"[a-z][a-z0-9_-]{0,11}", fullmatch=True), min_size=1, max_size=5, unique=True),
       st.integers(0, 5000))
def test_jitter_offsets_are_in_range_and_stable(names: list[str], jitter: int) -> None:
    lines = "".join(f"    - name: \"{n}\"\n      source: h1:tank/d{i}\n      targets: [h2:b/d{i}]\n"
                    for i, n in enumerate(names))
    text = (f"all:\n  hosts:\n    h1: {{address: 192.0.2.1}}\n    h2: {{address: 192.0.2.2}}\n"
            f"zrelay:\n  jobs:\n{lines}")
    inventory = loads_inventory(text, "inv.yml")
    inventory = replace(inventory, settings=replace(inventory.settings,
                                                    daemon=DaemonSettings(jitter=jitter)))
    first, second = entries(inventory), entries(inventory)
    assert [e.offset for e in first] == [e.offset for e in second]
    for e in first:
        assert 0 <= e.offset < max(jitter, 1)
        assert e.offset == jitter_offset(e.job, e.kind, jitter)


@EXAMPLES
@given(ENTRIES, HISTORIES,
       st.floats(0, 60 * D), st.integers(0, 25))
def test_upcoming_is_sorted_and_finite(es: list[Entry], histories: dict[tuple[str, str], History], later: float,
                                       count: int) -> None:
    now = T0 + later
    got = upcoming(es, histories, now, DaemonSettings(), count=count)
    assert len(got) <= count
    starts = [at for at, _, _ in got]
    assert starts == sorted(starts)
    assert all(at >= now for at in starts)
    assert all(e in es for _, e, _ in got)
