"""``status`` split over processes by source host (zrelay.cli.status_split): every job asked once, a
host's jobs in one process, the rows back in one process's order, a process's error raised here."""

from __future__ import annotations

import os

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from zrelay.cli.status_split import collect_split, process_count, split_by_source
from zrelay.errors import UsageError
from zrelay.inventory.model import Endpoint, Job, S3Ref
from zrelay.status.report import LocationStatus, targets_of


def jobs_of(sources: list[tuple[int, int]]) -> list[Job]:
    """A job per (source host number, number of targets), named in order."""
    return [Job(f"j{i}", Endpoint(f"h{host}", f"tank/d{i}"),
                targets=tuple(Endpoint(f"b{t}", f"backup/d{i}") for t in range(1, targets)) + (S3Ref("off"),))
            for i, (host, targets) in enumerate(sources)]


@settings(max_examples=200, deadline=None)
@given(st.lists(st.tuples(st.integers(0, 30), st.integers(1, 3)), max_size=60), st.integers(1, 8))
def test_every_job_once_whole_hosts_and_at_most_the_parts(sources: list[tuple[int, int]], parts: int) -> None:
    jobs = jobs_of(sources)
    groups = split_by_source(jobs, parts)
    assert len(groups) <= parts and all(groups)
    assert sorted(j.name for g in groups for j in g) == sorted(j.name for j in jobs)
    hosts = [{j.source.host for j in g} for g in groups]
    assert all(not (a & b) for i, a in enumerate(hosts) for b in hosts[i + 1:]), "a host in two processes"
    for g in groups:   # a group keeps the inventory's order
        assert [jobs.index(j) for j in g] == sorted(jobs.index(j) for j in g)


def test_groups_share_the_targets_about_equally() -> None:
    jobs = jobs_of([(h, 2) for h in range(500) for _ in range(20)])
    groups = split_by_source(jobs, 2)
    assert [sum(len(j.targets) for j in g) for g in groups] == [10_000, 10_000]


def test_how_many_processes() -> None:
    assert process_count(500, 2) == 2
    assert process_count(500, 16) == 5          # at least 100 source hosts each
    assert process_count(2000, 64) == 8         # never more than 8 unless asked
    assert process_count(50, 2) == 1
    assert process_count(50, 2, asked=3) == 3
    assert process_count(2, 2, asked=4) == 2    # never more than the source hosts


def fake_rows(jobs: list[Job]) -> list[LocationStatus]:
    """A row per target, its state naming the process that made it."""
    return [LocationStatus(job.name, str(job.source), str(t), f"pid {os.getpid()}") for job, t in targets_of(jobs)]


def by_target(row: LocationStatus) -> tuple[str, str]:
    return row.job, row.target


def test_rows_come_back_in_one_process_order_from_several_processes() -> None:
    jobs = jobs_of([(h % 7, 1 + h % 3) for h in range(40)])
    rows = collect_split(fake_rows, jobs, 3, key=by_target)
    assert [(r.job, r.target) for r in rows] == [(j.name, str(t)) for j, t in targets_of(jobs)]
    assert len({r.state for r in rows}) == 3 and f"pid {os.getpid()}" not in {r.state for r in rows}
    assert {r.state for r in collect_split(fake_rows, jobs, 1, key=by_target)} == {f"pid {os.getpid()}"}, "one part: no fork"


def failing(jobs: list[Job]) -> list[LocationStatus]:
    if any(j.source.host == "h3" for j in jobs):
        raise UsageError("h3: cannot be asked")
    return fake_rows(jobs)


def test_an_error_in_a_process_is_raised_here() -> None:
    with pytest.raises(UsageError, match="h3: cannot be asked"):
        collect_split(failing, jobs_of([(h, 1) for h in range(6)]), 3, key=by_target)


def dies(jobs: list[Job]) -> list[LocationStatus]:
    os._exit(3)


def test_a_process_that_dies_is_an_error_not_a_hang() -> None:
    with pytest.raises(Exception, match="ended without an answer"):
        collect_split(dies, jobs_of([(h, 1) for h in range(4)]), 2, key=by_target)
