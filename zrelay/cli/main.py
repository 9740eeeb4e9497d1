"""``zrelay`` command line: parse arguments, dispatch to one module per command, map errors to exit codes.

Exit codes: 0 everything succeeded (or nothing to do); 1 at least one job failed
or was refused; 2 usage or inventory error; 130 interrupted.
"""

from __future__ import annotations

import argparse
import sys
from typing import Callable, Sequence

from zrelay import __version__
from zrelay.errors import EXIT_USAGE, ZrelayError
from zrelay.inventory.lookup import find_inventory  # -i, $ZRELAY_INVENTORY, ./inventory/, config

EXIT_INTERRUPTED = 130


class _Parser(argparse.ArgumentParser):
    """argparse that reports errors as one line with our usage exit code."""

    def error(self, message: str) -> None:  # type: ignore[override]
        self.exit(EXIT_USAGE, f"zrelay: error: {message} (see `{self.prog} --help`)\n")


def build_parser() -> argparse.ArgumentParser:
    from zrelay.cli import inventory as inventory_cmd
    from zrelay.cli import status as status_cmd
    from zrelay.cli import sync as sync_cmd
    from zrelay.cli import tui as tui_cmd

    parser = _Parser(prog="zrelay", description="Replicate ZFS datasets across hosts from one inventory.")
    parser.add_argument("--version", action="version", version=f"zrelay {__version__}")
    parser.add_argument("-i", "--inventory", metavar="PATH",
                        help="inventory file or directory (default: $ZRELAY_INVENTORY, ./inventory/zrelay.yml, "
                             "~/.config/zrelay/zrelay.yml)")
    parser.add_argument("-v", "--verbose", action="store_true", help="more detail in errors and output")
    parser.add_argument("--state", metavar="PATH",
                        help="run state database (default: $ZRELAY_STATE, then $XDG_STATE_HOME/zrelay/state.db)")
    sub = parser.add_subparsers(dest="command", metavar="COMMAND", parser_class=_Parser)
    sync_cmd.register(sub)
    status_cmd.register(sub)
    inventory_cmd.register(sub)
    tui_cmd.register(sub)
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
