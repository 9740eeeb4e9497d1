"""Every target of some jobs, host and S3 alike, inspected concurrently: what ``zrelay status``
prints and the TUI's queries run."""

from __future__ import annotations

import asyncio
import time
from dataclasses import replace
from typing import TYPE_CHECKING, Iterable

from zrelay.inventory.model import Endpoint, Job, Target
from zrelay.state import StoreView
from zrelay.status.hosts import inspect_target, share_changes
from zrelay.status.lifecycle import lifecycle_of, row_lifecycle
from zrelay.status.report import LocationStatus, TargetReport, annotate, targets_of
from zrelay.status.s3 import S3Access, inspect_s3

if TYPE_CHECKING:  # the engine (and asyncssh) load only when hosts are queried
    from zrelay.engine import Fleet


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
    share_changes(fleet, jobs)
    reports = list(await asyncio.gather(*(inspect(fleet, j, t, now, access) for j, t in targets_of(jobs))))
    living = [j for j in jobs if j.lifecycle.snapshot is not None or j.lifecycle.keep]
    if not living:
        return reports
    summaries = dict(zip((j.name for j in living),
                         await asyncio.gather(*(lifecycle_of(fleet, j, now) for j in living))))
    return [replace(r, row=replace(r.row, lifecycle=row_lifecycle(summaries[r.job.name], str(r.target))))
            if r.job.name in summaries else r for r in reports]


async def collect_status(fleet: Fleet, jobs: Iterable[Job],
                         store: StoreView | None = None) -> list[LocationStatus]:
    """Status of every target of ``jobs``, queried concurrently, with the store's runs when given."""
    rows = [r.row for r in await collect_reports(fleet, jobs)]
    return [annotate(r, store) for r in rows] if store is not None else rows
