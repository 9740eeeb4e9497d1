"""``zrelay tui``: open the live Textual view of hosts, transfers and divergence."""

from __future__ import annotations

import argparse
import math

from zrelay.errors import EXIT_OK
from zrelay.inventory import load_inventory
from zrelay.state import default_path

DEFAULT_REFRESH = 60.0  # s; the same as zrelay.tui.app.REFRESH_INTERVAL (not imported: textual loads later)


def refresh_seconds(text: str) -> float:
    """``--refresh`` value: seconds between full refreshes, 0 for none."""
    try:
        value = float(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"wants seconds, not {text!r}") from None
    if not math.isfinite(value) or value < 0:
        raise argparse.ArgumentTypeError(f"wants 0 or more seconds, not {text!r}")
    return value


def register(sub: argparse._SubParsersAction) -> None:
    p = sub.add_parser("tui", help="live view: hosts and transfers, divergence matrix, dataset detail",
                       description="Open the live terminal view. It reads the state store, so it also shows "
                                   "transfers that other processes (cron, colleagues) are running. Every host "
                                   "is asked again on a timer, as soon as any run ends, and on `r`.")
    p.add_argument("patterns", nargs="*", metavar="PATTERN", help="host, host:dataset or job name; default: all")
    p.add_argument("--refresh", type=refresh_seconds, default=DEFAULT_REFRESH, metavar="SECONDS",
                   help=f"ask every host again every SECONDS (default {DEFAULT_REFRESH:g}; 0: only on `r` "
                        "and when a run ends)")
    p.set_defaults(handler=run)


def run(args: argparse.Namespace) -> int:
    from zrelay.cli.main import find_inventory
    from zrelay.tui.app import ZrelayApp  # textual loads only for this command

    inventory = load_inventory(find_inventory(args.inventory))
    jobs = inventory.jobs_matching(args.patterns)
    ZrelayApp(inventory, jobs, store_path=default_path(getattr(args, "state", None)),
              refresh_interval=args.refresh or None).run()
    return EXIT_OK
