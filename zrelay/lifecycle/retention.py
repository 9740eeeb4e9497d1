"""Which items a keep policy keeps, and why (pure).

An *item* is anything dated: a snapshot, a bookmark, a stored S3 chain. The caller passes
(key, creation) pairs and gets back the kept keys, each with the reasons a user reads in
``zrelay prune`` ("one of the 3 newest", "newest of its day 2026-12-05 (daily 14)").
"""

from __future__ import annotations

import datetime as _dt
from bisect import bisect_right
from collections.abc import Hashable, Iterable, Sequence
from functools import lru_cache
from operator import itemgetter
from typing import Any, Protocol, TypeVar

from zrelay.inventory.policy import BUCKETS, KeepPolicy


class _Key(Hashable, Protocol):
    """A key that can be compared (ties on creation are broken by key order)."""

    def __lt__(self, other: Any, /) -> bool: ...


K = TypeVar("K", bound=_Key)

#: Duration units as the inventory spells them (``30s``, ``15m``, ``1h``, ``1d``, ``1w``).
_SPANS = (("w", 604800), ("d", 86400), ("h", 3600), ("m", 60))


def span_text(seconds: int) -> str:
    """A duration as a user writes it in the inventory, in the largest unit that divides it:
    ``86400`` → ``1d``, ``5400`` → ``90m``."""
    for unit, size in _SPANS:
        if seconds and seconds % size == 0:
            return f"{seconds // size}{unit}"
    return f"{seconds}s"


_UNIT = {"hourly": "hour", "daily": "day", "weekly": "week", "monthly": "month", "yearly": "year"}
_EPOCH_ORDINAL = _dt.date(1970, 1, 1).toordinal()


@lru_cache(maxsize=1 << 16)
def _date(day: int) -> _dt.date:
    """The UTC date of day number ``day`` since 1970-01-01 (cached: many items share a day)."""
    return _dt.date.fromordinal(_EPOCH_ORDINAL + day)


def _period_start(kind: str, ts: int) -> int:
    """When the period (UTC hour, day, ISO week, month, year) holding ``ts`` began."""
    if kind == "hourly":
        return ts - ts % 3600
    day = ts // 86400
    if kind == "daily":
        return day * 86400
    if kind == "weekly":
        return (day - (day + 3) % 7) * 86400     # back to Monday; 1970-01-01 was a Thursday
    date = _date(day)
    first = date.replace(day=1) if kind == "monthly" else date.replace(month=1, day=1)
    return (first.toordinal() - _EPOCH_ORDINAL) * 86400


@lru_cache(maxsize=1 << 14)
def _bucket_reason(kind: str, start: int, count: int) -> str:
    """The reason a bucket keeps an item of the period that began at ``start`` (cached: every
    dataset of a recursive job has the same periods)."""
    return f"newest of its {_UNIT[kind]} {period_label(kind, start)} ({kind} {count})"


def period_label(kind: str, ts: int) -> str:
    """How a user names the period of ``ts``: ``2026-12-05 13:00``, ``2026-12-05``, ``2026-W49``
    (ISO week, whose year can differ from the calendar year around new year), ``2026-12``,
    ``2026``."""
    moment = _dt.datetime.fromtimestamp(ts, _dt.UTC)
    if kind == "hourly":
        return moment.strftime("%Y-%m-%d %H:00")
    if kind == "daily":
        return moment.strftime("%Y-%m-%d")
    if kind == "weekly":
        iso = moment.isocalendar()
        return f"{iso.year}-W{iso.week:02d}"
    if kind == "monthly":
        return moment.strftime("%Y-%m")
    return moment.strftime("%Y")


def keep_by_policy(items: Iterable[tuple[K, int]], policy: KeepPolicy) -> dict[K, tuple[str, ...]]:
    """The keys ``policy`` keeps, each with the reasons it is kept (keys it drops are absent).

    How a keep policy reads:

    * every rule keeps some items, and an item is kept when any rule keeps it;
    * ``within D`` keeps every item created at most D before the newest item of this side
      (not before now: a side that stopped getting snapshots keeps its last ones);
    * ``last N`` keeps the N newest items;
    * ``hourly N``, ``daily N``, ``weekly N``, ``monthly N``, ``yearly N`` keep the newest item
      of each of the last N hours, days, ISO weeks (Monday to Sunday), months or years that
      have an item, counted back from the newest item; periods without an item are skipped,
      not counted (so a gap in snapshots does not use up the policy). Periods are UTC.

    Items are ordered by creation time; items created in the same second are ordered by key
    (callers pass keys in createtxg order), so the result never depends on the input order.
    """
    pairs = sorted(items, key=itemgetter(0))
    kept = keep_indexes([created for _, created in pairs], policy)
    return {pairs[i][0]: reasons for i, reasons in kept.items()}


def keep_indexes(creations: Sequence[int], policy: KeepPolicy) -> dict[int, tuple[str, ...]]:
    """keep_by_policy for items that are their index in ``creations`` (same creation: the
    higher index is the newer). Sorting is cheap when ``creations`` already ascends, as a
    listing in createtxg order does: the prune planner calls this directly."""
    if not creations:
        return {}
    # newest first; equal creations keep their descending index order (sort is stable)
    ordered = sorted(range(len(creations) - 1, -1, -1), key=creations.__getitem__, reverse=True)
    kept: dict[int, list[str]] = {}
    if policy.within is not None:
        since = creations[ordered[0]] - policy.within
        why = f"within {span_text(policy.within)} of the newest"
        for i in ordered:
            if creations[i] < since:
                break
            kept.setdefault(i, []).append(why)
    if policy.last is not None and policy.last > 0:
        why = f"one of the {policy.last} newest"
        for i in ordered[:policy.last]:
            kept.setdefault(i, []).append(why)
    buckets = policy.buckets()
    if buckets:
        older = [-creations[i] for i in ordered]        # ascending, for bisect
        for kind, count in buckets:
            at, found = 0, 0
            while at < len(ordered) and found < count:
                i = ordered[at]
                created = creations[i]
                start = _period_start(kind, created)
                kept.setdefault(i, []).append(_bucket_reason(kind, start, count))
                found += 1
                # skip the rest of this period: on to the first item created before it began
                at = bisect_right(older, -start, at + 1)
    return {i: tuple(reasons) for i, reasons in kept.items()}


def describe_policy(policy: KeepPolicy) -> str:
    """The policy in one line, its rules in the order they are read: ``within 1d, last 3,
    24 hourly, 14 daily`` (``keeps nothing`` for a policy without a rule)."""
    parts: list[str] = []
    if policy.within is not None:
        parts.append(f"within {span_text(policy.within)}")
    if policy.last is not None:
        parts.append(f"last {policy.last}")
    parts.extend(f"{n} {kind}" for kind, n in policy.buckets())
    return ", ".join(parts) if parts else "keeps nothing"


__all__ = ["BUCKETS", "describe_policy", "keep_by_policy", "keep_indexes", "period_label", "span_text"]
