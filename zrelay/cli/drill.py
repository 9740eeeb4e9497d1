"""``zrelay drill``: prove a copy can be restored, and record the evidence.

Per job (or the jobs matching PATTERN) and copy (each target, ``--from TARGET``, or one at
random with ``--random``): restore a snapshot into a new scratch dataset under ``--to
HOST:PARENT``, compare its GUID and its tree checksum with the source's, destroy the scratch
copy (unless ``--keep``) and record the result in the state store, where ``status`` shows
the last drill per job and target. Exit codes: 0 every drill ok, 1 a mismatch or a failure,
2 bad arguments; a dry run prints every command and changes nothing.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import random
import sys

from zrelay import drill as d
from zrelay import locks
from zrelay.cli import layout, output
from zrelay.cli.layout import Line
from zrelay.cli.main import add_wait_lock
from zrelay.drillstate import DrillStore
from zrelay.engine.drill import BUSY, DrillOptions, drill_each, drill_pairs
from zrelay.engine.fleet import Fleet
from zrelay.events import EventSink
from zrelay.errors import EXIT_JOB_FAILED, EXIT_OK, TargetBusy, UsageError
from zrelay.inventory import load_inventory
from zrelay.inventory.lookup import find_inventory
from zrelay.inventory.model import Endpoint, Inventory, Job, S3Ref, Target
from zrelay.state import default_path
from zrelay.zfs.names import snapshot_problem


def register(sub: argparse._SubParsersAction[argparse.ArgumentParser]) -> None:
    p = sub.add_parser("drill", help="restore a snapshot into a scratch dataset, prove it equals the source",
                       description="Restore a snapshot of each job's copies (host replicas and S3 targets) into "
                                   "a new scratch dataset under --to, compare its GUID and a checksum of its file "
                                   "tree with the source's, destroy the scratch copy and record the result "
                                   "(shown by `zrelay status`).")
    p.add_argument("patterns", nargs="*", metavar="PATTERN", help="host, host:dataset or job name")
    p.add_argument("--to", metavar="HOST:PARENT",
                   help="where scratch datasets are created (below PARENT, which must exist; default: each "
                        "job's drill_to:)")
    p.add_argument("--from", dest="copy", metavar="TARGET",
                   help="drill this target of the job (host:dataset or s3:NAME; default: each of its targets)")
    p.add_argument("--snapshot", metavar="NAME", help="the snapshot to drill (default: the newest the copy and "
                                                      "the source both hold)")
    p.add_argument("--random", action="store_true",
                   help="one target chosen at random (without --from), and a snapshot at random (without --snapshot)")
    p.add_argument("--keep", action="store_true", help="leave the scratch dataset for inspection")
    p.add_argument("-n", "--dry-run", action="store_true", help="print the exact commands; change nothing")
    p.add_argument("--json", action="store_true", help="print the results as JSON")
    add_wait_lock(p)
    p.set_defaults(handler=run)


def _target(text: str) -> Target:
    if text.startswith("s3:"):
        name = text[3:]
        if not name:
            raise UsageError(f"--from {text!r}: missing the S3 target's name after 's3:'")
        return S3Ref(name)
    try:
        return Endpoint.parse(text)
    except UsageError as exc:
        raise UsageError(f"--from: {exc}") from None


def run(args: argparse.Namespace) -> int:
    inventory = load_inventory(find_inventory(args.inventory))
    to: Endpoint | None = None
    if args.to is not None:
        try:
            to = Endpoint.parse(args.to)
        except UsageError as exc:
            raise UsageError(f"--to: {exc}") from None
        inventory.host(to.host)
    if args.snapshot is not None:
        problem = snapshot_problem(args.snapshot)
        if problem:
            raise UsageError(f"--snapshot: {problem}")
    copy = _target(args.copy) if args.copy else None
    if isinstance(copy, S3Ref) and copy.name not in inventory.s3_targets:
        raise UsageError(f"--from {copy}: no S3 target {copy.name!r} in the inventory")
    if isinstance(copy, Endpoint):
        inventory.host(copy.host)
    rng = random.Random() if args.random else None
    pairs = drill_pairs(inventory.jobs_matching(args.patterns), copy, rng)
    groups: dict[Endpoint, list[tuple[Job, Target]]] = {}
    for job, target in pairs:
        where = to or job.drill_to
        if where is None:
            raise UsageError(f"job {job.name!r} has no drill_to: key: say where to restore with --to HOST:PARENT")
        groups.setdefault(where, []).append((job, target))
    runs = [(DrillOptions(to=where, snapshot=args.snapshot, rng=rng, dry_run=args.dry_run, keep=args.keep,
                          wait_lock=args.wait_lock), group) for where, group in groups.items()]
    show = not args.json and not args.dry_run
    results: list[d.Evidence] = []
    with output.ProgressView(enabled=show) as view:
        results = asyncio.run(_all(inventory, runs, view.handle))
    if not args.dry_run:
        with DrillStore(default_path(getattr(args, "state", None))) as store:
            store.record_all(results)
    if args.json:
        json.dump([ev.to_dict() for ev in results], sys.stdout, indent=2)
        sys.stdout.write("\n")
    else:
        output.print_lines(lines(results, output.width(), dry_run=args.dry_run))
    if any(ev.result == BUSY for ev in results) and all(ev.result in (d.OK, BUSY) for ev in results):
        return TargetBusy.exit_code
    return EXIT_OK if all(ev.result in (d.OK, "dry-run") for ev in results) else EXIT_JOB_FAILED


async def _all(inventory: Inventory, runs: list[tuple[DrillOptions, list[tuple[Job, Target]]]],
               events: EventSink) -> list[d.Evidence]:
    """Each group of drills into its scratch parent (--to, or the jobs' drill_to:), one after the other."""
    results: list[d.Evidence] = []
    async with Fleet(inventory) as fleet:
        locks.identify(0, "drill")
        for opts, pairs in runs:
            results += await drill_each(fleet, pairs, opts, events=events)
    return results


_STYLE = {d.OK: "green", d.MISMATCH: "red", d.FAILED: "red", BUSY: "yellow", "dry-run": "cyan"}


def lines(results: list[d.Evidence], width: int | None, *, dry_run: bool = False) -> list[Line]:
    """What each drill did: a heading, the verdict and why; the commands in a dry run."""
    out: list[Line] = []
    for ev in results:
        snap = f" @{ev.snapshot}" if ev.snapshot else ""
        below = f" {ev.dataset}" if ev.dataset else ""   # a dataset below a recursive job's source
        out.append([(f"drill {ev.job}: {ev.copy}{below}{snap}", "bold"), ("  ", ""),
                    (ev.result.upper() if ev.result != "dry-run" else "dry run", _STYLE.get(ev.result, ""))])
        for left in ev.excluded:
            out += layout.wrap(f"excluded {left}: not drilled", width, 2)
        if dry_run and ev.steps:
            out += layout.wrap(f"into {ev.scratch}, compared with {ev.source}@{ev.snapshot} "
                               f"(GUID {ev.source_guid})", width, 2)
            for step in ev.steps:
                note = f"  # {step.detail}" if step.detail else ""
                out.append(output.command_line(step.host, step.line + note, indent=4))
            continue
        if ev.message:
            out += layout.wrap(ev.message, width, 2)
        if ev.scratch and ev.result != BUSY:
            moved = f", {output.human_bytes(ev.bytes)} restored" if ev.bytes else ""
            fate = "kept for inspection" if ev.kept else "destroyed"
            out += layout.wrap(f"scratch {ev.scratch} {fate}{moved}", width, 2)
        if ev.source_tree and ev.copy_tree:
            out += layout.wrap(f"tree sha256 source {ev.source_tree['sha256'][:16]}… copy "
                               f"{ev.copy_tree['sha256'][:16]}… ({ev.copy_tree['entries']} entries)", width, 2)
        for problem in ev.cleanup:
            out += layout.wrap(f"clean-up: {problem}", width, 2, style="yellow")
    return out
