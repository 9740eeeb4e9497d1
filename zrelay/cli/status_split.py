"""``zrelay status`` of a large fleet from several processes, one share of the source hosts each.

Why: asking a host is CPU work in the asking process (the SSH handshake, the listings'
parsing, a plan and a report per target), and one process uses one core. A status of 500
hosts spends about 12 s of one core; split by source host over the cores it has, each
process connects to its own share of the hosts (and their targets) and plans its own rows.
The inventory is read once, before the processes fork; the rows come back in the order one
process would give them.
"""

from __future__ import annotations

import multiprocessing
import multiprocessing.connection
import os
import pickle
import signal
from collections.abc import Callable, Sequence
from typing import TypeVar

from zrelay.errors import ZrelayError
from zrelay.inventory import Job
from zrelay.status.report import targets_of

#: Hosts each extra process must have to be worth its start (a fork, imports already done, its
#: own connections): below this many source hosts per process, fewer processes.
MIN_HOSTS_PER_PROCESS = 100
MAX_PROCESSES = 8

T = TypeVar("T")


def process_count(source_hosts: int, cpus: int, asked: int | None = None) -> int:
    """How many processes a status of jobs from ``source_hosts`` hosts uses: ``asked`` when
    given (``--processes``), else one per core up to MAX_PROCESSES while each keeps at least
    MIN_HOSTS_PER_PROCESS source hosts."""
    if asked is not None:
        return max(1, min(asked, max(source_hosts, 1)))
    return max(1, min(cpus, MAX_PROCESSES, source_hosts // MIN_HOSTS_PER_PROCESS))


def split_by_source(jobs: Sequence[Job], parts: int) -> list[list[Job]]:
    """The jobs in at most ``parts`` groups of whole source hosts (a host's connection, listings
    and limits stay in one process), the hosts in inventory order, each group about an equal
    share of the targets. Jobs keep their order within a group."""
    by_host: dict[str, list[Job]] = {}
    for job in jobs:
        by_host.setdefault(job.source.host, []).append(job)
    total = sum(len(j.targets) for j in jobs)
    groups: list[list[Job]] = [[]]
    done = 0
    for host_jobs in by_host.values():
        share = total * len(groups) / parts
        if groups[-1] and len(groups) < parts and done >= share:
            groups.append([])
        groups[-1].extend(host_jobs)
        done += sum(len(j.targets) for j in host_jobs)
    position = {id(job): i for i, job in enumerate(jobs)}
    return [sorted(g, key=lambda job: position[id(job)]) for g in groups if g]


def collect_split(collect: Callable[[list[Job]], list[T]], jobs: Sequence[Job], parts: int,
                  key: Callable[[T], tuple[str, str]]) -> list[T]:
    """``collect(jobs)`` in ``parts`` forked processes (split_by_source), the answers (a row each,
    with what the process made of it) merged in the order of ``targets_of(jobs)`` by ``key``
    (job name, target); one process (this one) when there is one part."""
    groups = split_by_source(jobs, parts)
    if len(groups) <= 1:
        return collect(list(jobs))
    ctx = multiprocessing.get_context("fork")
    children: list[tuple[multiprocessing.process.BaseProcess, multiprocessing.connection.Connection]] = []
    try:
        for group in groups:
            receive, send = ctx.Pipe(duplex=False)
            proc = ctx.Process(target=_child, args=(collect, group, send), daemon=True)
            proc.start()
            send.close()
            children.append((proc, receive))
        answers: list[T] = []
        for child, receive in children:
            answers += _answer(child, receive)
    finally:
        for child, receive in children:
            receive.close()
            if child.is_alive():
                child.kill()
            child.join()
    order = {(job.name, str(target)): i for i, (job, target) in enumerate(targets_of(jobs))}
    return sorted(answers, key=lambda answer: order.get(key(answer), len(order)))


def _answer(child: multiprocessing.process.BaseProcess, receive: multiprocessing.connection.Connection) -> list[T]:
    try:
        kind, value = receive.recv()
    except EOFError:
        child.join()
        raise ZrelayError(f"a status process ended without an answer (exit {child.exitcode})") from None
    if kind == "rows":
        return list(value)
    if isinstance(value, BaseException):
        raise value
    raise ZrelayError(str(value))


def _child(collect: Callable[[list[Job]], list[T]], group: list[Job],
           send: multiprocessing.connection.Connection) -> None:
    """In the forked process: the rows of ``group``, or the error, sent back as one message.
    Ctrl-C ends it quietly (the parent reports the interruption)."""
    signal.signal(signal.SIGINT, signal.SIG_DFL)
    try:
        answer: tuple[str, object] = ("rows", collect(group))
    except Exception as exc:   # noqa: BLE001  (sent to the parent, which raises it there)
        try:
            pickle.dumps(exc)
            answer = ("error", exc)
        except Exception:   # noqa: BLE001  (an exception that cannot travel: its text does)
            answer = ("error", str(exc) or type(exc).__name__)
    send.send(answer)
    send.close()
    os._exit(0)   # nothing of the parent's (atexit handlers, open files) runs twice
