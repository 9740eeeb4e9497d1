"""``zrelay release``: remove the holds zrelay keeps on jobs' newest common snapshots.

zrelay holds each job's base on the source and the targets so that other
tools' pruning cannot break the chain. Before retiring a job (or to let a
base go), this removes exactly those holds (tags ``zrelay:JOB:…``), nothing else.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import sys
from collections.abc import Iterable

from zrelay.cli import output
from zrelay.cli.layout import DROP, Cell, Column, cell
from zrelay.engine import Fleet, Releaser, ReleaseResult
from zrelay.errors import EXIT_JOB_FAILED, EXIT_OK
from zrelay.inventory import Inventory, Job, load_inventory


def register(sub: argparse._SubParsersAction) -> None:
    p = sub.add_parser("release", help="remove the holds zrelay keeps on a job's newest common snapshots",
                       description="Remove zrelay's holds (tags zrelay:JOB:…) from the snapshots of the "
                                   "matching jobs on their sources and targets. Other holds are untouched.")
    p.add_argument("patterns", nargs="*", metavar="PATTERN", help="host, host:dataset or job name; default: every job")
    p.add_argument("-n", "--dry-run", action="store_true", help="list the holds and the exact commands; change nothing")
    p.add_argument("--json", action="store_true", help="print the results as JSON")
    p.set_defaults(handler=run)


def run(args: argparse.Namespace) -> int:
    from zrelay.cli.main import find_inventory

    inventory = load_inventory(find_inventory(args.inventory))
    jobs = inventory.jobs_matching(args.patterns)
    results = asyncio.run(_release(inventory, jobs, args.dry_run))
    if args.json:
        json.dump([_result_dict(r) for r in results], sys.stdout, indent=2)
        sys.stdout.write("\n")
    else:
        _print(results, args.dry_run)
    return EXIT_JOB_FAILED if any(r.error for r in results) else EXIT_OK


def _result_dict(r: ReleaseResult) -> dict[str, object]:
    """One result as ``--json`` shows it: the exact command lines, not the action objects."""
    return {"job": r.job, "host": r.host, "holds": r.holds, "commands": r.commands, "released": r.released,
            "error": r.error}


async def _release(inventory: Inventory, jobs: Iterable[Job], dry_run: bool) -> list[ReleaseResult]:
    async with Fleet(inventory) as fleet:
        return await Releaser(fleet).release(jobs, dry_run)


_COLUMNS = (Column("job", "JOB"), Column("host", "HOST"), Column("tag", "TAG"), Column("snapshots", "SNAPSHOTS"),
            Column("result", "RESULT"))


def _print(results: list[ReleaseResult], dry_run: bool) -> None:
    rows: list[dict[str, Cell]] = []
    for r in results:
        base = {"job": cell(r.job), "host": cell(r.host)}
        if r.error:
            rows.append({**base, "result": cell(r.error, style="red")})
        elif not r.holds:
            rows.append({**base, "result": cell("no zrelay holds")})
        for tag, snaps in r.holds.items():
            rows.append({**base, "tag": cell(tag), "snapshots": cell(", ".join(snaps), f"{len(snaps)} snapshot(s)"),
                         "result": cell("would release" if dry_run else "released")})
    output.print_table("zrelay holds" + (" (dry run: nothing released)" if dry_run else ""), _COLUMNS, rows,
                       steps=(("snapshots", 1), ("job", DROP)))
    if dry_run:
        for r in results:
            for command in r.commands:
                output.console().print(f"[{r.host}] {command}", markup=False, highlight=False, soft_wrap=True)
