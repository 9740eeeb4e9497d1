"""The fleet as one run sees it: connections, capability probes, listings, limits and lock keys.

One ``Fleet`` per run, shared by the engine (``sync``, ``s3-push``), ``status``,
``s3-restore`` and the TUI, so a host is connected, probed and listed once
whoever asks, and the per-host limits hold across everything the run does.
"""

from __future__ import annotations

import asyncio
import time
from collections.abc import Awaitable, Callable, Iterable, Mapping
from typing import Any, TypeVar

from zrelay import locks
from zrelay.inventory.model import Inventory, Job
from zrelay.transport.host import RemoteHost
from zrelay.transport.ssh import ConnectionPool
from zrelay.zfs import parse
from zrelay.zfs.model import DatasetState

T = TypeVar("T")

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
    changed during the run (``forget``) is listed on its own again. With ``memos``
    (a long-lived fleet's, see Fleet.for_run) a listing whose text did not change
    since the last run is not parsed again (parse.ListingMemo).

    A listing is one task; what is served from a parent's listing is a plain future
    filled when the parent's is, so a cycle of a thousand targets does not pay a task
    per dataset.
    """

    def __init__(self, memos: dict[str, parse.ListingMemo] | None = None) -> None:
        self._futures: dict[tuple[str, str, bool], asyncio.Future[dict[str, DatasetState]]] = {}
        self._cover: dict[tuple[str, str], str] = {}
        self._stale: set[tuple[str, str]] = set()
        self._memos = memos

    def share(self, host: str, datasets: Iterable[str]) -> None:
        """Announce the datasets this run will ask ``host`` about."""
        for dataset, parent in shared_listings(datasets).items():
            self._cover[(host, dataset)] = parent

    def future(self, host: RemoteHost, dataset: str, recursive: bool) -> asyncio.Future[dict[str, DatasetState]]:
        """The listing as a future, started by the first ask. Shared by every asker: await it
        shielded (``get``), so one asker being cancelled does not cancel it for the others."""
        key = (host.name, dataset, recursive)
        fut = self._futures.get(key)
        if fut is None:
            parent = self._cover.get((host.name, dataset))
            if parent is not None and (host.name, dataset) not in self._stale:
                fut = _subset(self.future(host, parent, True), dataset, recursive)
            else:
                memo = None
                if self._memos is not None:
                    memo = self._memos.get(host.name)
                    if memo is None:
                        memo = self._memos[host.name] = parse.ListingMemo()
                fut = asyncio.ensure_future(host.state(dataset, recursive, memo))
            self._futures[key] = fut
        return fut

    async def get(self, host: RemoteHost, dataset: str, recursive: bool) -> dict[str, DatasetState]:
        return await settled(self.future(host, dataset, recursive))

    def forget(self, host: str, dataset: str) -> None:
        self._stale.add((host, dataset))
        for key in [k for k in self._futures if k[0] == host and k[1] == dataset]:
            del self._futures[key]


def _subset(listing: asyncio.Future[dict[str, DatasetState]], dataset: str,
            recursive: bool) -> asyncio.Future[dict[str, DatasetState]]:
    """A future of ``dataset``'s part of a parent's ``listing`` (its descendants too when
    ``recursive``; absent when the listing lacks it), with the listing's error if it fails."""
    out: asyncio.Future[dict[str, DatasetState]] = listing.get_loop().create_future()

    def fill(done: asyncio.Future[dict[str, DatasetState]]) -> None:
        if out.done():
            return
        if done.cancelled():
            out.cancel()
            return
        error = done.exception()
        if error is not None:
            out.set_exception(error)
            return
        states = done.result()
        if recursive:
            prefix = dataset + "/"
            part = {name: st for name, st in states.items() if name == dataset or name.startswith(prefix)}
            part.setdefault(dataset, DatasetState.absent(dataset))
        else:
            found = states.get(dataset)
            part = {dataset: found if found is not None else DatasetState.absent(dataset)}
        out.set_result(part)

    if listing.done():
        fill(listing)
    else:
        listing.add_done_callback(fill)
    return out


async def settled(fut: asyncio.Future[T]) -> T:
    """A shared future's result: at once when it is done (no scheduling), else awaited shielded."""
    if fut.done():
        return fut.result()
    return await asyncio.shield(fut)


class PureMemo:
    """The last answer of a pure function per subject, given again while its arguments are equal.

    Why: a long-lived process plans every target every cycle, and when nothing changed its
    listings are the same objects as last cycle (parse.ListingMemo), so the plans are too.
    Arguments compare by equality, which for the same objects is identity and costs nothing;
    a mapping is kept as a copy, so the caller may change its own afterwards. One entry per
    subject (a job's target), so it holds what one cycle planned. A failure is not kept.
    """

    def __init__(self) -> None:
        self._kept: dict[object, tuple[tuple[object, ...], Any]] = {}

    def call(self, subject: object, fn: Callable[..., T], *args: object, **kwargs: object) -> T:
        inputs = (fn, tuple(_kept(a) for a in args), tuple((k, _kept(v)) for k, v in sorted(kwargs.items())))
        kept = self._kept.get(subject)
        if kept is not None and kept[0] == inputs:
            return kept[1]
        value = fn(*args, **kwargs)
        self._kept[subject] = (inputs, value)
        return value


def _kept(value: object) -> object:
    """An argument as PureMemo keeps it: a mapping copied (its values are the frozen states)."""
    return dict(value) if isinstance(value, Mapping) else value


class Fleet:
    """Every host of one inventory as one run reaches it; close it when the run ends."""

    def __init__(self, inventory: Inventory) -> None:
        self.inventory = inventory
        self.pool = ConnectionPool(inventory.hosts)
        self.states = StateCache()
        self.started_at = time.time()
        self._hosts: dict[str, RemoteHost] = {}
        # one rule for the limits: Inventory.sends_limit / receives_limit
        self.sends = {name: asyncio.Semaphore(inventory.sends_limit(name)) for name in inventory.hosts}
        self.receives = {name: asyncio.Semaphore(inventory.receives_limit(name)) for name in inventory.hosts}
        self._locks: set[locks.RunLock] = set()               # targets this run holds
        self._addresses: dict[str, asyncio.Future[str]] = {}   # host name → address its lock keys use
        self._keys: dict[tuple[str, str], str] = {}   # (host, dataset) → its lock key, once made
        self._closers: list[Callable[[], Awaitable[object]]] = []
        self.per_run: dict[str, Any] = {}   # what a data path keeps for the run (direct mode's login checks)
        #: host name → its last listings' parsed states, shared by the runs of a long-lived fleet (for_run)
        self._memos: dict[str, parse.ListingMemo] | None = None
        #: plans of unchanged listings, kept by a long-lived fleet for its runs (None: plan every time)
        self.plans: PureMemo | None = None
        self._owns_pool = True

    def for_run(self) -> "Fleet":
        """A fleet for one run of a long-lived process (the daemon): its own listings, locks and
        per-run state, but this fleet's connections, probed hosts and per-host limits, so runs at
        the same time share the limits and a run after a quiet hour reconnects nothing.
        Closing it lets go of its locks and leaves the connections open. A listing whose text is
        the same as in the previous run is not parsed again (parse.ListingMemo)."""
        self.pool.forget_failures()   # a host that was down is tried again by the next run
        if self._memos is None:
            self._memos = {}
            self.plans = PureMemo()
        run = Fleet.__new__(Fleet)
        run.inventory = self.inventory
        run.pool = self.pool
        run.states = StateCache(self._memos)
        run.started_at = time.time()
        run._hosts = self._hosts
        run.sends = self.sends
        run.receives = self.receives
        run._locks = set()
        run._addresses = {}
        run._keys = {}
        run._closers = []
        run.per_run = {}
        run._memos = self._memos
        run.plans = self.plans
        run._owns_pool = False
        return run

    def host(self, name: str) -> RemoteHost:
        remote = self._hosts.get(name)
        if remote is None:
            remote = self._hosts[name] = RemoteHost(self.pool.get(name))
        return remote

    def per_host_lock(self, what: str, host: str) -> asyncio.Lock:
        """One lock per (what, host) for the run: work that must not run twice at once on a host."""
        locks_ = self.per_run.setdefault(f"lock:{what}", {})
        lock = locks_.get(host)
        if lock is None:
            lock = locks_[host] = asyncio.Lock()
        return lock

    def on_close(self, closer: Callable[[], Awaitable[object]]) -> None:
        """Run ``closer`` when the fleet closes, before its connections go (e.g. ssh masters)."""
        self._closers.append(closer)

    async def close(self) -> None:
        """Let go of held targets, run the closers, then close every connection."""
        for lock in list(self._locks):   # a run cancelled mid-target still lets its targets go
            self.let_go(lock)
        try:
            await asyncio.gather(*(closer() for closer in self._closers))
        finally:
            if self._owns_pool:
                await self.pool.close()

    async def __aenter__(self) -> "Fleet":
        return self

    async def __aexit__(self, *exc: object) -> None:
        await self.close()

    def share_listings(self, jobs: Iterable[Job]) -> None:
        """Let jobs on sibling datasets of one host share one listing (see StateCache.share)."""
        wanted: dict[str, set[str]] = {}
        for job in jobs:
            wanted.setdefault(job.source.host, set()).add(job.source.dataset)
            for t in job.host_targets:
                wanted.setdefault(t.host, set()).add(t.dataset)
        for host, datasets in wanted.items():
            self.states.share(host, datasets)

    async def listing(self, host: str, dataset: str, recursive: bool) -> dict[str, DatasetState]:
        """``host``'s states of ``dataset`` (and descendants): this run's listing, made once."""
        return await self.states.get(self.host(host), dataset, recursive)

    # --- run locks (zrelay.locks) --------------------------------------------------------------

    async def lock(self, key: str, what: str, wait: float = 0.0,
                   on_wait: Callable[[locks.Holder | None], None] | None = None,
                   stale: Callable[[], None] | None = None) -> locks.RunLock:
        """Hold ``key`` against every other zrelay on this machine, waiting up to ``wait`` s; raises
        TargetBusy naming the holder. ``stale`` runs when the previous holder let go during this
        run: what this run listed before may be older than its last write."""
        lock = locks.RunLock(key, what)
        await lock.acquire(wait, on_wait)
        self._locks.add(lock)
        if stale is not None and lock.previous_release is not None and lock.previous_release >= self.started_at:
            stale()
        return lock

    async def lock_target(self, host: str, dataset: str, what: str, wait: float = 0.0,
                          on_wait: Callable[[locks.Holder | None], None] | None = None) -> locks.RunLock:
        """Hold ``host:dataset`` (see ``lock``). The key is the host's resolved address, port and
        the dataset, so two inventories naming one host differently still meet."""
        return await self.lock(await self.lock_key(host, dataset), what, wait, on_wait,
                               stale=lambda: self.states.forget(host, dataset))

    async def lock_key(self, host: str, dataset: str) -> str:
        """The lock key of ``host:dataset``: the host's resolved address (once per run), port, dataset."""
        key = self._keys.get((host, dataset))
        if key is not None:
            return key
        entry = self.inventory.hosts[host]
        fut = self._addresses.get(host)
        if fut is None:
            fut = self._addresses[host] = asyncio.ensure_future(locks.resolve(entry.address))
        key = self._keys[(host, dataset)] = locks.dataset_key(await settled(fut), entry.port, dataset)
        return key

    async def unheld(self, key: str, what: str, work: Callable[[], Awaitable[T]], wait: float = 0.0,
                     on_wait: Callable[[locks.Holder | None], None] | None = None,
                     on_change: Callable[[], None] | None = None) -> T:
        """``work`` that reads a target without changing it (a dry run, ``status``), done while no
        other zrelay holds it (locks.while_free); raises TargetBusy naming the holder.

        Such work takes no lock (a real run must never wait for a look), but a target
        another run is writing is not planned: mid-receive it looks unrelated to its
        source, and the plan would advise destroying it.
        """
        return await locks.while_free(key, what, work, wait=wait, on_wait=on_wait,
                                      on_change=on_change or (lambda: None))

    async def unheld_target(self, host: str, dataset: str, what: str, work: Callable[[], Awaitable[T]],
                            wait: float = 0.0,
                            on_wait: Callable[[locks.Holder | None], None] | None = None) -> T:
        """``unheld`` for ``host:dataset``; a listing made while another run wrote it is dropped."""
        return await self.unheld(await self.lock_key(host, dataset), what, work, wait, on_wait,
                                 on_change=lambda: self.states.forget(host, dataset))

    def let_go(self, lock: locks.RunLock | None) -> None:
        if lock is not None:
            self._locks.discard(lock)
            lock.release()
