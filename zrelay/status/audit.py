"""Coverage and RPO: which datasets no job protects, and which targets are older than their RPO.

Pure (no I/O): ``zrelay audit`` lists the hosts' datasets and inspects the targets, then asks
this module. The rule is kept simple so that a person can check it by hand: on every host, each
filesystem or volume is

- *protected* when it is a job's source, or inside the source of a recursive job;
- a *replica* when it is a job's host target, or inside the target of a recursive job (a
  replica is another dataset's copy: not reported as unprotected);
- *unprotected* otherwise. Pool roots and parents that only hold children count as datasets
  too: a parent nobody replicates is listed, so that data written into it is not missed.

Only a job's source, its ``recursive`` flag and its host targets matter: ``snapshots:``
filters, lifecycle and S3 targets do not change which datasets a job covers.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Iterable, Mapping, Sequence

from zrelay.inventory.model import Endpoint, Job
from zrelay.status.report import LocationStatus

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


def _within(dataset: str, top: str, recursive: bool) -> bool:
    return dataset == top or (recursive and dataset.startswith(top + "/"))


def covers(jobs: Iterable[Job]) -> dict[str, list[Cover]]:
    """Per host: what each job's source and host targets cover."""
    result: dict[str, list[Cover]] = {}
    for job in jobs:
        result.setdefault(job.source.host, []).append(
            Cover(job.source.dataset, job.recursive, PROTECTED, job.name))
        for target in job.targets:
            if isinstance(target, Endpoint):
                result.setdefault(target.host, []).append(
                    Cover(target.dataset, job.recursive, REPLICA, job.name))
    return result


def classify(dataset: str, host_covers: Sequence[Cover]) -> str:
    """PROTECTED, REPLICA or UNPROTECTED; a dataset that is both a source and a target (a
    cascade: nas1 → nas2 → vault) is protected."""
    kinds = {c.kind for c in host_covers if _within(dataset, c.dataset, c.recursive)}
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


def coverage(listings: Mapping[str, Sequence[str]], jobs: Iterable[Job]) -> dict[str, HostCoverage]:
    """Per host of ``listings`` (host → every filesystem and volume on it): its datasets by kind."""
    by_host = covers(jobs)
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
