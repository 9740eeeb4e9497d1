"""``zrelay tui``: open the live Textual view of hosts, transfers and divergence."""

from __future__ import annotations

import argparse

from zrelay.errors import EXIT_OK
from zrelay.inventory import load_inventory
from zrelay.state import default_path


def register(sub: argparse._SubParsersAction) -> None:
    p = sub.add_parser("tui", help="live view: hosts and transfers, divergence matrix, dataset detail",
                       description="Open the live terminal view. It reads the state store, so it also shows "
                                   "transfers that other processes (cron, colleagues) are running.")
    p.add_argument("patterns", nargs="*", metavar="PATTERN", help="host, host:dataset or job name; default: all")
    p.set_defaults(handler=run)


def run(args: argparse.Namespace) -> int:
    from zrelay.cli.main import find_inventory
    from zrelay.tui.app import ZrelayApp  # textual loads only for this command

    inventory = load_inventory(find_inventory(args.inventory))
    jobs = inventory.jobs_matching(args.patterns)
    ZrelayApp(inventory, jobs, store_path=default_path(getattr(args, "state", None))).run()
    return EXIT_OK
