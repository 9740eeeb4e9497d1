"""The executor: runs actions exactly as planned, one command line after the other.

It runs the action objects the dry run renders (zrelay.actions): a command
action's lines go to its host as they are; a STREAM goes to its receiver
under the per-host limits, with its bytes metered into events. Nothing here
decides what to run.
"""

from __future__ import annotations

import asyncio
import contextlib
from collections.abc import Iterable, Sequence

from zrelay.actions import Action, ActionKind
from zrelay.engine.fleet import Fleet
from zrelay.engine.options import SyncOptions, TaskResult
from zrelay.engine.receiver import Receiver
from zrelay.errors import DatasetNotFound, SubjectFailed, ZfsError
from zrelay.events import EventSink, TransferFinished, TransferProgress, TransferStarted
from zrelay.paths.progress import Meter

#: Commands zfs-fuse may answer with "dataset is busy" right after a receive: tried again.
RETRIED_WHEN_BUSY = frozenset({ActionKind.ROLLBACK, ActionKind.SET_PROPERTIES, ActionKind.HOLD,
                               ActionKind.RELEASE, ActionKind.ABORT_RECEIVE, ActionKind.DESTROY})


class Executor:
    """Runs one job's actions towards one receiver; every byte that moves is counted in ``result``."""

    def __init__(self, fleet: Fleet, emit: EventSink, receiver: Receiver, result: TaskResult,
                 options: SyncOptions, notes: list[str]) -> None:
        self.fleet = fleet
        self.emit = emit
        self.receiver = receiver
        self.result = result
        self.options = options
        self.notes = notes

    async def run(self, actions: Sequence[Action]) -> bool:
        """Run ``actions``; True when the receiver asks for the rest to be planned again.

        Each dataset's actions run in their planned order (its chain, see ``chains``); a
        dataset's chain starts once its nearest planned ancestor's chain has ended (a child is
        received into its parent), so the datasets of a recursive job move side by side under
        the per-host limits instead of one after another. A stream whose failure the receiver
        keeps to its subject (SubjectFailed) skips that subject's other actions only; any other
        failure stops what has not started and is raised, the first in plan order."""
        order = chains(actions)
        done: dict[str, asyncio.Future[bool]] = {}
        loop = asyncio.get_running_loop()
        for key in order:
            done[key] = loop.create_future()

        stopping = False   # a chain failed: what runs finishes, nothing new starts

        async def run_chain(key: str, chain: list[Action]) -> bool:
            for before in dependencies(key, chain, order):
                if not await asyncio.shield(done[before]):
                    return False   # the parent's (origin's) chain failed or asked to re-plan: wait for that
            for action in chain:
                if stopping:
                    return False
                if action.stream is not None:
                    try:
                        if await self._stream(action):
                            return False
                    except SubjectFailed:
                        return True   # its dataset alone: the others go on
                else:
                    await run_command(self.fleet, action)
                if action.report:
                    self.notes.append(action.report)
            return True

        async def tracked(key: str, chain: list[Action]) -> bool:
            nonlocal stopping
            try:
                ok = await run_chain(key, chain)
            except BaseException:
                stopping = True
                done[key].set_result(False)
                raise
            done[key].set_result(ok)
            return ok

        tasks = [asyncio.ensure_future(tracked(key, chain)) for key, chain in order.items()]
        try:
            outcomes = await asyncio.gather(*tasks, return_exceptions=True)
        except BaseException:   # cancelled (Ctrl-C, SIGTERM): so are the chains
            for t in tasks:
                t.cancel()
            await asyncio.gather(*tasks, return_exceptions=True)
            raise
        for outcome in outcomes:   # the first failure in plan order
            if isinstance(outcome, BaseException):
                raise outcome
        return not all(outcomes)

    async def _stream(self, action: Action) -> bool:
        stream = action.stream
        assert stream is not None
        job, target = self.receiver.job, self.receiver.name
        meter = Meter(lambda done, rate: self.emit(TransferProgress(
            job.name, target, stream.label, done, stream.estimate, rate)))
        ok = False
        async with self.fleet.sends[action.host], _receiving(self.fleet, self.receiver.host):
            self.emit(TransferStarted(job.name, target, action.host, stream.target_host, stream.label,
                                      stream.estimate))
            try:
                replan = await self.receiver.stream(action, meter.add, self.notes, self.options)
                ok = True
            finally:
                meter.flush()
                self.result.bytes += meter.done
                self.emit(TransferFinished(job.name, target, stream.label, meter.done, meter.elapsed(), ok))
        return replan


def _receiving(fleet: Fleet, host: str | None) -> contextlib.AbstractAsyncContextManager[object]:
    """The receiving host's ``receives`` limit (S3 has none of its own)."""
    return fleet.receives[host] if host is not None else contextlib.nullcontext()


async def run_command(fleet: Fleet, action: Action) -> None:
    """Run a command action's lines on its host; zfs's errors become typed ZfsErrors."""
    if action.kind is ActionKind.CREATE_PARENT:
        # jobs into siblings under one new parent: one create at a time per host
        async with fleet.per_host_lock("create-parent", action.host):
            await _create_parent(fleet, action)
        return
    host = fleet.host(action.host)
    for line in action.lines:
        await host.zfs_line(line, dataset=action.subject, retry_busy=action.kind in RETRIED_WHEN_BUSY)


async def _create_parent(fleet: Fleet, action: Action) -> None:
    """``zfs create -p``: a parent (or one of its own parents) that another job, zrelay or tool
    created since the plan is no failure: once more, and what the action wanted is there."""
    host = fleet.host(action.host)
    for line in action.lines:
        for attempt in range(2):
            try:
                await host.zfs_line(line, dataset=action.subject)
                break
            except ZfsError as exc:
                if "already exists" not in str(exc):
                    raise
                if await _exists(fleet, action):
                    break
                if attempt:
                    raise


async def _exists(fleet: Fleet, action: Action) -> bool:
    try:
        return await fleet.host(action.host).exists(action.subject)
    except DatasetNotFound:
        return False


def chains(actions: Sequence[Action]) -> dict[str, list[Action]]:
    """Actions per dataset, in plan order: a stream's target dataset, a command's subject (a
    snapshot's dataset). Creating a missing parent belongs to the chain it makes room for."""
    out: dict[str, list[Action]] = {}
    pending: list[Action] = []
    for action in actions:
        if action.kind is ActionKind.CREATE_PARENT:
            pending.append(action)
            continue
        key = action.stream.target_dataset if action.stream is not None else action.subject.partition("@")[0]
        out.setdefault(key, []).extend(pending)
        out[key].append(action)
        pending = []
    if pending:
        out.setdefault(pending[0].subject, []).extend(pending)
    return out


def dependencies(key: str, chain: Sequence[Action], keys: Iterable[str]) -> list[str]:
    """The chains that must end before ``key``'s starts: its nearest planned ancestor (a child is
    received into its parent) and a clone's origin dataset (the clone is received from its origin's
    snapshot). The planner orders origins before clones, so these never wait on each other."""
    keys = list(keys)
    out = [parent] if (parent := nearest_ancestor(key, keys)) is not None else []
    out += [a.waits_for for a in chain if a.waits_for and a.waits_for != key and a.waits_for in keys
            and a.waits_for not in out]
    return out


def nearest_ancestor(key: str, keys: Iterable[str]) -> str | None:
    """The longest other key that ``key`` is inside of (``a/b`` for ``a/b/c``), if any."""
    best: str | None = None
    for other in keys:
        if other != key and key.startswith(other + "/") and (best is None or len(other) > len(best)):
            best = other
    return best
