"""Anchors: what keeps a replication chain alive between runs. Pure functions, no I/O.

An incremental send needs the newest common snapshot (the *base*) on both
sides. Two things protect it from other tools' pruning:

* a **bookmark** of every snapshot zrelay sends, on the source
  (``ds#name``, same GUID, no space): when the snapshot itself is destroyed,
  ``zfs send -i ds#name`` still works (see zrelay.plan);
* a **hold** on the base, on the source and on the target, tagged per job and
  target (``zrelay:JOB:HOST:DATASET``, see hold_tag): ``zfs destroy`` of a
  held snapshot fails. The hold moves to the new base after every transfer,
  and ``zrelay release`` removes a job's holds.

Nothing here runs a command: these functions decide which names to
bookmark, hold and release; the engine runs the argvs from zrelay.zfs.commands.
"""

from __future__ import annotations

import hashlib
import re
from collections.abc import Iterable, Mapping
from dataclasses import dataclass

from zrelay.plan import common_base
from zrelay.zfs.model import DatasetState, Snapshot

TAG_PREFIX = "zrelay"
#: ZFS limits a hold tag to 255 bytes; longer tags end in a digest instead.
MAX_TAG = 255
MAX_PREFIX = 128
_UNSAFE = re.compile(r"[^A-Za-z0-9_.:-]")


def _clean(text: str) -> str:
    return _UNSAFE.sub("_", text)


def _digest(text: str) -> str:
    return hashlib.sha256(text.encode()).hexdigest()[:16]


def job_tag_prefix(job: str) -> str:
    """Every hold of job ``job`` starts with this (``zrelay release`` matches on it).

    At most MAX_PREFIX characters (a long job name ends in a digest), so a
    full tag always keeps its job's prefix.
    """
    prefix = f"{TAG_PREFIX}:{_clean(job)}:"
    if len(prefix) > MAX_PREFIX:
        prefix = f"{prefix[:MAX_PREFIX - 18]}-{_digest(job)}:"
    return prefix


def hold_tag(job: str, target: str) -> str:
    """The hold tag of one job towards one target (``host:dataset``).

    Per target, not per job: a job with two targets has two bases on its
    source, and moving one target's hold must not free the other's base.
    """
    tag = job_tag_prefix(job) + _clean(target)
    if len(tag) > MAX_TAG:
        tag = f"{tag[:MAX_TAG - 17]}-{_digest(tag)}"
    return tag


def bookmark_for(snapshot: Snapshot) -> str:
    """The bookmark zrelay makes of a sent snapshot: same dataset, same name (``ds#name``)."""
    return f"{snapshot.dataset}#{snapshot.name}"


def bookmarks_to_create(states: Mapping[str, DatasetState],
                        snapshots: Iterable[Snapshot]) -> list[tuple[str, str]]:
    """(snapshot, bookmark) pairs for the given snapshots that have no bookmark yet.

    A bookmark with the snapshot's GUID under any name is enough; a bookmark
    that already uses the name for another GUID (the name was reused) is left
    alone and no bookmark is made.
    """
    out: list[tuple[str, str]] = []
    for snap in snapshots:
        state = states.get(snap.dataset)
        marks = state.bookmarks if state is not None else ()
        if any(b.guid == snap.guid or b.name == snap.name for b in marks):
            continue
        out.append((snap.full_name, bookmark_for(snap)))
    return out


@dataclass(frozen=True)
class Secured:
    """The bases to secure after a transfer: (source snapshot, target snapshot) per dataset, and
    the datasets that exist on both sides (where the job's holds are moved)."""

    pairs: tuple[tuple[Snapshot, Snapshot], ...]
    source_scope: tuple[str, ...]
    target_scope: tuple[str, ...]


def secured_bases(src_states: Mapping[str, DatasetState], dst_states: Mapping[str, DatasetState],
                  source_root: str, target_root: str) -> Secured:
    """The newest common snapshot of every dataset present on both sides (a bookmark base is
    not one: it holds no data to keep). The same function plans what a dry run shows, from
    the states the plan expects, and what runs, from the states listed after the transfer."""
    pairs: list[tuple[Snapshot, Snapshot]] = []
    src_scope: list[str] = []
    dst_scope: list[str] = []
    for name, sstate in src_states.items():
        tname = target_root + name[len(source_root):]
        tstate = dst_states.get(tname)
        if not sstate.exists or tstate is None or not tstate.exists:
            continue
        src_scope.append(name)
        dst_scope.append(tname)
        found = common_base(sstate, tstate)
        if found is not None and isinstance(found[0], Snapshot):
            pairs.append((found[0], found[1]))
    return Secured(tuple(pairs), tuple(src_scope), tuple(dst_scope))


@dataclass(frozen=True)
class HoldMoves:
    """Hold ``tag`` on ``hold`` (snapshots that lack it), release it from ``release``."""

    tag: str
    hold: tuple[str, ...] = ()
    release: tuple[str, ...] = ()

    @property
    def empty(self) -> bool:
        return not (self.hold or self.release)


def hold_moves(tag: str, bases: Iterable[str], holds: Iterable[tuple[str, str]],
               scope: Iterable[str]) -> HoldMoves:
    """Move hold ``tag`` so that it sits exactly on ``bases`` (full snapshot names).

    ``holds`` are (snapshot, tag) pairs as listed by ``zfs holds``; ``scope``
    the datasets concerned: the tag is released from every other snapshot of
    those datasets, so a base left behind by an interrupted run is freed too.
    Holding comes first (see the engine): a chain is never without its hold.
    """
    want = list(dict.fromkeys(bases))
    datasets = set(scope)
    have = {snap for snap, t in holds if t == tag}
    hold = tuple(s for s in want if s not in have)
    release = tuple(sorted(s for s in have
                           if s not in want and s.partition("@")[0] in datasets))
    return HoldMoves(tag, hold, release)


def job_holds(prefix: str, holds: Iterable[tuple[str, str]]) -> dict[str, list[str]]:
    """Tag → snapshots for every hold whose tag starts with ``prefix`` (see job_tag_prefix)."""
    out: dict[str, list[str]] = {}
    for snap, tag in holds:
        if tag.startswith(prefix):
            out.setdefault(tag, []).append(snap)
    return out
