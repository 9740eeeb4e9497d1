"""``zrelay sync``: replicate every matching job to its host targets."""

from __future__ import annotations

import argparse
import asyncio
import json
import sys
from collections.abc import Iterable

from zrelay import locks
from zrelay.cli import output
from zrelay.cli.main import add_wait_lock
from zrelay.engine import Engine, SyncOptions, TaskResult
from zrelay.errors import EXIT_BUSY, EXIT_JOB_FAILED, EXIT_OK
from zrelay.events import EventSink, Outcome
from zrelay.inventory import Inventory, Job, load_inventory
from zrelay.state import Recorder, default_path, fanout


def register(sub: argparse._SubParsersAction) -> None:
    p = sub.add_parser("sync", help="replicate datasets host to host",
                       description="Replicate every job (or the jobs matching PATTERN) to its host targets.")
    p.add_argument("patterns", nargs="*", metavar="PATTERN",
                   help="host, host:dataset or job name; default: every job")
    p.add_argument("-n", "--dry-run", action="store_true",
                   help="show the plan and the exact remote commands per host; change nothing")
    p.add_argument("--snapshot", action="store_true",
                   help="take a new source snapshot first, between the job's hooks; a job with a "
                        "snapshot schedule only when it is due (name: the job's, else snapshot_name)")
    p.add_argument("--prune", action="store_true",
                   help="then prune every side of the jobs by their keep policies (as `zrelay prune`)")
    p.add_argument("--rollback", action="store_true",
                   help="allow rolling a diverged target back to the common base (destroys its newer snapshots)")
    p.add_argument("--abort-partial", action="store_true",
                   help="discard a partial receive whose resume token no longer works (zfs receive -A), "
                        "then send again from the newest common snapshot")
    p.add_argument("--decrypt", action="store_true",
                   help="send natively encrypted datasets decrypted instead of raw: the replicas are "
                        "written UNENCRYPTED")
    mode = p.add_mutually_exclusive_group()
    mode.add_argument("--direct", dest="direct", action="store_const", const=True, default=None,
                      help="each source pipes straight into its own ssh to the target (agent forwarded)")
    mode.add_argument("--relay", dest="direct", action="store_const", const=False,
                      help="relay every stream through this machine (default unless the inventory says direct)")
    p.add_argument("--json", action="store_true", help="print the results as JSON")
    add_wait_lock(p)
    p.set_defaults(handler=run)


def run(args: argparse.Namespace) -> int:
    from zrelay.cli.main import find_inventory

    inventory = load_inventory(find_inventory(args.inventory))
    jobs = inventory.jobs_matching(args.patterns)
    options = SyncOptions(dry_run=args.dry_run, take_snapshot=args.snapshot, rollback=args.rollback,
                          direct=args.direct, abort_partial=args.abort_partial, decrypt=args.decrypt,
                          wait_lock=args.wait_lock)
    # a terminal gets bars; a pipe or cron one line per stream start and end (output.ProgressView)
    show_progress = not args.json and not args.dry_run
    recorder = _recorder(args, inventory.path)
    with recorder, output.ProgressView(enabled=show_progress) as view:
        locks.identify(recorder.run_id, "sync")
        sink = fanout(view.handle, recorder.handle) if not args.dry_run else view.handle
        results = asyncio.run(_sync(inventory, jobs, options, sink, prune=args.prune))
        recorder.set_exit_code(exit_code(results))
    if args.json:
        as_dict = output.result_dict
        if args.prune:   # the prune's sides carry every decision, as `zrelay prune --json` shows them
            from zrelay.cli.prune import result_dict as as_dict
        json.dump([as_dict(r) for r in results], sys.stdout, indent=2)
        sys.stdout.write("\n")
    elif args.dry_run:
        output.print_dry_run(results)
    else:
        output.print_summary(results)
    return exit_code(results)


def _recorder(args: argparse.Namespace, inventory_path: object) -> Recorder:
    """Record the run for ``status`` and the TUI; a dry run changes nothing, so it is not recorded."""
    argv = ["sync", *args.patterns] + [flag for flag, on in (("--snapshot", args.snapshot),
                                                              ("--rollback", args.rollback),
                                                              ("--abort-partial", args.abort_partial),
                                                              ("--decrypt", args.decrypt)) if on]
    return Recorder(default_path(getattr(args, "state", None)), "sync", argv, inventory=str(inventory_path),
                    enabled=not args.dry_run)


async def _sync(inventory: Inventory, jobs: Iterable[Job], options: SyncOptions,
                sink: EventSink, *, prune: bool = False) -> list[TaskResult]:
    jobs = list(jobs)
    async with Engine(inventory, sink) as engine:
        results = await engine.sync(jobs, options)
        if prune:   # over the same connections, once every target is replicated
            results += await engine.prune(jobs, options)
        return results


def exit_code(results: list[TaskResult]) -> int:
    """1 when a target failed or was refused; else 75 when one was skipped as busy (zrelay.locks)."""
    bad = {Outcome.FAILED, Outcome.REFUSED}
    if any(r.outcome in bad for r in results):
        return EXIT_JOB_FAILED
    return EXIT_BUSY if any(r.outcome is Outcome.BUSY for r in results) else EXIT_OK
