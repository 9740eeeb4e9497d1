"""The daemon's timetable (pure): which runs exist, when each may start next, which start now.

``entries`` turns an inventory into one Entry per job and kind of run (defaults applied), the
History functions record what happened to an entry, ``next_run`` says when it may start next and
why, ``choose`` picks the due runs the budgets allow, ``upcoming`` previews the next starts.
No clock reads: ``now`` (unix seconds) is always a parameter, so every answer can be replayed.
"""

from __future__ import annotations

import hashlib
import math
from collections import Counter
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, replace
from functools import lru_cache

from zrelay.events import Outcome
from zrelay.inventory.model import Inventory, Job
from zrelay.inventory.service import DEFAULT_EVERY, KINDS, DaemonSettings, RunSchedule, Window
from zrelay.lifecycle.cron import next_tick
from zrelay.lifecycle.retention import span_text
from zrelay.lifecycle.windows import all_open, first_open, when_text, window_text

__all__ = ["Choice", "Entry", "History", "Key", "NextRun", "choose", "entries", "finished",
           "jitter_offset", "next_run", "requested", "started", "upcoming"]

Key = tuple[str, str]  # (job name, kind)

#: The daemon asks for every entry's next time on each look at the timetable; a cron entry's answer
#: changes only when it runs again.
_tick = lru_cache(maxsize=8192)(next_tick)
_DEFAULT_TEXT = f"default: every {span_text(DEFAULT_EVERY)}"
_SUCCESS = (Outcome.OK, Outcome.NOOP)
_FAILURE = (Outcome.FAILED, Outcome.BUSY)


@dataclass(frozen=True, slots=True)
class Entry:
    """One kind of run of one job, as the daemon schedules it."""

    job: str
    kind: str
    schedule: RunSchedule
    hosts: tuple[str, ...]
    windows: tuple[Window, ...]
    offset: int
    #: every group holding one of ``hosts`` (ancestors too): what ``group_limits`` count
    groups: tuple[str, ...] = ()

    @property
    def key(self) -> Key:
        return (self.job, self.kind)


# --------------------------------------------------------------------------- entries


def jitter_offset(job: str, kind: str, jitter: int) -> int:
    """A fixed shift in [0, jitter) for this job and kind: hashlib, so a restart gives the same."""
    if jitter <= 1:
        return 0
    digest = hashlib.sha256(f"{job}\0{kind}".encode()).digest()
    return int.from_bytes(digest[:8], "big") % jitter


def describe(schedule: RunSchedule) -> str:
    """``every 15m, cron 0 3 * * *, after each sync``: a schedule in the inventory's words."""
    parts = []
    if schedule.every is not None:
        parts.append(f"every {span_text(schedule.every)}")
    if schedule.cron is not None:
        parts.append(f"cron {schedule.cron.text}")
    if schedule.follows is not None:
        parts.append(f"after each {schedule.follows}")
    return ", ".join(parts) or "no schedule"


def _kinds_of(job: Job) -> list[str]:
    snapshot = job.lifecycle.snapshot
    has = {"snapshot": snapshot is not None and (snapshot.every is not None or snapshot.cron is not None),
           "sync": bool(job.host_targets), "prune": bool(job.lifecycle.keep), "s3-push": bool(job.s3_targets),
           # a drill is a full restore: only where the job schedules one (never a default)
           "drill": "drill" in job.schedule and job.drill_to is not None and bool(job.targets)}
    return [kind for kind in KINDS if has[kind]]


def _written(job: Job, kind: str, inventory: Inventory) -> RunSchedule | None:
    """The schedule the user wrote for this run (the job's, else an S3 target's ``push``)."""
    schedule = job.schedule.get(kind)
    if schedule is not None:
        return replace(schedule, text=schedule.text or describe(schedule))
    if kind == "s3-push":
        for ref in job.s3_targets:
            target = inventory.s3_targets.get(ref.name)
            if target is not None and target.push is not None:
                push = target.push
                return replace(push, text=f"{push.text or describe(push)} (push of s3:{ref.name})")
    return None


def _default(kind: str, present: Sequence[str]) -> RunSchedule:
    leaders = {"sync": ("snapshot",), "prune": ("sync", "snapshot"), "s3-push": ("snapshot",)}
    for leader in leaders.get(kind, ()):
        if leader in present:
            return RunSchedule(follows=leader, text=f"default: after each {leader}")
    return RunSchedule(every=DEFAULT_EVERY, text=_DEFAULT_TEXT)


def _runs_by_itself(kind: str, chosen: Mapping[str, RunSchedule]) -> bool:
    """Whether this run ever starts: it has a time, or the run it follows does (no loops)."""
    seen: set[str] = set()
    while kind in chosen and kind not in seen:
        seen.add(kind)
        schedule = chosen[kind]
        if schedule.every is not None or schedule.cron is not None:
            return True
        if schedule.follows is None:
            return False
        kind = schedule.follows
    return False


def _schedules(job: Job, inventory: Inventory) -> dict[str, RunSchedule]:
    """Each run's schedule, resolved: written, else the default; never one that cannot start."""
    present = _kinds_of(job)
    chosen: dict[str, RunSchedule] = {}
    for kind in present:
        if kind == "snapshot":
            snap = job.lifecycle.snapshot
            assert snap is not None
            schedule = RunSchedule(every=snap.every, cron=snap.cron)
            chosen[kind] = replace(schedule, text=describe(schedule))
        else:
            chosen[kind] = _written(job, kind, inventory) or _default(kind, present)
    for kind in present:
        schedule = chosen[kind]
        if schedule.follows is None:
            continue
        if schedule.follows not in chosen:
            why = f"{schedule.text}: the job runs no {schedule.follows}"
        elif not _runs_by_itself(kind, chosen):
            why = f"{schedule.text}: nothing it follows starts by itself"
        else:
            continue
        if schedule.every is not None or schedule.cron is not None:
            chosen[kind] = replace(schedule, follows=None, text=f"{describe(replace(schedule, follows=None))} "
                                                                 f"({why})")
        else:
            chosen[kind] = RunSchedule(every=DEFAULT_EVERY, text=f"{_DEFAULT_TEXT} ({why})")
    return chosen


def _hosts(job: Job, kind: str) -> tuple[str, ...]:
    """The hosts a run touches: a snapshot or an S3 push only the source; a sync or prune the
    source and every host target (a prune lists the targets to keep the replicas' bases); a
    drill those and the host it restores to."""
    hosts = [job.source.host]
    if kind in ("sync", "prune", "drill"):
        hosts.extend(t.host for t in job.host_targets)
    if kind == "drill" and job.drill_to is not None:
        hosts.append(job.drill_to.host)
    return tuple(dict.fromkeys(hosts))


def _groups(inventory: Inventory, hosts: Sequence[str]) -> tuple[str, ...]:
    host_groups = (inventory.hosts[name].groups for name in hosts if name in inventory.hosts)
    return tuple(dict.fromkeys(group for groups in host_groups for group in groups))


def _windows(inventory: Inventory, groups: Sequence[str], kind: str) -> tuple[Window, ...]:
    return tuple(w for w in inventory.settings.daemon.windows
                 if kind in w.kinds and (w.group == "all" or w.group in groups))


def entries(inventory: Inventory) -> list[Entry]:
    """Every run the daemon schedules, in job order then KINDS order.

    A snapshot for a job with a snapshot ``every``/``cron``; a sync for one with host targets
    (after each snapshot by default); a prune for one with a keep policy (after each sync, else
    snapshot); an S3 push for one with S3 targets (its targets' ``push``, else after each
    snapshot); a drill only for a job whose ``schedule:`` has one (and a ``drill_to``).
    Without anything to follow: every DEFAULT_EVERY. A ``follows`` that could never
    start (the job lacks that run, or runs only follow each other) falls back to every DEFAULT_EVERY.
    """
    jitter = inventory.settings.daemon.jitter
    out: list[Entry] = []
    for job in inventory.jobs:
        for kind, schedule in _schedules(job, inventory).items():  # built in KINDS order
            hosts = _hosts(job, kind)
            groups = _groups(inventory, hosts)
            out.append(Entry(job=job.name, kind=kind, schedule=schedule, hosts=hosts,
                             windows=_windows(inventory, groups, kind),
                             offset=jitter_offset(job.name, kind, jitter), groups=groups))
    return out


# --------------------------------------------------------------------------- history


@dataclass(frozen=True, slots=True)
class History:
    """What the daemon remembers of one entry (and persists across restarts)."""

    last_started: float | None = None
    last_finished: float | None = None
    last_outcome: str | None = None    # an Outcome value
    last_success: float | None = None  # finish time of the last ok/noop run
    failures: int = 0                  # failed (or busy) runs in a row
    parked: str | None = None          # a refused run's message: waits for the user
    requested: float | None = None     # a run-now request not yet served


def started(history: History, at: float) -> History:
    """The run started at ``at``: a pending run-now is served by it."""
    return replace(history, requested=None, last_started=at)


def finished(history: History, outcome: str, message: str, at: float, *, park: bool = False) -> History:
    """The run ended at ``at`` with ``outcome`` (an Outcome value; ValueError for another word).

    ok/noop clear failures and a parked refusal; failed/busy count a failure in a row; refused
    parks the entry with ``message`` until the user asks again; skipped changes nothing else.
    ``park``: a failure that running again would not change (a drill's mismatch) parks it too.
    """
    result = Outcome(outcome)
    history = replace(history, last_finished=at, last_outcome=result.value)
    if result in _SUCCESS:
        return replace(history, failures=0, parked=None, last_success=at)
    if park and result is not Outcome.SKIPPED:
        return replace(history, failures=0, parked=message or f"the run {result.value}")
    if result in _FAILURE:
        return replace(history, failures=history.failures + 1)
    if result is Outcome.REFUSED:
        return replace(history, parked=message or "the plan was refused")
    return history


def requested(history: History, at: float) -> History:
    """``zrelay run-now``: run as soon as the budgets allow, whatever the schedule, parking or windows."""
    return replace(history, parked=None, failures=0, requested=at)


# --------------------------------------------------------------------------- next run


@dataclass(frozen=True, slots=True)
class NextRun:
    """``at``: when the run may start (≤ now: due now); None: not by itself. ``reason``: one line."""

    at: float | None
    reason: str


def _span(seconds: float) -> str:
    """A wait as a user reads it, rounded up: ``45s``, ``2m``, ``3h``, ``2d``."""
    s = max(0, math.ceil(seconds))
    for unit, size, limit in (("s", 1, 100), ("m", 60, 100 * 60), ("h", 3600, 48 * 3600)):
        if s < limit:
            return f"{-(-s // size)}{unit}"
    return f"{-(-s // 86400)}d"


def _jitter(entry: Entry) -> str:
    return f" (+{entry.offset}s jitter)" if entry.offset else ""


def _planned(entry: Entry, history: History, leader: History | None, now: float,
             settings: DaemonSettings) -> NextRun:
    """When the schedule (or a retry) asks for the next run, before windows."""
    retry = settings.retry
    if history.failures >= 1:
        delay = retry.delay(history.failures)
        if delay is not None:
            base = history.last_finished if history.last_finished is not None else history.last_started
            at = (base if base is not None else now) + delay
            when = "now" if at <= now else f"in {_span(at - now)}"
            return NextRun(at, f"retry {history.failures}/{retry.attempts} {when} (backoff)")
    schedule = entry.schedule
    last = history.last_started
    options: list[tuple[float, int]] = []  # (time, which rule: 0 follows, 1 every, 2 cron)
    success = leader.last_success if leader is not None else None
    if schedule.follows is not None and success is not None and (last is None or success > last):
        options.append((success, 0))
    if schedule.every is not None:
        options.append((now if last is None else last + schedule.every + entry.offset, 1))
    if schedule.cron is not None:
        options.append((now if last is None else
                        float(_tick(schedule.cron, math.floor(last - entry.offset)) + entry.offset), 2))
    if not options:
        if schedule.follows is not None:
            return NextRun(None, f"after each {schedule.follows} (next when it succeeds)")
        return NextRun(None, "no schedule")
    at, rule = min(options)
    # the reason is written for the winning rule only: choose() asks for every entry's time
    if rule == 0:
        return NextRun(at, f"after each {schedule.follows} (it succeeded at {when_text(at, now)})")
    if rule == 1 and schedule.every is not None:
        what = f"every {span_text(schedule.every)}"
    else:
        what = f"cron {schedule.cron.text}" if schedule.cron is not None else ""
    if last is None:
        return NextRun(at, f"first run ({what})")
    if rule == 1:
        return NextRun(at, f"{what} after {when_text(last, now)}{_jitter(entry)}")
    return NextRun(at, f"{what} at {when_text(at, now)}{_jitter(entry)}")


def next_run(entry: Entry, history: History, leader: History | None, now: float,
             settings: DaemonSettings) -> NextRun:
    """When ``entry`` may start next, and why. ``leader``: the history of the run it follows.

    A run-now request is due at once (parked or not, windows or not); a parked refusal waits for
    the user; a failure is retried after the backoff; else the schedule's time: after the leader's
    newest success, ``every`` after the last start, the next ``cron`` tick after it (the earliest
    when several apply). Never started: due now. Missed times give one run, as the next time
    always counts from the last start. Then the windows: a time when one is closed moves to the
    next moment they are all open (None when they never are at once).
    """
    if history.requested is not None:
        return NextRun(min(history.requested, now), "run-now requested")
    if history.parked is not None:
        what = "refused" if history.last_outcome in (None, Outcome.REFUSED.value) else \
            f"{history.last_outcome}, not retried"
        return NextRun(None, f"{what}: {history.parked}; waits for `zrelay run-now` or an inventory reload")
    planned = _planned(entry, history, leader, now, settings)
    if planned.at is None or not entry.windows:
        return planned
    probe = max(planned.at, now)  # a due run starts now, so the windows must be open now
    opening = first_open(entry.windows, probe)
    if opening is None:
        names = ", ".join(f"{window_text(w)} ({w.group})" for w in entry.windows)
        return NextRun(None, f"windows {names} are never open at the same time")
    if opening == probe:
        return planned
    closed = next(w for w in entry.windows if not all_open((w,), probe))
    return NextRun(opening, f"window {window_text(closed)} ({closed.group}) opens at "
                            f"{when_text(opening, now)}; {planned.reason}")


def _leader(entry: Entry, histories: Mapping[Key, History]) -> History | None:
    follows = entry.schedule.follows
    return histories.get((entry.job, follows)) if follows is not None else None


def _limited(entry: Entry | None, limits: Mapping[str, int]) -> list[str]:
    """The limited groups a run counts against (``all``: every run; an unknown run: only that)."""
    return [g for g in limits if g == "all" or (entry is not None and g in entry.groups)]


def _order(kind: str) -> int:
    return KINDS.index(kind) if kind in KINDS else len(KINDS)


# --------------------------------------------------------------------------- choosing


@dataclass(frozen=True, slots=True)
class Choice:
    """What to start now, what is due but held back (and why), and when to look again."""

    start: list[Entry]
    waiting: list[tuple[Entry, str]]
    wake_at: float | None


def choose(entries: Sequence[Entry], histories: Mapping[Key, History],
           running: Mapping[Key, tuple[str, ...]], now: float, settings: DaemonSettings) -> Choice:
    """The due runs to start now, oldest first (then job, then KINDS order), within the budgets.

    A run starts while the fleet runs fewer than ``max_running``, each of its hosts is touched by
    fewer than ``per_host`` runs, each group of ``group_limits`` holding one of its hosts by fewer
    than its limit, and no other run of its job is running or starting (a job's runs go one after
    another). ``running``: the keys running now and the hosts they touch (a key no entry has, as
    after a reload, counts against the fleet and its hosts only).
    """
    due: list[tuple[float, str, int, Entry]] = []
    wake_at: float | None = None
    for entry in entries:
        plan = next_run(entry, histories.get(entry.key, History()), _leader(entry, histories), now, settings)
        if plan.at is None:
            continue
        if plan.at <= now:
            due.append((plan.at, entry.job, _order(entry.kind), entry))
        elif wake_at is None or plan.at < wake_at:
            wake_at = plan.at
    due.sort(key=lambda item: item[:3])
    fleet = len(running)
    load: Counter[str] = Counter(host for hosts in running.values() for host in set(hosts))
    limits = dict(settings.group_limits)
    known = {e.key: e for e in entries} if limits else {}
    group_load: Counter[str] = Counter(g for key in running for g in _limited(known.get(key), limits))
    busy: dict[str, str] = {}
    for job, kind in running:
        busy.setdefault(job, f"is running its {kind}")
    start: list[Entry] = []
    waiting: list[tuple[Entry, str]] = []
    for _at, _job, _index, entry in due:
        if entry.job in busy:
            waiting.append((entry, f"job {entry.job} {busy[entry.job]}"))
            continue
        if fleet >= settings.max_running:
            waiting.append((entry, f"fleet budget {settings.max_running} runs"))
            continue
        full = next((h for h in entry.hosts if load[h] >= settings.per_host), None)
        if full is not None:
            waiting.append((entry, f"host {full} has {load[full]} runs (per_host {settings.per_host})"))
            continue
        groups = _limited(entry, limits)
        full = next((g for g in groups if group_load[g] >= limits[g]), None)
        if full is not None:
            waiting.append((entry, f"group {full} has {group_load[full]} runs (group_limits {limits[full]})"))
            continue
        start.append(entry)
        fleet += 1
        load.update(set(entry.hosts))
        group_load.update(groups)
        busy[entry.job] = f"starts its {entry.kind} first"
    return Choice(start=start, waiting=waiting, wake_at=wake_at)


def upcoming(entries: Sequence[Entry], histories: Mapping[Key, History], now: float,
             settings: DaemonSettings, count: int = 10) -> list[tuple[float, Entry, str]]:
    """The next ``count`` planned starts from ``now``, earliest first (what ``daemon --check`` prints).

    Simulated: each run succeeds the moment it starts (so its followers are due then), budgets
    are ignored. Ends after ``count`` starts, or sooner when nothing has a time any more.
    """
    sim: dict[Key, History] = dict(histories)
    clock = now
    out: list[tuple[float, Entry, str]] = []
    while len(out) < count:
        best: tuple[tuple[float, str, int, int], Entry, str] | None = None
        for index, entry in enumerate(entries):
            plan = next_run(entry, sim.get(entry.key, History()), _leader(entry, sim), clock, settings)
            if plan.at is None:
                continue
            rank = (max(plan.at, clock), entry.job, _order(entry.kind), index)
            if best is None or rank < best[0]:
                best = (rank, entry, plan.reason)
        if best is None:
            break
        rank, entry, reason = best
        clock = rank[0]
        out.append((clock, entry, reason))
        history = started(sim.get(entry.key, History()), clock)
        sim[entry.key] = finished(history, Outcome.OK.value, "", clock)
    return out
