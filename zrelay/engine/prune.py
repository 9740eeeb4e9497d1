"""``zrelay prune`` in the engine: list every side of a job, let the pure planner decide
(zrelay.lifecycle.prune), turn its decisions into actions, run them.

The actions are what the dry run prints and what runs: per side, the releases of this job's
own holds that sit on snapshots about to go, then one ``zfs destroy ds@a,b,c`` per dataset
(one per snapshot where the host takes no list), then bookmarks, then the S3 objects of whole
chains. A job's prune holds every target's run lock, so it never races a ``sync`` or
``s3-push`` of the same job; it lists its sides only once it holds them.
"""

from __future__ import annotations

import asyncio
import time
from collections.abc import Awaitable, Callable, Iterable, Sequence
from dataclasses import dataclass, field, replace
from datetime import datetime, timezone
from typing import TYPE_CHECKING

from zrelay import anchors, locks, selection
from zrelay.actions import Action, ActionKind
from zrelay.engine.fleet import Fleet
from zrelay.engine.options import SyncOptions, TaskResult
from zrelay.engine.s3_receiver import prefix_key
from zrelay.errors import TargetBusy, ZrelayError, blame
from zrelay.events import EventSink, JobFinished, JobStarted, Outcome
from zrelay.inventory.model import Endpoint, Inventory, Job
from zrelay.inventory.policy import SOURCE_SIDE
from zrelay.lifecycle import prune as planner
from zrelay.lifecycle.naming import dated
from zrelay.lifecycle.retention import describe_policy
from zrelay.zfs import commands, parse, quoting
from zrelay.zfs.model import DatasetState, Flavor

if TYPE_CHECKING:
    from zrelay.s3.store import Store


@dataclass
class _Step:
    """One action and how it runs (host commands through the fleet; S3 deletions through the store)."""

    action: Action
    run: Callable[[], Awaitable[None]]


@dataclass
class JobPrune:
    """One job's prune: the plan, the steps that carry it out, the sides it touches."""

    job: Job
    plan: planner.PrunePlan
    steps: dict[str, list[_Step]] = field(default_factory=dict)   # side label → steps, in order
    where: dict[str, str] = field(default_factory=dict)           # side label → host:dataset / s3:NAME
    excluded: list[tuple[str, str]] = field(default_factory=list)  # (host:dataset, why) left alone


def pruned_jobs(jobs: Iterable[Job]) -> list[Job]:
    """The jobs with at least one keep policy (the others are never pruned)."""
    return [job for job in jobs if job.lifecycle.keep]


class Pruner:
    """Prunes jobs through one Fleet; S3 stores are made once per target and run."""

    def __init__(self, fleet: Fleet, emit: EventSink) -> None:
        self.fleet = fleet
        self.inventory: Inventory = fleet.inventory
        self.emit = emit
        self._stores: dict[str, Store] = {}

    def _store(self, name: str) -> Store:
        store = self._stores.get(name)
        if store is None:
            from zrelay.s3.store import Store   # boto3 only for jobs with S3 targets
            target = self.inventory.s3_targets[name]
            # deleting is the prune key's (``prune_profile``): a push-only key cannot delete
            store = self._stores[name] = Store(replace(target, profile=target.prune_profile or target.profile))
        return store

    async def prune(self, jobs: Iterable[Job], options: SyncOptions) -> list[TaskResult]:
        nested = await asyncio.gather(*(self._job(job, options) for job in pruned_jobs(jobs)))
        return [r for results in nested for r in results]

    async def _job(self, job: Job, options: SyncOptions) -> list[TaskResult]:
        started = time.monotonic()
        self.emit(JobStarted(job.name, str(job.source), "prune"))
        held: list[locks.RunLock] = []
        try:
            if not options.dry_run:
                for key in sorted(await self._lock_keys(job)):
                    held.append(await self.fleet.lock(key, f"{job.source}: prune", options.wait_lock))
            pruning = await self.plan(job, options)
            results = self._results(pruning, options)
            if not options.dry_run:
                await self._run(pruning, results)
        except ZrelayError as exc:
            outcome = Outcome.BUSY if isinstance(exc, TargetBusy) else Outcome.FAILED
            results = [TaskResult(job.name, str(job.source), "prune", outcome, str(exc),
                                  failed_host=blame(exc, job.source.host))]
        finally:
            for lock in held:
                self.fleet.let_go(lock)
        for r in results:
            r.seconds = time.monotonic() - started
            self.emit(JobFinished(job.name, r.source, r.target, r.outcome, r.message, 0, r.seconds, r.failed_host))
        return results

    async def _lock_keys(self, job: Job) -> list[str]:
        keys = [await self.fleet.lock_key(t.host, t.dataset) for t in job.host_targets]
        keys += [prefix_key(job, self.inventory.s3_targets[t.name]) for t in job.s3_targets]
        return keys

    # --- listing and planning ---------------------------------------------------------------

    async def plan(self, job: Job, options: SyncOptions, *, fresh: bool = True) -> JobPrune:
        """List every side of ``job`` and plan its prune; build the steps that carry it out.
        ``fresh``: list again rather than use this run's listings (a prune decides on what is
        there now; ``status`` reuses what it listed a moment ago)."""
        select = job.own_snapshots(self.inventory.settings.snapshot_name)
        if select is None:   # the loader refuses a keep policy then; a hand-made Job may still get here
            raise ZrelayError(f"{job.name}: its snapshots cannot be told apart from other tools' "
                              "(no select prefix/regex, and the name template starts with a %-directive)")
        life = job.lifecycle
        template = job.snapshot_template(self.inventory.settings.snapshot_name)
        source_states, source_holds = await self._side(job.source.host, job.source.dataset, job.recursive, fresh)
        source_clones = await self._clones(job.source.host, job.source.dataset, job.recursive, source_states)
        # what the job leaves alone (exclude globs, zrelay:sync=false) is pruned on no side
        chosen = selection.of_job(job, source_states)
        source_states = dated(chosen.keep(source_states), template)   # a snapshot's time is the one its name says
        hosts = list(await asyncio.gather(*(self._host_side(job, t, template, fresh, chosen)
                                            for t in job.host_targets)))
        s3 = await asyncio.gather(*(self._s3_side(job, t.name, chosen, template) for t in job.s3_targets))
        now = int((options.now.timestamp() if options.now else time.time()))
        tags = {str(t): anchors.hold_tag(job.name, str(t)) for t in (*job.host_targets, *job.s3_targets)}
        # A side shared with another job (a cascade) on a host that cannot list holds: the other
        # job's base there cannot be told apart, so that side is left to the other job's own prune.
        held_back: dict[str, str] = {}
        source_policy = life.policy_for(SOURCE_SIDE)
        shared = planner.cascades(job, self.inventory.jobs, job.source.host, job.source.dataset)
        if source_holds is None and shared and source_policy is not None:
            held_back[planner.SOURCE] = self._held_back(job.source.host, shared)
            source_policy = None
        for i, host_side in enumerate(hosts):
            shared = planner.cascades(job, self.inventory.jobs, host_side.host, host_side.root)
            if host_side.holds is None and shared and host_side.policy is not None:
                held_back[host_side.label] = self._held_back(host_side.host, shared)
                hosts[i] = replace(host_side, policy=None)
        prune_input = planner.PruneInput(
            select=select, now=now,
            source=planner.SourceSide(job.source.host, job.source.dataset, source_states, source_holds,
                                      source_policy, source_clones),
            hosts=tuple(hosts), s3=tuple(s3), tag_prefix=anchors.job_tag_prefix(job.name), tags=tags)
        plan = planner.plan_prune(prune_input)
        locked = await self._locked(plan, now)
        if locked:   # Object Lock: what S3 still retains is kept, and the plan says until when
            plan = planner.plan_prune(replace(prune_input, s3=tuple(
                replace(side, locked=locked.get(side.label, {})) for side in s3)))
        if held_back:
            plan = planner.PrunePlan(tuple(replace(s, notes=(held_back[s.side],)) if s.side in held_back else s
                                           for s in plan.sides))
        pruning = JobPrune(job, plan, excluded=[(f"{job.source.host}:{e.dataset}", e.because)
                                                for e in chosen.excluded])
        for side in plan.sides:
            pruning.where[side.side] = (str(job.source) if side.side == planner.SOURCE else side.side)
            pruning.steps[side.side] = await self._steps(job, side)
        return pruning

    async def _locked(self, plan: planner.PrunePlan, now: int) -> dict[str, dict[str, dict[str, str]]]:
        """S3 side label → dataset → chain root / send ref → why it stays (zrelay.s3.retention)."""
        from zrelay.s3 import retention   # boto3 only for jobs with S3 targets
        out: dict[str, dict[str, dict[str, str]]] = {}
        for side in plan.sides:
            if side.host is not None or not side.stored:
                continue
            store = self._store(side.side.removeprefix("s3:"))
            for dataset, stored in side.stored.items():
                found = await retention.locked(store, stored, now)
                if found:
                    out.setdefault(side.side, {})[dataset] = found
        return out

    @staticmethod
    def _held_back(host: str, shared: list[str]) -> str:
        return (f"not pruned: these datasets are also replicated by {', '.join(shared)}, and {host} cannot "
                "list holds, so that job's bases here cannot be told apart; its own prune keeps them")

    async def _side(self, host: str, dataset: str, recursive: bool, fresh: bool) \
            -> tuple[dict[str, DatasetState], dict[str, tuple[str, ...]] | None]:
        """A side's listing and, where the host can list them, the holds on its held snapshots."""
        if fresh:
            self.fleet.states.forget(host, dataset)
        states = await self.fleet.listing(host, dataset, recursive)
        remote = self.fleet.host(host)
        caps = await remote.capabilities()
        if not caps.holds or not any(s.snapshots for s in states.values()):
            return states, None
        held = await remote.held_snapshots(dataset, recursive)
        holds: dict[str, tuple[str, ...]] = {}
        for snap, tag in (await remote.holds(held) if held else []):
            holds[snap] = holds.get(snap, ()) + (tag,)
        counts = {snap: len(tags) for snap, tags in holds.items()}
        states = {name: replace(st, snapshots=tuple(replace(s, userrefs=counts.get(s.full_name, 0))
                                                    for s in st.snapshots))
                  for name, st in states.items()}
        return states, holds

    async def _clones(self, host: str, dataset: str, recursive: bool,
                      states: dict[str, DatasetState]) -> dict[str, tuple[str, ...]]:
        """Snapshot → its clones, where the host lists them (OpenZFS): the planner keeps those."""
        remote = self.fleet.host(host)
        if (await remote.capabilities()).flavor is not Flavor.OPENZFS \
                or not any(s.snapshots for s in states.values()):
            return {}
        listed = await remote.zfs(commands.clones_tree_argv(dataset, recursive), dataset=dataset)
        return parse.parse_clones(listed.stdout)

    async def _host_side(self, job: Job, target: Endpoint, template: str, fresh: bool,
                         chosen: selection.Selection) -> planner.HostSide:
        states, holds = await self._side(target.host, target.dataset, job.recursive, fresh)
        clones = await self._clones(target.host, target.dataset, job.recursive, states)
        states = chosen.keep_target(target.dataset, states)
        return planner.HostSide(str(target), target.host, target.dataset, dated(states, template), holds,
                                job.lifecycle.policy_for(str(target)), clones=clones)

    async def _s3_side(self, job: Job, name: str, chosen: selection.Selection, template: str) -> planner.S3Side:
        from zrelay.s3 import catalog   # boto3 only for jobs with S3 targets
        views = await catalog.load_views(self._store(name), host=job.source.host, dataset=job.source.dataset,
                                         recursive=job.recursive)
        by_dataset = {dataset: view for (_host, dataset), view in views.items() if chosen.why(dataset) is None}
        ends = {d: end for d, v in by_dataset.items() if (end := planner.chain_end(v)) is not None}
        return planner.S3Side(f"s3:{name}", ends, by_dataset, job.lifecycle.policy_for(f"s3:{name}"), template)

    # --- actions ----------------------------------------------------------------------------

    async def _steps(self, job: Job, side: planner.SidePlan) -> list[_Step]:
        if side.host is None:   # S3: whole chains, oldest send last (s3.chains.PrunePlan.keys_in_order)
            return self._s3_steps(side)
        remote = self.fleet.host(side.host)
        caps = await remote.capabilities()
        steps: list[_Step] = []
        policy = describe_policy(side.policy) if side.policy else ""
        by_tag: dict[str, list[str]] = {}
        for snap, tag in side.releases:
            by_tag.setdefault(tag, []).append(snap)
        for tag, snaps in by_tag.items():
            steps.append(self._command(Action(
                ActionKind.RELEASE, side.host, snaps[0].split("@", 1)[0],
                (remote.command(commands.release_argv(tag, snaps)),),
                reason=f"this job's hold {tag} sits on snapshots the policy lets go (no longer a base)")))
        for batch in side.batches:
            lines = tuple(remote.command(argv) for argv in
                          commands.destroy_snapshots_argvs(batch.dataset, list(batch.snapshots), caps=caps)) \
                if batch.snapshots else ()
            lines += tuple(remote.command(commands.destroy_bookmark_argv(f"{batch.dataset}#{b}"))
                           for b in batch.bookmarks)
            if not lines:
                continue
            count = _count(len(batch.snapshots), "snapshot") + (
                f" and {_count(len(batch.bookmarks), 'bookmark')}" if batch.bookmarks else "")
            steps.append(self._command(Action(
                ActionKind.DESTROY, side.host, batch.dataset, lines,
                reason=f"{count} of {side.host}:{batch.dataset} not kept by the policy ({policy})"
                       + (", needed by no target" if side.side == planner.SOURCE
                          else ", older than the newest snapshot shared with the source"))))
        return steps

    def _command(self, action: Action) -> _Step:
        async def run() -> None:
            host = self.fleet.host(action.host)
            for line in action.lines:
                await host.zfs_line(line, dataset=action.subject, retry_busy=True)
        return _Step(action, run)

    def _s3_steps(self, side: planner.SidePlan) -> list[_Step]:
        name = side.side.removeprefix("s3:")
        steps: list[_Step] = []
        for dataset, stored in side.stored.items():
            keys = stored.keys_in_order()
            if not keys:
                continue
            store = self._store(name)
            chains = [d for d in stored.chains if d.delete]
            what = (f"{_count(len(chains), 'whole chain')} of {dataset}" if chains
                    else f"unfinished sends of {dataset}")
            dates = {d.name: d.creation for d in side.decisions if d.dataset == dataset and d.kind == "chain"}
            # which chains go: each with the date the policy read and what it holds in the bucket
            which = "; ".join(f"{d.chain.root} (newest snapshot {_day(dates.get(d.chain.root))}, "
                              f"{d.chain.cost.summary()})" for d in chains)
            action = Action(ActionKind.DESTROY, side.side, dataset,
                            tuple(f"delete s3://{store.bucket}/{quoting.quote([key])}" for key in keys),
                            reason=(f"{what} not kept by the policy ({describe_policy(side.policy)})"
                                    if side.policy else f"{what}") + (f": {which}" if which else ""))

            async def run(keys: Sequence[str] = keys, store: Store = store) -> None:
                for key in keys:
                    await asyncio.to_thread(store.delete, key)
            steps.append(_Step(action, run))
        return steps

    # --- results and running -------------------------------------------------------------------

    def _results(self, pruning: JobPrune, options: SyncOptions) -> list[TaskResult]:
        job = pruning.job
        out: list[TaskResult] = []
        for side in pruning.plan.sides:
            steps = pruning.steps.get(side.side, [])
            kept, dropped = side.counts
            if side.host is None:   # S3: every stored chain counts, also those holding other snapshots
                kept = sum(len(p.chains) for p in side.stored.values()) - dropped
            label = pruning.where[side.side]
            result = TaskResult(job.name, str(job.source), label if side.side != planner.SOURCE
                                else f"{label} (source)", Outcome.NOOP,
                                actions=[s.action for s in steps], details=side)
            if side.policy is None:
                result.message = "no keep policy: not pruned"
            else:
                verb = "would destroy" if options.dry_run else "destroyed"
                count = _count(kept, "chain") if side.host is None else str(kept)
                result.message = (f"keeps {count}, {verb} {dropped} ({describe_policy(side.policy)})"
                                  if dropped else f"keeps all {count} ({describe_policy(side.policy)})")
                if dropped and not options.dry_run:
                    result.outcome = Outcome.OK
            result.warnings = [f"warning: {n}" for n in side.notes]
            if side.side == planner.SOURCE:
                result.excluded = list(pruning.excluded)
            out.append(result)
        return out

    async def _run(self, pruning: JobPrune, results: list[TaskResult]) -> None:
        """Targets first, then the source: each side's releases, destroys and deletions in order.
        A failure stops that side (what ran is reported; a re-run continues) and not the others."""
        order = [s for s in pruning.plan.sides if s.side != planner.SOURCE] + \
                [s for s in pruning.plan.sides if s.side == planner.SOURCE]
        by_side = {s.side: r for s, r in zip(pruning.plan.sides, results)}
        for side in order:
            result = by_side[side.side]
            for step in pruning.steps.get(side.side, []):
                try:
                    await step.run()
                except ZrelayError as exc:
                    result.outcome = Outcome.FAILED
                    result.failed_host = blame(exc, side.host)
                    result.message = f"{result.message}; stopped: {exc} (a re-run continues)"
                    break


def _count(n: int, word: str) -> str:
    return f"{n} {word}" + ("" if n == 1 else "s")


def _day(ts: int | None) -> str:
    """``2026-03-10 14:00 UTC``: when a stored chain's newest snapshot was taken, as its policy read it."""
    if not ts:
        return "unknown"
    return datetime.fromtimestamp(ts, timezone.utc).strftime("%Y-%m-%d %H:%M UTC")
