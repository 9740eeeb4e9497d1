"""Coverage and RPO: which datasets no job protects, and which targets are older than their RPO.

Pure (no I/O): ``zrelay audit`` lists the hosts' datasets and inspects the targets, then asks
this module. The rule is kept simple so that a person can check it by hand: on every host, each
filesystem or volume is

- *protected* when it is a job's source, or inside the source of a recursive job, and the job
  does not leave it out (its ``exclude:`` globs, ``zrelay:sync=false`` on it or above it: the
  same decision a sync makes, zrelay.selection);
- a *replica* when it is a job's host target, or inside the target of a recursive job (a
  replica is another dataset's copy: not reported as unprotected);
- *unprotected* otherwise. Pool roots and parents that only hold children count as datasets
  too: a parent nobody replicates is listed, so that data written into it is not missed.

Only a job's source, its ``recursive`` flag, its exclusions and its host targets matter:
``snapshots:`` filters, lifecycle and S3 targets do not change which datasets a job covers.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Iterable, Mapping, Sequence

from zrelay.inventory.model import Endpoint, Job
from zrelay.selection import of_job
from zrelay.status.report import LocationStatus
from zrelay.zfs.model import DatasetState

#: One host's listing: its datasets, or each with its ``zrelay:sync`` value (None: not set).
Listing = Sequence[str] | Mapping[str, str | None]

PROTECTED = "protected"
REPLICA = "replica"
UNPROTECTED = "unprotected"


@dataclass(frozen=True)
class Cover:
    """One dataset (or subtree, when ``recursive``) that a job covers, and how."""

    dataset: str
    recursive: bool
    kind: str       # PROTECTED or REPLICA
    job: str
    included: frozenset[str] | None = None   # a source's datasets the job takes (None: its whole subtree)


def _within(dataset: str, top: str, recursive: bool) -> bool:
    return dataset == top or (recursive and dataset.startswith(top + "/"))


def _states(listing: Listing) -> dict[str, DatasetState]:
    values = listing if isinstance(listing, Mapping) else dict.fromkeys(listing)
    return {name: DatasetState(name, sync_property=value) for name, value in values.items()}


def covers(jobs: Iterable[Job], listings: Mapping[str, Listing] | None = None) -> dict[str, list[Cover]]:
    """Per host: what each job's source and host targets cover. With the source host's listing,
    a source covers what the job takes of it (zrelay.selection), not its excluded datasets."""
    result: dict[str, list[Cover]] = {}
    states = {host: _states(listing) for host, listing in (listings or {}).items()}
    for job in jobs:
        listed = states.get(job.source.host)
        included = frozenset(of_job(job, listed).included) if listed is not None else None
        result.setdefault(job.source.host, []).append(
            Cover(job.source.dataset, job.recursive, PROTECTED, job.name, included))
        for target in job.targets:
            if isinstance(target, Endpoint):
                result.setdefault(target.host, []).append(
                    Cover(target.dataset, job.recursive, REPLICA, job.name))
    return result


def classify(dataset: str, host_covers: Sequence[Cover]) -> str:
    """PROTECTED, REPLICA or UNPROTECTED; a dataset that is both a source and a target (a
    cascade: nas1 → nas2 → vault) is protected."""
    kinds = {c.kind for c in host_covers if _within(dataset, c.dataset, c.recursive)
             and (c.included is None or dataset in c.included)}
    if PROTECTED in kinds:
        return PROTECTED
    return REPLICA if REPLICA in kinds else UNPROTECTED


@dataclass(frozen=True)
class HostCoverage:
    """One host's datasets sorted into the three kinds (each sorted by name)."""

    host: str
    protected: tuple[str, ...]
    replicas: tuple[str, ...]
    unprotected: tuple[str, ...]


def coverage(listings: Mapping[str, Listing], jobs: Iterable[Job]) -> dict[str, HostCoverage]:
    """Per host of ``listings`` (host → every filesystem and volume on it, with its
    ``zrelay:sync`` value where listed): its datasets by kind."""
    by_host = covers(jobs, listings)
    result: dict[str, HostCoverage] = {}
    for host, datasets in listings.items():
        kinds: dict[str, list[str]] = {PROTECTED: [], REPLICA: [], UNPROTECTED: []}
        for dataset in sorted(set(datasets)):
            kinds[classify(dataset, by_host.get(host, ()))].append(dataset)
        result[host] = HostCoverage(host, tuple(kinds[PROTECTED]), tuple(kinds[REPLICA]),
                                    tuple(kinds[UNPROTECTED]))
    return result


@dataclass(frozen=True)
class Breach:
    """A job's target whose newest common snapshot with the source is older than the job's RPO."""

    job: str
    source: str
    target: str
    state: str
    rpo_seconds: int
    base_age_seconds: int | None   # None: no common base at all
    common_base: str | None


def breaches(rows: Iterable[LocationStatus]) -> list[Breach]:
    """The rows whose ``rpo_breach`` is true (status rows carry the rule: report.rpo_breach)."""
    return [Breach(r.job, r.source, r.target, r.state, r.rpo_seconds, r.base_age_seconds, r.common_base)
            for r in rows if r.rpo_breach and r.rpo_seconds is not None]
