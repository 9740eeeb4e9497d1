"""Host targets: each job planned towards each host target exactly as ``sync`` plans it.

A target that changed since its newest snapshot (standing.py) cannot receive
an incremental, so such a row says diverged where the plan says behind. The
engine (and asyncssh) load only when a host is queried.
"""

from __future__ import annotations

import asyncio
import time
from dataclasses import dataclass
from typing import TYPE_CHECKING, Iterable, Mapping, Sequence

from zrelay import selection
from zrelay.errors import RemoteCommandFailed, TargetBusy, TransportError, ZrelayError
from zrelay.inventory.model import Endpoint, Job
from zrelay.plan import Plan, PlanKind
from zrelay.standing import Changed, Standing, changed_since_newest, standing, worst_behind
from zrelay.status.report import (KIND_STATE, STATES, DatasetCell, LocationStatus, TargetReport, busy_report,
                                  failed_report, location_row)
from zrelay.zfs import commands, parse
from zrelay.zfs.model import DatasetState

if TYPE_CHECKING:  # the engine (and asyncssh) load only when hosts are queried: the TUI paints first
    from zrelay.engine import Fleet


@dataclass(frozen=True)
class _Verdict:
    """One dataset's state, the row's message for it, and its cell's shorter one."""

    state: str
    message: str
    cell_message: str


def _verdict(p: Plan, host: str, target: DatasetState, changed: Changed | None) -> _Verdict:
    """The planner's verdict, unless the target changed since its newest snapshot (standing.py).

    An incremental receive into such a target fails ("modified since most
    recent snapshot"), so a row that the plan calls behind is diverged; where
    the host cannot tell (zfs-fuse), the row says so.
    """
    state, message = KIND_STATE[p.kind], _plan_message(p)
    cell = "" if p.kind is PlanKind.NOOP else p.reason
    if changed is None or p.kind is not PlanKind.INCREMENTAL or not p.steps:
        return _Verdict(state, message, cell)
    if changed.changed is None:
        return _Verdict(state, f"{message} ({changed.detail}.)", cell)
    if not changed.changed:
        return _Verdict(state, message, cell)
    why = (f"{host}:{changed.detail}: zfs receive refuses an incremental stream into it "
           f"(\"modified since most recent snapshot\"), so it cannot get @{p.steps[-1].snapshot.name}.")
    newest = target.newest.name if target.newest else "?"
    options = ("re-run with --rollback to discard the change (the incremental is then received with -F)",
               f"or roll it back yourself: `zfs rollback {p.target}@{newest}` on {host}",
               "or point the job at a new target dataset")
    return _Verdict("diverged", f"{why} Options: " + " | ".join(options), why)


def _row_from_plans(job: Job, target: Endpoint, plans: list[Plan], now: float, target_newest: str | None,
                    standings: Sequence[Standing], verdicts: Sequence[_Verdict]) -> LocationStatus:
    """The row: the worst dataset's state and message; the fields of docs/status-json.md from the listings."""
    head = min(verdicts, key=lambda v: STATES.index(v.state))
    root = next((i for i, p in enumerate(plans) if p.target == target.dataset), 0)
    return location_row(job, str(target), target.host, head.state, head.message, standings[root],
                        worst_behind(list(standings)), len(plans), target_newest, now)


def _plan_message(p: Plan) -> str:
    """The planner's reason and options; empty when in sync."""
    if p.kind is PlanKind.NOOP:
        return ""
    message = p.reason + (" Options: " + " | ".join(p.options) if p.options else "")
    return message.strip()


def _cell(job: Job, target: Endpoint, p: Plan, st: Standing, v: _Verdict) -> DatasetCell:
    source = f"{job.source.host}:{p.source}"
    return DatasetCell(job.name, source, f"{target.host}:{p.target}", target.host, v.state,
                       st.behind, st.common_base.name if st.common_base else None, v.cell_message)


async def inspect_target(fleet: Fleet, job: Job, target: Endpoint, now: float | None = None) -> TargetReport:
    """Plan ``job`` towards one host target and keep the listings, never raising; a target another
    zrelay holds is reported busy instead."""
    at = time.time() if now is None else now

    from zrelay.engine import plan_host_target   # asyncssh loads only when hosts are queried
    looks = 0

    async def look() -> tuple[list[Plan], dict[str, DatasetState], dict[str, DatasetState], dict[str, Changed]]:
        nonlocal looks
        looks += 1
        plans, src_states, dst_states = await plan_host_target(fleet, job, target)
        # a second look follows another zrelay's write: the parent's shared answer may predate it
        changes = await target_changes(fleet, job, target, plans, dst_states, shared=looks == 1)
        return plans, src_states, dst_states, changes
    try:
        plans, src_states, dst_states, changes = await fleet.unheld_target(target.host, target.dataset,
                                                                           f"{job.source} → {target}", look)
    except TargetBusy as exc:
        return busy_report(job, target, exc.holder, at)
    except RemoteCommandFailed as exc:
        return failed_report(job, target, "error", str(exc), at)
    except TransportError as exc:
        return failed_report(job, target, "unreachable", str(exc), at, exc.host)
    except ZrelayError as exc:
        return failed_report(job, target, "error", str(exc), at)
    return report_from_plans(job, target, plans, src_states, dst_states, at, changes)


#: ``Fleet.per_run`` keys: per host, target dataset → the parent whose one recursive ``zfs get``
#: serves it (share_changes); and the futures of those answers, per (host, parent).
_CHANGES_COVER = "status:changes-cover"
_CHANGES = "status:changes"


def share_changes(fleet: Fleet, jobs: Iterable[Job]) -> None:
    """Let the rows of sibling target datasets on one host read whether they changed from one
    recursive ``zfs get`` of their parent, as their listings come from one listing of it
    (``Fleet.share_listings``): a host receiving many jobs is asked once, not once per job."""
    from zrelay.engine.fleet import shared_listings   # asyncssh loads only when hosts are queried

    wanted: dict[str, set[str]] = {}
    for job in jobs:
        for t in job.host_targets:
            wanted.setdefault(t.host, set()).add(t.dataset)
    fleet.per_run[_CHANGES_COVER] = {host: shared_listings(datasets) for host, datasets in wanted.items()}


async def _changes(fleet: Fleet, host: str, dataset: str, recursive: bool,
                   shared: bool) -> tuple[str, dict[str, int | None]]:
    """``RemoteHost.changes`` of ``dataset``, from its parent's shared answer where share_changes
    set one up (and ``shared``); the dataset alone when that answer failed."""
    dest = fleet.host(host)
    parent = fleet.per_run.get(_CHANGES_COVER, {}).get(host, {}).get(dataset) if shared else None
    if parent is None:
        return await dest.changes(dataset, recursive)
    answers: dict[tuple[str, str], asyncio.Future[tuple[str, dict[str, int | None]]]]
    answers = fleet.per_run.setdefault(_CHANGES, {})
    fut = answers.get((host, parent))
    if fut is None:
        fut = answers[(host, parent)] = asyncio.ensure_future(dest.changes(parent, True))
    try:
        return fut.result() if fut.done() else await asyncio.shield(fut)   # done: no scheduling
    except ZrelayError:
        return await dest.changes(dataset, recursive)


async def target_changes(fleet: Fleet, job: Job, target: Endpoint, plans: Sequence[Plan],
                         dst_states: Mapping[str, DatasetState], *, shared: bool = True) -> dict[str, Changed]:
    """For each target dataset an incremental would be received into: did it change since its
    newest snapshot? One ``zfs get`` on the target (or its parent's, shared with its siblings:
    share_changes), only when some plan sends incrementally."""
    wanted = [p.target for p in plans if p.kind is PlanKind.INCREMENTAL and p.steps]
    if not wanted:
        return {}
    dest = fleet.host(target.host)
    caps = await dest.capabilities()
    prop, values = await _changes(fleet, target.host, target.dataset, job.recursive, shared)
    out: dict[str, Changed] = {}
    for name in wanted:
        value = values.get(name)
        out[name] = changed_since_newest(dst_states.get(name) or DatasetState.absent(name),
                                         written=value if prop == "written" else None,
                                         referenced=value if prop == "referenced" else None,
                                         flavor=caps.flavor.value)
    return out


def report_from_plans(job: Job, target: Endpoint, plans: Sequence[Plan], src_states: Mapping[str, DatasetState],
                      dst_states: Mapping[str, DatasetState], now: float,
                      changes: Mapping[str, Changed] | None = None) -> TargetReport:
    """The report for plans already made (by ``Engine.plan_job``, or by hand in tests).

    ``changes``: per target dataset, whether it changed since its newest snapshot (``target_changes``).
    """
    if not plans:
        left = selection.of_job(job, src_states).excluded
        return failed_report(job, target, "error", "source has no datasets" if not left else
                             f"nothing is replicated: every dataset is excluded ({left[0].dataset}: "
                             f"{left[0].because})", now)
    root = dst_states.get(target.dataset)
    newest = root.newest.name if root is not None and root.newest is not None else None
    targets = [dst_states.get(p.target) or DatasetState.absent(p.target) for p in plans]
    standings = [standing(src_states.get(p.source) or DatasetState.absent(p.source), t, job.select, now)
                 for p, t in zip(plans, targets)]
    verdicts = [_verdict(p, target.host, t, (changes or {}).get(p.target)) for p, t in zip(plans, targets)]
    row = _row_from_plans(job, target, list(plans), now, newest, standings, verdicts)
    cells = tuple(_cell(job, target, p, st, v) for p, st, v in zip(plans, standings, verdicts))
    return TargetReport(job, target, row, cells, tuple(plans), dict(src_states), dict(dst_states))


async def list_datasets(fleet: Fleet, host: str) -> tuple[str, dict[str, str | None] | str]:
    """(host, every filesystem and volume it has with its ``zrelay:sync`` value) or (host, why it
    could not be asked): what ``zrelay audit`` and the daemon's coverage check sort into
    protected and unprotected."""
    try:
        result = await fleet.host(host).zfs(commands.datasets_argv())
    except ZrelayError as exc:
        return host, str(exc)
    try:
        return host, parse.parse_datasets(result.stdout)
    except ValueError as exc:
        return host, str(exc)
