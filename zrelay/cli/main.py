"""``zrelay`` command line: parse arguments, dispatch to one module per command, map errors to exit codes.

Exit codes: 0 everything succeeded (or nothing to do); 1 at least one job failed
or was refused; 2 usage or inventory error; 75 a target was skipped because
another zrelay was replicating it (``sync``, ``s3-push``, ``s3-restore``; see
``--wait-lock``; a failure, 1, wins over it); 130 interrupted (SIGINT, Ctrl-C);
143 terminated (SIGTERM: systemd stop, ``timeout``). Interrupted and terminated
runs stop their streams, leave targets as they were (or resumable) and are
recorded as interrupted in the state store.
"""

from __future__ import annotations

import argparse
import importlib
import signal
import sys
from types import FrameType
from typing import Callable, Sequence

from zrelay import __version__
from zrelay.cli import quickimport
from zrelay.errors import EXIT_BUSY, EXIT_USAGE, ZrelayError

quickimport.import_yaml()   # before zrelay.inventory does: see zrelay.cli.quickimport
from zrelay.inventory.lookup import find_inventory  # noqa: E402,F401  (commands import it from here)

EXIT_INTERRUPTED = 130
EXIT_TERMINATED = 128 + signal.SIGTERM   # 143, what a shell reports for a process SIGTERM ended

#: Set when SIGTERM arrived: the interruption is reported as a termination (143).
_terminated: list[int] = []


class _Parser(argparse.ArgumentParser):
    """argparse that reports errors as one line with our usage exit code."""

    def error(self, message: str) -> None:  # type: ignore[override]
        self.exit(EXIT_USAGE, f"zrelay: error: {message} (see `{self.prog} --help`)\n")


#: Every command: the module that implements it and its one-line help. Only the module of
#: the command being run is imported, so `zrelay tui` does not pay for boto3 and
#: `zrelay s3-ls` does not pay for textual.
COMMANDS: dict[str, tuple[str, str]] = {
    "sync": ("zrelay.cli.sync", "replicate datasets host to host"),
    "snapshot": ("zrelay.cli.snapshot", "take the snapshots whose time has come"),
    "prune": ("zrelay.cli.prune", "destroy what the keep policies let go, on every side; never breaks a chain"),
    "status": ("zrelay.cli.status", "show where every job's targets stand"),
    "audit": ("zrelay.cli.audit", "datasets no job protects, and targets older than their RPO"),
    "tui": ("zrelay.cli.tui", "live view: hosts and transfers, divergence matrix, dataset detail"),
    "inventory": ("zrelay.cli.inventory", "list, check and edit the inventory"),
    "release": ("zrelay.cli.release", "remove the holds zrelay keeps on a job's newest common snapshots"),
    "allow": ("zrelay.cli.allow", "delegate (zfs allow) what zrelay needs per host, to run without root"),
    "s3-push": ("zrelay.cli.s3", "upload snapshots of jobs with S3 targets (full or incremental)"),
    "s3-ls": ("zrelay.cli.s3", "list stored chains per dataset, with sizes and health"),
    "s3-restore": ("zrelay.cli.s3", "restore a dataset from S3 into any host"),
    "s3-verify": ("zrelay.cli.s3", "re-read stored objects and check every sha256"),
    "s3-prune": ("zrelay.cli.s3", "delete old chains by keep rules; never orphans an incremental"),
    "s3-abort-stale": ("zrelay.cli.s3", "list and abort multipart uploads left by crashed pushes"),
    "drill": ("zrelay.cli.drill", "restore a snapshot into a scratch dataset and prove it equals the source"),
    "daemon": ("zrelay.cli.daemon", "run every job's snapshot, sync, prune and s3-push on its schedule"),
    "run-now": ("zrelay.cli.daemon", "ask the running daemon to run jobs now (or run them here without one)"),
}


def _command_name(argv: Sequence[str]) -> str | None:
    """The command word in ``argv`` (skipping global options and their values)."""
    takes_value = {"-i", "--inventory", "--state"}
    skip = False
    for word in argv:
        if skip:
            skip = False
        elif word in takes_value:
            skip = True
        elif word.startswith("-"):
            continue
        else:
            return word
    return None


def wait_lock_seconds(text: str) -> float:
    """``--wait-lock`` value: seconds, 0 or more."""
    try:
        value = float(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"--wait-lock wants seconds, not {text!r}") from None
    if not value >= 0 or value == float("inf"):
        raise argparse.ArgumentTypeError(f"--wait-lock wants 0 or more seconds, not {text!r}")
    return value


def add_wait_lock(parser: argparse.ArgumentParser) -> None:
    """The ``--wait-lock`` option of the commands that write targets (see zrelay.locks)."""
    parser.add_argument("--wait-lock", type=wait_lock_seconds, default=0.0, metavar="SECONDS",
                        help="when another zrelay is replicating a target, wait up to SECONDS for it "
                             f"(default 0: skip that target as busy, exit code {EXIT_BUSY})")


class _Version(argparse.Action):
    """``--version``: zrelay's, and asyncssh's with the fast path's state (on, or off and why:
    a support question's first answer). asyncssh is imported only for this option."""

    def __call__(self, parser: argparse.ArgumentParser, namespace: argparse.Namespace,
                 values: object, option_string: str | None = None) -> None:
        from zrelay.transport import fastpath
        sys.stdout.write(f"zrelay {__version__}\n{fastpath.describe()}\n")
        parser.exit(0)


def build_parser(command: str | None = None) -> argparse.ArgumentParser:
    """The full parser for ``command``; the other commands appear by name and help only."""
    parser = _Parser(prog="zrelay", description="Replicate ZFS datasets across hosts from one inventory.")
    parser.add_argument("--version", action=_Version, nargs=0, default=argparse.SUPPRESS,
                        help="show zrelay's version, asyncssh's and whether zrelay's fast path for it is on")
    parser.add_argument("-i", "--inventory", metavar="PATH",
                        help="inventory file or directory (default: $ZRELAY_INVENTORY, ./inventory/zrelay.yml, "
                             "~/.config/zrelay/zrelay.yml)")
    parser.add_argument("-v", "--verbose", action="store_true", help="more detail in errors and output")
    parser.add_argument("--state", metavar="PATH",
                        help="run state database (default: $ZRELAY_STATE, then $XDG_STATE_HOME/zrelay/state.db)")
    sub = parser.add_subparsers(dest="command", metavar="COMMAND", parser_class=_Parser)
    if command in COMMANDS:
        importlib.import_module(COMMANDS[command][0]).register(sub)
    for name, (_module, text) in COMMANDS.items():
        if name not in sub.choices:
            sub.add_parser(name, help=text, description=text)
    return parser


#: Commands whose process ends right after their handler (see _exit_now): nothing of theirs
#: runs in the background once the handler has returned.
FAST_EXIT = frozenset({"sync", "drill", "status", "audit", "s3-push", "s3-restore", "s3-ls", "s3-verify", "s3-prune",
                       "s3-abort-stale"})


def _exit_now(code: int) -> None:
    """End the process without the interpreter's teardown (0.1-0.25 s after a sync or an S3 push, mostly
    freeing objects one by one): atexit handlers still run, the standard streams are flushed."""
    import atexit
    import os
    try:
        atexit._run_exitfuncs()  # noqa: SLF001  (the handlers sys.exit would run)
        sys.stdout.flush()
        sys.stderr.flush()
    except BrokenPipeError:
        pass
    except Exception:  # noqa: BLE001  (leave it to the normal exit)
        return
    os._exit(code)


def _limit_malloc_arenas(arenas: int = 2) -> None:
    """At most ``arenas`` glibc malloc arenas for this process (unless MALLOC_ARENA_MAX says otherwise).

    glibc gives each thread that allocates an arena of its own (up to eight per core), and
    what a thread frees stays in its arena. The S3 paths hand 8 MiB parts between the event
    loop and five or six worker threads: a push of any size peaked 2.3 MiB higher than with
    two arenas (the main thread's and one shared by the workers), at the same speed.
    """
    import os
    if not sys.platform.startswith("linux") or "MALLOC_ARENA_MAX" in os.environ:
        return
    try:
        import ctypes
        mallopt = ctypes.CDLL(None).mallopt
    except (OSError, AttributeError):  # not glibc: nothing to tune
        return
    m_arena_max = -8   # <malloc.h>
    mallopt(m_arena_max, arenas)


def main(argv: Sequence[str] | None = None) -> int:
    if argv is None:   # the command line: this process is zrelay's own
        _limit_malloc_arenas()
    words = list(sys.argv[1:] if argv is None else argv)
    parser = build_parser(_command_name(words))
    args = parser.parse_args(words)
    handler: Callable[[argparse.Namespace], int] | None = getattr(args, "handler", None)
    if handler is None:
        parser.print_help(sys.stderr)
        return EXIT_USAGE
    code = _run(handler, args)
    if argv is None and args.command in FAST_EXIT:  # the command line itself, not an in-process caller
        _exit_now(code)
    return code


def _on_sigterm(signum: int, frame: FrameType | None) -> None:
    """SIGTERM takes Ctrl-C's path: whatever handles SIGINT right now handles it.

    Inside ``asyncio.run`` that is asyncio's own handler, which cancels the main
    task (streams stop, connections close, context managers unwind) and then
    raises KeyboardInterrupt; outside it, Python's raises KeyboardInterrupt at
    once. A process started with SIGINT ignored (``cmd &`` in a script) has no
    such handler: KeyboardInterrupt is raised here, and asyncio.run cancels
    every task on its way out. A second SIGTERM, like a second Ctrl-C, does not
    wait for the first to finish.
    """
    _terminated.append(signum)
    state = sys.modules.get("zrelay.state")   # loaded when this command records its run
    if state is not None:
        state.note_signal(signum)
    handler = signal.getsignal(signal.SIGINT)
    if callable(handler) and handler is not signal.default_int_handler:
        handler(signal.SIGINT, frame)
        return
    raise KeyboardInterrupt


def _catch_sigterm() -> None:
    """Treat SIGTERM like SIGINT (main thread only, where signal handlers can be set)."""
    try:
        signal.signal(signal.SIGTERM, _on_sigterm)
    except ValueError:   # not the main thread (an in-process caller's worker): leave it alone
        pass


def _run(handler: Callable[[argparse.Namespace], int], args: argparse.Namespace) -> int:
    _catch_sigterm()
    try:
        return handler(args)
    except ZrelayError as exc:
        print(f"zrelay: error: {exc}", file=sys.stderr)
        return exc.exit_code
    except KeyboardInterrupt:
        if _terminated:
            print("zrelay: terminated (SIGTERM): transfers in flight were stopped, targets left as they were "
                  "(or resumable)", file=sys.stderr)
            return EXIT_TERMINATED
        print("zrelay: interrupted", file=sys.stderr)
        return EXIT_INTERRUPTED
    except BrokenPipeError:
        return 0


if __name__ == "__main__":
    raise SystemExit(main())
