"""S3 targets, inspected the way ``s3-push`` plans.

The stored manifests give the newest chain's restorable snapshots, which the
host planner compares with the source by GUID; a chain with a missing or
damaged send is reported broken, whatever the next push would do. boto3 is
only imported (in a thread) when an S3 target is inspected, and a short TCP
probe first keeps a dead endpoint from holding up the answer: botocore alone
would retry a refused connection for seconds.
"""

from __future__ import annotations

import asyncio
import importlib
import os
import socket
import time
import urllib.request
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any, Mapping, Sequence
from urllib.parse import urlsplit

from zrelay import selection
from zrelay.errors import S3AccessDenied, S3Error, S3Unreachable, TransportError, ZrelayError
from zrelay.inventory.model import Job, S3Ref, S3Target
from zrelay.plan import Plan, plan
from zrelay.s3 import chains
from zrelay.s3 import manifest as mf
from zrelay.s3.chains import Chain, DatasetView
from zrelay.standing import standing, worst_behind
from zrelay.status.report import (BROKEN, KIND_STATE, STATES, DatasetCell, TargetReport, failed_report,
                                  location_row)
from zrelay.zfs.model import DatasetState, SnapshotFilter

if TYPE_CHECKING:  # the engine (and asyncssh) load only when targets are queried
    from zrelay.engine import Fleet
    from zrelay.s3.store import Store  # boto3: imported only when an S3 target is inspected

#: Seconds for a TCP connect to an S3 endpoint: a dead one is reported after this, not after botocore's retries.
S3_PROBE_TIMEOUT = 5.0
#: Seconds for listing one job's keys and reading its manifests, once the endpoint answered.
S3_READ_TIMEOUT = 60.0


def s3_info(target: S3Target | None, views: Sequence[DatasetView] | None = None,
            root: DatasetView | None = None) -> dict:
    """The row's ``s3`` object: where, and (when the bucket answered) what is stored there."""
    where = {"url": f"s3://{target.bucket}/{mf.root(target.prefix)}" if target else None,
             "endpoint": target.endpoint if target else None}
    if views is None:
        return {**where, "chains": None, "sends": None, "stored_bytes": None, "restorable_newest": None,
                "broken_chains": None, "unfinished_sends": None, "listed_bytes": None, "object_count": None,
                "storage_classes": None, "chain_costs": None}
    return {**where,
            "chains": sum(len(v.chains) for v in views),
            "sends": sum(len(c.sends) for v in views for c in v.chains),
            "stored_bytes": sum(c.stored_bytes for v in views for c in v.chains),
            "restorable_newest": _restorable_newest(root),
            "broken_chains": sum(1 for v in views for c in v.chains if not c.healthy),
            "unfinished_sends": sum(len(v.orphans) for v in views),
            **_cost(chains.StorageCost.combined(v.cost for v in views)),
            "chain_costs": [chain_cost(v, c) for v in views for c in v.chains]}


def _cost(cost: chains.StorageCost) -> dict[str, Any]:
    d = cost.to_dict()
    return {"listed_bytes": d["bytes"], "object_count": d["objects"], "storage_classes": d["storage_classes"]}


def chain_cost(view: DatasetView, chain: Chain) -> dict[str, Any]:
    """What one stored chain costs, as the bucket listing reports it (docs/status-json.md)."""
    named = [s for s in chain.sends if s.manifest is not None]
    newest = max(named, key=lambda s: s.createtxg) if named else None
    return {"dataset": view.endpoint, "root": chain.root, "healthy": chain.healthy, "sends": len(chain.sends),
            "newest": newest.snapshot_name if newest else None, "newest_created": chain.newest_creation or None,
            **_cost(chain.cost), "manifest_size": chain.manifest_size}


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
    state = KIND_STATE[p.kind]
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
    chosen = selection.of_job(job, src_states)   # exclude globs, zrelay:sync=false
    names = list(chosen.included)
    if not names:
        message = (f"{job.source}: nothing is pushed, every dataset is excluded ({chosen.excluded[0].because})"
                   if chosen.excluded else f"{job.source}: dataset does not exist")
        return failed_report(job, ref, "error", message, now, s3=s3_info(target))
    host = job.source.host
    results = [s3_dataset_status(src_states[n], views.get((host, n)), job.select, ref.name) for n in names]
    worst = min(range(len(results)), key=lambda i: STATES.index(results[i].state))
    head, top = results[worst], results[0]
    message = head.message
    if len(results) > 1 and message and head.state != BROKEN:  # broken messages name their dataset
        message = f"{host}:{names[worst]}: {message}"
    standings = [standing(src_states[n], r.stored, job.select, now) for n, r in zip(names, results)]
    row = location_row(job, str(ref), str(ref), head.state, message, standings[0], worst_behind(standings),
                       len(results), top.newest, now, target_kind="s3",
                       s3=s3_info(target, [views[(host, n)] for n in names if (host, n) in views],
                                  views.get((host, root))))
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
