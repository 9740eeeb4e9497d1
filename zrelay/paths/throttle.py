"""Bandwidth limits: which limit a stream has, and the token bucket that keeps it.

A stream's own limit is the smallest ``bandwidth`` that applies to it: its job's,
its source host's, its target host's (host or group variables) and its S3
target's. On top of that, ``zrelay.bandwidth_groups`` gives a group of hosts a
budget that every stream touching one of its hosts (as source or target) shares
with the group's other streams running at that moment, in this process.

How each path keeps the limit:

- relay and S3 push: bytes arrive in SSH callbacks; each chunk is charged to the
  stream's ``Throttle`` and, once the stream is more than ``MAX_DEBT_SECONDS``
  ahead, reading from the source pauses until the debt is paid (a ``Gate`` keeps
  that pause apart from the flow-control pauses of the same channel);
- S3 restore: each chunk waits for its tokens before it is written (``take``);
- direct: the source's pipeline carries ``pv -q -L RATE`` (or ``mbuffer -q -r RATE``),
  so its rate is fixed when the stream starts: a direct stream in a budget group
  gets the share the group's streams running then leave it, and keeps it.

Shares (``fair_shares``) are max-min fair: a stream capped below its equal share
leaves the rest to the others. They are recomputed whenever a stream of a budget
group starts or ends (``Registry``); the throttles of running relay and S3
streams follow at once.
"""

from __future__ import annotations

import asyncio
import contextlib
import itertools
import time
from collections.abc import AsyncIterator, Callable, Iterable, Mapping
from dataclasses import dataclass

from zrelay.errors import TransferFailed
from zrelay.inventory.model import Host, Inventory, Job, S3Target
from zrelay.units import human_rate
from zrelay.zfs import stream_filters

#: Credit a throttle holds at most (and starts with): a quarter of a second's worth (at least
#: MIN_BURST). A stream held up by its receiver, its uploads or a late timer makes up that much,
#: and never rushes further past its rate than that.
BURST_SECONDS = 0.25
MIN_BURST = 64 * 1024
#: A callback path pauses its source only once it is this far ahead: fewer, longer pauses
#: (an SSH packet at 20 MiB/s is 1.5 ms of budget), at the cost of this much jitter.
MAX_DEBT_SECONDS = 0.02


# --------------------------------------------------------------------------- which limit


@dataclass(frozen=True, slots=True)
class Limit:
    """What limits one stream: its own cap (the smallest that applies, and who set it) and the
    group budgets it shares. ``NONE``: nothing does."""

    rate: int | None = None                       # bytes per second; None: no limit of its own
    by: str = ""                                  # who set ``rate``: "job", "source host nas1", …
    groups: tuple[tuple[str, int], ...] = ()      # (group, its budget) this stream draws from

    @property
    def limited(self) -> bool:
        return self.rate is not None or bool(self.groups)

    @property
    def alone(self) -> int | None:
        """The rate the stream gets with no other stream in its groups."""
        rates = [r for r in (self.rate, *(b for _, b in self.groups)) if r is not None]
        return min(rates) if rates else None

    def describe(self, rate: int | None = None) -> str:
        """``bandwidth 20.0 MiB/s (job; group branch 40.0 MiB/s shared)``: what the dry run shows."""
        if not self.limited:
            return ""
        parts = [f"{self.by} {human_rate(self.rate)}"] if self.rate is not None else []
        parts += [f"group {g} {human_rate(b)} shared" for g, b in self.groups]
        return f"bandwidth {human_rate(rate if rate is not None else self.alone)} ({'; '.join(parts)})"


NONE = Limit()


def stream_limit(inventory: Inventory, *, job: Job | None = None, source: str | None = None,
                 target: str | None = None, s3: S3Target | None = None) -> Limit:
    """The limit of a stream of ``job`` from host ``source`` to host ``target`` or ``s3``."""
    candidates: list[tuple[int, str]] = []
    if job is not None and job.bandwidth is not None:
        candidates.append((job.bandwidth, "job"))
    hosts: list[Host] = []
    for role, name in (("source", source), ("target", target)):
        if name is None:
            continue
        host = inventory.host(name)
        hosts.append(host)
        if host.bandwidth is not None:
            candidates.append((host.bandwidth, f"{role} host {name}"))
    if s3 is not None and s3.bandwidth is not None:
        candidates.append((s3.bandwidth, f"S3 target {s3.name}"))
    budgets = inventory.settings.bandwidth_groups
    touched = dict.fromkeys(g for host in hosts for g in host.groups if g in budgets)
    if "all" in budgets and hosts:
        touched["all"] = None
    rate, by = min(candidates, key=lambda c: c[0]) if candidates else (None, "")
    return Limit(rate, by, tuple((g, budgets[g]) for g in touched))


# --------------------------------------------------------------------------- sharing budgets


def fair_shares(streams: Mapping[int, tuple[float | None, Iterable[str]]], budgets: Mapping[str, float],
                fixed: Mapping[int, float] | None = None) -> dict[int, float | None]:
    """Each adjustable stream's rate: max-min fair within every budget group (progressive filling).

    ``streams``: stream → (its own cap or None, the groups it is in); ``budgets``: group →
    bytes per second; ``fixed``: streams whose rate cannot change any more (direct ones: the
    rate is in their pipeline) → that rate. Fixed rates come off their groups' budgets first,
    but no adjustable stream gets less than an equal share of each of its groups (budget /
    every stream in it, fixed ones too): a direct stream that started alone cannot starve
    those that come after it. None: no limit at all.
    """
    fixed = fixed or {}
    groups = {k: [g for g in dict.fromkeys(gs) if g in budgets] for k, (_, gs) in streams.items()}
    count: dict[str, int] = {}
    used: dict[str, float] = {}
    for key, gs in groups.items():
        for g in gs:
            count[g] = count.get(g, 0) + 1
            if key in fixed:
                used[g] = used.get(g, 0.0) + fixed[key]
    out: dict[int, float | None] = {}
    open_: list[int] = []
    for key in streams:
        if key in fixed:
            continue
        if groups[key]:
            open_.append(key)
        else:
            out[key] = streams[key][0]
    left = {g: max(0.0, budgets[g] - used.get(g, 0.0)) for g in count}
    level = 0.0
    filled: dict[int, float] = {}
    while open_:
        n = dict.fromkeys(left, 0)
        for key in open_:
            for g in groups[key]:
                n[g] += 1
        caps = [cap - level for key in open_ if (cap := streams[key][0]) is not None]
        step = max(0.0, min([left[g] / n[g] for g in n if n[g]] + caps))
        level += step
        for g in n:
            left[g] -= step * n[g]
        full = {g for g in n if n[g] and left[g] <= 1e-9 * max(1.0, budgets[g])}
        done = [key for key in open_ if any(g in full for g in groups[key])
                or ((cap := streams[key][0]) is not None and cap - level <= 1e-9 * max(1.0, cap))]
        for key in done or open_:   # nothing reached a limit: only rounding is left
            filled[key] = level
        open_ = [key for key in open_ if key not in filled]
    for key, rate in filled.items():
        floor = min(budgets[g] / count[g] for g in groups[key])
        cap = streams[key][0]
        rate = max(rate, floor)
        out[key] = min(rate, cap) if cap is not None else rate
    return out


# --------------------------------------------------------------------------- the token bucket


class Throttle:
    """A token bucket: ``spend`` charges bytes and says how long the stream is ahead of its rate.

    It starts full, as a token bucket does (the stream's own start, sessions opening and
    ``zfs send`` starting, costs it that much), and holds at most a burst of credit. ``rate``
    None: no limit, nothing waits. The rate may change while the stream runs (a budget
    group's share)."""

    def __init__(self, rate: float | None, clock: Callable[[], float] = time.monotonic) -> None:
        self._clock = clock
        self._rate = rate
        self._tokens = self._burst()
        self._at = clock()
        self.on_change: Callable[[], None] = lambda: None

    @property
    def rate(self) -> float | None:
        return self._rate

    def set_rate(self, rate: float | None) -> None:
        """A new rate from now on (the credit so far was earned at the old one)."""
        self._refill()
        self._rate = rate
        self.on_change()

    def _burst(self) -> float:
        return max(MIN_BURST, self._rate * BURST_SECONDS) if self._rate is not None else 0.0

    def _refill(self) -> None:
        now = self._clock()
        if self._rate is not None:
            self._tokens = min(self._burst(), self._tokens + (now - self._at) * self._rate)
        self._at = now

    def spend(self, n: int) -> float:
        """Charge ``n`` bytes; the seconds until the balance is even again (0: not ahead)."""
        if self._rate is None:
            return 0.0
        self._refill()
        self._tokens -= n
        return -self._tokens / self._rate if self._tokens < 0 else 0.0

    async def take(self, n: int) -> None:
        """Wait until ``n`` bytes may go (for paths that write in a loop: S3 restore)."""
        wait = self.spend(n)
        while wait > 0:
            await asyncio.sleep(wait)
            wait = self.spend(0)


UNLIMITED = Throttle(None)


class Gate:
    """Pauses one channel's reading for several reasons at once (its receiver's flow control,
    the throttle, the uploader's parts in flight): reading resumes when none is left."""

    def __init__(self, pause: Callable[[], None], resume: Callable[[], None]) -> None:
        self._pause = pause
        self._resume = resume
        self._why: set[str] = set()

    def close(self, why: str) -> None:
        if not self._why:
            self._pause()
        self._why.add(why)

    def open(self, why: str) -> None:
        if why in self._why:
            self._why.discard(why)
            if not self._why:
                self._resume()

    def closed(self, why: str) -> bool:
        return why in self._why


class Metering:
    """Applies a Throttle to a channel read in callbacks: ``charge`` each chunk that arrived;
    when the stream is ahead by more than MAX_DEBT_SECONDS its reading pauses (the gate's
    ``throttle`` reason) until the debt is paid, looked at again when the rate changes."""

    def __init__(self, throttle: Throttle, gate: Gate) -> None:
        self.throttle = throttle
        self.gate = gate
        self._timer: asyncio.TimerHandle | None = None
        self.pauses = 0
        throttle.on_change = self._recheck

    def charge(self, n: int) -> None:
        wait = self.throttle.spend(n)
        if wait > MAX_DEBT_SECONDS and not self.gate.closed("throttle"):
            self.pauses += 1
            self.gate.close("throttle")
            self._arm(wait)

    def _arm(self, wait: float) -> None:
        if self._timer is not None:
            self._timer.cancel()
        self._timer = asyncio.get_running_loop().call_later(wait, self._recheck)

    def _recheck(self) -> None:
        if not self.gate.closed("throttle"):
            return
        wait = self.throttle.spend(0)
        if wait > 0:
            self._arm(wait)
        else:
            self._timer = None
            self.gate.open("throttle")

    def stop(self) -> None:
        if self._timer is not None:
            self._timer.cancel()
            self._timer = None
        self.throttle.on_change = lambda: None


# --------------------------------------------------------------------------- the process's streams


@dataclass
class _Entry:
    cap: int | None
    groups: tuple[str, ...]
    throttle: Throttle | None      # None: a direct stream, its rate fixed
    fixed: float | None = None


class Registry:
    """Every limited stream this process runs, so budget groups are shared among them (one per
    process: the daemon's runs share it too). Group budgets are the newest stream's inventory's."""

    def __init__(self) -> None:
        self._entries: dict[int, _Entry] = {}
        self._budgets: dict[str, int] = {}
        self._ids = itertools.count()

    @contextlib.asynccontextmanager
    async def stream(self, limit: Limit) -> AsyncIterator[Throttle]:
        """A throttle for one relay or S3 stream, its rate kept at its share while it runs."""
        if not limit.groups:
            yield Throttle(limit.rate) if limit.rate is not None else UNLIMITED
            return
        throttle = Throttle(limit.alone)
        key = self._add(limit, _Entry(limit.rate, tuple(g for g, _ in limit.groups), throttle))
        try:
            yield throttle
        finally:
            self._remove(key)

    @contextlib.asynccontextmanager
    async def fixed(self, limit: Limit) -> AsyncIterator[int | None]:
        """The rate a direct stream starts with (its share of its groups now), counted in its
        groups until it ends."""
        if not limit.groups:
            yield limit.rate
            return
        entry = _Entry(limit.rate, tuple(g for g, _ in limit.groups), None)
        key = self._add(limit, entry)
        try:
            yield None if entry.fixed is None else int(entry.fixed)
        finally:
            self._remove(key)

    def running(self, group: str) -> int:
        return sum(1 for e in self._entries.values() if group in e.groups)

    def _add(self, limit: Limit, entry: _Entry) -> int:
        self._budgets.update(limit.groups)
        key = next(self._ids)
        self._entries[key] = entry
        self._rebalance(new=key)
        return key

    def _remove(self, key: int) -> None:
        self._entries.pop(key, None)
        self._rebalance()

    def _rebalance(self, new: int | None = None) -> None:
        fixed = {k: e.fixed for k, e in self._entries.items() if e.throttle is None and e.fixed is not None}
        shares = fair_shares({k: (e.cap, e.groups) for k, e in self._entries.items()},
                             self._budgets, fixed)
        for key, entry in self._entries.items():
            rate = shares.get(key)
            if entry.throttle is not None:
                if rate != entry.throttle.rate:
                    entry.throttle.set_rate(rate)
            elif key == new:
                entry.fixed = rate


#: The one registry of this process.
REGISTRY = Registry()


# --------------------------------------------------------------------------- direct streams


def direct_limiter(limit: Limit, rate: int | None, source: str, tools: Iterable[str]) -> list[str] | None:
    """The stage that keeps a direct stream at ``rate`` on the source: ``pv -q -L RATE``, else
    ``mbuffer -q -r RATE`` (whichever the source's probe found); None without a limit. A source
    with neither cannot keep the limit: refused, before anything is sent."""
    if rate is None:
        return None
    have = set(tools)
    for tool in stream_filters.RATE_LIMITERS:
        if tool in have:
            return stream_filters.rate_limit_argv(tool, rate)
    raise TransferFailed(f"direct mode: {limit.describe(rate)} cannot be kept on {source}, which has neither "
                         f"{' nor '.join(stream_filters.RATE_LIMITERS)}; install one there or use relay "
                         "mode (--relay)", source)
