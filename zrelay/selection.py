"""Which datasets of a job's source tree the job covers: pure, one rule for every command.

A recursive job covers its source and every descendant, except:

* a dataset whose path relative to the job's source matches one of the job's ``exclude``
  globs (``fnmatch``, case-sensitive; ``*`` also crosses ``/``: ``*/cache`` matches
  ``a/cache`` and ``a/b/cache``), and
* a dataset whose ``zrelay:sync`` user property is ``false`` on the source (as syncoid
  honours ``syncoid:sync``), which also applies to a non-recursive job's only dataset.

An excluded dataset takes its whole subtree with it: a child cannot be received without its
parent, and "leave tank/tmp alone" means all of it. Sync, snapshot, prune, status and
s3-push all ask ``choose`` (or ``Selection.why``), so an excluded dataset is neither
replicated, snapshotted, pruned nor reported as lagging, and a dataset that appears under
the source is covered by the next run that lists it.

Target datasets are decided by their source twin's path: the same relative path under the
target root is excluded when the source's is (the property is read on the source only).
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass, field
from fnmatch import fnmatchcase

from zrelay.inventory.model import Job
from zrelay.zfs.commands import SYNC_PROPERTY
from zrelay.zfs.model import DatasetState

#: The value of SYNC_PROPERTY (``zrelay:sync``) that opts a source dataset and its subtree out.
OPT_OUT = "false"


@dataclass(frozen=True, slots=True)
class Excluded:
    """One dataset a job leaves alone, and why (``excluded by 'tmp'``, ``zrelay:sync=false``)."""

    dataset: str
    why: str
    top: str = ""      # the excluded ancestor it lies inside ("" when the rule matched itself)

    @property
    def because(self) -> str:
        """The reason as a dry run prints it, naming the excluded ancestor for a descendant."""
        return f"inside {self.top}, {self.why}" if self.top else self.why


def tree_order(names: Iterable[str]) -> list[str]:
    """Parents before their children, siblings by name (the order datasets are received in)."""
    return sorted(names, key=lambda n: n.split("/"))


def relative(dataset: str, base: str) -> str:
    """``dataset``'s path below ``base`` ("" for ``base`` itself)."""
    if dataset == base:
        return ""
    if not dataset.startswith(base + "/"):
        raise ValueError(f"{dataset!r} is not inside {base!r}")
    return dataset[len(base) + 1:]


def rule_for(dataset: str, base: str, patterns: Sequence[str], prop: str | None) -> str | None:
    """Why ``dataset`` itself is excluded (None: it is not): the first glob matching its path
    relative to ``base``, else its ``zrelay:sync`` value. ``base`` itself is never matched by a
    glob (its relative path is empty), only by the property."""
    rel = relative(dataset, base)
    if rel:
        for pattern in patterns:
            if fnmatchcase(rel, pattern):
                return f"excluded by {pattern!r}"
    if prop == OPT_OUT:
        return f"{SYNC_PROPERTY}={OPT_OUT}"
    return None


@dataclass(frozen=True, slots=True)
class Selection:
    """The datasets of one job's source listing it covers (``included``, parents first) and those
    it leaves alone (``excluded``, parents first, each with its reason)."""

    root: str
    included: tuple[str, ...]
    excluded: tuple[Excluded, ...] = ()
    base: str = ""                        # what the globs are relative to ("" = root)
    patterns: tuple[str, ...] = ()
    _out: frozenset[str] = field(default=frozenset(), repr=False)

    def keep(self, states: Mapping[str, DatasetState]) -> dict[str, DatasetState]:
        """The source listing without the excluded datasets."""
        return {name: st for name, st in states.items() if name not in self._out}

    def why(self, dataset: str) -> str | None:
        """Why a source dataset under the root is excluded (None: it is covered). A dataset the
        listing did not show is decided by the globs (its own path and its ancestors') and by its
        listed ancestors' property."""
        if dataset != self.root and not dataset.startswith(self.root + "/"):
            return None
        base = self.base or self.root
        path = dataset
        chain: list[str] = []
        while True:
            chain.append(path)
            if path == self.root or "/" not in path:
                break
            path = path.rsplit("/", 1)[0]
        for name in reversed(chain):   # from the root down: the top excluded ancestor says why
            if name in self._out:
                return next(e.why for e in self.excluded if e.dataset == name)
            rule = rule_for(name, base, self.patterns, None)
            if rule is not None:
                return rule
        return None

    def target_why(self, target_root: str, dataset: str) -> str | None:
        """``why`` for a target dataset: decided by its source twin (same path below the roots)."""
        if dataset != target_root and not dataset.startswith(target_root + "/"):
            return None
        return self.why(self.root + dataset[len(target_root):])

    def keep_target(self, target_root: str, states: Mapping[str, DatasetState]) -> dict[str, DatasetState]:
        """A target listing without the twins of excluded source datasets."""
        return {name: st for name, st in states.items() if self.target_why(target_root, name) is None}

    @property
    def everything(self) -> bool:
        """True when nothing is excluded."""
        return not self.excluded

    def cover(self) -> list[tuple[str, bool]]:
        """(dataset, recursive) pairs whose snapshots are exactly the included datasets: a
        dataset with no excluded descendant is taken with its subtree (``-r``), others alone."""
        out: list[tuple[str, bool]] = []
        whole: set[str] = set()
        for name in self.included:
            parent = name.rsplit("/", 1)[0] if "/" in name else ""
            if parent in whole:
                whole.add(name)
                continue
            clean = not any(e.dataset.startswith(name + "/") for e in self.excluded)
            if clean:
                whole.add(name)
            out.append((name, clean))
        return out


def choose(states: Mapping[str, DatasetState], root: str, *, recursive: bool,
           exclude: Sequence[str] = (), base: str = "") -> Selection:
    """The one decision: which existing datasets of ``states`` under ``root`` a job covers.

    ``exclude`` are the job's globs, relative to ``base`` (the job's source as written; a job
    narrowed to a descendant keeps its original base so its globs mean the same); a
    non-recursive job covers ``root`` alone and has no globs. Datasets absent from the listing
    are not returned.
    """
    root = root.rstrip("/")
    base = (base or root).rstrip("/")
    patterns = tuple(exclude) if recursive else ()
    names = tree_order(n for n, st in states.items() if st.exists
                       and (n == root or (recursive and n.startswith(root + "/"))))
    included: list[str] = []
    excluded: list[Excluded] = []
    tops: dict[str, Excluded] = {}
    for name in names:
        parent = name.rsplit("/", 1)[0] if name != root and "/" in name else None
        top = tops.get(parent) if parent is not None else None
        if top is not None:
            entry = Excluded(name, top.why, top.top or top.dataset)
        else:
            rule = rule_for(name, base, patterns, states[name].sync_property)
            if rule is None:
                included.append(name)
                continue
            entry = Excluded(name, rule)
        excluded.append(entry)
        tops[name] = entry
    return Selection(root, tuple(included), tuple(excluded), base, patterns,
                     frozenset(e.dataset for e in excluded))


def of_job(job: Job, states: Mapping[str, DatasetState]) -> Selection:
    """``choose`` for ``job`` over its source listing ``states``."""
    return choose(states, job.source.dataset, recursive=job.recursive, exclude=job.exclude,
                  base=job.exclude_base)
