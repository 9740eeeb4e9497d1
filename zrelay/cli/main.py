"""``zrelay`` command line: parse arguments, dispatch to one module per command, map errors to exit codes.

Exit codes: 0 everything succeeded (or nothing to do); 1 at least one job failed
or was refused; 2 usage or inventory error; 130 interrupted.
"""

from __future__ import annotations

import argparse
import os
import sys
from pathlib import Path
from typing import Callable, Sequence

from zrelay import __version__
from zrelay.errors import EXIT_USAGE, UsageError, ZrelayError

EXIT_INTERRUPTED = 130

#: Where the inventory is looked for when ``-i`` is not given, in order.
DEFAULT_INVENTORIES = (
    Path("inventory/zrelay.yml"),
    Path("zrelay.yml"),
    Path("~/.config/zrelay/inventory.yml"),
)


class _Parser(argparse.ArgumentParser):
    """argparse that reports errors as one line with our usage exit code."""

    def error(self, message: str) -> None:  # type: ignore[override]
        self.exit(EXIT_USAGE, f"zrelay: error: {message} (see `{self.prog} --help`)\n")


def find_inventory(explicit: str | None) -> Path:
    """-i PATH, then $ZRELAY_INVENTORY, then the default locations."""
    if explicit:
        return Path(explicit)
    env = os.environ.get("ZRELAY_INVENTORY")
    if env:
        return Path(env)
    for candidate in DEFAULT_INVENTORIES:
        path = candidate.expanduser()
        if path.is_file():
            return path
    tried = ", ".join(str(c) for c in DEFAULT_INVENTORIES)
    raise UsageError(f"no inventory given: use -i PATH or set ZRELAY_INVENTORY (also looked for {tried})")


def build_parser() -> argparse.ArgumentParser:
    from zrelay.cli import status as status_cmd
    from zrelay.cli import sync as sync_cmd

    parser = _Parser(prog="zrelay", description="Replicate ZFS datasets across hosts from one inventory.")
    parser.add_argument("--version", action="version", version=f"zrelay {__version__}")
    parser.add_argument("-i", "--inventory", metavar="PATH",
                        help="inventory file (default: $ZRELAY_INVENTORY, then inventory/zrelay.yml)")
    parser.add_argument("-v", "--verbose", action="store_true", help="more detail in errors and output")
    sub = parser.add_subparsers(dest="command", metavar="COMMAND", parser_class=_Parser)
    sync_cmd.register(sub)
    status_cmd.register(sub)
    return parser


def main(argv: Sequence[str] | None = None) -> int:
    parser = build_parser()
    args = parser.parse_args(argv)
    handler: Callable[[argparse.Namespace], int] | None = getattr(args, "handler", None)
    if handler is None:
        parser.print_help(sys.stderr)
        return EXIT_USAGE
    try:
        return handler(args)
    except ZrelayError as exc:
        print(f"zrelay: error: {exc}", file=sys.stderr)
        return exc.exit_code
    except KeyboardInterrupt:
        print("zrelay: interrupted", file=sys.stderr)
        return EXIT_INTERRUPTED
    except BrokenPipeError:
        return 0


if __name__ == "__main__":
    raise SystemExit(main())
