"""What is where: for every job and location, how far the target is behind, or why it can't catch up.

It plans every job exactly as ``sync`` would, but transfers nothing, so the
state it reports ("behind 3", "diverged") is exactly what ``sync`` would act on.
What the hosts cannot tell (a transfer running in another process, the last
run's result) comes from the state store (``zrelay.state``).

The same inspection feeds three frontends: ``zrelay status`` (one row per job
and target), and the TUI's divergence matrix (one cell per dataset and
location) and dataset detail (snapshot lists aligned by GUID, ``align``).
"""

from __future__ import annotations

import asyncio
import time
from dataclasses import asdict, dataclass, field, replace
from typing import TYPE_CHECKING, Iterable, Mapping, Sequence

from zrelay.errors import RemoteCommandFailed, TransportError, ZrelayError
from zrelay.inventory.model import Endpoint, Job, S3Ref, Target
from zrelay.plan import Plan, PlanKind, plan
from zrelay.state import StoreView, TaskRow, Totals, TransferRow
from zrelay.zfs.model import DatasetState, SnapshotFilter

if TYPE_CHECKING:  # the engine (and asyncssh) load only when hosts are queried: the TUI paints first
    from zrelay.engine import Engine

# Worst first: the row of a recursive job shows its worst dataset.
STATES = ("unreachable", "error", "diverged", "no-common-base", "resumable", "missing", "behind",
          "no-snapshots", "in-sync")
#: States a row can have besides the planner's: a live transfer, an S3 target not inspected yet.
RUNNING = "running"
NOT_CHECKED = "not-checked"
PENDING = "pending"  # the TUI's cells before their host answered; never in ``status`` output

_KIND_STATE = {
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

    def to_dict(self) -> dict:
        return asdict(self)


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


def location_of(target: Target) -> str:
    return target.host if isinstance(target, Endpoint) else str(target)


def _row_from_plans(job: Job, target: Endpoint, plans: list[Plan], now: float,
                    target_newest: str | None) -> LocationStatus:
    def worst(p: Plan) -> int:
        return STATES.index(_KIND_STATE[p.kind])

    head = min(plans, key=worst)
    root = next((p for p in plans if p.target == target.dataset), plans[0])
    state = _KIND_STATE[head.kind]
    behind = max(p.behind for p in plans)
    source_newest = _newest_selected(root)
    base = root.base
    lag = base_age = None
    if base is not None:
        base_age = max(0, int(now - base.creation)) if base.creation else None
        newest_creation = root.steps[-1].snapshot.creation if root.steps else base.creation
        lag = max(0, int(newest_creation - base.creation)) if base.creation else None
    if state == "in-sync":
        lag = 0
    message = head.reason if head.kind is not PlanKind.NOOP else ""
    if head.options:
        message += " Options: " + " | ".join(head.options)
    label = f"behind {behind}" if state == "behind" else state
    return LocationStatus(
        job=job.name, source=str(job.source), target=str(target), state=state, datasets=len(plans),
        source_newest=source_newest, target_newest=target_newest, common_base=base.name if base else None,
        behind=behind, lag_seconds=lag, base_age_seconds=base_age,
        message=message.strip() if message else ("" if label == state else label),
        location=target.host, checked_at=now)


def _newest_selected(p: Plan) -> str | None:
    if p.steps:
        return p.steps[-1].snapshot.name
    return p.base.name if p.base else None


def _cell(job: Job, target: Endpoint, p: Plan) -> DatasetCell:
    source = f"{job.source.host}:{p.source}"
    return DatasetCell(job.name, source, f"{target.host}:{p.target}", target.host, _KIND_STATE[p.kind],
                       p.behind, p.base.name if p.base else None,
                       "" if p.kind is PlanKind.NOOP else p.reason)


def failed_report(job: Job, target: Target, state: str, message: str, now: float,
                  host: str | None = None) -> TargetReport:
    """The report of a target that could not be inspected (one cell, saying why)."""
    row = LocationStatus(job.name, str(job.source), str(target), state, message=message,
                         location=location_of(target), checked_at=now)
    cell = DatasetCell(job.name, str(job.source), str(target), location_of(target), state, message=message)
    return TargetReport(job, target, row, (cell,), unreachable_host=host)


def not_checked(job: Job, target: S3Ref, now: float | None = None) -> TargetReport:
    """The report of an S3 target: listed, so nothing is silently missing, but not inspected."""
    at = time.time() if now is None else now
    row = LocationStatus(job.name, str(job.source), str(target), NOT_CHECKED, message=S3_NOT_CHECKED,
                         target_kind="s3", location=str(target), checked_at=at)
    cell = DatasetCell(job.name, str(job.source), str(target), str(target), NOT_CHECKED, message=S3_NOT_CHECKED)
    return TargetReport(job, target, row, (cell,))


async def inspect_target(engine: Engine, job: Job, target: Endpoint, now: float | None = None) -> TargetReport:
    """Plan ``job`` towards one host target and keep the listings, never raising."""
    at = time.time() if now is None else now
    try:
        plans = await engine.plan_job(job, target, rollback=False)
        src_states, dst_states = await asyncio.gather(
            engine.states.get(engine.host(job.source.host), job.source.dataset, job.recursive),
            engine.states.get(engine.host(target.host), target.dataset, job.recursive))
    except RemoteCommandFailed as exc:
        return failed_report(job, target, "error", str(exc), at)
    except TransportError as exc:
        return failed_report(job, target, "unreachable", str(exc), at, exc.host)
    except ZrelayError as exc:
        return failed_report(job, target, "error", str(exc), at)
    return report_from_plans(job, target, plans, src_states, dst_states, at)


def report_from_plans(job: Job, target: Endpoint, plans: Sequence[Plan], src_states: Mapping[str, DatasetState],
                      dst_states: Mapping[str, DatasetState], now: float) -> TargetReport:
    """The report for plans already made (by ``Engine.plan_job``, or by hand in tests)."""
    if not plans:
        return failed_report(job, target, "error", "source has no datasets", now)
    root = dst_states.get(target.dataset)
    newest = root.newest.name if root is not None and root.newest is not None else None
    row = _row_from_plans(job, target, list(plans), now, newest)
    return TargetReport(job, target, row, tuple(_cell(job, target, p) for p in plans), tuple(plans),
                        dict(src_states), dict(dst_states))


def targets_of(jobs: Iterable[Job]) -> list[tuple[Job, Target]]:
    """Every (job, target) pair, host targets and S3 targets, in inventory order."""
    return [(job, t) for job in jobs for t in job.targets]


async def collect_reports(engine: Engine, jobs: Iterable[Job]) -> list[TargetReport]:
    """A report for every target of ``jobs`` (S3 targets: not checked), hosts queried concurrently."""
    now = time.time()

    async def one(job: Job, target: Target) -> TargetReport:
        if isinstance(target, Endpoint):
            return await inspect_target(engine, job, target, now)
        return not_checked(job, target, now)

    return list(await asyncio.gather(*(one(j, t) for j, t in targets_of(jobs))))


async def collect_status(engine: Engine, jobs: Iterable[Job],
                         store: StoreView | None = None) -> list[LocationStatus]:
    """Status of every target of ``jobs``, queried concurrently, with the store's runs when given."""
    rows = [r.row for r in await collect_reports(engine, jobs)]
    return [annotate(r, store) for r in rows] if store is not None else rows


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
            "failed_host": last.failed_host, "run_id": last.run_id,
        }
    if totals is not None:
        changes["last_success_at"] = totals.last_success
        changes["bytes_total"] = totals.bytes
    if live is not None:
        changes["transfer"] = transfer_dict(live)
        if row.state not in ("unreachable",):
            changes["planned_state"] = row.state
            changes["state"] = RUNNING
    return replace(row, **changes) if changes else row


def transfer_dict(t: TransferRow) -> dict:
    eta = t.eta()
    return {
        "stream": t.stream, "source_host": t.source_host, "target_host": t.target_host,
        "bytes": t.done, "estimate": t.estimate, "rate": round(t.rate, 1),
        "eta_seconds": None if eta is None else round(eta), "started_at": t.started,
        "updated_at": t.updated, "pid": t.pid, "command": t.command,
    }


# --- dataset detail: snapshot lists side by side, aligned by GUID -----------------------


@dataclass(frozen=True)
class DetailCell:
    """One snapshot in one column of the detail."""

    name: str
    guid: int
    base: bool = False        # the common base of this location (in the source column: of any location)
    divergent: bool = False   # on the target only after the base, or a source name with another GUID
    selected: bool = True     # source column: the job's filter replicates it


@dataclass(frozen=True)
class DetailRow:
    guid: int
    cells: tuple[DetailCell | None, ...]   # source first, then each location; None: not there


@dataclass(frozen=True)
class DatasetDetail:
    source: str                      # host:dataset
    columns: tuple[str, ...]         # "host:dataset" of the source, then of each location
    notes: tuple[str, ...]           # per column: "", "missing", "unreachable", "diverged", …
    rows: tuple[DetailRow, ...]


def align(source_name: str, source: DatasetState,
          locations: Sequence[tuple[str, DatasetState | str]],
          select: SnapshotFilter = SnapshotFilter()) -> DatasetDetail:
    """Merge the source's and each location's snapshot lists into rows of one GUID each.

    Source order is the spine; a snapshot only a target holds is placed right
    after the target's previous snapshot, so a divergent branch shows where it
    split off. A location given as a string could not be listed (the string
    says why). Base and divergence come from the planner, so the detail agrees
    with what ``sync`` would do.
    """
    spine = [s.guid for s in source.snapshots]
    seen = set(spine)
    after: dict[int | None, list[int]] = {}
    bases: list[int | None] = []
    foreign: list[set[int]] = []   # per location: GUIDs flagged divergent
    notes = [""]
    for _name, state in locations:
        if isinstance(state, str):
            bases.append(None)
            foreign.append(set())
            notes.append(state)
            continue
        p = plan(source, state, select=select)
        bases.append(p.base.guid if p.base is not None else None)
        unrelated = p.kind is PlanKind.NO_COMMON_BASE
        foreign.append({t.guid for t in state.snapshots
                        if t.guid not in seen and (unrelated or t.name in p.conflicts)})
        notes.append("missing" if not state.exists else
                     (_KIND_STATE[p.kind] if p.kind is not PlanKind.NOOP else ""))
        anchor: int | None = None
        for snap in state.snapshots:
            if snap.guid not in seen:
                after.setdefault(anchor, []).append(snap.guid)
                seen.add(snap.guid)
            anchor = snap.guid
    order: list[int] = []
    stack = list(reversed(spine)) + list(reversed(after.get(None, [])))
    while stack:
        guid = stack.pop()
        order.append(guid)
        stack.extend(reversed(after.get(guid, [])))
    src_by_guid = source.by_guid()
    loc_by_guid = [state.by_guid() if not isinstance(state, str) else {} for _n, state in locations]
    any_base = {b for b in bases if b is not None}
    rows = []
    for guid in order:
        cells: list[DetailCell | None] = []
        s = src_by_guid.get(guid)
        cells.append(DetailCell(s.name, guid, base=guid in any_base, selected=select.matches(s.name))
                     if s is not None else None)
        for i, by_guid in enumerate(loc_by_guid):
            t = by_guid.get(guid)
            cells.append(DetailCell(t.name, guid, base=guid == bases[i], divergent=guid in foreign[i])
                         if t is not None else None)
        rows.append(DetailRow(guid, tuple(cells)))
    return DatasetDetail(source_name, (source_name, *(n for n, _ in locations)), tuple(notes), tuple(rows))


def detail_for(source_endpoint: str, reports: Iterable[TargetReport]) -> DatasetDetail | None:
    """The detail of one source dataset from the reports of every job that replicates it."""
    host, _, dataset = source_endpoint.partition(":")
    source: DatasetState | None = None
    select = SnapshotFilter()
    columns: list[tuple[str, DatasetState | str]] = []
    for r in reports:
        if r.job.source.host != host or not isinstance(r.target, Endpoint):
            continue
        root = r.job.source.dataset
        if not (dataset == root or (r.job.recursive and dataset.startswith(root + "/"))):
            continue
        tname = r.target.dataset + dataset[len(root):]
        label = f"{r.target.host}:{tname}"
        if dataset in r.source_states:
            source = r.source_states[dataset]
            select = r.job.select
        if r.row.state in ("unreachable", "error") and not r.target_states:
            columns.append((label, r.row.state))
        else:
            columns.append((label, r.target_states.get(tname, DatasetState.absent(tname))))
    if source is None:
        return None
    return align(source_endpoint, source, columns, select)
