"""One scheduled run: a job's snapshot, sync, prune, s3-push or drill through the one engine.

The daemon runs exactly what the commands run (``zrelay snapshot``, ``sync``, ``prune``,
``s3-push`` of one job, ``drill JOB --to DRILL_TO``): the same engine calls, the same locks (a run waits up to
``lock_wait`` for a manual run holding a target, so the two are serialized, never raced), the
same record in the state store. Only the connections differ: each run gets its own
``Fleet.for_run()`` over the daemon's long-lived connections.
"""

from __future__ import annotations

import asyncio
import time
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path

from zrelay import drill as d
from zrelay.drillstate import DrillStore
from zrelay.engine import Engine, Fleet, SyncOptions, TaskResult
from zrelay.engine.drill import BUSY, DrillOptions, drill_each, drill_pairs
from zrelay.engine.s3_receiver import s3_receivers
from zrelay.errors import EXIT_BUSY, EXIT_JOB_FAILED, EXIT_OK, UsageError, ZrelayError
from zrelay.events import EventSink, JobFinished, Outcome
from zrelay.inventory.model import Inventory, Job
from zrelay.state import Recorder, fanout

#: Worst first: a run of one job and kind has the worst outcome of its targets.
SEVERITY = (Outcome.FAILED, Outcome.REFUSED, Outcome.BUSY, Outcome.OK, Outcome.NOOP, Outcome.SKIPPED)


@dataclass(frozen=True)
class RunResult:
    """What one run did: its outcome and one line, the targets it touched, bytes and time."""

    job: str
    kind: str
    outcome: Outcome
    message: str
    targets: tuple[str, ...]
    nbytes: int
    started: float
    finished: float
    error_kind: str | None = None
    #: not retried by itself, it waits for the user (a drill that found a mismatch)
    parked: bool = False

    @property
    def seconds(self) -> float:
        return self.finished - self.started


def worst(results: Sequence[TaskResult]) -> Outcome:
    if not results:
        return Outcome.NOOP
    return min((r.outcome for r in results), key=SEVERITY.index)


def summary(results: Sequence[TaskResult], outcome: Outcome) -> str:
    """One line: the messages of the targets that had the run's outcome."""
    lines = [f"{r.target}: {r.message}" for r in results if r.outcome is outcome and r.message]
    return "; ".join(lines)[:2000]


def exit_code(results: Sequence[TaskResult]) -> int:
    outcome = worst(results)
    if outcome in (Outcome.FAILED, Outcome.REFUSED):
        return EXIT_JOB_FAILED
    return EXIT_BUSY if outcome is Outcome.BUSY else EXIT_OK


async def run_kind(engine: Engine, job: Job, kind: str, options: SyncOptions) -> list[TaskResult]:
    """The engine call of the command that does ``kind`` for one job."""
    if kind == "snapshot":
        return await engine.snapshots([job], options)   # taken only when the job's schedule says it is due
    if kind == "sync":
        return await engine.sync([job], options)
    if kind == "prune":
        return await engine.prune([job], options)
    if kind == "s3-push":
        return await engine.run([job], options, s3_receivers)
    if kind == "drill":
        return await drill_job(engine, job, options)
    raise ValueError(f"unknown kind of run {kind!r}")


#: A drill's result as a run's outcome: a mismatch is a failure (and is not retried, see ``parks``).
_DRILL_OUTCOME = {d.OK: Outcome.OK, d.MISMATCH: Outcome.FAILED, d.FAILED: Outcome.FAILED, BUSY: Outcome.BUSY}


async def drill_job(engine: Engine, job: Job, options: SyncOptions) -> list[TaskResult]:
    """``zrelay drill JOB --to DRILL_TO``: each of the job's targets, one after the other; one
    TaskResult per drill, its Evidence in ``details`` (what the drills table records)."""
    if job.drill_to is None:
        raise UsageError(f"job {job.name!r} has no 'drill_to:': nowhere to restore a drill")
    opts = DrillOptions(to=job.drill_to, wait_lock=options.wait_lock)
    results = []
    for ev in await drill_each(engine.fleet, drill_pairs([job], None, None), opts, events=engine.emit,
                                  raise_usage=False):
        outcome = _DRILL_OUTCOME.get(ev.result, Outcome.FAILED)
        message = f"drill {ev.result}: {ev.message}" if ev.result != d.OK else ev.message
        seconds = (ev.finished or ev.started) - ev.started
        # recorded apart from the copy's replication totals (its last success is a sync's, not a drill's)
        engine.emit(JobFinished(job.name, ev.source, f"{ev.copy} (drill)", outcome, message, ev.bytes, seconds))
        results.append(TaskResult(job.name, ev.source, ev.copy, outcome, message, ev.bytes, seconds, details=ev))
    return results


def parks(kind: str, results: Sequence[TaskResult]) -> bool:
    """A drill that found a copy unlike its source is not tried again by itself: running the same
    restore again proves nothing new, and costs a full restore. It waits for the user, as a
    refused plan does (``zrelay run-now`` or an inventory reload)."""
    return kind == "drill" and any(isinstance(r.details, d.Evidence) and r.details.result == d.MISMATCH
                                   for r in results)


def record_drills(state_path: Path, results: Sequence[TaskResult]) -> None:
    """The drills' evidence into the state store's ``drills`` table, as ``zrelay drill`` records it."""
    evidence = [r.details for r in results if isinstance(r.details, d.Evidence)]
    if evidence:
        with DrillStore(state_path) as store:
            store.record_all(evidence)


async def run_one(inventory: Inventory, job: Job, kind: str, parent: Fleet, *, state_path: Path,
                  events: EventSink, lock_wait: float) -> RunResult:
    """Run ``kind`` for ``job`` over ``parent``'s connections, recorded in the state store as
    ``daemon KIND``. Cancelled (SIGTERM past the stop timeout): the engine stops its streams
    (targets left as they were, or resumable), the record says so, and the cancel goes on."""
    started = time.time()
    fleet = parent.for_run()
    recorder = Recorder(state_path, f"daemon {kind}", [kind, job.name], inventory=str(inventory.path))
    options = SyncOptions(wait_lock=lock_wait)
    results: list[TaskResult] = []
    error_kind: str | None = None
    try:
        with recorder:
            engine = Engine(inventory, fanout(recorder.handle, events), fleet=fleet)
            try:
                results = await run_kind(engine, job, kind, options)
            except asyncio.CancelledError:
                recorder.set_exit_code(EXIT_JOB_FAILED)
                raise
            recorder.set_exit_code(exit_code(results))
            record_drills(state_path, results)
    except ZrelayError as exc:   # what a command would print as its one-line error
        return RunResult(job.name, kind, Outcome.FAILED, str(exc), _targets(job, kind), 0, started,
                         time.time(), type(exc).__name__)
    finally:
        await fleet.close()
    outcome = worst(results)
    parked = parks(kind, results)
    if parked:
        error_kind = "mismatch"
    elif outcome is Outcome.FAILED:
        error_kind = "failed"
    elif outcome is Outcome.REFUSED:
        error_kind = "refused"
    return RunResult(job.name, kind, outcome, summary(results, outcome), tuple(r.target for r in results),
                     sum(r.bytes for r in results), started, time.time(), error_kind, parked)


def _targets(job: Job, kind: str) -> tuple[str, ...]:
    if kind == "snapshot":
        return ("snapshot",)
    if kind == "s3-push":
        return tuple(str(t) for t in job.s3_targets)
    return tuple(str(t) for t in job.targets)
