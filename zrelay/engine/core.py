"""The engine: runs every job of a run towards its targets concurrently, safely.

One engine for host targets (``sync``) and S3 targets (``s3-push``): per job
it takes the snapshot (when asked) and lists the source once, then runs each
target through its receiver (zrelay.engine.receiver) — plan into actions,
emit them (the dry run stops there), run them with the executor, plan again
after a resumed stream, secure the new base. Per-host limits (``sends`` per
source host, ``receives`` per target host) keep a fleet run from overloading
any machine; one failing target never stops the others; everything that
happens is reported as events (``zrelay.events``), which the frontends draw.
"""

from __future__ import annotations

import asyncio
import time
from collections.abc import Callable, Iterable, Sequence
from typing import TYPE_CHECKING
from datetime import datetime, timezone

from zrelay import locks, selection
from zrelay.actions import Action, command_lines, describe_change, same_commands
from zrelay.engine.executor import Executor, run_command
from zrelay.engine.fleet import Fleet
from zrelay.engine.host_receiver import HostReceiver, both, has_direct_credentials, login_check
from zrelay.engine.options import SyncOptions, TaskResult
from zrelay.engine.receiver import Receiver, TargetPlan
from zrelay.errors import BaseNotSecured, PlanRefused, TargetBusy, ZrelayError, blame
from zrelay.events import EventSink, JobFinished, JobPlanned, JobStarted, Outcome, discard
from zrelay.inventory.model import Endpoint, Inventory, Job
from zrelay.plan import with_new_snapshot

if TYPE_CHECKING:
    from zrelay.engine.snapshots import SnapshotStep

MAX_REPLANS = 3           # resume, then plan what is left

#: Makes the receivers of one job's targets of the kind a command replicates to.
ReceiverFactory = Callable[["Engine", Job, SyncOptions], Sequence[Receiver]]


class Engine:
    """Runs jobs against live hosts through one Fleet (connections, listings, limits, locks)."""

    def __init__(self, inventory: Inventory, events: EventSink = discard, fleet: Fleet | None = None) -> None:
        self.inventory = inventory
        self.emit = events
        self.fleet = fleet if fleet is not None else Fleet(inventory)
        self._own_fleet = fleet is None

    async def close(self) -> None:
        if self._own_fleet:
            await self.fleet.close()

    async def __aenter__(self) -> "Engine":
        return self

    async def __aexit__(self, *exc: object) -> None:
        await self.close()

    # --- sync ----------------------------------------------------------------------------

    async def sync(self, jobs: Iterable[Job], options: SyncOptions = SyncOptions()) -> list[TaskResult]:
        """Replicate every host target of ``jobs``; S3 targets are ``s3-push``'s (``run`` with S3 receivers)."""
        jobs = list(jobs)
        fleet = self.fleet
        # The agent is forwarded only to sources of direct streams that have no key of their own.
        fleet.pool.forward_agent_to({job.source.host for job in jobs if self.is_direct(job, options)
                                     and not self.inventory.hosts[job.source.host].direct_identity_file})
        for job in jobs:   # login checks of direct streams overlap with probing and listing
            source = fleet.host(job.source.host)
            if self.is_direct(job, options) and has_direct_credentials(source):
                for target in job.host_targets:
                    login_check(fleet, source, fleet.host(target.host))
        return await self.run(jobs, options, host_receivers)

    def is_direct(self, job: Job, options: SyncOptions) -> bool:
        """--direct/--relay beat the job's setting, which beats its source host's."""
        if options.direct is not None:
            return options.direct
        if job.direct is not None:
            return job.direct
        return self.inventory.hosts[job.source.host].direct

    async def run(self, jobs: Iterable[Job], options: SyncOptions, receivers: ReceiverFactory) -> list[TaskResult]:
        """Every job towards the targets ``receivers`` makes for it, concurrently."""
        now = options.now or datetime.now(timezone.utc)
        jobs = list(jobs)
        self.fleet.share_listings(jobs)   # a source snapshotted first is forgotten, then listed on its own
        if options.take_snapshot:
            nested = await asyncio.gather(*(self._run_job(job, list(receivers(self, job, options)), options, now)
                                            for job in jobs))
            return [r for results in nested for r in results]
        # no snapshot step: one task per target, not one per job and one per target as well
        return list(await asyncio.gather(*(self._run_target(job, receiver, options, [], None)
                                           for job in jobs for receiver in receivers(self, job, options))))

    async def _run_job(self, job: Job, receivers: list[Receiver], options: SyncOptions,
                       now: datetime) -> list[TaskResult]:
        if not receivers:
            return []
        source = self.fleet.host(job.source.host)
        name: str | None = None
        pre_actions: list[Action] = []
        try:
            if options.take_snapshot:
                step = await self.snapshot_step(job, options, now)
                name = step.name
                pre_actions = step.actions
        except ZrelayError as exc:
            return [self._finish(job, r, Outcome.FAILED, str(exc), blame(exc, source.name)) for r in receivers]
        simulated = name if options.dry_run else None   # a dry run plans as if the snapshot existed
        return list(await asyncio.gather(*(self._run_target(job, r, options, pre_actions, simulated)
                                           for r in receivers)))

    async def prune(self, jobs: Iterable[Job], options: SyncOptions) -> list[TaskResult]:
        """``zrelay prune``: every side of every job with a keep policy (see zrelay.engine.prune)."""
        from zrelay.engine.prune import Pruner
        return await Pruner(self.fleet, self.emit).prune(jobs, options)

    async def snapshots(self, jobs: Iterable[Job], options: SyncOptions, *, force: bool = False) -> list[TaskResult]:
        """``zrelay snapshot``: every job's snapshot step, concurrently (one result per job)."""
        now = options.now or datetime.now(timezone.utc)

        async def one(job: Job) -> TaskResult:
            started = time.monotonic()
            result = TaskResult(job.name, str(job.source), "snapshot", Outcome.NOOP)
            self.emit(JobStarted(job.name, str(job.source), "snapshot"))
            try:
                step = await self.snapshot_step(job, options, now, force=force)
                result.actions = step.actions
                if step.name is None:
                    result.message = step.reason
                else:
                    result.outcome = Outcome.OK
                    verb = "would take" if options.dry_run else "took"
                    result.message = f"{verb} {job.source.dataset}@{step.name}: {step.reason}"
                result.details = {"snapshot": step.name, "next_at": step.next_at, "reason": step.reason}
            except ZrelayError as exc:
                result.outcome = Outcome.FAILED
                result.message = str(exc)
                result.failed_host = blame(exc, job.source.host)
            result.seconds = time.monotonic() - started
            self.emit(JobFinished(job.name, str(job.source), "snapshot", result.outcome, result.message,
                                  0, result.seconds, result.failed_host))
            return result

        return list(await asyncio.gather(*(one(job) for job in jobs)))

    async def snapshot_step(self, job: Job, options: SyncOptions, now: datetime, *,
                            force: bool = False) -> SnapshotStep:
        """Plan the job's snapshot step (due by its schedule, or forced) and, unless this is a dry
        run, take it: hooks and snapshot (see zrelay.engine.snapshots)."""
        from zrelay.engine.snapshots import newest_own, plan_snapshot, take   # only runs that snapshot
        newest = None
        # the listing says which datasets the job covers (exclude globs, zrelay:sync=false)
        states, caps = await asyncio.gather(
            self.fleet.listing(job.source.host, job.source.dataset, job.recursive),
            self.fleet.host(job.source.host).capabilities())
        if not force and job.lifecycle.snapshot is not None:
            newest = newest_own(job, self.inventory, states)
        root = states.get(job.source.dataset)
        chosen = selection.of_job(job, states) if root is not None and root.exists else None
        step = plan_snapshot(self.fleet, job, now, force=force, newest=newest,
                             why_forced="--now" if force else "--snapshot", chosen=chosen, caps=caps)
        if step.name is not None and not options.dry_run:
            await take(self.fleet, step)
        return step

    async def _run_target(self, job: Job, receiver: Receiver, options: SyncOptions, snapshot: list[Action],
                          simulated: str | None) -> TaskResult:
        started = time.monotonic()
        self.emit(JobStarted(job.name, str(job.source), receiver.name))
        result = TaskResult(job.name, str(job.source), receiver.name, Outcome.OK,
                            actions=list(snapshot))
        notes: list[str] = []     # things done besides the plan, e.g. a partial receive discarded
        transferred = False
        lock: locks.RunLock | None = None
        try:
            if not options.dry_run:   # for the whole plan-and-transfer; a dry run holds nothing
                lock = await self.fleet.lock(await receiver.lock_key(), f"{job.source} → {receiver.name}",
                                             options.wait_lock, self._waiting(job, receiver, options),
                                             stale=receiver.forget)
            expected_secure: list[Action] = []
            for round_ in range(MAX_REPLANS):
                planned = await self._plan(job, receiver, options, simulated)
                result.plans = list(planned.details) if isinstance(planned.details, list) else []
                result.details = planned.details
                result.excluded = list(planned.excluded)
                result.actions += planned.actions
                self.emit(JobPlanned(job.name, receiver.name, planned.kind,
                                     planned.summary if round_ == 0 else f"planned again: {planned.summary}",
                                     tuple([*(command_lines(snapshot) if round_ == 0 else []),
                                            *planned.commands])))
                if options.dry_run:
                    result.actions += planned.secure
                    result.outcome = planned.dry_outcome
                    result.message = planned.summary
                    break
                replan = (await Executor(self.fleet, self.emit, receiver, result, options, notes).run(planned.actions)
                          if planned.actions else False)
                acted = bool(planned.actions)   # a rollback alone changes the target too
                transferred = transferred or acted
                if acted:   # what securing the base is expected to be once these actions ran
                    expected_secure = planned.secure
                if planned.refusal is not None:
                    result.outcome = Outcome.REFUSED
                    result.message = planned.refusal
                    result.failed_host = planned.refused_host
                    break
                if not acted and not replan:
                    result.outcome = Outcome.OK if result.bytes else Outcome.NOOP
                    result.message = planned.summary if not result.bytes else result.message
                    break
                result.message = planned.summary
                if not (replan or planned.resumes):
                    break
                receiver.forget()   # resumed, or a dead partial receive discarded: plan what is left
            if transferred and not options.dry_run:
                warning = await self._secure(receiver, expected_secure, result, notes)
                if warning:
                    notes.append(warning)
            if planned is not None and planned.verdict is not None:
                planned.verdict(result)   # the receiver's own word on its subjects (S3: per dataset)
        except TargetBusy as exc:   # nothing planned, nothing touched: the holder's target
            result.outcome = Outcome.BUSY
            result.message = str(exc)
        except PlanRefused as exc:
            result.outcome = Outcome.REFUSED
            result.message = str(exc)
            result.failed_host = receiver.host
        except ZrelayError as exc:
            result.outcome = Outcome.FAILED
            result.message = str(exc)
            result.failed_host = blame(exc, job.source.host)
        self.fleet.let_go(lock)
        if notes:
            result.warnings = [n for n in notes if n.startswith("warning:")]
            result.message = "; ".join([result.message, *notes] if result.message else notes)
        result.seconds = time.monotonic() - started
        self.emit(JobFinished(job.name, str(job.source), receiver.name, result.outcome, result.message,
                              result.bytes, result.seconds, result.failed_host))
        return result

    async def _plan(self, job: Job, receiver: Receiver, options: SyncOptions, simulated: str | None) -> TargetPlan:
        """The receiver's plan; a dry run, holding no lock, plans only while no other zrelay holds the target."""
        async def planned() -> TargetPlan:
            # the source's listing under way (shared by the job's targets) while the target is read
            listing = self.fleet.states.future(self.fleet.host(job.source.host), job.source.dataset, job.recursive)
            source, _ = await both(listing, receiver.prepare())
            if simulated:
                source = with_new_snapshot(source, simulated, int(time.time()))
            return await receiver.plan(source, options)
        if not options.dry_run:
            return await planned()
        return await self.fleet.unheld(await receiver.lock_key(), f"{job.source} → {receiver.name}", planned,
                                       options.wait_lock, self._waiting(job, receiver, options),
                                       on_change=receiver.forget)

    async def _secure(self, receiver: Receiver, expected: list[Action], result: TaskResult,
                      notes: list[str]) -> str | None:
        """Secure the new bases as planned, after checking the plan against fresh listings: when the
        world turned out otherwise, run what fits it and say so. The data is already replicated
        when this runs: a failure here is a warning (BaseNotSecured), not a failed job."""
        try:
            actual = await receiver.secure_again()
            if same_commands(expected, actual):
                actual = expected
            else:
                notes.append(f"securing the base planned again: the target turned out otherwise than "
                             f"planned ({describe_change(expected, actual)})")
            result.actions += actual
            for action in actual:
                await run_command(self.fleet, action)
        except ZrelayError as exc:
            return str(BaseNotSecured(exc))
        return None

    def _waiting(self, job: Job, receiver: Receiver,
                 options: SyncOptions) -> Callable[[locks.Holder | None], None]:
        def waiting(holder: locks.Holder | None) -> None:
            who = holder.describe() if holder is not None else "another zrelay is replicating it"
            self.emit(JobPlanned(job.name, receiver.name, "waiting",
                                 f"waiting up to {options.wait_lock:g} s: {who}"))
        return waiting

    def _finish(self, job: Job, receiver: Receiver, outcome: Outcome, message: str,
                failed_host: str | None) -> TaskResult:
        self.emit(JobFinished(job.name, str(job.source), receiver.name, outcome, message, 0, 0.0, failed_host))
        return TaskResult(job.name, str(job.source), receiver.name, outcome, message, failed_host=failed_host)


def host_receivers(engine: Engine, job: Job, options: SyncOptions) -> list[Receiver]:
    """A receiver per host target of ``job`` (``sync``)."""
    direct = engine.is_direct(job, options)
    return [HostReceiver(engine.fleet, job, t, direct) for t in job.targets if isinstance(t, Endpoint)]
