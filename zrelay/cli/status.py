"""``zrelay status``: per job and target, newest snapshots, common base, lag and state."""

from __future__ import annotations

import argparse
import asyncio
import json
import sys

from zrelay.cli import output
from zrelay.engine import Engine
from zrelay.errors import EXIT_JOB_FAILED, EXIT_OK
from zrelay.inventory import load_inventory
from zrelay.status import LocationStatus, collect_status

#: States that make ``status`` exit 1, so cron/monitoring can alert on them.
BAD_STATES = frozenset({"unreachable", "error", "diverged", "no-common-base"})


def register(sub: argparse._SubParsersAction) -> None:
    p = sub.add_parser("status", help="show where every job's targets stand",
                       description="Show, per job and target, the newest snapshots, common base, lag and state.")
    p.add_argument("patterns", nargs="*", metavar="PATTERN", help="host, host:dataset or job name")
    p.add_argument("--json", action="store_true", help="print a JSON list (stable field names)")
    p.set_defaults(handler=run)


def run(args: argparse.Namespace) -> int:
    from zrelay.cli.main import find_inventory

    inventory = load_inventory(find_inventory(args.inventory))
    jobs = inventory.jobs_matching(args.patterns)
    rows = asyncio.run(_collect(inventory, jobs))
    if args.json:
        json.dump([r.to_dict() for r in rows], sys.stdout, indent=2)
        sys.stdout.write("\n")
    else:
        output.print_status(rows)
    return EXIT_JOB_FAILED if any(r.state in BAD_STATES for r in rows) else EXIT_OK


async def _collect(inventory, jobs) -> list[LocationStatus]:  # type: ignore[no-untyped-def]
    async with Engine(inventory) as engine:
        return await collect_status(engine, jobs)
