"""An S3 target as the receiving end of a job: each send of each dataset is one upload.

Planning reads what the bucket holds for the job (its manifests, zrelay.s3.catalog,
read once per job and target and started before the source is even listed) and
asks the pure S3 planner (zrelay.s3.chains) per dataset; each send it wants becomes
one STREAM action whose ``source_command`` is the exact pipeline the source runs
(``zfs send | zstd | age …``) and whose ``sink`` is the send's place in the bucket.
The executor runs those actions under the source's ``sends`` limit; this module
moves one upload's bytes (zrelay.paths.s3push: multipart, completed or aborted,
then the manifest).

The chain is anchored on the source as a host target's base is (zrelay.anchors): after a
dataset's sends, its chain end (the newest stored snapshot, which the next push extends) is
bookmarked and carries the job's hold for this target (``zrelay:JOB:s3:NAME``), moved off the
older one. Another tool's pruning then cannot destroy it; when it is destroyed anyway (after
``zrelay release``), the next push sends from its bookmark (``zfs send -i ds#name``) instead of
starting a new chain.

A dataset's chain is its own: a dataset whose plan or upload fails fails alone
(``SubjectFailed``), the job's other datasets are pushed, and the target's outcome
is the worst of its datasets' (``TargetPlan.verdict``), as ``s3-push`` always did.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import TYPE_CHECKING

from zrelay import anchors, locks, selection
from zrelay.actions import Action, ActionKind, Stream
from zrelay.engine.fleet import Fleet
from zrelay.engine.options import SyncOptions, TaskResult
from zrelay.engine.receiver import OnBytes, Receiver, TargetPlan
from zrelay.errors import ManifestError, S3UsageError, SubjectFailed, ZrelayError
from zrelay.events import Outcome
from zrelay.inventory.model import Job, S3Target
from zrelay.lifecycle.prune import chain_end
from zrelay.paths import throttle
from zrelay.paths.s3push import DatasetPush, PushResult, S3Pusher
from zrelay.s3 import manifest as mf
from zrelay.s3.options import S3Options
from zrelay.s3.store import Store
from zrelay.zfs import commands
from zrelay.zfs.model import DatasetState, Snapshot

if TYPE_CHECKING:
    from zrelay.engine.core import Engine
    from zrelay.s3.chains import DatasetView

#: The push plan kinds, most telling first: a job's task shows the first any of its datasets had.
KIND_ORDER = ("refused", "full", "incremental", "no-source-snapshot", "noop")
#: Dataset outcomes, worst first: a job's task has the worst of its datasets'.
OUTCOME_ORDER = (Outcome.FAILED, Outcome.REFUSED, Outcome.BUSY, Outcome.OK, Outcome.NOOP, Outcome.SKIPPED)

_PUSHERS = "s3-pushers"   # fleet.per_run: one S3Pusher (bucket connection, stored sends) per target


@dataclass
class PushDetails:
    """What an S3 target's ``TaskResult.details`` holds: one result per dataset of the job, in
    order (parents first), filled in as its sends run."""

    datasets: list[PushResult] = field(default_factory=list)


class S3Receiver:
    """``job`` towards one S3 target (see the module docstring)."""

    def __init__(self, fleet: Fleet, job: Job, pusher: S3Pusher) -> None:
        self.fleet = fleet
        self.job = job
        self.pusher = pusher
        self.target: S3Target = pusher.target
        self.name = pusher.label
        self.host: str | None = None          # S3 has no receiving host (no ``receives`` limit)
        self.source = fleet.host(job.source.host)
        self._sends: dict[Action, tuple[DatasetPush, int]] = {}
        self.limit = throttle.stream_limit(fleet.inventory, job=job, source=job.source.host, s3=self.target)
        pusher.prefetch(job)   # the bucket's listing overlaps the snapshot and the source's listing

    async def lock_key(self) -> str:
        """The job's keys in the bucket: endpoint, bucket, ``PREFIX zrelay/v1/HOST/DATASET/``."""
        return prefix_key(self.job, self.target)

    def forget(self) -> None:
        self.pusher.forget(self.job)

    async def prepare(self) -> None:
        await self.pusher.views(self.job)

    async def plan(self, source: Mapping[str, DatasetState], options: SyncOptions) -> TargetPlan:
        job = self.job
        views = await self.pusher.views(job)
        chosen = selection.of_job(job, source)   # exclude globs, zrelay:sync=false
        names = list(chosen.included)
        excluded = [(f"{self.source.name}:{e.dataset}", e.because) for e in chosen.excluded]
        pushes: list[DatasetPush] = []
        for name in names:
            pushes.append(await self.pusher.plan_dataset(job, self.source, source[name],
                                                         views.get((job.source.host, name)),
                                                         new_chain=options.full, dry_run=options.dry_run,
                                                         limit=self.limit))
        results = [p.result for p in pushes] or [PushResult(
            job.name, self.name, str(job.source), Outcome.NOOP,
            f"{job.source}: nothing to push, every dataset is excluded ({excluded[0][1]})")
            if excluded else PushResult(
            job.name, self.name, str(job.source), Outcome.FAILED, f"{job.source}: dataset does not exist",
            failed_host=self.source.name)]
        self._sends = {}
        actions: list[Action] = []
        anchoring = await self._anchor_actions(pushes, source, views)
        for push in pushes:
            if push.runs or push.dataset in anchoring:   # refused or failed before its upload: nothing
                mine = (self._actions(push) if push.runs else []) + anchoring.get(push.dataset, [])
                push.result.commands = [c for a in mine for c in a.commands]
                actions += mine
        plans = [(r.dataset, r.plan) for r in results if r.plan is not None]
        kind = min((p.kind for _, p in plans), default="noop",
                   key=lambda k: KIND_ORDER.index(k) if k in KIND_ORDER else len(KIND_ORDER))
        summary = (plans[0][1].reason if len(plans) == 1 else "; ".join(f"{d}: {p.reason}" for d, p in plans)
                   if plans else verdict_of(results)[1])
        return TargetPlan(kind=kind, summary=summary, actions=actions, dry_outcome=worst(results),
                          details=PushDetails(results), verdict=lambda result: settle(result, results),
                          excluded=excluded)

    async def _anchor_actions(self, pushes: list[DatasetPush], source: Mapping[str, DatasetState],
                              views: Mapping[tuple[str, str], DatasetView]) -> dict[str, list[Action]]:
        """Per dataset: bookmark its chain end on the source and move this target's hold onto it
        (run after the dataset's sends, in its chain of actions: skipped when they fail)."""
        caps = await self.source.capabilities()
        if not (caps.bookmarks or caps.holds):
            return {}
        ends: dict[str, Snapshot] = {}
        for push in pushes:
            plan = push.result.plan
            if plan is None or plan.refused or not (push.runs or plan.kind == "noop"):
                continue
            state = source.get(push.dataset)
            if state is None:
                continue
            if push.runs and plan.steps:
                guid: int | None = plan.steps[-1].snapshot.guid
            else:
                view = views.get((self.job.source.host, push.dataset))
                end = chain_end(view) if view is not None else None
                guid = end.guid if end is not None else None
            snap = state.by_guid().get(guid) if guid is not None else None
            if snap is not None:
                ends[push.dataset] = snap
        if not ends:
            return {}
        why = "the chain end stays a valid incremental base for the next push"
        out: dict[str, list[Action]] = {}
        if caps.bookmarks:
            for snap_name, mark in anchors.bookmarks_to_create(source, ends.values()):
                dataset = snap_name.partition("@")[0]
                out.setdefault(dataset, []).append(Action(
                    ActionKind.BOOKMARK, self.source.name, snap_name,
                    (self.source.command(commands.bookmarks_argv([(snap_name, mark)], caps=caps)),), reason=why))
        if caps.holds:
            tag = anchors.hold_tag(self.job.name, self.name)
            held_names = await self.source.held_snapshots(self.job.source.dataset, self.job.recursive)
            wanted = set(ends)
            held = await self.source.holds([s for s in held_names if s.partition("@")[0] in wanted]) \
                if held_names else []
            for dataset, snap in ends.items():
                moves = anchors.hold_moves(tag, [snap.full_name], held, [dataset])
                if moves.hold:   # first: the chain is never without its hold
                    out.setdefault(dataset, []).append(Action(
                        ActionKind.HOLD, self.source.name, moves.hold[0],
                        (self.source.command(commands.hold_argv(tag, list(moves.hold))),), reason=why))
                if moves.release:
                    out.setdefault(dataset, []).append(Action(
                        ActionKind.RELEASE, self.source.name, moves.release[0],
                        (self.source.command(commands.release_argv(tag, list(moves.release))),),
                        reason="the job's older chain end is no longer needed"))
        return out

    def _actions(self, push: DatasetPush) -> list[Action]:
        """One STREAM per send of ``push``, with the exact pipeline its source runs."""
        out = []
        plan = push.result.plan
        for index, prep in enumerate(push.sends):
            step = prep.step
            action = Action(ActionKind.STREAM, self.source.name, push.dataset, reason=plan.reason if plan else "",
                            stream=Stream(push.label(index), self.name, push.dataset, tuple(prep.send_argv),
                                          prep.command, sink=self.pusher.sink(prep), goal_guid=step.snapshot.guid,
                                          estimate=prep.estimate, full=step.base is None,
                                          bandwidth=self.limit.alone, limit=self.limit.describe()))
            self._sends[action] = (push, index)
            out.append(action)
        return out

    async def stream(self, action: Action, on_bytes: OnBytes, notes: list[str], options: SyncOptions) -> bool:
        """Upload one send; a failure is its dataset's alone (SubjectFailed): the job's other
        datasets still go."""
        push, index = self._sends[action]
        try:
            async with throttle.REGISTRY.stream(self.limit) as held:
                await self.pusher.send(self.source, push, index, on_bytes, held)
        except (ZrelayError, ManifestError) as exc:
            raise SubjectFailed(exc) from exc
        return False

    async def secure_again(self) -> list[Action]:
        """An S3 target holds no base to secure: the stored chain is the base."""
        return []


def prefix_key(job: Job, target: S3Target) -> str:
    """The lock key of the job's keys in the bucket (endpoint, bucket, ``PREFIX zrelay/v1/HOST/DATASET/``)."""
    try:
        prefix = mf.tree_prefix(target.prefix, job.source.host, job.source.dataset)
    except ManifestError as exc:
        raise S3UsageError(target.name, f"{job.source}: {exc}") from None
    return locks.s3_key(target.endpoint, target.region, target.bucket, prefix)


def worst(results: list[PushResult]) -> Outcome:
    return min((r.outcome for r in results), key=OUTCOME_ORDER.index)


def verdict_of(results: list[PushResult]) -> tuple[Outcome, str, str | None]:
    """One outcome per job and target (a recursive job pushes several datasets): the worst
    outcome wins; its message names the datasets that had it."""
    outcome = worst(results)
    telling = [r for r in results if r.outcome is outcome]
    message = telling[0].message if len(results) == 1 else "; ".join(f"{r.dataset}: {r.message}" for r in telling)
    return outcome, message, next((r.failed_host for r in telling if r.failed_host), None)


def settle(result: TaskResult, results: list[PushResult]) -> None:
    """The target's result from its datasets' (TargetPlan.verdict): outcome, message, the host at
    fault, and the bytes stored (sends completed with their manifests)."""
    result.outcome, result.message, result.failed_host = verdict_of(results)
    result.bytes = sum(r.bytes for r in results)


def s3_receivers(engine: Engine, job: Job, options: SyncOptions, *, only: str | None = None,
                 stream_options: Mapping[str, S3Options] | None = None) -> list[Receiver]:
    """A receiver per S3 target of ``job`` (``s3-push``): only the target ``only`` when given;
    ``stream_options`` per target name (the command line's overrides), else the target's own."""
    fleet = engine.fleet
    pushers: dict[str, S3Pusher] = fleet.per_run.setdefault(_PUSHERS, {})
    out: list[Receiver] = []
    for ref in job.s3_targets:
        if only is not None and ref.name != only:
            continue
        pusher = pushers.get(ref.name)
        if pusher is None:
            target = engine.inventory.s3_targets[ref.name]
            opts = (stream_options or {}).get(ref.name) or S3Options.for_target(target)
            pusher = pushers[ref.name] = S3Pusher(Store(target, pool=opts.concurrency + 4), opts)
        out.append(S3Receiver(fleet, job, pusher))
    return out
