"""A job's ``snapshot:``, ``keep:`` and ``hooks:`` keys, read and checked into a Lifecycle.

Internal to zrelay.inventory, in two halves as the rest of the loader: ``read_*`` check each
value where it is written (ZrelaySection calls them for a job's keys), and ``job_lifecycle`` /
``lifecycle_fits`` check what needs the whole job and the fleet's settings (Builder calls them):
that a ``keep:`` key names one of the job's targets, that a pruned job's snapshots are
recognisably its own, that the name template gives each scheduled snapshot its own name.
``lifecycle_json`` writes a Lifecycle back as the keys read it (``inventory list --json``).
"""

from __future__ import annotations

import datetime as _dt
from dataclasses import dataclass, field, fields
from typing import Any

from zrelay.inventory.cron import parse_cron
from zrelay.inventory.model import Job, Origin, Target, name_list, suggest
from zrelay.inventory.policy import (BUCKETS, SOURCE_SIDE, TARGETS_DEFAULT, CronSpec, Hooks,
                                     KeepPolicy, Lifecycle, SnapshotSchedule)
from zrelay.inventory.problems import Errors, Place
from zrelay.inventory.values import (Bad, duration_text, snapshot_name_problem, unknown_key,
                                     want_duration, want_int, want_str)
from zrelay.inventory.yamlread import MappingNode, Node, NodeReader

SNAPSHOT_KEYS = ["every", "cron", "name"]
KEEP_RULES = ["within", "last", *BUCKETS, "stale_after"]
HOOK_KEYS = ["pre_snapshot", "post_snapshot", "timeout"]
#: Shortest ``every``: the daemon looks at its timetable once a second, but snapshots more
#: often than this would only fill the pool's snapshot list.
MIN_EVERY = 10
DEFAULT_HOOK_TIMEOUT = Hooks().timeout
_NONE = Lifecycle()


@dataclass
class RawLifecycle:
    """What a job's lifecycle keys said, each checked on its own, with where it was written."""

    snapshot: SnapshotSchedule | None = None
    snapshot_at: Place | None = None     # the ``every`` or ``cron`` value
    name_at: Place | None = None         # the ``name`` value
    #: (key as written, where the key is, its policy) for each entry of ``keep:``.
    keep: list[tuple[str, Place, KeepPolicy]] = field(default_factory=list)
    keep_at: Place | None = None         # the ``keep`` key itself; None: not written
    hooks: Hooks | None = None


# --------------------------------------------------------------------------- reading


def read_snapshot(reader: NodeReader, key_node: Node, node: Node, raw: RawLifecycle) -> bool:
    """``snapshot: {every: 15m}`` or ``{cron: "*/15 * * * *"}``, optionally with ``name``."""
    items = reader.pairs(node, "snapshot")
    if items is None:
        return False
    ok = True
    every: int | None = None
    cron: CronSpec | None = None
    name: str | None = None
    when: tuple[str, Node] | None = None  # the first of every/cron written
    for key, k_node, v_node in items:
        try:
            if key in ("every", "cron"):
                if when is not None:
                    reader.fail(k_node, f"snapshot: give either 'every' or 'cron', not both "
                                f"('{when[0]}' is at line {reader.at(when[1]).line})")
                    ok = False
                    continue
                when = (key, k_node)
                raw.snapshot_at = reader.place(v_node)
                if key == "every":
                    every = want_duration(reader.value(v_node), "snapshot.every", MIN_EVERY)
                else:
                    text = want_str(reader.value(v_node), "snapshot.cron")
                    try:
                        cron = parse_cron(text)
                    except ValueError as exc:
                        raise Bad(f"snapshot.cron {text!r}: {exc}") from None
            elif key == "name":
                name = want_str(reader.value(v_node), "snapshot.name")
                problem = snapshot_name_problem(name, "snapshot.name")
                if problem:
                    raise Bad(problem)
                raw.name_at = reader.place(v_node)
            else:
                reader.fail(k_node, _misplaced(key, "snapshot", SNAPSHOT_KEYS))
                ok = False
        except Bad as bad:
            reader.fail(v_node, str(bad))
            ok = False
    if when is None and ok:
        reader.fail(node if isinstance(node, MappingNode) else key_node,
                    "snapshot: say when, with 'every' (such as 15m, 1h, 1d) or 'cron' "
                    "(such as \"*/15 * * * *\")")
        return False
    if ok:
        raw.snapshot = SnapshotSchedule(every=every, cron=cron, name=name)
    return ok


def _misplaced(key: str, where: str, valid: list[str]) -> str:
    """``unknown_key``, telling ``snapshot:`` (when to take them) from ``snapshots:`` (which
    ones travel), whose names are one letter apart."""
    message = unknown_key(key, valid, where)
    if where == "snapshot" and key in ("prefix", "regex"):
        message += f"; a filter of the snapshots a job replicates goes under 'snapshots: {{{key}: …}}'"
    return message


def read_keep(reader: NodeReader, key_node: Node, node: Node, raw: RawLifecycle) -> bool:
    """``keep: {source: {...}, targets: {...}, HOST:DATASET: {...}, s3:NAME: {...}}``.

    Each key is kept as written: only the whole job says which targets it has."""
    raw.keep_at = reader.place(key_node)
    items = reader.pairs(node, "keep")
    if items is None:
        return False
    if not items:
        reader.fail(node if isinstance(node, MappingNode) else key_node,
                    "keep: no policy; give one for 'source', 'targets' (every target) or a "
                    "target of this job, such as {source: {daily: 14}}")
        return False
    ok = True
    for side, k_node, v_node in items:
        policy = read_policy(reader, side, k_node, v_node)
        if policy is None:
            ok = False
        else:
            raw.keep.append((side, reader.place(k_node), policy))
    return ok


def read_policy(reader: NodeReader, side: str, key_node: Node, node: Node) -> KeepPolicy | None:
    """One side's rules: ``within``, ``last``, ``hourly`` … ``yearly``, ``stale_after``."""
    what = f"keep.{side}"
    items = reader.pairs(node, what)
    if items is None:
        return None
    rules: dict[str, int] = {}
    ok = True
    for key, k_node, v_node in items:
        try:
            if key in ("within", "stale_after"):
                if key == "stale_after" and side != SOURCE_SIDE:
                    reader.fail(k_node, f"{what}.stale_after: only the source's policy has it "
                                "(how long a target that stopped receiving holds back the "
                                "source's snapshots)")
                    ok = False
                    continue
                rules[key] = want_duration(reader.value(v_node), f"{what}.{key}")
            elif key in KEEP_RULES:
                rules[key] = want_int(reader.value(v_node), f"{what}.{key}", 1)
            else:
                valid = KEEP_RULES if side == SOURCE_SIDE else KEEP_RULES[:-1]
                reader.fail(k_node, unknown_key(key, valid, what))
                ok = False
        except Bad as bad:
            reader.fail(v_node, str(bad))
            ok = False
    if not ok:
        return None
    policy = KeepPolicy(**rules)
    if policy.empty:
        reader.fail(node if isinstance(node, MappingNode) else key_node,
                    f"{what} keeps nothing; give at least one of within, last, "
                    f"{', '.join(BUCKETS)}")
        return None
    return policy


def read_hooks(reader: NodeReader, key_node: Node, node: Node, raw: RawLifecycle) -> bool:
    """``hooks: {pre_snapshot: CMD, post_snapshot: CMD, timeout: 30s}``."""
    items = reader.pairs(node, "hooks")
    if items is None:
        return False
    commands: dict[str, str] = {}
    timeout = DEFAULT_HOOK_TIMEOUT
    ok = True
    for key, k_node, v_node in items:
        try:
            if key in ("pre_snapshot", "post_snapshot"):
                commands[key] = want_str(reader.value(v_node), f"hooks.{key}")
            elif key == "timeout":
                timeout = float(want_duration(reader.value(v_node), "hooks.timeout"))
            else:
                reader.fail(k_node, unknown_key(key, HOOK_KEYS, "hooks"))
                ok = False
        except Bad as bad:
            reader.fail(v_node, str(bad))
            ok = False
    if ok and not commands:
        reader.fail(node if isinstance(node, MappingNode) else key_node,
                    "hooks: no command; give pre_snapshot and/or post_snapshot")
        return False
    if ok:
        raw.hooks = Hooks(timeout=timeout, **commands)
    return ok


# --------------------------------------------------------------------------- the whole job


def job_lifecycle(raw: RawLifecycle, targets: list[tuple[Target, Origin]],
                  errors: Errors) -> Lifecycle | None:
    """The job's Lifecycle, each ``keep:`` key checked against the targets the job lists
    (``source``, ``targets``, or one of them exactly as written); None after an error."""
    if not raw.keep and raw.snapshot is None and raw.hooks is None:
        return _NONE  # most jobs: nothing to check, one shared value
    written = [str(target) for target, _ in targets]
    keep: dict[str, KeepPolicy] = {}
    ok = True
    for side, place, policy in raw.keep:
        if side in (SOURCE_SIDE, TARGETS_DEFAULT) or side in written:
            keep[side] = policy
            continue
        hint = suggest(side, [SOURCE_SIDE, TARGETS_DEFAULT, *written])
        what = ("is not a target of this job" if ":" in side else "is not a key of keep")
        errors.add(place, f"keep: {side!r} {what}{hint}; expected source, targets (every "
                   f"target without its own entry) or one of the job's targets: "
                   f"{name_list(written)}")
        ok = False
    if not ok:
        return None
    return Lifecycle(snapshot=raw.snapshot, keep=keep, hooks=raw.hooks)


def lifecycle_fits(job: Job, raw: RawLifecycle, fleet_template: str, errors: Errors) -> bool:
    """What the lifecycle asks of the rest of the job: a pruned job's snapshots are told
    apart from other tools' (else a prune would destroy theirs), a scheduled snapshot is one
    the job's ``snapshots:`` filter selects (else it would never travel), and two scheduled
    snapshots never get one name."""
    if not job.lifecycle.keep and job.lifecycle.snapshot is None:
        return True
    ok = True
    template = job.snapshot_template(fleet_template)
    if job.lifecycle.keep and job.own_snapshots(fleet_template) is None and raw.keep_at:
        errors.add(raw.keep_at, f"keep: this job's snapshots cannot be told apart from other "
                   f"tools' (no snapshots: prefix or regex, and the name template {template!r} "
                   "starts with '%'): add `snapshots: {prefix: …}` or start the template "
                   "with a fixed word")
        ok = False
    schedule = job.lifecycle.snapshot
    if schedule is None:
        return ok
    where = raw.name_at or raw.snapshot_at  # the name when the job gives one
    if where is None:
        return ok
    sample = _dt.datetime(2013, 1, 7, tzinfo=_dt.timezone.utc).strftime(template)
    prefix = job.select.prefix
    if prefix is not None and not sample.startswith(prefix):  # a regex may pick some times only
        errors.add(where, f"snapshot: the name template {template!r} gives names such as "
                   f"{sample!r}, which this job's snapshots: prefix {prefix!r} does not "
                   "select, so its own snapshots would never be replicated")
        ok = False
    gap = _shortest_gap(schedule)
    for base in (_dt.datetime(2013, 1, 1, tzinfo=_dt.timezone.utc),    # a year's first second
                 _dt.datetime(2013, 1, 7, tzinfo=_dt.timezone.utc)):   # an ISO week's
        first, second = base.strftime(template), (base + _dt.timedelta(seconds=gap)).strftime(template)
        if first == second:
            errors.add(where, f"snapshot: the name template {template!r} gives two snapshots "
                       f"{duration_text(gap)} apart the same name ({first!r}); give it a finer "
                       "time field (such as %H%M) or snapshot less often")
            return False
    return ok


def _shortest_gap(schedule: SnapshotSchedule) -> int:
    """Seconds between the two closest snapshots the schedule takes (cron: within a day,
    else a day)."""
    if schedule.every is not None:
        return schedule.every
    assert schedule.cron is not None
    ticks = sorted(hour * 60 + minute for hour in schedule.cron.hours
                   for minute in schedule.cron.minutes)
    gaps = [b - a for a, b in zip(ticks, ticks[1:])]
    return 60 * min(gaps) if gaps else 86400


# --------------------------------------------------------------------------- writing back


def lifecycle_json(lifecycle: Lifecycle) -> dict[str, Any]:
    """The job's ``snapshot``, ``keep`` and ``hooks`` keys as they would be written (durations
    as text, so the JSON reads back as the same Lifecycle); None/{} where the job has none."""
    snapshot: dict[str, Any] | None = None
    if lifecycle.snapshot is not None:
        s = lifecycle.snapshot
        snapshot = ({"every": duration_text(s.every)} if s.every is not None
                    else {"cron": s.cron.text if s.cron else None})
        if s.name is not None:
            snapshot["name"] = s.name
    keep: dict[str, dict[str, Any]] = {}
    for side, policy in lifecycle.keep.items():
        rules: dict[str, Any] = {}
        for f in fields(policy):
            value = getattr(policy, f.name)
            if value is not None:
                rules[f.name] = duration_text(value) if f.name in ("within", "stale_after") else value
        keep[side] = rules
    hooks: dict[str, Any] | None = None
    if lifecycle.hooks is not None:
        h = lifecycle.hooks
        hooks = {key: getattr(h, key) for key in ("pre_snapshot", "post_snapshot")
                 if getattr(h, key) is not None}
        hooks["timeout"] = duration_text(int(h.timeout))
    return {"snapshot": snapshot, "keep": keep, "hooks": hooks}
