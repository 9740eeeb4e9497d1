"""``zrelay prune``: destroy what the jobs' keep policies let go, on every side, never a needed base."""

from __future__ import annotations

import argparse
import asyncio
import json
import sys
from collections.abc import Iterable
from typing import Any

from zrelay.cli import layout, output
from zrelay.cli.main import add_wait_lock
from zrelay.cli.sync import exit_code
from zrelay.engine import Engine, SyncOptions, TaskResult
from zrelay.events import EventSink, Outcome, discard
from zrelay.inventory import Inventory, Job, load_inventory
from zrelay.lifecycle.prune import Decision, SidePlan
from zrelay.state import Recorder, default_path


def register(sub: argparse._SubParsersAction[argparse.ArgumentParser]) -> None:
    p = sub.add_parser("prune", help="destroy what the keep policies let go, on every side",
                       description="Apply every matching job's keep policies (`keep:` in the inventory) to its "
                                   "source, host targets and S3 targets. Only the job's own snapshots are ever "
                                   "destroyed, never a base a target still needs; S3 loses whole chains only.")
    p.add_argument("patterns", nargs="*", metavar="PATTERN",
                   help="host, host:dataset or job name; default: every job with a keep policy")
    p.add_argument("-n", "--dry-run", action="store_true",
                   help="show per side what is kept, what goes and why, and the exact commands; change nothing")
    p.add_argument("--json", action="store_true", help="print every decision (keep or destroy, and why) as JSON")
    add_wait_lock(p)
    p.set_defaults(handler=run)


def run(args: argparse.Namespace) -> int:
    from zrelay.cli.main import find_inventory

    inventory = load_inventory(find_inventory(args.inventory))
    jobs = [j for j in inventory.jobs_matching(args.patterns) if j.lifecycle.keep]
    options = SyncOptions(dry_run=args.dry_run, wait_lock=args.wait_lock)
    recorder = Recorder(default_path(getattr(args, "state", None)), "prune", ["prune", *args.patterns],
                        inventory=str(inventory.path), enabled=not args.dry_run)
    with recorder:
        results = asyncio.run(_prune(inventory, jobs, options, recorder.handle if not args.dry_run else None))
        recorder.set_exit_code(exit_code(results))
    if args.json:
        json.dump([result_dict(r) for r in results], sys.stdout, indent=2)
        sys.stdout.write("\n")
    elif not results:
        output.console().print("no matching job has a keep policy (`keep:` in the inventory): nothing to prune")
    else:
        print_prune(results, dry_run=args.dry_run)
    return exit_code(results)


async def _prune(inventory: Inventory, jobs: Iterable[Job], options: SyncOptions,
                 sink: EventSink | None) -> list[TaskResult]:
    async with Engine(inventory, sink or discard) as engine:
        return await engine.prune(jobs, options)


def decision_dict(d: Decision) -> dict[str, Any]:
    return {"dataset": d.dataset, "kind": d.kind, "name": d.name, "guid": d.guid, "creation": d.creation,
            "keep": d.keep, "reasons": list(d.reasons), "beyond_policy": bool(d.keep and d.guarded)}


def result_dict(r: TaskResult) -> dict[str, Any]:
    """One side of one job: the run's result plus every decision with its reasons."""
    out = output.result_dict(r)
    side = r.details
    if isinstance(side, SidePlan):
        out["side"] = side.side
        out["policy"] = side.policy is not None
        out["decisions"] = [decision_dict(d) for d in side.decisions]
        out["notes"] = list(side.notes)
    return out


def print_prune(results: list[TaskResult], *, dry_run: bool) -> None:
    """Per job and side: what the policy keeps and what goes (the exact commands), what a rule
    keeps although the policy would let it go, and every note."""
    w = output.width()
    lines: list[layout.Line] = []
    job = None
    for r in results:
        if r.job != job:
            job = r.job
            lines.append([(job, "bold")])
        style = output.OUTCOME_STYLE.get(r.outcome, "")
        lines += layout.wrap([(f"{r.target}: ", ""), (r.message, style)], w, 2, 6)
        for dataset, why in r.excluded:   # left alone on every side (zrelay.selection)
            lines += layout.wrap(f"excluded {dataset}: {why}", w, 4, 8)
        side = r.details
        if isinstance(side, SidePlan):
            for d in side.decisions:
                if d.keep and d.guarded:
                    lines += layout.wrap(f"keeps {_name(d)}: {'; '.join(d.guarded)}", w, 4, 8)
            for note in side.notes:
                lines += layout.wrap(f"note: {note}", w, 4, 8)
        if dry_run:
            for action in r.actions:
                lines += layout.wrap(f"{action.kind.value}: {action.reason}", w, 4, 8)
                for host, command in action.commands:
                    lines.append(output.command_line(host, command, indent=6))
        elif r.outcome is Outcome.FAILED:
            output.error_line(f"failed: {r.job} → {r.target}: {r.message}")
    output.print_lines(lines)


def _name(d: Decision) -> str:
    mark = {"snapshot": "@", "bookmark": "#"}.get(d.kind, "")
    return f"{d.dataset}{mark}{d.name}" if mark else f"{d.dataset} chain {d.name}"
