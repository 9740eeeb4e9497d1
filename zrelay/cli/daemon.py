"""``zrelay daemon`` (the service) and ``zrelay run-now`` (ask it, or run directly without one)."""

from __future__ import annotations

import argparse
import asyncio
import datetime as _dt
import json
import shutil
import sys
import time
from pathlib import Path

from zrelay.daemonstate import DaemonStore
from zrelay.errors import EXIT_JOB_FAILED, EXIT_OK, StateError, UsageError
from zrelay.inventory import Inventory, load_inventory
from zrelay.inventory.service import KINDS
from zrelay.lifecycle import timetable
from zrelay.state import default_path
from zrelay.units import human_duration

#: Seconds ``run-now`` waits for the daemon to take its request (it looks once a second).
TAKE_WAIT = 10.0


def register(sub: argparse._SubParsersAction) -> None:
    p = sub.add_parser("daemon", help="run every job's snapshot, sync, prune, s3-push and drill on its schedule",
                       description="Run as a service (foreground; systemd starts it): each job's runs on their "
                                   "schedules (the job's snapshot:, schedule: and its S3 targets' push:), with "
                                   "the budgets, windows, retries and notifications of zrelay.daemon in the "
                                   "inventory. SIGTERM stops gracefully, SIGHUP reloads the inventory.")
    p.add_argument("--check", action="store_true",
                   help="validate the inventory and the schedules, print the next planned runs, exit")
    p.add_argument("--count", type=int, default=10, metavar="N", help="with --check: how many runs (default 10)")
    p.add_argument("--json", action="store_true", help="with --check: print the planned runs as JSON")
    p.add_argument("--systemd-unit", action="store_true",
                   help="print a systemd unit that runs this daemon, and exit")
    p.add_argument("--log-format", choices=("text", "json"), default="text",
                   help="one line per event: text (default) or JSON objects (for log shippers)")
    p.add_argument("--metrics", metavar="ADDRESS:PORT",
                   help="serve Prometheus metrics here (default: the inventory's daemon.metrics, "
                        "127.0.0.1:9811); 'off' for none")
    p.set_defaults(handler=run)

    r = sub.add_parser("run-now", help="ask the running daemon to run jobs now (or run them here without one)",
                       description="Ask the running daemon to start the matching jobs' runs now, ahead of their "
                                   "schedules (a refused run waiting for you is tried again). Without a running "
                                   "daemon, the runs are made here, in order: snapshot, sync, prune, s3-push, drill.")
    r.add_argument("patterns", nargs="*", metavar="JOB|PATTERN", help="job name, host or host:dataset; default: all")
    r.add_argument("--kind", action="append", choices=KINDS, dest="kinds", default=[],
                   help="only this kind of run (repeatable; default: every kind the job has)")
    r.add_argument("--json", action="store_true", help="print the outcome as JSON")
    r.set_defaults(handler=run_now)


def _inventory(args: argparse.Namespace) -> tuple[Path, Inventory]:
    from zrelay.cli.main import find_inventory

    path = Path(find_inventory(args.inventory))
    return path, load_inventory(path)


def run(args: argparse.Namespace) -> int:
    if args.systemd_unit:
        from zrelay.daemon.unit import unit_text

        zrelay = shutil.which("zrelay") or str(Path(sys.argv[0]).resolve())
        sys.stdout.write(unit_text(zrelay, str(Path(args.inventory).resolve()) if args.inventory else None))
        return EXIT_OK
    path, inventory = _inventory(args)
    state = default_path(getattr(args, "state", None))
    if args.check:
        return check(inventory, state, args.count, args.json)
    metrics = args.metrics
    if metrics is not None:
        from zrelay.inventory.service_keys import check_listen
        from zrelay.inventory.values import Bad
        try:
            metrics = check_listen(metrics, "--metrics") or ""
        except Bad as bad:
            raise UsageError(str(bad)) from None
    from zrelay import locks
    from zrelay.daemon.logs import EventLog
    from zrelay.daemon.service import Daemon

    locks.identify(None, "daemon")
    daemon = Daemon(path, inventory, state_path=state, log=EventLog(args.log_format), metrics_address=metrics)
    return asyncio.run(daemon.serve())


def check(inventory: Inventory, state: Path, count: int, as_json: bool) -> int:
    """The next ``count`` planned runs, from the history a daemon left in the state store."""
    entries = timetable.entries(inventory)
    histories: dict[timetable.Key, timetable.History] = {}
    if state.exists():
        from zrelay.daemon.service import history_from
        try:
            with DaemonStore(state, readonly=True) as store:
                histories = {k: history_from(v) for k, v in store.histories().items()}
        except StateError:
            pass
    now = time.time()
    planned = timetable.upcoming(entries, histories, now, inventory.settings.daemon, count)
    if as_json:
        json.dump({"runs": len(entries),
                   "planned": [{"at": at, "job": e.job, "kind": e.kind, "schedule": e.schedule.text,
                                "reason": why} for at, e, why in planned]}, sys.stdout, indent=2)
        sys.stdout.write("\n")
        return EXIT_OK
    print(f"{inventory.path}: valid; {len(entries)} scheduled run(s) over {len(inventory.jobs)} job(s)")
    width = max((len(e.job) for _, e, _ in planned), default=3)
    for at, entry, why in planned:
        when = _dt.datetime.fromtimestamp(at, _dt.UTC).strftime("%Y-%m-%d %H:%M:%S UTC")
        due = "due now" if at <= now else f"in {human_duration(at - now)}"
        print(f"{when}  {due:>12}  {entry.job:<{width}}  {entry.kind:<8}  {why}")
    if not planned:
        print("nothing is scheduled (no job has targets, a snapshot schedule or a keep policy)")
    return EXIT_OK


def run_now(args: argparse.Namespace) -> int:
    """A live daemon is asked (it matches the patterns against the inventory it has in force, which
    may be older than the file when the file is broken); else the runs are made here."""
    state = default_path(getattr(args, "state", None))
    info = None
    if state.exists():
        try:
            with DaemonStore(state, readonly=True) as store:
                info = store.daemon()
        except StateError:
            info = None
    if info is not None and info.alive:
        return _ask_daemon(state, args, info.pid)
    path, inventory = _inventory(args)
    return _run_here(path, inventory, state, args)


def _ask_daemon(state: Path, args: argparse.Namespace, pid: int) -> int:
    with DaemonStore(state) as store:
        request = store.request(args.patterns, args.kinds)
        deadline = time.monotonic() + TAKE_WAIT
        taken, answer = store.request_state(request)
        while answer is None and time.monotonic() < deadline:
            time.sleep(0.2)
            taken, answer = store.request_state(request)
    if answer is None:
        print(f"zrelay: error: the daemon (pid {pid}) did not take the request within {TAKE_WAIT:g}s",
              file=sys.stderr)
        return EXIT_JOB_FAILED
    if args.json:
        json.dump({"daemon": pid, "answer": answer}, sys.stdout)
        sys.stdout.write("\n")
    else:
        print(f"daemon (pid {pid}): {answer}")
    return EXIT_OK if not answer.startswith("no ") else EXIT_JOB_FAILED


def _run_here(path: Path, inventory: Inventory, state: Path, args: argparse.Namespace) -> int:
    """No daemon: each matching job's runs here, in order, as the daemon would make them."""
    jobs = {j.name for j in inventory.jobs_matching(args.patterns)}
    entries = [e for e in timetable.entries(inventory)
               if e.job in jobs and (not args.kinds or e.kind in args.kinds)]
    if not entries:
        print("no scheduled run matches", file=sys.stderr)
        return EXIT_JOB_FAILED
    results = asyncio.run(_run_entries(inventory, entries, state))
    if args.json:
        json.dump([{"job": r.job, "kind": r.kind, "outcome": r.outcome.value, "message": r.message,
                    "bytes": r.nbytes, "seconds": round(r.seconds, 3)} for r in results], sys.stdout, indent=2)
        sys.stdout.write("\n")
    else:
        for r in results:
            tail = f": {r.message}" if r.message else ""
            print(f"{r.job} {r.kind}: {r.outcome.value} ({r.nbytes} bytes, {r.seconds:.1f}s){tail}")
    bad = any(r.outcome.value in ("failed", "refused") for r in results)
    return EXIT_JOB_FAILED if bad else EXIT_OK


async def _run_entries(inventory: Inventory, entries: list[timetable.Entry], state: Path) -> list:
    from zrelay.daemon.runs import RunResult, run_one
    from zrelay.engine import Fleet

    by_job: dict[str, list[timetable.Entry]] = {}
    for entry in entries:
        by_job.setdefault(entry.job, []).append(entry)

    async def one_job(fleet: Fleet, job_entries: list[timetable.Entry]) -> list[RunResult]:
        job = next(j for j in inventory.jobs if j.name == job_entries[0].job)
        done = []
        for entry in job_entries:   # a job's kinds one after another, as the daemon runs them
            done.append(await run_one(inventory, job, entry.kind, fleet, state_path=state,
                                      events=lambda _e: None, lock_wait=0.0))
        return done

    async with Fleet(inventory) as fleet:
        nested = await asyncio.gather(*(one_job(fleet, es) for es in by_job.values()))
    return [r for rs in nested for r in rs]
