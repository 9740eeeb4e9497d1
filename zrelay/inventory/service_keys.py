"""The daemon's keys, read and checked: ``zrelay.daemon:``, a job's ``schedule:``, an S3 target's ``push:``.

Internal to zrelay.inventory. Each value is checked where it is written (file:line:column); what
needs the whole inventory (a window's group exists, a job's ``after`` names a run it has) is
checked by ``check_windows`` / ``check_job_schedule`` when the Builder finishes.
"""

from __future__ import annotations

import re
from dataclasses import replace
from typing import Any, Callable

from zrelay.inventory.cron import parse_cron
from zrelay.inventory.model import Job, Origin, name_list, suggest
from zrelay.inventory.problems import Errors, Place
from zrelay.inventory.service import (KINDS, DaemonSettings, Notify, RetryPolicy, RunSchedule, Window)
from zrelay.inventory.values import (Bad, check_positive, duration_text, unknown_key, want_duration,
                                     want_int, want_str)
from zrelay.inventory.yamlread import MappingNode, Node, NodeReader, SequenceNode

DAEMON_KEYS = ["jitter", "max_running", "per_host", "group_limits", "metrics", "stop_timeout", "survey_every", "lock_wait",
               "retry", "windows", "notify"]
RETRY_KEYS = ["first", "max", "attempts"]
WINDOW_KEYS = ["group", "hours", "kinds"]
NOTIFY_KEYS = ["on_failure", "on_success", "on_refused", "timeout", "webhook", "webhook_on",
               "webhook_retries", "webhook_timeout"]
SCHEDULE_KINDS = [k for k in KINDS if k != "snapshot"]   # a job's snapshot schedule is its ``snapshot:``
SCHEDULE_KEYS = ["every", "cron", "after"]
OUTCOMES = ["ok", "noop", "refused", "failed", "busy", "skipped"]
#: Shortest run interval: the daemon looks at its timetable about once a second, but a run more
#: often than every 10 s would only list hosts again.
MIN_EVERY = 10
_HOURS = re.compile(r"([01]?\d|2[0-3]):([0-5]\d)\s*-\s*([01]?\d|2[0-4]):([0-5]\d)")
_LISTEN = re.compile(r"(\[[0-9A-Fa-f:.]+\]|[A-Za-z0-9.-]+):(\d{1,5})")


# --------------------------------------------------------------------------- schedules


def read_run_schedule(reader: NodeReader, node: Node, what: str, kind: str) -> RunSchedule | None:
    """``15m`` (every), ``"0 3 * * *"`` (cron), ``after sync`` (follows), or a mapping of every/cron/after."""
    if isinstance(node, MappingNode):
        every: int | None = None
        cron = None
        follows: str | None = None
        texts: list[str] = []
        ok = True
        for key, k_node, v_node in reader.pairs(node, what) or []:
            try:
                if key == "every":
                    every = want_duration(reader.value(v_node), f"{what}.every", MIN_EVERY)
                    texts.append(f"every {duration_text(every)}")
                elif key == "cron":
                    text = want_str(reader.value(v_node), f"{what}.cron")
                    cron = _cron(text, f"{what}.cron")
                    texts.append(f"cron {text}")
                elif key == "after":
                    follows = _after(reader.value(v_node), f"{what}.after", kind)
                    texts.append(f"after each {follows}")
                else:
                    reader.fail(k_node, unknown_key(key, SCHEDULE_KEYS, what))
                    ok = False
            except Bad as bad:
                reader.fail(v_node, str(bad))
                ok = False
        if not ok:
            return None
        if every is None and cron is None and follows is None:
            reader.fail(node, f"{what}: give 'every', 'cron' or 'after'")
            return None
        return RunSchedule(every=every, cron=cron, follows=follows, text=", ".join(texts))
    try:
        return schedule_from_text(reader.value(node), what, kind)
    except Bad as bad:
        reader.fail(node, str(bad))
        return None


def schedule_from_text(value: Any, what: str, kind: str) -> RunSchedule:
    """One string: a duration, a five-field cron expression, or ``after KIND``."""
    if isinstance(value, str):
        text = value.strip()
        if text.startswith("after "):
            follows = _after(text[len("after "):].strip(), what, kind)
            return RunSchedule(follows=follows, text=f"after each {follows}")
        if len(text.split()) == 5:
            return RunSchedule(cron=_cron(text, what), text=f"cron {text}")
    try:
        every = want_duration(value, what, MIN_EVERY)
    except Bad as bad:
        if "too short" in str(bad):
            raise
        raise Bad(f"{bad}; or a cron expression (\"0 3 * * *\") or 'after KIND' "
                  f"({', '.join(KINDS)})") from None
    return RunSchedule(every=every, text=f"every {duration_text(every)}")


def _cron(text: str, what: str) -> Any:
    try:
        return parse_cron(text)
    except ValueError as exc:
        raise Bad(f"{what} {text!r}: {exc}") from None


def _after(value: Any, what: str, kind: str) -> str:
    leader = want_str(value, what).strip()
    if leader not in KINDS:
        raise Bad(f"{what}: unknown run {leader!r}{suggest(leader, KINDS)}; one of {', '.join(KINDS)}")
    if leader == kind:
        raise Bad(f"{what}: a {kind} cannot run after itself")
    return leader


def read_job_schedule(reader: NodeReader, node: Node) -> dict[str, RunSchedule] | None:
    """A job's ``schedule: {sync: 15m, prune: "0 3 * * *", s3-push: after snapshot, drill: 30d}``."""
    items = reader.pairs(node, "schedule")
    if items is None:
        return None
    out: dict[str, RunSchedule] = {}
    ok = True
    for key, k_node, v_node in items:
        if key not in SCHEDULE_KINDS:
            hint = (" (the snapshot schedule is the job's 'snapshot:' key)" if key == "snapshot" else "")
            reader.fail(k_node, unknown_key(key, SCHEDULE_KINDS, "schedule") + hint)
            ok = False
            continue
        schedule = read_run_schedule(reader, v_node, f"schedule.{key}", key)
        if schedule is None:
            ok = False
        else:
            out[key] = schedule
    return out if ok else None


def check_job_schedule(job: Job, origin: Origin, errors: Errors) -> bool:
    """A schedule for a run the job does not have, or after one it does not have, is a mistake."""
    ok = True
    has = {"snapshot": job.lifecycle.snapshot is not None, "sync": bool(job.host_targets),
           "prune": bool(job.lifecycle.keep), "s3-push": bool(job.s3_targets),
           "drill": job.drill_to is not None and bool(job.targets)}
    why = {"snapshot": "no 'snapshot:' key", "sync": "no host targets", "prune": "no 'keep:' key",
           "s3-push": "no S3 targets",
           "drill": "no targets" if not job.targets else "no 'drill_to:' key (where drills restore)"}
    for kind, schedule in job.schedule.items():
        if not has[kind]:
            errors.add(origin, f"job {job.name!r}: schedule.{kind}: the job has {why[kind]}, so it never runs a {kind}")
            ok = False
        elif schedule.follows is not None and not has[schedule.follows]:
            errors.add(origin, f"job {job.name!r}: schedule.{kind}: after {schedule.follows}, but the job has "
                               f"{why[schedule.follows]}")
            ok = False
    return ok


# --------------------------------------------------------------------------- the daemon section


class DaemonReader:
    """Reads ``zrelay.daemon:`` into DaemonSettings; windows are kept with where they were written."""

    def __init__(self, reader: NodeReader) -> None:
        self.r = reader
        self.window_places: list[tuple[Window, Place]] = []
        self.group_places: list[tuple[str, Place]] = []   # group_limits keys

    def read(self, node: Node) -> DaemonSettings | None:
        r = self.r
        items = r.pairs(node, "daemon")
        if items is None:
            return None
        fields: dict[str, Any] = {}
        ok = True
        nested: dict[str, Callable[[Node], Any]] = {"group_limits": self.group_limits, "retry": self.retry,
                                                    "windows": self.windows, "notify": self.notify}
        for key, k_node, v_node in items:
            try:
                if key == "jitter":
                    fields[key] = want_duration(r.value(v_node), f"daemon.{key}", 0)
                elif key in ("stop_timeout", "survey_every", "lock_wait"):
                    fields[key] = want_duration(r.value(v_node), f"daemon.{key}", 1)
                elif key in ("max_running", "per_host"):
                    fields[key] = check_positive(r.value(v_node), f"daemon.{key}")
                elif key == "metrics":
                    fields[key] = check_listen(r.value(v_node), "daemon.metrics")
                elif key in nested:   # a section of its own: its reader reports its problems
                    value = nested[key](v_node)
                    ok = ok and value is not None
                    if value is not None:
                        fields[key] = value
                else:
                    r.fail(k_node, unknown_key(key, DAEMON_KEYS, "daemon"))
                    ok = False
            except Bad as bad:
                r.fail(v_node, str(bad))
                ok = False
        return DaemonSettings(**fields) if ok else None

    def group_limits(self, node: Node) -> tuple[tuple[str, int], ...] | None:
        """``{GROUP: N}``: runs at once touching a host of GROUP; the groups are checked at the end."""
        out: list[tuple[str, int]] = []
        ok = True
        for key, k_node, v_node in self.r.pairs(node, "daemon.group_limits") or []:
            try:
                out.append((key, check_positive(self.r.value(v_node), f"daemon.group_limits.{key}")))
                self.group_places.append((key, self.r.place(k_node)))
            except Bad as bad:
                self.r.fail(v_node, str(bad))
                ok = False
        return tuple(out) if ok else None

    def retry(self, node: Node) -> RetryPolicy | None:
        fields: dict[str, int] = {}
        ok = True
        for key, k_node, v_node in self.r.pairs(node, "daemon.retry") or []:
            try:
                if key in ("first", "max"):
                    fields[key] = want_duration(self.r.value(v_node), f"daemon.retry.{key}", 1)
                elif key == "attempts":
                    fields[key] = want_int(self.r.value(v_node), "daemon.retry.attempts", 0, 1000)
                else:
                    self.r.fail(k_node, unknown_key(key, RETRY_KEYS, "daemon.retry"))
                    ok = False
            except Bad as bad:
                self.r.fail(v_node, str(bad))
                ok = False
        if ok and fields.get("first", 30) > fields.get("max", 1800):
            self.r.fail(node, f"daemon.retry: first ({duration_text(fields.get('first', 30))}) is longer than "
                              f"max ({duration_text(fields.get('max', 1800))})")
            ok = False
        return RetryPolicy(**fields) if ok else None

    def windows(self, node: Node) -> tuple[Window, ...] | None:
        if self.r.is_null(node):
            return ()
        if not isinstance(node, SequenceNode):
            self.r.fail(node, "daemon.windows: expected a list of {group: NAME, hours: \"22:00-06:00\", "
                              f"kinds: [...]}}, got {self.r.kind(node)}")
            return None
        out: list[Window] = []
        ok = True
        for item in node.value:
            window = self.window(item)
            if window is None:
                ok = False
            else:
                out.append(window)
                self.window_places.append((window, self.r.place(item)))
        return tuple(out) if ok else None

    def window(self, node: Node) -> Window | None:
        group: str | None = None
        hours: tuple[int, int, str] | None = None
        kinds: tuple[str, ...] = KINDS
        ok = True
        for key, k_node, v_node in self.r.pairs(node, "window") or []:
            try:
                if key == "group":
                    group = want_str(self.r.value(v_node), "window.group")
                elif key == "hours":
                    hours = parse_hours(self.r.value(v_node), "window.hours")
                elif key == "kinds":
                    kinds = _kinds(self.r.value(v_node), "window.kinds")
                else:
                    self.r.fail(k_node, unknown_key(key, WINDOW_KEYS, "window"))
                    ok = False
            except Bad as bad:
                self.r.fail(v_node, str(bad))
                ok = False
        for required, value in (("group", group), ("hours", hours)):
            if value is None and ok:
                self.r.fail(node, f"window has no '{required}'")
                ok = False
        if not ok or group is None or hours is None:
            return None
        start, end, text = hours
        return Window(group=group, start=start, end=end, kinds=kinds, text=text)

    def notify(self, node: Node) -> Notify | None:
        fields: dict[str, Any] = {}
        ok = True
        for key, k_node, v_node in self.r.pairs(node, "daemon.notify") or []:
            what = f"daemon.notify.{key}"
            try:
                if key in ("on_failure", "on_success", "on_refused"):
                    fields[key] = _command(self.r.value(v_node), what)
                elif key in ("timeout", "webhook_timeout"):
                    fields[key] = want_duration(self.r.value(v_node), what, 1)
                elif key == "webhook":
                    fields[key] = check_webhook(self.r.value(v_node), what)
                elif key == "webhook_on":
                    fields[key] = _outcomes(self.r.value(v_node), what)
                elif key == "webhook_retries":
                    fields[key] = want_int(self.r.value(v_node), what, 0, 100)
                else:
                    self.r.fail(k_node, unknown_key(key, NOTIFY_KEYS, "daemon.notify"))
                    ok = False
            except Bad as bad:
                self.r.fail(v_node, str(bad))
                ok = False
        return Notify(**fields) if ok else None


def check_groups(named: list[tuple[str, str, Place]], groups: dict[str, Any], errors: Errors) -> None:
    """A window or a group limit names a group of the inventory (``all`` counts)."""
    for what, group, place in named:
        if group not in groups:
            errors.add(place, f"{what}: unknown group {group!r}{suggest(group, groups)}; "
                              f"groups: {name_list(groups)}")


def parse_hours(value: Any, what: str) -> tuple[int, int, str]:
    """``"22:00-06:00"`` → (1320, 360, text): minutes after midnight UTC; the end may wrap."""
    text = want_str(value, what).strip()
    match = _HOURS.fullmatch(text)
    if match is None:
        raise Bad(f"{what}: expected HH:MM-HH:MM (UTC), e.g. \"22:00-06:00\", got {text!r}")
    h1, m1, h2, m2 = (int(g) for g in match.groups())
    if h2 == 24 and m2:
        raise Bad(f"{what}: {text!r}: 24:{m2:02d} is not a time of day")
    start, end = h1 * 60 + m1, (h2 * 60 + m2) % 1440
    if start == end:
        raise Bad(f"{what}: {text!r} starts where it ends; leave the window out to run at any time")
    return start, end, f"{h1:02d}:{m1:02d}-{h2:02d}:{m2:02d} UTC"


def check_listen(value: Any, what: str) -> str | None:
    """``ADDRESS:PORT`` for the metrics endpoint, or ``off``."""
    if value is False:
        return None
    text = want_str(value, what).strip()
    if text == "off":
        return None
    match = _LISTEN.fullmatch(text)
    if match is None or not 0 <= int(match.group(2)) <= 65535:
        raise Bad(f"{what}: expected ADDRESS:PORT (e.g. 127.0.0.1:9811, [::1]:9811) or off, got {text!r}")
    return text


def check_webhook(value: Any, what: str) -> str:
    text = want_str(value, what).strip()
    if not re.match(r"https?://[^/\s]+", text) or any(c.isspace() for c in text):
        raise Bad(f"{what}: expected an http:// or https:// URL")
    return text


def _command(value: Any, what: str) -> tuple[str, ...] | str:
    if isinstance(value, list):
        argv = tuple(want_str(v, f"{what}[{i}]") for i, v in enumerate(value))
        if not argv or not argv[0]:
            raise Bad(f"{what}: an empty command")
        return argv
    text = want_str(value, what).strip()
    if not text:
        raise Bad(f"{what}: an empty command")
    return text


def _names(value: Any, what: str, valid: list[str] | tuple[str, ...]) -> tuple[str, ...]:
    items = value if isinstance(value, list) else [value]
    out: list[str] = []
    for item in items:
        name = want_str(item, what)
        if name not in valid:
            raise Bad(f"{what}: unknown {name!r}{suggest(name, valid)}; one of {', '.join(valid)}")
        out.append(name)
    if not out:
        raise Bad(f"{what}: an empty list")
    return tuple(dict.fromkeys(out))


def _kinds(value: Any, what: str) -> tuple[str, ...]:
    return _names(value, what, KINDS)


def _outcomes(value: Any, what: str) -> tuple[str, ...]:
    return _names(value, what, OUTCOMES)


def with_schedule(job: Job, schedule: dict[str, RunSchedule]) -> Job:
    return replace(job, schedule=schedule) if schedule else job
