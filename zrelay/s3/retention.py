"""S3 Object Lock on prune: what a plan would delete that the bucket still retains.

A target with ``object_lock`` writes every object with a retention date (zrelay.s3.store). S3
refuses to delete an object before that date, so a prune first asks the bucket (one
``GetObjectRetention`` per chain: the manifest of its newest send, written last, is retained
longest) and keeps what is still locked, saying until when; the pure planner
(zrelay.s3.chains.plan_prune ``locked``) does the keeping, so the dry run shows it.
"""

from __future__ import annotations

import asyncio
import time
from collections.abc import Iterable

from zrelay.s3.chains import PrunePlan, SendRecord
from zrelay.s3.store import Store


def locked_reason(until: float, mode: str) -> str:
    """Why a chain is kept, with the time it may go."""
    when = time.strftime("%Y-%m-%d %H:%M UTC", time.gmtime(until))
    return f"locked until {when} (S3 Object Lock, {mode}): S3 refuses to delete it before then"


def _newest_key(sends: Iterable[SendRecord]) -> str | None:
    """The key written last among ``sends``: the newest send's manifest (else any of its objects)."""
    newest = max(sends, key=lambda s: s.newest_modified, default=None)
    if newest is None:
        return None
    keys = newest.keys
    return keys[0] if keys else None


async def locked(store: Store, plan: PrunePlan, now: float | None = None) -> dict[str, str]:
    """Chain root / orphan send ref → why it stays, for what ``plan`` deletes that is still
    retained; empty when the target writes no retention (``object_lock`` unset)."""
    lock = store.target.object_lock
    if lock is None:
        return {}
    now = time.time() if now is None else now
    doomed: list[tuple[str, list[SendRecord]]] = [(d.chain.root, d.chain.sends) for d in plan.chains if d.delete]
    doomed += [(o.ref, [o]) for o in plan.orphans_deleted]
    out: dict[str, str] = {}
    for name, sends in doomed:
        key = _newest_key(sends)
        if key is None:
            continue
        until = await asyncio.to_thread(store.retained_until, key)
        if until is not None and until > now:
            out[name] = locked_reason(until, lock.mode)
    return out
