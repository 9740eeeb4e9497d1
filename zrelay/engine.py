"""The engine: runs every replication job of a run concurrently, safely.

Per-host limits (``sends`` per source host, ``receives`` per target host)
keep a fleet run from overloading any single machine; one failing job never
stops the others; everything that happens is reported as events
(``zrelay.events``), which the frontends draw.
"""

from __future__ import annotations

import asyncio
import contextlib
import os
import time
from dataclasses import dataclass, field
from datetime import datetime, timezone
from typing import Awaitable, Callable, Iterable, Sequence, TypeVar

from zrelay import anchors, locks
from zrelay.errors import (BadStream, DatasetNotFound, HostsUnreachable, InvalidName, NoResumableState, PlanRefused,
                           TransportError, ZfsError, ZrelayError)
from zrelay.events import (EventSink, JobFinished, JobPlanned, JobStarted, Outcome,
                           TransferFinished, TransferProgress, TransferStarted, discard)
from zrelay.inventory.model import Endpoint, Inventory, Job
from zrelay.paths.direct import LoginCheck, direct
from zrelay.paths import wire
from zrelay.paths.progress import Meter
from zrelay.paths.relay import TransferFailed, relay
from zrelay.plan import Plan, PlanKind, SendStep, common_base, describe, plan, plan_recursive
from zrelay.transport.host import RemoteHost
from zrelay.transport.ssh import ConnectionPool
from zrelay.zfs import commands, direct_ssh, parse
from zrelay.zfs.model import Capabilities, DatasetState, Snapshot
from zrelay.zfs.names import snapshot_problem

#: Set on every replica right after its full receive (commands.replica_argv; s3-restore sets the same).
REPLICA_PROPERTIES = commands.REPLICA_PROPERTIES

MAX_REPLANS = 3           # resume, then re-plan what is left
#: Stream options used when a job names none (inventory ``send_options``), where both ends have them.
DEFAULT_SEND_OPTIONS = ("large_blocks", "embedded", "compressed")


@dataclass(frozen=True)
class SyncOptions:
    dry_run: bool = False
    take_snapshot: bool = False
    rollback: bool = False
    now: datetime | None = None
    direct: bool | None = None   # None: each job's (or its source host's) ``direct`` setting
    abort_partial: bool = False  # discard a partial receive that can no longer be resumed
    decrypt: bool = False        # send encrypted datasets decrypted (not raw): replicas are NOT encrypted
    wait_lock: float = 0.0       # s to wait for another zrelay's run on a target (0: skip it as busy)


@dataclass(frozen=True)
class _Stream:
    """One stream of a plan as it will run: the exact command line(s) and who runs them."""

    label: str
    step: SendStep | None
    send_argv: list[str]
    source_command: str             # relay: zfs send; direct: the whole pipeline
    target_command: str | None      # relay: zfs receive; direct: None (ssh runs it)


@dataclass(frozen=True)
class _Arrival:
    """What tells whether a failed stream arrived after all (see Engine._settle_failure)."""

    job: Job
    target: Endpoint
    plan: Plan
    step: SendStep | None
    goal: int | None           # GUID of the snapshot the stream brings (None: unknown)
    notes: list[str]           # where a warning goes when it did arrive


@dataclass
class TaskResult:
    """The outcome of one job towards one target."""

    job: str
    source: str
    target: str
    outcome: Outcome
    message: str = ""
    bytes: int = 0
    seconds: float = 0.0
    failed_host: str | None = None
    plans: list[Plan] = field(default_factory=list)
    commands: list[tuple[str, str]] = field(default_factory=list)


#: A parent dataset wanted by at least this many jobs' datasets on one host is listed once, recursively.
SHARED_LISTING_MIN = 3


def shared_listings(datasets: Iterable[str], minimum: int = SHARED_LISTING_MIN) -> dict[str, str]:
    """dataset → the parent whose one recursive listing serves it.

    Many jobs on sibling datasets (``tank/vm/a``, ``tank/vm/b`` …) would cost two
    listings each; listing their parent once serves all of them. Only parents
    wanted for at least ``minimum`` children, so a lone job never lists more
    than its own dataset.
    """
    children: dict[str, set[str]] = {}
    for ds in datasets:
        if "/" in ds:
            children.setdefault(ds.rsplit("/", 1)[0], set()).add(ds)
    return {c: parent for parent, kids in children.items() if len(kids) >= minimum for c in kids}


class StateCache:
    """One listing per (host, dataset, recursive) per run, shared by every job that asks.

    With ``share`` the datasets of many jobs on one host are served from one
    recursive listing of their parent (see shared_listings). A dataset that
    changed during the run (``forget``) is listed on its own again.
    """

    def __init__(self) -> None:
        self._futures: dict[tuple[str, str, bool], asyncio.Future[dict[str, DatasetState]]] = {}
        self._cover: dict[tuple[str, str], str] = {}
        self._stale: set[tuple[str, str]] = set()

    def share(self, host: str, datasets: Iterable[str]) -> None:
        """Announce the datasets this run will ask ``host`` about."""
        for dataset, parent in shared_listings(datasets).items():
            self._cover[(host, dataset)] = parent

    async def get(self, host: RemoteHost, dataset: str, recursive: bool) -> dict[str, DatasetState]:
        key = (host.name, dataset, recursive)
        fut = self._futures.get(key)
        if fut is None:
            parent = self._cover.get((host.name, dataset))
            if parent is not None and (host.name, dataset) not in self._stale:
                work = self._from_parent(host, parent, dataset, recursive)
            else:
                work = host.state(dataset, recursive)
            fut = self._futures[key] = asyncio.ensure_future(work)
        return await asyncio.shield(fut)

    async def _from_parent(self, host: RemoteHost, parent: str, dataset: str,
                           recursive: bool) -> dict[str, DatasetState]:
        states = await self.get(host, parent, True)
        out = {name: st for name, st in states.items()
               if name == dataset or (recursive and name.startswith(dataset + "/"))}
        out.setdefault(dataset, DatasetState.absent(dataset))
        return out

    def forget(self, host: str, dataset: str) -> None:
        self._stale.add((host, dataset))
        for key in [k for k in self._futures if k[0] == host and k[1] == dataset]:
            del self._futures[key]


class Engine:
    """Runs jobs against live hosts; all I/O goes through one ConnectionPool."""

    def __init__(self, inventory: Inventory, events: EventSink = discard) -> None:
        self.inventory = inventory
        self.emit = events
        self.pool = ConnectionPool(inventory.hosts)
        self._hosts: dict[str, RemoteHost] = {}
        self.states = StateCache()
        settings = inventory.settings
        self._sends = {h.name: asyncio.Semaphore(h.sends or settings.sends_per_host)
                       for h in inventory.hosts.values()}
        self._receives = {h.name: asyncio.Semaphore(h.receives or settings.receives_per_host)
                          for h in inventory.hosts.values()}
        self._login_checks: dict[tuple[str, str], LoginCheck] = {}   # direct mode, per (source, target)
        self._locks: set[locks.RunLock] = set()    # targets this run holds (see _hold_target)
        self._addresses: dict[str, asyncio.Future[str]] = {}   # host name → address its lock keys use
        self.started_at = time.time()

    def host(self, name: str) -> RemoteHost:
        remote = self._hosts.get(name)
        if remote is None:
            remote = self._hosts[name] = RemoteHost(self.pool.get(name))
        return remote

    async def close(self) -> None:
        """End the login checks' ssh masters on the sources, then every connection."""
        for lock in list(self._locks):   # a run cancelled mid-target still lets its targets go
            self._let_go(lock)
        try:
            await asyncio.gather(*(check.close() for check in self._login_checks.values()))
        finally:
            await self.pool.close()

    async def __aenter__(self) -> "Engine":
        return self

    async def __aexit__(self, *exc: object) -> None:
        await self.close()

    # --- sync -------------------------------------------------------------

    def share_listings(self, jobs: Iterable[Job]) -> None:
        """Let jobs on sibling datasets of one host share one listing (see StateCache.share)."""
        wanted: dict[str, set[str]] = {}
        for job in jobs:
            wanted.setdefault(job.source.host, set()).add(job.source.dataset)
            for t in job.host_targets:
                wanted.setdefault(t.host, set()).add(t.dataset)
        for host, datasets in wanted.items():
            self.states.share(host, datasets)

    async def sync(self, jobs: Iterable[Job], options: SyncOptions = SyncOptions()) -> list[TaskResult]:
        """Replicate every host target of ``jobs``; S3 targets are left to ``s3-push``."""
        now = options.now or datetime.now(timezone.utc)
        jobs = list(jobs)
        self.share_listings(jobs)   # a source snapshotted first is forgotten, then listed on its own
        # The agent is forwarded only to sources of direct streams that have no key of their own.
        self.pool.forward_agent_to({job.source.host for job in jobs if self.is_direct(job, options)
                                    and not self.inventory.hosts[job.source.host].direct_identity_file})
        for job in jobs:   # login checks of direct streams overlap with probing and listing
            source = self.host(job.source.host)
            if self.is_direct(job, options) and _has_direct_credentials(source):
                for target in job.host_targets:
                    self._login_check(source, self.host(target.host))
        work = [self._sync_job(job, options, now) for job in jobs]
        nested = await asyncio.gather(*work)
        return [r for results in nested for r in results]

    async def _sync_job(self, job: Job, options: SyncOptions, now: datetime) -> list[TaskResult]:
        targets = [t for t in job.targets if isinstance(t, Endpoint)]
        if not targets:
            return []
        source = self.host(job.source.host)
        snapshot_name: str | None = None
        try:
            if options.take_snapshot:
                snapshot_name = self._snapshot_name(now)
                argv = commands.snapshot_argv([f"{job.source.dataset}@{snapshot_name}"], job.recursive)
                if not options.dry_run:
                    await source.zfs(argv, dataset=job.source.dataset)
                    self.states.forget(source.name, job.source.dataset)
        except ZrelayError as exc:
            return [self._finish(job, t, Outcome.FAILED, str(exc), _blame(exc, source.name))
                    for t in targets]
        snap_cmd = [(source.name, source.command(argv))] if options.take_snapshot else []
        results = await asyncio.gather(*(
            self._sync_target(job, target, options, snapshot_name if options.dry_run else None, snap_cmd)
            for target in targets))
        return list(results)

    def is_direct(self, job: Job, options: SyncOptions) -> bool:
        """--direct/--relay beat the job's setting, which beats its source host's."""
        if options.direct is not None:
            return options.direct
        if job.direct is not None:
            return job.direct
        return self.inventory.hosts[job.source.host].direct

    def _snapshot_name(self, now: datetime) -> str:
        name = now.strftime(self.inventory.settings.snapshot_name)
        problem = snapshot_problem(name)
        if problem:
            raise InvalidName(f"snapshot_name template gives an invalid name: {problem}")
        return name

    async def _sync_target(self, job: Job, target: Endpoint, options: SyncOptions,
                           simulated_snapshot: str | None,
                           pre_commands: list[tuple[str, str]]) -> TaskResult:
        started = time.monotonic()
        self.emit(JobStarted(job.name, str(job.source), str(target)))
        source, dest = self.host(job.source.host), self.host(target.host)
        result = TaskResult(job.name, str(job.source), str(target), Outcome.OK,
                            commands=list(pre_commands))
        notes: list[str] = []     # things done besides the plan, e.g. a partial receive discarded
        transferred = False
        lock: locks.RunLock | None = None
        try:
            lock = await self._hold_target(job, target, options)   # for the whole plan-and-transfer
            for _round in range(MAX_REPLANS):
                plans = await self._plan_target(job, target, options, simulated_snapshot)
                result.plans = plans
                direct = self.is_direct(job, options)
                await self._check_encryption(plans, source, dest, options.decrypt)
                if direct and any(p.transfers for p in plans):
                    await self._check_direct(source, dest)
                cmds = await self._plan_commands(plans, source, dest, options, direct, job, target)
                result.commands.extend(cmds)
                self.emit(JobPlanned(job.name, str(target), _overall_kind(plans),
                                     "; ".join(describe(p) for p in plans), tuple(cmds)))
                if options.dry_run:
                    result.outcome = _dry_outcome(plans)
                    result.message = _summarise(plans)
                    break
                refused = [p for p in plans if p.refused]
                runnable = [p for p in plans if p.transfers]
                for p in runnable:
                    await self._execute(job, target, p, source, dest, options, direct, notes, result)
                    transferred = True
                if refused:
                    result.outcome = Outcome.REFUSED
                    result.message = _refusal(refused)
                    result.failed_host = dest.name
                    break
                if not runnable:
                    result.outcome = Outcome.OK if result.bytes else Outcome.NOOP
                    result.message = _summarise(plans) if not result.bytes else result.message
                    break
                result.message = _summarise(plans)
                if not any(p.kind is PlanKind.RESUME for p in runnable):
                    break
                self.states.forget(dest.name, target.dataset)  # resumed: plan what is left
            if transferred and not options.dry_run:
                warning = await self._anchor(job, target, source, dest)
                if warning:
                    notes.append(warning)
        except locks.TargetBusy as exc:   # nothing planned, nothing touched: the holder's target
            result.outcome = Outcome.BUSY
            result.message = str(exc)
        except PlanRefused as exc:
            result.outcome = Outcome.REFUSED
            result.message = str(exc)
            result.failed_host = dest.name
        except ZrelayError as exc:
            result.outcome = Outcome.FAILED
            result.message = str(exc)
            result.failed_host = _blame(exc, source.name)
        self._let_go(lock)
        if notes:
            result.message = "; ".join([result.message, *notes] if result.message else notes)
        result.seconds = time.monotonic() - started
        self.emit(JobFinished(job.name, str(job.source), str(target), result.outcome, result.message,
                              result.bytes, result.seconds, result.failed_host))
        return result

    async def lock_target(self, host: str, dataset: str, what: str, wait: float = 0.0,
                          on_wait: Callable[[locks.Holder | None], None] | None = None) -> locks.RunLock:
        """Hold ``host:dataset`` against every other zrelay on this machine (see zrelay.locks),
        waiting up to ``wait`` s; raises TargetBusy naming the holder. ``_let_go`` releases it.

        The key is the host's resolved address, port and the dataset, so two inventories naming
        one host differently still meet. A listing this run made before the lock was taken may be
        older than the previous holder's last write: it is forgotten, and listed afresh.
        """
        lock = locks.RunLock(await self._lock_key(host, dataset), what)
        await lock.acquire(wait, on_wait)
        self._locks.add(lock)
        if lock.previous_release is not None and lock.previous_release >= self.started_at:
            self.states.forget(host, dataset)
        return lock

    async def _lock_key(self, host: str, dataset: str) -> str:
        """The lock key of ``host:dataset``: the host's resolved address (once per run), port, dataset."""
        entry = self.inventory.hosts[host]
        fut = self._addresses.get(host)
        if fut is None:
            fut = self._addresses[host] = asyncio.ensure_future(locks.resolve(entry.address))
        return locks.dataset_key(await asyncio.shield(fut), entry.port, dataset)

    async def unheld(self, host: str, dataset: str, what: str, work: Callable[[], Awaitable[T]],
                     wait: float = 0.0, on_wait: Callable[[locks.Holder | None], None] | None = None) -> T:
        """``work`` that reads ``host:dataset`` without changing it (a dry run, ``status``), done while no
        other zrelay holds that target (locks.while_free); raises TargetBusy naming the holder.

        Such work takes no lock (a real run must never wait for a look), but a target
        another run is writing is not planned: mid-receive it looks unrelated to its
        source, and the plan would advise destroying it.
        """
        return await locks.while_free(await self._lock_key(host, dataset), what, work, wait=wait,
                                      on_wait=on_wait, on_change=lambda: self.states.forget(host, dataset))

    def _waiting(self, job: Job, target: Endpoint, options: SyncOptions) -> Callable[[locks.Holder | None], None]:
        def waiting(holder: locks.Holder | None) -> None:
            who = holder.describe() if holder is not None else "another zrelay is replicating it"
            self.emit(JobPlanned(job.name, str(target), "waiting",
                                 f"waiting up to {options.wait_lock:g} s: {who}"))
        return waiting

    async def _hold_target(self, job: Job, target: Endpoint, options: SyncOptions) -> locks.RunLock | None:
        """The target's run lock for a sync (none for a dry run, which changes nothing: _plan_target)."""
        if options.dry_run:
            return None
        return await self.lock_target(target.host, target.dataset, f"{job.source} → {target}",
                                      options.wait_lock, self._waiting(job, target, options))

    async def _plan_target(self, job: Job, target: Endpoint, options: SyncOptions,
                           simulated_snapshot: str | None) -> list[Plan]:
        """plan_job; a dry run, holding no lock, plans only while no other zrelay holds the target."""
        def planned() -> Awaitable[list[Plan]]:
            return self.plan_job(job, target, options.rollback, simulated_snapshot)
        if not options.dry_run:
            return await planned()
        return await self.unheld(target.host, target.dataset, f"{job.source} → {target}", planned,
                                 options.wait_lock, self._waiting(job, target, options))

    def _let_go(self, lock: locks.RunLock | None) -> None:
        if lock is not None:
            self._locks.discard(lock)
            lock.release()

    def _finish(self, job: Job, target: Endpoint, outcome: Outcome, message: str,
                failed_host: str | None) -> TaskResult:
        self.emit(JobFinished(job.name, str(job.source), str(target), outcome, message, 0, 0.0, failed_host))
        return TaskResult(job.name, str(job.source), str(target), outcome, message, failed_host=failed_host)

    async def plan_job(self, job: Job, target: Endpoint, rollback: bool,
                       simulated_snapshot: str | None = None) -> list[Plan]:
        """Plan ``job`` towards ``target`` from fresh (or this run's cached) listings."""
        source, dest = self.host(job.source.host), self.host(target.host)
        src_states, dst_states = await _both(
            self.states.get(source, job.source.dataset, job.recursive),
            self.states.get(dest, target.dataset, job.recursive))
        dst_caps = await dest.capabilities()
        if simulated_snapshot:
            src_states = _with_new_snapshot(src_states, simulated_snapshot)
        src_root = src_states.get(job.source.dataset)
        if src_root is None or not src_root.exists:
            raise DatasetNotFound(source.name, f"cannot open '{job.source.dataset}': dataset does not exist",
                                  job.source.dataset)
        hosts = {"source_host": source.name, "target_host": dest.name}
        if job.recursive:
            return plan_recursive(src_states, dst_states, job.source.dataset, target.dataset,
                                  select=job.select, rollback=rollback, resume_supported=dst_caps.resume,
                                  **hosts)
        dst = dst_states.get(target.dataset, DatasetState.absent(target.dataset))
        return [plan(src_root, dst, select=job.select, rollback=rollback, resume_supported=dst_caps.resume,
                     **hosts)]

    async def _plan_commands(self, plans: list[Plan], source: RemoteHost, dest: RemoteHost,
                             options: SyncOptions, direct: bool, job: Job,
                             target: Endpoint) -> list[tuple[str, str]]:
        """The exact remote commands a plan runs, in order, as (host, command line)."""
        out: list[tuple[str, str]] = []
        rollback = options.rollback
        for index, p in enumerate(plans):
            if not p.transfers:
                continue
            if p.kind is PlanKind.FULL and index == 0:
                parent = await dest.missing_parent(p.target)
                if parent is not None:
                    out.append((dest.name, dest.command(commands.create_argv(parent, parents=True))))
            if p.rollback_to is not None:
                out.append((dest.name, dest.command(commands.rollback_argv(
                    f"{p.target}@{p.rollback_to.name}", destroy_later=True))))
            for stream in await self._streams(p, source, dest, options, direct, job):
                out.append((source.name, stream.source_command))
                if stream.target_command is not None:
                    out.append((dest.name, stream.target_command))
            if p.kind is PlanKind.FULL:
                out.append((dest.name, dest.command(commands.set_argv(p.target, REPLICA_PROPERTIES))))
        out += await self._anchor_commands(plans, source, dest, job, target)
        return out

    async def _anchor_commands(self, plans: list[Plan], source: RemoteHost, dest: RemoteHost,
                               job: Job, target: Endpoint) -> list[tuple[str, str]]:
        """What securing the new bases will run (see _anchor), as the plan predicts it."""
        src_caps, dst_caps = await asyncio.gather(source.capabilities(), dest.capabilities())
        goals = [(p, p.goal) for p in plans if p.transfers and p.goal is not None]
        if not goals:
            return []
        out: list[tuple[str, str]] = []
        if src_caps.bookmarks:
            pairs = [(g.full_name, anchors.bookmark_for(g)) for _, g in goals]
            out.append((source.name, source.command(commands.bookmarks_argv(pairs))))
        tag = anchors.hold_tag(job.name, str(target))
        for host, caps, side in ((source, src_caps, "source"), (dest, dst_caps, "target")):
            if not caps.holds:
                continue
            names = [g.full_name if side == "source" else f"{p.target}@{g.name}" for p, g in goals]
            out.append((host.name, host.command(commands.hold_argv(tag, names))))
            old = [(p.base.full_name if side == "source" else f"{p.target}@{p.base.name}")
                   for p, _ in goals if p.base is not None and isinstance(p.base, Snapshot)]
            if old:
                out.append((host.name, host.command(commands.release_argv(tag, old))))
        return out

    async def _streams(self, p: Plan, source: RemoteHost, dest: RemoteHost, options: SyncOptions,
                       direct: bool, job: Job) -> list[_Stream]:
        src_caps, dst_caps = await asyncio.gather(source.capabilities(), dest.capabilities())
        wanted = job.send_options if job.send_options is not None else DEFAULT_SEND_OPTIONS
        send_options = commands.stream_options(wanted, src_caps, dst_caps)
        raw = p.encrypted and not options.decrypt
        steps: list[SendStep | None] = list(p.steps) if p.kind is not PlanKind.RESUME else [None]
        ssh = await self._login_check(source, dest).stream_ssh() if direct else None
        progress = direct and "pv" in await source.installed_tools()
        out = []
        for label, step, (send_argv, recv_argv) in zip(_stream_labels(p), steps,
                                                         _stream_argvs(p, src_caps, dst_caps, options.rollback,
                                                                       raw=raw, send_options=send_options)):
            link = await wire.negotiate(job, source, dest, send_argv)  # compression/buffer (paths/wire.py)
            if ssh is not None:
                pipeline = link.direct_pipeline(source, dest, send_argv, ssh, recv_argv, progress=progress)
                out.append(_Stream(label, step, send_argv, pipeline, None))
            else:
                out.append(_Stream(label, step, send_argv, link.source_command(source, send_argv),
                                   link.target_command(dest, recv_argv)))
        return out

    async def _check_direct(self, source: RemoteHost, dest: RemoteHost) -> None:
        """Say why direct mode cannot work before anything is sent (once per host pair and run)."""
        if not _has_direct_credentials(source):
            raise TransferFailed(
                f"direct mode: {source.name} has no direct_identity_file and there is no ssh agent to "
                "forward (SSH_AUTH_SOCK is not set); start an agent with the key the targets accept, "
                "or use relay mode (--relay)", source.name)
        await asyncio.shield(self._login_check(source, dest).outcome)

    def _login_check(self, source: RemoteHost, dest: RemoteHost) -> LoginCheck:
        """The login check from ``source`` to ``dest``, started once per pair and run. ``sync``
        starts it early, before anyone knows whether there is something to send; its outcome
        counts only where a stream would go that way (``_check_direct``)."""
        key = (source.name, dest.name)
        check = self._login_checks.get(key)
        if check is None:
            check = self._login_checks[key] = LoginCheck(source, dest, *_direct_ssh(source, dest))
        return check

    async def _execute(self, job: Job, target: Endpoint, p: Plan, source: RemoteHost, dest: RemoteHost,
                       options: SyncOptions, direct: bool, notes: list[str], result: TaskResult) -> None:
        """Run a plan's streams in order; every byte that moves is counted in ``result``, also
        when a stream fails."""
        src_caps = await source.capabilities()
        if p.kind is PlanKind.FULL and p.target == target.dataset:
            await dest.create_parents(p.target)
        if p.rollback_to is not None:
            await dest.rollback(f"{p.target}@{p.rollback_to.name}")
        for stream in await self._streams(p, source, dest, options, direct, job):
            step = stream.step
            try:
                if p.kind is PlanKind.RESUME:
                    estimate, goal = await self._check_resume(source, src_caps, stream.send_argv)
                else:
                    estimate = await self._estimate(source, src_caps, step, stream.send_argv)
                    goal = step.snapshot.guid if step is not None else None
                arrived = _Arrival(job, target, p, step, goal, notes)
                async with self._sends[source.name], self._receives[dest.name]:
                    await self._stream(job, target, source, dest, stream, estimate, p.target, result,
                                       lambda exc: self._settle_failure(exc, arrived, source, dest))
            except ZrelayError as exc:
                if p.kind is not PlanKind.RESUME or not _unresumable(exc):
                    raise
                notes.append(await self._unresumable(p, dest, options, exc))
                self.states.forget(dest.name, target.dataset)
                return
            if step is not None and step.base is None:
                await dest.zfs(commands.set_argv(p.target, REPLICA_PROPERTIES), dataset=p.target,
                               retry_busy=True)
        self.states.forget(dest.name, target.dataset)

    async def _settle_failure(self, exc: ZrelayError, arrived: "_Arrival", source: RemoteHost,
                              dest: RemoteHost) -> None:
        """After a failed stream, look at the target before saying anything; returns when the
        stream arrived after all, else raises (the error, explained by that look).

        A ``zfs send`` whose session dies after its last byte (exit status lost, killed, a
        dropped connection) fails the pipe, yet ``zfs receive`` has the whole stream: a
        snapshot with the step's GUID on the target means the step is done, and what went
        wrong on the sender is kept as a warning. Otherwise the target tells why a receive
        failed better than zfs's "invalid backup stream" does (see parse.receive_failure_hint).
        """
        if _unresumable(exc):
            raise exc
        job, target, p = arrived.job, arrived.target, arrived.plan
        try:
            self.states.forget(dest.name, target.dataset)
            src_states, dst_states = await asyncio.gather(
                self.states.get(source, job.source.dataset, job.recursive),
                self.states.get(dest, target.dataset, job.recursive))
        except ZrelayError:
            raise exc from None   # the target cannot be asked: the failure stands as it was
        after = dst_states.get(p.target) or DatasetState.absent(p.target)
        landed = next((s for s in after.snapshots if s.guid == arrived.goal), None)
        if landed is not None and arrived.goal is not None:
            why = exc.sender_note if isinstance(exc, TransferFailed) and exc.sender_note else _first_line(str(exc))
            arrived.notes.append(
                f"warning: {dest.name}:{landed.full_name} arrived complete (the source's GUID), so the "
                f"transfer counts as done, but {why}")
            return
        if not (isinstance(exc, TransferFailed) and isinstance(exc.cause, ZfsError)
                and exc.failed_host == dest.name):
            raise exc
        source_state = src_states.get(p.source) or DatasetState.absent(p.source)
        base = arrived.step.base if arrived.step is not None else p.base
        hint = parse.receive_failure_hint(
            p.target_at, after, base.guid if base is not None else None,
            [s.guid for s in source_state.snapshots] + [b.guid for b in source_state.bookmarks])
        if hint is None:
            raise exc
        if not isinstance(exc.cause, BadStream) and exc.cause.hint:
            hint = f"{exc.cause.hint}; {hint}"
        raise exc.reglossed(hint) from None

    async def _check_resume(self, source: RemoteHost, caps: Capabilities,
                            send_argv: list[str]) -> tuple[int | None, int | None]:
        """Is the token still usable? ``send -nvP -t`` says so (and how much is left) before
        anything is sent; a token naming a destroyed snapshot raises NoResumableState. Also
        the GUID of the snapshot the resumed stream brings (the token's ``toguid``)."""
        if not caps.send_estimate:
            return None, None
        result = await source.zfs(commands.estimate_argv(send_argv))
        estimate = goal = None
        with contextlib.suppress(ValueError):
            estimate = parse.parse_send_estimate(result.stdout)
        with contextlib.suppress(ValueError):
            toguid = parse.parse_resume_token_contents(result.stdout).get("toguid")
            goal = toguid if isinstance(toguid, int) and not isinstance(toguid, bool) else None
        return estimate, goal

    async def _unresumable(self, p: Plan, dest: RemoteHost, options: SyncOptions, exc: ZrelayError) -> str:
        """A partial receive that cannot be resumed: discard it only when allowed, else say how.

        Discarding loses nothing that a fresh send would keep when the target has no
        snapshot yet (the partial receive was of a full stream), or when the user asked.
        """
        why = _first_line(str(exc.cause if isinstance(exc, TransferFailed) and exc.cause else exc))
        if not (p.partial_full or options.abort_partial):
            raise NoResumableState(
                dest.name,
                f"the interrupted receive into {p.target_at} cannot be resumed ({why}). Its snapshots are "
                f"intact; `zrelay sync --abort-partial` discards the partial receive "
                f"(`zfs receive -A {p.target}`) and sends again from the newest common snapshot",
                dataset=p.target)
        await dest.abort_receive(p.target)
        return (f"discarded the partial receive into {p.target_at} (`zfs receive -A`), which could not be "
                f"resumed: {why}")

    async def _check_encryption(self, plans: list[Plan], source: RemoteHost, dest: RemoteHost,
                                decrypt: bool) -> None:
        """Encrypted datasets travel raw (-w): refuse, before sending, when an end cannot do that.

        A non-raw send of an encrypted dataset succeeds silently and writes an
        unencrypted replica; that only happens with --decrypt.
        """
        encrypted = [p for p in plans if p.encrypted and p.transfers and p.kind is not PlanKind.RESUME]
        if not encrypted or decrypt:
            return
        src_caps, dst_caps = await asyncio.gather(source.capabilities(), dest.capabilities())
        lacking = [h.name for h, c in ((source, src_caps), (dest, dst_caps)) if not c.raw_send]
        if lacking:
            raise PlanRefused(
                f"{encrypted[0].source_at} is natively encrypted and is sent raw (zfs send -w) to stay "
                f"encrypted, but {' and '.join(lacking)} cannot do raw sends ({dst_caps.flavor.value if dest.name in lacking else src_caps.flavor.value}). "
                "Options: replicate to a host running OpenZFS ≥ 0.8 | or pass --decrypt to send it "
                "decrypted, which writes an UNENCRYPTED replica")

    async def _anchor(self, job: Job, target: Endpoint, source: RemoteHost, dest: RemoteHost) -> str | None:
        """Secure the new newest common snapshots: bookmark them on the source, hold them on both
        sides and release the job's holds on older ones (see zrelay.anchors).

        The data is already replicated when this runs: a failure here is a warning, not a
        failed job.
        """
        try:
            src_caps, dst_caps = await asyncio.gather(source.capabilities(), dest.capabilities())
            if not (src_caps.bookmarks or src_caps.holds or dst_caps.holds):
                return None
            self.states.forget(source.name, job.source.dataset)
            self.states.forget(dest.name, target.dataset)
            src_states, dst_states = await asyncio.gather(
                self.states.get(source, job.source.dataset, job.recursive),
                self.states.get(dest, target.dataset, job.recursive))
            pairs: list[tuple[Snapshot, Snapshot]] = []
            src_scope: list[str] = []
            dst_scope: list[str] = []
            for name, sstate in src_states.items():
                tname = target.dataset + name[len(job.source.dataset):]
                tstate = dst_states.get(tname)
                if not sstate.exists or tstate is None or not tstate.exists:
                    continue
                src_scope.append(name)
                dst_scope.append(tname)
                found = common_base(sstate, tstate)
                if found is not None and isinstance(found[0], Snapshot):
                    pairs.append((found[0], found[1]))
            if src_caps.bookmarks:
                todo = anchors.bookmarks_to_create(src_states, [s for s, _ in pairs])
                if todo:
                    await source.bookmark(todo)
            tag = anchors.hold_tag(job.name, str(target))
            for host, caps, bases, scope, recursive_root in (
                    (source, src_caps, [s.full_name for s, _ in pairs], src_scope, job.source.dataset),
                    (dest, dst_caps, [t.full_name for _, t in pairs], dst_scope, target.dataset)):
                if caps.holds and scope:
                    await self._move_holds(host, tag, bases, scope, recursive_root, job.recursive)
        except ZrelayError as exc:
            return f"warning: replicated, but securing the base failed: {_first_line(str(exc))}"
        return None

    async def _move_holds(self, host: RemoteHost, tag: str, bases: list[str], scope: list[str],
                          root: str, recursive: bool) -> None:
        held = await host.held_snapshots(root, recursive)
        holds = await host.holds([s for s in held if s.partition("@")[0] in scope]) if held else []
        moves = anchors.hold_moves(tag, bases, holds, scope)
        if moves.hold:
            await host.hold(tag, moves.hold)      # first: the chain is never without a hold
        if moves.release:
            await host.release(tag, moves.release)

    async def _estimate(self, source: RemoteHost, caps: Capabilities, step: SendStep | None,
                        send_argv: list[str]) -> int | None:
        """Stream size for progress bars: ``send -nvP`` where the host has it, else a full
        stream's snapshot size (close: a full stream carries what the snapshot references)."""
        if not caps.send_estimate:
            if step is not None and step.base is None and step.snapshot.referenced:
                return step.snapshot.referenced
            return None
        try:
            argv = commands.estimate_argv(send_argv)
            return parse.parse_send_estimate((await source.zfs(argv)).stdout)
        except (ZrelayError, ValueError):
            return None  # an estimate is a nicety; the transfer itself will tell the truth

    async def _stream(self, job: Job, target: Endpoint, source: RemoteHost, dest: RemoteHost,
                      stream: _Stream, estimate: int | None, target_dataset: str, result: TaskResult,
                      settle: Callable[[ZrelayError], Awaitable[None]]) -> None:
        """One stream; its bytes go to ``result`` whatever happens. A failure goes through
        ``settle`` first, which returns when the stream arrived after all (then it is done)."""
        label = stream.label
        meter = Meter(lambda done, rate: self.emit(TransferProgress(
            job.name, str(target), label, done, estimate, rate)))
        self.emit(TransferStarted(job.name, str(target), source.name, dest.name, label, estimate))
        ok = False
        try:
            try:
                if stream.target_command is None:
                    await direct(source, stream.source_command, dest.name, meter.add,
                                 target_dataset=target_dataset)
                else:
                    await relay(source, stream.source_command, dest, stream.target_command, meter.add,
                                target_dataset=target_dataset)
            except ZrelayError as exc:
                await settle(exc)
            ok = True
        finally:
            meter.flush()
            result.bytes += meter.done
            self.emit(TransferFinished(job.name, str(target), label, meter.done, meter.elapsed(), ok))


@dataclass
class ReleaseResult:
    """The holds of one job found on one host, and what became of them."""

    job: str
    host: str
    holds: dict[str, list[str]] = field(default_factory=dict)   # tag → snapshots
    commands: list[str] = field(default_factory=list)
    released: bool = False
    error: str | None = None


class Releaser:
    """``zrelay release``: remove the holds zrelay keeps for jobs (see zrelay.anchors)."""

    def __init__(self, engine: Engine) -> None:
        self.engine = engine

    async def release(self, jobs: Iterable[Job], dry_run: bool) -> list[ReleaseResult]:
        work = []
        for job in jobs:
            places = {(job.source.host, job.source.dataset)}
            places |= {(t.host, t.dataset) for t in job.host_targets}
            work += [self._one(job, host, dataset, dry_run) for host, dataset in sorted(places)]
        return list(await asyncio.gather(*work))

    async def _one(self, job: Job, host_name: str, dataset: str, dry_run: bool) -> ReleaseResult:
        result = ReleaseResult(job.name, host_name)
        host = self.engine.host(host_name)
        try:
            caps = await host.capabilities()
            if not caps.holds or not await host.exists(dataset):
                return result
            held = await host.held_snapshots(dataset, job.recursive)
            holds = await host.holds(held) if held else []
            result.holds = anchors.job_holds(anchors.job_tag_prefix(job.name), holds)
            for tag, snaps in result.holds.items():
                result.commands.append(host.command(commands.release_argv(tag, snaps)))
                if not dry_run:
                    await host.release(tag, snaps)
            result.released = not dry_run and bool(result.holds)
        except ZrelayError as exc:
            result.error = str(exc)
        return result


def _stream_argvs(p: Plan, src_caps: Capabilities, dst_caps: Capabilities, rollback: bool, *,
                  raw: bool = False, send_options: tuple[str, ...] = ()) -> list[tuple[list[str], list[str]]]:
    """(send argv, receive argv) for each stream of a plan; a resumed stream's flags come from its token."""
    resumable = dst_caps.resume
    if p.kind is PlanKind.RESUME:
        assert p.resume_token is not None
        return [(commands.send_argv("", caps=src_caps, resume_token=p.resume_token),
                 commands.receive_argv(p.target, caps=dst_caps, resumable=True))]
    out = []
    for step in p.steps:
        base = step.base.full_name if step.base is not None else None
        send = commands.send_argv(step.snapshot.full_name, caps=src_caps, base=base,
                                  intermediates=step.intermediates, raw=raw, options=send_options)
        # --rollback also discards changes made on the target since its newest snapshot
        # (receive -F); without it such a target fails with "modified since most recent snapshot".
        recv = commands.receive_argv(p.target, caps=dst_caps, force=rollback and step.base is not None,
                                     resumable=resumable)
        out.append((send, recv))
    return out


def _has_direct_credentials(source: RemoteHost) -> bool:
    """A key of its own (direct_identity_file) or an agent that can be forwarded to it."""
    return bool(source.host.direct_identity_file or os.environ.get("SSH_AUTH_SOCK"))


def _direct_ssh(source: RemoteHost, dest: RemoteHost) -> tuple[list[str], list[str] | None]:
    """The source's ssh to the target (the target's address as the source sees it), and the
    fallback for ``direct_ciphers: auto``: AES-GCM first, else ssh's own order for a pair where
    an end has no AES instructions. ``default`` and a list of the user's have no fallback."""
    def ssh(ciphers: Sequence[str] | str | None) -> list[str]:
        return direct_ssh.ssh_argv(dest.host.peer_address, port=dest.host.port, user=dest.host.user,
                                   identity_file=source.host.direct_identity_file,
                                   known_hosts=source.host.direct_known_hosts, ciphers=ciphers)
    setting = source.host.direct_ciphers
    if setting == "auto":
        return ssh(direct_ssh.AES_FIRST_CIPHERS), ssh(None)
    return ssh(None if setting == "default" else setting), None


def _stream_labels(p: Plan) -> list[str]:
    if p.kind is PlanKind.RESUME:
        return [f"{p.target} (resume)"]
    return [_step_label(s) for s in p.steps]


def _step_label(step: SendStep) -> str:
    if step.base is None:
        return f"{step.snapshot.full_name} (full)"
    flag = "-I" if step.intermediates else "-i"
    return f"{step.snapshot.dataset}{step.base.ref} → @{step.snapshot.name} ({flag})"


def _with_new_snapshot(states: dict[str, DatasetState], name: str) -> dict[str, DatasetState]:
    """Source states as they will be after ``zfs snapshot [-r]``, for dry runs."""
    out = {}
    for ds, st in states.items():
        if not st.exists:
            out[ds] = st
            continue
        txg = (st.newest.createtxg + 1) if st.newest else 1
        new = Snapshot(ds, name, guid=-(abs(hash((ds, name))) or 1), createtxg=txg, creation=int(time.time()))
        out[ds] = DatasetState(st.name, True, st.snapshots + (new,), st.bookmarks, st.resume_token, st.encrypted)
    return out


def _overall_kind(plans: list[Plan]) -> str:
    kinds = {p.kind for p in plans}
    for kind in (PlanKind.DIVERGED, PlanKind.NO_COMMON_BASE, PlanKind.RESUME, PlanKind.FULL,
                 PlanKind.INCREMENTAL, PlanKind.NO_SOURCE_SNAPSHOT):
        if kind in kinds:
            return kind.value
    return PlanKind.NOOP.value


def _dry_outcome(plans: list[Plan]) -> Outcome:
    if any(p.refused for p in plans):
        return Outcome.REFUSED
    if any(p.transfers for p in plans):
        return Outcome.SKIPPED
    return Outcome.NOOP


def _summarise(plans: list[Plan]) -> str:
    """A short line for tables: the plan itself for one dataset, counts per kind for many."""
    if len(plans) == 1:
        return describe(plans[0])
    counts: dict[str, int] = {}
    for p in plans:
        counts[p.kind.value] = counts.get(p.kind.value, 0) + 1
    return f"{len(plans)} datasets: " + ", ".join(f"{n} {k}" for k, n in counts.items())


def _refusal(refused: list[Plan]) -> str:
    """The first refused plan's kind, reason (which names both ends) and options."""
    first = refused[0]
    text = f"{first.kind.value.replace('-', ' ')}: {first.reason}"
    if first.options:
        text += " Options: " + " | ".join(first.options)
    if len(refused) > 1:
        text += f" (+{len(refused) - 1} more datasets refused)"
    return text


T = TypeVar("T")
U = TypeVar("U")


async def _both(first: Awaitable[T], second: Awaitable[U]) -> tuple[T, U]:
    """Both results, like gather, but when both ends fail to connect the error names both hosts
    (gather would report only the first, and a fix of it would just show the next)."""
    a, b = await asyncio.gather(first, second, return_exceptions=True)
    errors = [r for r in (a, b) if isinstance(r, BaseException)]
    unreachable = list({e.host: e for e in errors if isinstance(e, TransportError)}.values())
    if len(unreachable) > 1:
        raise HostsUnreachable(unreachable)
    if unreachable:
        raise unreachable[0]
    if errors:
        raise errors[0]
    return a, b  # type: ignore[return-value]


def _first_line(text: str) -> str:
    lines = [line for line in text.splitlines() if line.strip()]
    return lines[0].strip() if lines else text


def _unresumable(exc: ZrelayError) -> bool:
    """True when ``exc`` says a resume token no longer works (not a transient failure)."""
    if isinstance(exc, NoResumableState):
        return True
    return isinstance(exc, TransferFailed) and isinstance(exc.cause, NoResumableState)


def _blame(exc: ZrelayError, default: str) -> str | None:
    if isinstance(exc, TransferFailed):
        return exc.failed_host
    if isinstance(exc, (TransportError, ZfsError)):
        return exc.host
    return default


async def run_sync(inventory: Inventory, jobs: list[Job], options: SyncOptions,
                   events: EventSink = discard) -> list[TaskResult]:
    async with Engine(inventory, events) as engine:
        return await engine.sync(jobs, options)

