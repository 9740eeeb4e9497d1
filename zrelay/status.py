"""What is where: for every job and location, how far the target is behind, or why it can't catch up.

It plans every job exactly as ``sync`` would, but transfers nothing, so the
state it reports ("behind 3", "diverged") is exactly what ``sync`` would act on.
What the hosts cannot tell (a transfer running in another process, the last
run's result) comes from the state store (``zrelay.state``).

The same inspection feeds three frontends: ``zrelay status`` (one row per job
and target), and the TUI's divergence matrix (one cell per dataset and
location) and dataset detail (snapshot lists aligned by GUID, ``align``).

S3 targets are inspected the way ``s3-push`` plans: the stored manifests give
the newest chain's restorable snapshots, which the host planner compares with
the source by GUID. boto3 is only imported (in a thread) when an S3 target is
inspected, and a short TCP probe first keeps a dead endpoint from holding up
the answer: botocore alone would retry a refused connection for seconds.
"""

from __future__ import annotations

import asyncio
import importlib
import os
import socket
import time
import urllib.request
from dataclasses import asdict, dataclass, field, replace
from typing import TYPE_CHECKING, Any, Iterable, Mapping, Sequence
from urllib.parse import urlsplit

from zrelay.errors import (LockHolder, RemoteCommandFailed, S3AccessDenied, S3Error, S3Unreachable, TargetBusy,
                           TransportError, ZrelayError)
from zrelay.inventory.model import Endpoint, Job, S3Ref, S3Target, Target
from zrelay.plan import Plan, PlanKind, plan
from zrelay.s3 import chains
from zrelay.s3 import manifest as mf
from zrelay.s3.chains import Chain, DatasetView
from zrelay.standing import Changed, Standing, changed_since_newest, standing, worst_behind
from zrelay.state import StoreView, TaskRow, Totals, TransferRow
from zrelay.zfs.model import DatasetState, SnapshotFilter

if TYPE_CHECKING:  # the engine (and asyncssh) load only when hosts are queried: the TUI paints first
    from zrelay.engine import Fleet
    from zrelay.s3.store import Store  # boto3: imported only when an S3 target is inspected

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

#: Seconds for a TCP connect to an S3 endpoint: a dead one is reported after this, not after botocore's retries.
S3_PROBE_TIMEOUT = 5.0
#: Seconds for listing one job's keys and reading its manifests, once the endpoint answered.
S3_READ_TIMEOUT = 60.0


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
    state, message = _KIND_STATE[p.kind], _plan_message(p)
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
    return _row(job, str(target), target.host, head.state, head.message, standings[root],
                worst_behind(list(standings)), len(plans), target_newest, now)


def _plan_message(p: Plan) -> str:
    """The planner's reason and options; empty when in sync."""
    if p.kind is PlanKind.NOOP:
        return ""
    message = p.reason + (" Options: " + " | ".join(p.options) if p.options else "")
    return message.strip()


def _row(job: Job, target: str, location: str, state: str, message: str, root: Standing, behind: int,
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
        location=location, checked_at=now, **extra)


def _cell(job: Job, target: Endpoint, p: Plan, st: Standing, v: _Verdict) -> DatasetCell:
    source = f"{job.source.host}:{p.source}"
    return DatasetCell(job.name, source, f"{target.host}:{p.target}", target.host, v.state,
                       st.behind, st.common_base.name if st.common_base else None, v.cell_message)


def failed_report(job: Job, target: Target, state: str, message: str, now: float,
                  host: str | None = None, s3: dict | None = None) -> TargetReport:
    """The report of a target that could not be inspected (one cell, saying why)."""
    row = LocationStatus(job.name, str(job.source), str(target), state, message=message,
                         target_kind="s3" if isinstance(target, S3Ref) else "host",
                         location=location_of(target), checked_at=now, s3=s3)
    cell = DatasetCell(job.name, str(job.source), str(target), location_of(target), state, message=message)
    return TargetReport(job, target, row, (cell,), unreachable_host=host)


def not_checked(job: Job, target: S3Ref, now: float | None = None) -> TargetReport:
    """An S3 target listed but not inspected (``status`` inspects them now; kept for canned reports)."""
    at = time.time() if now is None else now
    row = LocationStatus(job.name, str(job.source), str(target), NOT_CHECKED, message=S3_NOT_CHECKED,
                         target_kind="s3", location=str(target), checked_at=at)
    cell = DatasetCell(job.name, str(job.source), str(target), str(target), NOT_CHECKED, message=S3_NOT_CHECKED)
    return TargetReport(job, target, row, (cell,))


def busy_report(job: Job, target: Endpoint, holder: LockHolder | None, now: float) -> TargetReport:
    """The report of a host target another zrelay holds: not planned (see Engine.unheld)."""
    who = holder.describe() if holder is not None else "another zrelay is replicating it"
    message = f"{who}; the target is inspected once that run is done"
    info = None if holder is None else {"pid": holder.pid, "started_at": holder.started, "command": holder.command,
                                        "run_id": holder.run_id, "what": holder.what}
    row = LocationStatus(job.name, str(job.source), str(target), BUSY, message=message, location=target.host,
                         checked_at=now, holder=info)
    cell = DatasetCell(job.name, str(job.source), str(target), target.host, BUSY, message=message)
    return TargetReport(job, target, row, (cell,))


async def inspect_target(fleet: Fleet, job: Job, target: Endpoint, now: float | None = None) -> TargetReport:
    """Plan ``job`` towards one host target and keep the listings, never raising; a target another
    zrelay holds is reported busy instead."""
    at = time.time() if now is None else now

    from zrelay.engine import plan_host_target   # asyncssh loads only when hosts are queried

    async def look() -> tuple[list[Plan], dict[str, DatasetState], dict[str, DatasetState], dict[str, Changed]]:
        plans, src_states, dst_states = await plan_host_target(fleet, job, target)
        return plans, src_states, dst_states, await target_changes(fleet, job, target, plans, dst_states)
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


async def target_changes(fleet: Fleet, job: Job, target: Endpoint, plans: Sequence[Plan],
                         dst_states: Mapping[str, DatasetState]) -> dict[str, Changed]:
    """For each target dataset an incremental would be received into: did it change since its
    newest snapshot? One ``zfs get`` on the target, only when some plan sends incrementally."""
    wanted = [p.target for p in plans if p.kind is PlanKind.INCREMENTAL and p.steps]
    if not wanted:
        return {}
    dest = fleet.host(target.host)
    caps = await dest.capabilities()
    prop, values = await dest.changes(target.dataset, job.recursive)
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
        return failed_report(job, target, "error", "source has no datasets", now)
    root = dst_states.get(target.dataset)
    newest = root.newest.name if root is not None and root.newest is not None else None
    targets = [dst_states.get(p.target) or DatasetState.absent(p.target) for p in plans]
    standings = [standing(src_states.get(p.source) or DatasetState.absent(p.source), t, job.select, now)
                 for p, t in zip(plans, targets)]
    verdicts = [_verdict(p, target.host, t, (changes or {}).get(p.target)) for p, t in zip(plans, targets)]
    row = _row_from_plans(job, target, list(plans), now, newest, standings, verdicts)
    cells = tuple(_cell(job, target, p, st, v) for p, st, v in zip(plans, standings, verdicts))
    return TargetReport(job, target, row, cells, tuple(plans), dict(src_states), dict(dst_states))


def targets_of(jobs: Iterable[Job]) -> list[tuple[Job, Target]]:
    """Every (job, target) pair, host targets and S3 targets, in inventory order."""
    return [(job, t) for job in jobs for t in job.targets]


async def inspect(fleet: Fleet, job: Job, target: Target, now: float | None = None,
                  access: S3Access | None = None) -> TargetReport:
    """Inspect a host or an S3 target; ``access`` shares S3 clients and probes between calls."""
    if isinstance(target, Endpoint):
        return await inspect_target(fleet, job, target, now)
    return await inspect_s3(fleet, job, target, now, access)


async def collect_reports(fleet: Fleet, jobs: Iterable[Job]) -> list[TargetReport]:
    """A report for every target of ``jobs``, hosts and S3 endpoints queried concurrently."""
    now = time.time()
    access = S3Access()
    jobs = list(jobs)
    fleet.share_listings(jobs)
    return list(await asyncio.gather(*(inspect(fleet, j, t, now, access) for j, t in targets_of(jobs))))


async def collect_status(fleet: Fleet, jobs: Iterable[Job],
                         store: StoreView | None = None) -> list[LocationStatus]:
    """Status of every target of ``jobs``, queried concurrently, with the store's runs when given."""
    rows = [r.row for r in await collect_reports(fleet, jobs)]
    return [annotate(r, store) for r in rows] if store is not None else rows


# --- S3 targets ------------------------------------------------------------------------------


def s3_info(target: S3Target | None, views: Sequence[DatasetView] | None = None,
            root: DatasetView | None = None) -> dict:
    """The row's ``s3`` object: where, and (when the bucket answered) what is stored there."""
    where = {"url": f"s3://{target.bucket}/{mf.root(target.prefix)}" if target else None,
             "endpoint": target.endpoint if target else None}
    if views is None:
        return {**where, "chains": None, "sends": None, "stored_bytes": None, "restorable_newest": None,
                "broken_chains": None, "unfinished_sends": None}
    return {**where,
            "chains": sum(len(v.chains) for v in views),
            "sends": sum(len(c.sends) for v in views for c in v.chains),
            "stored_bytes": sum(c.stored_bytes for v in views for c in v.chains),
            "restorable_newest": _restorable_newest(root),
            "broken_chains": sum(1 for v in views for c in v.chains if not c.healthy),
            "unfinished_sends": sum(len(v.orphans) for v in views)}


def _restorable_newest(view: DatasetView | None) -> str | None:
    """The newest snapshot ``s3-restore`` could bring back: the tip of the newest chain that has one."""
    for c in reversed(view.chains if view is not None else []):
        if c.tip is not None:
            return c.tip.snapshot_name
    return None


@dataclass(frozen=True)
class S3DatasetStatus:
    """One source dataset against what one S3 target stores for it."""

    plan: Plan                 # the host planner against the newest chain's restorable snapshots
    state: str
    message: str
    stored: DatasetState       # those restorable snapshots, as a target state (for the detail view)
    newest: str | None         # newest snapshot stored in the newest chain, restorable or not


def s3_dataset_status(source: DatasetState, view: DatasetView | None, select: SnapshotFilter,
                      target_name: str = "") -> S3DatasetStatus:
    """The state of one dataset in S3, planned as ``s3-push`` plans (``chains.plan_push``).

    ``broken`` wins over the planner's answer: a chain with a missing or damaged
    send means stored snapshots cannot be restored, whatever the next push does.
    """
    chain = view.newest_chain if view is not None else None
    stored = chains.s3_state(source.name, chain) if chain is not None else DatasetState.absent(source.name)
    p = plan(source, stored, select=select, resume_supported=False)
    newest = None
    if chain is not None:
        named = [s for s in chain.sends if s.manifest is not None]
        newest = max(named, key=lambda s: s.createtxg).snapshot_name if named else None
    broken = [c for c in view.chains if not c.healthy] if view is not None else []
    if view is not None and broken:
        return S3DatasetStatus(p, BROKEN, _broken_message(view, broken[-1], target_name), stored, newest)
    state = _KIND_STATE[p.kind]
    if state == "in-sync":
        return S3DatasetStatus(p, state, "", stored, newest)
    push = chains.plan_push(source, view, select=select)
    message = push.reason + (" Options: " + " | ".join(push.options) if push.options else "")
    return S3DatasetStatus(p, state, message, stored, newest)


def _broken_message(view: DatasetView, chain: Chain, target_name: str) -> str:
    lost = [s.snapshot_name for s in chain.sends if s.ref not in chain.restorable]
    what = ", ".join("@" + n for n in lost) if lost else "its sends"
    text = f"chain {chain.root} of {view.endpoint} is broken ({chain.broken_reason}): {what} cannot be restored."
    ls = f"`zrelay s3-ls {target_name} {view.endpoint}` shows the damage"
    if chain is view.newest_chain:
        options: tuple[str, ...] = (f"start a new chain with `zrelay s3-push --full {view.endpoint}`",
                                    "or put the missing object back", ls)
    else:
        options = ("the newest chain is healthy; `zrelay s3-prune` deletes old chains whole", ls)
    return f"{text} Options: " + " | ".join(options)


def report_from_s3(job: Job, ref: S3Ref, target: S3Target | None, src_states: Mapping[str, DatasetState],
                   views: Mapping[tuple[str, str], DatasetView], now: float) -> TargetReport:
    """The report of an S3 target from the source's listing and the bucket's chains (pure)."""
    root = job.source.dataset
    names = sorted((n for n, st in src_states.items() if st.exists
                    and (n == root or (job.recursive and n.startswith(root + "/")))),
                   key=lambda n: n.split("/"))
    if root not in names:
        return failed_report(job, ref, "error", f"{job.source}: dataset does not exist", now,
                             s3=s3_info(target))
    host = job.source.host
    results = [s3_dataset_status(src_states[n], views.get((host, n)), job.select, ref.name) for n in names]
    worst = min(range(len(results)), key=lambda i: STATES.index(results[i].state))
    head, top = results[worst], results[0]
    message = head.message
    if len(results) > 1 and message and head.state != BROKEN:  # broken messages name their dataset
        message = f"{host}:{names[worst]}: {message}"
    standings = [standing(src_states[n], r.stored, job.select, now) for n, r in zip(names, results)]
    row = _row(job, str(ref), str(ref), head.state, message, standings[0], worst_behind(standings), len(results),
               top.newest, now, target_kind="s3",
               s3=s3_info(target, [views[(host, n)] for n in names if (host, n) in views], views.get((host, root))))
    cells = tuple(DatasetCell(job.name, f"{host}:{n}", str(ref), str(ref), r.state, st.behind,
                              st.common_base.name if st.common_base else None, r.message)
                  for n, r, st in zip(names, results, standings))
    return TargetReport(job, ref, row, cells, tuple(r.plan for r in results),
                        {n: src_states[n] for n in names}, {n: r.stored for n, r in zip(names, results)})


class S3Access:
    """One client and one reachability probe per S3 target, shared by one round of inspections.

    Why a probe: botocore retries a refused connection several times with
    backoff, and waits its full connect timeout on each attempt to a host that
    drops packets; one TCP connect with a short timeout tells a dead endpoint
    within ``probe_timeout`` seconds, once per target however many jobs use it.
    """

    def __init__(self, probe_timeout: float = S3_PROBE_TIMEOUT, read_timeout: float = S3_READ_TIMEOUT) -> None:
        self.probe_timeout = probe_timeout
        self.read_timeout = read_timeout
        self._stores: dict[str, asyncio.Future[Store]] = {}

    async def store(self, target: S3Target) -> Store:
        fut = self._stores.get(target.name)
        if fut is None:
            fut = self._stores[target.name] = asyncio.ensure_future(self._open(target))
        return await asyncio.shield(fut)

    async def _open(self, target: S3Target) -> Store:
        problem = await probe_endpoint(target, self.probe_timeout)
        if problem:
            raise S3Unreachable(target.name, problem)
        # importing boto3 and building a client parse large JSON models: keep them off the event loop
        store_mod: Any = await asyncio.to_thread(importlib.import_module, "zrelay.s3.store")
        store = store_mod.Store(target)
        try:
            await asyncio.to_thread(lambda: store.client)
        except ZrelayError:
            raise
        except Exception as exc:  # botocore refuses e.g. a malformed endpoint: a row, not a traceback
            raise S3Error(target.name, f"cannot set up a client: {exc}") from None
        return store

    async def views(self, target: S3Target, host: str, dataset: str,
                    recursive: bool) -> dict[tuple[str, str], DatasetView]:
        """The stored chains of ``host:dataset`` (and of its children when ``recursive``)."""
        store = await self.store(target)
        catalog: Any = importlib.import_module("zrelay.s3.catalog")
        try:
            return await asyncio.wait_for(
                catalog.load_views(store, host=host, dataset=dataset, recursive=recursive), self.read_timeout)
        except TimeoutError:
            raise S3Unreachable(target.name, f"no answer within {self.read_timeout:g} s") from None


def _probe_address(target: S3Target) -> tuple[str, int] | None:
    """(host, port) to connect to, or None when a proxy stands between us and the endpoint."""
    if target.endpoint:
        parts = urlsplit(target.endpoint if "://" in target.endpoint else f"https://{target.endpoint}")
        scheme, host = parts.scheme or "https", parts.hostname or ""
        try:
            port = parts.port or (80 if scheme == "http" else 443)
        except ValueError:
            return None
    else:
        scheme, port = "https", 443
        host = f"s3.{target.region}.amazonaws.com" if target.region else "s3.amazonaws.com"
    if not host:
        return None
    if scheme in urllib.request.getproxies() and not urllib.request.proxy_bypass(host):
        return None  # whether the proxy gets through is botocore's to find out
    return host, port


async def probe_endpoint(target: S3Target, timeout: float = S3_PROBE_TIMEOUT) -> str | None:
    """None when the endpoint accepts a TCP connection, else why not (the caller names the endpoint)."""
    address = _probe_address(target)
    if address is None:
        return None
    try:
        _reader, writer = await asyncio.wait_for(asyncio.open_connection(*address), timeout)
    except TimeoutError:
        return f"cannot connect to {address[0]}:{address[1]}: no answer within {timeout:g} s"
    except OSError as exc:
        return f"cannot connect to {address[0]}:{address[1]}: {_os_error(exc)}"
    writer.close()
    try:
        await writer.wait_closed()
    except OSError:
        pass
    return None


def _os_error(exc: OSError) -> str:
    """``Connection refused``, ``Name or service not known``: what the system said, without asyncio's wording."""
    if isinstance(exc, socket.gaierror) or not exc.errno:
        return exc.strerror or str(exc) or type(exc).__name__
    return os.strerror(exc.errno)


def _s3_failure(ref: S3Ref, target: S3Target, exc: ZrelayError) -> tuple[str, str]:
    """(state, one line naming the target and its endpoint) for what the bucket answered."""
    text = exc.message if isinstance(exc, S3Error) else str(exc)
    state = "unreachable" if isinstance(exc, (S3Unreachable, S3AccessDenied)) else "error"
    return state, " ".join(f"{ref} ({target.endpoint or 'AWS'}): {text}".split())


async def inspect_s3(fleet: Fleet, job: Job, ref: S3Ref, now: float | None = None,
                     access: S3Access | None = None) -> TargetReport:
    """List the source and read the bucket's chains concurrently; never raises a ZrelayError."""
    at = time.time() if now is None else now
    target = fleet.inventory.s3_targets.get(ref.name)
    if target is None:
        return failed_report(job, ref, "error", f"{ref} is not defined in zrelay.s3_targets", at,
                             s3=s3_info(None))
    access = access if access is not None else S3Access()
    src_result, s3_result = await asyncio.gather(
        fleet.listing(job.source.host, job.source.dataset, job.recursive),
        access.views(target, job.source.host, job.source.dataset, job.recursive), return_exceptions=True)
    for result in (src_result, s3_result):
        if isinstance(result, BaseException) and not isinstance(result, ZrelayError):
            raise result
    failures: list[tuple[str, str]] = []
    host = None
    if isinstance(src_result, TransportError):
        failures.append(("unreachable", str(src_result)))
        host = src_result.host
    elif isinstance(src_result, ZrelayError):
        failures.append(("error", str(src_result)))
    if isinstance(s3_result, ZrelayError):
        failures.append(_s3_failure(ref, target, s3_result))
    if failures:
        state = min((s for s, _ in failures), key=STATES.index)
        return failed_report(job, ref, state, "; ".join(m for _, m in failures), at, host, s3_info(target))
    assert isinstance(src_result, dict) and isinstance(s3_result, dict)
    return report_from_s3(job, ref, target, src_result, s3_result, at)


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


def _position(targets: tuple[Target, ...], target: Target) -> int:
    return targets.index(target) if target in targets else len(targets)


def detail_for(source_endpoint: str, reports: Iterable[TargetReport]) -> DatasetDetail | None:
    """The detail of one source dataset from the reports of every job that replicates it."""
    host, _, dataset = source_endpoint.partition(":")
    source: DatasetState | None = None
    select = SnapshotFilter()
    columns: list[tuple[str, DatasetState | str]] = []
    broken: set[int] = set()   # columns of S3 targets with a broken chain: the planner cannot tell
    # columns in the inventory's order of targets, whichever answered first
    for r in sorted(reports, key=lambda r: (r.job.name, _position(r.job.targets, r.target))):
        if r.job.source.host != host:
            continue
        root = r.job.source.dataset
        if not (dataset == root or (r.job.recursive and dataset.startswith(root + "/"))):
            continue
        if isinstance(r.target, Endpoint):
            tname = r.target.dataset + dataset[len(root):]
            label = f"{r.target.host}:{tname}"
        elif r.plans or r.row.state in ("unreachable", "error"):
            tname, label = dataset, str(r.target)   # S3 keys keep the source's dataset names
            if any(c.state == BROKEN and c.source == source_endpoint for c in r.cells):
                broken.add(len(columns) + 1)
        else:
            continue  # an S3 target not inspected: nothing to show
        if dataset in r.source_states:
            source = r.source_states[dataset]
            select = r.job.select
        if r.row.state in ("unreachable", "error") and not r.target_states:
            columns.append((label, r.row.state))
        else:
            columns.append((label, r.target_states.get(tname, DatasetState.absent(tname))))
    if source is None:
        return None
    detail = align(source_endpoint, source, columns, select)
    if broken:
        detail = replace(detail, notes=tuple(BROKEN if i in broken else n for i, n in enumerate(detail.notes)))
    return detail
