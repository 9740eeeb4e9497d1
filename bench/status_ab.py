#!/usr/bin/env python3
"""``zrelay status --json`` over many simulated hosts, this checkout against an older revision, alternating.

    python bench/status_ab.py --old 9f10541 [--hosts 500] [--layout siblings] [--reps 3] [--output PATH]

Why: status-500 runs each code a quarter of an hour apart, and on a shared machine the load moves
more than the code does in that time. Here both codes answer the same simulated hosts (zbench/fleet.py's
replay of a status recorded on the lab, as status-500 uses it), one ``status --json`` process after
the other, old and new alternating; each process's CPU time, wall time and peak RSS come from wait4.
Every run must give the rows the real lab gave (status-500's check). The old revision runs from a
temporary git worktree, first on the import path.
"""

from __future__ import annotations

import argparse
import os
import sys
import tempfile
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

HERE = Path(__file__).resolve().parent
sys.path.insert(0, str(HERE))
sys.path.insert(1, str(HERE.parent))

from zbench import fleet as fleetbench  # noqa: E402
from zbench.common import (REPO, BenchError, Lab, attempt, log, old_checkout, short_rev, summary,  # noqa: E402
                           write_results)


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--old", required=True, help="the revision to compare with (git rev)")
    ap.add_argument("--layout", choices=fleetbench.LAYOUTS, default="siblings")
    ap.add_argument("--hosts", type=int, default=500)
    ap.add_argument("--datasets", type=int, default=20)
    ap.add_argument("--reps", type=int, default=3, help="runs of each code, alternating")
    ap.add_argument("--output", type=Path)
    args = ap.parse_args()
    old_rev, new_rev = short_rev(args.old), short_rev("HEAD")
    out: dict[str, Any] = {"old": old_rev, "new": f"{new_rev} (working tree)", "hosts": args.hosts,
                           "datasets": args.datasets, "layout": args.layout, "reps": args.reps,
                           "started": datetime.now(UTC).isoformat(timespec="seconds"), "load_start": os.getloadavg()}
    fleetbench.ensure_fds(args.hosts)
    lab = Lab()
    runs: dict[str, list[dict[str, Any]]] = {"old": [], "new": []}
    with tempfile.TemporaryDirectory(prefix="zrelay-status-ab-") as tmp, old_checkout(old_rev, Path(tmp) / "old") as old:
        work = Path(tmp)
        fleet = fleetbench.Fleet(lab, work, args.datasets, args.layout, name="scale")
        try:
            lab.acquire()
            lab.wait_up()
            fleet.setup_lab()
            attempt(lab, "status record", fleet.record)
            inv = fleet.serve(args.hosts)
            for rep in range(args.reps):
                for which in (("old", "new") if rep % 2 == 0 else ("new", "old")):
                    code = old if which == "old" else REPO
                    cpu0 = fleet.server.thread_cpu()
                    run = fleetbench.status(inv, work / f"state-{which}.db", code)
                    lost, why = fleet.check(run.pop("rows"), args.hosts)
                    row = {**run, "server_cpu_s": round(fleet.server.thread_cpu() - cpu0, 2),
                           "unreachable_rows": lost, "load": os.getloadavg()[0]}
                    runs[which].append(row)
                    log(f"{which} ({old_rev if which == 'old' else new_rev}) rep {rep + 1}: {row['seconds']:.2f} s, "
                        f"CPU {row['cpu_s']:.2f} s, peak RSS {row['peak_rss_mib']:.0f} MiB, server "
                        f"{row['server_cpu_s']:.2f} s (load {row['load']:.1f})" + (f"; {lost} unreachable: {why}" if lost else ""))
        finally:
            fleet.server.stop()
            lab.cleanup()
            lab.release()
    out["load_end"] = os.getloadavg()
    for which, rows in runs.items():
        out[which + "_runs"] = rows
        out[which] = {k: summary([r[k] for r in rows]) for k in ("seconds", "cpu_s", "peak_rss_mib", "server_cpu_s")}
    print(f"{'code':18} {'wall':>8} {'CPU':>8} {'peak RSS':>10} {'server CPU':>11}")
    for which in ("old", "new"):
        d = out[which]
        code = old_rev if which == "old" else f"{new_rev}+"
        print(f"{which + ' ' + code:18} {d['seconds']['median']:7.2f}s {d['cpu_s']['median']:7.2f}s "
              f"{d['peak_rss_mib']['median']:7.0f} MiB {d['server_cpu_s']['median']:10.2f}s")
    write_results(args.output, out)
    return 0


if __name__ == "__main__":
    try:
        raise SystemExit(main())
    except BenchError as exc:
        print(f"status_ab: error: {exc}", file=sys.stderr)
        raise SystemExit(1)
