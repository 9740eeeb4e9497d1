"""``zrelay snapshot``: take the snapshots whose time has come (or every one, with ``--now``)."""

from __future__ import annotations

import argparse
import asyncio
import json
import sys
from collections.abc import Iterable

from zrelay.cli import output
from zrelay.cli.sync import exit_code
from zrelay.engine import Engine, SyncOptions, TaskResult
from zrelay.events import EventSink, discard
from zrelay.inventory import Inventory, Job, load_inventory
from zrelay.state import Recorder, default_path


def register(sub: argparse._SubParsersAction[argparse.ArgumentParser]) -> None:
    p = sub.add_parser("snapshot", help="take the snapshots whose time has come",
                       description="Take a snapshot of every job (or the jobs matching PATTERN) whose schedule "
                                   "(the job's `snapshot: {every|cron}`) says it is due, between the job's "
                                   "pre/post hooks. A recursive job takes one atomic `zfs snapshot -r`. "
                                   "A job without a schedule is only snapshotted with --now.")
    p.add_argument("patterns", nargs="*", metavar="PATTERN",
                   help="host, host:dataset or job name; default: every job")
    p.add_argument("--now", action="store_true", help="snapshot every matching job now, due or not")
    p.add_argument("-n", "--dry-run", action="store_true",
                   help="show which snapshots are due and the exact remote commands; change nothing")
    p.add_argument("--json", action="store_true", help="print the results as JSON")
    p.set_defaults(handler=run)


def run(args: argparse.Namespace) -> int:
    from zrelay.cli.main import find_inventory

    inventory = load_inventory(find_inventory(args.inventory))
    jobs = [j for j in inventory.jobs_matching(args.patterns) if args.now or j.lifecycle.snapshot is not None]
    options = SyncOptions(dry_run=args.dry_run)
    argv = ["snapshot", *args.patterns, *(["--now"] if args.now else [])]
    recorder = Recorder(default_path(getattr(args, "state", None)), "snapshot", argv,
                        inventory=str(inventory.path), enabled=not args.dry_run)
    with recorder:
        results = asyncio.run(_snapshots(inventory, jobs, options, args.now,
                                         recorder.handle if not args.dry_run else None))
        recorder.set_exit_code(exit_code(results))
    if args.json:
        json.dump([{**output.result_dict(r), **(r.details if isinstance(r.details, dict) else {})}
                   for r in results], sys.stdout, indent=2)
        sys.stdout.write("\n")
    elif not results:
        output.console().print("no job has a snapshot schedule (`snapshot:` in the inventory): nothing is due; "
                               "--now snapshots every matching job")
    elif args.dry_run:
        output.print_dry_run(results)
    else:
        output.print_summary(results, title="zrelay snapshot")
    return exit_code(results)


async def _snapshots(inventory: Inventory, jobs: Iterable[Job], options: SyncOptions, force: bool,
                     sink: EventSink | None) -> list[TaskResult]:
    async with Engine(inventory, sink or discard) as engine:
        return await engine.snapshots(jobs, options, force=force)
