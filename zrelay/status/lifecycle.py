"""A job's snapshot lifecycle as ``status`` and the TUI show it: when its next snapshot is due,
how many of its snapshots each side keeps, and how many the next prune would destroy.

The prune is planned exactly as ``zrelay prune --dry-run`` plans it (zrelay.engine.prune), on the
listings ``status`` just made; snapshots waiting for a target are the row's ``behind``.
"""

from __future__ import annotations

import time
from typing import TYPE_CHECKING, Any

from zrelay.errors import ZrelayError
from zrelay.units import human_duration
from zrelay.events import discard
from zrelay.inventory.model import Job
from zrelay.lifecycle.schedule import due

if TYPE_CHECKING:
    from zrelay.engine import Fleet
    from zrelay.lifecycle.prune import SidePlan


def row_lifecycle(summary: dict[str, Any] | None, target: str) -> dict[str, Any] | None:
    """The part of a job's summary one status row shows: its source and its own target."""
    if summary is None:
        return None
    return {"next_snapshot_at": summary["next_snapshot_at"], "snapshot_due": summary["snapshot_due"],
            "source": summary["sides"].get("source"), "target": summary["sides"].get(target),
            "error": summary["error"]}


def _side(side: SidePlan | None) -> dict[str, Any] | None:
    if side is None or side.policy is None:
        return None
    kept, drops = side.counts
    if side.host is None:   # S3: whole chains, the job's own and any that hold other snapshots too
        chains = sum(len(p.chains) for p in side.stored.values())
        return {"kept": chains - drops, "drops": drops, "unit": "chains"}
    return {"kept": kept, "drops": drops, "unit": "snapshots"}


async def lifecycle_of(fleet: Fleet, job: Job, now: float | None = None) -> dict[str, Any] | None:
    """Per side (``source`` and each target as the job names it): kept and next prune's drops;
    the next snapshot's due time. None for a job without ``snapshot:`` or ``keep:``."""
    from zrelay.engine.options import SyncOptions
    from zrelay.engine.prune import Pruner
    from zrelay.engine.snapshots import newest_own

    life = job.lifecycle
    if life.snapshot is None and not life.keep:
        return None
    now = now if now is not None else time.time()
    out: dict[str, Any] = {"next_snapshot_at": None, "snapshot_due": None, "sides": {}, "error": None}
    try:
        if life.snapshot is not None:
            states = await fleet.listing(job.source.host, job.source.dataset, job.recursive)
            verdict = due(life.snapshot, newest_own(job, fleet.inventory, states), int(now))
            out["snapshot_due"] = verdict.due
            out["next_snapshot_at"] = verdict.next_at
        if life.keep:
            pruning = await Pruner(fleet, discard).plan(job, SyncOptions(dry_run=True), fresh=False)
            for plan in pruning.plan.sides:
                label = "source" if plan.side == "source" else plan.side
                out["sides"][label] = _side(plan)
    except ZrelayError as exc:
        out["error"] = str(exc)
    return out


def lifecycle_label(life: dict, now: float) -> str:
    """``snapshot due in 12m; keeps 18 here (next prune destroys 2); source keeps 29``."""
    parts: list[str] = []
    if life.get("error"):
        return f"lifecycle: {life['error']}"
    if life.get("snapshot_due"):
        parts.append("snapshot due now")
    elif life.get("next_snapshot_at"):
        parts.append(f"next snapshot in {human_duration(max(life['next_snapshot_at'] - now, 0))}")
    for where, side in (("here", life.get("target")), ("source", life.get("source"))):
        if side:
            drops = f" (next prune destroys {side['drops']})" if side["drops"] else ""
            unit = (" chain" if side["kept"] == 1 else " chains") if side.get("unit") == "chains" else ""
            parts.append(f"{'keeps' if where == 'here' else 'source keeps'} {side['kept']}{unit}"
                         f"{' here' if where == 'here' else ''}{drops}")
    return "; ".join(parts)
