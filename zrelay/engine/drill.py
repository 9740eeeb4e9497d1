"""``zrelay drill``: restore a snapshot of a copy into a scratch dataset and prove it equals the source.

One drill: list the source and the copy (a host replica, or what an S3 target stores),
choose the snapshot (zrelay.drill.choose), name a scratch dataset no dataset has, then
run the drill's steps in order: the restore (``zfs send REPLICA@snap`` relayed into
``zfs receive -u SCRATCH``, or the S3 restore path, which checks every object's sha256),
a read-only clone of the source snapshot and of the received one, the tree checksum on
each, and the clean-up. The dry run prints the same steps and runs none of them.

Whatever happens after the scratch dataset may exist, the clean-up runs: clones are
destroyed after their origin is checked, the scratch after its snapshots are checked to
be the copy's (``--keep`` leaves it), so nothing but what the drill created is ever destroyed.
"""

from __future__ import annotations

import asyncio
import random
import time
from dataclasses import dataclass
from datetime import datetime, timezone
from typing import Callable, Sequence, cast

from zrelay import drill as d
from zrelay import selection
from zrelay.engine.fleet import Fleet
from zrelay.errors import S3UsageError, TargetBusy, UsageError, ZfsError, ZrelayError
from zrelay.events import EventSink, TransferFinished, TransferProgress, TransferStarted, discard
from zrelay.inventory.model import Endpoint, Job, S3Ref, Target, name_list
from zrelay.paths import s3restore, throttle
from zrelay.paths.progress import Meter
from zrelay.paths.relay import relay
from zrelay.s3 import catalog
from zrelay.s3.chains import DatasetView
from zrelay.s3.options import S3Options
from zrelay.s3.store import Store
from zrelay.transport.host import RemoteHost
from zrelay.zfs import quoting
from zrelay.zfs.model import DatasetState


#: A drill's result when another zrelay held what it needed: nothing was drilled, nothing recorded.
BUSY = "busy"


@dataclass(frozen=True)
class DrillOptions:
    to: Endpoint                      # host:SCRATCH_PARENT
    snapshot: str | None = None       # by name on the copy; None: newest common, or random
    rng: random.Random | None = None  # --random
    dry_run: bool = False
    keep: bool = False
    wait_lock: float = 0.0


@dataclass
class _Sides:
    """What a drill found out before it changes anything."""

    source_state: DatasetState
    copy_snapshots: list[tuple[str, int]]
    copy_host: str | None = None        # the replica's host (None: S3)
    view: DatasetView | None = None     # the S3 target's stored sends of the source
    store: Store | None = None
    options: S3Options | None = None
    restore_plan: s3restore.RestoreResult | None = None


async def drill(fleet: Fleet, job: Job, copy: Target, opts: DrillOptions, *,
                events: EventSink = discard, now: Callable[[], float] = time.time,
                shown_as: str | None = None, dataset: str = "", round_: float | None = None) -> d.Evidence:
    """Run (or with ``opts.dry_run`` only plan) one drill of ``job``'s ``copy``; never raises for what
    happens once the drill started changing things: the evidence says ``failed`` and why.

    A dataset below a recursive job's source is drilled as ``job.narrowed(...)`` with its own copy;
    ``shown_as`` (the target as the job names it), ``dataset`` (the path below the job's source)
    and ``round_`` (when the drill of the whole tree began) go into its evidence."""
    started = now()
    src = fleet.host(job.source.host)
    dest = fleet.host(opts.to.host)
    ev = d.Evidence(job.name, shown_as or str(copy), str(job.source), "", started=started, dataset=dataset,
                    round=started if round_ is None else round_)
    sides = await _look(fleet, job, copy, src)
    if not sides.source_state.exists:
        raise UsageError(f"{job.source} does not exist: nothing to drill against")
    where = str(copy) if isinstance(copy, Endpoint) else f"{copy} ({job.source} as stored there)"
    common = d.candidates(sides.source_state, sides.copy_snapshots)
    chosen = d.choose(common, sides.copy_snapshots, opts.snapshot, opts.rng, where, str(job.source))
    ev.snapshot, ev.source_guid = chosen.name, chosen.guid
    if not await dest.exists(opts.to.dataset):
        raise UsageError(f"--to {opts.to}: {opts.to.dataset} does not exist on {opts.to.host}; "
                         "create the scratch parent first (the drill creates only datasets below it)")
    scratch = await _free_name(dest, opts.to.dataset, f"{job.name}-{dataset}" if dataset else job.name,
                               datetime.fromtimestamp(started, timezone.utc))
    ev.scratch = f"{opts.to.host}:{scratch}"
    volume = sides.source_state.volume
    src_clone = d.source_clone_name(job.source.dataset, scratch)
    copy_clone = d.clone_name(scratch, "copy")
    if await src.exists(src_clone) or await dest.exists(copy_clone):
        raise UsageError(f"{src.name}:{src_clone} or {dest.name}:{copy_clone} exists already; "
                         "a drill never uses a dataset it did not create: try again in a second")
    src_snap = chosen.source.full_name
    copy_snap = f"{scratch}@{chosen.name}"
    if sides.store is not None and sides.view is not None and sides.options is not None:
        sides.restore_plan = await s3restore.restore(sides.store, sides.options, sides.view, chosen.name, dest,
                                                     scratch, dry_run=True)
    replica = fleet.host(copy.host) if isinstance(copy, Endpoint) else None
    steps = _steps(copy, replica, sides, src, dest, scratch, src_snap, copy_snap, src_clone, copy_clone, volume,
                   opts.keep)
    ev.steps = steps
    if opts.dry_run:
        ev.result, ev.message = "dry-run", "nothing was changed"
        ev.finished = now()
        return ev
    lock = await fleet.lock_target(opts.to.host, scratch, f"drill {job.name} {copy} → {ev.scratch}",
                                   opts.wait_lock)
    try:
        await _run(fleet, job, copy, opts, sides, ev, src, dest, scratch, src_snap, copy_snap, src_clone,
                   copy_clone, volume, events)
    finally:
        fleet.let_go(lock)
    ev.finished = now()
    return ev


def drill_pairs(jobs: Sequence[Job], copy: Target | None, rng: random.Random | None) -> list[tuple[Job, Target]]:
    """(job, copy) pairs to drill: ``copy`` of every job that has it, else every target (one at random
    with ``rng``). UsageError when nothing matches."""
    pairs: list[tuple[Job, Target]] = []
    for job in jobs:
        if copy is not None:
            if copy in job.targets:
                pairs.append((job, copy))
        elif job.targets:
            pairs += [(job, rng.choice(list(job.targets)))] if rng is not None else [(job, t) for t in job.targets]
    if not pairs:
        if copy is not None:
            known = sorted({str(t) for j in jobs for t in j.targets})
            raise UsageError(f"--from {copy}: no matching job has this target"
                             + (f"; their targets: {name_list(known)}" if known else ""))
        raise UsageError("no matching job has a target to drill")
    return pairs


async def drill_each(fleet: Fleet, pairs: Sequence[tuple[Job, Target]], opts: DrillOptions, *,
                     events: EventSink = discard, raise_usage: bool = True) -> list[d.Evidence]:
    """Drill each (job, copy) one after the other (each restores a whole snapshot: no point in
    competing for the disks): what ``zrelay drill`` and the daemon's scheduled drills run. A
    recursive job's copy is drilled dataset by dataset (parents first, one scratch each), the
    datasets the job leaves alone (``exclude:``, ``zrelay:sync=false``) left out and named.

    A copy that is busy (another zrelay holds the scratch lock) gives ``busy`` evidence, a host or
    bucket that did not answer before anything changed ``failed``. A UsageError about the job's
    own dataset (a bad argument, nothing to drill) is raised as it is, or with
    ``raise_usage=False`` (the daemon: nobody types the arguments, and one target must not keep
    the others from being drilled) ``failed`` evidence; about a dataset below it (not replicated
    yet), always ``failed`` evidence for that dataset."""
    out: list[d.Evidence] = []
    for job, copy in pairs:
        started = time.time()

        def failed(result: str, exc: ZrelayError, sub: Job = job, rel: str = "") -> d.Evidence:
            return d.Evidence(job.name, str(copy), str(sub.source), "", started=started, finished=time.time(),
                              result=result, message=str(exc), dataset=rel, round=started)

        try:
            tree, excluded = await _tree(fleet, job, copy)
        except ZrelayError as exc:   # the source's listing: its host did not answer
            out.append(failed(d.FAILED, exc))
            continue
        first = len(out)
        for sub, sub_copy, rel in tree:
            try:
                out.append(await drill(fleet, sub, sub_copy, opts, events=events, shown_as=str(copy),
                                       dataset=rel, round_=started))
            except UsageError as exc:
                if raise_usage and not rel:
                    raise
                out.append(failed(d.FAILED, exc, sub, rel))
            except TargetBusy as exc:
                out.append(failed(BUSY, exc, sub, rel))
            except ZrelayError as exc:   # before the drill changed anything: a host or the bucket did not answer
                out.append(failed(d.FAILED, exc, sub, rel))
        if excluded and len(out) == first:    # the job's own dataset is left alone: nothing to drill
            problem = UsageError(f"{job.source} is left alone ({excluded[0].split(': ', 1)[-1]}): nothing to drill")
            if raise_usage:
                raise problem
            out.append(failed(d.FAILED, problem))
        if excluded:
            out[first].excluded = excluded
    return out


async def _tree(fleet: Fleet, job: Job, copy: Target) -> tuple[list[tuple[Job, Target, str]], list[str]]:
    """What a drill of ``job``'s ``copy`` covers: (job narrowed to the dataset, its copy, path below the
    job's source) parents first, and the datasets the job leaves alone with why (one line each)."""
    if not job.recursive:
        return [(job, copy, "")], []
    states = await fleet.host(job.source.host).state(job.source.dataset, recursive=True)
    chosen = selection.of_job(job, states)
    if not chosen.included and not chosen.excluded:   # no such source: the drill says so
        return [(job, copy, "")], []
    index = job.targets.index(copy)
    tree = []
    for dataset in chosen.included:
        sub = job.narrowed(dataset)
        tree.append((sub, sub.targets[index], selection.relative(dataset, job.source.dataset)))
    return tree, [f"{job.source.host}:{e.dataset}: {e.why}" for e in chosen.excluded]


# --------------------------------------------------------------------------- looking


async def _look(fleet: Fleet, job: Job, copy: Target, src: RemoteHost) -> _Sides:
    source_state = (await src.state(job.source.dataset)).get(job.source.dataset) or DatasetState.absent(
        job.source.dataset)
    if isinstance(copy, Endpoint):
        state = (await fleet.host(copy.host).state(copy.dataset)).get(copy.dataset)
        if state is None or not state.exists:
            raise UsageError(f"{copy} does not exist: nothing to drill (sync it first)")
        return _Sides(source_state, [(s.name, s.guid) for s in state.snapshots], copy_host=copy.host)
    target = fleet.inventory.s3_targets[copy.name]
    options = S3Options.for_target(target)
    store = Store(target, pool=options.concurrency + 4)
    views = await catalog.load_views(store, host=job.source.host, dataset=job.source.dataset, recursive=False)
    view = views.get((job.source.host, job.source.dataset))
    if view is None or not view.chains:
        raise S3UsageError(target.name, f"nothing is stored for {job.source}: nothing to drill")
    stored = sorted(((s.manifest.snapshot.createtxg, s.manifest.snapshot.name, s.manifest.snapshot.guid)
                     for _, s in view.restorable_sends() if s.manifest is not None))
    seen: set[int] = set()
    snaps = []
    for _, name, guid in stored:
        if guid not in seen:
            seen.add(guid)
            snaps.append((name, guid))
    return _Sides(source_state, snaps, view=view, store=store, options=options)


async def _free_name(dest: RemoteHost, parent: str, job: str, when: datetime) -> str:
    """A scratch name no dataset on ``dest`` has (checked, not assumed)."""
    taken: set[str] = set()
    while True:
        name = d.scratch_name(parent, job, when, taken)
        if not await dest.exists(name):
            return name
        taken.add(name)


# --------------------------------------------------------------------------- the steps


def _steps(copy: Target, copy_remote: RemoteHost | None, sides: _Sides, src: RemoteHost, dest: RemoteHost,
           scratch: str, src_snap: str, copy_snap: str, src_clone: str, copy_clone: str, volume: bool,
           keep: bool) -> list[d.Step]:
    """Every command the drill runs, in order, as the dry run prints them."""
    steps: list[d.Step] = []
    if isinstance(copy, Endpoint):
        replica = copy_remote or dest
        steps.append(d.Step("send", copy.host, replica.command(d.send_argv(f"{copy.dataset}@{copy_snap.split('@', 1)[1]}"))))
        steps.append(d.Step("receive", dest.name, dest.command(d.receive_argv(scratch)),
                            f"relayed through this machine from {copy.host}"))
    else:
        plan = sides.restore_plan
        assert plan is not None
        for st in plan.steps:
            objects = cast(list[str], st.get("objects") or [])
            steps.append(d.Step("receive", dest.name, str(st["command"]),
                                f"s3:{copy.name} @{st['snapshot']} ({st['kind']}): {len(objects)} object(s), "
                                "sha256 checked per object"))
            for line in cast(list[str], st.get("then") or []):
                steps.append(d.Step("fixup", dest.name, str(line)))
    for host, snap, clone in ((src, src_snap, src_clone), (dest, copy_snap, copy_clone)):
        mount = None if volume else d.mountpoint_for(clone)
        steps.append(d.Step("clone", host.name, host.command(d.clone_argv(snap, clone, mount))))
        steps.append(d.Step("checksum", host.name,
                            host.command(d.tree_argv(d.device_of(clone) if volume else mount or "", volume))))
    for host, snap, clone in ((src, src_snap, src_clone), (dest, copy_snap, copy_clone)):
        steps.append(d.Step("check", host.name, host.command(d.origin_argv(clone)), f"origin must be {snap}"))
        steps.append(d.Step("destroy", host.name, host.command(d.destroy_argv(clone, recursive=False))))
        if not volume:
            steps.append(d.Step("rmdir", host.name, quoting.quote(d.rmdir_argv(d.mountpoint_for(clone)))))
    if not keep:
        steps.append(d.Step("destroy", dest.name, dest.command(d.destroy_argv(scratch, recursive=True)),
                            "after checking it holds only snapshots of the copy"))
    return steps


# --------------------------------------------------------------------------- running


async def _run(fleet: Fleet, job: Job, copy: Target, opts: DrillOptions, sides: _Sides, ev: d.Evidence,
               src: RemoteHost, dest: RemoteHost, scratch: str, src_snap: str, copy_snap: str, src_clone: str,
               copy_clone: str, volume: bool, events: EventSink) -> None:
    created: list[tuple[RemoteHost, str, str]] = []    # (host, clone, its origin)
    scratch_guids = {guid for _, guid in sides.copy_snapshots}
    try:
        ev.bytes = await _restore(fleet, job, copy, sides, ev, dest, scratch, events)
        received = (await dest.state(scratch)).get(scratch)
        got = next((s for s in (received.snapshots if received else ()) if s.name == ev.snapshot), None)
        ev.received_guid = got.guid if got else None
        trees: list[d.TreeSum] = []
        for step_host, snap, clone in ((src, src_snap, src_clone), (dest, copy_snap, copy_clone)):
            if got is None:
                break
            clone_step = next(s for s in ev.steps if s.what == "clone" and clone in s.line)
            await step_host.zfs_line(clone_step.line, dataset=clone)
            created.append((step_host, clone, snap))
            sum_step = next(s for s in ev.steps if s.what == "checksum" and s.host == step_host.name
                            and (d.device_of(clone) if volume else d.mountpoint_for(clone)) in s.line)
            result = await step_host.conn.run(sum_step.line, check=False)
            if result.exit_status != 0:
                raise ZfsError(step_host.name, f"checksum of {snap} failed: "
                               + (result.stderr.strip() or result.stdout.strip() or "no output"),
                               exit_status=result.exit_status)
            trees.append(d.parse_tree(result.stdout))
        if got is not None:
            ev.source_tree, ev.copy_tree = trees[0].to_dict(), trees[1].to_dict()
            ev.result, ev.message = d.verdict(ev.source_guid or 0, ev.received_guid, trees[0], trees[1])
        else:
            ev.result, ev.message = d.verdict(ev.source_guid or 0, None, None, None)
    except (ZrelayError, ValueError, OSError) as exc:
        ev.result, ev.message = d.FAILED, str(exc)
    finally:
        await asyncio.shield(_clean(ev, src, dest, scratch, created, scratch_guids, volume, opts.keep))


async def _restore(fleet: Fleet, job: Job, copy: Target, sides: _Sides, ev: d.Evidence, dest: RemoteHost,
                   scratch: str, events: EventSink) -> int:
    """The copy's snapshot into the scratch dataset: relayed from the replica, or from S3."""
    if isinstance(copy, Endpoint):
        source = fleet.host(copy.host)
        send = next(s for s in ev.steps if s.what == "send")
        receive = next(s for s in ev.steps if s.what == "receive")
        label = f"{copy.dataset}@{ev.snapshot} (full, drill)"
        meter = Meter(lambda done, rate: events(TransferProgress(job.name, ev.scratch, label, done, None, rate)))
        events(TransferStarted(job.name, ev.scratch, copy.host, dest.name, label))
        ok = False
        try:
            limit = throttle.stream_limit(fleet.inventory, job=job, source=copy.host, target=dest.name)
            async with fleet.sends[copy.host], fleet.receives[dest.name], throttle.REGISTRY.stream(limit) as held:
                moved = (await relay(source, send.line, dest, receive.line, meter.add, target_dataset=scratch,
                                     throttle=held)).bytes
            ok = True
        finally:
            events(TransferFinished(job.name, ev.scratch, label, meter.done, meter.elapsed(), ok))
        return moved
    assert sides.store is not None and sides.options is not None and sides.view is not None
    target = fleet.inventory.s3_targets[copy.name]
    result = await s3restore.restore(sides.store, sides.options, sides.view, ev.snapshot, dest, scratch,
                                     events=events, limit=throttle.stream_limit(fleet.inventory, target=dest.name,
                                                                                s3=target))
    return result.bytes


async def _clean(ev: d.Evidence, src: RemoteHost, dest: RemoteHost, scratch: str,
                 created: list[tuple[RemoteHost, str, str]], copy_guids: set[int], volume: bool, keep: bool) -> None:
    """Destroy what the drill created, each thing only after checking it is what the drill made."""
    for host, clone, origin in created:
        try:
            result = await host.zfs(d.origin_argv(clone), dataset=clone)
            if result.stdout.strip() != origin:
                ev.cleanup.append(f"{host.name}:{clone} left: its origin is {result.stdout.strip()!r}, "
                                  f"not {origin}")
                continue
            await host.zfs(d.destroy_argv(clone, recursive=False), dataset=clone, retry_busy=True)
            if not volume:
                await host.conn.run(quoting.quote(d.rmdir_argv(d.mountpoint_for(clone))), check=False)
        except ZrelayError as exc:
            ev.cleanup.append(f"{host.name}:{clone} left: {exc}")
    if keep:
        ev.kept = await dest.exists(scratch)
        return
    try:
        state = (await dest.state(scratch)).get(scratch)
        if state is None or not state.exists:
            return
        foreign = [s.name for s in state.snapshots if s.guid not in copy_guids]
        if foreign:
            ev.cleanup.append(f"{dest.name}:{scratch} left: it holds snapshot(s) the copy did not send "
                              f"({', '.join('@' + n for n in foreign[:3])})")
            return
        await dest.zfs(d.destroy_argv(scratch, recursive=True), dataset=scratch, retry_busy=True)
    except ZrelayError as exc:
        ev.cleanup.append(f"{dest.name}:{scratch} left: {exc}")
