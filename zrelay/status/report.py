"""What one inspection of a job towards one target learnt, in the shapes every frontend reads.

A ``TargetReport`` holds the ``status`` row (``LocationStatus``, whose fields are
the ``status --json`` schema), the TUI's cells (``DatasetCell``) and the listings
the TUI's detail aligns. The states are ordered worst first, so a recursive
job's row shows its worst dataset. No I/O here: the hosts and the bucket are
asked in ``hosts`` and ``s3``.
"""

from __future__ import annotations

import copy
import time
from dataclasses import asdict, dataclass, field, fields, is_dataclass, replace
from typing import Any, Iterable, Mapping

from zrelay.drill import last_drill_field
from zrelay.errors import LockHolder
from zrelay.inventory.model import Endpoint, Job, S3Ref, Target
from zrelay.plan import Plan, PlanKind
from zrelay.standing import Standing
from zrelay.state import StoreView, TaskRow, Totals, TransferRow
from zrelay.zfs.model import DatasetState

# Worst first: the row of a recursive job shows its worst dataset.
STATES = ("unreachable", "error", "broken", "diverged", "no-common-base", "resumable", "missing", "behind",
          "no-snapshots", "in-sync")
#: An S3 target holding a chain with a missing or damaged send: some stored snapshots cannot be restored.
BROKEN = "broken"
#: States a row can have besides the planner's: a live transfer, an S3 target not inspected yet.
RUNNING = "running"
#: A host target another zrelay holds (zrelay.locks): not planned, since it may be half-written.
BUSY = "busy"
NOT_CHECKED = "not-checked"
PENDING = "pending"  # the TUI's cells before their host answered; never in ``status`` output

#: The state of each plan kind, as a row or a cell shows it.
KIND_STATE = {
    PlanKind.NOOP: "in-sync",
    PlanKind.INCREMENTAL: "behind",
    PlanKind.FULL: "missing",
    PlanKind.RESUME: "resumable",
    PlanKind.DIVERGED: "diverged",
    PlanKind.NO_COMMON_BASE: "no-common-base",
    PlanKind.NO_SOURCE_SNAPSHOT: "no-snapshots",
}

S3_NOT_CHECKED = "S3 targets are not inspected by status yet"


@dataclass(frozen=True)
class LocationStatus:
    """One job towards one target. Field names are the stable ``status --json`` schema (docs/status-json.md)."""

    job: str
    source: str
    target: str
    state: str
    datasets: int = 1
    source_newest: str | None = None
    target_newest: str | None = None
    common_base: str | None = None
    behind: int = 0
    lag_seconds: int | None = None       # source newest − common base, by creation time
    base_age_seconds: int | None = None  # now − common base creation
    message: str = ""
    # added with the state store; older consumers can ignore them
    target_kind: str = "host"            # "host" or "s3"
    location: str = ""                   # host name, or "s3:NAME"
    planned_state: str | None = None     # the hosts' state when ``state`` is "running"
    last_run: dict | None = None         # newest finished run of this job → target (store)
    last_success_at: float | None = None
    bytes_total: int = 0                 # bytes moved by every recorded run
    transfer: dict | None = None         # the live transfer, when ``state`` is "running"
    checked_at: float = 0.0
    s3: dict | None = None               # S3 targets: where, and what is stored (docs/status-json.md)
    holder: dict | None = None           # the zrelay holding the target when ``state`` is "busy"
    lifecycle: dict | None = None        # next snapshot due, kept and next prune's drops (snapshot:/keep:)
    rpo_seconds: int | None = None       # the job's RPO (``rpo:``, else its source host's); None: none set
    rpo_breach: bool | None = None       # base older than the RPO, or no base; None: no RPO, or not inspected
    last_drill: dict | None = None       # newest restore drill of this target (zrelay drill): when, snapshot, result

    def to_dict(self) -> dict:
        """The row as ``dataclasses.asdict`` gives it (fields in schema order, nested values
        copied), field by field: asdict's recursive walk cost 70 µs a row, 0.7 s of a
        ``status --json`` over 10,000 targets."""
        return {name: _copied(getattr(self, name)) for name in _ROW_FIELDS}


_ROW_FIELDS = tuple(f.name for f in fields(LocationStatus))
_ATOMIC = (str, int, float, type(None))


def _copied(value: Any) -> Any:
    """``value`` as ``dataclasses.asdict`` copies a field's value: scalars as they are, dicts,
    lists and tuples rebuilt, anything else deep-copied."""
    if isinstance(value, _ATOMIC):
        return value
    if isinstance(value, dict) and type(value) is dict:
        return {_copied(k): _copied(v) for k, v in value.items()}
    if type(value) in (list, tuple):
        return type(value)(_copied(v) for v in value)
    if is_dataclass(value) and not isinstance(value, type):
        return asdict(value)
    return copy.deepcopy(value)


@dataclass(frozen=True)
class DatasetCell:
    """One dataset at one location: a cell of the divergence matrix."""

    job: str
    source: str          # host:dataset of this dataset on the source
    target: str          # host:dataset, or s3:NAME
    location: str        # host name, or s3:NAME
    state: str
    behind: int = 0
    base: str | None = None
    message: str = ""


@dataclass(frozen=True)
class TargetReport:
    """Everything one inspection of a job towards one target learnt, for every frontend."""

    job: Job
    target: Target
    row: LocationStatus
    cells: tuple[DatasetCell, ...] = ()
    plans: tuple[Plan, ...] = ()
    source_states: Mapping[str, DatasetState] = field(default_factory=dict)
    target_states: Mapping[str, DatasetState] = field(default_factory=dict)
    unreachable_host: str | None = None   # the host that could not be reached, if that was the problem

    @property
    def key(self) -> tuple[str, str]:
        return (self.job.name, str(self.target))


def rpo_breach(rpo: int | None, base_age: int | None) -> bool | None:
    """Whether a target inspected with a common base ``base_age`` seconds old (None: no base) has
    lost more than the job's RPO; None when the job has no RPO. With no base, nothing on the
    target can be brought up to date incrementally: a breach."""
    if rpo is None:
        return None
    return base_age is None or base_age > rpo


def location_of(target: Target) -> str:
    return target.host if isinstance(target, Endpoint) else str(target)


def location_row(job: Job, target: str, location: str, state: str, message: str, root: Standing, behind: int,
                 datasets: int, target_newest: str | None, now: float, **extra: Any) -> LocationStatus:
    """One row; ``root`` is the job's own dataset, ``behind`` the worst dataset's (recursive jobs)."""
    base = root.common_base
    return LocationStatus(
        job=job.name, source=str(job.source), target=target, state=state, datasets=datasets,
        source_newest=root.source_newest.name if root.source_newest else None, target_newest=target_newest,
        common_base=base.name if base else None, behind=behind,
        lag_seconds=0 if state == "in-sync" else root.lag_seconds,
        base_age_seconds=root.base_age_seconds,
        message=message or (f"behind {behind}" if state == "behind" else ""),
        location=location, checked_at=now, rpo_seconds=job.rpo,
        rpo_breach=rpo_breach(job.rpo, root.base_age_seconds), **extra)


def failed_report(job: Job, target: Target, state: str, message: str, now: float,
                  host: str | None = None, s3: dict | None = None) -> TargetReport:
    """The report of a target that could not be inspected (one cell, saying why)."""
    row = LocationStatus(job.name, str(job.source), str(target), state, message=message,
                         target_kind="s3" if isinstance(target, S3Ref) else "host",
                         location=location_of(target), checked_at=now, s3=s3, rpo_seconds=job.rpo)
    cell = DatasetCell(job.name, str(job.source), str(target), location_of(target), state, message=message)
    return TargetReport(job, target, row, (cell,), unreachable_host=host)


def not_checked(job: Job, target: S3Ref, now: float | None = None) -> TargetReport:
    """An S3 target listed but not inspected (``status`` inspects them now; kept for canned reports)."""
    at = time.time() if now is None else now
    row = LocationStatus(job.name, str(job.source), str(target), NOT_CHECKED, message=S3_NOT_CHECKED,
                         target_kind="s3", location=str(target), checked_at=at, rpo_seconds=job.rpo)
    cell = DatasetCell(job.name, str(job.source), str(target), str(target), NOT_CHECKED, message=S3_NOT_CHECKED)
    return TargetReport(job, target, row, (cell,))


def busy_report(job: Job, target: Endpoint, holder: LockHolder | None, now: float) -> TargetReport:
    """The report of a host target another zrelay holds: not planned (see Engine.unheld)."""
    who = holder.describe() if holder is not None else "another zrelay is replicating it"
    message = f"{who}; the target is inspected once that run is done"
    info = None if holder is None else {"pid": holder.pid, "started_at": holder.started, "command": holder.command,
                                        "run_id": holder.run_id, "what": holder.what}
    row = LocationStatus(job.name, str(job.source), str(target), BUSY, message=message, location=target.host,
                         checked_at=now, holder=info, rpo_seconds=job.rpo)
    cell = DatasetCell(job.name, str(job.source), str(target), target.host, BUSY, message=message)
    return TargetReport(job, target, row, (cell,))


def targets_of(jobs: Iterable[Job]) -> list[tuple[Job, Target]]:
    """Every (job, target) pair, host targets and S3 targets, in inventory order."""
    return [(job, t) for job in jobs for t in job.targets]


def annotate(row: LocationStatus, store: StoreView) -> LocationStatus:
    """Add what the store knows: the last run, totals, and a transfer running right now."""
    key = (row.job, row.target)
    last: TaskRow | None = store.last_results.get(key)
    totals: Totals | None = store.totals.get(key)
    live: TransferRow | None = store.transfer_for(row.job, row.target)
    changes: dict = {}
    if last is not None:
        changes["last_run"] = {
            "outcome": last.outcome, "finished_at": last.finished, "started_at": last.started,
            "bytes": last.bytes, "seconds": round(last.seconds, 3), "message": last.message,
            "failed_host": last.failed_host, "run_id": last.run_id, "pid": last.pid,
        }
    if totals is not None:
        changes["last_success_at"] = totals.last_success
        changes["bytes_total"] = totals.bytes
    if live is not None:
        changes["transfer"] = transfer_dict(live)
        if row.state not in ("unreachable", BROKEN):  # a push does not mend a broken chain: keep alerting
            changes["planned_state"] = row.state
            changes["state"] = RUNNING
    return replace(row, **changes) if changes else row


def annotate_drill(row: LocationStatus, drills: Mapping[tuple[str, str], dict[str, Any]]) -> LocationStatus:
    """Add the newest restore drill of the row's job and target (zrelay.drillstate), if any."""
    last = last_drill_field(drills.get((row.job, row.target)))
    return replace(row, last_drill=last) if last is not None else row


def transfer_dict(t: TransferRow) -> dict:
    eta = t.eta()
    return {
        "stream": t.stream, "source_host": t.source_host, "target_host": t.target_host,
        "bytes": t.done, "estimate": t.estimate, "rate": round(t.rate, 1),
        "eta_seconds": None if eta is None else round(eta), "started_at": t.started,
        "updated_at": t.updated, "pid": t.pid, "command": t.command,
    }
