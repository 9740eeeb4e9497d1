#!/usr/bin/env python3
"""No-change sync cycles the way ``zrelay daemon`` runs them, in this one process (a child of the benchmark).

    python bench/zbench/cycle_worker.py --inventory INV --mode persistent --warmup 1 --cycles 20

``persistent`` (the daemon): one long-lived ``Fleet`` for the whole process; every cycle is
``Engine(inv, fleet=parent.for_run())`` → ``engine.sync(jobs, SyncOptions())``, then the per-run fleet is
closed (it lets go of its locks and keeps the connections). The warm-up cycles connect and probe.
``fresh`` (what a cron ``zrelay sync`` pays): a new ``Fleet`` every cycle, closed after it (connections
included). Each timed cycle: wall time, CPU of this process, resident set size after it (/proc/self/statm).

It runs apart from the benchmark process because the simulated hosts' SSH server runs there in a
thread: sharing one interpreter (and its GIL) with the server would time the server as well. Its own
RSS is then the daemon-like process's alone. Output: one JSON document on stdout; exit 3 when a timed
cycle's target came back other than ``--expect``, with the first few in the document.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import os
import resource
import sys
import time
from collections import Counter
from typing import Any

from zrelay.engine import Engine, Fleet, SyncOptions, TaskResult
from zrelay.inventory import load_inventory
from zrelay.inventory.model import Inventory, Job

PAGE_KIB = os.sysconf("SC_PAGE_SIZE") // 1024


def rss_kib() -> int:
    """Resident set size of this process now (not the peak): what a soak watches grow or not."""
    with open("/proc/self/statm") as f:
        return int(f.read().split()[1]) * PAGE_KIB


async def one_cycle(inv: Inventory, jobs: list[Job], parent: Fleet | None) -> list[TaskResult]:
    """One sync of every job: through ``parent.for_run()`` (persistent) or a fleet of its own (fresh)."""
    fleet = parent.for_run() if parent is not None else Fleet(inv)
    try:
        async with Engine(inv, fleet=fleet) as engine:   # the engine closes only a fleet it made itself
            return await engine.sync(jobs, SyncOptions())
    finally:
        await fleet.close()   # per-run: locks go, connections stay; fresh: connections go too


async def run(args: argparse.Namespace) -> dict[str, Any]:
    inv = load_inventory(args.inventory)
    jobs = list(inv.jobs)
    parent = Fleet(inv) if args.mode == "persistent" else None
    expect = set(args.expect)
    warmups: list[dict[str, Any]] = []
    cycles: list[dict[str, Any]] = []
    outcomes: Counter[str] = Counter()
    bad: list[str] = []
    try:
        for i in range(args.warmup + args.cycles):
            cpu0, t0 = time.process_time(), time.perf_counter()
            results = await one_cycle(inv, jobs, parent)
            seconds = time.perf_counter() - t0
            cpu = time.process_time() - cpu0
            counts = Counter(r.outcome.value for r in results)
            if i < args.warmup:
                warmups.append({"seconds": round(seconds, 4), "outcomes": dict(counts)})
                continue
            outcomes.update(counts)
            bad += [f"{r.job} → {r.target}: {r.outcome.value}: {r.message}"
                    for r in results if r.outcome.value not in expect][:5 - len(bad)]
            cycles.append({"seconds": round(seconds, 4), "cpu_s": round(cpu, 4), "rss_kib": rss_kib(),
                           "targets": len(results), "outcomes": dict(counts)})
            n = i - args.warmup + 1
            if args.progress and (n % args.progress == 0 or n == args.cycles):
                print(f"  · cycle {n}/{args.cycles}: {seconds:.3f} s, RSS {cycles[-1]['rss_kib'] / 1024:.1f} MiB",
                      file=sys.stderr, flush=True)
    finally:
        if parent is not None:
            await parent.close()
    return {"mode": args.mode, "jobs": len(jobs), "hosts": len(inv.hosts), "warmup": warmups, "cycles": cycles,
            "outcomes": dict(outcomes), "unexpected": bad,
            "peak_rss_kib": resource.getrusage(resource.RUSAGE_SELF).ru_maxrss}


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--inventory", required=True)
    ap.add_argument("--mode", choices=("persistent", "fresh"), required=True)
    ap.add_argument("--warmup", type=int, default=1, help="untimed cycles first (persistent: they connect)")
    ap.add_argument("--cycles", type=int, default=10, help="timed cycles")
    ap.add_argument("--expect", action="append", default=[], metavar="OUTCOME",
                    help="outcome every target of a timed cycle must have (repeatable; default noop)")
    ap.add_argument("--progress", type=int, default=0, metavar="N", help="a line on stderr every N cycles")
    args = ap.parse_args()
    args.expect = args.expect or ["noop"]
    doc = asyncio.run(run(args))
    json.dump(doc, sys.stdout)
    sys.stdout.write("\n")
    return 3 if doc["unexpected"] else 0


if __name__ == "__main__":
    raise SystemExit(main())
