"""What is where: for every job and target, how far the target is behind, or why it can't catch up.

It plans every job exactly as ``sync`` would, but transfers nothing, so the
state it reports ("behind 3", "diverged") is exactly what ``sync`` would act on.
"""

from __future__ import annotations

import asyncio
import time
from dataclasses import asdict, dataclass
from typing import Iterable

from zrelay.engine import Engine
from zrelay.errors import RemoteCommandFailed, TransportError, ZrelayError
from zrelay.inventory.model import Endpoint, Job
from zrelay.plan import Plan, PlanKind

# Worst first: the row of a recursive job shows its worst dataset.
STATES = ("unreachable", "error", "diverged", "no-common-base", "resumable", "missing", "behind",
          "no-snapshots", "in-sync")

_KIND_STATE = {
    PlanKind.NOOP: "in-sync",
    PlanKind.INCREMENTAL: "behind",
    PlanKind.FULL: "missing",
    PlanKind.RESUME: "resumable",
    PlanKind.DIVERGED: "diverged",
    PlanKind.NO_COMMON_BASE: "no-common-base",
    PlanKind.NO_SOURCE_SNAPSHOT: "no-snapshots",
}


@dataclass(frozen=True)
class LocationStatus:
    """One job towards one target. Field names are the stable ``status --json`` schema."""

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

    def to_dict(self) -> dict:
        return asdict(self)


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
        message=message.strip() if message else ("" if label == state else label))


def _newest_selected(p: Plan) -> str | None:
    if p.steps:
        return p.steps[-1].snapshot.name
    return p.base.name if p.base else None


async def _status_one(engine: Engine, job: Job, target: Endpoint, now: float) -> LocationStatus:
    try:
        plans = await engine.plan_job(job, target, rollback=False)
        dst_states = await engine.states.get(engine.host(target.host), target.dataset, job.recursive)
    except RemoteCommandFailed as exc:
        return LocationStatus(job.name, str(job.source), str(target), "error", message=str(exc))
    except TransportError as exc:
        return LocationStatus(job.name, str(job.source), str(target), "unreachable", message=str(exc))
    except ZrelayError as exc:
        return LocationStatus(job.name, str(job.source), str(target), "error", message=str(exc))
    if not plans:
        return LocationStatus(job.name, str(job.source), str(target), "error",
                              message="source has no datasets")
    root = dst_states.get(target.dataset)
    newest = root.newest.name if root is not None and root.newest is not None else None
    return _row_from_plans(job, target, plans, now, newest)


async def collect_status(engine: Engine, jobs: Iterable[Job]) -> list[LocationStatus]:
    """Status of every host target of ``jobs``, queried concurrently."""
    now = time.time()
    work = [_status_one(engine, job, t, now) for job in jobs for t in job.targets if isinstance(t, Endpoint)]
    return list(await asyncio.gather(*work))
