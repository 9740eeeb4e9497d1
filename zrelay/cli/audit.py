"""``zrelay audit``: the datasets no job protects, and the targets older than their job's RPO.

Every host of the inventory (or those the patterns name) lists its filesystems and volumes;
zrelay.status.audit sorts them into protected, replicas and unprotected, by every job of the
inventory (a dataset is protected whichever host's pattern was given). The targets of the jobs
touching those hosts are inspected as ``status`` inspects them, and each whose newest common
snapshot is older than the job's ``rpo`` (or that has none) is listed. Exit 1 when anything is
unprotected, past its RPO or could not be asked (a host that did not answer may hold anything).
"""

from __future__ import annotations

import argparse
import asyncio
import json
import sys
from dataclasses import asdict, dataclass

from zrelay.cli import layout, output
from zrelay.cli.layout import Column, Line, cell
from zrelay.engine import Fleet
from zrelay.errors import EXIT_JOB_FAILED, EXIT_OK, UsageError, ZrelayError
from zrelay.inventory import Inventory, Job, load_inventory
from zrelay.inventory.model import Endpoint, suggest
from zrelay.inventory.values import duration_text
from zrelay.status.audit import Breach, HostCoverage, breaches, coverage
from zrelay.status.collect import collect_status
from zrelay.status.hosts import list_datasets
from zrelay.status.report import LocationStatus
from zrelay.units import human_seconds

#: States whose rows say nothing about the RPO: the target was not inspected.
NOT_INSPECTED = frozenset({"unreachable", "error"})


def register(sub: argparse._SubParsersAction) -> None:
    p = sub.add_parser("audit", help="datasets no job protects, and targets older than their RPO",
                       description="List, per host, every filesystem and volume that is neither a job's "
                                   "source (or inside a recursive one) nor a target (or inside one), and "
                                   "every target whose newest common snapshot is older than its job's rpo.")
    p.add_argument("patterns", nargs="*", metavar="PATTERN", help="host or group (default: every host)")
    p.add_argument("--json", action="store_true", help="print one JSON object (hosts, rpo_breaches, unknown)")
    p.set_defaults(handler=run)


@dataclass(frozen=True)
class HostResult:
    """One host's coverage, or why it could not be listed."""

    host: str
    coverage: HostCoverage | None
    error: str | None = None


@dataclass(frozen=True)
class Audit:
    hosts: list[HostResult]
    breaches: list[Breach]
    unknown: list[LocationStatus]   # targets with an RPO that could not be inspected


def select_hosts(inventory: Inventory, patterns: list[str]) -> list[str]:
    """The hosts named by ``patterns`` (hosts or groups), in inventory order; every host without."""
    if not patterns:
        return list(inventory.hosts)
    chosen: set[str] = set()
    for pattern in patterns:
        if pattern in inventory.hosts:
            chosen.add(pattern)
        elif pattern in inventory.groups:
            chosen.update(inventory.hosts_in(pattern))
        else:
            raise UsageError(f"audit: {pattern!r} is no host or group of the inventory"
                             f"{suggest(pattern, [*inventory.hosts, *inventory.groups])}")
    return [h for h in inventory.hosts if h in chosen]


def jobs_touching(jobs: tuple[Job, ...], hosts: list[str]) -> list[Job]:
    """The jobs whose source or a host target is on one of ``hosts``."""
    wanted = set(hosts)
    return [j for j in jobs if j.source.host in wanted
            or any(isinstance(t, Endpoint) and t.host in wanted for t in j.targets)]


async def gather(inventory: Inventory, hosts: list[str]) -> Audit:
    """List every host and inspect the targets of the jobs touching them, concurrently."""
    jobs = jobs_touching(inventory.jobs, hosts)
    async with Fleet(inventory) as fleet:
        listed, rows = await asyncio.gather(
            asyncio.gather(*(list_datasets(fleet, h) for h in hosts)),
            collect_status(fleet, [j for j in jobs if j.rpo is not None]))
    found = {h: v for h, v in listed if isinstance(v, dict)}
    covered = coverage(found, inventory.jobs)
    results = [HostResult(h, covered[h]) if h in covered else HostResult(h, None, str(v))
               for h, v in listed]
    unknown = [r for r in rows if r.rpo_breach is None and r.rpo_seconds is not None]
    return Audit(results, breaches(rows), unknown)


def exit_code(audit: Audit) -> int:
    bad = (audit.breaches or audit.unknown
           or any(h.coverage is None or h.coverage.unprotected for h in audit.hosts))
    return EXIT_JOB_FAILED if bad else EXIT_OK


def to_json(audit: Audit) -> dict:
    hosts = []
    for h in audit.hosts:
        c = h.coverage
        hosts.append({"host": h.host, "error": h.error,
                      "unprotected": list(c.unprotected) if c else None,
                      "protected": list(c.protected) if c else None,
                      "replicas": list(c.replicas) if c else None})
    return {"hosts": hosts, "rpo_breaches": [asdict(b) for b in audit.breaches],
            "unknown": [{"job": r.job, "target": r.target, "state": r.state, "message": r.message,
                         "rpo_seconds": r.rpo_seconds} for r in audit.unknown]}


def _count(n: int, what: str) -> str:
    return f"{n} {what}" if n == 1 else f"{n} {what}s"


def text_lines(audit: Audit, width: int | None) -> list[Line]:
    """Per host its unprotected datasets, one a line; then the targets past their RPO."""
    unprotected = sum(len(h.coverage.unprotected) for h in audit.hosts if h.coverage)
    lines: list[Line] = [[(f"zrelay audit: {_count(len(audit.hosts), 'host')}, "
                           f"{_count(unprotected, 'unprotected dataset')}, "
                           f"{_count(len(audit.breaches), 'target')} past the RPO", "bold")]]
    for h in audit.hosts:
        c = h.coverage
        if c is None:
            lines += layout.wrap([(h.host, "bold"), (f"  not listed: {h.error}", "red")], width, 0, 4)
            continue
        total = len(c.protected) + len(c.replicas) + len(c.unprotected)
        summary = (f"  {len(c.unprotected)} unprotected of {total} "
                   f"({len(c.protected)} protected, {_count(len(c.replicas), 'replica')})")
        lines += layout.wrap([(h.host, "bold"), (summary, "red" if c.unprotected else "green")],
                             width, 0, 4)
        for dataset in c.unprotected:
            lines += layout.wrap(dataset, width, 2, 4)
    return lines


BREACH_COLUMNS = (Column("job", "JOB"), Column("target", "TARGET"), Column("age", "BASE AGE", right=True),
                  Column("rpo", "RPO", right=True), Column("state", "STATE"))


def breach_rows(audit: Audit) -> list[dict[str, layout.Cell]]:
    rows = [{"job": cell(b.job), "target": cell(b.target),
             "age": cell("no base" if b.base_age_seconds is None else human_seconds(b.base_age_seconds),
                         "-" if b.base_age_seconds is None else human_seconds(b.base_age_seconds),
                         style="red"),
             "rpo": cell(duration_text(b.rpo_seconds)), "state": cell(b.state)} for b in audit.breaches]
    rows += [{"job": cell(r.job), "target": cell(r.target), "age": cell("?"),
              "rpo": cell(duration_text(r.rpo_seconds or 0)), "state": cell(r.state, style="red")}
             for r in audit.unknown]
    return rows


def run(args: argparse.Namespace) -> int:
    from zrelay.cli.main import find_inventory

    inventory = load_inventory(find_inventory(args.inventory))
    hosts = select_hosts(inventory, args.patterns)
    audit = asyncio.run(gather(inventory, hosts))
    if args.json:
        json.dump(to_json(audit), sys.stdout, indent=2)
        sys.stdout.write("\n")
        return exit_code(audit)
    output.print_lines(text_lines(audit, output.width()))
    rows = breach_rows(audit)
    if rows:
        output.print_table("Targets past their RPO (or not inspected)", BREACH_COLUMNS, rows,
                           steps=[("state", layout.DROP), ("age", 1)])
    return exit_code(audit)
