"""``zrelay tui``: open the live Textual view of hosts, transfers and divergence."""

from __future__ import annotations

import argparse
import math
from pathlib import Path

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
                                   "is asked again on a timer, as soon as any run ends, and on `r`. While a "
                                   "`zrelay daemon` runs with the same state store, the view attaches to it "
                                   "instead: its last survey of the hosts (nothing connects), its schedule, "
                                   "and `n` to have it run the selected job now.")
    p.add_argument("patterns", nargs="*", metavar="PATTERN", help="host, host:dataset or job name; default: all")
    p.add_argument("--refresh", type=refresh_seconds, default=DEFAULT_REFRESH, metavar="SECONDS",
                   help=f"ask every host again every SECONDS (default {DEFAULT_REFRESH:g}; 0: only on `r` "
                        "and when a run ends)")
    p.add_argument("--no-attach", action="store_true",
                   help="ask the hosts even while a zrelay daemon runs (default: show the daemon's survey; "
                        "without -i, the daemon's inventory)")
    p.set_defaults(handler=run)


def run(args: argparse.Namespace) -> int:
    from zrelay.cli.main import find_inventory
    from zrelay.tui.attach import live_daemon
    from zrelay.tui.app import ZrelayApp  # textual loads only for this command

    store_path = default_path(getattr(args, "state", None))
    daemon = None if args.no_attach else live_daemon(store_path)
    path = args.inventory
    if daemon is not None and path is None and Path(daemon.inventory).is_file():
        path = daemon.inventory   # what the daemon runs, unless -i says otherwise
    inventory = load_inventory(find_inventory(path))
    jobs = inventory.jobs_matching(args.patterns)
    ZrelayApp(inventory, jobs, store_path=store_path, refresh_interval=args.refresh or None, attach=daemon).run()
    return EXIT_OK
